"""The JSON payloads the unit publishes (except ledger lines, which go out as signed).

Owns: building birth, death, status and reply documents, version 1, from the daemon's
status dict and the uplink's own state, so that each one matches its schema in
protocol/schemas/. Must not: publish, or read anything from disk or the network.

The daemon's status dict is read leniently (it grows over time): a missing or
wrongly typed field becomes null rather than an invalid heartbeat.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from uplink.outbox import Backlog

VERSION = 1
_SEALER_FIELDS = {"state": str, "error": str, "backlog": int, "last_seq": int, "key": str}


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _typed(value: Any, kind: Any) -> Any:
    """``value`` if it is of ``kind`` (a bool is not a number here), else None."""
    if isinstance(value, bool) and kind is not bool:
        return None
    return value if isinstance(value, kind) else None


def _count(value: Any) -> int | None:
    value = _typed(value, int)
    return value if value is None or value >= 0 else None


def officer_of(status: dict[str, Any]) -> dict[str, Any] | None:
    officer = status.get("officer")
    if not isinstance(officer, dict):
        return None
    return {str(k): v for k, v in officer.items() if isinstance(v, str | bool) or v is None}


def battery_of(status: dict[str, Any]) -> dict[str, Any] | None:
    battery = status.get("battery")
    if not isinstance(battery, dict):
        return None
    percent = _typed(battery.get("percent"), int | float)
    if percent is None or not 0 <= percent <= 100:
        return None
    return {"percent": percent, "charging": _typed(battery.get("charging"), bool)}


def faults_of(status: dict[str, Any]) -> list[str] | None:
    """The unit's judged faults (what its LEDs show), e.g. ``storage_low``."""
    unit = status.get("unit")
    faults = unit.get("faults") if isinstance(unit, dict) else None
    if not isinstance(faults, list):
        return None
    return sorted(f for f in faults if isinstance(f, str))


def sealer_of(status: dict[str, Any]) -> dict[str, Any] | None:
    sealer = status.get("sealer")
    if not isinstance(sealer, dict):
        return None
    out = {name: _typed(sealer.get(name), kind) for name, kind in _SEALER_FIELDS.items()}
    out["state"] = out["state"] or "unknown"
    out["backlog"] = _count(out["backlog"]) or 0
    return out


def birth(
    device: str,
    bdseq: int,
    status: dict[str, Any],
    firmware: str,
    identity: dict[str, str | None],
) -> dict[str, Any]:
    """``identity``: key_id, device_certificate_sha256, device_certificate,
    tls_certificate_sha256 (see client.Identity)."""
    return {
        "v": VERSION,
        "type": "birth",
        "device": device,
        "online": True,
        "bdseq": bdseq,
        "at": now_text(),
        "state": _typed(status.get("state"), str),
        "officer": officer_of(status),
        "firmware": firmware,
        **identity,
    }


def death(device: str, bdseq: int, reason: str, *, at: str | None = None) -> dict[str, Any]:
    """reason: ``lost`` (the last will: the broker saw the connection die) or
    ``closed`` (published by the unit before a clean disconnect)."""
    document: dict[str, Any] = {
        "v": VERSION,
        "type": "death",
        "device": device,
        "online": False,
        "bdseq": bdseq,
        "reason": reason,
    }
    if at is not None:
        document["at"] = at
    return document


def status(
    device: str,
    bdseq: int,
    daemon: dict[str, Any],
    backlog: Backlog,
    last_puback_seq: int | None,
    clock_synced: bool | None,
) -> dict[str, Any]:
    state = _typed(daemon.get("state"), str)
    synced = daemon.get("clock_synced", clock_synced)
    return {
        "v": VERSION,
        "type": "status",
        "device": device,
        "at": now_text(),
        "bdseq": bdseq,
        "state": state,
        "recording": state == "recording",
        "officer": officer_of(daemon),
        "segment": _typed(daemon.get("segment"), str),
        "segments_sealed": _count(daemon.get("segments_sealed")),
        "storage_free_bytes": _count(daemon.get("storage_free_bytes")),
        "storage_total_bytes": _count(daemon.get("storage_total_bytes")),
        "battery": battery_of(daemon),
        "clock_synced": synced if isinstance(synced, bool) else None,
        "fault": _typed(daemon.get("fault"), str),
        "faults": faults_of(daemon),
        "encrypting": _typed(daemon.get("encrypting"), bool),
        "sealer": sealer_of(daemon),
        "backlog": {
            "entries": backlog.entries,
            "bytes": backlog.bytes,
            "oldest_seq": backlog.oldest_seq,
        },
        "last_puback_seq": last_puback_seq,
    }


def reply(
    device: str,
    *,
    cmd: str | None,
    nonce: str | None,
    result: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "v": VERSION,
        "type": "reply",
        "device": device,
        "at": now_text(),
        "ok": error is None,
        "cmd": cmd,
        "nonce": nonce,
    }
    if error is None:
        document["result"] = result if result is not None else {}
    else:
        document["error"] = {"code": error[0], "message": error[1]}
    return document
