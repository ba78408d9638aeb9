"""TPM 2.0 key backend through tpm2-pytss ESAPI (tested against swtpm).

Owns: creating an ECC P-256 ECDSA-SHA256 signing key as a child of a transient
owner-hierarchy primary, persisting it at a persistent handle (default 0x81010001) so
it survives restarts, and signing SHA-256 digests with it. The key is created with
fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign: generated inside the TPM
and never duplicable out of it. Transient objects are flushed straight away (a TPM
has only about three object slots).
Must not: import tpm2_pytss at module import time (the package is optional: pip
install liuhen[tpm]); touch any hierarchy other than owner; evict or replace an
existing persistent object.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.serialization import load_der_public_key

from signer.keys.base import KeyAlreadyExists, KeyBackend, KeySpec, KeyUnavailable, require_p256

if TYPE_CHECKING:
    from types import ModuleType

T = TypeVar("T")

_pytss: ModuleType | None = None
_pytss_lock = threading.Lock()


def _tss() -> ModuleType:
    """tpm2_pytss, imported on first use."""
    global _pytss
    with _pytss_lock:
        if _pytss is None:
            try:
                import tpm2_pytss
            except ImportError as e:
                raise KeyUnavailable(
                    "TPM 2.0 backend: the tpm2-pytss package is not installed "
                    "(pip install 'liuhen[tpm]')"
                ) from e
            _pytss = tpm2_pytss
        return _pytss


def _where(spec: KeySpec) -> str:
    tcti = spec.tcti or "the default TCTI"
    return f"TPM 2.0 via {tcti} key at persistent handle 0x{spec.tpm_handle:08x}"


def _rc_words(error: Any) -> str:
    """Plain words for the TPM response codes a user can act on."""
    t = _tss()
    code = getattr(error, "error", None)
    words = {
        t.TPM2_RC.AUTH_FAIL: "wrong PIN (key auth value)",
        t.TPM2_RC.BAD_AUTH: "wrong PIN (key auth value)",
        t.TPM2_RC.LOCKOUT: "the TPM is in dictionary-attack lockout; wait or reset lockout",
        t.TPM2_RC.HANDLE: "no object at that handle",
        t.TPM2_RC.NV_DEFINED: "the handle is already in use",
        t.TPM2_RC.NV_SPACE: "the TPM has no room left for persistent objects",
    }
    return words.get(code, str(error))


def _tpm_call(where: str, action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except _tss().TSS2_Exception as e:
        raise KeyUnavailable(f"{where}: {action} failed: {_rc_words(e)}") from e


def _connect(spec: KeySpec) -> Any:
    t = _tss()
    return _tpm_call(_where(spec), "connecting to the TPM", lambda: t.ESAPI(spec.tcti))


def _persistent_exists(esys: Any, handle: int) -> bool:
    t = _tss()
    try:
        tr = esys.tr_from_tpmpublic(handle)
    except t.TSS2_Exception as e:
        if e.error == t.TPM2_RC.HANDLE:
            return False
        raise
    esys.tr_close(tr)
    return True


def _signing_template() -> Any:
    t = _tss()
    attrs = (
        t.TPMA_OBJECT.SIGN_ENCRYPT
        | t.TPMA_OBJECT.FIXEDTPM
        | t.TPMA_OBJECT.FIXEDPARENT
        | t.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | t.TPMA_OBJECT.USERWITHAUTH
    )
    return t.TPM2B_PUBLIC(
        publicArea=t.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attrs)
    )


def _public_key_of(public_area: Any, where: str) -> Any:
    """Check the TPM object is a fixed, unrestricted P-256 ECDSA-SHA256 signing key."""
    t = _tss()
    attrs = public_area.objectAttributes
    ecc = public_area.parameters.eccDetail
    problems = []
    if public_area.type != t.TPM2_ALG.ECC or ecc.curveID != t.TPM2_ECC.NIST_P256:
        problems.append("not an ECC P-256 key")
    if not attrs & t.TPMA_OBJECT.SIGN_ENCRYPT or attrs & t.TPMA_OBJECT.RESTRICTED:
        problems.append("not an unrestricted signing key")
    if not attrs & t.TPMA_OBJECT.FIXEDTPM:
        problems.append("not fixedtpm (it could be duplicated out of the TPM)")
    if ecc.scheme.scheme != t.TPM2_ALG.ECDSA or ecc.scheme.details.anySig.hashAlg != (
        t.TPM2_ALG.SHA256
    ):
        problems.append("its scheme is not ECDSA-SHA256")
    if problems:
        raise KeyUnavailable(f"{where}: the object there is {'; '.join(problems)}")
    return require_p256(load_der_public_key(public_area.to_der()), where)


class Tpm2Backend(KeyBackend):
    """A persistent P-256 signing key inside a TPM 2.0."""

    protection = "tpm2"

    def __init__(self, esys: Any, spec: KeySpec) -> None:
        where = _where(spec)
        self._esys = esys
        try:
            t = _tss()
            self._handle = _tpm_call(
                where, "opening the key", lambda: esys.tr_from_tpmpublic(spec.tpm_handle)
            )
            public, _, _ = _tpm_call(
                where, "reading the key", lambda: esys.read_public(self._handle)
            )
            public_key = _public_key_of(public.publicArea, where)
            pin = spec.resolve_pin()
            if pin is not None:
                esys.tr_set_auth(self._handle, pin.encode("utf-8"))
            self._scheme = t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL)  # the key's own scheme
        except BaseException:
            esys.close()
            raise
        super().__init__(where, public_key)

    def _sign_rs(self, digest: bytes) -> tuple[int, int]:
        t = _tss()
        signature = _tpm_call(
            self.description,
            "signing",
            lambda: self._esys.sign(self._handle, t.TPM2B_DIGEST(digest), self._scheme),
        )
        ecdsa = signature.signature.ecdsa
        return (
            int.from_bytes(bytes(ecdsa.signatureR), "big"),
            int.from_bytes(bytes(ecdsa.signatureS), "big"),
        )

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._esys.tr_close(self._handle)
        self._esys.close()


def open_key(spec: KeySpec) -> Tpm2Backend:
    return Tpm2Backend(_connect(spec), spec)


def create_key(spec: KeySpec) -> Tpm2Backend:
    """Create and persist the key; KeyAlreadyExists if the handle is taken."""
    where = _where(spec)
    esys = _connect(spec)
    try:
        t = _tss()
        if _tpm_call(
            where, "probing the handle", lambda: _persistent_exists(esys, spec.tpm_handle)
        ):
            raise KeyAlreadyExists(
                f"{where}: a persistent object already exists there; nothing was changed"
            )
        pin = spec.resolve_pin()
        sensitive = t.TPM2B_SENSITIVE_CREATE(
            t.TPMS_SENSITIVE_CREATE(userAuth=t.TPM2B_AUTH(pin.encode("utf-8") if pin else b""))
        )
        primary, _, _, _, _ = _tpm_call(
            where,
            "creating the storage primary",
            lambda: esys.create_primary(None, "ecc256:aes128cfb"),
        )
        try:
            private, public, _, _, _ = _tpm_call(
                where,
                "creating the signing key",
                lambda: esys.create(primary, sensitive, _signing_template()),
            )
            child = _tpm_call(where, "loading the key", lambda: esys.load(primary, private, public))
            try:
                _persist(esys, child, spec.tpm_handle, where)
            finally:
                esys.flush_context(child)
        finally:
            esys.flush_context(primary)
    except BaseException:
        esys.close()
        raise
    return Tpm2Backend(esys, spec)


def _persist(esys: Any, child: Any, handle: int, where: str) -> None:
    t = _tss()
    try:
        persistent = esys.evict_control(t.ESYS_TR.OWNER, child, handle)
    except t.TSS2_Exception as e:
        if e.error == t.TPM2_RC.NV_DEFINED:
            raise KeyAlreadyExists(
                f"{where}: a persistent object appeared there meanwhile; nothing was changed"
            ) from e
        raise KeyUnavailable(
            f"{where}: persisting the key (EvictControl) failed: {_rc_words(e)}"
        ) from e
    esys.tr_close(persistent)
