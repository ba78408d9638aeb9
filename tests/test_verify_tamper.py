"""Real recordings signed through a SoftHSM2 token, then tampered with in every way the
rules forbid; `liuhen verify` must catch each one and name the culprit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Daemon, RecordedData, liuhen, token_unit
from keyfixtures import SoftHsm, softhsm_fixture  # noqa: F401

from evidence.ledger import LEDGER_FILE, Entry, Ledger
from signer.c2pa_embed import read_validation
from signer.keys import KeySpec, init_key
from signer.sealer import stamp_now


@dataclass(frozen=True)
class Recorded(RecordedData):
    root_ca: Path


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm, alsa_home: Path
) -> Iterator[Recorded]:
    """Three runs of a unit keyed on a SoftHSM2 token: a clean recording, one cut by
    SIGKILL, and the restart that recovers it."""
    base = tmp_path_factory.mktemp("signed-unit")
    config, env, _ = token_unit(
        base, softhsm, alsa_home, "unit-under-test", ca=base / "ca", signer={"c2pa": True},
        recorder={"autostart": True, "segment_seconds": 5, "pre_event_seconds": 2},
    )  # fmt: skip
    data = base / "data"

    def run(n: int) -> Daemon:
        return Daemon(config, data, env, base / f"run{n}.log").start()

    unit = run(1)
    unit.wait_for(lambda s: s["segments_sealed"] >= 3, 60, "three sealed segments")
    assert unit.terminate() == 0, unit.output()
    unit = run(2)
    unit.wait_for(
        lambda s: s["segments_sealed"] >= 1 and s["segment_media_s"] > 1.5, 60, "recording again"
    )
    unit.kill()
    unit = run(3)
    unit.wait_for(lambda s: s["state"] == "recording" and s["sealer"]["backlog"] == 0
                  and s["sealer"]["last_seq"] is not None, 60, "recovered and sealed")  # fmt: skip
    time.sleep(1)
    assert unit.terminate() == 0, unit.output()
    yield Recorded(data, env, root_ca=base / "ca" / "dev-root-ca.cert.pem")
    for proc in (unit.proc,):
        if proc and proc.poll() is None:
            proc.kill()


def copy(recorded: Recorded, tmp_path: Path) -> Path:
    target = tmp_path / "evidence"
    shutil.copytree(recorded.evidence, target)
    for p in target.iterdir():
        p.chmod(0o644)
    return target


def verify(path: Path, recorded: Recorded) -> tuple[int, dict[str, Any]]:
    done = liuhen("verify", str(path), "--trust", str(recorded.root_ca), "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def errors(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["code"], f["where"]) for f in report["findings"] if f["severity"] == "error"}


def lines(evidence: Path) -> list[bytes]:
    return (evidence / LEDGER_FILE).read_bytes().splitlines(keepends=True)


# --- the untouched evidence ----------------------------------------------------------------


def test_the_recording_verifies_intact_and_says_what_was_recovered(recorded: Recorded) -> None:
    code, report = verify(recorded.data, recorded)
    assert code == 0, report["findings"]
    assert report["anchored"] and report["segments"] == len(recorded.segments()) >= 5
    notices = [f for f in report["findings"] if f["code"] == "recovered"]
    assert len(notices) == 1, report["findings"]
    assert not [f for f in report["findings"] if f["code"] == "software-key"]
    head = Entry.from_line(lines(recorded.evidence)[0])
    assert head.header["key"] == "pkcs11"

    human = liuhen("verify", str(recorded.data), "--trust", str(recorded.root_ca))
    assert human.returncode == 0 and human.stdout.strip().splitlines()[-1].startswith("INTACT")


def test_every_segment_carries_a_c2pa_manifest_any_reader_validates(
    recorded: Recorded, tmp_path: Path
) -> None:
    root = recorded.root_ca.read_text()
    for segment in recorded.segments():
        assert read_validation(segment, root) == "Trusted", segment.name
    flipped = tmp_path / recorded.segments()[1].name
    data = bytearray(recorded.segments()[1].read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(data)
    assert read_validation(flipped, root) == "Invalid"


def test_a_foreign_trust_anchor_is_refused(recorded: Recorded, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    assert liuhen("keys", "dev-ca", str(other)).returncode == 0
    done = liuhen(
        "verify", str(recorded.data), "--trust", str(other / "dev-root-ca.cert.pem"), "--json"
    )
    assert done.returncode == 1
    assert ("foreign-key", "device.pem") in errors(json.loads(done.stdout))


def test_unreadable_input_is_exit_2(recorded: Recorded, tmp_path: Path) -> None:
    assert liuhen("verify", str(tmp_path / "nothing")).returncode == 2
    bad_trust = tmp_path / "trust.pem"
    bad_trust.write_text("not a certificate")
    done = liuhen("verify", str(recorded.data), "--trust", str(bad_trust))
    assert done.returncode == 2 and "cannot read certificates" in done.stderr


# --- each tampering, done to a copy -----------------------------------------------------------


def test_one_byte_flipped_in_a_segment(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    victim = sorted(evidence.glob("*.mp4"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) * 2 // 3] ^= 0x80
    victim.write_bytes(data)
    code, report = verify(evidence, recorded)
    assert code == 1
    [finding] = [f for f in report["findings"] if f["severity"] == "error"]
    assert (finding["code"], finding["where"]) == ("altered", victim.name)
    assert re.search(r"part \d+ \(bytes \d+\.\.\d+\) differs", finding["message"])


def test_a_segment_deleted(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    victim = sorted(evidence.glob("*.mp4"))[2]
    victim.unlink()
    code, report = verify(evidence, recorded)
    assert code == 1 and errors(report) == {("missing", victim.name)}


def test_two_segments_swapped(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    a, b = sorted(evidence.glob("*.mp4"))[:2]
    tmp = evidence / "swap.tmp"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    code, report = verify(evidence, recorded)
    assert code == 1
    assert {("misplaced", a.name), ("misplaced", b.name)} <= errors(report)


def test_a_segment_truncated(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    victim = sorted(evidence.glob("*.mp4"))[0]
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.truncate(size * 3 // 5)
    code, report = verify(evidence, recorded)
    assert code == 1
    [finding] = [f for f in report["findings"] if f["severity"] == "error"]
    assert (finding["code"], finding["where"]) == ("truncated", victim.name)
    assert "are intact and still prove their media" in finding["message"]


def test_the_last_ledger_entry_dropped(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    kept = lines(evidence)[:-1]
    (evidence / LEDGER_FILE).write_bytes(b"".join(kept))
    code, report = verify(evidence, recorded)
    assert code == 1 and ("truncated-ledger", LEDGER_FILE) in errors(report)


def test_two_ledger_entries_reordered(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    entries = lines(evidence)
    entries[3], entries[4] = entries[4], entries[3]
    (evidence / LEDGER_FILE).write_bytes(b"".join(entries))
    code, report = verify(evidence, recorded)
    assert code == 1 and ("reordered", "entry 3") in errors(report)


def _forge(evidence: Path, position: int, device: str, key_dir: Path, edit: Any) -> str:
    """Replace entry ``position`` with one signed by another key, chained as if genuine."""
    entries = lines(evidence)
    previous, original = Entry.from_line(entries[position - 1]), Entry.from_line(entries[position])
    backend = init_key(KeySpec(kind="software", path=str(key_dir / "intruder.pem")))
    forger = Ledger(key_dir, device, backend)
    forger.last = previous
    body = edit(original.body_json())
    forged = forger.append(original.kind, body, stamp_now(), file=original.file)
    entries[position] = forged.to_line()
    (evidence / LEDGER_FILE).write_bytes(b"".join(entries))
    return f"entry {original.seq}"


def _segment_position(evidence: Path) -> int:
    return next(
        i for i, line in enumerate(lines(evidence)) if Entry.from_line(line).kind == "segment"
    )


def test_an_entry_edited_and_re_signed_with_another_key(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    position = _segment_position(evidence)

    def shorten(body: dict[str, Any]) -> dict[str, Any]:
        body["segment"]["media_end_us"] -= 1_000_000  # hide the last second
        return body

    where = _forge(evidence, position, "test-unit", tmp_path, shorten)
    code, report = verify(evidence, recorded)
    assert code == 1 and ("foreign-key", where) in errors(report)


def test_an_entry_replaced_by_one_from_another_device(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    where = _forge(
        evidence, _segment_position(evidence), "another-unit", tmp_path, lambda body: body
    )
    code, report = verify(evidence, recorded)
    assert code == 1
    assert {("foreign-key", where), ("foreign-device", where)} <= errors(report)


def test_a_file_nobody_signed(recorded: Recorded, tmp_path: Path) -> None:
    evidence = copy(recorded, tmp_path)
    shutil.copy(sorted(evidence.glob("*.mp4"))[0], evidence / "test-unit_planted.mp4")
    code, report = verify(evidence, recorded)
    assert code == 1 and ("unsigned", "test-unit_planted.mp4") in errors(report)


def test_the_token_will_not_give_up_the_private_key(softhsm: SoftHsm, recorded: Recorded) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    with token.open(user_pin=softhsm.user_pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="unit-under-test")
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            key[Attribute.VALUE]
    assert os.environ.get("SOFTHSM2_CONF")


def format_recipe() -> str:
    text = (ROOT / "docs" / "FORMAT.md").read_text()
    section = text[text.index("### Checking one segment by hand") :]
    return section[
        section.index("```sh\n") + 6 : section.index("```\n", section.index("```sh\n") + 6)
    ]


def run_recipe(evidence: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", format_recipe()], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DIR": str(evidence), "NAME": name},
    )  # fmt: skip


def test_the_shell_recipe_in_format_md_checks_a_segment(recorded: Recorded, tmp_path: Path) -> None:
    name = recorded.segments()[1].name
    done = run_recipe(recorded.evidence, name)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Verified", "OK", "body", "OK", "file", "OK"]

    evidence = copy(recorded, tmp_path)  # the same recipe on a flipped byte must fail
    victim = evidence / name
    data = bytearray(victim.read_bytes())
    data[-100] ^= 1
    victim.write_bytes(data)
    done = run_recipe(evidence, name)
    assert done.returncode != 0 and "file OK" not in done.stdout


def test_an_export_of_one_recording_verifies_alone_and_discloses_nothing_else(
    recorded: Recorded, tmp_path: Path
) -> None:
    out = tmp_path / "case-1"
    done = liuhen("export", str(recorded.data), str(out), "--recording", "1")
    assert done.returncode == 0, done.stderr
    exported = sorted(p.name for p in out.glob("*.mp4"))
    originals = [p.name for p in recorded.segments()]
    assert exported and set(exported) < set(originals) and all("_r00001_" in n for n in exported)

    code, report = verify(out, recorded)
    assert code == 0, report["findings"]
    assert report["withheld"] > 0 and report["entries"] == len(lines(recorded.evidence))
    ledger_text = (out / LEDGER_FILE).read_bytes()
    for other in set(originals) - set(exported):
        assert other.encode() not in ledger_text  # not even the names of other recordings' files
    for entry_line in lines(out):
        entry = Entry.from_line(entry_line)
        if entry.body is not None and entry.kind == "segment":
            assert entry.body_json()["segment"]["recording"] == 1

    exported_file = out / exported[0]  # and the export is as tamper-evident as the original
    exported_file.chmod(0o644)
    exported_file.unlink()
    code, report = verify(out, recorded)
    assert code == 1 and ("missing", exported[0]) in errors(report)
