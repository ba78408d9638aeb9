"""The `liuhen` command line.

Owns: parsing arguments (argparse), turning failures into one clear message and a
documented exit status. Must not: contain the logic of any command.

Exit status: 0 success; 2 bad usage; 65 the index in the data directory is damaged; 69
a configured device is absent; 73 the data directory cannot be created; 75 another
liuhen holds the data directory; 78 bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from firmware_py import __version__, ctl_cli, evidence_cli, keys_cli
from firmware_py.config import ConfigError, load, render_markdown
from firmware_py.daemon import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_UNAVAILABLE,
    Daemon,
    DataDirError,
)
from hw.media import DeviceError
from signer.keys import KeyBackendError
from store.index import IndexUnavailable

log = logging.getLogger("liuhen")

# A failure every command can meet, and the exit status it ends with (the message is
# the exception's own, one line).
EXIT_STATUS: dict[type[Exception], int] = {
    ConfigError: EX_CONFIG,
    DeviceError: EX_UNAVAILABLE,
    DataDirError: EX_CANTCREAT,
    IndexUnavailable: EX_DATAERR,
    KeyBackendError: EX_UNAVAILABLE,
}


def _cmd_run(args: argparse.Namespace) -> int:
    from firmware_py.view import LiveView, LogView, StatusView

    config = load(args.config)
    data_dir = Path(args.data or config.unit.data_dir)
    live = args.live if args.live is not None else sys.stdout.isatty()
    view: StatusView = (
        LiveView(config.unit.device_id, str(data_dir)) if live else LogView(args.status_every)
    )
    try:
        return Daemon(config, data_dir, view).run()
    finally:
        view.close()


def _cmd_config_check(args: argparse.Namespace) -> int:
    from firmware_py.daemon import load_recipient

    config = load(args.config)
    print(f"{args.config}: valid configuration for unit {config.unit.device_id}")
    if config.encrypts():
        try:
            recipient = load_recipient(config)
        except ConfigError as exc:  # files are read at start; say now what will fail
            print(f"liuhen config check: note: {exc}", file=sys.stderr)
        else:
            assert recipient is not None
            print(f"segments are encrypted at rest for agency key {recipient.id[:16]}… "
                  f"({recipient.kem})")  # fmt: skip
    return 0


def _cmd_config_doc(args: argparse.Namespace) -> int:
    sys.stdout.write(render_markdown())
    return 0


def _cmd_index_rebuild(args: argparse.Namespace) -> int:
    from firmware_py.daemon import DataDir
    from firmware_py.rebuild import RebuildError, rebuild

    try:
        done = rebuild(DataDir(args.data))
    except RebuildError as exc:
        print(f"liuhen index rebuild: {exc}", file=sys.stderr)
        return EX_DATAERR
    if done.set_aside:
        print(f"the damaged index is kept as {done.set_aside} (nothing was deleted)")
    print(f"rebuilt {args.data / 'index.sqlite'} from the ledger: {done.entries} entries, "
          f"{done.segments} segments, {done.events} events, {done.recordings} recordings")  # fmt: skip
    for name in done.unsigned_files:
        print(f"  {name}: not in the ledger yet; journaled, the sealer signs it at the next start")
    if done.torn_tail:
        print("  the ledger ends in a torn line (a power cut); the next start sets it aside")
    if done.salvaged_events:
        print(f"  {done.salvaged_events} events journaled but not yet signed were salvaged "
              "from the damaged index; they are signed at the next start")  # fmt: skip
    if done.salvage_error:
        print(f"  events journaled but not yet signed could not be salvaged ({done.salvage_error});"
              " the signed index_rebuilt event says so")  # fmt: skip
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from hw.microphone import PortAudioSource

    with PortAudioSource._portaudio() as pa:
        devices = PortAudioSource.input_devices(pa)
    for index, name in devices:
        print(f"{index:3d}  {name}")
    if not devices:
        print("no PortAudio input devices")
    return 0


def _add_installed_commands(sub: Any) -> None:
    """Commands other installed parts of liuhen add (``liuhen central`` where the centre
    is installed too), found by the ``liuhen.commands`` entry point: the unit never
    imports them by name, and a unit without them is whole."""
    for entry_point in entry_points(group="liuhen.commands"):
        try:
            register = entry_point.load()
        except ImportError as exc:  # installed without its dependencies: say so, go on
            log.debug("liuhen %s is not available: %s", entry_point.name, exc)
            continue
        register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liuhen", description="Evidence recorder (留痕).")
    parser.add_argument("--version", action="version", version=f"liuhen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the recorder daemon")
    run.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    run.add_argument("--data", type=Path, help="data directory (overrides unit.data_dir)")
    run.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live status panel (default: when stdout is a terminal)",
    )
    run.add_argument(
        "--status-every",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between status lines without --live (default 10)",
    )
    run.set_defaults(func=_cmd_run)

    cfg = sub.add_parser("config", help="check a configuration or print its reference")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("config", type=Path)
    check.set_defaults(func=_cmd_config_check)
    doc = cfg_sub.add_parser("doc", help="print docs/CONFIG.md")
    doc.set_defaults(func=_cmd_config_doc)

    idx = sub.add_parser("index", help="the data directory's index")
    idx_sub = idx.add_subparsers(dest="index_command", required=True)
    rebuild = idx_sub.add_parser(
        "rebuild", help="set a damaged index aside and rebuild it from the ledger and the files"
    )
    rebuild.add_argument("--data", type=Path, required=True, help="the data directory")
    rebuild.set_defaults(func=_cmd_index_rebuild)

    ctl_cli.add_parsers(sub)
    keys_cli.add_parser(sub)
    evidence_cli.add_parser(sub)
    _add_installed_commands(sub)

    devices = sub.add_parser("devices", help="list PortAudio input devices")
    devices.set_defaults(func=_cmd_devices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except tuple(EXIT_STATUS) as exc:
        print(f"liuhen: {exc}", file=sys.stderr)
        if isinstance(exc, DataDirError):
            return exc.exit_code  # 73 or 75, it says which
        return next(code for kind, code in EXIT_STATUS.items() if isinstance(exc, kind))


if __name__ == "__main__":
    sys.exit(main())
