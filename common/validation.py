"""Reading and checking TOML files the same way everywhere (unit config, roster,
central config): how a problem reads to a person, one line naming where and what.

Owns: turning one pydantic error into `where: what (got …)`, reading a TOML file with
errors that name it, and how a field's valid range is written in the references.
Must not: know any schema.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError


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


def dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def read_text(path: Path, error: type[Exception], what: str) -> str:
    """A UTF-8 text file's content; ``error`` naming the file and what is wrong otherwise
    (``what``: "configuration", "roster"…)."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from None


def read_toml(path: Path, error: type[Exception]) -> dict[str, Any]:
    """A TOML file's data; ``error`` (naming the file and what is wrong) otherwise."""
    text = read_text(path, error, "configuration")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def constraints(field: Any) -> str:
    """A field's valid range as the reference tables show it."""
    parts = []
    for meta in field.metadata:
        for attr, sym in (
            ("ge", ">="),
            ("gt", ">"),
            ("le", "<="),
            ("lt", "<"),
            ("multiple_of", "multiple of"),
        ):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
        for attr, label in (
            ("min_length", "length >="),
            ("max_length", "length <="),
            ("pattern", "matches"),
        ):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{label} `{value}`")
    annotation = field.annotation
    if getattr(annotation, "__origin__", None) is Literal:
        parts.append("one of " + ", ".join(f"`{a}`" for a in annotation.__args__))
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, source: str, error: type[Exception]) -> M:
    """``data`` as ``model``, or ``error`` listing every problem, one line each."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  {describe_error(e, dotted(e['loc']))}" for e in exc.errors())
        raise error(f"{source}: invalid configuration:\n{problems}") from None
