"""``CentralStore`` on SQLite (sqlite-utils): the embedded default, one file.

Owns: the schema (``PRAGMA user_version``), WAL with ``synchronous=FULL`` (a committed
batch survives a power cut, so an acknowledged MQTT message is never lost), one
connection serialised by a lock (the ingest thread writes in batches; web threads read
and record uploads), and the SQL of every query. Must not: verify, or know HTTP/MQTT.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from central.store import Row, StoreError
from evidence.ledger import Entry

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    device TEXT PRIMARY KEY, presence TEXT, presence_at REAL, status TEXT, status_at REAL,
    first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    key_id TEXT PRIMARY KEY, device TEXT NOT NULL, pem TEXT NOT NULL, trusted INTEGER NOT NULL,
    source TEXT NOT NULL, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    device TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, prev TEXT NOT NULL,
    kind TEXT NOT NULL, wall TEXT, clock_synced INTEGER, key TEXT, keyid TEXT NOT NULL,
    trusted INTEGER NOT NULL, received_at REAL NOT NULL, line BLOB NOT NULL, body TEXT,
    segment TEXT, recording INTEGER, event_type TEXT, case_no TEXT,
    PRIMARY KEY (device, seq));
CREATE INDEX IF NOT EXISTS entries_case ON entries (case_no) WHERE case_no IS NOT NULL;
CREATE TABLE IF NOT EXISTS segments (
    device TEXT NOT NULL, name TEXT NOT NULL, entry_seq INTEGER NOT NULL, recording INTEGER,
    rseq INTEGER, state TEXT, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, parts TEXT NOT NULL,
    media_start_us INTEGER, media_end_us INTEGER, wall_start TEXT, wall_end TEXT, case_no TEXT,
    upload TEXT NOT NULL DEFAULT 'awaiting', received_bytes INTEGER NOT NULL DEFAULT 0,
    stored_at TEXT, receipt TEXT, reason TEXT, updated_at REAL,
    PRIMARY KEY (device, name));
CREATE INDEX IF NOT EXISTS segments_sha256 ON segments (sha256);
CREATE INDEX IF NOT EXISTS segments_wall ON segments (wall_start, wall_end);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, received_at REAL NOT NULL,
    payload BLOB NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rejected_device ON rejected (device, code);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
    opened_at REAL NOT NULL, updated_at REAL NOT NULL, closed_at REAL, count INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (device, code) WHERE closed_at IS NULL;
"""


def _context(body: dict[str, Any]) -> tuple[str | None, int | None, str | None, str | None]:
    """(segment name, recording, event type, case) an entry body speaks of."""
    segment = body.get("segment")
    if isinstance(segment, dict):
        context = body.get("context") or {}
        return segment.get("name"), segment.get("recording"), None, context.get("case")
    event = body.get("event")
    if not isinstance(event, dict):
        return None, None, None, None
    detail: dict[str, Any] = event["detail"] if isinstance(event.get("detail"), dict) else {}
    position: dict[str, Any] = (
        detail["position"] if isinstance(detail.get("position"), dict) else {}
    )
    recording = detail.get("recording_id", position.get("recording_id"))
    name = detail.get("segment", position.get("segment"))
    return (
        name if isinstance(name, str) else None,
        recording if isinstance(recording, int) else None,
        str(event.get("type")),
        detail.get("case") if isinstance(detail.get("case"), str) else None,
    )


class SqliteStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._db = Database(conn)
        self._lock = threading.RLock()
        self._depth = 0

    @classmethod
    def open(cls, path: str) -> SqliteStore:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            store = cls(conn)
            store._db.enable_wal()
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{path}: schema {version} is newer than this liuhen's ({SCHEMA_VERSION})")  # fmt: skip
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: not a usable SQLite database ({exc})") from None
        return store

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: Any = ()) -> list[Row]:
        with self._lock:
            return [dict(r) for r in self._db.query(sql, args)]

    def _write(self, sql: str, args: Any = ()) -> None:
        with self.transaction():
            self._conn.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # units ----------------------------------------------------------------------------
    def _save_unit(self, device: str, column: str, document: Row, at: float) -> None:
        self._write(
            f"INSERT INTO units (device, {column}, {column}_at, first_seen) VALUES (?, ?, ?, ?) "
            f"ON CONFLICT (device) DO UPDATE SET {column} = excluded.{column}, "
            f"{column}_at = excluded.{column}_at",
            (device, json.dumps(document), at, at),
        )

    def save_presence(self, device: str, document: Row, at: float) -> None:
        self._save_unit(device, "presence", document, at)

    def save_status(self, device: str, document: Row, at: float) -> None:
        self._save_unit(device, "status", document, at)

    def units(self) -> list[Row]:
        rows = self._rows("SELECT * FROM units ORDER BY device")
        for row in rows:
            for key in ("presence", "status"):
                row[key] = json.loads(row[key]) if row[key] else None
        return rows

    def save_certificate(self, key_id: str, device: str, pem: str, trusted: bool, source: str) -> None:  # fmt: skip
        self._write(
            "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, strftime('%s')) ON CONFLICT (key_id) "
            "DO UPDATE SET trusted = excluded.trusted, pem = excluded.pem",
            (key_id, device, pem, int(trusted), source),
        )

    def certificates(self, device: str | None = None) -> list[Row]:
        if device is None:
            return self._rows("SELECT * FROM certificates ORDER BY first_seen")
        return self._rows("SELECT * FROM certificates WHERE device = ? ORDER BY first_seen", [device])  # fmt: skip

    # entries ----------------------------------------------------------------------------
    def add_entry(self, entry: Entry, line: bytes, trusted: bool, at: float) -> None:
        h = entry.header
        body = entry.body_json() if entry.body is not None else {}
        segment, recording, event_type, case = _context(body)
        device = str(h["device"])
        with self.transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (device, entry.seq, entry.hash, h["prev"], entry.kind, h.get("wall"),
                 h.get("clock_synced"), h.get("key"), entry.envelope.keyid, int(trusted), at,
                 line, entry.body.decode() if entry.body is not None else None,
                 segment, recording, event_type, case),
            )  # fmt: skip
            seg = body.get("segment")
            if entry.kind == "segment" and isinstance(seg, dict):
                self._conn.execute(
                    "INSERT OR IGNORE INTO segments (device, name, entry_seq, recording, rseq, "
                    "state, bytes, sha256, parts, media_start_us, media_end_us, wall_start, "
                    "wall_end, case_no, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (device, seg.get("name"), entry.seq, seg.get("recording"), seg.get("seq"),
                     seg.get("state"), seg.get("bytes"), seg.get("sha256"),
                     json.dumps(seg.get("parts")), seg.get("media_start_us"),
                     seg.get("media_end_us"), seg.get("wall_start"), seg.get("wall_end"), case, at),
                )  # fmt: skip

    def known_entry(self, device: str, seq: int) -> tuple[str, str] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT hash, prev FROM entries WHERE device = ? AND seq = ?", (device, seq)
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def chain_state(self, device: str) -> tuple[int | None, set[int]]:
        with self._lock:
            last = self._conn.execute(
                "SELECT MAX(seq) FROM entries WHERE device = ?", (device,)
            ).fetchone()[0]
            gaps = self._conn.execute(
                "SELECT before, seq FROM (SELECT seq, LAG(seq, 1, -1) OVER (ORDER BY seq) AS "
                "before FROM entries WHERE device = ?) WHERE seq - before > 1",
                (device,),
            ).fetchall()
        missing: set[int] = set()
        for before, seq in gaps:
            missing.update(range(before + 1, seq))
        return last, missing

    def lines(self, device: str) -> Iterator[tuple[int, bytes]]:
        after = -1
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT seq, line FROM entries WHERE device = ? AND seq > ? ORDER BY seq LIMIT 1000",
                    (device, after),
                ).fetchall()
            if not rows:
                return
            for seq, line in rows:
                yield int(seq), bytes(line)
            after = rows[-1][0]

    def timeline(self, device: str, limit: int) -> list[Row]:
        rows = self._rows(
            "SELECT seq, kind, wall, clock_synced, key, trusted, body, segment, recording, "
            "event_type, case_no FROM entries WHERE device = ? ORDER BY seq DESC LIMIT ?",
            [device, limit],
        )
        for row in rows:
            row["body"] = json.loads(row["body"]) if row["body"] else None
        return rows

    def add_rejected(self, device: str, payload: bytes, code: str, message: str, at: float) -> None:
        self._write(
            "INSERT INTO rejected (device, received_at, payload, code, message) VALUES (?,?,?,?,?)",
            (device, at, payload, code, message),
        )

    def rejected(self, device: str, code: str | None = None) -> list[Row]:
        where, args = ("device = ?", [device]) if code is None else ("device = ? AND code = ?", [device, code])  # fmt: skip
        return self._rows(f"SELECT * FROM rejected WHERE {where} ORDER BY id", args)

    def drop_rejected(self, ids: list[int]) -> None:
        with self.transaction():
            self._conn.executemany("DELETE FROM rejected WHERE id = ?", [(i,) for i in ids])

    # segments ------------------------------------------------------------------------------
    def segment(self, device: str, name: str) -> Row | None:
        rows = self._rows("SELECT * FROM segments WHERE device = ? AND name = ?", [device, name])
        return rows[0] if rows else None

    def segment_by_sha256(self, sha256: str) -> Row | None:
        rows = self._rows("SELECT * FROM segments WHERE sha256 = ? ORDER BY upload = 'stored' DESC LIMIT 1", [sha256])  # fmt: skip
        return rows[0] if rows else None

    def segments(self, device: str, limit: int = 500) -> list[Row]:
        return self._rows(
            "SELECT * FROM segments WHERE device = ? ORDER BY entry_seq DESC LIMIT ?",
            [device, limit],
        )

    def set_upload(self, device: str, name: str, **fields: Any) -> None:
        if not fields:
            return
        columns = ", ".join(f"{k} = ?" for k in fields)
        self._write(
            f"UPDATE segments SET {columns}, updated_at = strftime('%s') WHERE device = ? AND name = ?",
            (*fields.values(), device, name),
        )

    # selections -------------------------------------------------------------------------------
    def recordings_of_case(self, case: str) -> list[tuple[str, int]]:
        rows = self._rows(
            "SELECT DISTINCT device, recording FROM entries WHERE case_no = ? AND recording IS NOT NULL "
            "ORDER BY device, recording",
            [case],
        )
        return [(r["device"], int(r["recording"])) for r in rows]

    def recordings_between(self, start: str, end: str) -> list[tuple[str, int]]:
        rows = self._rows(
            "SELECT DISTINCT device, recording FROM segments WHERE wall_start < ? AND wall_end > ? "
            "AND recording IS NOT NULL ORDER BY device, recording",
            [end, start],
        )
        return [(r["device"], int(r["recording"])) for r in rows]

    # alerts -------------------------------------------------------------------------------------
    def open_alert(self, device: str, code: str, message: str, at: float) -> tuple[Row, bool]:
        with self.transaction():
            found = self._conn.execute(
                "SELECT id FROM alerts WHERE device = ? AND code = ? AND closed_at IS NULL",
                (device, code),
            ).fetchone()
            if found is None:
                self._conn.execute(
                    "INSERT INTO alerts (device, code, message, opened_at, updated_at, count) "
                    "VALUES (?, ?, ?, ?, ?, 1)",
                    (device, code, message, at, at),
                )
            else:
                self._conn.execute(
                    "UPDATE alerts SET message = ?, updated_at = ?, count = count + 1 WHERE id = ?",
                    (message, at, found[0]),
                )
            row = self._rows(
                "SELECT * FROM alerts WHERE device = ? AND code = ? AND closed_at IS NULL",
                [device, code],
            )[0]
        return row, found is None

    def close_alert(self, device: str, code: str, at: float) -> Row | None:
        with self.transaction():
            rows = self._rows(
                "SELECT * FROM alerts WHERE device = ? AND code = ? AND closed_at IS NULL",
                [device, code],
            )
            if not rows:
                return None
            self._conn.execute("UPDATE alerts SET closed_at = ? WHERE id = ?", (at, rows[0]["id"]))
        return {**rows[0], "closed_at": at}

    def alerts(self, active: bool = True, device: str | None = None, limit: int = 500) -> list[Row]:
        where = ["closed_at IS NULL"] if active else []
        args: list[Any] = []
        if device is not None:
            where.append("device = ?")
            args.append(device)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._rows(f"SELECT * FROM alerts {clause} ORDER BY updated_at DESC LIMIT ?", [*args, limit])  # fmt: skip

    def stats(self) -> Row:
        with self._lock:
            counts = {
                table: self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("units", "entries", "segments", "rejected")
            }
            counts["alerts_open"] = self._conn.execute(
                "SELECT COUNT(*) FROM alerts WHERE closed_at IS NULL"
            ).fetchone()[0]
        return counts
