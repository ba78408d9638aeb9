"""The ledger: one hash-chained, signed, append-only list of entries per device.

Owns: the entry format (docs/FORMAT.md, "Ledger"), appending an entry durably (fsync
before anything else learns of it) with a signed head beside it, continuing the chain
after a restart, and reading a ledger file back line by line. Must not: decide what is
sealed or when (the sealer does), touch the network or the camera.

Each line of ``ledger.jsonl`` is canonical JSON:

    {"body": b64(body), "file": NAME?, "payload": b64(header), "payloadType": ENTRY_TYPE,
     "ref": n?, "signatures": [{"keyid": KEYID, "sig": b64(DER)}]}

The signed header commits to the body by its SHA-256 and to the previous entry by the
SHA-256 of its header bytes; ``file`` and ``ref`` are unsigned hints (a file name for
people and shell recipes, the index row for crash reconciliation) that no check relies on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from evidence.durable import fsync_dir
from evidence.envelope import DigestSigner, Signed, b64, canonical, sha256_hex, sign, unb64

FORMAT_VERSION = 1
ENTRY_TYPE = "application/vnd.liuhen.ledger-entry.v1+json"
HEAD_TYPE = "application/vnd.liuhen.ledger-head.v1+json"
GENESIS_PREV = "0" * 64
LEDGER_FILE = "ledger.jsonl"
HEAD_FILE = "ledger.head"
CERT_FILE = "device.pem"


class LedgerError(RuntimeError):
    """The ledger on disk cannot be continued; the message says where and why."""


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 (hex) of the DER SubjectPublicKeyInfo: survives re-issued certificates."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256_hex(der)


@dataclass(frozen=True)
class Entry:
    envelope: Signed
    header: dict[str, Any]
    body: bytes | None  # None where an export withholds it
    file: str | None = None
    ref: int | None = None

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def kind(self) -> str:
        return str(self.header["kind"])

    @property
    def hash(self) -> str:
        """The entry's identity in the chain: SHA-256 of its header bytes."""
        return sha256_hex(self.envelope.payload)

    @property
    def segment_name(self) -> str | None:
        """The segment file a segment entry commits to (None for other entries)."""
        if self.kind != "segment" or self.body is None:
            return None
        segment = self.body_json().get("segment")
        return str(segment["name"]) if isinstance(segment, dict) else None

    def body_json(self) -> dict[str, Any]:
        if self.body is None:
            raise ValueError(f"entry {self.seq}: body withheld")
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    def to_line(self, with_body: bool = True) -> bytes:
        obj: dict[str, Any] = self.envelope.to_json()
        if with_body and self.body is not None:
            obj["body"] = b64(self.body)
        if self.file is not None:
            obj["file"] = self.file
        if self.ref is not None:
            obj["ref"] = self.ref
        return canonical(obj) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Entry:
        """Parse one ledger line; ValueError names what is malformed."""
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        envelope = Signed.from_json(obj)
        if envelope.payload_type not in (ENTRY_TYPE,):
            raise ValueError(f"unknown payloadType {envelope.payload_type!r}")
        try:
            header = json.loads(envelope.payload)
        except ValueError as exc:
            raise ValueError(f"header is not JSON ({exc})") from None
        for key, kind in (
            ("v", int),
            ("seq", int),
            ("prev", str),
            ("kind", str),
            ("body", str),
            ("device", str),
        ):
            if not isinstance(header.get(key), kind):
                raise ValueError(f"header field {key!r} missing or not {kind.__name__}")
        body = unb64(obj["body"]) if isinstance(obj.get("body"), str) else None
        file = obj.get("file") if isinstance(obj.get("file"), str) else None
        ref = obj.get("ref") if isinstance(obj.get("ref"), int) else None
        return cls(envelope, header, body, file, ref)


