"""Encryption at rest: the ``LIUHENC1`` segment format (docs/FORMAT.md, ADR 0010).

Owns: the agency's key pair (loading, making a development one), wrapping a fresh
per-segment data key for it with HPKE (RFC 9180), sealing the plaintext in records of
AES-256-GCM, splitting an encrypted file into parts *without the key* (so the unit,
``liuhen verify`` and the collector check it like any segment), and decrypting it with
the agency's private key. Must not: write files or fsync (``recorder.fmp4`` does), or
keep a data key beyond the segment it belongs to.

    file    = "LIUHENC1" || u32 len(header) || header || record*
    header  = RFC 8785 JSON {v, kem, kdf, aead, recipient, device, segment,
                             wrapped_key, nonce_prefix}
    record  = u32 len(ct) || ct                 ct = AES-256-GCM(data key, nonce, pt, aad)
    nonce_i = nonce_prefix (4 bytes) || i (u64) aad_i = SHA-256(header) || i (u64) || final

Record *i* counts from 0; only the last record of a finished file has ``final`` = 1, so
a file cut after a whole record (a power cut) is told apart from a finished one, and no
record can be moved, dropped or reordered without the tag failing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from evidence.parts import PREFIX, Digests, Part

MAGIC = b"LIUHENC1"
FORMAT_VERSION = 1
MAX_HEADER = 64 << 10
MAX_RECORD = (64 << 20) + 16  # what a reader accepts for one record (ciphertext + tag)
MAX_RECORD_PLAINTEXT = 8 << 20  # what a writer puts in one (a pre-event burst is split)
HEADER_KEYS = {"v", "kem", "kdf", "aead", "recipient", "device", "segment", "wrapped_key",
               "nonce_prefix"}  # fmt: skip
DATA_KEY_BYTES = 32
INFO = b"liuhen segment v1"
HEX64, HEX8 = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{8}")
KEMS = {"MLKEM768-X25519": hpke.KEM.MLKEM768_X25519, "X25519": hpke.KEM.X25519}


class EncryptionError(ValueError):
    """An agency key or an encrypted file cannot be used; the message says exactly why."""


# --- the agency's keys -----------------------------------------------------------------
def _spki(key: MLKEM768PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, rest = [], data
    while (start := rest.find(b"-----BEGIN ")) >= 0:
        end = rest.find(b"-----END ", start)
        close = rest.find(b"-----", end + 9) if end >= 0 else -1
        if close < 0:
            raise EncryptionError("a PEM block is not closed")
        blocks.append(rest[start : close + 5])
        rest = rest[close + 5 :]
    return blocks


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EncryptionError(f"{path}: cannot read the agency key ({exc.strerror})") from None


def _key_pair(data: bytes, source: str, private: bool) -> tuple[Any, Any]:
    """(ML-KEM-768 key or None, X25519 key) from the PEM blocks of an agency key file."""
    half = "private" if private else "public"
    kinds = (
        (MLKEM768PrivateKey, X25519PrivateKey) if private else (MLKEM768PublicKey, X25519PublicKey)
    )
    found: list[Any] = [None, None]
    for block in _pem_blocks(data):
        try:
            key = (
                serialization.load_pem_private_key(block, password=None)
                if private
                else serialization.load_pem_public_key(block)
            )
        except (ValueError, TypeError) as exc:
            raise EncryptionError(f"{source}: a PEM block that is no {half} key ({exc})") from None
        slot = next((i for i, kind in enumerate(kinds) if isinstance(key, kind)), None)
        if slot is None:
            raise EncryptionError(
                f"{source}: a {type(key).__name__} is no agency key; expected ML-KEM-768 and "
                f"X25519 {half} keys (make a pair with `liuhen keys agency-key DIR`)"
            )
        if found[slot] is not None:
            raise EncryptionError(f"{source}: two {type(key).__name__} keys in it; one of each")
        found[slot] = key
    if found[1] is None:
        hint = " (is it the public key?)" if private else ""
        raise EncryptionError(f"{source}: no X25519 {half} key in it{hint}")
    return found[0], found[1]


@dataclass(frozen=True)
class Recipient:
    """The agency public key segments are encrypted for: ML-KEM-768 + X25519 (hybrid,
    the default) or X25519 alone."""

    kem: str
    mlkem: MLKEM768PublicKey | None
    x25519: X25519PublicKey

    @property
    def id(self) -> str:
        """SHA-256 over the DER SubjectPublicKeyInfo of each part, ML-KEM first."""
        der = (_spki(self.mlkem) if self.mlkem else b"") + _spki(self.x25519)
        return hashlib.sha256(der).hexdigest()

    def hpke_key(self) -> hpke.MLKEM768X25519PublicKey | X25519PublicKey:
        if self.mlkem is None:
            return self.x25519
        return hpke.MLKEM768X25519PublicKey(self.mlkem, self.x25519)

    @classmethod
    def from_pem(cls, data: bytes, source: str = "recipient") -> Recipient:
        found_m, found_x = _key_pair(data, source, private=False)
        return cls("MLKEM768-X25519" if found_m else "X25519", found_m, found_x)

    @classmethod
    def load(cls, path: Path) -> Recipient:
        return cls.from_pem(_read_key_file(path), str(path))


@dataclass(frozen=True)
class AgencyKey:
    """The private half: only the centre's decrypting station holds it."""

    recipient: Recipient
    mlkem: MLKEM768PrivateKey | None
    x25519: X25519PrivateKey

    def hpke_key(self) -> hpke.MLKEM768X25519PrivateKey | X25519PrivateKey:
        if self.mlkem is None:
            return self.x25519
        return hpke.MLKEM768X25519PrivateKey(self.mlkem, self.x25519)

    @classmethod
    def load(cls, path: Path) -> AgencyKey:
        return cls.from_pem(_read_key_file(path), str(path))

    @classmethod
    def from_pem(cls, data: bytes, source: str = "agency key") -> AgencyKey:
        found_m, found_x = _key_pair(data, source, private=True)
        recipient = Recipient(
            "MLKEM768-X25519" if found_m else "X25519",
            found_m.public_key() if found_m else None,
            found_x.public_key(),
        )
        return cls(recipient, found_m, found_x)


