"""`liuhen index rebuild --data DIR`: a damaged index made anew from the evidence.

Owns: setting a damaged ``index.sqlite`` aside (renamed, never deleted) and building a
new one from what is the truth — ``ledger.jsonl`` and the segment files beside it — so
the unit can start again and continue its chain: recording numbers go on from the
highest the ledger names, every journaled event keeps its id (entries refer to it), and
no segment is signed twice. Segment files the ledger does not name yet (sealed, not yet
signed when the index broke) are indexed and journaled, so the sealer signs them.
Must not: change the ledger or any evidence file, or run beside a running daemon (the
data directory's lock is taken).

Events journaled in the damaged index but not yet in the ledger (a mark pressed seconds
before the damage, a recording's start while the key was away) are salvaged from the
file set aside when SQLite can still read it, and journaled again; otherwise they are
lost, and the signed ``index_rebuilt`` event says so.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware_py.daemon import DataDir
from hw.clock import ClockReading, utc_iso
from recorder.fmp4 import fsync_dir
from recorder.index import Index
from recorder.recovery import read_encrypted_segment, read_segment
from signer.ledger import LEDGER_FILE, Entry, iter_lines

SEGMENT_NAME = re.compile(r"_r(\d{5})_s(\d{4})\.mp4(\.enc)?$")


class RebuildError(RuntimeError):
    """The index cannot be rebuilt as asked; the message says why (nothing was changed
    unless it says so)."""


@dataclass
class Rebuilt:
    set_aside: Path | None = None
    entries: int = 0
    segments: int = 0
    events: int = 0
    recordings: int = 0
    unsigned_files: list[str] = field(default_factory=list)
    torn_tail: bool = False
    salvaged_events: int = 0
    salvage_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "set_aside": self.set_aside.name if self.set_aside else None}


def set_aside(index: Path) -> Path | None:
    """Rename the index and its WAL/SHM files to ``index.sqlite.damaged-<UTC time>``."""
    if not index.exists():
        return None
    target = index.with_name(
        f"{index.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    )
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{index}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    fsync_dir(index.parent)
    return target


def read_ledger(path: Path) -> tuple[list[tuple[int, Entry, str]], bool]:
    """(offset, entry, line) of each whole entry, and whether a torn last line follows
    (a power cut; the sealer sets it aside when it opens the ledger)."""
    entries: list[tuple[int, Entry, str]] = []
    with open(path, "rb") as f:
        lines = list(iter_lines(f))
    for number, (offset, line) in enumerate(lines, start=1):
        try:
            entry = Entry.from_line(line)
        except ValueError as exc:
            if number == len(lines) and not line.endswith(b"\n"):
                return entries, True
            raise RebuildError(
                f"{path} line {number} is unreadable ({exc}); the ledger itself is damaged: "
                "`liuhen verify` names the damage, and the index is not rebuilt over it"
            ) from None
        entries.append((offset, entry, line.decode().rstrip("\n")))
    return entries, False


def _segment_row(seg: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": seg["name"], "recording_id": seg.get("recording"), "seq": seg.get("seq"),
        "state": seg.get("state"), "wall_start": seg.get("wall_start"),
        "wall_end": seg.get("wall_end"), "media_start_us": seg.get("media_start_us"),
        "media_end_us": seg.get("media_end_us"), "bytes": seg.get("bytes"),
        "sha256": seg.get("sha256"), "parts": json.dumps(seg.get("parts")),
        "video_frames": seg.get("video_frames"), "audio_frames": seg.get("audio_frames"),
        "c2pa": int(bool(seg.get("c2pa"))),
        "encryption": json.dumps(seg["encryption"]) if seg.get("encryption") else None,
    }  # fmt: skip


def _index_entry(index: Index, entry: Entry, offset: int, line: str, report: Rebuilt,
                 recordings: dict[int, dict[str, Any]]) -> None:  # fmt: skip
    body = entry.body_json() if entry.body is not None else {}
    event_row: dict[str, Any] | None = None
    if entry.kind == "segment" and isinstance(body.get("segment"), dict):
        seg = body["segment"]
        index.db.table("segments").insert(_segment_row(seg))
        report.segments += 1
        if isinstance(seg.get("recording"), int):
            recordings.setdefault(
                seg["recording"], {"trigger": None, "started_at": seg.get("wall_start")}
            )
        event_row = {"kind": "segment_sealed", "mono_us": None, "at": seg.get("wall_end"),
                     "detail": json.dumps({"name": seg["name"]})}  # fmt: skip
    elif entry.kind == "event" and isinstance(body.get("event"), dict):
        event = body["event"]
        detail = event.get("detail") or {}
        event_row = {"kind": event.get("type"), "mono_us": event.get("mono_us"),
                     "at": event.get("at"), "detail": json.dumps(detail)}  # fmt: skip
        recording = detail.get("recording_id") if isinstance(detail, dict) else None
        if isinstance(recording, int) and event.get("type") == "recording_started":
            recordings[recording] = {
                "trigger": detail.get("trigger"),
                "started_at": event.get("at"),
            }
        elif isinstance(recording, int) and event.get("type") == "recording_stopped":
            recordings.setdefault(recording, {}).update(
                stopped_at=event.get("at"), stop_reason=detail.get("reason")
            )
    if event_row is not None and entry.ref is not None:
        index.db.table("events").insert({"id": entry.ref, **event_row, "ledger_seq": entry.seq})
        report.events += 1
    index.record_entry(
        entry.seq, entry.kind, entry.hash, offset, line, entry.ref, entry.segment_name
    )
    report.entries += 1


def _index_unsigned_files(index: Index, evidence: Path, report: Rebuilt) -> None:
    """Segment files no entry names: sealed, not yet signed. Journal them for the sealer."""
    known = {row["name"] for row in index.segments()}
    for path in sorted(evidence.iterdir()):
        numbers = SEGMENT_NAME.search(path.name)
        if numbers is None or path.name in known:
            continue
        encrypted = numbers.group(3) is not None
        written = read_encrypted_segment(path, None) if encrypted else read_segment(path)
        recording = int(numbers.group(1))
        index.db.table("recordings").insert(
            {"id": recording, "stop_reason": "interrupted"}, ignore=True
        )  # its number is taken, even if its start was never signed
        index.add_open_segment(name=path.name, recording_id=recording, seq=int(numbers.group(2)))
        index.close_segment(path.name, written, "sealed", "")
        report.unsigned_files.append(path.name)
    if report.unsigned_files:
        clock = ClockReading.now()
        index.journal_unjournaled_segments(
            clock.monotonic_us, utc_iso(clock.wall_for(clock.monotonic_us))
        )


def salvage_unsigned_events(damaged: Path, index: Index, report: Rebuilt) -> None:
    """Events the damaged index journaled but the ledger never got, if SQLite can still
    read them: journaled again (new ids), so they are signed after all."""
    try:
        conn = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT kind, mono_us, at, detail FROM events WHERE ledger_seq IS NULL "
                "AND kind != 'segment_sealed' ORDER BY id"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        report.salvage_error = str(exc)
        return
    for kind, mono_us, at, detail in rows:
        index.add_event(kind, mono_us, at, json.loads(detail))
        report.salvaged_events += 1


def rebuild(data: DataDir) -> Rebuilt:
    """Set the damaged index aside and build a new one from the ledger and the files."""
    ledger = data.evidence / LEDGER_FILE
    if not ledger.is_file():
        raise RebuildError(f"{ledger}: no ledger to rebuild from")
    entries, torn = read_ledger(ledger)  # before touching anything: a bad ledger stops here
    lock = data.prepare()  # DataDirError if the daemon holds the data directory
    try:
        report = Rebuilt(torn_tail=torn)
        report.set_aside = set_aside(data.index)
        index = Index.open(data.index)
        try:
            recordings: dict[int, dict[str, Any]] = {}
            for offset, entry, line in entries:
                _index_entry(index, entry, offset, line, report, recordings)
            for rid, rec in sorted(recordings.items()):
                stopped = {"stop_reason": "interrupted"} if "stop_reason" not in rec else {}
                index.db.table("recordings").insert({"id": rid, **rec, **stopped}, replace=True)
            report.recordings = len(recordings)
            _index_unsigned_files(index, data.evidence, report)
            if report.set_aside is not None:
                salvage_unsigned_events(report.set_aside, index, report)
            clock = ClockReading.now()  # the rebuild itself is signed, for the auditor
            index.add_event("index_rebuilt", clock.monotonic_us,
                            utc_iso(clock.wall_for(clock.monotonic_us)), report.to_json())  # fmt: skip
        finally:
            index.close()
        return report
    finally:
        os.close(lock)
