"""PKCS#11 key backend (python-pkcs11): the portable way to a hardware key.

Owns: finding a token by label, logging in, generating a non-extractable EC P-256
key pair on the token, and signing SHA-256 digests with CKM_ECDSA.
Must not: use anything specific to one module. The same code has to work with
SoftHSM2 (tests), tpm2-pkcs11, cryptoauthlib (ATECC608), YubiHSM and Nitrokey, so it
uses only standard attributes and mechanisms and omits optional ones (CKA_ID,
CKA_DERIVE, ...) that some modules refuse. Setting module-specific environment
(SOFTHSM2_CONF, TPM2_PKCS11_STORE, ...) is the caller's job, before the first use.

One logged-in session is shared per token in a process (PKCS#11 login state belongs
to the application, not to a session, so a second C_Login fails), and every call on it
holds that token's lock: a PKCS#11 session is not guaranteed to be thread safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import threading
from typing import Any

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11e
from pkcs11.constants import DEFAULT
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from signer.keys.base import (
    KeyAlreadyExists,
    KeyBackend,
    KeySpec,
    KeyUnavailable,
    require_p256,
    split_raw_signature,
)

log = logging.getLogger(__name__)

P256_EC_PARAMS: bytes = encode_named_curve_parameters("secp256r1")

# What a login failure means, in words (python-pkcs11 exceptions carry no message).
_LOGIN_ERRORS: dict[type[Exception], str] = {
    p11e.PinIncorrect: "wrong PIN",
    p11e.PinLocked: "the PIN is locked (too many wrong PINs); unlock it with the SO PIN",
    p11e.PinExpired: "the PIN has expired; set a new one",
    p11e.PinLenRange: "the PIN has a length this token does not accept",
    p11e.PinInvalid: "the PIN contains characters this token does not accept",
    p11e.UserPinNotInitialized: "the token has no user PIN yet (initialise it first)",
    p11e.TokenNotPresent: "the token was removed",
    p11e.DeviceRemoved: "the token was removed",
    p11e.DeviceError: "the token reported a device error",
}


def _what(e: Exception) -> str:
    return _LOGIN_ERRORS.get(type(e)) or f"{type(e).__name__} {e}".strip()


# ---------------------------------------------------------------------------
# One logged-in session per token per process
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _TokenSession:
    key: tuple[str, int, bytes]
    where: str
    session: Any
    pin_digest: bytes
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    users: int = 0


_sessions: dict[tuple[str, int, bytes], _TokenSession] = {}
_sessions_lock = threading.Lock()


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


def _load_module(module: str) -> Any:
    if not os.path.isfile(module):
        raise KeyUnavailable(f"PKCS#11 module {module}: no such file")
    try:
        return pkcs11.lib(module)
    except (OSError, RuntimeError, p11e.PKCS11Error) as e:
        raise KeyUnavailable(f"PKCS#11 module {module}: cannot load it ({_what(e)})") from e


def _find_token(lib: Any, module: str, label: str) -> Any:
    try:
        return _token(lib, module, label)
    except KeyUnavailable:
        with _sessions_lock:  # re-initialising would end sessions other users hold
            if any(key[0] == os.path.realpath(module) for key in _sessions):
                raise
    # A token pulled out and put back (a USB key; SoftHSM's token directory moved away
    # and back): many modules only see it again after C_Finalize and C_Initialize.
    try:
        lib.reinitialize()
    except p11e.PKCS11Error as e:
        raise KeyUnavailable(
            f"PKCS#11 module {module}: cannot re-initialise it ({_what(e)})"
        ) from e
    return _token(lib, module, label)


def _token(lib: Any, module: str, label: str) -> Any:
    where = f"PKCS#11 module {module}"
    try:
        tokens = list(lib.get_tokens(token_label=label))
        if not tokens:
            present = sorted(
                t.label for t in lib.get_tokens() if t.flags & TokenFlag.TOKEN_INITIALIZED
            )
    except p11e.PKCS11Error as e:
        raise KeyUnavailable(f"{where}: cannot list tokens ({_what(e)})") from e
    if not tokens:
        listing = ", ".join(repr(p) for p in present) if present else "none"
        raise KeyUnavailable(f"{where}: no token labelled {label!r} (tokens present: {listing})")
    if len(tokens) > 1:
        raise KeyUnavailable(
            f"{where}: {len(tokens)} tokens are labelled {label!r}; relabel all but one"
        )
    return tokens[0]


def _acquire_session(spec: KeySpec) -> _TokenSession:
    assert spec.module is not None and spec.token_label is not None
    pin = spec.resolve_pin()
    assert pin is not None  # KeySpec guarantees pin or pin_file for pkcs11
    module = os.path.realpath(spec.module)
    lib = _load_module(spec.module)
    token = _find_token(lib, spec.module, spec.token_label)
    where = f"PKCS#11 module {spec.module} token {spec.token_label!r}"
    key = (module, token.slot.slot_id, token.serial)
    with _sessions_lock:
        shared = _sessions.get(key)
        if shared is not None:
            if not hmac.compare_digest(shared.pin_digest, _pin_digest(pin)):
                raise KeyUnavailable(
                    f"{where}: this process is already logged in to the token with a "
                    "different PIN; refusing the second PIN"
                )
        else:
            try:
                mechanisms = token.slot.get_mechanisms()
            except p11e.PKCS11Error as e:
                raise KeyUnavailable(f"{where}: cannot list mechanisms ({_what(e)})") from e
            if Mechanism.ECDSA not in mechanisms:
                raise KeyUnavailable(f"{where}: the token does not offer CKM_ECDSA")
            try:
                session = token.open(rw=True, user_pin=pin)
            except p11e.PKCS11Error as e:
                raise KeyUnavailable(f"{where}: login failed: {_what(e)}") from e
            shared = _TokenSession(key, where, session, _pin_digest(pin))
            _sessions[key] = shared
        shared.users += 1
        return shared


def _release_session(shared: _TokenSession) -> None:
    with _sessions_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        _sessions.pop(shared.key, None)
        with shared.lock:
            try:
                shared.session.close()
            except p11e.PKCS11Error as e:  # the token may be gone already
                log.warning("%s: closing the session failed: %s", shared.where, _what(e))


# ---------------------------------------------------------------------------
# Keys on the token
# ---------------------------------------------------------------------------


def _objects(session: Any, object_class: ObjectClass, label: str) -> list[Any]:
    return list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))


def _one(objects: list[Any], what: str, where: str) -> Any:
    if not objects:
        raise KeyUnavailable(f"{where}: no {what}")
    if len(objects) > 1:
        raise KeyUnavailable(f"{where}: {len(objects)} objects match {what}; remove duplicates")
    return objects[0]


def _public_key_from(pub: Any, where: str) -> ec.EllipticCurvePublicKey:
    if pub[Attribute.KEY_TYPE] != KeyType.EC:
        raise KeyUnavailable(f"{where}: the key is {pub[Attribute.KEY_TYPE].name}, not EC")
    if bytes(pub[Attribute.EC_PARAMS]) != P256_EC_PARAMS:
        raise KeyUnavailable(f"{where}: the EC key is not on the named curve P-256")
    point = bytes(pub[Attribute.EC_POINT])
    if len(point) == 65 and point[0] == 4:
        # Some modules return the bare point instead of the DER OCTET STRING (PKCS#11
        # v2.40 says DER); accept both.
        key: object = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    else:
        key = load_der_public_key(encode_ec_public_key(pub))
    return require_p256(key, where)


def _check_protected(priv: Any, where: str) -> None:
    """Refuse a private key that the token would let out."""
    for attribute, wanted in ((Attribute.SENSITIVE, True), (Attribute.EXTRACTABLE, False)):
        try:
            value = bool(priv[attribute])
        except (p11e.AttributeTypeInvalid, p11e.FunctionFailed):
            log.warning("%s: the token does not report CKA_%s", where, attribute.name)
            continue
        if value != wanted:
            raise KeyUnavailable(
                f"{where}: the private key has CKA_{attribute.name}={value}; liuhen only "
                "uses keys that cannot leave the token"
            )


def _always_authenticate(priv: Any) -> bool:
    try:
        return bool(priv[Attribute.ALWAYS_AUTHENTICATE])
    except p11e.PKCS11Error:
        return False


class Pkcs11Backend(KeyBackend):
    """An EC P-256 key pair on a PKCS#11 token, found by token label and key label."""

    protection = "pkcs11"

    def __init__(self, shared: _TokenSession, spec: KeySpec) -> None:
        self._shared = shared
        where = f"{shared.where} key {spec.key_label!r}"
        try:
            with shared.lock:
                session = shared.session
                priv = _one(
                    _objects(session, ObjectClass.PRIVATE_KEY, spec.key_label),
                    f"private key labelled {spec.key_label!r}",
                    shared.where,
                )
                if priv[Attribute.KEY_TYPE] != KeyType.EC:
                    raise KeyUnavailable(f"{where}: the private key is not an EC key")
                _check_protected(priv, where)
                pub = _one(
                    _objects(session, ObjectClass.PUBLIC_KEY, spec.key_label),
                    f"public key labelled {spec.key_label!r}",
                    shared.where,
                )
                public_key = _public_key_from(pub, where)
                self._pin = spec.resolve_pin() if _always_authenticate(priv) else None
        except p11e.PKCS11Error as e:
            _release_session(shared)
            raise KeyUnavailable(f"{where}: cannot read the key ({_what(e)})") from e
        except BaseException:
            _release_session(shared)
            raise
        self._priv = priv
        super().__init__(where, public_key)

    def _sign_rs(self, digest: bytes) -> tuple[int, int]:
        try:
            with self._shared.lock:
                raw = self._priv.sign(digest, mechanism=Mechanism.ECDSA, pin=self._pin)
        except p11e.PKCS11Error as e:
            raise KeyUnavailable(f"{self.description}: signing failed ({_what(e)})") from e
        return split_raw_signature(bytes(raw), self.description)

    def _release(self) -> None:
        _release_session(self._shared)

    def key_attributes(self) -> dict[str, bool | None]:
        """The token's own word on how the private key is protected (None: not reported)."""
        names = ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE", "LOCAL")
        result: dict[str, bool | None] = {}
        with self._shared.lock:
            for name in names:
                try:
                    result[name] = bool(self._priv[Attribute[name]])
                except p11e.PKCS11Error:
                    result[name] = None
        return result


