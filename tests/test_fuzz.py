"""Random bytes and property-based inputs at every parser the unit has.

Each parser either returns a value or refuses with its own error, naming what was wrong;
nothing else escapes: the configuration (``firmware_py.config.parse``/``load``), the
card roster (``Roster.parse``), commands from the centre (``CommandVerifier.verify``),
ledger lines (``Entry.from_line``), a whole evidence directory whose ledger was mangled
(``evidence.verify.verify`` names the damage, and never calls a changed entry intact), and
the control socket of a running unit (it answers every line and goes on recording).
Hypothesis runs derandomized: the same inputs on every run.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_software_identity, write_config
from faultkit import InProcessUnit, Tally, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence.envelope import b64
from evidence.ledger import LEDGER_FILE, Entry, Ledger, Stamp, key_id
from evidence.verify import verify
from firmware_py.config import ConfigError, load, parse
from firmware_py.roster import Roster, RosterError
from protocol.schemas import schema_text
from signer.keys import KeySpec, open_backend
from uplink.commands import CommandRefused, CommandVerifier, SeenNonces, make_command, sign_command
from uplink.store import Store

EXAMPLES = int(os.environ.get("LIUHEN_FUZZ_EXAMPLES", "300"))


def fuzz_settings(examples: int = EXAMPLES) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        derandomize=True,  # the same inputs every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    st.none() | scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
signable_values = st.recursive(  # what canonical JSON (RFC 8785) can carry
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
CONFIG_KEYS = {
    "unit": ["device_id", "profile", "data_dir"],
    "camera": ["kind", "width", "height", "fps", "bitrate", "gop_seconds"],
    "keys": [
        "kind",
        "module",
        "token_label",
        "pin_file",
        "path",
        "tcti",
        "tpm_handle",
        "certificate",
    ],
    "microphone": ["kind", "device", "sample_rate", "bitrate"],
    "recorder": ["autostart", "pre_event_seconds", "segment_seconds", "fragment_seconds"],
    "storage": ["low_free_mb", "stop_free_mb"],
    "panel": ["kind", "green", "red", "record", "triggers", "hold_seconds", "reminder_seconds"],
    "uplink": ["host", "port", "topic_prefix", "heartbeat_seconds", "reconnect_min_seconds"],
    "signer": ["c2pa"],
    "osd": ["enabled"],
    "officers": ["roster", "card_reader", "card_device"],
    "encryption": ["enabled", "recipient"],
}
toml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
section = st.sampled_from(sorted(CONFIG_KEYS)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.dictionaries(
            st.sampled_from(CONFIG_KEYS[name]) | st.text(max_size=6), toml_values, max_size=5
        ),
    )
)
config_documents = st.lists(section | st.tuples(st.text(max_size=6), toml_values), max_size=6).map(
    dict
)
VALID = {
    "unit": {"device_id": "u1"},
    "camera": {"kind": "simulated"},
    "keys": {"kind": "software", "path": "/k.pem"},
    "encryption": {"recipient": "/etc/liuhen/agency.pub.pem"},
}


def refused_naming(error: Exception, source: str) -> None:
    """A refusal says where: the source, then one line per problem with a key or value."""
    text = str(error)
    assert text.startswith(source), text
    assert text.strip(), "an empty error message"


# --- configuration ----------------------------------------------------------------------------


def test_config_documents_are_parsed_or_refused_naming_the_key() -> None:
    tally = Tally()

    @fuzz_settings(EXAMPLES * 4)
    @given(config_documents, st.booleans())
    def check(document: dict[str, Any], on_valid: bool) -> None:
        tally["config documents"] += 1
        if on_valid:  # a valid base with random damage, so deep checks are reached too
            document = {**VALID, **{k: {**VALID.get(k, {}), **v} if isinstance(v, dict) else v
                                    for k, v in document.items()}}  # fmt: skip
        try:
            parse(document, "fuzz.toml")
        except ConfigError as exc:
            refused_naming(exc, "fuzz.toml")
            # One line per problem, "  <key>: <what>" (a key may itself hold a newline).
            assert "invalid configuration:\n  " in str(exc) and ": " in str(exc), str(exc)
            tally["refused"] += 1

    check()
    tally.report("config.parse")


def test_config_files_of_random_bytes_are_refused(tmp_path: Path) -> None:
    tally = Tally()
    path = tmp_path / "unit.toml"
    base = write_config(tmp_path / "base.toml").read_bytes()  # valid, to damage

    @fuzz_settings()
    @given(st.binary(max_size=400) | st.tuples(st.integers(0, len(base) - 1), st.binary(min_size=1, max_size=8))
           .map(lambda cut: base[: cut[0]] + cut[1] + base[cut[0] + len(cut[1]) :]))  # fmt: skip
    def check(data: bytes) -> None:
        tally["config files"] += 1
        path.write_bytes(data)
        try:
            load(path)
        except ConfigError as exc:
            refused_naming(exc, str(path))
            tally["refused"] += 1

    check()
    tally.report("config.load")


# --- card roster --------------------------------------------------------------------------------

officers = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "name", "credential", "cards"]) | st.text(max_size=5),
        toml_values | st.lists(st.text(max_size=10), max_size=3),
        max_size=5,
    ),
    max_size=4,
)
plausible_officers = st.lists(  # mostly well-formed, so the deeper checks run too
    st.fixed_dictionaries({
        "id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True) | st.text(max_size=4),
        "name": st.text(min_size=1, max_size=8),
        "credential": st.from_regex(r"[A-Z0-9]{4,12}", fullmatch=True) | st.text(max_size=6),
        "cards": st.lists(st.from_regex(r"[0-9A-F]{8}", fullmatch=True) | st.text(max_size=6),
                          min_size=1, max_size=3),
    }),
    min_size=1, max_size=4,
)  # fmt: skip


def test_rosters_of_random_text_and_random_officers_are_parsed_or_refused() -> None:
    tally = Tally()

    @fuzz_settings(EXAMPLES * 2)
    @given(
        st.text(max_size=400)
        | (officers | plausible_officers).map(lambda o: {"officer": o})
        | json_values
    )
    def check(value: Any) -> None:
        tally["rosters"] += 1
        try:
            roster = Roster.parse(value) if isinstance(value, str) else Roster.from_data(value)
        except RosterError as exc:
            refused_naming(exc, "roster")
            tally["refused"] += 1
            return
        for officer in roster.officers:  # accepted: every officer is whole
            assert officer.id and officer.name and officer.credential
        tally["accepted"] += 1

    check()
    tally.report("Roster.parse")


# --- commands from the centre ----------------------------------------------------------------

REFUSAL_CODES = set(
    json.loads(schema_text("reply"))["properties"]["error"]["properties"]["code"]["enum"]
)


def test_commands_are_accepted_only_as_signed_and_otherwise_refused_with_a_code(
    tmp_path: Path,
) -> None:
    tally = Tally()
    central = tmp_path / "central.key"
    make_software_identity(central, tmp_path / "central.pem", "central")
    backend = open_backend(KeySpec(kind="software", path=str(central)))
    store = Store(tmp_path / "nonces.sqlite")
    verifier = CommandVerifier(
        "u1", {key_id(backend.public_key()): backend.public_key()}, SeenNonces(store)
    )
    now = datetime.now(UTC)

    def signed(payload: dict[str, Any]) -> bytes:
        return sign_command(backend, payload)

    mutations = st.tuples(st.integers(0, 10_000), st.integers(1, 255))
    payloads = st.dictionaries(  # what a centre could sign: integers JSON can carry
        st.sampled_from(["v", "device", "cmd", "args", "nonce", "issued", "expires", "issuer"]),
        signable_values,
        max_size=8,
    )

    @fuzz_settings(EXAMPLES * 2)
    @given(st.one_of(
        st.binary(max_size=300).map(lambda b: ("bytes", b)),
        json_values.map(lambda v: ("json", json.dumps(v).encode())),
        payloads.map(lambda p: ("signed random payload", signed(p))),
        st.tuples(st.sampled_from(["record.start", "record.stop", "mark", "ping"]), mutations)
        .map(lambda c: ("flipped", c)),
    ))  # fmt: skip
    def check(case: tuple[str, Any]) -> None:
        kind, value = case
        tally[kind] += 1
        original = None
        if kind == "flipped":
            name, (at, bits) = value
            original = make_command("u1", name, now=now)
            raw = bytearray(signed(original))
            raw[at % len(raw)] ^= bits
            value = bytes(raw)
        try:
            command = verifier.verify(value, now=now)
        except CommandRefused as exc:
            assert exc.code in REFUSAL_CODES and exc.message, (exc.code, exc.message)
            tally["refused"] += 1
            return
        # Accepted: only what the centre's key signed, unchanged (a base64 flip that
        # decodes to the same bytes changes nothing).
        assert kind == "signed random payload" or (
            original is not None
            and (command.cmd, command.nonce) == (original["cmd"], original["nonce"])
        ), (kind, command)
        tally["accepted"] += 1

    try:
        check()
    finally:
        store.close()
        backend.close()
    tally.report("CommandVerifier.verify")


# --- ledger lines and a mangled ledger ------------------------------------------------------------


headers = st.dictionaries(
    st.sampled_from(["v", "device", "seq", "prev", "kind", "body", "wall", "key"]),
    json_values,
    max_size=8,
)


def envelope_line(header: dict[str, Any], ref: Any, body: str) -> bytes:
    """A line shaped like a ledger entry around a random header (signature not valid)."""
    return json.dumps({
        "payload": b64(json.dumps(header).encode()),
        "payloadType": "application/vnd.liuhen.ledger-entry.v1+json",
        "body": body,
        "signatures": [{"keyid": "00", "sig": b64(b"x")}],
        "ref": ref,
    }).encode()  # fmt: skip


lines = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(envelope_line, headers, json_values, st.text(max_size=20)),
)


def test_ledger_lines_are_parsed_or_refused_with_value_error() -> None:
    tally = Tally()

    @fuzz_settings(EXAMPLES * 3)
    @given(lines)
    def check(line: bytes) -> None:
        tally["ledger lines"] += 1
        try:
            entry = Entry.from_line(line)
        except ValueError as exc:
            assert str(exc), "an empty reason"
            tally["refused"] += 1
            return
        assert isinstance(entry.header["seq"], int) and isinstance(entry.header["prev"], str)

    check()
    tally.report("Entry.from_line")


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real evidence directory: a genesis and twelve signed events."""
    root = tmp_path_factory.mktemp("evidence")
    key, cert = root / "device.key", root / "device.pem"
    make_software_identity(key, cert, "u1")
    evidence = root / "evidence"
    evidence.mkdir()
    (evidence / "device.pem").write_bytes(cert.read_bytes())
    with open_backend(KeySpec(kind="software", path=str(key))) as backend:
        ledger = Ledger(evidence, "u1", backend)
        for n in range(13):
            stamp = Stamp(f"2026-01-01T00:00:{n:02d}.000Z", n * 1000, "boot", True)
            body = {"genesis": {"device": "u1"}} if n == 0 else {"event": {"type": "mark", "n": n}}
            ledger.append("genesis" if n == 0 else "event", body, stamp, ref=n)
    return evidence


