"""`liuhen central decrypt FILE OUT --key AGENCY.key.pem --trust CA.pem`: open an
encrypted segment.

Owns: decrypting one ``.mp4.enc`` file with the agency's private key and checking it
against the unit's signed ledger entry (the ledger beside the file, or ``--evidence
DIR``): the device certificate against the trust anchor, the entry's signature and
body, the header's device and name against the entry's, the ciphertext record by
record against the signed parts — in the same single read that decrypts, so the file
cannot change between check and use — and the plaintext's SHA-256 the unit signed
while recording. Must not: leave a plaintext that failed any check under OUT's name
(nor readable by others while it is written), or touch the original.

A segment recovered after a power cut has no final record and no signed plaintext hash
(the unit could not read its own file back); its records still authenticate under the
data key bound to the signed ciphertext, and the output is cut at its last whole MP4
fragment, as the unit does for a plain file.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from evidence.envelope import sha256_hex
from evidence.ledger import LEDGER_FILE, Entry
from evidence.parts import fragment_digests, iter_boxes, part_scheme, whole_fragment_prefix
from evidence.records import AgencyKey, EncryptionError, RecordPartHasher, decrypt
from evidence.verify import Report, UnreadableInput, compare_file, device_key

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
    anchored: bool
    notices: list[str] = field(default_factory=list)
    c2pa: bool = False


@dataclass(frozen=True)
class Signing:
    """The agency's C2PA signer: a P-256 key file and its CA-issued certificate chain."""

    key: Path
    chain: Path


def find_entry(evidence: Path, name: str, trust: Path | None) -> tuple[Entry, dict[str, Any], bool]:
    """The signed segment entry for ``name``: (entry, its segment body, anchored)."""
    report = Report(str(evidence))
    try:
        public, device = device_key(evidence, trust, report)
        lines = (evidence / LEDGER_FILE).read_bytes().splitlines(keepends=True)
    except (UnreadableInput, OSError) as exc:
        raise DecryptFailed(f"{evidence}: {exc}") from None
    refused = [f.message for f in report.findings if f.severity == "error"]
    if refused:
        raise DecryptFailed(refused[0])
    for line in lines:
        try:
            entry = Entry.from_line(line)
        except ValueError:
            continue
        if entry.kind != "segment" or entry.segment_name != name or entry.body is None:
            continue
        if not entry.envelope.verify(public) or sha256_hex(entry.body) != entry.header["body"]:
            raise DecryptFailed(f"entry {entry.seq} for {name} does not match its signature")
        if device is not None and entry.header.get("device") != device:
            raise DecryptFailed(f"entry {entry.seq} was made by another device than {device}")
        segment = entry.body_json()["segment"]
        if not isinstance(segment, dict) or not isinstance(segment.get("encryption"), dict):
            raise DecryptFailed(f"entry {entry.seq} says {name} was not encrypted")
        return entry, segment, report.anchored
    raise DecryptFailed(f"{evidence / LEDGER_FILE}: no segment entry for {name}")


class _HashingReader:
    """The source file, hashed part by part as the decryptor reads it (one read)."""

    def __init__(self, f: BinaryIO, scheme: str) -> None:
        self._f = f
        self.hasher = RecordPartHasher(whole_file=False, scheme=scheme)
        self.broken = False

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if not self.broken:
            try:
                self.hasher.update(data)
            except EncryptionError:
                self.broken = True  # compare_file names where it stops matching
        return data

    def tell(self) -> int:
        return self._f.tell()

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _cut_at_whole_fragment(path: Path) -> int:
    size = path.stat().st_size
    with open(path, "rb") as f:
        keep = whole_fragment_prefix(list(iter_boxes(f, size)))
    with open(path, "r+b") as f:
        f.truncate(keep)
    return size - keep


def _check_ciphertext(source: Path, segment: dict[str, Any], reader: _HashingReader,
                      seq: int) -> None:  # fmt: skip
    reader.drain()
    report = Report(str(source))
    if not compare_file(source, segment, reader.hasher, report, f"entry {seq}"):
        raise DecryptFailed(
            f"{report.findings[0].message} (part 0 is the header, part k is record k - 1)"
        )


def embed_c2pa(plain: Path, out: Path, signing: Signing, entry: Entry,
               segment: dict[str, Any]) -> None:  # fmt: skip
    """``out``: ``plain`` with a C2PA manifest signed by the agency, citing the entry; its
    media fragments must come out byte for byte those the unit signed."""
    from signer.c2pa_embed import C2paEmbedError, embed_manifest, segment_claim
    from signer.keys import KeyBackendError, KeySpec, open_backend

    facts = {
        "device": entry.header.get("device"), "recording": segment.get("recording"),
        "segment": segment.get("seq"), "state": segment.get("state"),
        "wall_start": segment.get("wall_start"), "wall_end": segment.get("wall_end"),
        "ledger_entry": {"seq": entry.seq, "hash": entry.hash},
        "ciphertext_sha256": segment.get("sha256"),
        "decrypted_by": "liuhen central decrypt (agency key)",
    }  # fmt: skip
    try:
        with open_backend(KeySpec(kind="software", path=str(signing.key))) as backend:
            embed_manifest(plain, out, backend, signing.chain.read_text(),
                           segment_claim(out.name, facts))  # fmt: skip
    except (C2paEmbedError, KeyBackendError, OSError) as exc:
        raise DecryptFailed(f"C2PA manifest not embedded: {exc}") from None
    if fragment_digests(out) != fragment_digests(plain):  # checked against the entry already
        out.unlink()
        raise DecryptFailed("embedding C2PA changed the media fragments; nothing written")


