"""Which device keys the centre vouches for: trusted device certificates and CA roots.

Owns: reading a trust directory (``*.pem``/``*.crt``: device leaf certificates and/or
CA roots), and deciding whether a certificate chain a unit presents in its birth is
vouched for by one of those roots. Must not: learn keys from the network by itself
(``central.fleet`` decides what a birth teaches and flags it), or verify entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from evidence.certs import load_chain_pem, verify_device_chain
from evidence.ledger import key_id


def common_name(cert: x509.Certificate) -> str | None:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@dataclass
class Trust:
    """Keys the operator vouches for: device (leaf) certificates, and CA roots that may
    vouch for a certificate a unit presents in its birth."""

    device_keys: dict[str, str] = field(default_factory=dict)  # key id -> device (CN)
    public_keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)  # key id -> leaf
    roots: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def from_dir(cls, directory: Path | None, what: str = "--trust") -> Trust:
        """Every certificate in ``directory``; ValueError names the file that is wrong
        (``what`` is how the caller calls the setting, e.g. ``trust.directory``)."""
        trust = cls()
        if directory is None:
            return trust
        if not directory.is_dir():
            raise ValueError(f"{what} {directory}: not a directory")
        files = sorted(directory.glob("*.pem")) + sorted(directory.glob("*.crt"))
        if not files:
            raise ValueError(f"{what} {directory}: no *.pem or *.crt certificate in it")
        for path in files:
            try:
                chain = load_chain_pem(path.read_bytes())
            except ValueError as exc:
                raise ValueError(f"{what} {path}: not a PEM certificate ({exc})") from None
            for cert in chain:
                trust.add(cert)
        return trust

    def add(self, cert: x509.Certificate) -> None:
        if is_ca(cert):
            self.roots.append(cert)
            return
        public = cert.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            kid = key_id(public)
            self.public_keys[kid] = public
            self.certificates[kid] = cert
            self.device_keys[kid] = common_name(cert) or "?"

    def vouches_for_chain(self, chain: list[x509.Certificate]) -> bool:
        if not chain:
            return False
        public = chain[0].public_key()
        if isinstance(public, ec.EllipticCurvePublicKey) and key_id(public) in self.public_keys:
            return True
        if not self.roots:
            return False
        try:
            verify_device_chain(chain[0], chain[1:], self.roots)
        except Exception:
            return False
        return True
