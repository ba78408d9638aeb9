"""`liuhen central …`: the centre's commands, registered in one call.

Owns: adding ``watch``, ``serve``, ``export`` and ``decrypt`` under a ``central`` sub-parser. Must
not: contain any command's logic. The lead's ``firmware_py/cli.py`` may call
``add_parsers(central.add_subparsers(...))`` instead of registering each module.
"""

from __future__ import annotations

from typing import Any

from central import decrypt, export, serve, watch


def add_parsers(subparsers: Any) -> None:
    for module in (watch, serve, export, decrypt):
        module.add_parser(subparsers)