def generate_agency_key(hybrid: bool = True) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a new agency key: ML-KEM-768 + X25519 by default."""
    keys: list[MLKEM768PrivateKey | X25519PrivateKey] = [X25519PrivateKey.generate()]
    if hybrid:
        keys.insert(0, MLKEM768PrivateKey.generate())
    private = b"".join(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for k in keys
    )
    public = b"".join(
        k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for k in keys
    )
    return private, public


# --- the format ------------------------------------------------------------------------
def _suite(kem: str) -> hpke.Suite:
    return hpke.Suite(KEMS[kem], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _info(device: str, segment: str) -> bytes:
    return b"\0".join((INFO, device.encode(), segment.encode()))


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(8, "big")


def _aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return header_hash + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class RecordSealer:
    """Encrypts one segment: ``preamble`` first, then one ``seal()`` per fsync'ed flush.

    The data key exists only inside this object's AESGCM context; ``finish()`` drops it.
    """

    def __init__(self, recipient: Recipient, device: str, segment: str) -> None:
        data_key = AESGCM.generate_key(256)
        self._aead: AESGCM | None = AESGCM(data_key)
        wrapped = _suite(recipient.kem).encrypt(
            data_key, recipient.hpke_key(), info=_info(device, segment)
        )
        del data_key
        self._prefix = os.urandom(4)
        self.header: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "kem": recipient.kem,
            "kdf": "HKDF-SHA256",
            "aead": "AES-256-GCM",
            "recipient": recipient.id,
            "device": device,
            "segment": segment,
            "wrapped_key": base64.b64encode(wrapped).decode(),
            "nonce_prefix": self._prefix.hex(),
        }
        header_bytes = bytes(rfc8785.dumps(self.header))
        self.preamble = MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes
        self._header_hash = hashlib.sha256(header_bytes).digest()
        self.records = 0

    def seal(self, plaintext: bytes | bytearray | memoryview, final: bool = False) -> bytearray:
        """One record's bytes on disk (length prefix and ciphertext with its tag)."""
        if self._aead is None:
            raise EncryptionError("the segment is finished; its key is gone")
        if len(plaintext) > MAX_RECORD_PLAINTEXT:
            raise EncryptionError(
                f"{len(plaintext)} bytes in one record; split at {MAX_RECORD_PLAINTEXT}"
            )
        index = self.records
        record = bytearray(4 + len(plaintext) + 16)  # one buffer: length, ciphertext, tag
        struct.pack_into(">I", record, 0, len(plaintext) + 16)
        with memoryview(record) as view:
            self._aead.encrypt_into(
                _nonce(self._prefix, index),
                plaintext,
                _aad(self._header_hash, index, final),
                view[4:],
            )
        self.records += 1
        if final:
            self._aead = None
        return record

    def forget(self) -> None:
        self._aead = None


