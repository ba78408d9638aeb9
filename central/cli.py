"""`liuhen-central …` and `liuhen central …`: the centre's commands.

Owns: adding ``watch``, ``serve``, ``export`` and ``decrypt`` under one parser, both as
the ``liuhen-central`` program and, through the ``liuhen.commands`` entry point, as
``liuhen central`` for a developer who installed the unit and the centre together.
Must not: contain any command's logic. The unit's CLI never imports this module by name.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from central import decrypt, export, serve, watch


def add_parsers(subparsers: Any) -> None:
    for module in (watch, serve, export, decrypt):
        module.add_parser(subparsers)


def register(subparsers: Any) -> None:
    """The ``liuhen.commands`` entry point: ``liuhen central …``."""
    central = subparsers.add_parser("central", help="tools for the central monitoring staff")
    add_parsers(central.add_subparsers(dest="central_command", required=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="liuhen-central", description="The centre's tools: watch, serve, export, decrypt."
    )
    add_parsers(parser.add_subparsers(dest="central_command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
