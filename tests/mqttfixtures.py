"""Real MQTT parts for the uplink tests: a test PKI, mosquitto with the shipped config,
a centre-side observer, real signed ledger lines, and the uplink in a subprocess.

Owns: starting mosquitto from systemd/mosquitto-liuhen.conf with only its port and paths
substituted (../shared/SETUP.md: mutual TLS, certificates made with ``cryptography``),
stopping and restarting it on the same port, and waiting for conditions rather than
sleeping. A plain module: test modules import what they use. Run as a script
(``python tests/mqttfixtures.py run-uplink CONFIG``) it is an uplink process whose
stdin takes ledger lines, for the SIGKILL and restart tests.
Must not: mock paho, the broker or the signer.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from conftest import wait_for  # noqa: E402  (tests import it from here too)
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

SHIPPED_CONF = ROOT / "systemd" / "mosquitto-liuhen.conf"
MOSQUITTO = "/usr/sbin/mosquitto"
PREFIX = "liuhen/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------
# A test PKI: CA, broker certificate, client certificates
# ---------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o644)  # mosquitto drops to its own user (SETUP.md)
    return path


@dataclass
class Pki:
    directory: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("liuhen test MQTT CA"))
            .issuer_name(_name("liuhen test MQTT CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        pki = cls(directory, key, cert)
        _write(pki.ca_file, cert.public_bytes(serialization.Encoding.PEM))
        pki.issue("broker", server=True)
        return pki

    def issue(
        self, cn: str, *, server: bool = False, key: ec.EllipticCurvePrivateKey | None = None
    ) -> tuple[Path, Path]:
        """(certificate, key) files for ``cn``: a TLS server or client certificate."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path = _write(
            self.directory / f"{cn}.pem", cert.public_bytes(serialization.Encoding.PEM)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key_path = _write(self.directory / f"{cn}.key", key_pem)
        return cert_path, key_path


# ---------------------------------------------------------------------------
# mosquitto with the shipped configuration
# ---------------------------------------------------------------------------


def shipped_config(port: int, pki: Pki, persistence: Path) -> str:
    """systemd/mosquitto-liuhen.conf with the test's port and paths, nothing else."""
    text = SHIPPED_CONF.read_text()
    substitutions = {
        r"(?m)^listener 8883$": f"listener {port} 127.0.0.1",
        r"(?m)^cafile /etc/mosquitto/liuhen/ca\.pem$": f"cafile {pki.ca_file}",
        r"(?m)^certfile /etc/mosquitto/liuhen/server\.pem$": f"certfile {pki.directory / 'broker.pem'}",
        r"(?m)^keyfile /etc/mosquitto/liuhen/server\.key$": f"keyfile {pki.directory / 'broker.key'}",
        r"(?m)^persistence_location /var/lib/mosquitto/$": f"persistence_location {persistence}/",
    }
    for pattern, value in substitutions.items():
        text, count = re.subn(pattern, value, text)
        assert count == 1, f"shipped config: expected one line matching {pattern}"
    if os.geteuid() == 0:
        # As root mosquitto drops to user "mosquitto", which cannot enter pytest's 0700
        # temp directories (SETUP.md); staying root is the documented test recipe.
        text += "\nuser root\n"
    return text


