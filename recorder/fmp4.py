"""Writing one segment as fragmented MP4, durably, fragment by fragment.

Owns: the PyAV muxer for one file, fsync after every fragment the muxer emits, hashing
each part as it is written, and sealing (fsync, atomic rename, read-only).
Must not: decide where segments start or end (recorder.py does), or sign anything.

Container choice (docs/decisions/0001-container.md): fragmented MP4 with an empty moov,
one ``moof``+``mdat`` fragment per ``fragment_us`` of media, no ``mfra`` trailer, and
timestamps kept on the recording's continuous timeline (``avoid_negative_ts=disabled``),
so consecutive files join with no gap and no overlap and any truncated file still plays
up to its last whole fragment.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from evidence.durable import fsync_dir
from evidence.parts import StreamingPartHasher, WrittenSegment
from evidence.records import MAX_RECORD_PLAINTEXT, Recipient, RecordPartHasher, RecordSealer
from hw.clock import monotonic_us
from hw.media import AudioFormat, EncodedPacket

_US = Fraction(1, 1_000_000)
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer+frag_discont"


def video_template(keyframe: bytes) -> av.VideoStream:
    """A stream description (size, profile, SPS/PPS) read from a keyframe by libavformat."""
    probe = av.open(io.BytesIO(keyframe), format="h264")
    stream = probe.streams.video[0]
    if not stream.codec_context.extradata:
        raise ValueError("first video packet of a segment carries no SPS/PPS")
    return stream


class _DurableSink:
    """The file object PyAV writes into: hashes every byte and fsyncs on request."""

    def __init__(
        self, path: Path, hasher: StreamingPartHasher | RecordPartHasher | None = None
    ) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.hasher = hasher or StreamingPartHasher()
        self.unsynced = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        total = len(view)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.hasher.update(data)
        self.unsynced += total
        return total

    def sync(self) -> bool:
        if not self.unsynced:
            return False
        os.fsync(self._fd)
        self.unsynced = 0
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _EncryptingSink:
    """The file object PyAV writes into when segments are encrypted at rest: plaintext
    waits in memory until ``sync()``, which writes it as one sealed record and fsyncs.
    ``hasher`` sees the ciphertext (what the ledger commits to); ``plain`` the media."""

    def __init__(self, path: Path, recipient: Recipient, device_id: str) -> None:
        self._disk = _DurableSink(path, RecordPartHasher())
        self._sealer = RecordSealer(recipient, device_id, path.name.removesuffix(".part"))
        self.hasher = self._disk.hasher
        self.plain = StreamingPartHasher()
        self._pending = bytearray()
        self._disk.write(self._sealer.preamble)
        self._disk.sync()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._pending += data
        self.plain.update(data)
        return len(data)

    def _seal_pending(self, final: bool) -> None:
        """The pending plaintext as records of at most MAX_RECORD_PLAINTEXT (a pre-event
        burst can be far larger than one fragment); the last one marked if ``final``."""
        size = len(self._pending)
        starts = range(0, size, MAX_RECORD_PLAINTEXT) if size else range(1)
        with memoryview(self._pending) as view:
            for start in starts:
                last = start + MAX_RECORD_PLAINTEXT >= size
                with view[start : start + MAX_RECORD_PLAINTEXT] as chunk:
                    self._disk.write(self._sealer.seal(chunk, final=final and last))
        self._pending.clear()

    def sync(self) -> bool:
        if not self._pending:
            return False
        self._seal_pending(final=False)
        return self._disk.sync()

    def finish(self) -> None:
        """The last record, marked final: a file without it was cut short."""
        self._seal_pending(final=True)
        self._disk.sync()

    def encryption(self) -> dict[str, Any]:
        header = self._sealer.header
        return {
            "kem": header["kem"],
            "kdf": header["kdf"],
            "aead": header["aead"],
            "recipient": header["recipient"],
            "records": self._sealer.records,
            "plaintext": {
                "bytes": self.plain.position,
                "sha256": self.plain.file_sha256.hexdigest(),
                "parts": [[p.offset, p.length, p.sha256] for p in self.plain.finish()],
            },
        }

    def close(self) -> None:
        self._sealer.forget()
        self._pending.clear()
        self._disk.close()


@dataclass
class SegmentWriter:
    """One ``.part`` file being written; ``seal()`` turns it into the final read-only file.

    Packet times are given on CLOCK_MONOTONIC; ``origin_us`` is the monotonic time that
    becomes media time zero for the whole recording.
    """

    final_path: Path
    first_keyframe: EncodedPacket
    audio: AudioFormat | None
    origin_us: int
    fragment_us: int
    metadata: dict[str, str] = field(default_factory=dict)
    encrypt_for: Recipient | None = None  # the agency key; the unit cannot read the file back
    device_id: str = ""

    def __post_init__(self) -> None:
        self.part_path = self.final_path.with_name(self.final_path.name + ".part")
        self._sink: _DurableSink | _EncryptingSink = (
            _EncryptingSink(self.part_path, self.encrypt_for, self.device_id)
            if self.encrypt_for is not None
            else _DurableSink(self.part_path)
        )
        fsync_dir(self.part_path.parent)  # the .part file itself survives a power cut
        options = {
            "movflags": MOVFLAGS,
            "frag_duration": str(self.fragment_us),
            "flush_packets": "1",
            "avoid_negative_ts": "disabled",
            # Packets arrive already in time order (recorder.interleave); without this
            # libavformat would hold a silent stream's partner for up to 10 s.
            "max_interleave_delta": "200000",
        }
        self._out = av.open(self._sink, "w", format="mp4", options=options)
        self._out.metadata.update(self.metadata)
        self._video = self._out.add_stream_from_template(video_template(self.first_keyframe.data))
        self._video.time_base = Fraction(1, 90_000)
        self._audio = None
        if self.audio is not None:
            self._audio = self._out.add_stream("aac", rate=self.audio.sample_rate)
            self._audio.layout = "mono" if self.audio.channels == 1 else "stereo"
        self.media_start_us = self.first_keyframe.pts_us - self.origin_us
        self.media_end_us = self.media_start_us
        self.video_frames = 0
        self.audio_frames = 0
        self.last_sync_us: int | None = None  # CLOCK_MONOTONIC of the last fsync

    def write(self, packet: EncodedPacket, sync: bool = True) -> None:
        """Mux one packet; fsync whatever whole fragment the muxer wrote (unless ``sync``
        is False: a burst such as the pre-event ring, followed by ``sync()``)."""
        stream = self._video if packet.kind == "video" else self._audio
        if stream is None:
            return
        av_packet = av.Packet(packet.data)
        av_packet.pts = av_packet.dts = packet.pts_us - self.origin_us
        av_packet.duration = packet.duration_us
        av_packet.time_base = _US
        av_packet.is_keyframe = packet.keyframe
        av_packet.stream = stream
        self._out.mux(av_packet)
        if packet.kind == "video":
            self.video_frames += 1
            self.media_end_us = max(self.media_end_us, packet.end_us - self.origin_us)
        else:
            self.audio_frames += 1
        if sync:
            self.sync()

    def sync(self) -> None:
        if self._sink.sync():  # the muxer emitted whole fragments: they are on disk now
            self.last_sync_us = monotonic_us()

    @property
    def bytes_written(self) -> int:
        return self._sink.hasher.position

    def seal(self, mode: int = 0o444) -> WrittenSegment:
        """Flush the last fragment, fsync, rename into place atomically, make read-only."""
        self._out.close()
        encryption = None
        if isinstance(self._sink, _EncryptingSink):
            self._sink.finish()
            encryption = self._sink.encryption()
        self._sink.sync()
        self._sink.close()
        parts = self._sink.hasher.finish()
        os.chmod(self.part_path, mode)
        os.rename(self.part_path, self.final_path)
        fsync_dir(self.final_path.parent)
        self.last_sync_us = monotonic_us()
        return WrittenSegment(
            path=self.final_path,
            size=self._sink.hasher.position,
            sha256=self._sink.hasher.file_sha256.hexdigest(),
            parts=parts,
            media_start_us=self.media_start_us,
            media_end_us=self.media_end_us,
            video_frames=self.video_frames,
            audio_frames=self.audio_frames,
            encryption=encryption,
        )

    def abandon(self) -> None:
        """Drop the muxer without finishing it; the ``.part`` file is left for recovery."""
        try:
            self._sink.close()
        finally:
            self._out = None  # type: ignore[assignment]
