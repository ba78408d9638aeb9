"""Software key backend: a P-256 private key in a PEM file. DEVELOPMENT ONLY.

Owns: creating the file (mode 0600, never over an existing file) and signing with it.
Its ``protection`` is "software", which the ledger records so that verification can
flag every entry signed this way.
Must not: be used on a deployed unit; a key in a file can be copied.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from signer.keys.base import KeyAlreadyExists, KeyBackend, KeySpec, KeyUnavailable, require_p256
from signer.keys.files import write_new_private_file

log = logging.getLogger(__name__)

_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))


class SoftwareBackend(KeyBackend):
    """A P-256 key loaded from a PEM file (optionally passphrase-encrypted)."""

    protection = "software"

    def __init__(self, key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        self._key = key
        super().__init__(f"software key file {path} (DEVELOPMENT ONLY)", key.public_key())

    def _sign_rs(self, digest: bytes) -> tuple[int, int]:
        return decode_dss_signature(self._key.sign(digest, _PREHASHED))

    def _release(self) -> None:
        del self._key


def _path(spec: KeySpec) -> Path:
    assert spec.path is not None  # KeySpec guarantees it for kind "software"
    return Path(spec.path)


def open_key(spec: KeySpec) -> SoftwareBackend:
    path = _path(spec)
    where = f"software key file {path}"
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as e:
        raise KeyUnavailable(f"{where}: cannot read it ({e.strerror})") from e
    if mode & 0o077:
        raise KeyUnavailable(
            f"{where}: mode is {stat.filemode(mode)}; a key file must be private (chmod 600)"
        )
    pin = spec.resolve_pin()
    password = pin.encode("utf-8") if pin is not None else None
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as e:  # encrypted without passphrase, or passphrase for a plain key
        raise KeyUnavailable(f"{where}: {e}") from e
    except ValueError as e:
        raise KeyUnavailable(
            f"{where}: cannot load the key (wrong passphrase or not a PEM private key)"
        ) from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyUnavailable(f"{where}: the key is {type(key).__name__}, liuhen needs EC P-256")
    require_p256(key.public_key(), where)
    log.warning("%s: using a software key; signatures are marked DEVELOPMENT ONLY", where)
    return SoftwareBackend(key, path)


def create_key(spec: KeySpec) -> SoftwareBackend:
    """Write a new key to ``spec.path``; KeyAlreadyExists if anything is there."""
    path = _path(spec)
    if path.exists() or path.is_symlink():
        raise KeyAlreadyExists(f"software key file {path}: already exists; nothing was changed")
    pin = spec.resolve_pin()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(pin.encode("utf-8"))
        if pin is not None
        else serialization.NoEncryption()
    )
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    write_new_private_file(path, pem, what="software key file")
    return open_key(spec)
