"""Alerts: what central staff must look at, opened and closed as facts arrive.

Owns: the alert codes and their severity, opening an alert (or counting a repeat),
closing one when its condition ends, and the *condition* rules evaluated on every status
and by a periodic sweep — unit offline while recording, clock not synchronised, storage
low, MQTT backlog growing. Integrity problems (bad signature, chain gap, fork, unknown
device, quarantined upload…) come from ``central.fleet`` and ``central.collector``;
they stay open (a gap closes when the missing entries arrive). Must not: verify, or
decide anything about a unit beyond raising the alarm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central.config import AlertsSection
from central.fleet import PROBLEM_CODES, UnitView
from central.store import CentralStore

CONDITIONS = {
    "offline_recording": "unit offline while recording",
    "clock_unsynced": "clock not synchronised",
    "storage_low": "storage low",
    "backlog_growing": "MQTT backlog growing",
}
UPLOAD_CODES = {
    "upload_quarantined": "an uploaded file does not match its ledger entry (quarantined)",
    "upload_refused": "an upload refused (unknown device, wrong hash or size)",
}
TITLES = {**PROBLEM_CODES, **CONDITIONS, **UPLOAD_CODES, "unknown_key": "unknown device"}
WARNINGS = {"clock_unsynced", "storage_low", "backlog_growing", "untrusted_key"}


def severity(code: str) -> str:
    return "warning" if code in WARNINGS else "critical"


@dataclass
class _Run:
    """A run of non-decreasing backlog values: since when, from what."""

    since: float
    start: int
    last: int


class AlertBook:
    def __init__(self, store: CentralStore, settings: AlertsSection,
                 publish: Callable[[str, Any], None]) -> None:  # fmt: skip
        self.store = store
        self.settings = settings
        self.publish = publish
        self.open: dict[tuple[str, str], str] = {
            (a["device"], a["code"]): a["message"] for a in store.alerts(active=True, limit=1 << 30)
        }
        self._backlog: dict[str, _Run] = {}

    def raise_alert(self, device: str, code: str, message: str) -> None:
        row, new = self.store.open_alert(device, code, message, time.time())
        self.open[(device, code)] = message
        self.publish("alert", {**row, "new": new, "severity": severity(code), "title": TITLES.get(code, code)})  # fmt: skip

    def resolve(self, device: str, code: str) -> None:
        if (device, code) not in self.open:
            return
        del self.open[(device, code)]
        row = self.store.close_alert(device, code, time.time())
        if row is not None:
            self.publish("alert", {**row, "severity": severity(code), "title": TITLES.get(code, code)})  # fmt: skip

    def of(self, device: str) -> list[dict[str, str]]:
        return [
            {"code": code, "message": message, "severity": severity(code), "title": TITLES.get(code, code)}
            for (d, code), message in sorted(self.open.items())
            if d == device
        ]  # fmt: skip

    # --- conditions ---------------------------------------------------------------
    def assess(self, view: UnitView, now: float) -> None:
        """Open the condition alerts that hold for ``view`` and close those that don't."""
        found = self.conditions(view, now)
        for code in CONDITIONS:
            if code in found:
                if self.open.get((view.device, code)) is None:
                    self.raise_alert(view.device, code, found[code])
            else:
                self.resolve(view.device, code)

    def conditions(self, view: UnitView, now: float) -> dict[str, str]:
        s, cfg = view.status, self.settings
        out: dict[str, str] = {}
        recording = s.get("state") == "recording" or s.get("recording") is True
        stale = view.status_at is not None and now - view.status_at > cfg.status_stale_seconds
        if recording and view.online is False and view.death_reason != "closed":
            out["offline_recording"] = f"offline ({view.death_reason}) while recording"
        elif recording and stale and view.status_at is not None:
            out["offline_recording"] = f"no status for {now - view.status_at:.0f} s while recording"
        if s.get("clock_synced") is False:
            out["clock_unsynced"] = (
                "the unit's clock is not synchronised: its timestamps are not reliable"
            )
        free, total = s.get("storage_free_bytes"), s.get("storage_total_bytes")
        if isinstance(free, int) and (
            free < cfg.storage_low_bytes
            or (
                isinstance(total, int)
                and total > 0
                and free * 100 < total * cfg.storage_low_percent
            )
        ):
            out["storage_low"] = f"{free / 1e9:.2f} GB free" + (f" of {total / 1e9:.1f} GB" if isinstance(total, int) else "")  # fmt: skip
        growing = self._backlog_growing(view.device, s, now)
        if growing is not None:
            out["backlog_growing"] = growing
        return out

    def _backlog_growing(self, device: str, status: dict[str, Any], now: float) -> str | None:
        backlog = status.get("backlog")
        value = backlog.get("entries") if isinstance(backlog, dict) else None
        if not isinstance(value, int):
            return None
        run = self._backlog.get(device)
        if run is None or value < run.last:
            run = self._backlog[device] = _Run(now, value, value)
        run.last = value
        if (
            value >= self.settings.backlog_entries
            and value > run.start
            and now - run.since >= self.settings.backlog_growing_seconds
        ):
            return f"{value} entries waiting on the unit, up from {run.start} {now - run.since:.0f} s ago"
        return None