def signed_content(line: bytes) -> tuple[Any, ...] | None:
    try:
        entry = Entry.from_line(line)
    except ValueError:
        return None
    return (entry.envelope, entry.body)  # what the signature covers, and the body


def test_verify_names_every_change_to_the_ledger(evidence: Path, tmp_path: Path) -> None:
    tally = Tally()
    original = (evidence / LEDGER_FILE).read_bytes()
    head = (evidence / "ledger.head").read_bytes()
    copy = tmp_path / "evidence"
    copy.mkdir()
    (copy / "device.pem").write_bytes((evidence / "device.pem").read_bytes())
    (copy / "ledger.head").write_bytes(head)
    n_lines = original.count(b"\n")

    edits = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, len(original) - 1), st.integers(1, 255)),
        st.tuples(st.just("drop"), st.integers(0, n_lines - 1), st.just(0)),
        st.tuples(st.just("repeat"), st.integers(0, n_lines - 1), st.just(0)),
        st.tuples(st.just("swap"), st.integers(0, n_lines - 2), st.just(0)),
        st.tuples(st.just("cut"), st.integers(1, len(original) - 1), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, len(original)), st.integers(0, 2**32 - 1)),
    )

    def edit(data: bytes, how: tuple[str, int, int]) -> bytes:
        op, at, arg = how
        rows = data.splitlines(keepends=True)
        if not data or (op in ("drop", "repeat", "swap") and len(rows) < 2):
            return data + b"\n"
        at_byte, at_row = at % len(data), at % max(1, len(rows) - 1)
        if op == "flip":
            return data[:at_byte] + bytes([data[at_byte] ^ arg]) + data[at_byte + 1 :]
        if op == "drop":
            return b"".join(rows[:at_row] + rows[at_row + 1 :])
        if op == "repeat":
            return b"".join(rows[: at_row + 1] + rows[at_row:])
        if op == "swap":
            return b"".join([*rows[:at_row], rows[at_row + 1], rows[at_row], *rows[at_row + 2 :]])
        if op == "cut":
            return data[:at_byte]
        return data[:at_byte] + arg.to_bytes(4, "big") + data[at_byte:]

    @fuzz_settings()
    @given(st.lists(edits, min_size=1, max_size=3))
    def check(changes: list[tuple[str, int, int]]) -> None:
        mangled = original
        for change in changes:
            mangled = edit(mangled, change)
        tally["mangled ledgers"] += 1
        tally.update(op for op, _, _ in changes)
        (copy / LEDGER_FILE).write_bytes(mangled)
        report = verify(copy)
        for finding in report.findings:
            assert finding.where and finding.message, finding
        before = [signed_content(x) for x in original.splitlines()]
        after = [signed_content(x) for x in mangled.splitlines()]
        if report.ok:  # only an unsigned hint changed (``ref``), or a body is now withheld,
            # which the report counts and `liuhen verify` prints (exports withhold bodies)
            assert len(after) == len(before), changes
            for (env, body), was in zip(after, before, strict=True):  # type: ignore[misc]
                assert env == was[0] and body in (was[1], None), changes  # type: ignore[index]
            if report.withheld:
                tally["body withheld, counted"] += 1
        else:
            assert after != before or any(f.code == "bad-head" for f in report.findings), changes
            tally["named damaged"] += 1

    check()
    tally.report("verify on a mangled ledger")


