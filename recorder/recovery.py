"""Recovery after a crash or power cut: close what was being written, lose nothing more.

Owns: finding segment files left unfinished (``.part``) or half-registered, cutting each
at its last whole fragment, keeping the torn tail bytes aside (nothing the unit wrote is
destroyed), sealing it read-only marked ``recovered``, and recording the interruption.
Must not: guess media that is not on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from evidence.durable import fsync_dir
from evidence.parts import WrittenSegment, hash_segment_file, iter_boxes, whole_fragment_prefix
from evidence.records import EncryptionError, RecordPartHasher, read_preamble
from hw.clock import ClockReading, utc_iso
from store.index import Index, RecordingJournal

log = logging.getLogger(__name__)
ENCRYPTED_SUFFIX = ".enc"


@dataclass(frozen=True)
class MediaSpan:
    start_us: int
    end_us: int
    video_frames: int
    audio_frames: int


def probe_media(path: Path) -> MediaSpan:
    """Media span of a file on the recording timeline, read back through libavformat."""
    start: int | None = None
    end = 0
    counts = {"video": 0, "audio": 0}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or packet.stream.type not in counts:
                continue
            counts[packet.stream.type] += 1
            if packet.stream.type != "video":
                continue
            tb = packet.time_base
            pts = int(packet.pts * tb * 1_000_000)
            start = pts if start is None else min(start, pts)
            end = max(end, int((packet.pts + (packet.duration or 0)) * tb * 1_000_000))
    return MediaSpan(start or 0, end, counts["video"], counts["audio"])


def read_encrypted_segment(path: Path, row: dict[str, Any] | None) -> WrittenSegment:
    """Hashes of an encrypted segment, read without the key: its media and plaintext are
    unknown to the unit (``None``); the media start is the one journaled when it opened."""
    hasher = RecordPartHasher()
    header: dict[str, Any] = {}
    with open(path, "rb") as f:
        try:
            header, _, _ = read_preamble(f)
        except EncryptionError as exc:  # the entry still commits to every byte
            log.error("%s: %s", path.name, exc)
        f.seek(0)
        while chunk := f.read(1 << 20):
            try:
                hasher.update(chunk)
            except EncryptionError as exc:
                log.error("%s: %s", path.name, exc)
                break
    start = (row or {}).get("media_start_us")
    return WrittenSegment(
        path=path,
        size=hasher.whole_end,  # framing broken: the entry covers the whole records only
        # the prefix digest of the last whole record: the SHA-256 of exactly ``size`` bytes
        sha256=hasher.parts[-1].sha256 if hasher.parts else hashlib.sha256().hexdigest(),
        parts=list(hasher.parts),
        media_start_us=start,
        media_end_us=None,
        video_frames=None,
        audio_frames=None,
        encryption={
            **{k: header.get(k) for k in ("kem", "kdf", "aead", "recipient")},
            "records": len(hasher.parts) - 1,
            "plaintext": None,
        },
    )


def read_segment(path: Path, length: int | None = None) -> WrittenSegment:
    """Hashes and media span of a finished (or cut) plain segment file."""
    hashes = hash_segment_file(path, length)
    try:
        span: MediaSpan | None = probe_media(path)
    except (av.error.FFmpegError, ValueError) as exc:  # hashed all the same; media unknown
        log.error("%s: libavformat cannot read its media (%s)", path.name, exc)
        span = None
    return WrittenSegment(
        path=path,
        size=hashes.size,
        sha256=hashes.sha256,
        parts=hashes.parts,
        media_start_us=span.start_us if span else None,
        media_end_us=span.end_us if span else None,
        video_frames=span.video_frames if span else None,
        audio_frames=span.audio_frames if span else None,
    )


@dataclass(frozen=True)
class Recovered:
    name: str
    state: str  # recovered | sealed | empty | missing
    kept_bytes: int
    torn_bytes: int
    media_end_us: int | None


def _save_tail(part: Path, keep: int, torn_dir: Path) -> int:
    size = part.stat().st_size
    if size <= keep:
        return 0
    torn_dir.mkdir(exist_ok=True)
    tail = torn_dir / (part.name.removesuffix(".part") + ".tail")
    # A recovery cut after saving the tail and before truncating left a read-only copy of
    # the same bytes (the .part still holds them): replace it, as the service cannot
    # override its mode.
    tail.unlink(missing_ok=True)
    with open(part, "rb") as src, open(tail, "wb") as dst:
        src.seek(keep)
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.chmod(tail, 0o444)
    fsync_dir(torn_dir)
    return size - keep


def _whole_prefix(part: Path) -> tuple[int, bool]:
    """(bytes to keep, whether they hold media): whole fragments of a plain file; the
    preamble and whole records of an encrypted one (its media cannot be seen here)."""
    if part.name.endswith(ENCRYPTED_SUFFIX + ".part"):
        hasher = RecordPartHasher(whole_file=False)
        with open(part, "rb") as f:
            try:
                read_preamble(f)
                f.seek(0)
                while chunk := f.read(1 << 20):
                    hasher.update(chunk)
            except EncryptionError as exc:  # garbage, not a torn record: keep what framed
                log.error("%s: %s; keeping the whole records before it", part.name, exc)
        if len(hasher.parts) == 0 or hasher.parts[0].length < 12:  # no usable header
            return 0, False
        # Record 0 is the init part alone (the first fsync): media needs one more record.
        return hasher.whole_end, len(hasher.parts) > 2
    size = part.stat().st_size
    with open(part, "rb") as f:
        boxes = list(iter_boxes(f, size))
    keep = whole_fragment_prefix(boxes)
    return keep, any(b.type == "moof" and b.end <= keep for b in boxes)


def read_any_segment(path: Path, row: dict[str, Any] | None) -> WrittenSegment:
    """Hashes and what can be known of the media of a plain or encrypted segment file;
    where the media cannot be read, its start is the one its index ``row`` journaled."""
    if path.name.endswith(ENCRYPTED_SUFFIX):
        return read_encrypted_segment(path, row)
    written = read_segment(path)
    if written.media_start_us is None and row:
        written.media_start_us = row.get("media_start_us")
    return written


def recover_part(part: Path, index: RecordingJournal) -> Recovered:
    """Cut one ``.part`` file at its last whole fragment and seal it as recovered."""
    final = part.with_name(part.name.removesuffix(".part"))
    keep, has_media = _whole_prefix(part)
    if not has_media:
        keep = 0  # a header without media plays nothing: set every byte aside
    torn = _save_tail(part, keep, part.parent / "torn")
    name = final.name
    if index.segment(name) is None:
        index.add_open_segment(name=name, recording_id=None, seq=None)
    clock = ClockReading.now()
    # Cut between sealing's chmod 0444 and its rename, the file is read-only already; the
    # service has no capability to override that, so make it writable for the cut.
    os.chmod(part, 0o640)
    with open(part, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    if not has_media:
        # Nothing playable was written: the bytes are kept under torn/, the row says so.
        os.unlink(part)
        fsync_dir(part.parent)
        index.set_state(name, "empty")
        return Recovered(name, "empty", 0, torn, None)
    index.set_state(name, "recovering")  # a cut after the rename still says "recovered"
    os.chmod(part, 0o444)
    os.rename(part, final)
    fsync_dir(final.parent)
    written = read_any_segment(final, index.segment(name))
    index.close_segment(name, written, "recovered", utc_iso(clock.wall_for(clock.monotonic_us)))
    return Recovered(name, "recovered", keep, torn, written.media_end_us)


def recover(evidence_dir: Path, index: Index) -> list[Recovered]:
    """Bring every interrupted segment to a sealed state; record each interruption."""
    results: list[Recovered] = []
    for part in sorted(evidence_dir.glob("*.part")):
        log.warning("recovering interrupted segment %s", part.name)
        results.append(recover_part(part, index))
    for row in index.segments(state="open") + index.segments(state="recovering"):
        final = evidence_dir / row["name"]
        if final.exists():  # crashed between rename and index update: sealing's or ours
            state = "recovered" if row["state"] == "recovering" else "sealed"
            tail = evidence_dir / "torn" / (row["name"] + ".tail")
            torn = tail.stat().st_size if state == "recovered" and tail.exists() else 0
            written = read_any_segment(final, row)
            index.close_segment(row["name"], written, state, row.get("wall_end") or "")
            results.append(Recovered(row["name"], state, written.size, torn, written.media_end_us))
        else:  # crashed before the file was created: nothing was ever written
            index.set_state(row["name"], "missing")
            results.append(Recovered(row["name"], "missing", 0, 0, None))
    if results:
        clock = ClockReading.now()
        for r in results:
            index.add_event(
                "interrupted",
                clock.monotonic_us,
                utc_iso(clock.wall_for(clock.monotonic_us)),
                {
                    "segment": r.name,
                    "state": r.state,
                    "kept_bytes": r.kept_bytes,
                    "torn_bytes": r.torn_bytes,
                    "media_end_us": r.media_end_us,
                },
            )
        index.execute("UPDATE recordings SET stop_reason='interrupted' WHERE stopped_at IS NULL")
    return results