@dataclass
class Broker:
    port: int
    pki: Pki
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def conf(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.directory / "mosquitto.log"

    def start(self) -> Broker:
        persistence = self.directory / "persistence"
        persistence.mkdir(exist_ok=True)
        self.conf.write_text(shipped_config(self.port, self.pki, persistence))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.starts += 1
        wait_for(self._listening, 10, f"mosquitto on port {self.port}\n{self.output()}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited {self.proc.returncode}:\n{self.output()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running_broker(directory: Path) -> Iterator[Broker]:
    pki = Pki.create(directory / "pki")
    broker = Broker(free_port(), pki, directory).start()
    try:
        yield broker
    finally:
        broker.stop()


# ---------------------------------------------------------------------------
# The centre's side: an observer with a persistent session
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Observer:
    """A centre-like MQTT 5 client: persistent session, QoS 1, records every message."""

    broker: Broker
    name: str = "central"
    topics: tuple[str, ...] = (f"{PREFIX}/#",)
    messages: list[Received] = field(default_factory=list)
    client: mqtt.Client | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Observer:
        cert, key = self.broker.pki.issue(self.name)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.name, protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(self.broker.pki.ca_file), certfile=str(cert), keyfile=str(key))
        client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self._subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        client.connect_async("127.0.0.1", self.broker.port, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        wait_for(self._subscribed.is_set, 10, f"observer {self.name} subscribed")
        return self

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = message.properties.json() if message.properties is not None else {}
        with self._cond:
            self.messages.append(
                Received(message.topic, message.payload, bool(message.retain), props)
            )
            self._cond.notify_all()

    def on(self, leaf: str, device: str | None = None) -> list[Received]:
        with self._cond:
            return [
                m
                for m in self.messages
                if m.topic.endswith("/" + leaf)
                and (device is None or m.topic.split("/")[2] == device)
            ]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_for(predicate, timeout, what)

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        assert self.client is not None
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(10)

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def ledger_seqs(messages: list[Received]) -> list[int]:
    return [int(json.loads(base64.b64decode(m.json()["payload"]))["seq"]) for m in messages]


def assert_in_order_and_intact(messages: list[Received], expected: list[tuple[int, bytes]]) -> None:
    """First arrivals are exactly the expected entries in order; repeats (a PUBACK lost in
    the outage) are byte-identical and never skip ahead of what came before."""
    by_seq = dict(expected)
    firsts: list[int] = []
    highest = -1
    for message in messages:
        seq = ledger_seqs([message])[0]
        assert message.payload == by_seq[seq], f"entry {seq} altered in transit"
        assert seq <= highest + 1, f"entry {seq} arrived before entry {highest + 1}"
        if seq > highest:
            firsts.append(seq)
            highest = seq
    assert firsts == [s for s, _ in expected]


# ---------------------------------------------------------------------------
# Real signed ledger lines
# ---------------------------------------------------------------------------


@dataclass
class SignedLedger:
    """A real ledger signed with a software key, with a device certificate for it."""

    directory: Path
    device: str
    cert_file: Path

    def __post_init__(self) -> None:
        from evidence.ledger import Ledger
        from signer.keys import KeySpec, init_key

        self.directory.mkdir(parents=True, exist_ok=True)
        key_path = self.directory / "device.key"
        spec = KeySpec(kind="software", path=str(key_path))
        self.backend = init_key(spec)
        if not self.cert_file.exists():
            self.cert_file.parent.mkdir(parents=True, exist_ok=True)
            from evidence.certs import chain_pem
            from signer.identity import self_signed_device_cert

            self.cert_file.write_text(chain_pem(self_signed_device_cert(self.backend, self.device)))
        self.ledger = Ledger(self.directory, self.device, self.backend)

    def append(self, n: int = 1, kind: str = "event") -> list[tuple[int, bytes]]:
        from signer.sealer import stamp_now

        out = []
        for _ in range(n):
            seq = self.ledger.next_seq
            entry = self.ledger.append(kind, {"event": {"type": "test", "n": seq}}, stamp_now())
            out.append((entry.seq, entry.to_line()))
        return out


# ---------------------------------------------------------------------------
# The uplink in a subprocess
# ---------------------------------------------------------------------------


def uplink_process(config: dict[str, Any], directory: Path) -> subprocess.Popen[str]:
    """Start ``python tests/mqttfixtures.py run-uplink``; write "seq base64\\n" to its
    stdin to publish an entry, read "queued seq" lines from its stdout."""
    path = directory / f"uplink-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, __file__, "run-uplink", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(directory / "uplink-process.log", "a"),  # noqa: SIM115
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "started", f"uplink process said {line!r}"
    return proc


def feed(proc: subprocess.Popen[str], entries: list[tuple[int, bytes]]) -> None:
    """Hand entries to a subprocess uplink; return once each is durably queued."""
    assert proc.stdin is not None and proc.stdout is not None
    for seq, line in entries:
        proc.stdin.write(f"{seq} {base64.b64encode(line).decode()}\n")
        proc.stdin.flush()
        answer = proc.stdout.readline().strip()
        assert answer == f"queued {seq}", f"uplink process said {answer!r}"


def kill(proc: subprocess.Popen[str]) -> None:
    """A power cut: SIGKILL, no DISCONNECT, no flush."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _run_uplink(config_path: str) -> None:
    import logging

    from uplink.client import Uplink, UplinkSettings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = json.loads(Path(config_path).read_text())
    uplink = Uplink(
        UplinkSettings(**config["settings"]),
        Path(config["outbox"]),
        status=lambda: {"state": "ready", "segments_sealed": 0, "storage_free_bytes": 1 << 30},
        on_command=lambda cmd: {"done": cmd["cmd"]},
        on_event=lambda kind, detail: print(f"event {kind}", file=sys.stderr),
    )
    uplink.start()
    print("started", flush=True)
    for text in sys.stdin:
        seq, b64 = text.split()
        uplink.publish_entry(int(seq), base64.b64decode(b64))
        print(f"queued {seq}", flush=True)
    uplink.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run-uplink":
        _run_uplink(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} run-uplink CONFIG.json")
