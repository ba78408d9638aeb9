"""The collector's core: MQTT messages in, verified facts stored, alerts raised, views out.

Owns: taking a batch of MQTT messages through ``central.fleet`` (one copy of the
verification rules) into the store in one durable transaction, remembering keys learned
from births (and re-checking entries that arrived before the birth that explains them),
restoring the fleet's chain position from the store after a restart, the periodic
sweep (stale units, coalesced page updates), and the JSON the monitor page shows.
Must not: speak MQTT or HTTP (``central.ingest``, ``central.web``), or acknowledge
anything itself: the caller acknowledges a batch only after ``take`` returns.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from central.alerts import AlertBook
from central.collector import Collector
from central.fleet import Fleet, Handled, UnitView
from central.store import CentralStore, Row
from central.trust import Trust
from protocol.topics import DEFAULT_PREFIX


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 0
    received: float = field(default_factory=time.monotonic)


@dataclass
class Counters:
    messages: int = 0
    entries: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    presences: int = 0
    batches: int = 0
    max_wait_s: float = 0.0  # longest a message of the last batch waited before storing


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Central:
    def __init__(self, store: CentralStore, trust: Trust, alerts: AlertBook,
                 prefix: str = DEFAULT_PREFIX) -> None:  # fmt: skip
        self.store = store
        self.alerts = alerts
        self.fleet = Fleet(trust, prefix, history=store, on_problem=self._problem, expect_genesis=True)  # fmt: skip
        self.collector: Collector | None = None
        self.counters = Counters()
        self.cases: dict[str, str | None] = {}  # device -> case set on it (from its entries)
        self.lock = threading.RLock()  # the fleet's views and the counters
        self._changed: set[str] = set()
        self.on_changed: Any = lambda devices: None
        for cert in trust.certificates.values():
            self._remember_trusted(cert)
        self._restoring = True  # problems found while replaying stored facts are old news
        self._restore()
        self._restoring = False

    # --- start-up -----------------------------------------------------------------
    def _remember_trusted(self, cert: Any) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        from evidence.ledger import key_id

        kid = key_id(cert.public_key())
        device = self.fleet.trust.device_keys[kid]
        self.store.save_certificate(kid, device, cert.public_bytes(Encoding.PEM).decode(), True, "trust")  # fmt: skip

    def _restore(self) -> None:
        """The fleet as it stood: presence, status, learned keys, chain position."""
        learned = {r["device"]: r for r in self.store.certificates() if r["source"] == "birth"}
        for row in self.store.units():
            view = self.fleet.unit(row["device"])
            if row["presence"]:
                self.fleet.take_presence(view, row["presence"])
                view.presence_at = row["presence_at"]
            if row["status"]:
                view.status, view.status_at = row["status"], row["status_at"]
            if row["device"] in learned and view.learned_key_id is None:
                cert = learned[row["device"]]
                self.fleet.learn(view, cert["pem"], cert["key_id"])
            view.last_seq, view.missing = self.store.chain_state(row["device"])

    # --- messages -----------------------------------------------------------------
    def take(self, batch: list[Message]) -> None:
        """Check and store a batch in one transaction; raises if it could not be stored
        (then nothing of it is acknowledged, and the broker delivers it again)."""
        now = time.time()
        with self.lock, self.store.transaction():
            for message in batch:
                self._take_one(message, now)
            self.counters.batches += 1
            self.counters.max_wait_s = max((time.monotonic() - m.received for m in batch), default=0.0)  # fmt: skip
        changed, self._changed = self._changed, set()
        self.on_changed(changed)

    def _take_one(self, message: Message, now: float) -> None:
        self.counters.messages += 1
        handled = self.fleet.handle(message.topic, message.payload)
        if handled is None:
            return
        view = handled.view
        self._changed.add(view.device)
        if handled.leaf == "ledger":
            self._entry(handled, message.payload, now)
        elif handled.leaf == "presence" and handled.document is not None:
            self.counters.presences += 1
            self.store.save_presence(view.device, handled.document, now)
            self._birth_key(view)
            self.alerts.assess(view, now)
        elif handled.leaf == "status" and handled.document is not None:
            self.counters.statuses += 1
            self.store.save_status(view.device, handled.document, now)
            self.alerts.assess(view, now)

    def _entry(self, handled: Handled, payload: bytes, now: float) -> None:
        outcome, view = handled.outcome, handled.view
        assert outcome is not None
        if outcome.verdict == "rejected":
            self.counters.rejected += 1
            self.store.add_rejected(view.device, payload, outcome.code or "?", outcome.message or "", now)  # fmt: skip
            return
        if outcome.verdict == "duplicate":
            self.counters.duplicates += 1
            return
        assert outcome.entry is not None
        self.counters.entries += 1
        self.store.add_entry(outcome.entry, payload, outcome.trusted, now)
        if outcome.entry.kind == "event" and b"case_set" in (outcome.entry.body or b""):
            event = outcome.entry.body_json().get("event") or {}
            if event.get("type") == "case_set":  # the unit's status does not carry the case
                self.cases[view.device] = (event.get("detail") or {}).get("case")
        if not view.missing:
            self.alerts.resolve(view.device, "chain_gap")

    def _birth_key(self, view: UnitView) -> None:
        """Remember a key a birth announced; re-check entries that were waiting for it."""
        if view.learned_key_id is None or view.learned_pem is None:
            return
        known = {r["key_id"] for r in self.store.certificates(view.device)}
        if view.learned_key_id in known:
            return
        self.store.save_certificate(view.learned_key_id, view.device, view.learned_pem,
                                    view.learned_trusted, "birth")  # fmt: skip
        waiting = self.store.rejected(view.device, "unknown_key")
        if not waiting:
            return
        self.store.drop_rejected([r["id"] for r in waiting])
        topic = f"{self.fleet.prefix}/{view.device}/ledger"
        for row in waiting:
            self._take_one(Message(topic, bytes(row["payload"])), time.time())

    def _problem(self, view: UnitView, code: str, text: str) -> None:
        if not self._restoring:
            self.alerts.raise_alert(view.device, code, text)

    def raise_alert(self, device: str, code: str, message: str) -> None:
        """For other threads (the collector's): alerts share the fleet's lock."""
        with self.lock:
            self.alerts.raise_alert(device, code, message)

    def sweep(self) -> None:
        """Conditions that change with time alone (a unit falling silent)."""
        now = time.time()
        with self.lock:
            for view in list(self.fleet.units.values()):
                self.alerts.assess(view, now)

    # --- views for the page -------------------------------------------------------
    def summary(self, device: str, uploads: dict[str, int] | None = None) -> dict[str, Any]:
        with self.lock:
            view = self.fleet.unit(device)
            s = dict(view.status)
            seen = max((t for t in (view.status_at, view.presence_at) if t is not None), default=None)  # fmt: skip
            return {
                "device": device,
                "online": view.online,
                "death_reason": view.death_reason,
                "firmware": view.firmware,
                "state": s.get("state"),
                "recording": s.get("state") == "recording",
                "officer": s.get("officer"),
                "case": s.get("case", self.cases.get(device)),
                "segment": s.get("segment"),
                "last_seen": iso(seen),
                "last_seen_age_s": None if seen is None else round(time.time() - seen, 1),
                "battery": s.get("battery"),
                "storage_free_bytes": s.get("storage_free_bytes"),
                "storage_total_bytes": s.get("storage_total_bytes"),
                "clock_synced": s.get("clock_synced"),
                "faults": _strings(s.get("faults")),  # a unit's payload is not trusted
                "encrypting": s.get("encrypting") if isinstance(s.get("encrypting"), bool) else None,
                "backlog": s.get("backlog"),
                "entries": view.entries,
                "last_seq": view.last_seq,
                "missing": len(view.missing),
                "key_trusted": view.untrusted == 0 and (view.learned_trusted or view.learned_key_id is None),
                "uploads": uploads if uploads is not None else self.upload_counts(device),
                "alerts": self.alerts.of(device),
            }  # fmt: skip

    def upload_counts(self, device: str) -> dict[str, int]:
        counts = {"awaiting": 0, "partial": 0, "stored": 0, "quarantined": 0}
        for row in self.store.segments(device, limit=1 << 30):
            counts[row["upload"]] = counts.get(row["upload"], 0) + 1
        return counts

    def units(self) -> list[dict[str, Any]]:
        with self.lock:
            devices = sorted(self.fleet.units)
        return [self.summary(d) for d in devices]

    def detail(self, device: str, limit: int = 300) -> dict[str, Any] | None:
        if device not in self.fleet.units:
            return None
        segments = [_segment_view(r) for r in self.store.segments(device, limit)]
        timeline = [_timeline_item(r) for r in self.store.timeline(device, limit)]
        return {"unit": self.summary(device), "segments": segments, "timeline": timeline,
                "alert_history": self.store.alerts(active=False, device=device, limit=50)}  # fmt: skip

    def stats(self) -> dict[str, Any]:
        with self.lock:
            c = self.counters
            return {**c.__dict__, "units": len(self.fleet.units), "alerts_open": len(self.alerts.open)}  # fmt: skip


def _segment_view(row: Row) -> dict[str, Any]:
    upload = row["upload"]
    verification = {
        "stored": "verified: the file is byte for byte what the signed entry commits to",
        "quarantined": f"QUARANTINED: {row['reason']}",
        "partial": f"uploading ({row['received_bytes']} of {row['bytes']} bytes)",
        "awaiting": "entry verified; file not uploaded yet",
    }[upload]
    return {
        "name": row["name"], "entry_seq": row["entry_seq"], "recording": row["recording"],
        "seq": row["rseq"], "state": row["state"], "bytes": row["bytes"], "sha256": row["sha256"],
        "media_start_us": row["media_start_us"], "media_end_us": row["media_end_us"],
        "wall_start": row["wall_start"], "wall_end": row["wall_end"], "case": row["case_no"],
        "upload": upload, "stored_at": row["stored_at"], "verification": verification,
        # An encrypted segment plays only after `liuhen central decrypt` with the agency key.
        "encrypted": row["name"].endswith(".enc"),
        "media": (f"/media/{row['sha256']}.mp4"
                  if upload == "stored" and not row["name"].endswith(".enc") else None),
    }  # fmt: skip


def _strings(value: Any) -> list[str] | None:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else None


def _timeline_item(row: Row) -> dict[str, Any]:
    body = row["body"] or {}
    item: dict[str, Any] = {"seq": row["seq"], "kind": row["kind"], "wall": row["wall"],
                            "clock_synced": row["clock_synced"], "key": row["key"],
                            "trusted": bool(row["trusted"]), "recording": row["recording"],
                            "segment": row["segment"], "case": row["case_no"]}  # fmt: skip
    event = body.get("event")
    if isinstance(event, dict):
        item.update(type=event.get("type"), at=event.get("at"), detail=event.get("detail"))
    elif row["kind"] == "segment":
        item.update(type="segment", at=(body.get("segment") or {}).get("wall_start"))
    else:
        item.update(type=row["kind"], at=row["wall"])
    return item
