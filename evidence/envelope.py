"""Signed envelopes: canonical JSON (RFC 8785) inside DSSE, signed through a key backend.

Owns: turning a JSON-able object into canonical bytes (by the ``rfc8785`` library, never
by hand), DSSE's pre-authentication encoding (PAE) that binds the payload type to the
signature, and signing/verifying one envelope. Must not: know what an entry means.

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where LEN is the byte length in ASCII decimal and SP one space. The signature is ECDSA
P-256 over SHA-256(PAE), DER-encoded. (DSSE: github.com/secure-systems-lab/dsse.)
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


def canonical(obj: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes of ``obj``."""
    return bytes(rfc8785.dumps(obj))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class Signed:
    payload_type: str
    payload: bytes
    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": b64(self.payload),
            "signatures": [{"keyid": self.keyid, "sig": b64(self.sig)}],
        }

    @classmethod
    def from_json(cls, obj: Any) -> Signed:
        """Parse a DSSE envelope; ValueError says which field is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("envelope is not a JSON object")
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
            raise ValueError("envelope must carry exactly one signature")
        fields = (
            obj.get("payloadType"),
            obj.get("payload"),
            sigs[0].get("keyid"),
            sigs[0].get("sig"),
        )
        if not all(isinstance(f, str) for f in fields):
            raise ValueError("envelope fields payloadType, payload, keyid and sig must be strings")
        ptype, payload, keyid, sig = fields
        try:
            return cls(str(ptype), unb64(str(payload)), str(keyid), unb64(str(sig)))
        except ValueError as exc:
            raise ValueError(f"envelope is not valid base64: {exc}") from None

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> bool:
        try:
            public_key.verify(
                self.sig, pae(self.payload_type, self.payload), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            return False
        return True


class DigestSigner(Protocol):
    """What signs an envelope: a key that signs a SHA-256 digest with ECDSA P-256 and
    returns the DER signature (signer.keys' backends are these; so is a test key)."""

    @property
    def protection(self) -> str: ...

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_digest(self, digest: bytes) -> bytes: ...


def sign(backend: DigestSigner, keyid: str, payload_type: str, payload: bytes) -> Signed:
    digest = hashlib.sha256(pae(payload_type, payload)).digest()
    return Signed(payload_type, payload, keyid, backend.sign_digest(digest))
