"""`liuhen central watch`: every entry verified on arrival, gaps and forgeries named,
keys learned from a birth flagged untrusted; and the command end to end."""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
from pathlib import Path

from mqttfixtures import SignedLedger, running_broker, wait_for

from central.watch import Fleet, Trust, add_parser, render, run_watch
from evidence.certs import load_chain_pem
from evidence.envelope import b64
from uplink.client import Uplink, UplinkSettings

PREFIX = "liuhen/v1"
DEVICE = "unit-3"


def _birth(ledger: SignedLedger, bdseq: int = 0) -> bytes:
    return json.dumps(
        {
            "v": 1, "type": "birth", "device": DEVICE, "online": True, "bdseq": bdseq,
            "state": "ready", "officer": None, "firmware": "liuhen test",
            "key_id": ledger.ledger.keyid,
            "device_certificate": ledger.cert_file.read_text(),
        }
    ).encode()  # fmt: skip


def _topic(leaf: str) -> str:
    return f"{PREFIX}/{DEVICE}/{leaf}"


def test_entries_are_verified_against_trusted_certificates(tmp_path: Path) -> None:
    ledger = SignedLedger(tmp_path / "ev", DEVICE, tmp_path / "trust" / "unit-3.pem")
    fleet = Fleet(Trust.from_dir(tmp_path / "trust"))
    for _, line in ledger.append(3):
        fleet.handle(_topic("ledger"), line)
    view = fleet.units[DEVICE]
    assert (view.entries, view.verified, view.untrusted, view.last_seq) == (3, 3, 0, 2)
    assert view.problems == [] and "key=trusted" in render(view)


def test_a_key_learned_from_a_birth_is_flagged_untrusted(tmp_path: Path) -> None:
    ledger = SignedLedger(tmp_path / "ev", DEVICE, tmp_path / "device.pem")
    fleet = Fleet(Trust())
    unknown = ledger.append(1)[0][1]
    fleet.handle(_topic("ledger"), unknown)
    assert "unknown key" in fleet.units[DEVICE].problems[-1]
    fleet.handle(_topic("presence"), _birth(ledger))
    for _, line in ledger.append(2):
        fleet.handle(_topic("ledger"), line)
    view = fleet.units[DEVICE]
    assert view.online and view.untrusted == 2 and "UNTRUSTED x2" in render(view)


def test_gaps_duplicates_forgeries_and_forks_are_named(tmp_path: Path) -> None:
    ledger = SignedLedger(tmp_path / "ev", DEVICE, tmp_path / "trust" / "unit-3.pem")
    fleet = Fleet(Trust.from_dir(tmp_path / "trust"))
    lines = [line for _, line in ledger.append(6)]
    view = fleet.unit(DEVICE)

    for i in (0, 1, 4):
        fleet.handle(_topic("ledger"), lines[i])
    assert view.missing == {2, 3} and "GAP: entries 2..3" in view.problems[-1]
    fleet.handle(_topic("ledger"), lines[1])
    assert view.duplicates == 1
    for i in (2, 3):  # the gap fills (a late QoS 1 redelivery)
        fleet.handle(_topic("ledger"), lines[i])
    assert view.missing == set() and not any("BROKEN" in p for p in view.problems)

    doc = json.loads(lines[5])
    header = json.loads(base64.b64decode(doc["payload"]))
    header["kind"] = "segment"  # an edit of the signed header
    doc["payload"] = b64(json.dumps(header).encode())
    fleet.handle(_topic("ledger"), json.dumps(doc).encode())
    assert "BAD SIGNATURE" in view.problems[-1]

    doc = json.loads(lines[5])
    doc["body"] = b64(b'{"event":{"type":"edited"}}')  # the body no longer matches its hash
    fleet.handle(_topic("ledger"), json.dumps(doc).encode())
    assert "body does not match" in view.problems[-1]

    other = SignedLedger(tmp_path / "ev2", DEVICE, tmp_path / "trust" / "other.pem")
    fleet.trust.add(load_chain_pem(other.cert_file.read_bytes())[0])
    fork = other.append(1)[0][1]  # another trusted key's entry 0: a second history
    fleet.handle(_topic("ledger"), fork)
    assert "FORK" in view.problems[-1]
    fleet.handle(_topic("ledger"), b"\x00junk")
    assert "unreadable" in view.problems[-1]


def test_a_late_will_from_an_old_connection_does_not_mark_the_unit_offline(tmp_path: Path) -> None:
    ledger = SignedLedger(tmp_path / "ev", DEVICE, tmp_path / "device.pem")
    fleet = Fleet(Trust())
    fleet.handle(_topic("presence"), _birth(ledger, bdseq=8))
    old_will = {
        "v": 1,
        "type": "death",
        "device": DEVICE,
        "online": False,
        "bdseq": 7,
        "reason": "lost",
    }
    fleet.handle(_topic("presence"), json.dumps(old_will).encode())
    assert fleet.units[DEVICE].online is True
    fleet.handle(_topic("presence"), json.dumps({**old_will, "bdseq": 8}).encode())
    assert fleet.units[DEVICE].online is False and "OFFLINE(lost)" in render(fleet.units[DEVICE])


def test_watch_shows_a_live_unit_end_to_end(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        trust = tmp_path / "trust"
        ledger = SignedLedger(tmp_path / "ev", DEVICE, trust / "unit-3.pem")
        cert, key = broker.pki.issue(DEVICE)
        watch_cert, watch_key = broker.pki.issue("watch")
        parser = argparse.ArgumentParser()
        add_parser(parser.add_subparsers())
        args = parser.parse_args(
            ["watch", "--host", "localhost", "--port", str(broker.port),
             "--ca", str(broker.pki.ca_file), "--cert", str(watch_cert), "--key", str(watch_key),
             "--trust", str(trust)]
        )  # fmt: skip
        out, stop = io.StringIO(), threading.Event()
        watcher = threading.Thread(target=run_watch, args=(args, out, stop))
        watcher.start()
        uplink = Uplink(
            UplinkSettings(
                host="localhost", port=broker.port, device_id=DEVICE,
                ca_file=str(broker.pki.ca_file), cert_file=str(cert), key_file=str(key),
                device_cert_file=str(trust / "unit-3.pem"), heartbeat_s=1.0,
            ),
            tmp_path / "outbox.sqlite",
            lambda: {"state": "recording", "storage_free_bytes": 5_000_000_000},
            lambda c: {},
            lambda k, d: None,
        )  # fmt: skip
        try:
            uplink.start()
            # the birth is retained: once the watch shows it, it is subscribed
            wait_for(lambda: "ONLINE" in out.getvalue(), 10, "the watch to show the birth")
            for seq, line in ledger.append(3):
                uplink.publish_entry(seq, line)
            wait_for(lambda: "entries=3 last=2" in out.getvalue(), 10, "three verified entries")
            wait_for(lambda: "state=recording" in out.getvalue(), 10, "a heartbeat")
        finally:
            uplink.close()
            stop.set()
            watcher.join(10)
        last = [line for line in out.getvalue().splitlines() if "entries=3" in line][-1]
        assert "key=trusted" in last and "missing=0" in last and "!!" not in last
        assert "free=5.0 GB" in out.getvalue()