def open_key(spec: KeySpec) -> Pkcs11Backend:
    return Pkcs11Backend(_acquire_session(spec), spec)


def create_key(spec: KeySpec) -> Pkcs11Backend:
    """Generate the key pair on the token; KeyAlreadyExists if the label is taken."""
    shared = _acquire_session(spec)
    where = f"{shared.where} key {spec.key_label!r}"
    try:
        with shared.lock:
            session = shared.session
            taken = _objects(session, ObjectClass.PRIVATE_KEY, spec.key_label) + _objects(
                session, ObjectClass.PUBLIC_KEY, spec.key_label
            )
            if taken:
                raise KeyAlreadyExists(
                    f"{where}: the token already holds {len(taken)} key object(s) with this "
                    "label; nothing was changed"
                )
            _generate(session, spec.key_label, where)
    except p11e.PKCS11Error as e:
        _release_session(shared)
        raise KeyUnavailable(f"{where}: cannot create the key ({_what(e)})") from e
    except BaseException:
        _release_session(shared)
        raise
    return Pkcs11Backend(shared, spec)  # takes over the session reference


def _generate(session: Any, label: str, where: str) -> None:
    # DEFAULT leaves an attribute out of the template: python-pkcs11 would otherwise
    # send CKA_ID="" and CKA_DERIVE/DECRYPT/... = False, which some modules refuse.
    omit = {
        a: DEFAULT
        for a in (
            Attribute.ID,
            Attribute.ENCRYPT,
            Attribute.WRAP,
            Attribute.DECRYPT,
            Attribute.UNWRAP,
            Attribute.DERIVE,
        )
    }
    public_template = {
        **omit,
        Attribute.EC_PARAMS: P256_EC_PARAMS,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
    }
    private_template = {
        **omit,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
    }
    try:
        _, priv = session.generate_keypair(
            KeyType.EC,
            label=label,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template=public_template,
            private_template=private_template,
        )
    except p11e.PKCS11Error as e:
        raise KeyUnavailable(f"{where}: key generation failed ({_what(e)})") from e
    try:
        _check_protected(priv, where)
    except KeyUnavailable:
        for obj in _objects(session, ObjectClass.PRIVATE_KEY, label) + _objects(
            session, ObjectClass.PUBLIC_KEY, label
        ):
            obj.destroy()
        raise
