"""Upload receipts: what the collector hands a unit when it has accepted a segment.

Owns: the receipt document (version 1) and, when the collector has a receipt key, its
DSSE signature (the same envelope code as ledger entries and commands, with its own
payload type so no receipt signature can pass for anything else), and checking one.
Must not: decide whether an upload is acceptable.

    {"v":1,"type":"upload-receipt","collector":…,"device":…,"segment":…,"sha256":…,
     "bytes":…,"parts":…,"entry_seq":…,"entry_hash":…,"stored_at":…}
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from evidence.envelope import Signed, canonical, sign
from evidence.ledger import key_id
from signer.keys import KeyBackend

RECEIPT_TYPE = "application/vnd.liuhen.upload-receipt.v1+json"


def make_receipt(collector: str, segment: dict[str, Any], entry_hash: str | None, stored_at: str) -> dict[str, Any]:  # fmt: skip
    return {
        "v": 1,
        "type": "upload-receipt",
        "collector": collector,
        "device": segment["device"],
        "segment": segment["name"],
        "sha256": segment["sha256"],
        "bytes": segment["bytes"],
        "parts": len(json.loads(segment["parts"])),
        "entry_seq": segment["entry_seq"],
        "entry_hash": entry_hash,
        "stored_at": stored_at,
    }


def sign_receipt(backend: KeyBackend, receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt as a DSSE envelope (JSON object)."""
    kid = key_id(backend.public_key())
    return sign(backend, kid, RECEIPT_TYPE, canonical(receipt)).to_json()


def check_receipt(envelope: Any, public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The receipt a signed envelope carries; ValueError if it is not a good one."""
    signed = Signed.from_json(envelope)
    if signed.payload_type != RECEIPT_TYPE:
        raise ValueError(f"not an upload receipt (payloadType {signed.payload_type!r})")
    if signed.keyid != key_id(public_key) or not signed.verify(public_key):
        raise ValueError("upload receipt: signature does not verify with the collector's key")
    receipt: dict[str, Any] = json.loads(signed.payload)
    return receipt
