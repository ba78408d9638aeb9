"""The persistent outbox: ledger lines waiting for the broker's PUBACK.

Owns: queuing a line durably (the transaction is fsync'ed before ``put`` returns),
handing lines out in sequence order, deleting them once acknowledged, and the counts
the heartbeat reports (entries and bytes not yet acknowledged). Must not: publish,
or delete a line for any reason other than a PUBACK reported by the sender.

The ledger's sequence number is the key: queuing the same entry twice is harmless,
and queuing a different line under a used number is refused (it would be a fork).
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass

from uplink.store import Store

MAX_LINE_BYTES = 1 << 20
HIGH_WATER = "outbox.highest_queued_seq"


class OutboxConflict(ValueError):
    """A different line was queued under a sequence number already in the outbox."""


class Queued(enum.Enum):
    NEW = "new"  # the newest entry so far
    BEHIND = "behind"  # new here, but older than an entry queued before it (a backfill)
    ALREADY = "already"  # exactly this line was queued before


@dataclass(frozen=True)
class Backlog:
    entries: int
    bytes: int
    oldest_seq: int | None


class Outbox:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        with store.reading() as db:
            count, size, oldest = db.execute(
                "SELECT count(*), coalesce(sum(length(line)), 0), min(seq) FROM outbox"
            ).fetchone()
        self._backlog = Backlog(int(count), int(size), oldest)
        self._highest = store.get_meta(HIGH_WATER, -1)

    def put(self, seq: int, line: bytes) -> Queued:
        """Queue ``line`` under ``seq`` durably."""
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"ledger seq must be a non-negative integer, got {seq!r}")
        if not isinstance(line, bytes) or not line:
            raise ValueError(f"ledger line for seq {seq} must be non-empty bytes")
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(
                f"ledger line for seq {seq} is {len(line)} bytes; limit {MAX_LINE_BYTES}"
            )
        with self._store.transaction() as db:
            row = db.execute("SELECT line FROM outbox WHERE seq = ?", (seq,)).fetchone()
            if row is not None:
                if bytes(row[0]) != line:
                    raise OutboxConflict(
                        f"outbox already holds a different line for ledger seq {seq}"
                    )
                return Queued.ALREADY
            db.execute(
                "INSERT INTO outbox (seq, line, queued_at) VALUES (?, ?, ?)",
                (seq, line, time.time()),
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET value = max(value, excluded.value)",
                (HIGH_WATER, seq),
            )
            with self._lock:  # still inside the store's lock: no ack can interleave
                b = self._backlog
                oldest = seq if b.oldest_seq is None else min(b.oldest_seq, seq)
                self._backlog = Backlog(b.entries + 1, b.bytes + len(line), oldest)
                behind = seq < self._highest
                self._highest = max(self._highest, seq)
        return Queued.BEHIND if behind else Queued.NEW

    def from_seq(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` queued (seq, line), in order, starting at ``seq``."""
        with self._store.reading() as db:
            rows = db.execute(
                "SELECT seq, line FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [(int(s), bytes(line)) for s, line in rows]

    def acknowledged(self, seqs: list[int]) -> None:
        """The broker has these: delete them (one fsync'ed transaction)."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with self._store.transaction() as db:
            count, size = db.execute(
                f"SELECT count(*), coalesce(sum(length(line)), 0) FROM outbox WHERE seq IN ({marks})",
                seqs,
            ).fetchone()
            db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", seqs)
            oldest = db.execute("SELECT min(seq) FROM outbox").fetchone()[0]
            with self._lock:
                b = self._backlog
                self._backlog = Backlog(b.entries - int(count), b.bytes - int(size), oldest)

    def backlog(self) -> Backlog:
        with self._lock:
            return self._backlog

    def highest_queued(self) -> int | None:
        """The highest seq ever queued here (survives its deletion), or None."""
        with self._lock:
            return None if self._highest < 0 else self._highest
