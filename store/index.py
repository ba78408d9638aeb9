"""The SQLite index of recordings, segments and events in the data directory.

Owns: the schema and every read and write of ``index.sqlite`` (sqlite-utils, WAL,
synchronous=FULL so a committed row survives a power cut). Must not: hold media, or be
the only copy of anything a verifier needs (the evidence files and, later, the ledger
files beside them are the truth; the index makes them quick to find).

Interfaces: the recorder sees it as a ``RecordingJournal``, the sealer as a
``SealingQueue`` (each opened by its own thread with ``open_recording_journal`` /
``open_sealing_queue``); recovery, rebuild and the daemon use the whole ``Index``.

A segment row is written *before* its file is created (state ``open``) and updated when
the file is sealed (``sealed``) or recovered after a crash (``recovered``): an intent
journal, so recovery knows what was in flight.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from evidence.parts import FileHashes, WrittenSegment

SCHEMA_VERSION = 2  # 2: segments.encryption


class RecordingJournal(Protocol):
    """What the recorder may do with the index: journal recordings and segments, before
    and after each file is written (recorder/recorder.py)."""

    def begin_recording(self, trigger: str, started_at: str) -> int: ...

    def end_recording(self, recording_id: int, reason: str, stopped_at: str) -> None: ...

    def add_open_segment(self, **fields: Any) -> int: ...

    def close_segment(
        self, name: str, written: WrittenSegment, state: str, wall_end: str
    ) -> dict[str, Any]: ...

    def segment(self, name: str) -> dict[str, Any] | None: ...

    def set_state(self, name: str, state: str) -> None: ...

    def close(self) -> None: ...


class SealingQueue(Protocol):
    """What the sealer may do with the index: take journaled events in order, read the
    segment rows they name, and record where each ledger entry is (signer/sealer.py)."""

    def pending_events(self, limit: int = 50) -> list[dict[str, Any]]: ...

    def pending_count(self) -> int: ...

    def segment(self, name: str) -> dict[str, Any] | None: ...

    def entry_for_segment(self, name: str) -> int | None: ...

    def mark_event(self, event_id: int, seq: int) -> None: ...

    def record_entry(
        self,
        seq: int,
        kind: str,
        hash_: str,
        offset: int,
        line: str,
        ref: int | None,
        segment: str | None = None,
    ) -> None: ...

    def entries_after(self, seq: int) -> list[dict[str, Any]]: ...

    def last_entry(self) -> dict[str, Any] | None: ...

    def update_segment_file(self, name: str, written: FileHashes, c2pa: bool) -> None: ...

    def close(self) -> None: ...


def open_recording_journal(path: Path) -> RecordingJournal:
    return Index.open(path)


def open_sealing_queue(path: Path) -> SealingQueue:
    return Index.open(path)


class IndexUnavailable(RuntimeError):
    """The index could not be opened or is not one of ours; the message says why."""


class Index:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> Index:
        try:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            db = Database(conn)
            db.enable_wal()
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise IndexUnavailable(
                    f"{path}: index schema {version} is newer than this liuhen ({SCHEMA_VERSION})"
                )
            index = cls(db)
            index._create()
            return index
        except sqlite3.DatabaseError as exc:
            raise IndexUnavailable(f"{path}: not a usable SQLite index ({exc})") from exc

    def _create(self) -> None:
        db = self.db
        db.table("recordings").create(
            {"id": int, "trigger": str, "started_at": str, "stopped_at": str, "stop_reason": str},
            pk="id",
            if_not_exists=True,
        )
        db.table("segments").create(
            {
                "id": int,
                "name": str,
                "recording_id": int,
                "seq": int,
                "state": str,
                "mono_start_us": int,
                "wall_start": str,
                "wall_end": str,
                "media_start_us": int,
                "media_end_us": int,
                "bytes": int,
                "sha256": str,
                "parts": str,
                "video_frames": int,
                "audio_frames": int,
                "c2pa": int,
                "encryption": str,
            },
            pk="id",
            if_not_exists=True,
        )
        if "encryption" not in db.table("segments").columns_dict:  # an index of schema 1
            db.table("segments").add_column("encryption", str)
        db.table("segments").create_index(["name"], unique=True, if_not_exists=True)
        db.table("events").create(
            {"id": int, "kind": str, "mono_us": int, "at": str, "detail": str, "ledger_seq": int},
            pk="id",
            if_not_exists=True,
        )
        db.table("ledger").create(
            {
                "seq": int,
                "kind": str,
                "hash": str,
                "offset": int,
                "line": str,
                "ref": int,
                "segment": str,
            },
            pk="seq",
            if_not_exists=True,
        )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.conn.close()

    # recordings -----------------------------------------------------------------------
    def begin_recording(self, trigger: str, started_at: str) -> int:
        table = self.db.table("recordings")
        table.insert({"trigger": trigger, "started_at": started_at})
        return int(table.last_pk)  # type: ignore[arg-type]

    def end_recording(self, recording_id: int, reason: str, stopped_at: str) -> None:
        self.db.table("recordings").update(
            recording_id, {"stop_reason": reason, "stopped_at": stopped_at}
        )

    # segments -------------------------------------------------------------------------
    def add_open_segment(self, **fields: Any) -> int:
        table = self.db.table("segments")
        table.insert({**fields, "state": "open"})
        return int(table.last_pk)  # type: ignore[arg-type]

    def close_segment(
        self, name: str, written: WrittenSegment, state: str, wall_end: str
    ) -> dict[str, Any]:
        row = self.segment(name)
        if row is None:
            raise KeyError(name)
        self.db.table("segments").update(
            row["id"],
            {
                "state": state,
                "wall_end": wall_end,
                "media_start_us": written.media_start_us,
                "media_end_us": written.media_end_us,
                "bytes": written.size,
                "sha256": written.sha256,
                "parts": json.dumps([[p.offset, p.length, p.sha256] for p in written.parts]),
                "video_frames": written.video_frames,
                "audio_frames": written.audio_frames,
                "encryption": json.dumps(written.encryption) if written.encryption else None,
            },
        )
        updated = self.segment(name)
        assert updated is not None
        return updated

    def set_state(self, name: str, state: str) -> None:
        self.db.execute("UPDATE segments SET state = ? WHERE name = ?", [state, name])

    def segment(self, name: str) -> dict[str, Any] | None:
        rows = list(self.db.table("segments").rows_where("name = ?", [name]))
        return rows[0] if rows else None

    def segments(self, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            return list(self.db.table("segments").rows_where(order_by="id"))
        return list(self.db.table("segments").rows_where("state = ?", [state], order_by="id"))

    def next_recording_seq(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM recordings").fetchone()
        return int(row[0]) + 1

    # events ---------------------------------------------------------------------------
    def add_event(self, kind: str, mono_us: int, at: str, detail: dict[str, Any]) -> int:
        table = self.db.table("events")
        table.insert({"kind": kind, "mono_us": mono_us, "at": at, "detail": json.dumps(detail)})
        return int(table.last_pk)  # type: ignore[arg-type]

    def pending_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Events not yet in the ledger, oldest first: the sealer's queue."""
        rows = self.db.table("events").rows_where("ledger_seq IS NULL", order_by="id", limit=limit)
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]

    def pending_count(self) -> int:
        return int(
            self.db.execute("SELECT COUNT(*) FROM events WHERE ledger_seq IS NULL").fetchone()[0]
        )

    def journal_unjournaled_segments(self, mono_us: int, at: str) -> int:
        """Add a segment_sealed event for every finished segment that lacks one (power
        failed between sealing the file and journaling it). Returns how many."""
        rows = list(
            self.db.query(
                "SELECT name FROM segments WHERE state IN ('sealed', 'recovered') AND name NOT IN "
                "(SELECT json_extract(detail, '$.name') FROM events WHERE kind = 'segment_sealed') "
                "ORDER BY id"
            )
        )
        for row in rows:
            self.add_event("segment_sealed", mono_us, at, {"name": row["name"]})
        return len(rows)

    def record_entry(
        self,
        seq: int,
        kind: str,
        hash_: str,
        offset: int,
        line: str,
        ref: int | None,
        segment: str | None = None,
    ) -> None:
        """Index a ledger entry already durable in the ledger file, in one transaction."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT OR IGNORE INTO ledger (seq, kind, hash, offset, line, ref, segment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [seq, kind, hash_, offset, line, ref, segment],
            )
            if ref is not None:
                conn.execute("UPDATE events SET ledger_seq = ? WHERE id = ?", [seq, ref])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def entry_for_segment(self, name: str) -> int | None:
        row = self.db.execute("SELECT seq FROM ledger WHERE segment = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    def mark_event(self, event_id: int, seq: int) -> None:
        self.db.execute("UPDATE events SET ledger_seq = ? WHERE id = ?", [seq, event_id])

    def entries_after(self, seq: int) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT seq, line FROM ledger WHERE seq > ? ORDER BY seq", [seq]))

    def last_entry(self) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM ledger ORDER BY seq DESC LIMIT 1"))
        return rows[0] if rows else None

    def update_segment_file(self, name: str, written: FileHashes, c2pa: bool) -> None:
        """The file was rewritten before it entered the ledger (C2PA manifest embedded)."""
        self.db.execute(
            "UPDATE segments SET bytes = ?, sha256 = ?, parts = ?, c2pa = ? WHERE name = ?",
            [
                written.size,
                written.sha256,
                json.dumps([[p.offset, p.length, p.sha256] for p in written.parts]),
                int(c2pa),
                name,
            ],
        )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = ("kind = ?", [kind]) if kind else (None, [])
        rows = self.db.table("events").rows_where(where, args, order_by="id")
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]
