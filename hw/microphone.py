"""Microphones: PCM from a source, encoded to AAC, stamped on the media clock.

Owns: reading PCM (PortAudio through PyAudio, or a generated tone), encoding it to AAC
with PyAV, and stamping packets on CLOCK_MONOTONIC. Must not: buffer or write files.

Timestamps: the first buffer anchors the stream on the monotonic clock; after that a
packet's time is anchor + samples read / rate, so audio has no jitter. A source that
delivers faster than real time (ALSA's file plugin in tests) is paced back to the clock;
one that falls behind by more than ``RESYNC_US`` (lost buffers) is re-anchored, leaving
an honest gap rather than sliding the audio against the video.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np

from hw.clock import monotonic_us, sleep_until_us
from hw.media import AudioFormat, DeviceError, DeviceThread, EncodedPacket, PacketSink

log = logging.getLogger(__name__)

RESYNC_US = 250_000
AAC_FRAME = 1024


class PcmSource(Protocol):
    """Something that returns ``frames`` mono s16le samples per read, blocking if it can."""

    sample_rate: int

    def open(self) -> None: ...

    def read(self, frames: int) -> bytes: ...

    def close(self) -> None: ...


class ToneSource:
    """A generated tone (a slow warble, so it is audibly alive); needs no sound card."""

    def __init__(self, sample_rate: int, hz: float = 440.0) -> None:
        self.sample_rate, self._hz, self._n = sample_rate, hz, 0

    def open(self) -> None:
        self._n = 0

    def read(self, frames: int) -> bytes:
        t = (np.arange(self._n, self._n + frames) / self.sample_rate).astype(np.float64)
        self._n += frames
        wave = np.sin(2 * math.pi * self._hz * t * (1 + 0.05 * np.sin(2 * math.pi * 0.5 * t)))
        return (wave * 8000).astype("<i2").tobytes()

    def close(self) -> None:
        pass


class PortAudioSource:
    """An input device chosen by (part of) its name, through PyAudio/PortAudio."""

    def __init__(self, device: str, sample_rate: int) -> None:
        self.device, self.sample_rate = device, sample_rate
        self._pa: Any = None
        self._stream: Any = None

    @staticmethod
    @contextmanager
    def _portaudio() -> Iterator[Any]:
        import pyaudio

        pa = pyaudio.PyAudio()
        try:
            yield pa
        finally:
            pa.terminate()

    @staticmethod
    def input_devices(pa: Any) -> list[tuple[int, str]]:
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                devices.append((i, str(info["name"])))
        return devices

    @classmethod
    def find(cls, pa: Any, device: str) -> int:
        devices = cls.input_devices(pa)
        exact = [i for i, name in devices if name == device]
        partial = [i for i, name in devices if device in name]
        found = exact or partial
        if not found:
            names = ", ".join(repr(n) for _, n in devices) or "none"
            raise DeviceError(f"microphone {device!r} not found; PortAudio input devices: {names}")
        return found[0]

    @classmethod
    def check(cls, device: str) -> None:
        """Raise DeviceError naming the available devices if ``device`` is absent."""
        with cls._portaudio() as pa:
            cls.find(pa, device)

    def open(self) -> None:
        import pyaudio

        self._pa = pyaudio.PyAudio()
        try:
            index = self.find(self._pa, self.device)
            self._stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.sample_rate,
                input=True,
                input_device_index=index,
                frames_per_buffer=AAC_FRAME,
            )
        except DeviceError:
            self.close()
            raise
        except Exception as exc:  # PortAudio raises OSError with a numeric code
            self.close()
            raise DeviceError(f"microphone {self.device!r} could not be opened: {exc}") from exc

    def read(self, frames: int) -> bytes:
        data: bytes = self._stream.read(frames, exception_on_overflow=False)
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


class AacEncoder:
    """Mono s16le PCM in 1024-sample frames -> AAC packets stamped in microseconds."""

    def __init__(self, sample_rate: int, bitrate: int) -> None:
        enc = av.CodecContext.create("aac", "w")
        assert isinstance(enc, av.AudioCodecContext)
        enc.sample_rate = sample_rate
        enc.layout = "mono"
        enc.format = "fltp"
        enc.bit_rate = bitrate
        enc.time_base = Fraction(1, sample_rate)
        enc.open()
        self._enc, self.rate = enc, sample_rate

    def encode(self, pcm: bytes, pts_samples: int) -> list[EncodedPacket]:
        """Encode one frame of PCM whose first sample is at ``pts_samples`` (1/rate units)."""
        samples = np.frombuffer(pcm, dtype="<i2")
        if samples.size != AAC_FRAME:
            samples = np.resize(samples, AAC_FRAME)
        frame = av.AudioFrame.from_ndarray(
            (samples.astype(np.float32) / 32768.0).reshape(1, -1), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = self.rate, pts_samples, self._enc.time_base
        return self._packets(self._enc.encode(frame))

    def flush(self) -> list[EncodedPacket]:
        return self._packets(self._enc.encode(None))

    def _packets(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        for packet in packets:
            if packet.pts is None:
                continue
            start = round(packet.pts * 1e6 / self.rate)
            end = round((packet.pts + AAC_FRAME) * 1e6 / self.rate)
            out.append(EncodedPacket("audio", bytes(packet), start, end - start, keyframe=True))
        return out


def tone_packets(
    sample_rate: int, start_us: int, seconds: float, bitrate: int = 64_000
) -> list[EncodedPacket]:
    """AAC packets of a generated tone, encoded as fast as possible (tests, benchmarks)."""
    source, encoder = ToneSource(sample_rate), AacEncoder(sample_rate, bitrate)
    first = round(start_us * sample_rate / 1e6)
    out: list[EncodedPacket] = []
    for n in range(0, int(seconds * sample_rate), AAC_FRAME):
        out += encoder.encode(source.read(AAC_FRAME), first + n)
    return out + encoder.flush()


class AacMicrophone:
    """A PCM source encoded to mono AAC in 1024-sample frames on its own thread."""

    def __init__(self, source: PcmSource, *, bitrate: int) -> None:
        self.source = source
        self.format = AudioFormat(sample_rate=source.sample_rate, channels=1)
        self._bitrate = bitrate
        self._worker = DeviceThread("microphone")
        self.resyncs = 0

    def start(self, sink: PacketSink) -> None:
        encoder = AacEncoder(self.format.sample_rate, self._bitrate)
        self.source.open()
        self._worker.start(self._run, encoder, sink)

    def stop(self) -> None:
        self._worker.stop()
        self.source.close()

    def _run(self, encoder: AacEncoder, sink: PacketSink) -> None:
        rate = self.format.sample_rate
        frame_us = AAC_FRAME * 1_000_000 / rate
        anchor_us: int | None = None
        samples = 0  # samples since anchor
        while not self._worker.stopping.is_set():
            if anchor_us is not None:
                # Never run ahead of the clock: a real device blocks in read(), a file
                # plugin does not, so wait until this buffer would have been captured.
                sleep_until_us(anchor_us + round((samples + AAC_FRAME) * 1e6 / rate))
            try:
                pcm = self.source.read(AAC_FRAME)
            except Exception as exc:
                log.error("microphone read failed: %s", exc)
                break
            captured_us = monotonic_us() - round(frame_us)
            if anchor_us is None:
                anchor_us, samples = captured_us, 0
            else:
                behind = captured_us - (anchor_us + round(samples * 1e6 / rate))
                if behind > RESYNC_US:
                    log.warning("audio fell %d ms behind; re-anchoring", behind // 1000)
                    self.resyncs += 1
                    samples = round((captured_us - anchor_us) * rate / 1e6)
            pts = round(anchor_us * rate / 1e6) + samples
            samples += AAC_FRAME
            for packet in encoder.encode(pcm, pts):
                sink(packet)
        for packet in encoder.flush():
            sink(packet)
