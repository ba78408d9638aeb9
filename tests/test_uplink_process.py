"""The uplink as its own process: SIGKILL (a power cut) makes the broker publish the last
will, and the outbox carries every unacknowledged entry across a process restart and a
broker restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqttfixtures import (
    Broker,
    Observer,
    SignedLedger,
    assert_in_order_and_intact,
    feed,
    kill,
    ledger_seqs,
    running_broker,
    uplink_process,
)

from protocol import schemas

DEVICE = "unit-5"


def _config(broker: Broker, tmp_path: Path) -> dict[str, Any]:
    cert, key = broker.pki.issue(DEVICE)
    return {
        "settings": {
            "host": "localhost",
            "port": broker.port,
            "device_id": DEVICE,
            "ca_file": str(broker.pki.ca_file),
            "cert_file": str(cert),
            "key_file": str(key),
            "device_cert_file": str(tmp_path / "device.pem"),
            "heartbeat_s": 1.0,
            "keepalive_s": 5,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        },
        "outbox": str(tmp_path / "outbox.sqlite"),
    }


def _presence(observer: Observer) -> list[dict[str, Any]]:
    return [m.json() for m in observer.on("presence", DEVICE)]


def test_sigkill_makes_the_broker_publish_the_last_will(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        observer = Observer(broker).start()
        SignedLedger(tmp_path / "evidence", DEVICE, tmp_path / "device.pem")
        proc = uplink_process(_config(broker, tmp_path), tmp_path)
        try:
            birth = observer.wait(
                lambda: [p for p in _presence(observer) if p["online"]], 15, "the birth"
            )[-1]
            kill(proc)
            death = observer.wait(
                lambda: [p for p in _presence(observer) if not p["online"]], 15, "the last will"
            )[-1]
        finally:
            if proc.poll() is None:
                kill(proc)
        schemas.check("presence", death)
        assert death["reason"] == "lost" and death["bdseq"] == birth["bdseq"]
        assert observer.on("presence", DEVICE)[-1].retain is False  # live delivery
        observer.stop()

        late = Observer(broker, name="late-central").start()  # a centre that joins now
        retained = late.wait(lambda: _presence(late), 10, "the retained presence")
        assert retained[-1]["online"] is False and retained[-1]["bdseq"] == birth["bdseq"]
        late.stop()


def test_the_outbox_survives_a_power_cut_and_a_broker_restart(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        observer = Observer(broker).start()
        ledger = SignedLedger(tmp_path / "evidence", DEVICE, tmp_path / "device.pem")
        config = _config(broker, tmp_path)
        first = uplink_process(config, tmp_path)
        try:
            before = ledger.append(4)
            feed(first, before)
            observer.wait(lambda: len(observer.on("ledger", DEVICE)) >= 4, 15, "entries 0-3")

            broker.stop()
            during = ledger.append(12)
            feed(first, during)  # each durably queued while nobody can take it
            kill(first)  # power cut with twelve entries in the outbox
        finally:
            if first.poll() is None:
                kill(first)

        broker.start()  # same port, same persisted sessions
        second = uplink_process(config, tmp_path)
        try:
            expected = before + during
            observer.wait(
                lambda: set(ledger_seqs(observer.on("ledger", DEVICE))) >= {s for s, _ in expected},
                20,
                "the twelve entries queued before the power cut",
            )
            assert_in_order_and_intact(observer.on("ledger", DEVICE), expected)
            after = ledger.append(2)
            feed(second, after)
            observer.wait(
                lambda: {s for s, _ in after} <= set(ledger_seqs(observer.on("ledger", DEVICE))),
                15,
                "entries after the restart",
            )
            assert_in_order_and_intact(observer.on("ledger", DEVICE), expected + after)
        finally:
            if second.poll() is None:
                kill(second)
        observer.stop()