# --- the control socket of a running unit ------------------------------------------------------


requests = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b),
    st.fixed_dictionaries(
        {"cmd": st.sampled_from(["status", "record", "mark", "credential", "login", "note", "case", "x"])},
        optional={"action": st.sampled_from(["start", "stop", "pause"]) | json_values,
                  "text": json_values, "card": json_values, "case": json_values,
                  "source": json_values},
    ).map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


def test_the_control_socket_answers_every_line_and_the_unit_records_on(
    tmp_path: Path, alsa_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(alsa_home))
    unit = InProcessUnit.recording(tmp_path)
    tally = Tally()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(15)
            sock.connect(str(tmp_path / "data" / "control.sock"))
            replies = sock.makefile("rb")

            @fuzz_settings(EXAMPLES)
            @given(requests)
            def check(line: bytes) -> None:
                tally["control requests"] += 1
                sock.sendall(line + b"\n")
                reply = json.loads(replies.readline())
                assert isinstance(reply.get("ok"), bool), reply
                if not reply["ok"]:
                    assert reply["error"], reply
                    tally["refused"] += 1

            check()
        assert unit.thread.is_alive()
        unit.request(cmd="record", action="start")  # whatever the requests stopped
        wait_until(lambda: unit.status()["state"] == "recording", 10, "recording after it all")
    finally:
        assert unit.stop() == 0
    tally.report("control socket")
