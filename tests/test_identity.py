"""Device identity: certificates and CSRs signed through real key stores, checked by
cryptography's X.509 verifier and by a real C2PA round trip (c2pa-python)."""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import VerificationError
from keyfixtures import (  # noqa: F401  (fixtures)
    dev_ca_fixture,
    device_backend_fixture,
    fmp4_fixture,
    softhsm_fixture,
    swtpm_fixture,
)

from evidence import certs
from signer import identity
from signer.c2pa_embed import (
    C2paEmbedError,
    ManifestMissing,
    embed_manifest,
    read_validation,
    validation_report,
)
from signer.identity import DevCA
from signer.keys import KeyBackend, KeySpec, KeyUnavailable, init_key

CLAIM = {
    "claim_generator_info": [{"name": "liuhen", "version": "0.1.0"}],
    "title": "segment-000001.mp4",
    "assertions": [{"label": "org.liuhen.segment", "data": {"seq": 1}}],
}


T = TypeVar("T", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return cert.extensions.get_extension_for_class(kind)


# ---------------------------------------------------------------------------
# Development CA
# ---------------------------------------------------------------------------


def test_dev_ca_files_and_profile(dev_ca: DevCA) -> None:
    d = dev_ca.directory
    for name in (identity.ROOT_KEY_FILE, identity.INTERMEDIATE_KEY_FILE):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    assert "never for evidence" in (d / identity.README_FILE).read_text()
    root, inter = dev_ca.root_cert, dev_ca.intermediate_cert
    assert "DEVELOPMENT" in root.subject.rfc4514_string()
    root.verify_directly_issued_by(root)
    inter.verify_directly_issued_by(root)
    for cert, path_length in ((root, 1), (inter, 0)):
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == path_length
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        assert not ku.value.digital_signature
        ski = _ext(cert, x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert _ext(inter, x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(root, x509.SubjectKeyIdentifier).value.digest
    )


def test_dev_ca_is_never_overwritten(dev_ca: DevCA) -> None:
    before = {p.name: p.read_bytes() for p in dev_ca.directory.iterdir()}
    with pytest.raises(FileExistsError, match=r"dev-root-ca\.key\.pem already exists"):
        identity.make_dev_ca(dev_ca.directory)
    assert {p.name: p.read_bytes() for p in dev_ca.directory.iterdir()} == before


# ---------------------------------------------------------------------------
# Device certificate, self-signed certificate, CSR
# ---------------------------------------------------------------------------


def test_device_cert_has_the_c2pa_profile_and_verifies(
    device_backend: KeyBackend, dev_ca: DevCA
) -> None:
    cert = identity.issue_device_cert(device_backend, "unit-0001", dev_ca.directory)
    assert cert.public_key() == device_backend.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "unit-0001"
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "liuhen device"
    )
    assert cert.issuer == dev_ca.intermediate_cert.subject
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert _ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(device_backend.public_key())
    )
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(dev_ca.intermediate_cert, x509.SubjectKeyIdentifier).value.digest
    )
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= datetime.timedelta(days=3650)

    chain = certs.verify_device_chain(cert, [dev_ca.intermediate_cert], [dev_ca.root_cert])
    assert chain == [cert, dev_ca.intermediate_cert, dev_ca.root_cert]


def test_chain_verification_names_failures(device_backend: KeyBackend, tmp_path: Path) -> None:
    ca = identity.make_dev_ca(tmp_path / "ca")
    other = identity.make_dev_ca(tmp_path / "other-ca")
    cert = identity.issue_device_cert(device_backend, "unit-0001", ca.directory, days=30)
    with pytest.raises(VerificationError, match="candidates exhausted"):
        certs.verify_device_chain(cert, [ca.intermediate_cert], [other.root_cert])
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=40)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        certs.verify_device_chain(cert, [ca.intermediate_cert], [ca.root_cert], at=later)
    # A CA certificate is not a device certificate.
    with pytest.raises(VerificationError, match=r"must be CA:FALSE"):
        certs.verify_device_chain(ca.intermediate_cert, [], [ca.root_cert])


def test_device_cert_may_not_outlive_the_intermediate(
    device_backend: KeyBackend, dev_ca: DevCA
) -> None:
    with pytest.raises(ValueError, match="would outlive the development intermediate"):
        identity.issue_device_cert(device_backend, "unit-0001", dev_ca.directory, days=40_000)


