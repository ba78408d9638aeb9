"""Key backends: the device signing key, behind one interface.

Owns: choosing the backend for a ``KeySpec`` (``open_backend``, ``init_key``) and the
public names of the key layer. A backend signs 32-byte SHA-256 digests with an EC P-256
key and returns DER ECDSA signatures; ``protection`` says what holds the key:
"pkcs11" (a token: SoftHSM2 in tests, tpm2-pkcs11, ATECC608, YubiHSM, Nitrokey),
"tpm2" (a TPM 2.0 directly) or "software" (a PEM file; development only).
Must not: hash the data (the caller does), or import optional libraries (tpm2-pytss)
before a backend that needs them is asked for.

    spec = KeySpec(kind="pkcs11", module="/usr/lib/softhsm/libsofthsm2.so",
                   token_label="liuhen", pin_file="/etc/liuhen/pin")
    with open_backend(spec) as key:
        der = key.sign_digest(hashlib.sha256(data).digest())
"""

from __future__ import annotations

import hashlib
import importlib
import os
from typing import Protocol, cast

from signer.keys.adapter import BackendPrivateKey
from signer.keys.base import (
    DEFAULT_KEY_LABEL,
    DEFAULT_TPM_HANDLE,
    InvalidKeySpec,
    KeyAlreadyExists,
    KeyBackend,
    KeyBackendError,
    KeySpec,
    KeyUnavailable,
    Protection,
    SigningFailed,
)

__all__ = [
    "DEFAULT_KEY_LABEL",
    "DEFAULT_TPM_HANDLE",
    "BackendPrivateKey",
    "InvalidKeySpec",
    "KeyAlreadyExists",
    "KeyBackend",
    "KeyBackendError",
    "KeySpec",
    "KeyUnavailable",
    "Protection",
    "SigningFailed",
    "init_key",
    "open_backend",
]


class _BackendModule(Protocol):
    def open_key(self, spec: KeySpec) -> KeyBackend: ...
    def create_key(self, spec: KeySpec) -> KeyBackend: ...


_MODULES = {
    "pkcs11": "signer.keys.pkcs11",
    "tpm2": "signer.keys.tpm2",
    "software": "signer.keys.software",
}


def _module(spec: KeySpec) -> _BackendModule:
    if not isinstance(spec, KeySpec):
        raise TypeError(f"expected a KeySpec, got {type(spec).__name__}")
    try:
        module = importlib.import_module(_MODULES[spec.kind])
    except ImportError as e:
        raise KeyUnavailable(
            f"{spec.kind} key backend: a library it needs is not installed ({e.name or e})"
        ) from e
    return cast(_BackendModule, module)


def _self_tested(backend: KeyBackend) -> KeyBackend:
    """Sign one throw-away digest, so a key that cannot sign (wrong TPM auth value, a
    token that refuses the mechanism) fails when opened, not at the first segment."""
    try:
        backend.sign_digest(hashlib.sha256(b"liuhen key self-test" + os.urandom(16)).digest())
    except BaseException:
        backend.close()
        raise
    return backend


def open_backend(spec: KeySpec) -> KeyBackend:
    """Open the existing key described by ``spec``, and check that it signs.

    Raises KeyUnavailable (module/token/TPM/file missing, wrong PIN, no such key, key
    not P-256 or extractable) with a message naming the backend, where it looked and
    what failed.
    """
    return _self_tested(_module(spec).open_key(spec))


def init_key(spec: KeySpec) -> KeyBackend:
    """Create the key described by ``spec`` and return it opened and checked.

    Raises KeyAlreadyExists if a key is already there (nothing is changed), and
    KeyUnavailable as ``open_backend`` does.
    """
    return _self_tested(_module(spec).create_key(spec))
