"""The officer roster: the example loads, cards find their officers, Chinese names
round-trip, every kind of bad roster is refused naming the entry and field, and no input
at all makes the parser fail with anything but RosterError (hypothesis)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_py.roster import CREDENTIAL_PATTERN, Officer, Roster, RosterError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "roster.toml"


def toml_value(value: Any) -> str:
    """TOML for a str, int, bool, float or a list of them (JSON strings are TOML strings;
    DEL must be escaped in TOML and is not by JSON)."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def roster_toml(officers: list[dict[str, Any]]) -> str:
    blocks = []
    for officer in officers:
        lines = ["[[officer]]"] + [f"{json.dumps(k)} = {toml_value(v)}" for k, v in officer.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


ZHANG = {"id": "a1", "name": "张三", "credential": "33010012345", "cards": ["0004321987"]}
LI = {"id": "b2", "name": "李四", "credential": "浙A0012346", "cards": ["04A1B2C3"]}


def refused(officers: list[dict[str, Any]] | str) -> str:
    text = officers if isinstance(officers, str) else roster_toml(officers)
    with pytest.raises(RosterError) as caught:
        Roster.parse(text, "roster.toml")
    return str(caught.value)


# --- a good roster ------------------------------------------------------------------


def test_the_example_loads_and_every_card_finds_its_officer() -> None:
    roster = Roster.load(EXAMPLE)
    assert len(roster) == 3
    assert roster.lookup("0004321987") == Officer("3301-0042", "张三", "33010012345")
    lee = roster.lookup("04a1b2c3")  # readers differ in case; the card is the same
    assert lee is not None and lee is roster.lookup("0011223344")
    assert lee.credential == "浙A0012346"
    assert roster.lookup("4321987") is None, "leading zeros count"
    assert roster.lookup("99999999") is None
    assert roster.lookup("not a card!") is None


def test_names_and_credentials_round_trip_through_json(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    uighur = {
        **LI,
        "id": "c3",
        "name": "阿依古丽·买买提",
        "credential": "粤执-44-0001",
        "cards": ["5D3E9A10"],
    }
    path.write_text(roster_toml([ZHANG, uighur]), encoding="utf-8")
    roster = Roster.load(path)
    for entry, officer in zip([ZHANG, uighur], roster.officers, strict=True):
        as_json = json.loads(json.dumps(officer.to_json(), ensure_ascii=False))
        assert as_json == {k: entry[k] for k in ("id", "name", "credential")}


@pytest.mark.parametrize(
    "credential", ["33010012345", "ZJ-3301-0042", "浙A0012345", "粤执12345678", "A123", "1" * 36]
)
def test_typical_credential_numbers_are_accepted(credential: str) -> None:
    assert (
        Roster.parse(roster_toml([{**ZHANG, "credential": credential}])).officers[0].credential
        == credential
    )


# --- bad rosters: refused, naming the entry and the field ----------------------------

CASES: dict[str, tuple[list[dict[str, Any]] | str, str]] = {
    "no officers key": ("", "roster.toml: invalid roster:\n  officer: required but missing"),
    "empty list": ("officer = []", "officer: list should have at least 1 item"),
    "unknown top-level key": ('version = 1\n' + roster_toml([ZHANG]), "version: unknown key"),
    "unknown key": ([{**ZHANG, "badge": "x"}], 'officer[1] (id "a1").badge: unknown key'),
    "missing field": ([{k: v for k, v in ZHANG.items() if k != "credential"}], 'officer[1] (id "a1").credential: required but missing'),
    "empty name": ([ZHANG, {**LI, "name": ""}], 'officer[2] (id "b2").name: must not be empty'),
    "spaces around name": ([{**ZHANG, "name": " 张三"}], "must not begin or end with spaces"),
    "control character in name": ([{**ZHANG, "name": "张\u0007三"}], "must not contain control"),
    "name too long": ([{**ZHANG, "name": "张" * 65}], "name: must be at most 64 characters"),
    "credential with a space": ([{**ZHANG, "credential": "3301 0012"}], 'officer[1] (id "a1").credential: must be 4-36 characters'),
    "credential too long": ([{**ZHANG, "credential": "1" * 37}], "credential: must be 4-36"),
    "credential too short": ([{**ZHANG, "credential": "123"}], "credential: must be 4-36"),
    "credential all Chinese": ([{**ZHANG, "credential": "浙江省执法"}], "credential: must be 4-36"),
    "empty id": ([{**ZHANG, "id": ""}], "officer[1].id: must be 1-32 letters"),
    "id of the wrong type": ([{**ZHANG, "id": 42}], "officer[1].id: input should be a valid string (got 42)"),
    "cards not a list": ([{**ZHANG, "cards": "0004321987"}], 'officer[1] (id "a1").cards: input should be a valid list'),
    "no cards": ([{**ZHANG, "cards": []}], "cards: list should have at least 1 item"),
    "bad card": ([{**ZHANG, "cards": ["0004321987", "04:A1:B2"]}], 'officer[1] (id "a1").cards[2]: card id \'04:A1:B2\': must be 4 to 32'),
    "card of two officers": ([ZHANG, {**LI, "cards": ["0004321987"]}], 'officer[2] (id "b2"): card 0004321987 is also officer[1] (id "a1")\'s'),
    "same card, different case": ([ZHANG, {**LI, "cards": ["04a1b2c3"]}, {**LI, "id": "c3", "credential": "C333"}], 'officer[3] (id "c3"): card 04A1B2C3 is also officer[2] (id "b2")\'s'),
    "card listed twice": ([{**ZHANG, "cards": ["0004321987", "0004321987"]}], 'officer[1] (id "a1").cards: card 0004321987 is listed twice'),
    "officer id twice": ([ZHANG, {**LI, "id": "a1"}], 'officer[2] (id "a1"): id a1 is also officer[1] (id "a1")\'s'),
    "credential twice": ([ZHANG, {**LI, "credential": "33010012345"}], "credential 33010012345 is also officer[1]"),
    "not TOML": ("[[officer]\nid = 1", "roster.toml: not valid TOML"),
    "officer not a table": ('officer = ["a1"]', "officer[1]: input should be a valid dictionary"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_roster_is_refused_naming_entry_and_field(case: str) -> None:
    officers, message = CASES[case]
    assert message in refused(officers)


def test_every_problem_is_listed_at_once() -> None:
    message = refused([{**ZHANG, "name": ""}, {**LI, "credential": "?"}])
    assert message.count("\n  ") == 2, message


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="no such roster file"):
        Roster.load(tmp_path / "missing.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(roster_toml([ZHANG]).encode("utf-8").replace("张三".encode(), b"Jos\xe9"))
    with pytest.raises(RosterError, match="cannot read roster"):
        Roster.load(latin1)


def test_the_documented_credential_examples_are_accepted_and_the_pattern_agrees() -> None:
    doc = (ROOT / "docs" / "HARDWARE.md").read_text()
    for example in ("33010012345", "ZJ-3301-0042", "浙A0012345", "粤执-44-0001"):
        assert f"`{example}`" in doc
        assert re.fullmatch(CREDENTIAL_PATTERN, example)
        assert Roster.parse(roster_toml([{**ZHANG, "credential": example}])).officers


# --- whatever comes in, only RosterError comes out ----------------------------------

SCALARS = st.one_of(
    st.text(max_size=40),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["0004321987", "张三", "33010012345", "a1", ""]),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["officer", "id", "name", "credential", "cards", "x"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["officer", "version"]), DATA, max_size=2))
def test_any_parsed_toml_gives_a_roster_or_a_roster_error(data: dict[str, Any]) -> None:
    try:
        roster = Roster.from_data(data)
    except RosterError as exc:
        assert str(exc).startswith("roster: invalid roster:\n  ")
    else:
        assert len(roster) >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_roster_or_a_roster_error(text: str) -> None:
    with contextlib.suppress(RosterError):
        Roster.parse(text)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_edit_of_the_example_gives_a_roster_or_a_roster_error(data: st.DataObject) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        text = text[:at] + data.draw(st.text(max_size=6)) + text[at + cut :]
    with contextlib.suppress(RosterError):
        Roster.parse(text)


NAME_CHARS = st.characters(
    codec="utf-8", categories=["Lu", "Ll", "Lo", "Nd"], include_characters="·"
)
OFFICERS = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", fullmatch=True),
            "name": st.text(NAME_CHARS, min_size=1, max_size=20),
            "credential": st.from_regex(r"[\u4e00-\u9fff]{0,4}[0-9A-Z]{4,12}(-[0-9A-Z]{1,6}){0,2}", fullmatch=True),
            "cards": st.lists(st.from_regex(r"[0-9A-F]{8}|[0-9]{10}", fullmatch=True), min_size=1, max_size=3, unique=True),
        }
    ),
    min_size=1,
    max_size=5,
    unique_by=(lambda o: o["id"], lambda o: o["credential"]),
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(OFFICERS)
def test_any_valid_roster_loads_and_every_card_finds_its_officer(
    officers: list[dict[str, Any]],
) -> None:
    cards = [c for o in officers for c in o["cards"]]
    if len(set(cards)) != len(cards):
        assert "is also" in refused(officers)
        return
    roster = Roster.parse(roster_toml(officers))
    for entry in officers:
        for card in entry["cards"]:
            officer = roster.lookup(card.lower())
            assert officer is not None
            assert officer.to_json() == {
                "id": entry["id"],
                "name": entry["name"],
                "credential": entry["credential"],
            }
