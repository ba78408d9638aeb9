"""The collector's database, behind one small interface (SQLite now; PostgreSQL later).

Owns: the ``CentralStore`` protocol — every read and write the collector, the monitor
page and the export make — and ``open_store`` choosing an implementation from the
configured URL. Must not: verify anything (``central.fleet``, ``central.collector``) or
hold media (segment files live in the content-addressed directory, ``central.blobs``).

What is kept (docs/CENTRAL.md, "Database"):
- ``units``: the last presence and status of each unit, as received;
- ``certificates``: ledger keys learned from births or the trust directory;
- ``entries``: every verified ledger line, byte for byte, with its header fields and
  decoded body (the centre holds the bodies, so it can export like the unit);
- ``segments``: one row per segment entry, with its upload state and receipt;
- ``rejected``: every ledger message that failed a check, with why (nothing is lost);
- ``alerts``: open and closed alerts.

All writes of one batch of MQTT messages go through ``transaction()``, committed
durably before the messages are acknowledged to the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from evidence.ledger import Entry

Row = dict[str, Any]


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message says which and why."""


class CentralStore(Protocol):
    def transaction(self) -> AbstractContextManager[None]:
        """One durable write transaction (nesting joins the outer one)."""
        ...

    def close(self) -> None: ...

    # units and their keys ---------------------------------------------------------
    def save_presence(self, device: str, document: Row, at: float) -> None: ...
    def save_status(self, device: str, document: Row, at: float) -> None: ...
    def units(self) -> list[Row]: ...
    def save_certificate(self, key_id: str, device: str, pem: str, trusted: bool, source: str) -> None: ...  # fmt: skip
    def certificates(self, device: str | None = None) -> list[Row]: ...

    # entries ----------------------------------------------------------------------
    def add_entry(self, entry: Entry, line: bytes, trusted: bool, at: float) -> None:
        """A verified entry (and, for a segment entry, its ``segments`` row)."""
        ...

    def known_entry(self, device: str, seq: int) -> tuple[str, str] | None: ...
    def chain_state(self, device: str) -> tuple[int | None, set[int]]:
        """(highest seq held, seqs missing below it) for restoring ``central.fleet``."""
        ...

    def lines(self, device: str) -> Iterator[tuple[int, bytes]]:
        """Every entry of a unit in seq order, the line as received."""
        ...

    def timeline(self, device: str, limit: int) -> list[Row]:
        """The newest ``limit`` entries (header fields and decoded body), newest first."""
        ...

    def add_rejected(self, device: str, payload: bytes, code: str, message: str, at: float) -> None: ...  # fmt: skip
    def rejected(self, device: str, code: str | None = None) -> list[Row]: ...
    def drop_rejected(self, ids: list[int]) -> None: ...

    # segments and uploads -----------------------------------------------------------
    def segment(self, device: str, name: str) -> Row | None: ...
    def segment_by_sha256(self, sha256: str) -> Row | None: ...
    def segments(self, device: str, limit: int = 500) -> list[Row]: ...
    def set_upload(self, device: str, name: str, **fields: Any) -> None: ...

    # selections for an export -------------------------------------------------------
    def recordings_of_case(self, case: str) -> list[tuple[str, int]]: ...
    def recordings_between(self, start: str, end: str) -> list[tuple[str, int]]: ...

    # alerts ------------------------------------------------------------------------
    def open_alert(self, device: str, code: str, message: str, at: float) -> tuple[Row, bool]:
        """Open (or repeat: count + 1, newest message) an alert; (row, newly opened)."""
        ...

    def close_alert(self, device: str, code: str, at: float) -> Row | None: ...
    def alerts(self, active: bool = True, device: str | None = None, limit: int = 500) -> list[Row]: ...  # fmt: skip

    def stats(self) -> Row: ...


def open_store(kind: str, location: str) -> CentralStore:
    if kind == "sqlite":
        from central.store_sqlite import SqliteStore

        return SqliteStore.open(location)
    raise StoreError(
        f"central.database: {kind} storage is not implemented in this version; "
        "use sqlite:///PATH (docs/CENTRAL.md, 'PostgreSQL')"
    )
