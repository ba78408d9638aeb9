"""The JSON Schemas of every MQTT payload (protocol/schemas/*.json), loaded by jsonschema.

Owns: finding the packaged schema files, resolving their shared definitions
(``defs.schema.json``) through a ``referencing`` registry, and checking a document
against one of them with an error that names the field. Must not: build payloads or
decide what a failed check means (the caller does).

Names: ``presence``, ``status``, ``ledger-line``, ``command-envelope``, ``command``,
``reply``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jsonschema loads on the first check, not with the unit (ADR 0019)
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
    from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]
    from referencing import Registry

ID_PREFIX = "urn:liuhen:mqtt:v1:"
NAMES = ("presence", "status", "ledger-line", "command-envelope", "command", "reply")


class SchemaError(ValueError):
    """A document does not match its schema; ``str()`` names the field and the rule."""


def schema_text(name: str) -> str:
    """The schema file's text, e.g. for docs or for a centre written in another language."""
    return resources.files("protocol").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")


@cache
def _registry() -> Registry[Any]:
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry()
    for name in ("defs", *NAMES):
        resource = Resource.from_contents(json.loads(schema_text(name)))
        registry = registry.with_resource(ID_PREFIX + name, resource)
    return registry


@cache
def validator(name: str) -> Draft202012Validator:
    if name not in NAMES:
        raise KeyError(f"no schema {name!r}; known: {', '.join(NAMES)}")
    from jsonschema import Draft202012Validator

    schema = _registry().contents(ID_PREFIX + name)
    return Draft202012Validator(schema, registry=_registry())


def check(name: str, document: Any) -> None:
    """Raise SchemaError if ``document`` does not match schema ``name``."""
    from jsonschema.exceptions import best_match

    error = best_match(validator(name).iter_errors(document))
    if error is not None:
        raise SchemaError(describe(error)) from None


def describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message}"
