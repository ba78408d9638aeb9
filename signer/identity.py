"""Device identity: X.509 certificates and CSRs for the device key, with cryptography.x509.

Owns: the certificate profile that C2PA validators (c2pa-rs) accept for a device
(P-256; KeyUsage critical digitalSignature; BasicConstraints critical CA:FALSE;
ExtendedKeyUsage emailProtection; SubjectKeyIdentifier and AuthorityKeyIdentifier on
every certificate), a DEVELOPMENT certificate authority to issue it, CSRs for a real
CA, and checking a device chain.
Must not: see a device private key. Everything the device key signs (CSR, self-signed
certificate) is signed through its KeyBackend via ``BackendPrivateKey``; the key never
leaves the token. The development CA keeps its own keys in PEM files: it exists for
tests and bench set-ups, never for evidence.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evidence.certs import chain_pem
from signer.keys import BackendPrivateKey, KeyBackend
from signer.keys.files import write_new_private_file

DEVICE_ORGANIZATION = "liuhen device"
DEV_ORGANIZATION = "liuhen DEVELOPMENT CA - not for evidence"
ROOT_CERT_FILE = "dev-root-ca.cert.pem"
ROOT_KEY_FILE = "dev-root-ca.key.pem"
INTERMEDIATE_CERT_FILE = "dev-intermediate-ca.cert.pem"
INTERMEDIATE_KEY_FILE = "dev-intermediate-ca.key.pem"
README_FILE = "README-DEVELOPMENT-ONLY.txt"

ROOT_DAYS = 25 * 366
INTERMEDIATE_DAYS = 20 * 366
DEVICE_DAYS = 3650
# Certificates start a day in the past so a unit whose clock lags still validates.
BACKDATE = datetime.timedelta(days=1)
MAX_DEVICE_ID_LENGTH = 64  # X.520 ub-common-name

_README = """\
This directory holds a liuhen DEVELOPMENT certificate authority.
Its private keys are plain PEM files: anyone who can read them can issue device
certificates. Use it for tests and bench set-ups only, never for evidence.
"""


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not device_id.strip():
        raise ValueError("device_id must be a non-empty string")
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise ValueError(
            f"device_id {device_id!r} is {len(device_id)} characters; "
            f"a certificate CN holds at most {MAX_DEVICE_ID_LENGTH}"
        )
    if not device_id.isprintable():
        raise ValueError(f"device_id {device_id!r} contains non-printable characters")
    return device_id


def _device_name(device_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, _check_device_id(device_id)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEVICE_ORGANIZATION),
        ]
    )


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION),
        ]
    )


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _device_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _with_device_profile(
    builder: x509.CertificateBuilder,
    public_key: ec.EllipticCurvePublicKey,
    issuer_ski: x509.SubjectKeyIdentifier,
) -> x509.CertificateBuilder:
    """The device (leaf) extensions C2PA validators accept."""
    return (
        builder.add_extension(_device_key_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )


def _check_possession(backend: KeyBackend) -> ec.EllipticCurvePublicKey:
    """Have the backend sign a fresh digest: the key certified is the key that signs."""
    public_key = backend.public_key()
    digest = hashlib.sha256(b"liuhen identity possession check" + os.urandom(16)).digest()
    backend.sign_digest(digest)  # verified against public_key inside sign_digest
    return public_key


def _write_pem_cert(path: Path, cert: x509.Certificate) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


# ---------------------------------------------------------------------------
# Development CA
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DevCA:
    """A DEVELOPMENT root + intermediate. Its keys are files: never use it for evidence."""

    directory: Path
    root_cert: x509.Certificate
    intermediate_cert: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey = dataclasses.field(repr=False)

    @property
    def root_pem(self) -> str:
        """The trust anchor, e.g. for C2PA ``trust.user_anchors``."""
        return chain_pem(self.root_cert)


def make_dev_ca(directory: str | os.PathLike[str]) -> DevCA:
    """Create a DEVELOPMENT root CA and intermediate in ``directory``.

    Root: CA:TRUE pathlen 1. Intermediate: CA:TRUE pathlen 0. Both keyCertSign+cRLSign
    (critical), SKI and AKI. Keys are P-256 PEM files with mode 0600, next to a README
    that says what they are. Refuses (FileExistsError) if any of the files exists.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in (ROOT_KEY_FILE, ROOT_CERT_FILE, INTERMEDIATE_KEY_FILE, INTERMEDIATE_CERT_FILE):
        if (directory / name).exists():
            raise FileExistsError(f"development CA: {directory / name} already exists")

    now = _now()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_name = _ca_name("liuhen DEVELOPMENT root CA")
    root = _ca_cert(
        root_name, root_name, root_key.public_key(), root_key, root_ski, 1, now, ROOT_DAYS
    )
    int_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _ca_cert(
        _ca_name("liuhen DEVELOPMENT device CA"),
        root_name,
        int_key.public_key(),
        root_key,
        root_ski,
        0,
        now,
        INTERMEDIATE_DAYS,
    )

    for key, name in ((root_key, ROOT_KEY_FILE), (int_key, INTERMEDIATE_KEY_FILE)):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_new_private_file(directory / name, pem, what="development CA key")
    _write_pem_cert(directory / ROOT_CERT_FILE, root)
    _write_pem_cert(directory / INTERMEDIATE_CERT_FILE, intermediate)
    readme = directory / README_FILE
    if not readme.exists():
        readme.write_text(_README, encoding="utf-8")
    return DevCA(directory, root, intermediate, int_key)


