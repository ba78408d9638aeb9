"""`liuhen ctl …` and `liuhen note …`: talk to the running daemon over its control socket.

Owns: turning words into control requests (firmware_py.control) and replies into what a
clerk or an officer reads. Must not: act on the unit itself; if no daemon answers,
nothing was recorded, and it says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firmware_py.config import load
from firmware_py.control import ControlError, request
from firmware_py.daemon import EX_UNAVAILABLE, DataDir

USAGE = ("status | record start | record stop | mark [TEXT…] | credential | login CARD | "
         "note TEXT… | case NUMBER | case --clear")  # fmt: skip


def parse_words(words: list[str]) -> dict[str, Any] | None:
    """The control request for ``words``, or None if they mean nothing."""
    head, rest = words[0], words[1:]
    text = " ".join(rest)
    if head == "status" and not rest:
        return {"cmd": "status"}
    if head == "record" and rest in (["start"], ["stop"]):
        return {"cmd": "record", "action": rest[0]}
    if head == "mark":
        return {"cmd": "mark", **({"text": text} if text else {})}
    if head == "credential" and not rest:
        return {"cmd": "credential"}
    if head == "login" and len(rest) == 1:
        return {"cmd": "login", "card": rest[0]}
    if head == "note" and rest:
        return {"cmd": "note", "text": text}
    if head == "case" and rest == ["--clear"]:
        return {"cmd": "case", "case": None}
    if head == "case" and len(rest) == 1:
        return {"cmd": "case", "case": rest[0]}
    return None


def _data_dir(args: argparse.Namespace) -> Path | None:
    if args.data is not None:
        return Path(args.data)
    if args.config is not None:
        return Path(load(args.config).unit.data_dir)
    return None


def print_status(s: dict[str, Any]) -> None:
    unit = s.get("unit") or {}
    faults = ", ".join(unit.get("faults") or []) or "none"
    officer = s.get("officer")
    sealer = s.get("sealer") or {}
    print(f"unit      {s['device_id']} ({s.get('profile', 'body')})")
    print(f"state     {unit.get('mode', s['state'])}   faults: {faults}")
    print(f"officer   {officer['id'] + ' ' + officer['name'] if officer else '-'}")
    if s.get("case"):
        print(f"case      {s['case']}")
    print(f"segment   {s['segment'] or '-'}")
    print(f"segments  {s['segments_sealed']} sealed this run")
    print(f"ledger    entry {sealer.get('last_seq')}, {sealer.get('backlog', 0)} waiting"
          + (f"  SEALING HALTED: {sealer.get('error')}" if sealer.get("state") == "fault" else ""))  # fmt: skip
    print(
        f"storage   {s['storage_free_bytes'] / 1e9:.1f} GB free of {s['storage_total_bytes'] / 1e9:.1f} GB"
    )


def send(args: argparse.Namespace, message: dict[str, Any], who: str) -> int:
    data = _data_dir(args)
    if data is None:
        print(f"{who}: give --data DIR or --config FILE", file=sys.stderr)
        return 2
    try:
        reply = request(DataDir(data).control, message)
    except ControlError as exc:
        print(f"{who}: {exc}; nothing was recorded", file=sys.stderr)
        return EX_UNAVAILABLE
    if args.json:
        print(json.dumps(reply, indent=2, ensure_ascii=False))
    elif reply.get("ok") and "status" in reply:
        print_status(reply["status"])
    elif reply.get("ok"):
        print("ok" + (f" ({reply['note']})" if reply.get("note") else ""))
    if not reply.get("ok"):
        print(f"{who}: {reply.get('error')}", file=sys.stderr)
        return 1
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    message = parse_words(args.words + (["--clear"] if args.clear else []))
    if message is None:
        print(
            f"liuhen ctl: unknown request {' '.join(args.words)!r}; try: {USAGE}", file=sys.stderr
        )
        return 2
    return send(args, message, "liuhen ctl")


def cmd_note(args: argparse.Namespace) -> int:
    return send(args, {"cmd": "note", "text": " ".join(args.text)}, "liuhen note")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="the daemon's data directory")
    p.add_argument("--config", type=Path, help="read the data directory from this configuration")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = sub.add_parser("ctl", help="talk to the running daemon: " + USAGE)
    _target(ctl)
    ctl.add_argument("words", nargs="+", metavar="REQUEST", help=USAGE)
    ctl.add_argument("--clear", action="store_true", help="with `case`: clear the case number")
    ctl.set_defaults(func=cmd_ctl)
    note = sub.add_parser(
        "note", help="file a written note, e.g. the reason recording was impossible"
    )
    _target(note)
    note.add_argument("text", nargs="+", help="the note")
    note.set_defaults(func=cmd_note)