def decrypt_segment(
    source: Path,
    out: Path,
    key: AgencyKey,
    evidence: Path,
    trust: Path | None,
    signing: Signing | None = None,
) -> Outcome:
    entry, segment, anchored = find_entry(evidence, source.name, trust)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")  # C2PA goes by the suffix
    notices: list[str] = []
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise DecryptFailed(f"{tmp} exists: another decrypt is writing {out.name}, or one "
                            "was interrupted (remove it)") from None  # fmt: skip
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            reader = _HashingReader(src, part_scheme(segment))
            try:
                result = decrypt(reader, dst, key)  # type: ignore[arg-type]
            except EncryptionError:
                _check_ciphertext(source, segment, reader, entry.seq)  # altered: say where
                raise  # the signed ciphertext itself does not open: wrong key, or a fault
            _check_ciphertext(source, segment, reader, entry.seq)
            dst.flush()
            os.fsync(dst.fileno())
        header = result.header
        if header["device"] != entry.header.get("device") or header["segment"] != source.name:
            raise DecryptFailed(
                f"the file's header names {header['device']}/{header['segment']}, "
                f"not the entry's {entry.header.get('device')}/{source.name}"
            )
        plaintext = segment["encryption"].get("plaintext")
        if plaintext is not None and result.plaintext_sha256 != plaintext.get("sha256"):
            raise DecryptFailed(f"the plaintext's SHA-256 is not the one entry {entry.seq} signed")
        recovered = segment.get("state") == "recovered"
        if result.final == recovered:  # a power cut in sealing's or recovery's last step
            notices.append(
                f"entry {entry.seq} says {segment.get('state')}, the file "
                + ("has its final record" if result.final else "ends without its final record")
                + ": a power cut between its last write and its renaming; the ciphertext is the"
                " one the unit signed"
            )
        cut = 0 if result.final else _cut_at_whole_fragment(tmp)
        if signing is None:
            os.link(tmp, out)  # never over a file that appeared meanwhile
        else:
            embed_c2pa(tmp, out, signing, entry, segment)
            os.chmod(out, 0o600)
    finally:
        tmp.unlink(missing_ok=True)
    return Outcome(entry.seq, result.records, result.final, result.plaintext_bytes,
                   result.plaintext_sha256, cut, anchored, notices, signing is not None)  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "decrypt",
        help="decrypt an encrypted segment with the agency key and check it against its entry",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="a segment file NAME.mp4.enc")
    parser.add_argument("out", type=Path, metavar="OUT", help="where to write the MP4 (mode 0600)")
    parser.add_argument("--key", type=Path, required=True, help="the agency private key (PEM)")
    parser.add_argument("--trust", type=Path,
                        help="PEM: the agency CA or the unit's enrolled certificate (without it "
                             "the device.pem beside the ledger is taken on trust, and it says so)")  # fmt: skip
    parser.add_argument("--c2pa-key", type=Path, metavar="KEY.pem",
                        help="embed a C2PA manifest signed with this P-256 key of the agency")  # fmt: skip
    parser.add_argument("--c2pa-cert", type=Path, metavar="CHAIN.pem",
                        help="its CA-issued certificate chain (with --c2pa-key)")  # fmt: skip
    parser.add_argument("--evidence", type=Path,
                        help="the directory with ledger.jsonl and device.pem (default: FILE's)")  # fmt: skip
    parser.set_defaults(func=run_decrypt)
    return parser


def run_decrypt(args: argparse.Namespace) -> int:
    """0 decrypted and checked; 1 the file or its entry failed a check (OUT not written);
    2 unreadable input or OUT cannot be written."""
    os.umask(0o077)  # every file this command makes holds plaintext evidence
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
    if (args.c2pa_key is None) != (args.c2pa_cert is None):
        print("liuhen central decrypt: --c2pa-key and --c2pa-cert go together", file=sys.stderr)
        return EX_UNREADABLE
    signing = Signing(args.c2pa_key, args.c2pa_cert) if args.c2pa_key else None
    try:
        done = decrypt_segment(
            args.file, args.out, key, args.evidence or args.file.parent, args.trust, signing
        )
    except (DecryptFailed, EncryptionError) as exc:
        print(f"liuhen central decrypt: {args.file.name}: {exc}", file=sys.stderr)
        return EX_FAILED
    except OSError as exc:  # OUT's directory missing, a full disk: nothing was written
        print(f"liuhen central decrypt: {exc}", file=sys.stderr)
        return EX_UNREADABLE
    state = "whole" if done.final else "recovered after a power cut"
    print(f"{args.out}: {done.plaintext_bytes - done.cut_bytes} bytes of MP4 from {done.records} "
          f"records, {state}; matches entry {done.entry_seq}")  # fmt: skip
    if done.final:
        print(f"plaintext sha256 {done.plaintext_sha256} (signed by the unit while recording)")
    elif done.cut_bytes:
        print(f"{done.cut_bytes} bytes after the last whole fragment were left out")
    if done.c2pa:
        print("C2PA manifest embedded, signed by the agency and citing the entry; the media "
              "fragments are byte for byte those the unit signed")  # fmt: skip
    for notice in done.notices:
        print(f"note: {notice}")
    if not done.anchored:
        print("WARNING: the device certificate beside the ledger was taken on trust; "
              "give --trust with the agency CA to anchor it", file=sys.stderr)  # fmt: skip
    return EX_OK
