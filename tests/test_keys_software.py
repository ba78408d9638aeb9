"""Software key backend (development only): a real PEM file, real ECDSA."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signer.keys import KeyAlreadyExists, KeySpec, KeyUnavailable, init_key, open_backend

DIGEST = hashlib.sha256(b"segment 0001").digest()
PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))


def test_init_sign_verify(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    with init_key(KeySpec(kind="software", path=str(path))) as key:
        assert key.protection == "software"
        assert str(path) in key.description and "DEVELOPMENT ONLY" in key.description
        signature = key.sign_digest(DIGEST)
        key.public_key().verify(signature, DIGEST, PREHASHED)
        # The same digest can be checked the way a third party would: over the data.
        key.public_key().verify(signature, b"segment 0001", ec.ECDSA(hashes.SHA256()))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_reopen_gives_the_same_key(tmp_path: Path) -> None:
    spec = KeySpec(kind="software", path=str(tmp_path / "k.pem"))
    with init_key(spec) as first:
        public = first.public_key()
    with open_backend(spec) as again:
        assert again.public_key() == public


def test_init_over_an_existing_key_changes_nothing(tmp_path: Path) -> None:
    spec = KeySpec(kind="software", path=str(tmp_path / "k.pem"))
    init_key(spec).close()
    before = (tmp_path / "k.pem").read_bytes()
    with pytest.raises(KeyAlreadyExists, match="already exists"):
        init_key(spec)
    assert (tmp_path / "k.pem").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temp file left


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    with pytest.raises(KeyUnavailable, match=f"software key file {missing}: cannot read it"):
        open_backend(KeySpec(kind="software", path=str(missing)))


def test_group_or_world_readable_key_is_refused(tmp_path: Path) -> None:
    spec = KeySpec(kind="software", path=str(tmp_path / "k.pem"))
    init_key(spec).close()
    (tmp_path / "k.pem").chmod(0o640)
    with pytest.raises(KeyUnavailable, match=r"mode is -rw-r-----.*chmod 600"):
        open_backend(spec)


def test_passphrase_protects_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "k.pem")
    init_key(KeySpec(kind="software", path=path, pin="correct horse")).close()
    assert b"ENCRYPTED" in Path(path).read_bytes()
    with pytest.raises(KeyUnavailable, match="wrong passphrase"):
        open_backend(KeySpec(kind="software", path=path, pin="wrong"))
    with pytest.raises(KeyUnavailable, match="encrypted"):
        open_backend(KeySpec(kind="software", path=path))
    with open_backend(KeySpec(kind="software", path=path, pin="correct horse")) as key:
        key.public_key().verify(key.sign_digest(DIGEST), DIGEST, PREHASHED)


def test_not_a_p256_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path = tmp_path / "p384.pem"
    p384 = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        p384.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyUnavailable, match="secp384r1, liuhen needs P-256"):
        open_backend(KeySpec(kind="software", path=str(path)))


def test_digest_must_be_32_bytes_and_closed_key_refuses(tmp_path: Path) -> None:
    key = init_key(KeySpec(kind="software", path=str(tmp_path / "k.pem")))
    with pytest.raises(ValueError, match="32-byte SHA-256 digest, got 12 bytes"):
        key.sign_digest(b"not a digest")
    key.close()
    key.close()  # idempotent
    with pytest.raises(KeyUnavailable, match="closed"):
        key.sign_digest(DIGEST)
