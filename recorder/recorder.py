"""The recorder: packets in, durable segment files out, on one thread.

Owns: the recording state (ready / recording / fault), the pre-event ring, the segment
policy (a new file at the first keyframe ``segment_us`` after the current one began),
and reporting what it did as ``RecorderEvent``s. Every state change happens on the
recorder's own thread, fed through one queue with the packets, so a command is applied
exactly between two packets and needs no lock.

Must not: sign, publish or know about officers. Whoever subscribes to events (the daemon)
decides what happens next; the recorder never calls downstream.
"""

from __future__ import annotations

import logging
import queue
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from evidence.parts import WrittenSegment
from evidence.records import Recipient
from hw.clock import ClockReading, monotonic_us, utc_iso
from hw.media import AudioFormat, EncodedPacket, Kind, VideoFormat
from recorder.fmp4 import SegmentWriter
from recorder.interleave import Interleaver
from recorder.recovery import recover_part
from recorder.ring import PreEventRing
from store.index import RecordingJournal, open_recording_journal

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "recording", "fault", "stopped"]


@dataclass(frozen=True)
class RecorderSettings:
    device_id: str
    segment_us: int = 60_000_000
    fragment_us: int = 500_000
    pre_event_us: int = 30_000_000
    pre_event_audio: bool = True
    encrypt_for: Recipient | None = None  # the agency key (encryption at rest), or None


@dataclass(frozen=True)
class RecorderEvent:
    """Something the recorder did. ``detail`` is plain JSON-able data."""

    kind: str  # recording_started | segment_sealed | recording_stopped | write_failed
    mono_us: int
    at: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class RecorderStatus:
    state: State = "starting"
    recording_id: int | None = None
    segment: str | None = None
    segment_media_s: float = 0.0
    segment_bytes: int = 0
    segments_sealed: int = 0
    ring_s: float = 0.0
    last_packet_us: dict[str, int] = field(default_factory=dict)
    last_sync_us: int | None = None  # when a fragment last reached the disk (monotonic)
    recording_since_us: int | None = None  # when the current recording started (monotonic)
    media_us: int | None = None  # recording timeline position of the newest packet written
    queued: int = 0
    fault: str | None = None


@dataclass(frozen=True)
class _Command:
    name: Literal["start", "stop", "close"]
    reason: str


def segment_name(
    device_id: str, wall: ClockReading, mono_us: int, recording: int, seq: int, encrypted: bool
) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", device_id)
    stamp = wall.wall_for(mono_us).strftime("%Y%m%dT%H%M%SZ")
    suffix = ".mp4.enc" if encrypted else ".mp4"
    return f"{safe}_{stamp}_r{recording:05d}_s{seq:04d}{suffix}"


