"""`liuhen central export CASE-OR-RANGE DIR`: an evidence package from the centre's holdings.

Owns: turning CASE-OR-RANGE into recordings (``DEVICE/rN`` one recording; ``A..B`` an
ISO 8601 time range; anything else, or ``case:X``, a case number carried in entries'
context), and writing, for each unit concerned, the same package ``liuhen export``
writes on a unit — by handing ``evidence.export`` the centre's copy of that unit's ledger
(every line as received over MQTT, bodies included), its device certificate and the
stored segment files — then checking each package with ``evidence.verify`` and writing
the report beside it. Must not: re-sign, alter or choose entries itself (evidence.export
decides what is disclosed), or write into the collector's store.

    DIR/<device>/ledger.jsonl, device.pem, <segment>.mp4…, README.txt   (evidence.export)
    DIR/trusted-certificates.pem   the centre's trust anchors, for `liuhen verify --trust`
    DIR/verification-report.json   evidence.verify's report per unit, run at export time
    DIR/README.txt
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from central.blobs import Blobs
from central.config import CentralConfigError, load
from central.store import CentralStore, StoreError, open_store
from central.trust import Trust
from evidence.export import export as export_package
from evidence.ledger import CERT_FILE, LEDGER_FILE
from evidence.verify import verify

RECORDING = re.compile(r"^(?P<device>[A-Za-z0-9][A-Za-z0-9._-]{0,63})[/:]r?(?P<n>\d+)$")
TRUST_FILE = "trusted-certificates.pem"
REPORT_FILE = "verification-report.json"


class ExportError(RuntimeError):
    """The export cannot be made as asked; the message says why (nothing was written)."""


@dataclass
class Selection:
    what: str
    recordings: dict[str, set[int]] = field(default_factory=dict)


def _instant(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ExportError(f"{text!r} is not an ISO 8601 time (e.g. 2024-05-02T08:00:00Z)") from None
    if moment.tzinfo is None:
        raise ExportError(f"{text!r}: give a time zone (Z for UTC)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def select(store: CentralStore, text: str) -> Selection:
    """The recordings CASE-OR-RANGE names, per unit."""
    match = RECORDING.match(text)
    if match:
        pairs = [(match["device"], int(match["n"]))]
        what = f"recording {match['n']} of {match['device']}"
    elif ".." in text:
        start, end = (_instant(t) for t in text.split("..", 1))
        if start >= end:
            raise ExportError(f"time range {text!r}: the start is not before the end")
        pairs, what = store.recordings_between(start, end), f"recordings between {start} and {end}"
    else:
        case = text.removeprefix("case:")
        pairs, what = store.recordings_of_case(case), f"case {case}"
    selection = Selection(what)
    for device, recording in pairs:
        selection.recordings.setdefault(device, set()).add(recording)
    return selection


def _device_pem(store: CentralStore, device: str) -> str:
    """The certificate of the key that signed the unit's newest entry."""
    lines = list(store.lines(device))
    if not lines:
        raise ExportError(f"{device}: the centre holds no ledger entry of this unit")
    keyid = json.loads(lines[-1][1])["signatures"][0]["keyid"]
    for row in store.certificates(device):
        if row["key_id"] == keyid:
            return str(row["pem"])
    raise ExportError(f"{device}: no certificate for its key {keyid[:16]}… (no birth received, not in the trust directory)")  # fmt: skip


def _stage(store: CentralStore, blobs: Blobs, device: str, recordings: set[int], staging: Path,
           allow_incomplete: bool) -> list[str]:  # fmt: skip
    """A directory evidence.export can read: the full ledger, device.pem, the files (links)."""
    staging.mkdir()
    with open(staging / LEDGER_FILE, "wb") as f:
        for _, line in store.lines(device):
            f.write(line)
    (staging / CERT_FILE).write_text(_device_pem(store, device))
    missing = []
    for row in store.segments(device, limit=1 << 30):
        if row["recording"] not in recordings:
            continue
        if row["upload"] == "stored":
            (staging / row["name"]).symlink_to(blobs.stored(row["sha256"]))
        else:
            missing.append(f"{row['name']} ({row['upload']})")
    if missing and not allow_incomplete:
        raise ExportError(f"{device}: segments not (yet) stored at the centre: {', '.join(sorted(missing))}; "
                          "wait for the upload, or give --allow-incomplete (verify will name them missing)")  # fmt: skip
    return missing


