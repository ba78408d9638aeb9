"""Damage to what the unit keeps beside the evidence, and a key token pulled out.

Garbage written into the SQLite index stops the daemon with exit 65 and one line naming
the file, touching nothing; the evidence and its ledger, which do not depend on the
index, still verify. The PKCS#11 token (SoftHSM2: its token directory moved away, as a
USB key is pulled) removed mid-recording: recording goes on with a ``key_unavailable``
fault, and when the token is back the backlog is signed in order without a restart.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from conftest import Daemon, token_unit, write_config
from faultkit import Tally, errors, verify, wait_until
from keyfixtures import SoftHsm, softhsm_fixture  # noqa: F401

SEED = 7


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


PAGES = (0, 1, 2, 3)


def test_garbage_in_the_index_stops_the_unit_with_a_clear_fault_or_it_records_on(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """A page of random bytes over the index (page 0: its header), one page per copy of
    a unit's data. Start-up reads the damage and the daemon exits 65 naming the file, the
    evidence untouched; or the recorder meets it and the unit stays up with a
    write_failed fault saying so; or the damage lies where nothing looks and the unit
    records on. In every case all recorded before still verifies: the evidence does not
    depend on the index."""
    config = write_config(
        tmp_path / "unit.toml", recorder={"autostart": True, "segment_seconds": 5}
    )
    first: Daemon = daemon_factory(config, tmp_path / "recorded")
    first.start()
    first.wait_for(lambda s: s["segments_sealed"] >= 1, 30, "a segment sealed")
    assert first.terminate() == 0, first.output()
    tally = Tally()
    for page in PAGES:
        data = tmp_path / f"page-{page}"
        shutil.copytree(first.data, data)
        with open(data / "index.sqlite", "r+b") as f:
            f.seek(page * 4096)
            f.write(random.Random(SEED + page).randbytes(4096))
        tally[f"page {page}: {damaged_index_outcome(daemon_factory, config, data)}"] += 1
        report = verify(data)
        assert report["exit"] == 0 and report["segments"] >= 1, errors(report)
    tally.report("garbage over one page of the index")


def damaged_index_outcome(factory: Any, config: Path, data: Path) -> str:
    before = snapshot(data / "evidence")
    unit: Daemon = factory(config, data)
    unit.start()
    proc = unit.proc
    assert proc is not None

    def verdict() -> dict[str, Any] | int | None:
        if proc.poll() is not None:
            return proc.returncode
        try:
            status = unit.status()
        except AssertionError:  # the control socket is not up yet
            return None
        return status if status["state"] in ("recording", "fault") else None

    outcome = wait_until(verdict, 30, "an exit or a verdict")
    if isinstance(outcome, int):  # start-up read the damage
        rc = outcome
        assert rc == 65, unit.output()
        last = unit.output().strip().splitlines()[-1]
        assert last.startswith(f"liuhen: {data / 'index.sqlite'}") and "Traceback" not in unit.output(), last  # fmt: skip
        assert snapshot(data / "evidence") == before, "the evidence must not change"
        return "stopped, exit 65"
    status = outcome
    if status["state"] == "fault":  # the recorder met it
        assert status["fault"] == "write failed: database disk image is malformed", status
        assert "write_failed" in status["unit"]["faults"]
        unit.wait_for(lambda s: s["sealer"]["backlog"] == 0, 15, "the failure signed")
    assert unit.terminate() == 0, unit.output()
    return "records on" if status["state"] == "recording" else "up, fault write_failed"


def test_the_token_pulled_out_mid_recording_and_put_back(
    tmp_path: Path, softhsm: SoftHsm, alsa_home: Path
) -> None:
    config, env, _pin = token_unit(
        tmp_path,
        softhsm,
        alsa_home,
        "pulled-out",
        recorder={"autostart": True, "segment_seconds": 5},
    )
    unit = Daemon(config, tmp_path / "data", env, tmp_path / "daemon.log").start()
    tally = Tally()
    try:
        unit.wait_for(lambda s: s["sealer"]["state"] == "ok" and s["segments_sealed"] >= 1, 30,
                      "a segment signed with the token")  # fmt: skip
        tokens = softhsm.directory / "tokens"
        away = tokens.rename(softhsm.directory / "tokens-pulled-out")
        tally["token removed"] += 1
        status = unit.wait_for(  # the unit's faults follow the sealer's at the next tick
            lambda s: s["sealer"]["state"] == "fault" and s["segments_sealed"] >= 2
            and "key_unavailable" in s["unit"]["faults"],
            30,
            "the key missed while recording goes on",
        )  # fmt: skip
        assert status["state"] == "recording"
        assert "PKCS#11" in status["sealer"]["error"], status["sealer"]

        away.rename(tokens)
        tally["token back"] += 1
        unit.wait_for(lambda s: s["sealer"]["state"] == "ok" and s["sealer"]["backlog"] == 0, 30,
                      "the backlog signed without a restart")  # fmt: skip
        assert unit.status()["unit"]["faults"] == []
    finally:
        if not (softhsm.directory / "tokens").exists():  # the session's other tests need it
            (softhsm.directory / "tokens-pulled-out").rename(softhsm.directory / "tokens")
        assert unit.terminate() == 0, unit.output()
    report = verify(unit.data, "--trust", str(tmp_path / "device.pem"))
    assert report["exit"] == 0, errors(report)
    assert report["segments"] >= 2
    tally.report("token pulled out and put back")
