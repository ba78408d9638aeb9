"""The uplink against a real mosquitto running the shipped configuration (mutual TLS).

Birth, heartbeats and ledger entries arrive and match their JSON Schemas; a broker
outage loses nothing; commands are executed only when signed, fresh, unused and for
this unit, and everything else gets an error reply and a ledger event; a client
without a certificate is refused by the shipped broker configuration.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mqttfixtures import (
    PREFIX,
    Broker,
    Observer,
    Received,
    SignedLedger,
    assert_in_order_and_intact,
    ledger_seqs,
    running_broker,
    wait_for,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from evidence.certs import fingerprint, load_chain_pem
from protocol import schemas
from signer.keys import KeySpec, init_key
from uplink.client import Uplink, UplinkSettings
from uplink.commands import COMMAND_TYPE, make_command, sign_command

DEVICE = "unit-7"


@dataclass
class Daemon:
    """What the daemon gives the uplink: a status dict, a command handler, an event sink."""

    state: str = "ready"
    commands: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self) -> dict[str, Any]:
        return {
            "device_id": DEVICE,
            "state": self.state,
            "segment": None,
            "segments_sealed": 3,
            "storage_free_bytes": 12_000_000_000,
            "storage_total_bytes": 32_000_000_000,
            "officer": {"id": "0421", "name": "Li Wei"},
            "battery": {"percent": 81.5, "charging": False},
            "unit": {"mode": "ready", "faults": ["storage_low", "clock_unset"]},
            "encrypting": True,
            "sealer": {
                "state": "ok",
                "error": None,
                "backlog": 0,
                "last_seq": 9,
                "key": "software",
            },
        }

    def on_command(self, command: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.commands.append(command)
        if command["cmd"] == "record.start":
            self.state = "recording"
        return {"state": self.state}

    def on_event(self, kind: str, detail: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((kind, detail))

    def refusals(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d for k, d in self.events if k == "command_refused"]


@dataclass
class Rig:
    broker: Broker
    observer: Observer
    ledger: SignedLedger
    settings: UplinkSettings
    outbox: Path
    daemon: Daemon
    central_key: Any
    uplink: Uplink | None = None

    def start_uplink(self) -> Uplink:
        self.uplink = Uplink(
            self.settings,
            self.outbox,
            self.daemon.status,
            self.daemon.on_command,
            self.daemon.on_event,
        )
        self.uplink.start()
        return self.uplink

    def publish(self, n: int) -> list[tuple[int, bytes]]:
        assert self.uplink is not None
        entries = self.ledger.append(n)
        for seq, line in entries:
            self.uplink.publish_entry(seq, line)
        return entries

    def ledger_messages(self) -> list[Received]:
        return self.observer.on("ledger", DEVICE)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running_broker(tmp_path / "broker") as broker:
        observer = Observer(broker).start()
        cert, key = broker.pki.issue(DEVICE)
        ledger = SignedLedger(tmp_path / "evidence", DEVICE, tmp_path / "device.pem")
        central_key = init_key(KeySpec(kind="software", path=str(tmp_path / "central.key")))
        command_keys = tmp_path / "command-keys.pem"
        command_keys.write_bytes(_public_pem(central_key))
        settings = UplinkSettings(
            host="localhost",
            port=broker.port,
            device_id=DEVICE,
            ca_file=str(broker.pki.ca_file),
            cert_file=str(cert),
            key_file=str(key),
            device_cert_file=str(tmp_path / "device.pem"),
            command_key_file=str(command_keys),
            heartbeat_s=1.0,
            keepalive_s=5,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        )
        rig = Rig(
            broker, observer, ledger, settings, tmp_path / "outbox.sqlite", Daemon(), central_key
        )
        try:
            yield rig
        finally:
            if rig.uplink is not None:
                rig.uplink.close()
            observer.stop()


def _public_pem(backend: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        backend.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_birth_heartbeat_and_entries_arrive_and_match_the_schemas(rig: Rig) -> None:
    uplink = rig.start_uplink()
    entries = rig.publish(5)
    rig.observer.wait(lambda: len(rig.ledger_messages()) >= 5, 10, "5 ledger entries")
    rig.observer.wait(lambda: len(rig.observer.on("status", DEVICE)) >= 2, 10, "two heartbeats")

    births = [m.json() for m in rig.observer.on("presence", DEVICE)]
    assert births and births[0]["type"] == "birth" and births[0]["online"] is True
    birth = births[0]
    schemas.check("presence", birth)
    device_cert = load_chain_pem((rig.ledger.directory.parent / "device.pem").read_bytes())[0]
    assert birth["device_certificate_sha256"] == fingerprint(device_cert)
    assert birth["key_id"] == rig.ledger.ledger.keyid
    assert (
        birth["state"] == "ready" or birth["state"] is None
    )  # first status may still be on its way
    assert birth["firmware"].startswith("liuhen ")

    for message in rig.observer.on("status", DEVICE):
        status = message.json()
        schemas.check("status", status)
        assert message.properties.get("MessageExpiryInterval") == 3
    last = rig.observer.on("status", DEVICE)[-1].json()
    assert last["officer"] == {"id": "0421", "name": "Li Wei"}
    assert last["battery"] == {"percent": 81.5, "charging": False}
    assert last["storage_free_bytes"] == 12_000_000_000 and last["segments_sealed"] == 3
    assert isinstance(last["clock_synced"], bool | None)
    assert last["faults"] == ["clock_unset", "storage_low"] and last["encrypting"] is True

    received = rig.ledger_messages()
    assert [m.payload for m in received] == [line for _, line in entries]  # byte for byte
    for message in received:
        schemas.check("ledger-line", message.json())
        assert tuple(message.properties["UserProperty"][0]) == (
            "seq",
            str(ledger_seqs([message])[0]),
        )
    wait_for(lambda: uplink.status()["backlog_entries"] == 0, 5, "the outbox to empty")
    status = uplink.status()
    assert status["connected"] and status["last_puback_seq"] == 4 and status["last_error"] is None


def test_a_broker_outage_loses_nothing_and_never_blocks_the_caller(rig: Rig) -> None:
    uplink = rig.start_uplink()
    before = rig.publish(3)
    rig.observer.wait(lambda: len(rig.ledger_messages()) == 3, 10, "3 entries before the outage")

    rig.broker.stop()
    wait_for(lambda: not uplink.status()["connected"], 10, "the uplink to notice the outage")
    slowest = 0.0
    during: list[tuple[int, bytes]] = []
    for _ in range(20):
        t0 = time.monotonic()
        during += rig.publish(1)
        slowest = max(slowest, time.monotonic() - t0)
    assert slowest < 0.5, f"publish_entry took {slowest:.3f} s with the broker down"
    assert uplink.status()["backlog_entries"] == 20
    assert uplink.status()["last_error"]

    rig.broker.start()  # same port, same persistence: the observer's session survives
    after = rig.publish(2)
    expected = before + during + after
    rig.observer.wait(
        lambda: set(ledger_seqs(rig.ledger_messages())) >= {s for s, _ in expected},
        20,
        "every entry after the broker came back",
    )
    assert_in_order_and_intact(rig.ledger_messages(), expected)
    wait_for(lambda: uplink.status()["backlog_entries"] == 0, 10, "the outbox to drain")
    live = [m.json() for m in rig.observer.on("presence", DEVICE) if not m.retain]  # not re-sent
    bdseqs = [p["bdseq"] for p in live if p["online"]]  # copies on the observer's re-subscribe
    assert bdseqs == sorted(set(bdseqs)) and len(bdseqs) >= 2, "one birth per connection"


# --- commands ------------------------------------------------------------------------


def _command(rig: Rig, payload: bytes, correlation: bytes) -> dict[str, Any]:
    """Publish a command with a response topic and correlation data; return the reply."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"{PREFIX}/{DEVICE}/reply/console"
    props.CorrelationData = correlation
    rig.observer.publish(f"{PREFIX}/{DEVICE}/cmd", payload, props)

    def reply() -> Received | None:
        for m in rig.observer.on("reply/console", DEVICE):
            if m.properties.get("CorrelationData") == correlation.hex():
                return m
        return None

    message: Received = rig.observer.wait(reply, 10, f"the reply to {correlation!r}")
    document: dict[str, Any] = message.json()
    schemas.check("reply", document)
    return document


