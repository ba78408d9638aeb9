"""The SQLite index of recordings, segments and events in the data directory.

Owns: the schema and every read and write of ``index.sqlite`` (the standard library's
sqlite3, WAL, synchronous=FULL so a committed row survives a power cut). Must not: hold media, or be
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
import re
import sqlite3
from pathlib import Path
from typing import Any, Protocol

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


_TABLES = {
    "recordings": "id INTEGER PRIMARY KEY, trigger TEXT, started_at TEXT, stopped_at TEXT, "
    "stop_reason TEXT",
    "segments": "id INTEGER PRIMARY KEY, name TEXT, recording_id INTEGER, seq INTEGER, "
    "state TEXT, mono_start_us INTEGER, wall_start TEXT, wall_end TEXT, "
    "media_start_us INTEGER, media_end_us INTEGER, bytes INTEGER, sha256 TEXT, parts TEXT, "
    "video_frames INTEGER, audio_frames INTEGER, c2pa INTEGER, encryption TEXT",
    "events": "id INTEGER PRIMARY KEY, kind TEXT, mono_us INTEGER, at TEXT, detail TEXT, "
    "ledger_seq INTEGER",
    "ledger": "seq INTEGER PRIMARY KEY, kind TEXT, hash TEXT, offset INTEGER, line TEXT, "
    "ref INTEGER, segment TEXT",
}
_COLUMN = re.compile(r"[a-z_][a-z0-9_]*")


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, values, strict=True)}


class Index:
    """``index.sqlite`` through the standard library's sqlite3 (ADR 0019: the unit's
    service path imports no table library). Rows come back as plain dicts."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path) -> Index:
        try:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            conn.row_factory = _row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()["user_version"]
            if version > SCHEMA_VERSION:
                raise IndexUnavailable(
                    f"{path}: index schema {version} is newer than this liuhen ({SCHEMA_VERSION})"
                )
            index = cls(conn)
            index._create()
            return index
        except sqlite3.DatabaseError as exc:
            raise IndexUnavailable(f"{path}: not a usable SQLite index ({exc})") from exc

    def _create(self) -> None:
        for table, columns in _TABLES.items():
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(segments)")}
        if "encryption" not in have:  # an index of schema 1
            self.conn.execute("ALTER TABLE segments ADD COLUMN encryption TEXT")
        self.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS idx_segments_name ON segments (name)")
        self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    # plain statements (rebuild, recovery and tests use these too) ----------------------
    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def query(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        return list(self.conn.execute(sql, args))

    def insert(self, table: str, row: dict[str, Any], conflict: str = "ABORT") -> int:
        """Insert one row; ``conflict`` is SQLite's ON CONFLICT action (ABORT, IGNORE,
        REPLACE). Returns the row id."""
        if table not in _TABLES or conflict not in ("ABORT", "IGNORE", "REPLACE"):
            raise ValueError(f"insert into {table!r} or {conflict}: not an index table/action")
        names = list(row)
        if not all(_COLUMN.fullmatch(n) for n in names):
            raise ValueError(f"not index columns: {names}")
        cursor = self.conn.execute(
            f"INSERT OR {conflict} INTO {table} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            [row[n] for n in names],
        )
        return int(cursor.lastrowid or 0)

    def update(self, table: str, row_id: int, fields: dict[str, Any]) -> None:
        if table not in _TABLES or not all(_COLUMN.fullmatch(n) for n in fields):
            raise ValueError(f"update of {table!r} {list(fields)}: not index columns")
        sets = ", ".join(f"{n} = ?" for n in fields)
        self.conn.execute(f"UPDATE {table} SET {sets} WHERE id = ?", [*fields.values(), row_id])

    # recordings -----------------------------------------------------------------------
    def begin_recording(self, trigger: str, started_at: str) -> int:
        return self.insert("recordings", {"trigger": trigger, "started_at": started_at})

    def end_recording(self, recording_id: int, reason: str, stopped_at: str) -> None:
        self.update("recordings", recording_id, {"stop_reason": reason, "stopped_at": stopped_at})

    # segments -------------------------------------------------------------------------
    def add_open_segment(self, **fields: Any) -> int:
        return self.insert("segments", {**fields, "state": "open"})

    def close_segment(
        self, name: str, written: WrittenSegment, state: str, wall_end: str
    ) -> dict[str, Any]:
        row = self.segment(name)
        if row is None:
            raise KeyError(name)
        self.update(
            "segments",
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
        self.conn.execute("UPDATE segments SET state = ? WHERE name = ?", [state, name])

    def segment(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM segments WHERE name = ?", [name])
        return rows[0] if rows else None

    def segments(self, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            return self.query("SELECT * FROM segments ORDER BY id")
        return self.query("SELECT * FROM segments WHERE state = ? ORDER BY id", [state])

    def next_recording_seq(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(id), 0) AS n FROM recordings").fetchone()
        return int(row["n"]) + 1

    # events ---------------------------------------------------------------------------
    def add_event(self, kind: str, mono_us: int, at: str, detail: dict[str, Any]) -> int:
        return self.insert(
            "events", {"kind": kind, "mono_us": mono_us, "at": at, "detail": json.dumps(detail)}
        )

    def pending_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Events not yet in the ledger, oldest first: the sealer's queue."""
        rows = self.query(
            "SELECT * FROM events WHERE ledger_seq IS NULL ORDER BY id LIMIT ?", [limit]
        )
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]

    def pending_count(self) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) AS n FROM events WHERE ledger_seq IS NULL"
        ).fetchone()
        return int(row["n"])

    def journal_unjournaled_segments(self, mono_us: int, at: str) -> int:
        """Add a segment_sealed event for every finished segment that lacks one (power
        failed between sealing the file and journaling it). Returns how many."""
        rows = self.query(
            "SELECT name FROM segments WHERE state IN ('sealed', 'recovered') AND name NOT IN "
            "(SELECT json_extract(detail, '$.name') FROM events WHERE kind = 'segment_sealed') "
            "ORDER BY id"
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
        conn = self.conn
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
        row = self.conn.execute("SELECT seq FROM ledger WHERE segment = ?", [name]).fetchone()
        return None if row is None else int(row["seq"])

    def mark_event(self, event_id: int, seq: int) -> None:
        self.conn.execute("UPDATE events SET ledger_seq = ? WHERE id = ?", [seq, event_id])

    def entries_after(self, seq: int) -> list[dict[str, Any]]:
        return self.query("SELECT seq, line FROM ledger WHERE seq > ? ORDER BY seq", [seq])

    def last_entry(self) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM ledger ORDER BY seq DESC LIMIT 1")
        return rows[0] if rows else None

    def update_segment_file(self, name: str, written: FileHashes, c2pa: bool) -> None:
        """The file was rewritten before it entered the ledger (C2PA manifest embedded)."""
        self.conn.execute(
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
        if kind:
            rows = self.query("SELECT * FROM events WHERE kind = ? ORDER BY id", [kind])
        else:
            rows = self.query("SELECT * FROM events ORDER BY id")
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]