def _ca_cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: CertificateIssuerPrivateKeyTypes,
    issuer_ski: x509.SubjectKeyIdentifier,
    path_length: int,
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .sign(signing_key, hashes.SHA256())
    )


def load_dev_ca(directory: str | os.PathLike[str]) -> DevCA:
    """Load a CA made by ``make_dev_ca``; FileNotFoundError names the missing file."""
    directory = Path(directory)
    root = x509.load_pem_x509_certificate((directory / ROOT_CERT_FILE).read_bytes())
    intermediate = x509.load_pem_x509_certificate((directory / INTERMEDIATE_CERT_FILE).read_bytes())
    key = serialization.load_pem_private_key(
        (directory / INTERMEDIATE_KEY_FILE).read_bytes(), password=None
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
        intermediate.public_key()
    ):
        raise ValueError(
            f"development CA in {directory}: {INTERMEDIATE_KEY_FILE} does not belong to "
            f"{INTERMEDIATE_CERT_FILE}"
        )
    return DevCA(directory, root, intermediate, key)


# ---------------------------------------------------------------------------
# Device certificates and CSRs
# ---------------------------------------------------------------------------


def issue_device_cert(
    backend: KeyBackend,
    device_id: str,
    ca_dir: str | os.PathLike[str],
    days: int = DEVICE_DAYS,
) -> x509.Certificate:
    """A device certificate for the backend's key, issued by the development intermediate.

    Subject CN = ``device_id``, O = "liuhen device"; the C2PA device profile. The
    backend signs one throw-away digest first, so only a key that can actually sign is
    certified. Raises ValueError if the certificate would outlive the intermediate.
    """
    ca = load_dev_ca(ca_dir)
    public_key = _check_possession(backend)
    now = _now()
    not_after = now + datetime.timedelta(days=days)
    if not_after > ca.intermediate_cert.not_valid_after_utc:
        raise ValueError(
            f"a {days}-day device certificate would outlive the development intermediate "
            f"(valid until {ca.intermediate_cert.not_valid_after_utc:%Y-%m-%d}); use fewer days"
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_device_name(device_id))
        .issuer_name(ca.intermediate_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
    )
    builder = _with_device_profile(builder, public_key, _ski(ca.intermediate_cert))
    return builder.sign(ca.intermediate_key, hashes.SHA256())


def self_signed_device_cert(
    backend: KeyBackend, device_id: str, days: int = DEVICE_DAYS
) -> x509.Certificate:
    """A self-signed device certificate, signed through the backend.

    For ``liuhen keys cert`` without a CA: it binds the device id to the key for the
    ledger only. C2PA does not accept it as a signing credential in practice: c2pa-rs
    refuses self-signed CA:TRUE leaves, and reads this CA:FALSE one as "Valid"
    (untrusted) unless that very certificate is a trust anchor, one per device.
    Content Credentials need ``issue_device_cert`` (or a real CA's certificate from
    ``make_csr``); ``c2pa_embed.embed_manifest`` refuses a self-signed chain.
    """
    public_key = backend.public_key()
    now = _now()
    name = _device_name(device_id)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    own_ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = _with_device_profile(builder, public_key, own_ski)
    return builder.sign(BackendPrivateKey(backend), hashes.SHA256())


def make_csr(backend: KeyBackend, device_id: str) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for the device key, signed through the backend.

    It asks for the device profile (KeyUsage, BasicConstraints, EKU); the CA decides.
    """
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_device_name(device_id))
        .add_extension(_device_key_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    )
    return builder.sign(BackendPrivateKey(backend), hashes.SHA256())
