"""Verification: is this evidence what the unit recorded, and is anything missing?

Owns: checking a ledger and the files beside it — every signature, the hash chain,
sequence numbers, the signed head, each file's bytes part by part, media-time
continuity within each recording, and files nobody signed — and naming each culprit
precisely. Must not: trust anything in the directory it was not asked to trust: the
certificate found beside the evidence is only accepted as a trust anchor when nothing
else is given, and the report says so.

It streams: files are hashed in one sequential pass each, the ledger is read line by
line; memory holds a name per segment and a few hashes, not media.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from evidence.certs import load_chain_pem, verify_device_chain
from evidence.envelope import Signed, sha256_hex
from evidence.ledger import (
    CERT_FILE,
    GENESIS_PREV,
    HEAD_FILE,
    HEAD_TYPE,
    LEDGER_FILE,
    Entry,
    key_id,
)
from evidence.parts import PREFIX, StreamingPartHasher, part_scheme
from evidence.records import EncryptionError, RecordPartHasher

Severity = Literal["error", "warning", "notice"]
CHUNK = 1 << 20
RECENT = 4096  # entries whose hash is kept for out-of-order links


class UnreadableInput(Exception):
    """PATH, the ledger or a trust anchor cannot be read at all (exit status 2)."""


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    where: str
    message: str


@dataclass
class Report:
    path: str
    anchored: bool = False
    entries: int = 0
    segments: int = 0
    withheld: int = 0
    encrypted: int = 0
    bytes_hashed: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def add(self, severity: Severity, code: str, where: str, message: str) -> None:
        self.findings.append(Finding(severity, code, where, message))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def find_evidence_dir(path: Path) -> Path:
    for candidate in (path, path / "evidence"):
        if (candidate / LEDGER_FILE).is_file():
            return candidate
    raise UnreadableInput(f"{path}: no {LEDGER_FILE} here or in {path / 'evidence'}")


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = load_chain_pem(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UnreadableInput(f"{path}: cannot read certificates ({exc})") from None
    if not certs:
        raise UnreadableInput(f"{path}: no certificate in it")
    return certs


def device_key(
    evidence: Path, trust: Path | None, report: Report
) -> tuple[ec.EllipticCurvePublicKey, str | None]:
    """The public key entries must be signed with, and the device id its certificate names."""
    chain = _load_certs(evidence / CERT_FILE)
    leaf = chain[0]
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise UnreadableInput(f"{evidence / CERT_FILE}: not an EC device certificate")
    cns = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    device = str(cns[0].value) if cns else None
    if trust is None:
        report.add("warning", "not-anchored", CERT_FILE,
                   f"checked against the {CERT_FILE} found beside the evidence; give --trust "
                   "with the agency CA or the unit's certificate to anchor it")  # fmt: skip
        return public, device
    anchors = _load_certs(trust)
    if any(a.public_key() == public for a in anchors):
        report.anchored = True
        return public, device
    try:
        verify_device_chain(leaf, chain[1:], anchors)
        report.anchored = True
    except Exception as exc:
        report.add("error", "foreign-key", CERT_FILE,
                   f"the device certificate ({leaf.subject.rfc4514_string()}) does not chain to "
                   f"the trusted anchor {trust.name}: {exc}")  # fmt: skip
    return public, device


Hasher = StreamingPartHasher | RecordPartHasher


def hash_file(
    path: Path, progress: Callable[[int], None], encrypted: bool = False, scheme: str = PREFIX
) -> Hasher:
    """Part digests (under ``scheme``) in one sequential read. The parts cover every
    byte, so equal parts and length mean an equal file: no separate whole-file digest.
    ``encrypted``: parts are the records of a LIUHENC1 file (no key is needed)."""
    hasher: Hasher = (
        RecordPartHasher(whole_file=False, scheme=scheme)
        if encrypted
        else StreamingPartHasher(whole_file=False, scheme=scheme)
    )
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            try:
                hasher.update(chunk)
            except EncryptionError:  # framing broken here: the parts so far still count
                break
            progress(len(chunk))
    return hasher


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def compare_file(
    path: Path, seg: dict[str, Any], hasher: Hasher, report: Report, where: str
) -> bool:
    """True if the file is exactly what the entry says; else name how it differs."""
    expected = seg["parts"]
    try:
        actual = hasher.finish()
    except ValueError:
        actual = list(hasher.parts)  # the file ends inside a box
    if (
        hasher.position == seg["bytes"]
        and [[p.offset, p.length, p.sha256] for p in actual] == expected
    ):
        return True
    intact = 0
    for exp, got in zip(expected, actual, strict=False):
        if [got.offset, got.length, got.sha256] != exp:
            break
        intact += 1
    if hasher.position < seg["bytes"] and (intact == len(actual) or intact >= len(actual) - 1):
        ok_bytes = sum(p[1] for p in expected[:intact])
        report.add("error", "truncated", path.name,
                   f"{where}: file is {hasher.position} of {seg['bytes']} bytes; parts 0..{intact - 1} "
                   f"(the first {ok_bytes} bytes) are intact and still prove their media")  # fmt: skip
    elif intact < len(expected):
        bad = expected[intact]
        report.add("error", "altered", path.name,
                   f"{where}: part {intact} (bytes {bad[0]}..{bad[0] + bad[1] - 1}) differs from what "
                   f"the unit signed; parts before it are intact")  # fmt: skip
    else:
        report.add(
            "error",
            "altered",
            path.name,
            f"{where}: {hasher.position - seg['bytes']} bytes appended",
        )
    return False


@dataclass
class _Chain:
    expected_seq: int = 0
    last_hash: str | None = None
    recent: dict[int, str] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    software: int = 0
    unsynced: int = 0
    last_seq: int = -1


def _check_link(entry: Entry, chain: _Chain, report: Report, where: str) -> None:
    seq, prev = entry.seq, entry.header["prev"]
    if seq == chain.expected_seq:
        if seq == 0 and prev != GENESIS_PREV:
            report.add("error", "chain-broken", where, "the first entry does not start a chain")
        elif seq > 0 and chain.last_hash is not None and prev != chain.last_hash:
            report.add("error", "chain-broken", where,
                       f"does not follow entry {seq - 1}: an entry was altered, inserted or replaced")  # fmt: skip
    elif seq > chain.expected_seq:
        chain.skipped.update(range(chain.expected_seq, seq))
    elif seq in chain.skipped:
        chain.skipped.discard(seq)
        report.add(
            "error",
            "reordered",
            where,
            f"appears after entry {chain.last_seq}: entries are out of order",
        )
        if chain.recent.get(seq - 1, prev) != prev:
            report.add("error", "chain-broken", where, f"does not follow entry {seq - 1}")
    else:
        report.add("error", "duplicate", where, f"sequence number {seq} appears twice")
    chain.recent[seq] = entry.hash
    if len(chain.recent) > RECENT:
        chain.recent.pop(next(iter(chain.recent)))
    chain.expected_seq = max(chain.expected_seq, seq + 1)
    chain.last_hash = entry.hash if seq + 1 == chain.expected_seq else chain.last_hash
    chain.last_seq = seq


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open(path, "rb") as f:
            yield from enumerate(f, start=1)
    except OSError as exc:
        raise UnreadableInput(f"{path}: {exc.strerror}") from None


def verify(path: Path, trust: Path | None = None, progress: Callable[[int], None] = lambda n: None,
           on_total: Callable[[int], None] = lambda n: None) -> Report:  # fmt: skip
    """Check the evidence at ``path`` (a data dir, an evidence dir or an export)."""
    evidence = find_evidence_dir(path)
    report = Report(str(evidence))
    public, cert_device = device_key(evidence, trust, report)
    my_keyid = key_id(public)
    files = {p.name: p for pattern in ("*.mp4", "*.mp4.enc") for p in evidence.glob(pattern)}
    on_total(sum(p.stat().st_size for p in files.values()))
    seen: set[str] = set()
    mismatched: dict[str, str] = {}  # file name -> its actual sha256
    chain = _Chain()
    device: str | None = None
    last_of_recording: dict[
        int, tuple[str, int | None, str]
    ] = {}  # recording -> (name, end, state)

    for number, line in _lines(evidence / LEDGER_FILE):
        where = f"{LEDGER_FILE} line {number}"
        try:
            entry = Entry.from_line(line)
        except ValueError as exc:
            report.add("error", "corrupt-entry", where, f"unreadable entry: {exc}")
            continue
        report.entries += 1
        where = f"entry {entry.seq}"
        if entry.envelope.keyid != my_keyid:
            report.add("error", "foreign-key", where,
                       f"signed by another key ({entry.envelope.keyid[:16]}…), not this unit's ({my_keyid[:16]}…)")  # fmt: skip
        elif not entry.envelope.verify(public):
            report.add(
                "error", "bad-signature", where, "signature does not match: the entry was altered"
            )
        device = device or entry.header["device"]
        if entry.header["device"] != (cert_device or device):
            report.add("error", "foreign-device", where,
                       f"made by device {entry.header['device']!r}, not {cert_device or device!r}")  # fmt: skip
        _check_link(entry, chain, report, where)
        chain.software += entry.header.get("key") == "software"
        chain.unsynced += entry.header.get("clock_synced") is False
        if entry.body is None:
            report.withheld += 1
            continue
        if sha256_hex(entry.body) != entry.header["body"]:
            report.add("error", "altered", where, "body does not match the signed header")
            continue
        body = entry.body_json()
        if entry.kind == "segment" and isinstance(body.get("segment"), dict):
            _check_segment(
                body["segment"],
                evidence,
                files,
                seen,
                mismatched,
                last_of_recording,
                report,
                where,
                progress,
            )

    _check_end(evidence, chain, public, my_keyid, report)
    for name in sorted(set(files) - seen):
        report.add(
            "error",
            "unsigned",
            name,
            "no ledger entry covers this file: it was added, or its entry was removed",
        )
        mismatched[name] = file_sha256(files[name])
    if mismatched:
        _explain_swaps(evidence, mismatched, report)
    for name in sorted(p.name for p in evidence.glob("*.part")):
        report.add(
            "notice",
            "in-progress",
            name,
            "a segment still being written (or interrupted and not yet recovered)",
        )
    if report.encrypted:
        report.add("notice", "encrypted", LEDGER_FILE,
                   f"{report.encrypted} segments are encrypted for the agency's key: their "
                   "ciphertext was checked record by record; `liuhen central decrypt` checks "
                   "the plaintext against the signed hash")  # fmt: skip
    if chain.software:
        report.add("warning", "software-key", LEDGER_FILE,
                   f"{chain.software} entries were signed by a DEVELOPMENT software key, not a hardware token")  # fmt: skip
    if chain.unsynced:
        report.add("warning", "clock-unsynced", LEDGER_FILE,
                   f"{chain.unsynced} entries were made while the unit's clock was not synchronised")  # fmt: skip
    return report


def _check_segment(seg: dict[str, Any], evidence: Path, files: dict[str, Path], seen: set[str],
                   mismatched: dict[str, str], last_of_recording: dict[int, tuple[str, int | None, str]],
                   report: Report, where: str, progress: Callable[[int], None]) -> None:  # fmt: skip
    name = str(seg["name"])
    report.segments += 1
    seen.add(name)
    where = f"{where} ({name})"
    end_us = seg.get("media_end_us")
    if seg["state"] == "recovered":
        ends = (f"media ends at {end_us / 1e6:.3f} s of recording {seg['recording']}"
                if isinstance(end_us, int) else "encrypted, so where its media ends is known "
                "only after decryption (`liuhen central decrypt`)")  # fmt: skip
        report.add("notice", "recovered", name,
                   f"{where}: recovered after a power cut or crash; {ends}")  # fmt: skip
    if isinstance(seg.get("encryption"), dict):
        report.encrypted += 1
    recording = seg.get("recording")
    if isinstance(recording, int):
        previous = last_of_recording.get(recording)
        if (
            previous is not None
            and previous[2] != "recovered"
            and previous[1] is not None  # an encrypted file's end the unit could not read
            and isinstance(seg.get("media_start_us"), int)
            and abs(seg["media_start_us"] - previous[1]) > 1000
        ):
            report.add("error", "discontinuous", name,
                       f"{where}: media starts at {seg['media_start_us'] / 1e6:.3f} s but {previous[0]} "
                       f"ended at {previous[1] / 1e6:.3f} s")  # fmt: skip
        last_of_recording[recording] = (
            name,
            end_us if isinstance(end_us, int) else None,
            str(seg["state"]),
        )
    path = files.get(name)
    if path is None:
        report.add("error", "missing", name, f"{where}: the segment file is not in {evidence}")
        return
    encrypted = isinstance(seg.get("encryption"), dict)
    hasher = hash_file(path, progress, encrypted, part_scheme(seg))
    report.bytes_hashed += hasher.position
    if not compare_file(path, seg, hasher, report, where):
        mismatched[name] = file_sha256(path)


def _check_end(
    evidence: Path, chain: _Chain, public: ec.EllipticCurvePublicKey, my_keyid: str, report: Report
) -> None:
    for seq in sorted(chain.skipped):
        report.add(
            "error",
            "missing-entry",
            f"entry {seq}",
            "absent from the ledger: removed or never copied",
        )
    head_path = evidence / HEAD_FILE
    if not head_path.exists():
        report.add(
            "warning",
            "no-head",
            HEAD_FILE,
            "no signed head: a ledger cut short at the end cannot be detected offline",
        )
        return
    try:
        signed = Signed.from_json(json.loads(head_path.read_bytes()))
        head = json.loads(signed.payload)
        good = (
            signed.payload_type == HEAD_TYPE and signed.keyid == my_keyid and signed.verify(public)
        )
    except (ValueError, KeyError) as exc:
        report.add("error", "bad-head", HEAD_FILE, f"unreadable: {exc}")
        return
    if not good:
        report.add("error", "bad-head", HEAD_FILE, "signature does not match this unit's key")
    elif head["seq"] > chain.expected_seq - 1:
        report.add("error", "truncated-ledger", LEDGER_FILE,
                   f"the signed head names entry {head['seq']} but the ledger ends at entry "
                   f"{chain.expected_seq - 1}: {head['seq'] - chain.expected_seq + 1} entries removed from the end")  # fmt: skip
    elif head["seq"] == chain.expected_seq - 1 and chain.last_hash != head["entry"]:
        report.add(
            "error",
            "chain-broken",
            f"entry {head['seq']}",
            "differs from the entry the signed head names",
        )


def _explain_swaps(evidence: Path, mismatched: dict[str, str], report: Report) -> None:
    """Second pass over the ledger: does an altered file hold another segment's content?"""
    by_hash = {digest: name for name, digest in mismatched.items()}
    for _, line in _lines(evidence / LEDGER_FILE):
        try:
            entry = Entry.from_line(line)
            seg = entry.body_json().get("segment") if entry.body is not None else None
        except ValueError:
            continue
        if (
            isinstance(seg, dict)
            and seg.get("sha256") in by_hash
            and by_hash[seg["sha256"]] != seg.get("name")
        ):
            holder = by_hash[seg["sha256"]]
            report.add("error", "misplaced", holder,
                       f"holds the content of {seg['name']} (entry {entry.seq}): files were swapped or renamed")  # fmt: skip
