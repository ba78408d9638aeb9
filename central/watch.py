"""`liuhen central watch`: the live fleet, one line per unit, every entry verified on arrival.

Owns: subscribing to every unit's presence, status and ledger topics (docs/MQTT.md), the
per-unit view (online/offline with bdseq, recorder state, officer, storage, battery,
clock, backlog), and checking each ledger entry as it arrives: its signature (against
a device certificate from ``--trust DIR``, or one learned from the unit's birth, which
is flagged *untrusted*), its body hash, the unit it claims, sequence continuity and
``prev`` == the previous entry's hash; gaps, duplicates and forks are named.
Must not: run on a unit, publish anything, or decide what a gap means (it reports).

The lead registers it in the CLI: ``add_parser(subparsers)`` adds ``watch`` and
``run_watch(args)`` runs it (exit 0 after ``--duration``, or on Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from signer.envelope import sha256_hex
from signer.identity import load_chain_pem, verify_device_chain
from signer.ledger import GENESIS_PREV, Entry, key_id
from uplink.topics import DEFAULT_PREFIX, fleet_filter, split_topic

# ---------------------------------------------------------------------------
# Trust: device certificates and CA roots from --trust DIR
# ---------------------------------------------------------------------------


@dataclass
class Trust:
    """Keys the operator vouches for: device (leaf) certificates, and CA roots that may
    vouch for a certificate a unit presents in its birth."""

    device_keys: dict[str, str] = field(default_factory=dict)  # key id -> device (CN)
    public_keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    roots: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def from_dir(cls, directory: Path | None) -> Trust:
        trust = cls()
        if directory is None:
            return trust
        if not directory.is_dir():
            raise ValueError(f"--trust {directory}: not a directory")
        files = sorted(directory.glob("*.pem")) + sorted(directory.glob("*.crt"))
        if not files:
            raise ValueError(f"--trust {directory}: no *.pem or *.crt certificate in it")
        for path in files:
            try:
                chain = load_chain_pem(path.read_bytes())
            except ValueError as exc:
                raise ValueError(f"--trust {path}: not a PEM certificate ({exc})") from None
            for cert in chain:
                trust.add(cert)
        return trust

    def add(self, cert: x509.Certificate) -> None:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca:
            self.roots.append(cert)
            return
        public = cert.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            kid = key_id(public)
            self.public_keys[kid] = public
            cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            self.device_keys[kid] = str(cn[0].value) if cn else "?"

    def vouches_for_chain(self, chain: list[x509.Certificate]) -> bool:
        if not self.roots or not chain:
            return False
        try:
            verify_device_chain(chain[0], chain[1:], self.roots)
        except Exception:
            return False
        return True


# ---------------------------------------------------------------------------
# One unit's view, and checking its entries
# ---------------------------------------------------------------------------


@dataclass
class UnitView:
    device: str
    online: bool | None = None
    bdseq: int | None = None
    death_reason: str | None = None
    firmware: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    status_at: float | None = None
    learned_key: ec.EllipticCurvePublicKey | None = None
    learned_key_id: str | None = None
    learned_trusted: bool = False
    entries: int = 0
    duplicates: int = 0
    verified: int = 0
    untrusted: int = 0
    last_seq: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> entry hash
    prevs: dict[int, str] = field(default_factory=dict)  # seq -> its prev
    missing: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        del self.problems[:-20]  # the last twenty are enough on a console


class Fleet:
    def __init__(self, trust: Trust, prefix: str = DEFAULT_PREFIX) -> None:
        self.trust = trust
        self.prefix = prefix
        self.units: dict[str, UnitView] = {}

    def unit(self, device: str) -> UnitView:
        return self.units.setdefault(device, UnitView(device))

    def handle(self, topic: str, payload: bytes) -> UnitView | None:
        """Take one message; the unit whose line changed, or None if not a unit topic."""
        where = split_topic(self.prefix, topic)
        if where is None:
            return None
        device, leaf = where
        view = self.unit(device)
        if leaf == "ledger":
            self.take_entry(view, payload)
        elif leaf in ("presence", "status"):
            try:
                document = json.loads(payload)
            except (UnicodeDecodeError, ValueError):
                view.problem(f"{leaf}: not JSON")
                return view
            if not isinstance(document, dict):
                view.problem(f"{leaf}: not a JSON object")
            elif leaf == "presence":
                self.take_presence(view, document)
            else:
                view.status = document
                view.status_at = time.time()
        else:
            return None
        return view

    def take_presence(self, view: UnitView, document: dict[str, Any]) -> None:
        bdseq = document.get("bdseq")
        if document.get("online") is False:
            # A death from an older connection (its will can arrive after the new birth)
            # does not make the unit offline: bdseq tells them apart (Sparkplug).
            if view.bdseq is not None and view.online and bdseq != view.bdseq:
                return
            view.online, view.death_reason = False, str(document.get("reason"))
            view.bdseq = bdseq if isinstance(bdseq, int) else view.bdseq
            return
        view.online, view.death_reason = True, None
        view.bdseq = bdseq if isinstance(bdseq, int) else None
        view.firmware = document.get("firmware")
        view.status = {
            **view.status,
            "state": document.get("state"),
            "officer": document.get("officer"),
        }
        pem = document.get("device_certificate")
        if isinstance(pem, str):
            self._learn(view, pem, document.get("key_id"))

    def _learn(self, view: UnitView, pem: str, claimed: Any) -> None:
        try:
            chain = load_chain_pem(pem)
        except ValueError:
            view.problem("birth: device_certificate is not PEM")
            return
        public = chain[0].public_key() if chain else None
        if not isinstance(public, ec.EllipticCurvePublicKey):
            view.problem("birth: device certificate is not an EC key")
            return
        kid = key_id(public)
        if claimed != kid:
            view.problem(f"birth: key_id {str(claimed)[:16]}… does not match its certificate")
            return
        view.learned_key, view.learned_key_id = public, kid
        view.learned_trusted = self.trust.vouches_for_chain(chain)

    def _key_for(self, view: UnitView, keyid: str) -> tuple[ec.EllipticCurvePublicKey | None, bool]:
        """(public key, trusted) for an entry's keyid."""
        if keyid in self.trust.public_keys:
            return self.trust.public_keys[keyid], True
        if keyid == view.learned_key_id:
            return view.learned_key, view.learned_trusted
        return None, False

    def take_entry(self, view: UnitView, line: bytes) -> None:
        try:
            entry = Entry.from_line(line)
        except (ValueError, KeyError) as exc:
            view.problem(f"unreadable ledger entry: {exc}")
            return
        seq = entry.seq
        if entry.header["device"] != view.device:
            view.problem(
                f"entry {seq} claims device {entry.header['device']!r} (published by {view.device})"
            )
            return
        public, trusted = self._key_for(view, entry.envelope.keyid)
        if public is None:
            view.problem(f"entry {seq}: signed by unknown key {entry.envelope.keyid[:16]}…")
            return
        if not entry.envelope.verify(public):
            view.problem(f"entry {seq}: BAD SIGNATURE")
            return
        if entry.body is not None and sha256_hex(entry.body) != entry.header["body"]:
            view.problem(f"entry {seq}: body does not match its signed hash")
            return
        if seq in view.hashes:
            if view.hashes[seq] == entry.hash:
                view.duplicates += 1
            else:
                view.problem(f"entry {seq}: FORK (a different signed entry with this seq)")
            return
        view.entries += 1
        view.verified += 1
        view.untrusted += 0 if trusted else 1
        self._chain(view, seq, entry.hash, entry.header["prev"])

    def _chain(self, view: UnitView, seq: int, digest: str, prev: str) -> None:
        view.hashes[seq], view.prevs[seq] = digest, prev
        if seq == 0 and prev != GENESIS_PREV:
            view.problem("entry 0: prev is not the genesis value")
        if seq - 1 in view.hashes and view.hashes[seq - 1] != prev:
            view.problem(f"entry {seq}: prev is not the hash of entry {seq - 1} (BROKEN CHAIN)")
        if seq + 1 in view.prevs and view.prevs[seq + 1] != digest:
            view.problem(f"entry {seq + 1}: prev is not the hash of entry {seq} (BROKEN CHAIN)")
        view.missing.discard(seq)
        if view.last_seq is None:
            view.last_seq = seq
            return
        if seq > view.last_seq + 1:
            gap = range(view.last_seq + 1, seq)
            view.missing.update(gap)
            view.problem(f"GAP: entries {gap.start}..{gap.stop - 1} not received (yet)")
        view.last_seq = max(view.last_seq, seq)


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
            view = fleet.handle(message.topic, bytes(message.payload))
            if view is not None:
                console.show(fleet, view)

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
    previous: Callable[..., Any] | int | None = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        stop.wait(args.duration)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
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
