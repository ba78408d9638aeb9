"""`liuhen verify PATH` — the check a court, an auditor or a defence lawyer runs — and
`liuhen export PATH OUT --recording N`, the package they are given.

Owns: presenting evidence.verify's report — a progress bar on a terminal, one line per
finding, a JSON document with --json — and the exit status: 0 intact, 1 an integrity
failure (or, with --strict, any warning), 2 bad usage or unreadable input.
Must not: check anything itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evidence.verify import Report, UnreadableInput, verify

_MARK = {"error": "FAIL", "warning": "warn", "notice": "note"}


def _print_human(report: Report) -> None:
    for f in sorted(
        report.findings, key=lambda f: ("error", "warning", "notice").index(f.severity)
    ):
        print(f"{_MARK[f.severity]}  {f.code:<16} {f.where}: {f.message}")
    errors = sum(f.severity == "error" for f in report.findings)
    verdict = (
        "INTACT" if report.ok else f"INTEGRITY FAILURE ({errors} problem{'s' * (errors != 1)})"
    )
    print(
        f"{verdict}: {report.entries} entries, {report.segments} segment files "
        f"({report.bytes_hashed / 1e6:.1f} MB hashed)"
        + (f", {report.withheld} entries withheld (other cases)" if report.withheld else "")
        + ("" if report.anchored else ", NOT anchored to a trusted certificate")
    )


def cmd_verify(args: argparse.Namespace) -> int:
    show_bar = sys.stderr.isatty() and not args.json
    try:
        if show_bar:
            from rich.progress import (  # the service path never loads rich (ADR 0019)
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            with Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task("verifying", total=None)
                report = verify(
                    args.path, args.trust,
                    progress=lambda n: bar.advance(task, n),
                    on_total=lambda n: bar.update(task, total=n),
                )  # fmt: skip
        else:
            report = verify(args.path, args.trust)
    except UnreadableInput as exc:
        print(f"liuhen verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        _print_human(report)
    if not report.ok:
        return 1
    if args.strict and any(f.severity == "warning" for f in report.findings):
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from evidence.export import export

    try:
        summary = export(args.path, args.out, set(args.recording))
    except UnreadableInput as exc:
        print(f"liuhen export: {exc}", file=sys.stderr)
        return 2
    except FileExistsError:
        print(f"liuhen export: {args.out} exists; choose a new directory", file=sys.stderr)
        return 2
    if not summary.files:
        print(
            f"liuhen export: no segments of recording(s) {args.recording} in {args.path}",
            file=sys.stderr,
        )
        return 1
    print(
        f"exported {len(summary.files)} segment files and {summary.entries} ledger entries "
        f"({summary.disclosed} with their content, the rest as signed headers only) to {args.out}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser(
        "export", help="copy one case's recordings into a package that verifies on its own"
    )
    e.add_argument("path", type=Path, help="a data directory or its evidence/ directory")
    e.add_argument("out", type=Path, help="a new directory for the package")
    e.add_argument(
        "--recording",
        type=int,
        action="append",
        required=True,
        help="recording number (repeatable)",
    )
    e.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="check evidence: signatures, chain, files, continuity")
    p.add_argument(
        "path", type=Path, help="a data directory, its evidence/ directory, or an export"
    )
    p.add_argument(
        "--trust", type=Path, help="PEM: the agency CA (root) or the unit's own certificate"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--strict", action="store_true", help="fail (exit 1) on warnings too, e.g. a software key"
    )
    p.set_defaults(func=cmd_verify)
