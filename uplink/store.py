"""The uplink's own SQLite file (e.g. DATA/outbox.sqlite): one connection, durable commits.

Owns: opening the file in WAL mode with ``synchronous=FULL`` (a commit is on disk when
``transaction()`` returns, across power cuts), the schema and its version
(``PRAGMA user_version``), serialising access from the uplink's threads, and a small
key/value ``meta`` table. Must not: know what the tables mean (outbox.py,
commands.py) or touch the network.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,        -- ledger sequence number
    line BLOB NOT NULL,             -- the ledger line, byte for byte
    queued_at REAL NOT NULL         -- unix time it was queued
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,         -- a command nonce already acted on or refused as used
    expires REAL NOT NULL,          -- unix time after which it cannot be replayed anyway
    keyid TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class StoreError(RuntimeError):
    """The uplink store cannot be opened or used; the message names the file."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: cannot switch to WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: schema version {version} is newer than this liuhen "
                    f"understands ({SCHEMA_VERSION})"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsync'ed) on leaving the block."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def get_meta(self, key: str, default: int) -> int:
        with self.reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def next_counter(self, key: str) -> int:
        """Increment a persistent counter and return its new value (first call: 0)."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            value = 0 if row is None else int(row[0]) + 1
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        return value

    def close(self) -> None:
        with self._lock:
            self._db.close()
