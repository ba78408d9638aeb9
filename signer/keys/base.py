"""The key backend contract: errors, the key specification and the abstract backend.

Owns: what every backend promises (P-256, a DER ECDSA signature over a caller-made
SHA-256 digest, a self-check of every signature, thread-safe use, close), the
``KeySpec`` that names a key in configuration, and the errors.
Must not: talk to a token, a TPM or a file; that is the job of the backend modules.
"""

from __future__ import annotations

import abc
import dataclasses
import stat
import threading
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    encode_dss_signature,
)

Protection = Literal["pkcs11", "tpm2", "software"]
KINDS: tuple[Protection, ...] = ("pkcs11", "tpm2", "software")

DIGEST_SIZE = 32
DEFAULT_KEY_LABEL = "liuhen-device"
DEFAULT_TPM_HANDLE = 0x81010001
# TPM 2.0 persistent object handles (TPM2_HT_PERSISTENT).
TPM_PERSISTENT_FIRST = 0x81000000
TPM_PERSISTENT_LAST = 0x81FFFFFF

_ECDSA_PREHASHED_SHA256 = ec.ECDSA(Prehashed(hashes.SHA256()))


class KeyBackendError(Exception):
    """Base of every error raised by the key backends."""


class KeyUnavailable(KeyBackendError):
    """The key cannot be used: module, token, TPM or file missing, wrong PIN, no such key."""


class KeyAlreadyExists(KeyBackendError):
    """init_key was asked to create a key where one already exists; nothing was changed."""


class InvalidKeySpec(KeyBackendError, ValueError):
    """The KeySpec is inconsistent (missing or extra fields for its kind)."""


class SigningFailed(KeyBackendError):
    """The key produced a signature that does not verify against its own public key."""


# Fields each kind may set (besides kind and key_label, which always have a value).
_FIELDS_FOR_KIND: dict[str, frozenset[str]] = {
    "pkcs11": frozenset({"module", "token_label", "pin", "pin_file"}),
    "tpm2": frozenset({"pin", "pin_file", "tcti", "tpm_handle"}),
    "software": frozenset({"path", "pin", "pin_file"}),
}
_OPTIONAL_FIELDS = ("module", "token_label", "pin", "pin_file", "path", "tcti")


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """Where the device key lives.

    kind "pkcs11": ``module`` (path of the PKCS#11 .so), ``token_label``, the user PIN
    in ``pin`` or (better) ``pin_file``, and ``key_label``.
    kind "tpm2": optional ``tcti`` (e.g. "device:/dev/tpmrm0"; None = the TSS default),
    ``tpm_handle`` (persistent handle, default 0x81010001), optional key auth value
    in ``pin``/``pin_file``.
    kind "software": ``path`` of a PEM file; optional passphrase in ``pin``/``pin_file``.
    Development only.

    The PIN is kept out of ``repr`` so a logged spec never shows it.
    """

    kind: Protection
    module: str | None = None
    token_label: str | None = None
    pin: str | None = dataclasses.field(default=None, repr=False)
    pin_file: str | None = None
    key_label: str = DEFAULT_KEY_LABEL
    path: str | None = None
    tcti: str | None = None
    tpm_handle: int = DEFAULT_TPM_HANDLE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidKeySpec(
                f"KeySpec.kind is {self.kind!r}; expected one of {', '.join(KINDS)}"
            )
        allowed = _FIELDS_FOR_KIND[self.kind]
        extra = [f for f in _OPTIONAL_FIELDS if getattr(self, f) is not None and f not in allowed]
        if self.tpm_handle != DEFAULT_TPM_HANDLE and "tpm_handle" not in allowed:
            extra.append("tpm_handle")
        if extra:
            raise InvalidKeySpec(
                f"KeySpec(kind={self.kind!r}) does not use {', '.join(extra)}; remove it"
            )
        if self.pin is not None and self.pin_file is not None:
            raise InvalidKeySpec("KeySpec sets both pin and pin_file; set only one")
        if self.kind == "pkcs11":
            missing = [f for f in ("module", "token_label") if not getattr(self, f)]
            if self.pin is None and self.pin_file is None:
                missing.append("pin or pin_file")
            if missing:
                raise InvalidKeySpec(f"KeySpec(kind='pkcs11') needs {', '.join(missing)}")
        if self.kind == "software" and not self.path:
            raise InvalidKeySpec("KeySpec(kind='software') needs path")
        if not self.key_label:
            raise InvalidKeySpec("KeySpec.key_label is empty")
        if not TPM_PERSISTENT_FIRST <= self.tpm_handle <= TPM_PERSISTENT_LAST:
            raise InvalidKeySpec(
                f"KeySpec.tpm_handle 0x{self.tpm_handle:08x} is not a TPM persistent handle "
                f"(0x{TPM_PERSISTENT_FIRST:08x}..0x{TPM_PERSISTENT_LAST:08x})"
            )

    def resolve_pin(self) -> str | None:
        """The PIN from ``pin`` or from the first line of ``pin_file``.

        Raises KeyUnavailable if the file is missing, unreadable, empty or readable by
        every user on the machine.
        """
        if self.pin_file is None:
            return self.pin
        path = Path(self.pin_file)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise KeyUnavailable(f"PIN file {path}: cannot read it ({e.strerror})") from e
        if mode & stat.S_IROTH:
            raise KeyUnavailable(
                f"PIN file {path} is readable by every user (mode {stat.filemode(mode)}); "
                "chmod o-r it"
            )
        pin = text.splitlines()[0] if text else ""
        if not pin:
            raise KeyUnavailable(f"PIN file {path} is empty")
        return pin


