"""The officer roster: which card belongs to which officer, read from a TOML file.

Owns: the roster file format (one ``[[officer]]`` table per officer: ``id``, ``name``,
``credential`` — the enforcement credential number, 执法证号 — and ``cards``), checking
a file completely when it is loaded, and finding the officer for a card id. The format
is documented in examples/roster.toml and docs/HARDWARE.md.

Must not: read cards (hw.card_reader does), keep sessions or decide what a log-in does
(the state machine does), or guess: a roster with anything wrong is refused whole, with
every problem named by entry and field, as the configuration is. A unit keeps the roster
it has rather than take half of a bad one.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from common.validation import describe_error, read_text
from hw.card_reader import InvalidCardId, normalize_card_id

OFFICER_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
"""An officer id: 1–32 ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter
or digit (a staff or badge number, e.g. ``3301-0042``)."""

CREDENTIAL_PATTERN = "(?:[\u4e00-\u9fff]{1,4}-?)?[0-9A-Za-z]+(?:-[0-9A-Za-z]+)*"
"""An enforcement credential number (执法证号), 4–36 characters in all: up to four
Chinese characters (a province or agency abbreviation such as 浙 or 粤执), then ASCII
letters and digits in groups joined by single hyphens (one may follow the Chinese
characters). Accepts e.g. ``33010012345``, ``ZJ-3301-0042``, ``浙A0012345``,
``粤执-44-0001``; refuses spaces, other punctuation and empty groups."""

CREDENTIAL_LENGTH = (4, 36)
NAME_MAX = 64
CARDS_MAX = 8


class RosterError(ValueError):
    """The roster cannot be used; ``str()`` lists every problem, one per line."""


@dataclass(frozen=True, slots=True)
class Officer:
    """Who acted: what goes into the record of a session."""

    id: str
    name: str
    credential: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _credential(value: str) -> str:
    low, high = CREDENTIAL_LENGTH
    if not (low <= len(value) <= high) or not re.fullmatch(CREDENTIAL_PATTERN, value):
        raise ValueError(
            f"must be {low}-{high} characters: up to 4 Chinese characters, then letters and "
            f"digits in groups joined by '-', e.g. 33010012345, ZJ-3301-0042 (got {value!r})"
        )
    return value


def _officer_id(value: str) -> str:
    if not re.fullmatch(OFFICER_ID_PATTERN, value):
        raise ValueError(
            f"must be 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit (got {value!r})"
        )
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError(f"must not begin or end with spaces (got {value!r})")
    if len(value) > NAME_MAX:
        raise ValueError(f"must be at most {NAME_MAX} characters (got {len(value)})")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in value):
        raise ValueError(f"must not contain control or unassigned characters (got {value!r})")
    return value  # as written: no normalization, so it reads back exactly


def _card(value: str) -> str:
    try:
        return normalize_card_id(value)
    except InvalidCardId as exc:
        raise ValueError(str(exc)) from None


class OfficerEntry(BaseModel):
    """One ``[[officer]]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Annotated[str, AfterValidator(_officer_id)] = Field(
        description="Officer id (staff or badge number); unique in the roster."
    )
    name: Annotated[str, AfterValidator(_name)] = Field(
        description="Name as it is to appear in the record, any script (张三)."
    )
    credential: Annotated[str, AfterValidator(_credential)] = Field(
        description="Enforcement credential number (执法证号); unique in the roster."
    )
    cards: list[Annotated[str, AfterValidator(_card)]] = Field(
        min_length=1,
        max_length=CARDS_MAX,
        description="Card ids as the reader prints them; each card belongs to one officer.",
    )


class RosterFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    officer: list[OfficerEntry] = Field(min_length=1, description="One table per officer.")


def _entry_label(data: Any, index: int) -> str:
    """``officer[2] (id "3301-0042")``, 1-based as an operator counts the tables."""
    label = f"officer[{index + 1}]"
    try:
        officer_id = data["officer"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return label
    return f'{label} (id "{officer_id}")' if isinstance(officer_id, str) and officer_id else label


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    if len(loc) >= 2 and loc[0] == "officer" and isinstance(loc[1], int):
        where = _entry_label(data, loc[1])
        for part in loc[2:]:
            where += f"[{part + 1}]" if isinstance(part, int) else f".{part}"
        return where
    return ".".join(str(p) for p in loc) or "(top level)"


def _describe(error: Any, data: Any) -> str:
    return describe_error(error, _where(tuple(error["loc"]), data))


def _duplicates(entries: list[OfficerEntry], data: Any) -> list[str]:
    problems = []
    first: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        keys = [("id", entry.id), ("credential", entry.credential)]
        keys += [("card", card) for card in entry.cards]
        for field, value in keys:
            owner = first.setdefault((field, value), i)
            if owner == i and field == "card" and entry.cards.count(value) > 1:
                problems.append(f"{_entry_label(data, i)}.cards: card {value} is listed twice")
            elif owner != i:
                problems.append(
                    f"{_entry_label(data, i)}: {field} {value} is also {_entry_label(data, owner)}'s"
                )
    return list(dict.fromkeys(problems))


class Roster:
    """Officers and the cards that log them in. Build with ``load``/``parse``."""

    def __init__(self, entries: Iterable[OfficerEntry], source: str = "roster") -> None:
        self.source = source
        self._by_card: dict[str, Officer] = {}
        officers = []
        for entry in entries:
            officer = Officer(entry.id, entry.name, entry.credential)
            officers.append(officer)
            self._by_card.update(dict.fromkeys(entry.cards, officer))
        self.officers: tuple[Officer, ...] = tuple(officers)

    @classmethod
    def from_data(cls, data: Any, source: str = "roster") -> Roster:
        """A roster from parsed TOML (a dict), or RosterError listing every problem."""
        try:
            parsed = RosterFile.model_validate(data)
        except ValidationError as exc:
            problems = [_describe(e, data) for e in exc.errors()]
        else:
            problems = _duplicates(parsed.officer, data)
            if not problems:
                return cls(parsed.officer, source)
        listed = "\n".join(f"  {p}" for p in problems)
        raise RosterError(f"{source}: invalid roster:\n{listed}")

    @classmethod
    def parse(cls, text: str, source: str = "roster") -> Roster:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RosterError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_data(data, source)

    @classmethod
    def load(cls, path: Path | str) -> Roster:
        path = Path(path)
        return cls.parse(read_text(path, RosterError, "roster"), str(path))

    def lookup(self, card_id: str) -> Officer | None:
        """The officer whose card this is, or None (unknown card, or not a card id)."""
        try:
            return self._by_card.get(normalize_card_id(card_id))
        except InvalidCardId:
            return None

    def __len__(self) -> int:
        return len(self.officers)
