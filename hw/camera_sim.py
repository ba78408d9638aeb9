"""Simulated camera: a moving test pattern with the wall-clock time drawn in, encoded to
real H.264 by libx264 (PyAV), paced in real time on CLOCK_MONOTONIC.

Owns: making frames and encoding them. Must not: buffer, segment or write files.

Frames are built directly as YUV 4:2:0 planes with numpy (no colour conversion per
frame), so the simulation costs about what the encoder costs.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hw.clock import monotonic_us, sleep_until_us
from hw.media import DeviceError, DeviceThread, EncodedPacket, PacketSink, VideoFormat

log = logging.getLogger(__name__)

_US = Fraction(1, 1_000_000)


class TestPattern:
    """YUV 4:2:0 frames: luma bars, a box moving one step a frame, and a text banner."""

    def __init__(self, width: int, height: int, label: str) -> None:
        if width % 16 or height % 2:
            raise DeviceError(f"simulated camera: {width}x{height} must be a multiple of 16x2")
        self.width, self.height, self.label = width, height, label
        bars = np.linspace(40, 220, 8).astype(np.uint8)
        self._y = np.repeat(bars, width // 8 + 1)[:width][None, :].repeat(height, axis=0)
        cu = np.repeat(np.linspace(90, 170, 8).astype(np.uint8), width // 16 + 1)[: width // 2]
        self._u = cu[None, :].repeat(height // 2, axis=0)
        self._v = self._u[:, ::-1].copy()
        self._font = ImageFont.load_default(size=max(12, height // 20))
        self._banner_h = max(16, height // 12)

    def frame(self, index: int, text: str, overlay: str | None = None) -> av.VideoFrame:
        y = self._y.copy()
        box = max(8, self.height // 8)
        x0 = (index * 8) % (self.width - box)
        y0 = (self.height - box) // 2
        y[y0 : y0 + box, x0 : x0 + box] = 235
        banner = Image.new("L", (self.width, self._banner_h), 16)
        label = self.label if overlay is None else overlay
        ImageDraw.Draw(banner).text((8, 2), f"{text}  {label}", fill=235, font=self._font)
        y[: self._banner_h] = np.asarray(banner)
        planes = np.concatenate(
            [y, self._u.reshape(-1, self.width), self._v.reshape(-1, self.width)]
        )
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")


class SimulatedCamera:
    """A camera that encodes a test pattern with libx264, GOP of ``gop_seconds``."""

    def __init__(
        self, fmt: VideoFormat, *, bitrate: int, gop_seconds: float = 1.0, label: str = "SIM"
    ) -> None:
        self.format = fmt
        self._bitrate = bitrate
        self._gop = max(1, round(fmt.fps * gop_seconds))
        self._pattern = TestPattern(fmt.width, fmt.height, label)
        self._worker = DeviceThread("camera-sim")
        self._frozen = threading.Event()
        self.frames_dropped = 0
        self.overlay = label

    def set_overlay(self, text: str) -> None:
        """The line burnt into every frame after the time (device, officer, case)."""
        self.overlay = text

    def freeze(self, frozen: bool = True) -> None:
        """Simulate a stalled encoder: no packet leaves the camera until unfrozen."""
        if frozen:
            self._frozen.set()
        else:
            self._frozen.clear()

    def _encoder(self) -> av.VideoCodecContext:
        enc = av.CodecContext.create("libx264", "w")
        assert isinstance(enc, av.VideoCodecContext)
        enc.width, enc.height, enc.pix_fmt = self.format.width, self.format.height, "yuv420p"
        enc.time_base = _US
        enc.framerate = Fraction(self.format.fps)
        enc.bit_rate = self._bitrate
        g = str(self._gop)
        enc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "g": g,
            "keyint_min": g,
            "sc_threshold": "0",
            "threads": "1",
        }
        enc.open()
        return enc

    def start(self, sink: PacketSink) -> None:
        self._worker.start(self._run, self._encoder(), sink)

    def stop(self) -> None:
        self._worker.stop()

    def _encode(
        self, enc: av.VideoCodecContext, index: int, pts_us: int, duration_us: int, text: str
    ) -> list[EncodedPacket]:
        frame = self._pattern.frame(index, text, self.overlay)
        frame.pts, frame.time_base = pts_us, _US
        return [
            EncodedPacket(
                kind="video",
                data=bytes(packet),
                pts_us=int(packet.pts if packet.pts is not None else pts_us),
                duration_us=duration_us,
                keyframe=bool(packet.is_keyframe),
            )
            for packet in enc.encode(frame)
        ]

    def packets(self, start_us: int, count: int) -> list[EncodedPacket]:
        """``count`` frames encoded as fast as possible (tests, benchmarks): same bytes
        as the paced camera would make, timestamps as if captured from ``start_us``."""
        enc = self._encoder()
        fps = self.format.fps
        out: list[EncodedPacket] = []
        for i in range(count):
            pts = start_us + i * 1_000_000 // fps
            duration = start_us + (i + 1) * 1_000_000 // fps - pts
            out += self._encode(enc, i, pts, duration, f"frame {i}")
        return out

    def _run(self, enc: av.VideoCodecContext, sink: PacketSink) -> None:
        fps = self.format.fps
        frame_us = round(1_000_000 / fps)
        t0 = monotonic_us()
        index = 0
        while not self._worker.stopping.is_set():
            due = t0 + index * 1_000_000 // fps
            late = monotonic_us() - due
            if late > 3 * frame_us:
                # Starved of CPU: skip frames rather than burst, so timestamps stay honest.
                skip = late // frame_us
                self.frames_dropped += skip
                index += skip
                continue
            sleep_until_us(due)
            if self._frozen.is_set():
                index += 1
                continue
            now_ns = time.time_ns()
            text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now_ns / 1e9))
            text += f".{now_ns // 1_000_000 % 1000:03d}"
            duration = t0 + (index + 1) * 1_000_000 // fps - due
            for packet in self._encode(enc, index, due, duration, text):
                sink(packet)
            index += 1