def test_csr_is_signed_through_the_backend(device_backend: KeyBackend) -> None:
    csr = identity.make_csr(device_backend, "unit-0002")
    assert csr.is_signature_valid
    assert csr.public_key() == device_backend.public_key()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "unit-0002"
    assert list(csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION
    ]
    pem = csr.public_bytes(serialization.Encoding.PEM)
    assert x509.load_pem_x509_csr(pem).is_signature_valid


def test_self_signed_device_cert(device_backend: KeyBackend) -> None:
    cert = identity.self_signed_device_cert(device_backend, "unit-0003")
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == device_backend.public_key()
    assert not _ext(cert, x509.BasicConstraints).value.ca
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(cert, x509.SubjectKeyIdentifier).value.digest
    )


def test_fingerprint_and_chain_pem(dev_ca: DevCA) -> None:
    root = dev_ca.root_cert
    der = root.public_bytes(serialization.Encoding.DER)
    assert certs.fingerprint(root) == hashlib.sha256(der).hexdigest()
    pem = certs.chain_pem(dev_ca.intermediate_cert, root)
    assert certs.load_chain_pem(pem) == [dev_ca.intermediate_cert, root]


@pytest.mark.parametrize(
    ("device_id", "message"),
    [("", "non-empty"), ("x" * 65, "at most 64"), ("unit\n1", "non-printable")],
)
def test_bad_device_id(tmp_path: Path, device_id: str, message: str) -> None:
    with (
        init_key(KeySpec(kind="software", path=str(tmp_path / "k"))) as key,
        pytest.raises(ValueError, match=message),
    ):
        identity.make_csr(key, device_id)


# ---------------------------------------------------------------------------
# C2PA round trip
# ---------------------------------------------------------------------------


def _flip_media_byte(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    mdat = data.rfind(b"mdat")
    assert mdat > 0
    data[mdat + 16] ^= 0x01
    dst.write_bytes(bytes(data))


def test_c2pa_round_trip(
    device_backend: KeyBackend, dev_ca: DevCA, fmp4: Path, tmp_path: Path
) -> None:
    cert = identity.issue_device_cert(device_backend, "unit-0001", dev_ca.directory)
    chain = certs.chain_pem(cert, dev_ca.intermediate_cert)
    signed = tmp_path / "signed.mp4"
    embed_manifest(fmp4, signed, device_backend, chain, CLAIM)

    assert read_validation(signed, dev_ca.root_pem) == "Trusted"
    assert read_validation(signed) == "Valid"  # good signature, signer not anchored

    tampered = tmp_path / "tampered.mp4"
    _flip_media_byte(signed, tampered)
    report = validation_report(tampered, dev_ca.root_pem)
    assert report.state == "Invalid"
    assert "assertion.bmffHash.mismatch" in report.failures

    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(signed.read_bytes()[:-100])
    assert read_validation(truncated, dev_ca.root_pem) == "Invalid"

    with pytest.raises(ManifestMissing, match="no C2PA manifest"):
        read_validation(fmp4, dev_ca.root_pem)


def test_c2pa_refusals(
    device_backend: KeyBackend, dev_ca: DevCA, fmp4: Path, tmp_path: Path
) -> None:
    cert = identity.issue_device_cert(device_backend, "unit-0001", dev_ca.directory)
    chain = certs.chain_pem(cert, dev_ca.intermediate_cert)
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"evidence")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        embed_manifest(fmp4, existing, device_backend, chain, CLAIM)
    assert existing.read_bytes() == b"evidence"

    ts = tmp_path / "segment.ts"
    ts.write_bytes(b"\x47" * 188)
    with pytest.raises(C2paEmbedError, match=r"not \.ts"):
        embed_manifest(ts, tmp_path / "out.ts", device_backend, chain, CLAIM)

    with (
        init_key(KeySpec(kind="software", path=str(tmp_path / "other.key"))) as other,
        pytest.raises(C2paEmbedError, match="is not for the key in"),
    ):
        embed_manifest(fmp4, tmp_path / "a.mp4", other, chain, CLAIM)

    self_signed = identity.self_signed_device_cert(device_backend, "unit-0001")
    with pytest.raises(C2paEmbedError, match="the device certificate is self-signed"):
        embed_manifest(
            fmp4, tmp_path / "b.mp4", device_backend, certs.chain_pem(self_signed), CLAIM
        )

    # A key that fails while c2pa is signing: the real reason comes out, no file is left.
    device_backend.close()
    with pytest.raises(KeyUnavailable, match="closed"):
        embed_manifest(fmp4, tmp_path / "c.mp4", device_backend, chain, CLAIM)
    assert not (tmp_path / "c.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".c2pa-tmp")]