def test_commands_are_executed_only_when_signed_fresh_unused_and_for_this_unit(rig: Rig) -> None:
    rig.start_uplink()
    rig.observer.wait(lambda: rig.observer.on("presence", DEVICE), 10, "the birth")
    other_key = init_key(KeySpec(kind="software", path=str(rig.outbox.parent / "intruder.key")))
    published: list[tuple[int, bytes]] = []

    def valid(cmd: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return make_command(DEVICE, cmd, args, issuer="desk 3", **kw)

    record = valid("record.start", {"case": "2024-FA-0117"})
    reply = _command(rig, sign_command(rig.central_key, record), b"c-valid")
    assert reply["ok"] is True and reply["result"] == {"state": "recording"}
    assert [c["cmd"] for c in rig.daemon.commands] == ["record.start"]
    assert rig.daemon.commands[0]["args"] == {"case": "2024-FA-0117"}
    assert rig.daemon.commands[0]["issuer"] == "desk 3"
    accepted = [d for k, d in rig.daemon.events if k == "command_accepted"]
    assert accepted and accepted[0]["nonce"] == record["nonce"]

    ping = _command(rig, sign_command(rig.central_key, valid("ping")), b"c-ping")
    assert ping["ok"] and ping["result"]["pong"] is True and ping["result"]["uplink"]["connected"]
    status = _command(rig, sign_command(rig.central_key, valid("status")), b"c-status")
    schemas.check("status", status["result"]["status"])

    junk_envelope = json.dumps({"payloadType": COMMAND_TYPE, "payload": 123, "signatures": "x"})
    now = datetime.now(UTC)
    refused = {
        b"c-forged": (sign_command(other_key, valid("record.stop")), "unknown_key"),
        b"c-replay": (sign_command(rig.central_key, record), "replayed"),
        b"c-expired": (
            sign_command(rig.central_key, valid("mark", now=now - timedelta(minutes=10))),
            "expired",
        ),
        b"c-future": (
            sign_command(rig.central_key, valid("mark", now=now + timedelta(hours=2))),
            "not_yet_valid",
        ),
        b"c-other-unit": (
            sign_command(rig.central_key, make_command("unit-8", "record.stop")),
            "wrong_device",
        ),
        b"c-wrong-arg-type": (
            sign_command(rig.central_key, valid("mark", {"label": 17})),
            "invalid",
        ),
        b"c-delete": (
            sign_command(rig.central_key, {**valid("ping"), "cmd": "evidence.delete"}),
            "invalid",
        ),
        b"c-not-json": (b"record start now!", "malformed"),
        b"c-wrong-types": (junk_envelope.encode(), "malformed"),
        b"c-1mb": (b"\x00\xff" * (1 << 19), "too_large"),
    }
    for correlation, (payload, code) in refused.items():
        published += rig.publish(1)  # the publish path keeps working throughout
        reply = _command(rig, payload, correlation)
        assert reply["ok"] is False and reply["error"]["code"] == code, (correlation, reply)
        assert "result" not in reply
    assert [c["cmd"] for c in rig.daemon.commands] == ["record.start"], "nothing refused ran"

    refusals = rig.daemon.refusals()
    assert [r["code"] for r in refusals] == [code for _, code in refused.values()]
    for detail in refusals:
        assert detail["sha256"] and detail["bytes"] > 0 and detail["message"]
    assert refusals[-1]["bytes"] == 1 << 20  # the megabyte is summarised, not journaled
    assert refusals[1]["nonce"] == record["nonce"]  # the replay names what it replayed

    rig.observer.wait(
        lambda: set(ledger_seqs(rig.ledger_messages())) >= {s for s, _ in published},
        10,
        "the entries published between commands",
    )
    assert_in_order_and_intact(rig.ledger_messages(), published)


def test_a_command_with_a_foreign_response_topic_is_answered_on_the_units_own(rig: Rig) -> None:
    rig.start_uplink()
    rig.observer.wait(lambda: rig.observer.on("presence", DEVICE), 10, "the birth")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"{PREFIX}/unit-8/ledger"  # would let a sender forge another unit's data
    props.CorrelationData = b"c-redirect"
    payload = sign_command(rig.central_key, make_command(DEVICE, "ping"))
    rig.observer.publish(f"{PREFIX}/{DEVICE}/cmd", payload, props)
    reply = rig.observer.wait(lambda: rig.observer.on("reply", DEVICE), 10, "the reply")
    assert reply[0].topic == f"{PREFIX}/{DEVICE}/reply" and reply[0].json()["ok"]
    assert not rig.observer.on("ledger", "unit-8")


# --- the shipped broker configuration -------------------------------------------------


def test_the_shipped_broker_config_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    with running_broker(tmp_path) as broker:
        anonymous = subprocess.run(
            ["mosquitto_pub", "-h", "localhost", "-p", str(broker.port),
             "--cafile", str(broker.pki.ca_file), "-t", f"{PREFIX}/x/ledger", "-m", "forged",
             "-q", "1", "-V", "mqttv5"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert anonymous.returncode != 0, anonymous.stdout + anonymous.stderr
        assert "certificate" in broker.output().lower() or "peer did not return" in broker.output()

        cert, key = broker.pki.issue("unit-9")
        with_cert = subprocess.run(
            ["mosquitto_pub", "-h", "localhost", "-p", str(broker.port),
             "--cafile", str(broker.pki.ca_file), "--cert", str(cert), "--key", str(key),
             "-t", f"{PREFIX}/unit-9/status", "-m", "{}", "-q", "1", "-V", "mqttv5"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert with_cert.returncode == 0, with_cert.stderr

        connacks: list[Any] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="no-cert", protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(broker.pki.ca_file))
        client.on_connect = lambda c, u, flags, reason, props: connacks.append(reason)
        try:  # TLS 1.2 fails in the handshake, TLS 1.3 on the first read: never a CONNACK
            client.connect("localhost", broker.port)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and client.loop(0.1) == mqtt.MQTT_ERR_SUCCESS:
                pass
        except OSError:
            pass
        assert connacks == [], "a client without a certificate got a CONNACK"


def test_status_and_entries_carry_valid_base64_of_the_ledger(rig: Rig) -> None:
    """The centre can verify an entry from the MQTT message alone."""
    from evidence.ledger import Entry

    rig.start_uplink()
    rig.publish(2)
    rig.observer.wait(lambda: len(rig.ledger_messages()) >= 2, 10, "two entries")
    messages = rig.ledger_messages()
    public = rig.ledger.backend.public_key()
    for message in messages:
        entry = Entry.from_line(message.payload)
        assert entry.envelope.verify(public)
        assert base64.b64decode(message.json()["payload"]) == entry.envelope.payload


# --- hostile or absent brokers ---------------------------------------------------------


class _HostileServer:
    """A TCP listener that either says nothing (a hung broker) or answers with junk."""

    def __init__(self, junk: bytes | None) -> None:
        import socket

        self.junk = junk
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[Any] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.junk is None:
                self.held.append(conn)  # accept, then never answer
            else:
                conn.sendall(self.junk)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("junk", [None, b"\x16\x03\x01\x00\x05hello" + bytes(range(256))])
def test_a_hung_or_garbage_broker_never_blocks_the_caller(
    tmp_path: Path, junk: bytes | None
) -> None:
    server = _HostileServer(junk)
    ledger = SignedLedger(tmp_path / "evidence", DEVICE, tmp_path / "device.pem")
    uplink = Uplink(
        UplinkSettings(
            host="localhost", port=server.port, device_id=DEVICE,
            reconnect_min_s=0.1, reconnect_max_s=0.2, keepalive_s=5,
        ),
        tmp_path / "outbox.sqlite",
        Daemon().status,
        Daemon().on_command,
        Daemon().on_event,
    )  # fmt: skip
    try:
        uplink.start()
        wait_for(lambda: server.accepted >= 1, 10, "the uplink to connect to the server")
        slowest = 0.0
        for seq, line in ledger.append(20):
            t0 = time.monotonic()
            uplink.publish_entry(seq, line)
            slowest = max(slowest, time.monotonic() - t0)
        assert slowest < 0.5, f"publish_entry took {slowest:.3f} s"
        status = uplink.status()
        assert not status["connected"] and status["backlog_entries"] == 20
        if junk is not None:
            wait_for(lambda: uplink.status()["last_error"], 10, "the error to be reported")
            assert "cannot connect" in uplink.status()["last_error"]
    finally:
        t0 = time.monotonic()
        uplink.close(timeout=2)
        assert time.monotonic() - t0 < 3, "close() waited on the hostile server"
        server.close()
