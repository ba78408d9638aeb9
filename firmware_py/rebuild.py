"""`liuhen index rebuild --data DIR`: a damaged index made anew from the evidence.

Owns: building a new ``index.sqlite`` from what is the truth — ``ledger.jsonl`` and the
segment files beside it — so the unit can start again and continue its chain:
recording numbers go on from the highest any file or entry names, every journaled
event keeps its id (entries refer to it), and no segment is signed twice. Segment files
the ledger does not name yet (sealed, not yet signed when the index broke) are indexed
and journaled, so the sealer signs them. The new index is built beside the old one and
only then swapped in; the damaged one is renamed, never deleted, under a name no
later rebuild can reuse. Must not: change the ledger or any evidence file, run beside a
running daemon (the data directory's lock is taken), or build over a ledger that is
not this unit's own, whole chain (an export, a gap, another device).

Events journaled in the damaged index but not yet in the ledger (a mark pressed seconds
before the damage, a recording's start while the key was away) are salvaged from it
when SQLite can still read it, and journaled again; otherwise they are lost, and the
signed ``index_rebuilt`` event says so.
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

from evidence.durable import fsync_dir
from evidence.ledger import LEDGER_FILE, Entry, iter_lines
from firmware_py.daemon import DataDir
from hw.clock import ClockReading, utc_iso
from recorder.recovery import read_any_segment
from store.index import Index

SEGMENT_FILE = re.compile(r"_r(\d{5})_s(\d{4})\.mp4(\.enc)?$")
SEGMENT_NUMBERS = re.compile(r"_r(\d{5})_s(\d{4})\.mp4")  # also .part, torn/*.tail
SQLITE_FILES = ("", "-wal", "-shm")


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


# --- reading what is there ---------------------------------------------------------------
def read_ledger(path: Path) -> tuple[list[tuple[int, Entry, str]], bool]:
    """(offset, entry, line) of each whole entry, and whether a torn last line follows.
    A last line without its newline is torn even if it parses: the sealer sets it aside
    when it opens the ledger, and its sequence number is given to the next entry."""
    if not path.is_file():
        return [], False
    entries: list[tuple[int, Entry, str]] = []
    with open(path, "rb") as f:
        lines = list(iter_lines(f))
    torn = bool(lines) and not lines[-1][1].endswith(b"\n")
    for number, (offset, line) in enumerate(lines[:-1] if torn else lines, start=1):
        try:
            entry = Entry.from_line(line)
        except ValueError as exc:
            raise RebuildError(
                f"{path} line {number} is unreadable ({exc}); the ledger itself is damaged: "
                "`liuhen verify` names the damage, and the index is not rebuilt over it"
            ) from None
        entries.append((offset, entry, line.decode().rstrip("\n")))
    check_chain(path, [e for _, e, _ in entries])
    return entries, torn


def check_chain(path: Path, entries: list[Entry]) -> None:
    """One device, every body present, sequence numbers 0, 1, 2, … with no gap."""
    devices = {e.header.get("device") for e in entries}
    if len(devices) > 1:
        raise RebuildError(f"{path} holds entries of several devices ({sorted(map(str, devices))})")
    for expected, entry in enumerate(entries):
        if entry.body is None:
            raise RebuildError(f"{path}: entry {entry.seq} has its body withheld: an export, "
                               "not a unit's own ledger")  # fmt: skip
        if entry.seq != expected:
            raise RebuildError(f"{path}: entry {entry.seq} where {expected} belongs; the chain "
                               "is broken (`liuhen verify` names how)")  # fmt: skip


@dataclass
class DamagedIndex:
    """What SQLite can still read of the index being replaced (best effort)."""

    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # kind, mono_us, at, detail
    error: str | None = None

    @classmethod
    def read(cls, path: Path, after_ref: int) -> DamagedIndex:
        found = cls()
        if not path.exists():
            return found
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            try:
                found.segments = {
                    r["name"]: dict(r) for r in conn.execute("SELECT * FROM segments")
                }
                found.pending = [tuple(r) for r in conn.execute(
                    "SELECT kind, mono_us, at, detail FROM events WHERE ledger_seq IS NULL "
                    "AND kind != 'segment_sealed' AND id > ? ORDER BY id", [after_ref])]  # fmt: skip
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            found.error = str(exc)
        return found


# --- writing the new index ---------------------------------------------------------------
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
    body = entry.body_json()
    event_row: dict[str, Any] | None = None
    if entry.kind == "segment" and isinstance(body.get("segment"), dict):
        seg = body["segment"]
        index.insert("segments", _segment_row(seg))
        report.segments += 1
        if isinstance(seg.get("recording"), int):
            recordings.setdefault(seg["recording"], {"started_at": seg.get("wall_start")})
        event_row = {"kind": "segment_sealed", "mono_us": None, "at": seg.get("wall_end"),
                     "detail": json.dumps({"name": seg["name"]})}  # fmt: skip
    elif entry.kind == "event" and isinstance(body.get("event"), dict):
        event = body["event"]
        detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
        event_row = {"kind": event.get("type"), "mono_us": event.get("mono_us"),
                     "at": event.get("at"), "detail": json.dumps(detail)}  # fmt: skip
        recording = detail.get("recording_id")
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
        index.insert("events", {"id": entry.ref, **event_row, "ledger_seq": entry.seq})
        report.events += 1
    index.record_entry(
        entry.seq, entry.kind, entry.hash, offset, line, entry.ref, entry.segment_name
    )
    report.entries += 1


def _index_unsigned_files(index: Index, evidence: Path, old: DamagedIndex, report: Rebuilt) -> None:
    """Segment files no entry names: sealed, not yet signed. Journal them for the sealer,
    with what the damaged index still says of them (state, times)."""
    known = {row["name"] for row in index.segments()}
    for path in sorted(evidence.iterdir()):
        numbers = SEGMENT_FILE.search(path.name)
        if numbers is None or path.name in known or not path.is_file():
            continue
        row = old.segments.get(path.name)
        written = read_any_segment(path, row)
        state = row["state"] if row and row.get("state") in ("sealed", "recovered") else "sealed"
        index.add_open_segment(name=path.name, recording_id=int(numbers.group(1)),
                               seq=int(numbers.group(2)),
                               wall_start=(row or {}).get("wall_start"))  # fmt: skip
        index.close_segment(path.name, written, state, (row or {}).get("wall_end") or "")
        report.unsigned_files.append(path.name)
    if report.unsigned_files:
        clock = ClockReading.now()
        index.journal_unjournaled_segments(
            clock.monotonic_us, utc_iso(clock.wall_for(clock.monotonic_us))
        )


def _reserve_recording_numbers(index: Index, evidence: Path, old: DamagedIndex) -> None:
    """Every recording number a file, a torn tail or the damaged index names stays taken,
    even where its start was never signed: the next recording gets a new one."""
    numbers = {
        int(m.group(1)) for p in evidence.rglob("*") if (m := SEGMENT_NUMBERS.search(p.name))
    }
    numbers |= {r["recording_id"] for r in old.segments.values() if isinstance(r.get("recording_id"), int)}  # fmt: skip
    for number in sorted(numbers):
        index.insert("recordings", {"id": number, "stop_reason": "interrupted"}, "IGNORE")  # fmt: skip


def _unique_aside(index: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        target = index.with_name(f"{index.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        if not any(Path(f"{target}{s}").exists() for s in SQLITE_FILES):
            return target
    raise RebuildError(f"{index.parent}: too many set-aside indexes named {stamp}")


def _move(source: Path, target: Path) -> None:
    for suffix in SQLITE_FILES:
        if Path(f"{source}{suffix}").exists():
            os.replace(f"{source}{suffix}", f"{target}{suffix}")


def rebuild(data: DataDir) -> Rebuilt:
    """Build a new index from the ledger and the files, then swap it in for the old one."""
    entries, torn = read_ledger(data.evidence / LEDGER_FILE)  # a bad ledger stops here
    lock = data.prepare()  # DataDirError if the daemon holds the data directory
    try:
        report = Rebuilt(torn_tail=torn)
        max_ref = max((e.ref for _, e, _ in entries if e.ref is not None), default=0)
        old = DamagedIndex.read(data.index, max_ref)
        building = data.root / "index.sqlite.rebuilding"
        for suffix in SQLITE_FILES:  # an interrupted rebuild's leftovers: ours, not evidence
            Path(f"{building}{suffix}").unlink(missing_ok=True)
        index = Index.open(building)
        try:
            recordings: dict[int, dict[str, Any]] = {}
            for offset, entry, line in entries:
                _index_entry(index, entry, offset, line, report, recordings)
            for rid, rec in sorted(recordings.items()):
                stopped = {"stop_reason": "interrupted"} if "stop_reason" not in rec else {}
                index.insert("recordings", {"id": rid, **rec, **stopped}, "REPLACE")
            report.recordings = len(recordings)
            _reserve_recording_numbers(index, data.evidence, old)
            _index_unsigned_files(index, data.evidence, old, report)
            report.salvage_error = old.error
            for kind, mono_us, at, detail in old.pending:
                index.add_event(kind, mono_us, at, json.loads(detail))
                report.salvaged_events += 1
            if data.index.exists():
                report.set_aside = _unique_aside(data.index)
            clock = ClockReading.now()  # the rebuild itself is signed, for the auditor
            index.add_event("index_rebuilt", clock.monotonic_us,
                            utc_iso(clock.wall_for(clock.monotonic_us)), report.to_json())  # fmt: skip
            index.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            index.close()
        with open(building, "rb+") as f:
            os.fsync(f.fileno())
        if report.set_aside is not None:
            _move(data.index, report.set_aside)
        _move(building, data.index)
        fsync_dir(data.root)
        return report
    except Exception as exc:
        if isinstance(exc, RebuildError):
            raise
        raise RebuildError(f"the rebuild stopped, the old index untouched: {exc!r}") from exc
    finally:
        os.close(lock)
