"""`liuhen central watch`: the live fleet, one line per unit, every entry verified on arrival.

Owns: subscribing to every unit's presence, status and ledger topics (docs/MQTT.md), the
per-unit view (online/offline with bdseq, recorder state, officer, storage, battery,
clock, backlog), and checking each ledger entry as it arrives: its signature (against
a device certificate from ``--trust DIR``, or one learned from the unit's birth, which
is flagged *untrusted*), its body hash, the unit it claims, sequence continuity and
``prev`` == the previous entry's hash; gaps, duplicates and forks are named.
Must not: run on a unit, publish anything, or decide what a gap means (it reports).
The checks themselves are ``central.fleet`` (shared with ``central serve``); trust is
``central.trust``. ``Fleet``, ``Trust`` and ``UnitView`` are re-exported here.

The lead registers it in the CLI: ``add_parser(subparsers)`` adds ``watch`` and
``run_watch(args)`` runs it (exit 0 after ``--duration``, or on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from central.fleet import Fleet, UnitView
from central.running import until_stopped
from central.trust import Trust

__all__ = ["Fleet", "Trust", "UnitView", "add_parser", "render", "run_watch"]
from protocol.topics import DEFAULT_PREFIX, fleet_filter

# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def render(view: UnitView) -> str:
    s = view.status
    presence = {True: "ONLINE", False: f"OFFLINE({view.death_reason})", None: "unknown"}[
        view.online
    ]
    officer = s.get("officer") or {}
    battery = s.get("battery")
    backlog = s.get("backlog") or {}
    key = "trusted" if view.untrusted == 0 else f"UNTRUSTED x{view.untrusted}"
    parts = [
        f"{view.device:<16}",
        f"{presence:<16}",
        f"bdseq={view.bdseq}",
        f"state={s.get('state')}",
        f"officer={officer.get('id', '-') if isinstance(officer, dict) else '-'}",
        f"entries={view.entries} last={view.last_seq}",
        f"dup={view.duplicates}",
        f"backlog={backlog.get('entries', '?')}/{_size(backlog.get('bytes'))}",
        f"free={_size(s.get('storage_free_bytes'))}",
        f"battery={battery.get('percent') if isinstance(battery, dict) else '-'}",
        f"clock={'synced' if s.get('clock_synced') else 'UNSYNCED' if s.get('clock_synced') is False else '?'}",
        f"key={key}",
        f"missing={len(view.missing)}",
    ]
    line = "  ".join(parts)
    if view.problems:
        line += f"  !! {view.problems[-1]}"
    return line


class Console:
    """One line per unit: redrawn in place on a terminal, appended otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()

    def show(self, fleet: Fleet, changed: UnitView) -> None:
        if self.tty:
            self.out.write("\x1b[H\x1b[2J")
            for device in sorted(fleet.units):
                self.out.write(render(fleet.units[device]) + "\n")
        else:
            self.out.write(render(changed) + "\n")
        self.out.flush()


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="show every unit live and verify each ledger entry as it arrives",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="localhost", help="broker host (default localhost)")
    parser.add_argument("--port", type=int, default=8883, help="broker TLS port (default 8883)")
    parser.add_argument("--ca", required=True, help="CA certificate(s) of the broker, PEM")
    parser.add_argument("--cert", required=True, help="this client's certificate, PEM")
    parser.add_argument("--key", required=True, help="this client's private key, PEM")
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})"
    )
    parser.add_argument(
        "--trust", type=Path, help="directory of trusted device or CA certificates (*.pem)"
    )
    parser.add_argument(
        "--client-id", default=None, help="MQTT client id (default: liuhen-watch-<pid>)"
    )
    parser.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    parser.set_defaults(func=run_watch)
    return parser


def run_watch(
    args: argparse.Namespace, out: TextIO = sys.stdout, stop: threading.Event | None = None
) -> int:
    """Watch until ``--duration`` elapses, Ctrl-C, or ``stop`` is set (tests)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    try:
        trust = Trust.from_dir(args.trust)
    except (OSError, ValueError) as exc:
        print(f"liuhen central watch: {exc}", file=sys.stderr)
        return 2
    fleet = Fleet(trust, args.prefix)
    console = Console(out)
    lock = threading.Lock()
    stop = stop or threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with lock:
            handled = fleet.handle(message.topic, bytes(message.payload))
            if handled is not None:
                console.show(fleet, handled.view)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            print(f"liuhen central watch: broker refused: {reason}", file=sys.stderr)
            return
        client.subscribe(
            [(fleet_filter(args.prefix, leaf), 1) for leaf in ("presence", "status", "ledger")]
        )

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=args.client_id or f"liuhen-watch-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    try:
        client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key)
    except (OSError, ValueError) as exc:
        print(f"liuhen central watch: TLS files: {exc}", file=sys.stderr)
        return 2
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect_async(args.host, args.port)
    client.loop_start()
    try:
        until_stopped(stop, args.duration)
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liuhen central")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
