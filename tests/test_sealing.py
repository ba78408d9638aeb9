"""Sealing runs beside the recording, never in its way: with the key unavailable the unit
keeps recording, says so, and seals the backlog in order once the key is back."""

from __future__ import annotations

from pathlib import Path

from conftest import Daemon, liuhen, token_unit
from keyfixtures import SoftHsm, softhsm_fixture  # noqa: F401


def test_recording_goes_on_without_the_key_and_the_backlog_is_sealed_later(
    tmp_path: Path, softhsm: SoftHsm, alsa_home: Path
) -> None:
    config, env, pin = token_unit(
        tmp_path,
        softhsm,
        alsa_home,
        "sealing-test",
        recorder={"autostart": True, "segment_seconds": 5},
    )
    hidden = pin.rename(tmp_path / "elsewhere.pin")  # the token's PIN is gone

    unit = Daemon(config, tmp_path / "data", env, tmp_path / "daemon.log").start()
    status = unit.wait_for(lambda s: s["segments_sealed"] >= 2, 60, "two segments without the key")
    assert status["state"] == "recording"
    assert status["sealer"]["state"] == "fault" and "key unavailable" in status["sealer"]["error"]
    assert str(pin) in status["sealer"]["error"]  # says which PIN file is missing
    assert status["sealer"]["backlog"] >= 3  # recording started + two segments
    assert not (unit.data / "evidence" / "ledger.jsonl").exists()

    hidden.rename(pin)  # the key is back
    unit.wait_for(
        lambda s: s["sealer"]["state"] == "ok" and s["sealer"]["backlog"] == 0, 30, "backlog sealed"
    )
    assert unit.terminate() == 0, unit.output()

    done = liuhen("verify", str(unit.data), "--trust", str(tmp_path / "device.pem"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