def iter_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for every line, the last one possibly without its newline."""
    offset = 0
    for line in f:
        yield offset, line
        offset += len(line)


@dataclass(frozen=True)
class Stamp:
    """When and under what clock an entry is made."""

    wall: str
    mono_us: int
    boot: str
    synced: bool | None


class Ledger:
    """The single writer of one device's ledger in ``directory`` (the evidence dir)."""

    def __init__(self, directory: Path, device_id: str, backend: DigestSigner) -> None:
        self.directory = directory
        self.path = directory / LEDGER_FILE
        self.device_id = device_id
        self.backend = backend
        self.keyid = key_id(backend.public_key())
        self.last: Entry | None = None
        self.size = 0
        self._open()

    def _open(self) -> None:
        """Find the end of the chain; set aside a torn last line (a power cut mid-write)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            data_end, last_line = _last_complete_line(f)
        size = self.path.stat().st_size
        if data_end < size:
            torn_dir = self.directory / "torn"
            torn_dir.mkdir(exist_ok=True)
            with open(self.path, "rb") as f:
                f.seek(data_end)
                torn = f.read()
            tail = torn_dir / f"{LEDGER_FILE}.{size}.tail"
            tail.write_bytes(torn)
            with open(self.path, "r+b") as f:
                f.truncate(data_end)
                os.fsync(f.fileno())
        self.size = data_end
        if last_line is not None:
            try:
                self.last = Entry.from_line(last_line)
            except ValueError as exc:
                raise LedgerError(
                    f"{self.path}: last entry is unreadable ({exc}); refusing to fork the chain"
                ) from None
            if self.last.header["device"] != self.device_id:
                raise LedgerError(
                    f"{self.path}: ledger belongs to {self.last.header['device']!r}, not {self.device_id!r}"
                )

    @property
    def next_seq(self) -> int:
        return 0 if self.last is None else self.last.seq + 1

    def append(
        self,
        kind: str,
        body: dict[str, Any],
        stamp: Stamp,
        *,
        file: str | None = None,
        ref: int | None = None,
    ) -> Entry:
        body_bytes = canonical(body)
        header = {
            "v": FORMAT_VERSION,
            "device": self.device_id,
            "seq": self.next_seq,
            "prev": GENESIS_PREV if self.last is None else self.last.hash,
            "kind": kind,
            "wall": stamp.wall,
            "mono_us": stamp.mono_us,
            "boot": stamp.boot,
            "clock_synced": stamp.synced,
            "key": self.backend.protection,
            "body": sha256_hex(body_bytes),
        }
        envelope = sign(self.backend, self.keyid, ENTRY_TYPE, canonical(header))
        entry = Entry(envelope, header, body_bytes, file, ref)
        line = entry.to_line()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            try:
                written = os.write(fd, line)
                if written != len(line):  # a full disk takes what fits: never leave half a line
                    raise OSError(errno.ENOSPC, f"only {written} of {len(line)} bytes fit")
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self.size)  # back to the last whole entry
                why = f"{self.path}: entry {header['seq']} not written ({exc.strerror})"
                raise OSError(exc.errno, why) from exc
        finally:
            os.close(fd)
        if self.size == 0:
            fsync_dir(self.directory)
        self.size += len(line)
        self.last = entry
        self._write_head(stamp)
        return entry

    def _write_head(self, stamp: Stamp) -> None:
        """ledger.head: a signed statement of the newest entry, replaced atomically, so a
        copy of the directory whose ledger lost lines at the end is caught."""
        assert self.last is not None
        head = {
            "v": FORMAT_VERSION,
            "device": self.device_id,
            "seq": self.last.seq,
            "entry": self.last.hash,
            "wall": stamp.wall,
        }
        signed = sign(self.backend, self.keyid, HEAD_TYPE, canonical(head))
        tmp = self.directory / f".{HEAD_FILE}.tmp"
        with open(tmp, "wb") as f:
            f.write(canonical(signed.to_json()) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / HEAD_FILE)
        fsync_dir(self.directory)


def _last_complete_line(f: BinaryIO) -> tuple[int, bytes | None]:
    """(end of the last newline-terminated line, that line), reading backwards."""
    f.seek(0, os.SEEK_END)
    pos = f.tell()
    buf = b""
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        end = buf.rfind(b"\n")
        if end < 0:
            continue
        start = buf.rfind(b"\n", 0, end)
        if start >= 0 or pos == 0:
            return pos + end + 1, buf[start + 1 : end + 1]
    return 0, None