def segment_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of an index row that describe a sealed segment to the rest of the unit."""
    keys = (
        "name", "recording_id", "seq", "state", "wall_start", "wall_end", "media_start_us",
        "media_end_us", "bytes", "sha256", "parts", "video_frames", "audio_frames",
    )  # fmt: skip
    return {k: row.get(k) for k in keys}


class Recorder:
    def __init__(
        self,
        evidence_dir: Path,
        index_path: Path,
        settings: RecorderSettings,
        video: VideoFormat,
        audio: AudioFormat | None,
        on_event: Callable[[RecorderEvent], None],
    ) -> None:
        self.evidence_dir = evidence_dir
        self._index_path = index_path
        self.settings = settings
        self.video, self.audio = video, audio
        self._on_event = on_event
        self._queue: queue.SimpleQueue[EncodedPacket | _Command] = queue.SimpleQueue()
        kinds: list[Kind] = ["video", "audio"] if audio else ["video"]
        self._interleaver = Interleaver(kinds)
        self._ring = PreEventRing(settings.pre_event_us, settings.pre_event_audio)
        self._writer: SegmentWriter | None = None
        self._pending_start: str | None = None
        self._recording_id: int | None = None
        self._origin_us = 0
        self._seq = 0
        self._segment_start_us = 0
        self._status = RecorderStatus()
        self._status_lock = threading.Lock()
        # Changed for every packet, so kept as plain fields (written by the recorder thread
        # only) and put into RecorderStatus when someone asks, not on every packet.
        self._last_packet_us: dict[str, int] = {}
        self._media_us: int | None = None
        self._last_sync_us: int | None = None
        self._ring_s = 0.0
        self._thread: threading.Thread | None = None
        self._index: RecordingJournal | None = None

    # --- public API (any thread) -------------------------------------------------------
    def sink(self, packet: EncodedPacket) -> None:
        """The PacketSink handed to every device."""
        self._queue.put(packet)

    def start(self, trigger: str) -> None:
        self._queue.put(_Command("start", trigger))

    def stop(self, reason: str) -> None:
        self._queue.put(_Command("stop", reason))

    def close(self, timeout: float = 30.0) -> None:
        """Seal what is being written and stop the thread (SIGTERM path)."""
        self._queue.put(_Command("close", "shutdown"))
        if self._thread:
            self._thread.join(timeout)

    def status(self) -> RecorderStatus:
        with self._status_lock:
            base = self._status
        writer = self._writer
        segment: dict[str, Any] = {}
        if writer is not None and base.state == "recording":
            segment = {
                "segment_media_s": (writer.media_end_us - writer.media_start_us) / 1e6,
                "segment_bytes": writer.bytes_written,
                "media_us": self._media_us,
            }
        return replace(
            base,
            last_packet_us=dict(self._last_packet_us),
            last_sync_us=self._last_sync_us,
            ring_s=self._ring_s,
            queued=self._queue.qsize(),
            **segment,
        )

    def run_in_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self._set(state="ready")

    # --- recorder thread ---------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        with self._status_lock:
            self._status = replace(self._status, **changes)

    def _emit(self, kind: str, mono: int, **detail: Any) -> None:
        clock = ClockReading.now()
        event = RecorderEvent(kind, mono, utc_iso(clock.wall_for(mono)), detail)
        try:
            self._on_event(event)
        except Exception:  # a subscriber's bug must never stop the recording
            log.exception("event subscriber failed on %s", kind)

    def _run(self) -> None:
        self._index = open_recording_journal(self._index_path)
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if isinstance(item, _Command):
                    if item.name == "close":
                        self._shutdown()
                        return
                    self._command(item)
                elif item is not None:
                    self._interleaver.push(item, monotonic_us())
                    self._last_packet_us[item.kind] = item.pts_us
                for packet in self._interleaver.pop_ready(monotonic_us()):
                    self._handle(packet)
                self._ring_s = self._ring.seconds
        finally:
            self._index.close()

    def _command(self, cmd: _Command) -> None:
        if cmd.name == "start":
            if self._writer is None:
                self._pending_start = cmd.reason
                self._try_start()
        elif cmd.name == "stop" and (self._writer is not None or self._pending_start):
            self._pending_start = None
            self._finish_recording(cmd.reason)

    def _shutdown(self) -> None:
        for packet in self._interleaver.drain():
            self._handle(packet)
        if self._writer is not None:
            self._finish_recording("shutdown")
        self._set(state="stopped")

    def _handle(self, packet: EncodedPacket) -> None:
        writer = self._writer
        if writer is None:
            self._ring.push(packet)
            if self._pending_start:
                self._try_start()
            return
        try:
            if (
                packet.kind == "video"
                and packet.keyframe
                and packet.pts_us - self._segment_start_us >= self.settings.segment_us
            ):
                self._seal_current()
                self._open_segment(packet)
                writer = self._writer
                assert writer is not None
            writer.write(packet)
        except Exception as exc:  # the file or the index refused a write, or a bug: a fault
            self._write_failed(exc)
            return
        self._media_us = packet.end_us - self._origin_us
        if writer.last_sync_us is not None:
            self._last_sync_us = writer.last_sync_us

    def _try_start(self) -> None:
        packets = self._ring.take()
        if not packets:
            return  # no keyframe yet: the next one starts the recording
        trigger = self._pending_start or "unknown"
        self._pending_start = None
        assert self._index is not None
        first = packets[0]
        self._origin_us = first.pts_us
        self._seq = 0
        clock = ClockReading.now()
        try:
            self._recording_id = self._index.begin_recording(
                trigger, utc_iso(clock.wall_for(first.pts_us))
            )
        except sqlite3.Error as exc:
            self._write_failed(exc)
            return
        self._emit(
            "recording_started",
            monotonic_us(),
            recording_id=self._recording_id,
            trigger=trigger,
            pre_event_s=round((monotonic_us() - first.pts_us) / 1e6, 3),
        )
        try:
            self._open_segment(first)
            writer = self._writer
            assert writer is not None
            # The pre-event ring: its first fragment is fsync'ed at once and the recording
            # announced (media is reaching the disk); the rest follows with one fsync.
            for packet in packets:
                writer.write(packet, sync=writer.last_sync_us is None)
                if writer.last_sync_us is not None and self._status.state != "recording":
                    self._announce_recording(writer)
            writer.sync()
        except Exception as exc:  # see _write_failed
            self._write_failed(exc)
            return
        self._media_us = packets[-1].end_us - self._origin_us
        self._announce_recording(writer)

    def _announce_recording(self, writer: SegmentWriter) -> None:
        self._last_sync_us = writer.last_sync_us
        if self._status.state == "recording":
            return
        self._set(
            state="recording",
            recording_id=self._recording_id,
            fault=None,
            recording_since_us=monotonic_us(),
        )

    def _open_segment(self, keyframe: EncodedPacket) -> None:
        assert self._index is not None and self._recording_id is not None
        self._seq += 1
        clock = ClockReading.now()
        name = segment_name(
            self.settings.device_id,
            clock,
            keyframe.pts_us,
            self._recording_id,
            self._seq,
            encrypted=self.settings.encrypt_for is not None,
        )
        media_start = keyframe.pts_us - self._origin_us
        wall_start = utc_iso(clock.wall_for(keyframe.pts_us))
        self._index.add_open_segment(
            name=name,
            recording_id=self._recording_id,
            seq=self._seq,
            mono_start_us=keyframe.pts_us,
            wall_start=wall_start,
            media_start_us=media_start,
        )
        self._segment_start_us = keyframe.pts_us
        self._writer = SegmentWriter(
            final_path=self.evidence_dir / name,
            first_keyframe=keyframe,
            audio=self.audio,
            origin_us=self._origin_us,
            fragment_us=self.settings.fragment_us,
            metadata={
                "title": name,
                "creation_time": wall_start,
                "comment": (
                    f"liuhen device={self.settings.device_id} recording={self._recording_id} "
                    f"segment={self._seq} media_start_us={media_start}"
                ),
            },
            encrypt_for=self.settings.encrypt_for,
            device_id=self.settings.device_id,
        )
        self._set(segment=name, segment_media_s=0.0, segment_bytes=0)

    def _seal_current(self) -> WrittenSegment:
        writer = self._writer
        assert writer is not None and self._index is not None
        written = writer.seal()  # if this fails, _write_failed still has the writer
        self._writer = None
        clock = ClockReading.now()
        row = self._index.close_segment(
            written.path.name,
            written,
            "sealed",
            utc_iso(clock.wall_for(self._origin_us + writer.media_end_us)),
        )
        self._set(segments_sealed=self._status.segments_sealed + 1)
        self._emit("segment_sealed", monotonic_us(), **segment_summary(row))
        return written

    def _finish_recording(self, reason: str) -> None:
        assert self._index is not None
        if self._writer is not None:
            try:
                self._seal_current()
            except Exception as exc:  # see _write_failed
                self._write_failed(exc)
                return
        if self._recording_id is not None:
            clock = ClockReading.now()
            try:
                self._index.end_recording(
                    self._recording_id, reason, utc_iso(clock.wall_for(clock.monotonic_us))
                )
            except sqlite3.Error as exc:  # the stop is still journaled by the daemon
                log.error("recording %d: the index refused its end: %s", self._recording_id, exc)
            self._emit(
                "recording_stopped", monotonic_us(), recording_id=self._recording_id, reason=reason
            )
        self._recording_id = None
        self._ring.clear()
        self._set(
            state="ready", segment=None, recording_id=None, recording_since_us=None, media_us=None
        )

    def _write_failed(self, exc: Exception) -> None:
        """The file system refused a write: keep every whole fragment, stop, say why.
        Anything else that breaks a write (a bug) takes the same path rather than killing
        this thread, so the unit shows a fault instead of a stalled camera."""
        writer, self._writer = self._writer, None
        if isinstance(exc, OSError | sqlite3.Error):
            log.error("writing evidence failed: %s", exc)
        else:
            log.exception("writing evidence failed on an unexpected error")
        recovered = None
        if writer is not None:
            writer.abandon()
            try:
                assert self._index is not None
                recovered = recover_part(writer.part_path, self._index).__dict__
            except Exception as again:  # e.g. the disk is still full
                log.error("could not seal %s after the failure: %s", writer.part_path.name, again)
        self._emit("write_failed", monotonic_us(), error=str(exc), recovered=recovered)
        self._recording_id = None
        self._ring.clear()
        self._set(state="fault", fault=f"write failed: {exc}", segment=None)
