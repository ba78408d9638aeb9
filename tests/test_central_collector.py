"""`liuhen central serve`, MQTT side, against a real mosquitto with the shipped config:
every entry verified and stored on arrival, gaps/forgeries/unknown devices alarmed and
kept apart (nothing lost), a key learned from a late birth re-checks what waited for
it, and the persistent session carries entries published while the collector was away."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from centralfixtures import CentralRig, api
from mqttfixtures import PREFIX, Observer, running_broker, wait_for

from evidence.envelope import b64


def _birth(unit: object, device: str, bdseq: int = 0, state: str = "ready") -> bytes:
    ledger = unit.ledger  # type: ignore[attr-defined]
    return json.dumps({"v": 1, "type": "birth", "device": device, "online": True, "bdseq": bdseq,
                       "state": state, "officer": None, "firmware": "liuhen test",
                       "key_id": ledger.keyid,
                       "device_certificate": unit.cert_file.read_text()}).encode()  # type: ignore[attr-defined]  # fmt: skip


def _alerts(server: object, device: str) -> dict[str, str]:
    return {a["code"]: a["message"] for a in api(server, "/api/alerts")["alerts"] if a["device"] == device}  # type: ignore[arg-type]  # fmt: skip


def test_entries_are_verified_stored_and_problems_alarmed(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        rig = CentralRig(tmp_path / "central", broker)
        unit = rig.unit("unit-a")
        lines = [line for _, line in unit.append(8)]
        sender = Observer(broker, name="sender", topics=("nothing/#",)).start()
        topic = f"{PREFIX}/unit-a/ledger"
        try:
            with rig.running() as server:
                sender.publish(f"{PREFIX}/unit-a/presence", _birth(unit, "unit-a"))
                for line in lines[:3]:
                    sender.publish(topic, line)
                view = server.central.fleet.unit("unit-a")
                wait_for(lambda: view.entries == 3, 10, "three verified entries")
                row = next(u for u in api(server, "/api/units")["units"] if u["device"] == "unit-a")
                assert row["last_seq"] == 2 and row["online"] is True and row["key_trusted"]

                sender.publish(topic, lines[5])  # 3 and 4 not (yet) received
                wait_for(lambda: "chain_gap" in _alerts(server, "unit-a"), 10, "a gap alert")
                assert "entries 3..4" in _alerts(server, "unit-a")["chain_gap"]
                sender.publish(topic, lines[3])
                sender.publish(topic, lines[4])
                wait_for(
                    lambda: "chain_gap" not in _alerts(server, "unit-a"), 10, "the gap to close"
                )

                doc = json.loads(lines[6])
                header = json.loads(base64.b64decode(doc["payload"]))
                header["kind"] = "segment"  # an edit of the signed header
                doc["payload"] = b64(json.dumps(header).encode())
                forged = json.dumps(doc).encode()
                sender.publish(topic, forged)
                sender.publish(topic, b"\x00 not an entry")
                wait_for(lambda: "bad_signature" in _alerts(server, "unit-a"), 10, "a bad-signature alert")  # fmt: skip
                wait_for(lambda: len(server.store.rejected("unit-a")) == 2, 10, "both kept apart")
                kept = {r["code"]: bytes(r["payload"]) for r in server.store.rejected("unit-a")}
                assert kept == {"bad_signature": forged, "unreadable": b"\x00 not an entry"}
                assert view.entries == 6 and "unreadable" in _alerts(server, "unit-a")

                # A unit nobody vouches for: its entries wait apart until its birth
                # names the key, then they are checked and kept as *untrusted*.
                stranger = rig.unit("unit-x", trusted=False)
                for _, line in stranger.append(2):
                    sender.publish(f"{PREFIX}/unit-x/ledger", line)
                wait_for(lambda: "unknown_key" in _alerts(server, "unit-x"), 10, "an unknown-device alert")  # fmt: skip
                sender.publish(f"{PREFIX}/unit-x/presence", _birth(stranger, "unit-x"))
                x = server.central.fleet.unit("unit-x")
                wait_for(lambda: x.entries == 2, 10, "the waiting entries re-checked")
                assert x.untrusted == 2 and "untrusted_key" in _alerts(server, "unit-x")
                assert server.store.rejected("unit-x") == []

            # The collector is away: the broker queues for its persistent session.
            sender.publish(topic, lines[7])
            sender.publish(topic, lines[6])
            with rig.running() as server:
                view = server.central.fleet.unit("unit-a")  # its chain position restored
                wait_for(lambda: view.entries == 2, 10, "entries queued while away")
                sender.publish(topic, lines[1])  # a redelivery after a lost PUBACK
                wait_for(lambda: view.duplicates == 1, 10, "the duplicate recognised")
                assert view.missing == set() and view.last_seq == 7
                assert not {"chain_gap", "fork", "chain_broken"} & set(_alerts(server, "unit-a"))
                assert [seq for seq, _ in server.store.lines("unit-a")] == list(range(8))
                assert [line for _, line in server.store.lines("unit-a")] == lines
        finally:
            sender.stop()
