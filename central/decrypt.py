"""`liuhen central decrypt FILE OUT --key AGENCY.key.pem`: open an encrypted segment.

Owns: decrypting one ``.mp4.enc`` file with the agency's private key and checking the
result against the unit's signed ledger entry for it (found in the ledger beside the
file, or in ``--evidence DIR``): the entry's signature and body, the ciphertext record
by record, and the plaintext's SHA-256 the unit signed while recording. Must not: write a
plaintext that failed any check under OUT's name (it is removed), or touch the original.

A segment recovered after a power cut has no final record and no signed plaintext hash
(the unit could not read its own file back); its records still authenticate under the
data key bound to the signed ciphertext, and the output is cut at its last whole MP4
fragment, as the unit does for a plain file.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from recorder.boxes import iter_boxes, whole_fragment_prefix
from recorder.encryption import AgencyKey, EncryptionError, decrypt
from signer.envelope import sha256_hex
from signer.identity import load_chain_pem
from signer.ledger import CERT_FILE, LEDGER_FILE, Entry
from signer.verify import Report, compare_file, hash_file

EX_OK, EX_FAILED, EX_UNREADABLE = 0, 1, 2


class DecryptFailed(Exception):
    """The file, its entry or the key does not check out; the message says which."""


@dataclass(frozen=True)
class Outcome:
    entry_seq: int
    records: int
    final: bool
    plaintext_bytes: int
    plaintext_sha256: str
    cut_bytes: int  # plaintext after the last whole fragment of a recovered file


def find_entry(evidence: Path, name: str) -> tuple[Entry, dict[str, Any]]:
    """The signed segment entry for ``name``, its signature checked against the
    certificate beside the ledger (``liuhen verify --trust`` anchors that one)."""
    try:
        chain = load_chain_pem((evidence / CERT_FILE).read_bytes())
        lines = (evidence / LEDGER_FILE).read_bytes().splitlines(keepends=True)
    except (OSError, ValueError) as exc:
        raise DecryptFailed(
            f"{evidence}: no readable {LEDGER_FILE} and {CERT_FILE} ({exc})"
        ) from None
    public = chain[0].public_key() if chain else None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise DecryptFailed(f"{evidence / CERT_FILE}: not an EC device certificate")
    for line in lines:
        try:
            entry = Entry.from_line(line)
        except ValueError:
            continue
        if entry.kind != "segment" or entry.segment_name != name or entry.body is None:
            continue
        if not entry.envelope.verify(public) or sha256_hex(entry.body) != entry.header["body"]:
            raise DecryptFailed(f"entry {entry.seq} for {name} does not match its signature")
        segment = entry.body_json()["segment"]
        if not isinstance(segment.get("encryption"), dict):
            raise DecryptFailed(f"entry {entry.seq} says {name} was not encrypted")
        return entry, segment
    raise DecryptFailed(f"{evidence / LEDGER_FILE}: no segment entry for {name}")


def _cut_at_whole_fragment(path: Path) -> int:
    size = path.stat().st_size
    with open(path, "rb") as f:
        keep = whole_fragment_prefix(list(iter_boxes(f, size)))
    with open(path, "r+b") as f:
        f.truncate(keep)
    return size - keep


def decrypt_segment(source: Path, out: Path, key: AgencyKey, evidence: Path) -> Outcome:
    entry, segment = find_entry(evidence, source.name)
    report = Report(str(source))
    hasher = hash_file(source, lambda n: None, encrypted=True)
    if not compare_file(source, segment, hasher, report, f"entry {entry.seq}"):
        raise DecryptFailed(
            f"{report.findings[0].message} (part 0 is the header, part k is record k - 1)"
        )
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            result = decrypt(src, dst, key)
            dst.flush()
            os.fsync(dst.fileno())
        plaintext = segment["encryption"].get("plaintext")
        if result.final and segment["state"] == "recovered":
            raise DecryptFailed(
                f"entry {entry.seq} says recovered, but the file has its final record"
            )
        if not result.final and segment["state"] != "recovered":
            raise DecryptFailed(f"{source.name} ends without its final record: cut short")
        if plaintext is not None and result.plaintext_sha256 != plaintext["sha256"]:
            raise DecryptFailed(f"the plaintext's SHA-256 is not the one entry {entry.seq} signed")
        cut = 0 if result.final else _cut_at_whole_fragment(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Outcome(entry.seq, result.records, result.final, result.plaintext_bytes,
                   result.plaintext_sha256, cut)  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "decrypt",
        help="decrypt an encrypted segment with the agency key and check it against its entry",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="a segment file NAME.mp4.enc")
    parser.add_argument("out", type=Path, metavar="OUT", help="where to write the MP4")
    parser.add_argument("--key", type=Path, required=True, help="the agency private key (PEM)")
    parser.add_argument("--evidence", type=Path,
                        help="the directory with ledger.jsonl and device.pem (default: FILE's)")  # fmt: skip
    parser.set_defaults(func=run_decrypt)
    return parser


def run_decrypt(args: argparse.Namespace) -> int:
    """0 decrypted and checked; 1 the file or its entry failed a check (OUT not written);
    2 unreadable input."""
    if args.out.exists():
        print(f"liuhen central decrypt: {args.out} exists; choose a new name", file=sys.stderr)
        return EX_UNREADABLE
    try:
        key = AgencyKey.load(args.key)
        if not args.file.is_file():
            raise OSError(f"{args.file}: no such file")
    except (EncryptionError, OSError) as exc:
        print(f"liuhen central decrypt: {exc}", file=sys.stderr)
        return EX_UNREADABLE
    try:
        done = decrypt_segment(args.file, args.out, key, args.evidence or args.file.parent)
    except (DecryptFailed, EncryptionError) as exc:
        print(f"liuhen central decrypt: {args.file.name}: {exc}", file=sys.stderr)
        return EX_FAILED
    state = "whole" if done.final else "recovered after a power cut"
    print(f"{args.out}: {done.plaintext_bytes - done.cut_bytes} bytes of MP4 from {done.records} "
          f"records, {state}; matches entry {done.entry_seq}")  # fmt: skip
    if done.final:
        print(f"plaintext sha256 {done.plaintext_sha256} (signed by the unit while recording)")
    elif done.cut_bytes:
        print(f"{done.cut_bytes} bytes after the last whole fragment were left out")
    return EX_OK
