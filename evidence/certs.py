"""Device certificates as a verifier sees them: fingerprints, PEM chains, and checking a
device chain against an agency's trust anchor with cryptography's X.509 verifier.

Owns: the device certificate profile a verifier enforces (KeyUsage critical
digitalSignature; BasicConstraints critical CA:FALSE; ExtendedKeyUsage emailProtection;
SubjectKeyIdentifier and AuthorityKeyIdentifier). Must not: issue certificates or see a
key (signer/identity.py does the issuing).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ---------------------------------------------------------------------------
# Fingerprints, PEM chains, verification
# ---------------------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex (``openssl x509 -fingerprint -sha256``)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def chain_pem(*certs: x509.Certificate) -> str:
    """The certificates as concatenated PEM, in the order given (leaf first)."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def load_chain_pem(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificates(data)


def _require_device_key_usage(policy: Policy, cert: x509.Certificate, ku: x509.KeyUsage) -> None:
    if not ku.digital_signature or ku.key_cert_sign:
        raise ValueError("device certificate KeyUsage must be digitalSignature and not keyCertSign")


def _require_not_ca(policy: Policy, cert: x509.Certificate, bc: x509.BasicConstraints) -> None:
    if bc.ca:
        raise ValueError("device certificate must be CA:FALSE")


def _require_email_protection(
    policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage
) -> None:
    if ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku:
        raise ValueError("device certificate ExtendedKeyUsage must include emailProtection")


def device_policy() -> ExtensionPolicy:
    """The leaf extension policy of the device profile, for cryptography's verifier."""
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, Criticality.CRITICAL, _require_device_key_usage)
        .require_present(x509.BasicConstraints, Criticality.CRITICAL, _require_not_ca)
        .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_email_protection)
        .require_present(x509.SubjectKeyIdentifier, Criticality.NON_CRITICAL, None)
        .require_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
    )


def verify_device_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Iterable[x509.Certificate],
    at: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    """Verify leaf -> intermediates -> one of ``roots`` with cryptography's X.509 verifier.

    CA certificates get the Web PKI CA rules; the leaf gets the device profile. Returns
    the verified chain (leaf first); raises cryptography's VerificationError naming
    the failure.
    """
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at or _now())
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=device_policy()
        )
        .build_client_verifier()
    )
    return verifier.verify(leaf, list(intermediates)).chain