def export(store: CentralStore, blobs: Blobs, trust_dir: Path, text: str, out: Path,
           allow_incomplete: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the package; the verification report (``ok`` False if any unit fails)."""
    selection = select(store, text)
    if not selection.recordings:
        raise ExportError(f"nothing found for {selection.what}")
    if out.exists():
        raise ExportError(f"{out} exists; choose a new directory")
    trust_pem = "".join(p.read_text() for p in sorted(trust_dir.glob("*.pem")) + sorted(trust_dir.glob("*.crt")))  # fmt: skip
    Trust.from_dir(trust_dir, "trust.directory")  # readable, or say which file is not
    with tempfile.TemporaryDirectory(prefix="liuhen-export-") as tmp:
        staged = {}
        for device, recordings in sorted(selection.recordings.items()):
            staged[device] = _stage(store, blobs, device, recordings, Path(tmp) / device, allow_incomplete)  # fmt: skip
        out.mkdir(parents=True)
        (out / TRUST_FILE).write_text(trust_pem)
        reports = {}
        for device, recordings in sorted(selection.recordings.items()):
            export_package(Path(tmp) / device, out / device, recordings)
            report = verify(out / device, out / TRUST_FILE)
            reports[device] = {"recordings": sorted(recordings), "not_stored": staged[device], **report.to_json()}  # fmt: skip
    document = {"selection": selection.what, "ok": all(r["ok"] for r in reports.values()), "units": reports}  # fmt: skip
    (out / REPORT_FILE).write_text(json.dumps(document, indent=2) + "\n")
    (out / "README.txt").write_text(
        f"liuhen evidence package: {selection.what}\n\n"
        f"One directory per unit, each checkable offline on its own:\n\n"
        + "".join(
            f"    liuhen verify {d} --trust <agency CA certificate>\n" for d in sorted(reports)
        )
        + f"\n{TRUST_FILE} holds the certificates the collector trusted; anchor with your own "
        "copy of the agency CA where you can.\n"
        f"{REPORT_FILE} is the check the collector made when it wrote this package.\n"
    )
    return document


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write an evidence package from the centre's holdings, verifiable offline",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--config", type=Path, required=True, help="the collector's TOML configuration")  # fmt: skip
    parser.add_argument("selection", metavar="CASE-OR-RANGE",
                        help="DEVICE/rN (one recording), START..END (ISO 8601 times), or a case number (case:X)")  # fmt: skip
    parser.add_argument("out", type=Path, metavar="DIR", help="a new directory for the package")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="write the package even if some segments are not stored yet")  # fmt: skip
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    """0 written and verified intact; 1 written but verification found problems;
    2 not written (the message says why); 78 bad configuration."""
    try:
        cfg = load(args.config)
        store = open_store(*cfg.database())
    except (CentralConfigError, StoreError) as exc:
        print(f"liuhen central export: {exc}", file=sys.stderr)
        return 78
    try:
        document = export(store, Blobs(cfg.data_dir), Path(cfg.trust.directory), args.selection,
                          args.out, args.allow_incomplete)  # fmt: skip
    except (ExportError, ValueError, OSError) as exc:
        if args.out.exists() and not any(args.out.iterdir()):
            shutil.rmtree(args.out)
        print(f"liuhen central export: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    for device, report in document["units"].items():
        errors = [f for f in report["findings"] if f["severity"] == "error"]
        print(f"{args.out / device}: recordings {report['recordings']}: "
              f"{'INTACT' if report['ok'] else f'{len(errors)} PROBLEMS'} "
              f"({report['segments']} segments, {report['entries']} entries)")  # fmt: skip
        for f in errors:
            print(f"  FAIL {f['code']} {f['where']}: {f['message']}")
    return 0 if document["ok"] else 1
