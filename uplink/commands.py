"""Commands from the centre: signed, fresh, used once, for this unit — or refused.

Owns: the command format (a DSSE envelope, payload type COMMAND_TYPE, signed by a
central command key; docs/MQTT.md, "Commands"), loading the command public keys,
every check a command must pass, in a fixed order (size, JSON, envelope, key,
signature, schema, device, time window, nonce), remembering used nonces in the
uplink store until they expire, and signing commands (for the centre and tests).
Must not: act on a command (the daemon does, through ``on_command``), or parse
anything of an unsigned payload beyond its envelope.

The broker's ACL decides who may publish to a unit's command topic; this module
decides whether what arrived there was issued by the centre, for this unit, recently,
and only once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from evidence.envelope import Signed, canonical, sign
from evidence.ledger import key_id
from protocol import schemas
from signer.keys import KeyBackend
from uplink.store import Store

COMMAND_TYPE = "application/vnd.liuhen.command.v1+json"
MAX_COMMAND_BYTES = 64 * 1024
MAX_LIFETIME = timedelta(hours=1)
CLOCK_SKEW = timedelta(minutes=5)
# Used nonces are kept this long after their command expired, so a clock stepped back
# by less than this cannot make an old command look fresh and unused again.
NONCE_RETENTION = timedelta(days=2)
# Commands the uplink answers itself; the rest go to the daemon's on_command.
UPLINK_COMMANDS = frozenset({"ping", "status"})


class CommandRefused(Exception):
    """A command that must not be acted on; ``code`` is one of reply.schema.json's."""

    def __init__(self, code: str, message: str, **known: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.known = {k: v for k, v in known.items() if v is not None}


@dataclass(frozen=True)
class Command:
    cmd: str
    args: dict[str, Any]
    nonce: str
    issued: str
    expires: str
    keyid: str
    issuer: str | None = None
    sha256: str = field(default="", compare=False)  # of the envelope bytes, for the ledger

    def as_dict(self) -> dict[str, Any]:
        return {
            "cmd": self.cmd,
            "args": self.args,
            "nonce": self.nonce,
            "issued": self.issued,
            "expires": self.expires,
            "issuer": self.issuer,
            "keyid": self.keyid,
            "sha256": self.sha256,
        }


def load_command_keys(path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    """Every P-256 public key (or certificate) in a PEM file, by key id."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"command key file {path}: {exc.strerror}") from None
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    blocks = data.split(b"-----BEGIN ")[1:]
    if not blocks:
        raise ValueError(f"command key file {path}: no PEM block in it")
    for number, block in enumerate(blocks, 1):
        pem = b"-----BEGIN " + block
        public: object
        try:
            if pem.startswith(b"-----BEGIN CERTIFICATE-----"):
                from cryptography import x509

                public = x509.load_pem_x509_certificate(pem).public_key()
            else:
                public = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ValueError(f"command key file {path}: PEM block {number}: {exc}") from None
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise ValueError(f"command key file {path}: PEM block {number} is not an EC P-256 key")
        keys[key_id(public)] = public
    return keys


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SeenNonces:
    """Nonces already used, persisted in the uplink store until well past their expiry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def first_use(self, nonce: str, expires: datetime, keyid: str, now: datetime) -> bool:
        """Record ``nonce``; False if it was seen before (a replay)."""
        with self._store.transaction() as db:
            db.execute(
                "DELETE FROM nonces WHERE expires < ?",
                ((now - NONCE_RETENTION).timestamp(),),
            )
            cursor = db.execute(
                "INSERT OR IGNORE INTO nonces (nonce, expires, keyid) VALUES (?, ?, ?)",
                (nonce, expires.timestamp(), keyid),
            )
            return cursor.rowcount == 1


class CommandVerifier:
    def __init__(
        self, device: str, keys: dict[str, ec.EllipticCurvePublicKey], nonces: SeenNonces
    ) -> None:
        self.device = device
        self.keys = keys
        self.nonces = nonces

    def verify(self, raw: bytes, now: datetime | None = None) -> Command:
        """The command in ``raw``, or CommandRefused saying what was wrong."""
        now = now or datetime.now(UTC)
        if len(raw) > MAX_COMMAND_BYTES:
            raise CommandRefused(
                "too_large", f"command is {len(raw)} bytes; the limit is {MAX_COMMAND_BYTES}"
            )
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CommandRefused("malformed", f"command is not JSON ({exc})") from None
        ptype = document.get("payloadType") if isinstance(document, dict) else None
        if isinstance(ptype, str) and ptype != COMMAND_TYPE:
            raise CommandRefused(
                "wrong_type", f"payloadType is {ptype[:80]!r}, a command needs {COMMAND_TYPE!r}"
            )
        try:
            schemas.check("command-envelope", document)
            envelope = Signed.from_json(document)
        except ValueError as exc:
            raise CommandRefused("malformed", f"not a command envelope: {exc}") from None
        if not self.keys:
            raise CommandRefused("no_command_key", "this unit has no command key configured")
        public = self.keys.get(envelope.keyid)
        if public is None:
            raise CommandRefused(
                "unknown_key",
                f"signed by key {envelope.keyid[:16]}…, which is not a command key of this unit",
                keyid=envelope.keyid,
            )
        if not envelope.verify(public):
            raise CommandRefused(
                "bad_signature", "the signature does not verify", keyid=envelope.keyid
            )
        return self._check_payload(envelope, hashlib.sha256(raw).hexdigest(), now)

    def _check_payload(self, envelope: Signed, digest: str, now: datetime) -> Command:
        keyid = envelope.keyid
        try:
            body = json.loads(envelope.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CommandRefused("malformed", f"signed payload is not JSON ({exc})") from None
        known = {
            "cmd": body.get("cmd") if isinstance(body, dict) else None,
            "nonce": body.get("nonce") if isinstance(body, dict) else None,
            "keyid": keyid,
        }
        known = {k: v if isinstance(v, str) else None for k, v in known.items()}
        try:
            schemas.check("command", body)
        except schemas.SchemaError as exc:
            raise CommandRefused("invalid", f"command: {exc}", **known) from None
        if body["device"] != self.device:
            raise CommandRefused(
                "wrong_device",
                f"command is for {body['device']!r}, this is {self.device!r}",
                **known,
            )
        issued, expires = _utc(body["issued"]), _utc(body["expires"])
        if expires <= now:
            raise CommandRefused(
                "expired",
                f"command expired at {body['expires']}; this unit's clock reads {utc_text(now)}",
                **known,
            )
        if issued > now + CLOCK_SKEW or expires <= issued:
            raise CommandRefused(
                "not_yet_valid",
                f"command issued {body['issued']} (expires {body['expires']}); this unit's "
                f"clock reads {utc_text(now)}",
                **known,
            )
        if expires - now > MAX_LIFETIME + CLOCK_SKEW:
            raise CommandRefused(
                "too_long_lived",
                f"command is valid until {body['expires']}; at most {MAX_LIFETIME} ahead is accepted",
                **known,
            )
        if not self.nonces.first_use(body["nonce"], expires, keyid, now):
            raise CommandRefused("replayed", f"nonce {body['nonce']} was already used", **known)
        return Command(
            cmd=body["cmd"],
            args=body["args"],
            nonce=body["nonce"],
            issued=body["issued"],
            expires=body["expires"],
            keyid=keyid,
            issuer=body.get("issuer"),
            sha256=digest,
        )


# --- the centre's side -------------------------------------------------------------


def make_command(
    device: str,
    cmd: str,
    args: dict[str, Any] | None = None,
    *,
    lifetime: timedelta = timedelta(minutes=2),
    issuer: str | None = None,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """A command payload with a fresh random nonce, valid from now for ``lifetime``."""
    now = now or datetime.now(UTC)
    command: dict[str, Any] = {
        "v": 1,
        "device": device,
        "cmd": cmd,
        "args": args or {},
        "nonce": nonce or secrets.token_urlsafe(18),
        "issued": utc_text(now),
        "expires": utc_text(now + lifetime),
    }
    if issuer is not None:
        command["issuer"] = issuer
    return command


def sign_command(backend: KeyBackend, command: dict[str, Any]) -> bytes:
    """The MQTT payload for ``command``: canonical JSON of its signed DSSE envelope."""
    envelope = sign(backend, key_id(backend.public_key()), COMMAND_TYPE, canonical(command))
    return canonical(envelope.to_json())
