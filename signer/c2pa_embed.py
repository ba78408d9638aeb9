"""C2PA Content Credentials for one media file, signed through a KeyBackend (c2pa-python).

Owns: embedding a manifest into an MP4 / fragmented MP4 segment with the device key
(``Signer.from_callback``: c2pa hands over the COSE Sig_structure, we SHA-256 it and
the backend signs the digest) and reading back the validation state.
Must not: decide what a segment's claim says (the sealing code does), or stand in for
the ledger: C2PA covers one file, so dropped or reordered segments are the ledger's job.
MPEG-TS is not supported by c2pa (NotSupported); mux segments as MP4 without an
``mfra`` index (c2pa rewrites its offsets wrongly) and without the fixed-size Merkle
option (it breaks validation of fragmented MP4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import c2pa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from evidence.certs import load_chain_pem
from signer.keys import KeyBackend

MIME_BY_SUFFIX = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".mov": "video/quicktime",
}
_COORDINATE_SIZE = 32  # P-256


class C2paEmbedError(Exception):
    """Embedding or reading Content Credentials failed; the message says why."""


class ManifestMissing(C2paEmbedError):
    """The file carries no C2PA manifest at all."""


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """``state`` is "Trusted", "Valid" or "Invalid"; ``failures`` lists c2pa status codes."""

    state: str
    failures: tuple[str, ...]


def _mime(path: Path) -> str:
    try:
        return MIME_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise C2paEmbedError(
            f"{path}: C2PA embedding here supports {', '.join(sorted(MIME_BY_SUFFIX))} files, "
            f"not {path.suffix or 'files without a suffix'} (c2pa refuses MPEG-TS)"
        ) from None


def _check_chain(chain_pem: str, backend: KeyBackend) -> None:
    try:
        chain = load_chain_pem(chain_pem)
    except ValueError as e:
        raise C2paEmbedError(f"certificate chain: not PEM certificates ({e})") from e
    if not chain:
        raise C2paEmbedError("certificate chain: empty; give the device certificate first")
    if chain[0].issuer == chain[0].subject:
        raise C2paEmbedError(
            "certificate chain: the device certificate is self-signed; C2PA validators "
            "cannot anchor it, use a CA-issued certificate (identity.issue_device_cert)"
        )
    if chain[0].public_key() != backend.public_key():
        raise C2paEmbedError(
            f"certificate chain: the first certificate ({chain[0].subject.rfc4514_string()}) "
            f"is not for the key in {backend.description}"
        )


def _has_actions(claim: Mapping[str, Any]) -> bool:
    assertions = claim.get("assertions") or []
    return any(
        isinstance(a, Mapping) and str(a.get("label", "")).startswith("c2pa.actions")
        for a in assertions
    )


class _CallbackSigner:
    """The c2pa callback: SHA-256 the Sig_structure, sign through the backend, raw r||s.

    c2pa swallows exceptions raised in the callback; the first one is kept here so the
    caller gets the real reason (wrong PIN, token removed) instead of a generic error.
    """

    def __init__(self, backend: KeyBackend) -> None:
        self.backend = backend
        self.error: BaseException | None = None

    def __call__(self, data: bytes) -> bytes:
        try:
            der = self.backend.sign_digest(hashlib.sha256(data).digest())
            r, s = decode_dss_signature(der)
            return r.to_bytes(_COORDINATE_SIZE, "big") + s.to_bytes(_COORDINATE_SIZE, "big")
        except BaseException as e:
            if self.error is None:
                self.error = e
            raise


def embed_manifest(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    backend: KeyBackend,
    chain_pem: str,
    claim: Mapping[str, Any],
) -> None:
    """Write ``dst_path``: ``src_path`` with a C2PA manifest signed by ``backend``.

    ``chain_pem`` is the device certificate followed by its intermediate(s), not the
    root. ``claim`` is the c2pa manifest definition (claim_generator_info, title,
    assertions, ...); if it has no c2pa.actions assertion, a "created" action with
    digital-capture source type is added, as C2PA requires. ``dst_path`` must not
    exist; it appears complete (fsynced, then linked into place) or not at all.
    """
    src = Path(src_path)
    dst = Path(dst_path)
    mime = _mime(src)
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists; refusing to overwrite")
    _check_chain(chain_pem, backend)
    callback = _CallbackSigner(backend)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.c2pa-tmp")
    try:
        with (
            c2pa.Signer.from_callback(
                callback, c2pa.C2paSigningAlg.ES256, chain_pem, None
            ) as signer,
            c2pa.Builder(dict(claim)) as builder,
            open(src, "rb") as source,
            open(tmp, "x+b") as out,
        ):
            if not _has_actions(claim):
                builder.set_intent(
                    c2pa.C2paBuilderIntent.CREATE, c2pa.C2paDigitalSourceType.DIGITAL_CAPTURE
                )
            builder.sign(signer, mime, source, out)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, dst)
    except c2pa.C2paError as e:
        if callback.error is not None:
            raise callback.error from e
        raise C2paEmbedError(f"{src}: C2PA signing failed: {e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def validation_report(
    path: str | os.PathLike[str], anchors_pem: str | None = None
) -> ValidationReport:
    """Validate the manifest in ``path``; ``anchors_pem`` are the trusted roots (PEM).

    "Trusted": signature, hashes and a chain to an anchor all good. "Valid": signature
    and hashes good, signer not anchored. "Invalid": something fails (listed in
    ``failures``, e.g. assertion.bmffHash.mismatch). ManifestMissing if there is none.
    """
    p = Path(path)
    mime = _mime(p)
    try:
        with (
            _reader_context(anchors_pem) as context,
            open(p, "rb") as stream,
            c2pa.Reader(mime, stream, context=context) as reader,
        ):
            state = reader.get_validation_state()
            status = reader.json()
    except c2pa.C2paError.ManifestNotFound as e:
        raise ManifestMissing(f"{p}: no C2PA manifest") from e
    except c2pa.C2paError as e:
        raise C2paEmbedError(f"{p}: cannot read the C2PA manifest: {e}") from e
    failures = tuple(
        str(s.get("code")) for s in _json_list(status, "validation_status") if s.get("code")
    )
    return ValidationReport(state or "Invalid", failures)


def read_validation(path: str | os.PathLike[str], anchors_pem: str | None = None) -> str:
    """The validation state of ``path``: "Trusted", "Valid" or "Invalid"."""
    return validation_report(path, anchors_pem).state


def _reader_context(anchors_pem: str | None) -> c2pa.Context:
    if anchors_pem:
        return c2pa.Context.from_dict({"trust": {"user_anchors": anchors_pem}})
    return c2pa.Context()


def _json_list(document: str, key: str) -> list[dict[str, Any]]:
    value = json.loads(document).get(key) or []
    return [v for v in value if isinstance(v, dict)]


def segment_claim(title: str, segment: dict[str, Any]) -> dict[str, Any]:
    """The C2PA manifest definition for one segment: its liuhen facts as one assertion
    (the unit's, at sealing; or the centre's, on decrypting an encrypted segment)."""
    return {
        "claim_generator_info": [{"name": "liuhen", "version": version("liuhen")}],
        "title": title,
        "assertions": [{"label": "org.liuhen.segment", "data": segment}],
    }