def require_p256(public_key: object, where: str) -> ec.EllipticCurvePublicKey:
    """Return the key if it is an EC P-256 public key; else KeyUnavailable naming ``where``."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise KeyUnavailable(
            f"{where}: the key is {type(public_key).__name__}, liuhen needs EC P-256"
        )
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise KeyUnavailable(
            f"{where}: the key is on curve {public_key.curve.name}, liuhen needs P-256 (secp256r1)"
        )
    return public_key


def check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes | bytearray | memoryview):
        raise TypeError(f"digest must be bytes, not {type(digest).__name__}")
    if len(digest) != DIGEST_SIZE:
        raise ValueError(
            f"digest must be a {DIGEST_SIZE}-byte SHA-256 digest, got {len(digest)} bytes; "
            "hash the data first (hashlib.sha256(data).digest())"
        )


class KeyBackend(abc.ABC):
    """A P-256 signing key held by a token, a TPM or (development only) a file.

    The caller hashes; the backend signs the 32-byte SHA-256 digest and returns a DER
    ECDSA-Sig-Value. Every signature is verified against the public key before it is
    returned, so a faulty token can never hand out a signature that will not verify.
    Safe to share between threads: calls to the key are serialised.
    """

    protection: ClassVar[Protection]

    def __init__(self, description: str, public_key: ec.EllipticCurvePublicKey) -> None:
        self._description = description
        self._public_key = require_p256(public_key, description)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def description(self) -> str:
        """Where the key is: module/token/label, TPM handle, or file path."""
        return self._description

    @property
    def closed(self) -> bool:
        return self._closed

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign_digest(self, digest: bytes) -> bytes:
        """DER-encoded ECDSA signature over ``digest`` (a 32-byte SHA-256 digest)."""
        check_digest(digest)
        digest = bytes(digest)
        with self._lock:
            if self._closed:
                raise KeyUnavailable(f"{self._description}: the backend is closed")
            r, s = self._sign_rs(digest)
        signature = encode_dss_signature(r, s)
        try:
            self._public_key.verify(signature, digest, _ECDSA_PREHASHED_SHA256)
        except InvalidSignature as e:
            raise SigningFailed(
                f"{self._description}: the key returned a signature that does not verify "
                "against its own public key; the signature was discarded"
            ) from e
        return signature

    def close(self) -> None:
        """Release the session/context/file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.protection} {self._description} ({state})>"

    @abc.abstractmethod
    def _sign_rs(self, digest: bytes) -> tuple[int, int]:
        """Sign the digest in the key store; return the ECDSA (r, s). Called under the lock."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free what the backend holds. Called once, under the lock."""


def split_raw_signature(raw: bytes, where: str) -> tuple[int, int]:
    """(r, s) from a raw r||s P-256 signature (PKCS#11 CKM_ECDSA output)."""
    if len(raw) != 2 * DIGEST_SIZE:
        raise SigningFailed(
            f"{where}: expected a 64-byte r||s ECDSA signature, got {len(raw)} bytes"
        )
    return int.from_bytes(raw[:DIGEST_SIZE], "big"), int.from_bytes(raw[DIGEST_SIZE:], "big")
