"""PKCS#11 key backend against a real SoftHSM2 token."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from keyfixtures import (  # noqa: F401  (fixtures)
    SoftHsm,
    key_label_fixture,
    softhsm_fixture,
)
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from signer.keys import KeyAlreadyExists, KeyUnavailable, init_key, open_backend
from signer.keys.pkcs11 import Pkcs11Backend

DIGEST = hashlib.sha256(b"segment 0001").digest()
PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
REPO = Path(__file__).resolve().parent.parent


def _pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_init_sign_verify(softhsm: SoftHsm, key_label: str) -> None:
    with init_key(softhsm.spec(key_label)) as key:
        assert key.protection == "pkcs11"
        assert "'liuhen'" in key.description and repr(key_label) in key.description
        signature = key.sign_digest(DIGEST)
        key.public_key().verify(signature, DIGEST, PREHASHED)
        key.public_key().verify(signature, b"segment 0001", ec.ECDSA(hashes.SHA256()))


def test_reopen_in_a_new_backend_object(softhsm: SoftHsm, key_label: str) -> None:
    with init_key(softhsm.spec(key_label)) as first:
        public = first.public_key()
        # A second backend on the same token while the first is open shares its login.
        with open_backend(softhsm.spec(key_label)) as second:
            assert second.public_key() == public
            public.verify(second.sign_digest(DIGEST), DIGEST, PREHASHED)
        public.verify(first.sign_digest(DIGEST), DIGEST, PREHASHED)
    with open_backend(softhsm.spec(key_label)) as again:
        assert again.public_key() == public


def test_reopen_in_a_fresh_process(softhsm: SoftHsm, key_label: str) -> None:
    with init_key(softhsm.spec(key_label)) as key:
        expected = _pem(key.public_key())
    script = textwrap.dedent(
        f"""
        import hashlib, sys
        from cryptography.hazmat.primitives import serialization
        from signer.keys import KeySpec, open_backend
        spec = KeySpec(kind="pkcs11", module={softhsm.module!r},
                       token_label={softhsm.token_label!r}, pin={softhsm.user_pin!r},
                       key_label={key_label!r})
        with open_backend(spec) as key:
            key.sign_digest(hashlib.sha256(b"x").digest())
            sys.stdout.buffer.write(key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=softhsm.env(),
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == expected


def test_init_over_an_existing_key(softhsm: SoftHsm, key_label: str) -> None:
    with init_key(softhsm.spec(key_label)) as key:
        public = key.public_key()
    with pytest.raises(KeyAlreadyExists, match=f"key {key_label!r}: the token already holds 2"):
        init_key(softhsm.spec(key_label))
    with open_backend(softhsm.spec(key_label)) as key:
        assert key.public_key() == public


def test_wrong_pin(softhsm: SoftHsm, key_label: str) -> None:
    init_key(softhsm.spec(key_label)).close()
    with pytest.raises(KeyUnavailable, match="token 'liuhen': login failed: wrong PIN"):
        open_backend(softhsm.spec(key_label, pin="0000"))


def test_second_pin_while_logged_in_is_refused(softhsm: SoftHsm, key_label: str) -> None:
    with (
        init_key(softhsm.spec(key_label)),
        pytest.raises(KeyUnavailable, match=r"already logged in .* different PIN"),
    ):
        open_backend(softhsm.spec(key_label, pin="0000"))


def test_pin_from_file(softhsm: SoftHsm, key_label: str, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.user_pin + "\n")
    pin_file.chmod(0o600)
    with init_key(softhsm.spec(key_label, pin_file=str(pin_file))) as key:
        key.public_key().verify(key.sign_digest(DIGEST), DIGEST, PREHASHED)


def test_missing_token_lists_the_tokens_present(softhsm: SoftHsm, key_label: str) -> None:
    with pytest.raises(
        KeyUnavailable,
        match=r"libsofthsm2.so: no token labelled 'no-such-token' \(tokens present: 'liuhen'\)",
    ):
        open_backend(softhsm.spec(key_label, token_label="no-such-token"))


def test_missing_key_is_named(softhsm: SoftHsm) -> None:
    with pytest.raises(
        KeyUnavailable, match="token 'liuhen': no private key labelled 'never-created'"
    ):
        open_backend(softhsm.spec("never-created"))


def test_missing_module_is_named(softhsm: SoftHsm, key_label: str) -> None:
    with pytest.raises(KeyUnavailable, match=r"PKCS#11 module /nonexistent/libp11\.so: no such"):
        open_backend(softhsm.spec(key_label, module="/nonexistent/libp11.so"))


def test_private_key_cannot_leave_the_token(softhsm: SoftHsm, key_label: str) -> None:
    with init_key(softhsm.spec(key_label)) as key:
        assert isinstance(key, Pkcs11Backend)
        assert key.key_attributes() == {
            "SENSITIVE": True,
            "EXTRACTABLE": False,
            "ALWAYS_SENSITIVE": True,
            "NEVER_EXTRACTABLE": True,
            "LOCAL": True,
        }
    # Ask the token directly, as anyone with the PIN could.
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    with token.open(user_pin=softhsm.user_pin) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=key_label)
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[Attribute.VALUE]


def test_an_extractable_key_is_refused(softhsm: SoftHsm, key_label: str) -> None:
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    with token.open(rw=True, user_pin=softhsm.user_pin) as session:
        session.generate_keypair(
            KeyType.EC,
            store=True,
            label=key_label,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    with pytest.raises(KeyUnavailable, match="CKA_SENSITIVE=False; liuhen only uses keys that"):
        open_backend(softhsm.spec(key_label))


def test_concurrent_signing_from_threads(softhsm: SoftHsm, key_label: str) -> None:
    with init_key(softhsm.spec(key_label)) as key:
        errors: list[BaseException] = []
        signatures: list[tuple[bytes, bytes]] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            try:
                for i in range(150):
                    digest = hashlib.sha256(f"{n}-{i}".encode()).digest()
                    sig = key.sign_digest(digest)
                    with lock:
                        signatures.append((digest, sig))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(signatures) == 600
        for digest, sig in signatures:
            key.public_key().verify(sig, digest, PREHASHED)
