"""The whole unit online: a real daemon reporting to a real mosquitto (the shipped
configuration, mutual TLS). The centre receives every ledger entry exactly as signed,
can start a recording with a signed command, and learns of a power cut from the will."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from conftest import write_config
from cryptography.hazmat.primitives import serialization
from mqttfixtures import PREFIX, Observer, running_broker, wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from evidence.ledger import LEDGER_FILE
from signer.keys import KeySpec, init_key
from uplink.commands import make_command, sign_command

DEVICE = "test-unit"


def test_the_centre_sees_the_unit_live_and_commands_it(
    tmp_path: Path, alsa_home: Path, daemon_factory: Any
) -> None:
    with running_broker(tmp_path / "broker") as broker:
        observer = Observer(broker).start()
        central = init_key(KeySpec(kind="software", path=str(tmp_path / "central.key")))
        command_keys = tmp_path / "command-keys.pem"
        command_keys.write_bytes(central.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
        tls_cert, tls_key = broker.pki.issue(DEVICE)
        config = write_config(
            tmp_path / "unit.toml",
            recorder={"segment_seconds": 5, "pre_event_seconds": 3},
            uplink={"host": "127.0.0.1", "port": broker.port, "ca_file": str(broker.pki.ca_file),
                    "cert_file": str(tls_cert), "key_file": str(tls_key),
                    "command_key_file": str(command_keys), "heartbeat_seconds": 1},
        )  # fmt: skip
        unit = daemon_factory(config).start()
        unit.wait_for(lambda s: s["state"] == "ready" and s["ring_s"] >= 2, 30, "pre-event media")
        beat = observer.wait(lambda: observer.on("status", DEVICE), 15, "a heartbeat")[-1].json()
        assert beat["faults"] == unit.status()["unit"]["faults"] and beat["encrypting"] is False

        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{PREFIX}/{DEVICE}/reply/desk"
        props.CorrelationData = b"start-1"
        command = make_command(DEVICE, "record.start", {}, issuer="desk 3")
        observer.publish(f"{PREFIX}/{DEVICE}/cmd", sign_command(central, command), props)
        unit.wait_for(
            lambda s: s["segments_sealed"] >= 2, 40, "two segments after the central command"
        )
        replies = observer.wait(
            lambda: observer.on("reply/desk", DEVICE), 10, "the command's reply"
        )
        assert replies[0].json()["ok"] and replies[0].json()["cmd"] == "record.start", replies[
            0
        ].json()
        assert unit.terminate() == 0, unit.output()

        # Every entry arrived, in order, byte for byte as in the ledger file.
        lines = (unit.data / "evidence" / LEDGER_FILE).read_bytes().splitlines(keepends=True)
        wait_for(
            lambda: len(observer.on("ledger", DEVICE)) >= len(lines),
            15,
            "all entries at the centre",
        )
        received = [m.payload for m in observer.on("ledger", DEVICE)]
        first_arrivals = list(dict.fromkeys(received))
        assert first_arrivals == lines
        bodies = [base64.b64decode(json.loads(line).get("body", "")) for line in lines]
        started = [json.loads(b)["event"] for b in bodies if b"recording_started" in b]
        assert started and started[0]["detail"]["trigger"] == "central:desk 3", started

        # A power cut: the broker tells the centre the unit is gone.
        unit2 = daemon_factory(config).start()
        unit2.wait_for(lambda s: s["state"] == "ready", 30, "ready again")

        def presence() -> dict[str, Any]:
            messages = observer.on("presence", DEVICE)
            return messages[-1].json() if messages else {}

        observer.wait(lambda: presence().get("online") is True, 15, "online again")
        unit2.kill()
        observer.wait(lambda: presence().get("online") is False, 30, "the last will")
        observer.stop()


def test_a_collector_out_of_reach_never_stops_the_recording(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """[upload] wired into the daemon: with nothing listening, segments are still sealed,
    the uploader says what is wrong and waits, and shutdown is clean."""
    from mqttfixtures import Pki, free_port

    pki = Pki.create(tmp_path / "pki")
    cert, key = pki.issue(DEVICE)
    config = write_config(
        tmp_path / "unit.toml",
        recorder={"autostart": True, "segment_seconds": 5},
        upload={"url": f"https://127.0.0.1:{free_port()}", "ca_file": str(pki.ca_file),
                "cert_file": str(cert), "key_file": str(key), "poll_seconds": 1},
    )  # fmt: skip
    unit = daemon_factory(config).start()
    status = unit.wait_for(
        lambda s: s["segments_sealed"] >= 2 and s["sealer"]["backlog"] == 0 and s["upload"]
        and s["upload"].get("last_error"), 40, "segments sealed while the collector is away",
    )  # fmt: skip
    assert status["state"] == "recording" and status["upload"]["acknowledged"] == 0
    assert unit.terminate() == 0, unit.output()
