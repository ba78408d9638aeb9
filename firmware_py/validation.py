"""How a validation problem reads to a person: one line naming where and what.

Owns: turning one pydantic error into `where: what (got …)`, the same for the
configuration and the roster. Must not: know either schema.
"""

from __future__ import annotations

from typing import Any


def describe_error(error: Any, where: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required but missing"
    if kind == "value_error":
        return f"{where}: {str(error['msg']).removeprefix('Value error, ')}"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r:.60})"
    msg = str(error["msg"])
    return f"{where}: {msg[:1].lower()}{msg[1:]}{shown}"
