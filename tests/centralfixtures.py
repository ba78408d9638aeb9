"""Real parts for the central tests: the collector in this process against a real
mosquitto (tests/mqttfixtures.py), its configuration, units that publish real signed
entries, box-structured segment files with their entries, and a raw HTTPS client with
a unit's TLS certificate for the upload protocol's refusals.

Owns: building a ``central serve`` configuration (TOML, as an operator would write it)
from the test PKI, starting and stopping a ``CentralServer`` on free ports, and waiting
for conditions (never sleeping blindly). Must not: mock the broker, TLS or the store.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import struct
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqttfixtures import PREFIX, Broker, SignedLedger, wait_for

from central.config import load
from central.serve import CentralServer
from evidence.parts import StreamingPartHasher
from signer.sealer import stamp_now


def write_central_config(path: Path, **sections: dict[str, Any]) -> Path:
    """TOML (JSON's scalars and lists are TOML's) of flat sections."""
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()) + "\n" for name, values in sections.items()))  # fmt: skip
    return path


@dataclass
class CentralRig:
    """A collector's files: data dir, trust dir, TLS certificates from the broker's PKI."""

    directory: Path
    broker: Broker
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trust = self.directory / "trust"
        self.trust.mkdir(parents=True, exist_ok=True)
        pki = self.broker.pki
        self.mqtt_cert, self.mqtt_key = pki.issue("central")
        self.server_cert, self.server_key = pki.issue("collector", server=True)

    def config(self, **overrides: dict[str, Any]) -> Path:
        pki = self.broker.pki
        sections: dict[str, dict[str, Any]] = {
            "central": {"id": "test-central", "data_dir": str(self.directory / "data")},
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port, "ca_file": str(pki.ca_file),
                     "cert_file": str(self.mqtt_cert), "key_file": str(self.mqtt_key),
                     "client_id": "test-central", "session_expiry_seconds": 600},
            "trust": {"directory": str(self.trust)},
            "collector": {"listen": "127.0.0.1", "port": 0, "cert_file": str(self.server_cert),
                          "key_file": str(self.server_key), "client_ca_file": str(pki.ca_file)},
            "monitor": {"listen": "127.0.0.1", "port": 0},
        }  # fmt: skip
        for name, values in {**self.overrides, **overrides}.items():
            sections.setdefault(name, {}).update(values)
        return write_central_config(self.directory / "central.toml", **sections)

    @contextlib.contextmanager
    def running(self, **overrides: dict[str, Any]) -> Iterator[CentralServer]:
        server = CentralServer(load(self.config(**overrides)))
        server.start()
        try:
            wait_for(server.ingest.connected.is_set, 10, "the collector's MQTT session")
            yield server
        finally:
            server.close()

    def unit(self, device: str, trusted: bool = True) -> SignedLedger:
        """A unit with a software-key ledger; its certificate in the trust dir if trusted."""
        cert = (self.trust if trusted else self.directory / "untrusted") / f"{device}.pem"
        return SignedLedger(self.directory / "units" / device, device, cert)


def api(server: CentralServer, path: str) -> Any:
    with urllib.request.urlopen(server.monitor_url.rstrip("/") + path, timeout=10) as response:
        return json.loads(response.read())


def publish_lines(broker: Broker, client: Any, device: str, lines: list[bytes]) -> None:
    for line in lines:
        client.publish(f"{PREFIX}/{device}/ledger", line)


def entry_count(server: CentralServer, device: str) -> int:
    return server.central.fleet.unit(device).entries


# ---------------------------------------------------------------------------
# Segment files with box structure, and their entries
# ---------------------------------------------------------------------------


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def box_file(fragments: int = 4, fragment_bytes: int = 50_000, salt: bytes = b"") -> bytes:
    """ftyp + moov, then ``fragments`` moof+mdat pairs: the part structure of a segment."""
    out = [_box(b"ftyp", b"iso5\0\0\0\0iso5"), _box(b"moov", b"\0" * 64 + salt)]
    for i in range(fragments):
        out.append(_box(b"moof", struct.pack(">I", i) * 4))
        out.append(_box(b"mdat", bytes((i * 7 + n) % 251 for n in range(fragment_bytes))))
    return b"".join(out)


def encrypted_file(plain: bytes, name: str, records: int = 4) -> bytes:
    """``plain`` encrypted at rest for a fresh agency key, as a unit writes it."""
    from evidence.records import Recipient, RecordSealer, generate_agency_key

    sealer = RecordSealer(Recipient.from_pem(generate_agency_key()[1]), "unit-a", name)
    step = -(-len(plain) // records)
    chunks = [plain[i : i + step] for i in range(0, len(plain), step)]
    return sealer.preamble + b"".join(
        sealer.seal(c, final=i == len(chunks) - 1) for i, c in enumerate(chunks)
    )


def segment_body(
    name: str, data: bytes, recording: int = 1, seq: int = 1, scheme: str = "prefix"
) -> dict[str, Any]:
    """A segment entry's body for ``data``; ``scheme="part"`` makes one as a unit before
    ADR 0019 wrote it (each part hashed on its own, no ``part_digest``)."""
    from evidence.records import RecordPartHasher, is_encrypted_bytes

    encrypted = is_encrypted_bytes(data)
    hasher = (RecordPartHasher if encrypted else StreamingPartHasher)(scheme=scheme)
    hasher.update(data)
    parts = [[p.offset, p.length, p.sha256] for p in hasher.finish()]
    extra = {"encryption": {"kem": "MLKEM768-X25519", "records": len(parts) - 1,
                            "plaintext": None}} if encrypted else {}  # fmt: skip
    return {"segment": {
        "name": name, "recording": recording, "seq": seq, "state": "sealed", "bytes": len(data),
        "sha256": hasher.file_sha256.hexdigest(), "parts": parts,
        "media_start_us": (seq - 1) * 5_000_000, "media_end_us": seq * 5_000_000,
        "wall_start": "2024-05-02T08:00:00.000Z", "wall_end": "2024-05-02T08:00:05.000Z",
        "video_frames": 150, "audio_frames": 0, "c2pa": False, **extra,
        **({"part_digest": "prefix"} if scheme == "prefix" else {})}}  # fmt: skip


def append_segment(ledger: SignedLedger, name: str, data: bytes, **kw: Any) -> tuple[int, bytes]:
    body = segment_body(name, data, **kw)
    entry = ledger.ledger.append("segment", body, stamp_now(), file=name)
    return entry.seq, entry.to_line()


# ---------------------------------------------------------------------------
# A raw HTTPS client with a unit's certificate
# ---------------------------------------------------------------------------


@dataclass
class RawClient:
    port: int
    context: ssl.SSLContext

    @classmethod
    def for_unit(cls, server: CentralServer, pki: Any, device: str) -> RawClient:
        cert, key = pki.issue(device)
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(str(cert), str(key))
        return cls(server.uploads.port, context)

    def request(self, method: str, target: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            conn.request(method, target, body=body, headers={"Content-Length": str(len(body)), **(headers or {})})  # fmt: skip
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def put(self, sha256: str, name: str, data: bytes, first: int, total: int,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        rng = f"bytes {first}-{first + len(data) - 1}/{total}"
        return self.request("PUT", f"/v1/uploads/{sha256}?segment={name}", data,
                            {"Content-Range": rng, **(headers or {})})  # fmt: skip