def read_preamble(f: BinaryIO) -> tuple[dict[str, Any], bytes, int]:
    """(header, header bytes, preamble length) of an encrypted file, checked for shape."""
    head = f.read(12)
    if len(head) < 12 or head[:8] != MAGIC:
        raise EncryptionError("not a liuhen encrypted segment (no LIUHENC1 magic)")
    (length,) = struct.unpack(">I", head[8:])
    if length > MAX_HEADER:
        raise EncryptionError(f"header length {length} is beyond the limit {MAX_HEADER}")
    header_bytes = f.read(length)
    if len(header_bytes) < length:
        raise EncryptionError("the file ends inside its header")
    try:
        header = rfc8785_loads(header_bytes)
    except (ValueError, RecursionError) as exc:
        raise EncryptionError(f"the header is not canonical JSON: {exc}") from None
    check_header(header)
    return header, header_bytes, 12 + length


def check_header(header: dict[str, Any]) -> None:
    """Every field present, of its type and value range, and nothing else."""
    if set(header) != HEADER_KEYS:
        raise EncryptionError(f"header fields {sorted(header)}; expected {sorted(HEADER_KEYS)}")
    if type(header["v"]) is not int or header["v"] != FORMAT_VERSION:
        raise EncryptionError(f"unknown format version {header['v']!r}")
    kem = header["kem"]
    if not isinstance(kem, str) or kem not in KEMS:
        raise EncryptionError(f"unknown KEM {kem!r}")
    if header["kdf"] != "HKDF-SHA256" or header["aead"] != "AES-256-GCM":
        raise EncryptionError(f"unknown KDF or AEAD {header['kdf']!r}, {header['aead']!r}")
    for name, pattern in (("recipient", HEX64), ("nonce_prefix", HEX8)):
        if not isinstance(header[name], str) or not pattern.fullmatch(header[name]):
            raise EncryptionError(f"header {name} is not {pattern.pattern}")
    for name in ("device", "segment"):
        if not isinstance(header[name], str) or not header[name] or "\0" in header[name]:
            raise EncryptionError(f"header {name} is not a name")
    try:
        if not isinstance(header["wrapped_key"], str):
            raise ValueError
        wrapped = base64.b64decode(header["wrapped_key"], validate=True)
    except ValueError:
        raise EncryptionError("header wrapped_key is not base64") from None
    if len(wrapped) != KEMS[kem].enc_length() + DATA_KEY_BYTES + 16:
        raise EncryptionError(f"header wrapped_key is {len(wrapped)} bytes, not a wrapped key")


