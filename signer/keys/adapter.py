"""A cryptography ``EllipticCurvePrivateKey`` whose signatures come from a KeyBackend.

Owns: letting ``cryptography.x509`` builders (certificates, CSRs) sign through a
token or TPM. cryptography's Rust builders accept any instance of the
``EllipticCurvePrivateKey`` ABC and call its Python ``sign(data, ECDSA(hash))``
(src/rust/src/x509/sign.rs: identify_key_type is an isinstance check, sign_data calls
``private_key.sign``), so no DER is assembled here.
Must not: expose or reconstruct private key material (there is none to expose).
"""

from __future__ import annotations

import hashlib

from cryptography import utils
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signer.keys.base import KeyBackend


class BackendPrivateKey(ec.EllipticCurvePrivateKey):
    """Signs ECDSA-with-SHA-256 through ``backend.sign_digest``; nothing else."""

    def __init__(self, backend: KeyBackend) -> None:
        self._backend = backend

    @property
    def backend(self) -> KeyBackend:
        return self._backend

    @property
    def curve(self) -> ec.EllipticCurve:
        return ec.SECP256R1()

    @property
    def key_size(self) -> int:
        return 256

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._backend.public_key()

    def sign(
        self,
        data: utils.Buffer,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError(
                f"{self._backend.description}: only ECDSA is supported, "
                f"not {type(signature_algorithm).__name__}"
            )
        algorithm = signature_algorithm.algorithm
        if not isinstance(algorithm, hashes.SHA256):
            raise TypeError(
                f"{self._backend.description}: only ECDSA with SHA-256 is supported, "
                f"not {getattr(algorithm, 'name', type(algorithm).__name__)}"
            )
        return self._backend.sign_digest(hashlib.sha256(data).digest())

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError(f"{self._backend.description}: the device key signs only; no ECDH")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise TypeError(
            f"{self._backend.description}: the private key stays in the key store; "
            "it has no numbers to give"
        )

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise TypeError(
            f"{self._backend.description}: the private key stays in the key store; "
            "it cannot be serialised"
        )

    def __copy__(self) -> BackendPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> BackendPrivateKey:
        return self
