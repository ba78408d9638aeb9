"""What the person at the terminal sees: a live panel on a TTY, log lines otherwise.

Owns: rendering recorder status and events for humans (`make demo`, `liuhen run` in a
shell, the journal under systemd). Must not: decide anything.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hw.clock import monotonic_us
from recorder.recorder import RecorderEvent, RecorderStatus
from signer.sealer import SealerStatus

log = logging.getLogger("liuhen")

_STATE_STYLE = {
    "recording": "bold white on red",
    "ready": "bold green",
    "fault": "bold yellow on red",
}


class StatusView(Protocol):
    def status(self, status: RecorderStatus, sealer: SealerStatus, unit: str = "") -> None: ...

    def event(self, event: RecorderEvent) -> None: ...

    def close(self) -> None: ...


def describe_event(event: RecorderEvent) -> str:
    d = event.detail
    if event.kind == "segment_sealed":
        return (
            f"sealed {d['name']}  {(d['media_end_us'] - d['media_start_us']) / 1e6:.1f} s  "
            f"{d['bytes'] / 1e6:.1f} MB  sha256 {d['sha256'][:16]}…"
        )
    if event.kind == "recording_started":
        return f"recording {d['recording_id']} started by {d['trigger']}, {d['pre_event_s']:.1f} s of pre-event media kept"
    if event.kind == "recording_stopped":
        return f"recording {d['recording_id']} stopped ({d['reason']})"
    if event.kind == "interrupted":
        return (
            f"recovered {d['name']} after an interruption: {d['state']}, kept {d['kept_bytes']} bytes, "
            f"torn tail {d['torn_bytes']} bytes set aside"
        )
    who = d.get("officer") or {}
    officer = f"{who.get('id')} {who.get('name')}" if who else "no officer"
    at = d.get("position") or {}
    where = (
        f" at {at['media_us'] / 1e6:.1f} s of recording {at['recording_id']}"
        if at.get("media_us") is not None
        else ""
    )
    simple = {
        "officer_login": f"officer {officer} logged in",
        "officer_logout": "officer logged out",
        "credential_shown": f"credential {d.get('credential', '(none: no officer)')} shown by {officer}{where}",
        "mark": f"mark by {officer}{where}" + (f": {d['text']}" if d.get("text") else ""),
        "note": f"note by {officer}: {str(d.get('text', ''))[:60]}",
        "unknown_card": f"card {d.get('card')} refused: {d.get('reason')}",
        "record_button_knock": f"record button knocked{where}: recording continues",
        "case_set": f"case set to {d.get('case')}",
        "unit_started": f"unit started ({d.get('profile')})",
        "unit_stopped": "unit stopping",
    }
    if event.kind in simple:
        return simple[event.kind]
    if event.kind == "state_changed":
        to = d["to"]
        faults = ", ".join(to["faults"]) or "no faults"
        return f"state: {to['mode']} ({faults})"
    return f"{event.kind}: {d}"


def describe_sealer(z: SealerStatus) -> str:
    if z.state == "fault":
        return f"SEALING HALTED: {z.error} ({z.backlog} waiting)"
    last = "none yet" if z.last_seq is None else f"entry {z.last_seq}"
    return f"{z.state}, key {z.key or '?'}, ledger at {last}, {z.backlog} waiting"


def describe_status(s: RecorderStatus) -> str:
    now = monotonic_us()
    ages = " ".join(f"{k} {(now - t) / 1e6:.1f}s ago" for k, t in sorted(s.last_packet_us.items()))
    seg = (
        f" segment {s.segment} {s.segment_media_s:.1f}s {s.segment_bytes / 1e6:.1f}MB"
        if s.segment
        else ""
    )
    fault = f" FAULT: {s.fault}" if s.fault else ""
    return (
        f"state={s.state}{seg} sealed={s.segments_sealed} pre-event={s.ring_s:.1f}s "
        f"last packets: {ages or 'none'}{fault}"
    )


class LogView:
    """One status line every ``every`` seconds and one line per event, through logging."""

    def __init__(self, every: float = 10.0) -> None:
        self._every, self._last = every, 0.0

    def status(self, status: RecorderStatus, sealer: SealerStatus, unit: str = "") -> None:
        if time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            log.info(
                "%s%s; sealing: %s",
                f"{unit}; " if unit else "",
                describe_status(status),
                describe_sealer(sealer),
            )

    def event(self, event: RecorderEvent) -> None:
        log.info("%s", describe_event(event))

    def close(self) -> None:
        pass


class LiveView:
    """A panel redrawn in place, for `make demo` and interactive use."""

    def __init__(self, device_id: str, data_dir: str) -> None:
        self._device, self._data = device_id, data_dir
        self._events: deque[str] = deque(maxlen=8)
        self._status = RecorderStatus()
        self._sealer = SealerStatus()
        self._unit = ""
        self._live = Live(self._render(), console=Console(), refresh_per_second=4, transient=False)
        self._live.start()

    def _render(self) -> Table:
        s = self._status
        now = monotonic_us()
        table = Table(
            title=f"liuhen {self._device} — data in {self._data}   (Ctrl-C seals and stops)"
        )
        table.add_column("", style="dim", no_wrap=True)
        table.add_column("")
        table.add_row("state", f"[{_STATE_STYLE.get(s.state, 'bold')}] {s.state.upper()} [/]")
        if self._unit:
            table.add_row("unit", self._unit)
        if s.fault:
            table.add_row("fault", f"[bold red]{s.fault}[/]")
        table.add_row("segment", s.segment or "—")
        if s.segment:
            table.add_row("", f"{s.segment_media_s:5.1f} s   {s.segment_bytes / 1e6:6.2f} MB")
        if s.last_sync_us:
            table.add_row(
                "on disk", f"last fragment fsync'ed {(now - s.last_sync_us) / 1e6:.1f} s ago"
            )
        table.add_row("sealed", str(s.segments_sealed))
        table.add_row("pre-event", f"{s.ring_s:.1f} s in memory")
        for kind, t in sorted(s.last_packet_us.items()):
            table.add_row(kind, f"last packet {(now - t) / 1e3:.0f} ms ago")
        table.add_row("queue", str(s.queued))
        style = "bold red" if self._sealer.state == "fault" else "green"
        table.add_row("signing", f"[{style}]{describe_sealer(self._sealer)}[/]")
        table.add_row("events", "\n".join(self._events) or "—")
        return table

    def status(self, status: RecorderStatus, sealer: SealerStatus, unit: str = "") -> None:
        self._status, self._sealer, self._unit = status, sealer, unit
        self._live.update(self._render())

    def event(self, event: RecorderEvent) -> None:
        self._events.append(f"{event.at[11:19]} {describe_event(event)}")
        log.debug("%s", describe_event(event))

    def close(self) -> None:
        self._live.update(self._render())
        self._live.stop()
