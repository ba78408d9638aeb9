"""Exporting a subset of the evidence (one case's recordings) that verifies on its own.

Owns: choosing what an export discloses. The package holds every ledger entry's signed
header, so the whole chain and every signature verify and nothing can be shown missing
from the middle; it holds bodies and files only for the chosen recordings. Other
recordings' entries travel as headers alone: their names, hashes and events stay
undisclosed (docs/decisions/0004-ledger-format.md). Must not: re-sign or alter entries.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evidence.ledger import CERT_FILE, HEAD_FILE, LEDGER_FILE, Entry
from evidence.verify import find_evidence_dir

README = """\
liuhen evidence export

This directory holds the segment files of recordings {recordings} of unit {device},
the unit's ledger (every entry's signed header; bodies only for these recordings), its
signed head and its device certificate. Check it, offline, with:

    liuhen verify . --trust <agency CA certificate>

or check one file with sha256sum and openssl as docs/FORMAT.md describes.
"""


@dataclass(frozen=True)
class ExportSummary:
    entries: int
    disclosed: int
    files: list[str]


def _belongs(body: dict[str, Any], recordings: set[int], names: set[str]) -> bool:
    if "genesis" in body:
        return True
    segment = body.get("segment")
    if isinstance(segment, dict):
        return segment.get("recording") in recordings
    detail = (body.get("event") or {}).get("detail") or {}
    position = detail.get("position") or {}  # marks, credential shown, notes, log-ins
    return (
        detail.get("recording_id") in recordings
        or position.get("recording_id") in recordings
        or detail.get("segment") in names
        or detail.get("name") in names
    )


def export(path: Path, out: Path, recordings: set[int]) -> ExportSummary:
    """Write the package to ``out`` (a new directory)."""
    evidence = find_evidence_dir(path)
    out.mkdir(parents=True, exist_ok=False)
    names: set[str] = set()
    lines: list[bytes] = []
    disclosed = 0
    device = "?"
    with open(evidence / LEDGER_FILE, "rb") as f:
        for line in f:
            entry = Entry.from_line(line)
            device = entry.header["device"]
            body = entry.body_json() if entry.body is not None else {}
            segment = body.get("segment")
            if isinstance(segment, dict) and segment.get("recording") in recordings:
                names.add(str(segment["name"]))
            if body and _belongs(body, recordings, names):
                disclosed += 1
                lines.append(Entry(entry.envelope, entry.header, entry.body, entry.file).to_line())
            else:
                lines.append(Entry(entry.envelope, entry.header, None).to_line(with_body=False))
    (out / LEDGER_FILE).write_bytes(b"".join(lines))
    for name in (CERT_FILE, HEAD_FILE):
        if (evidence / name).exists():
            shutil.copy2(evidence / name, out / name)
    for name in sorted(names):
        shutil.copy2(evidence / name, out / name)
        os.chmod(out / name, 0o444)
    (out / "README.txt").write_text(
        README.format(recordings=", ".join(map(str, sorted(recordings))), device=device)
    )
    return ExportSummary(len(lines), disclosed, sorted(names))