def rfc8785_loads(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if bytes(rfc8785.dumps(value)) != data:
        raise ValueError("not in RFC 8785 canonical form")
    return value


class RecordPartHasher:
    """Splits the bytes of an encrypted file into parts as they stream past: part 0 is
    the preamble (magic, length, header), part *k* the *k*-th record with its length.

    Same interface as ``evidence.parts.StreamingPartHasher``; needs no key.
    ``whole_end`` is where the last whole part ends (a recovery cuts there).
    """

    def __init__(self, whole_file: bool = True, scheme: str = PREFIX) -> None:
        self.parts: list[Part] = []
        self._digests = Digests(scheme, whole_file)
        self.file_sha256 = self._digests.whole
        self.position = 0
        self.whole_end = 0
        self._need = 12  # bytes of the next framing field or body still to come
        self._field = bytearray()
        self._in_body = False
        self._preamble_done = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = min(self._need, len(view))
            chunk = view[:n]
            self._digests.update(chunk)
            if not self._in_body:
                self._field += chunk
            self.position += n
            self._need -= n
            view = view[n:]
            if not self._need:
                self._advance()

    def _advance(self) -> None:
        if self._in_body:  # a header or record body is complete: the part ends here
            self._close_part()
            self._in_body, self._need = False, 4
            return
        if not self._preamble_done:
            if bytes(self._field[:8]) != MAGIC:
                raise EncryptionError(f"not a liuhen encrypted segment at byte {self.position}")
            (length,) = struct.unpack(">I", self._field[8:12])
            limit = MAX_HEADER
        else:
            (length,) = struct.unpack(">I", self._field[:4])
            limit = MAX_RECORD
        if length > limit or (self._preamble_done and length < 16):
            raise EncryptionError(f"impossible length {length} at byte {self.position - 4}")
        self._field.clear()
        self._in_body, self._need = True, length
        if length == 0:
            self._advance()

    def _close_part(self) -> None:
        start = self.whole_end
        self.parts.append(Part(len(self.parts), start, self.position - start, self._digests.cut()))
        self.whole_end = self.position
        self._preamble_done = True

    def finish(self) -> list[Part]:
        """The parts; the stream must end on a record boundary."""
        if self.position != self.whole_end:
            raise ValueError("stream ended inside a record")
        return list(self.parts)


def is_encrypted_bytes(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def is_encrypted(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return is_encrypted_bytes(f.read(len(MAGIC)))
    except OSError:
        return False


# --- decrypting (the centre) -----------------------------------------------------------
@dataclass(frozen=True)
class Decrypted:
    records: int
    final: bool  # False: the file was cut (a power cut) after its last whole record
    plaintext_bytes: int
    plaintext_sha256: str
    header: dict[str, Any]


def iter_records(f: BinaryIO) -> Iterator[tuple[int, int, bytes | None]]:
    """(index, offset, ciphertext) of each whole record after the preamble; a torn
    last record (a power cut) comes as ``None`` ciphertext."""
    index, offset = 0, f.tell()
    while True:
        length_bytes = f.read(4)
        if not length_bytes:
            return
        if len(length_bytes) < 4:
            yield index, offset, None
            return
        (length,) = struct.unpack(">I", length_bytes)
        if not 16 <= length <= MAX_RECORD:
            raise EncryptionError(f"record {index} at byte {offset}: impossible length {length}")
        ct = f.read(length)
        if len(ct) < length:
            yield index, offset, None
            return
        yield index, offset, ct
        index, offset = index + 1, offset + 4 + length


def decrypt(source: BinaryIO, out: BinaryIO, key: AgencyKey) -> Decrypted:
    """Decrypt ``source`` into ``out``, record by record; raise ``EncryptionError`` naming
    the first record that fails (nothing after it is written)."""
    header, header_bytes, _ = read_preamble(source)  # every field checked for type there
    if header["recipient"] != key.recipient.id:
        raise EncryptionError(
            f"encrypted for agency key {header['recipient'][:16]}…, "
            f"not for this one ({key.recipient.id[:16]}…)"
        )
    if header["kem"] != key.recipient.kem:
        raise EncryptionError(f"the file uses KEM {header['kem']}, the key is {key.recipient.kem}")
    try:
        data_key = _suite(header["kem"]).decrypt(
            base64.b64decode(header["wrapped_key"], validate=True),
            key.hpke_key(),
            info=_info(header["device"], header["segment"]),
        )
    except (InvalidTag, ValueError) as exc:
        raise EncryptionError(
            f"the wrapped data key does not open with this key ({exc!r})"
        ) from None
    prefix = bytes.fromhex(header["nonce_prefix"])
    if len(data_key) != DATA_KEY_BYTES:
        raise EncryptionError(
            f"the wrapped data key is {len(data_key)} bytes, not {DATA_KEY_BYTES}"
        )
    aead = AESGCM(data_key)
    del data_key
    header_hash = hashlib.sha256(header_bytes).digest()
    digest, total, final, records = hashlib.sha256(), 0, False, 0
    for index, offset, ct in iter_records(source):
        if final:
            raise EncryptionError(f"bytes at {offset}, after the final record: appended")
        if ct is None:
            break  # torn at a power cut: every record before it is whole
        for is_final in (False, True):
            try:
                plain = aead.decrypt(_nonce(prefix, index), ct, _aad(header_hash, index, is_final))
                final = is_final
                break
            except InvalidTag:
                continue
        else:
            raise EncryptionError(
                f"record {index} (bytes {offset}..{offset + 3 + len(ct)}) fails authentication: "
                "altered, moved or from another file"
            )
        out.write(plain)
        digest.update(plain)
        total += len(plain)
        records += 1
    return Decrypted(records, final, total, digest.hexdigest(), header)
