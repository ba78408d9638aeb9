"""A bad configuration is refused at start with a message naming the key and the problem,
and nothing in the data directory is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_config

from firmware_py.config import render_markdown


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def run_liuhen(
    config: Path, data: Path, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"HOME": str(home)} if home else {})}
    return subprocess.run(
        [sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--data", str(data), "--no-live"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


CASES = {
    "unknown key": ({"recorder": {"pre_event_secs": 10}}, 78, "recorder.pre_event_secs: unknown key"),
    "out of range": ({"recorder": {"pre_event_seconds": 300}}, 78, "recorder.pre_event_seconds: input should be less than or equal to 120 (got 300)"),
    "wrong type": ({"camera": {"fps": "30"}}, 78, "camera.fps: input should be a valid integer (got '30')"),
    "bad device id": ({"unit": {"device_id": "../etc"}}, 78, "unit.device_id: string should match pattern"),
    "missing microphone": ({"microphone": {"kind": "portaudio", "device": "no-such-mic"}}, 69, "microphone 'no-such-mic' not found; PortAudio input devices:"),
    "pi camera off the pi": ({"camera": {"kind": "pi"}}, 69, "camera: kind is 'pi' but picamera2 cannot be imported here"),
    "storage lines crossed": ({"storage": {"low_free_mb": 100, "stop_free_mb": 200}}, 78, "low_free_mb (100) must be above stop_free_mb (200)"),
    "body unit without agency key": ({"encryption": {"enabled": True}}, 78, "encryption.recipient: a body unit encrypts its evidence"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_config_is_refused_and_data_untouched(
    case: str, tmp_path: Path, alsa_home: Path
) -> None:
    overrides, code, message = CASES[case]
    config = write_config(tmp_path / "unit.toml", **overrides)
    data = tmp_path / "data"
    (data / "evidence").mkdir(parents=True)
    (data / "evidence" / "earlier.mp4").write_bytes(b"evidence from before")
    before = snapshot(data)

    done = run_liuhen(config, data, alsa_home)

    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert snapshot(data) == before
    missing = tmp_path / "never-created"
    assert run_liuhen(config, missing, alsa_home).returncode == code
    assert not missing.exists()


def test_missing_camera_section_and_broken_toml(tmp_path: Path) -> None:
    no_camera = tmp_path / "no-camera.toml"
    no_camera.write_text('[unit]\ndevice_id = "u1"\n')
    done = run_liuhen(no_camera, tmp_path / "d1")
    assert done.returncode == 78
    assert "camera: required but missing" in done.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text('[unit]\ndevice_id = "u1\n')
    done = run_liuhen(broken, tmp_path / "d2")
    assert done.returncode == 78 and "not valid TOML" in done.stderr
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_the_example_configuration_is_valid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "firmware_py.cli", "config", "check", "examples/sim.toml"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_config_reference_is_in_step_with_the_schema() -> None:
    assert (ROOT / "docs" / "CONFIG.md").read_text() == render_markdown(), (
        "docs/CONFIG.md is stale: run `make docs`"
    )
