"""Shared test fixtures: real devices (PortAudio through ALSA's file plugin), a real
daemon in a subprocess, and ffprobe/ffmpeg as the outside judges of the media."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TONE_HZ = 1000
MIC_RATE = 16000


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def token_unit(
    tmp_path: Path,
    softhsm: Any,
    alsa_home: Path,
    key_label: str,
    ca: Path | None = None,
    **sections: dict[str, Any],
) -> tuple[Path, dict[str, str], Path]:
    """A unit keyed on the SoftHSM2 token, its key made and certified through the CLI
    (self-signed, or by a development CA made in ``ca``, as C2PA needs):
    (config, environment for the daemon, PIN file)."""
    pin = tmp_path / "token.pin"
    pin.write_text(softhsm.user_pin + "\n")
    pin.chmod(0o600)
    env = {**softhsm.env(), "HOME": str(alsa_home), "PYTHONUNBUFFERED": "1"}
    config = write_config(
        tmp_path / "unit.toml",
        keys={"kind": "pkcs11", "module": softhsm.module, "token_label": softhsm.token_label,
              "pin_file": str(pin), "key_label": key_label, "certificate": str(tmp_path / "device.pem")},
        **sections,
    )  # fmt: skip
    by_ca = ["--ca", str(ca)] if ca is not None else []
    for args in ([["keys", "dev-ca", str(ca)]] if ca is not None else []) + [
        ["keys", "init", "--config", str(config)],
        ["keys", "cert", "--config", str(config), *by_ca],
    ]:
        done = liuhen(*args, env=env)
        assert done.returncode == 0, done.stderr
    return config, env, pin


@dataclass(frozen=True)
class RecordedData:
    """A data directory a unit recorded into, and the environment it ran with."""

    data: Path
    env: dict[str, str]

    @property
    def evidence(self) -> Path:
        return self.data / "evidence"

    def segments(self) -> list[Path]:
        return sorted(p for p in self.evidence.iterdir() if p.name.endswith((".mp4", ".mp4.enc")))


def liuhen(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`liuhen ARGS` as a user types it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "firmware_py.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout,
    )  # fmt: skip


def _toml(value: Any) -> str:
    """A TOML value for the scalars, lists and flat tables tests use."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    """A TOML config: a small simulated unit, overridden section by section.

    Unless ``keys`` is given, the unit signs with a development key file made here,
    with a self-signed certificate (C2PA off: it needs a CA-issued one)."""
    base: dict[str, dict[str, Any]] = {
        "unit": {"device_id": "test-unit"},
        "camera": {"kind": "simulated", "width": 320, "height": 240, "fps": 30, "bitrate": 400_000},
        "microphone": {"kind": "tone", "sample_rate": MIC_RATE, "bitrate": 32_000},
        "recorder": {"pre_event_seconds": 5, "segment_seconds": 10},
        "keys": {
            "kind": "software",
            "path": str(path.parent / "device.key"),
            "certificate": str(path.parent / "device.pem"),
        },
        "signer": {"c2pa": False},
        # Most tests look at the media; tests/test_encryption.py turns this on.
        "encryption": {"enabled": False},
    }
    if "keys" not in sections:
        make_software_identity(path.parent / "device.key", path.parent / "device.pem", "test-unit")
    for name, values in sections.items():
        if name == "keys":
            base[name] = dict(values)
        else:
            base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def make_software_identity(key: Path, cert: Path, device_id: str) -> None:
    from evidence.certs import chain_pem
    from signer.identity import self_signed_device_cert
    from signer.keys import KeySpec, init_key, open_backend

    spec = KeySpec(kind="software", path=str(key))
    if not key.exists():
        init_key(spec).close()
    if not cert.exists():
        with open_backend(spec) as backend:
            cert.write_text(chain_pem(self_signed_device_cert(backend, device_id)))


@pytest.fixture(scope="session")
def alsa_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME whose .asoundrc offers PortAudio a capture device 'testmic' that plays a
    1 kHz tone from a raw file (ALSA's file plugin; ../shared/SETUP.md)."""
    home = tmp_path_factory.mktemp("alsa-home")
    seconds = 300  # longer than any recording in the suite: past the end ALSA repeats
    t = np.arange(seconds * MIC_RATE) / MIC_RATE
    pcm = (np.sin(2 * math.pi * TONE_HZ * t) * 12000).astype("<i2")
    raw = home / "tone_s16le_16k_mono.raw"
    raw.write_bytes(pcm.tobytes())
    (home / ".asoundrc").write_text(
        "pcm.testmic {\n"
        "    type file\n"
        '    slave.pcm "null"\n'
        '    file "/dev/null"\n'
        f'    infile "{raw}"\n'
        '    format "raw"\n'
        '    hint { show on description "test mic" }\n'
        "}\n"
    )
    return home


@dataclass
class Daemon:
    """`liuhen run` in a subprocess, as systemd would run it."""

    config: Path
    data: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # e.g. strace, setpriv (tests/faultkit.py)

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "firmware_py.cli", "run", "--config", str(self.config),
                 "--data", str(self.data), "--no-live", "--status-every", "1"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
            )  # fmt: skip
        return self

    def ctl(self, *words: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "firmware_py.cli", "ctl", "--data", str(self.data), "--json", *words],
            capture_output=True, env=self.env, cwd=ROOT, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.ctl("status")["status"]
        return status

    def wait_for(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            try:
                last = self.status()
                if predicate(last):
                    return last
            except AssertionError:
                pass  # control socket not up yet
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last status {last}\n{self.output()}")

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.exits.append(rc)
        return rc

    def kill(self) -> int:
        """A power cut: SIGKILL, no chance to flush anything."""
        assert self.proc is not None
        kill_at = time.monotonic_ns() // 1000
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return kill_at

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def daemon_factory(tmp_path: Path, alsa_home: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(config: Path, data: Path | None = None) -> Daemon:
        env = {**os.environ, "HOME": str(alsa_home), "PYTHONUNBUFFERED": "1"}
        d = Daemon(config, data or tmp_path / "data", env, tmp_path / f"daemon{len(started)}.log")
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr, f"ffprobe {path.name}: {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def decode_errors(path: Path) -> str:
    """What ffmpeg says while decoding every frame of a file (empty: clean)."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.stderr if done.returncode == 0 else f"exit {done.returncode}: {done.stderr}"


@dataclass(frozen=True)
class StreamSpan:
    first_pts: float
    end: float  # last pts + its duration
    frames: int


def stream_spans(path: Path) -> dict[str, StreamSpan]:
    """Per stream type: first timestamp, end of the last packet, packet count (seconds)."""
    info = ffprobe(
        path, "-show_entries", "packet=codec_type,pts_time,duration_time", "-show_packets"
    )
    spans: dict[str, list[tuple[float, float]]] = {}
    for p in info["packets"]:
        spans.setdefault(p["codec_type"], []).append(
            (float(p["pts_time"]), float(p["pts_time"]) + float(p.get("duration_time", 0)))
        )
    return {
        kind: StreamSpan(min(a for a, _ in v), max(b for _, b in v), len(v))
        for kind, v in spans.items()
    }


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller: its workers inherit the name
        from faultkit import tally_file

        tally_file().unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The faults the fault tests injected and the inputs they tried (tests/faultkit.py)."""
    from faultkit import tally_file

    if hasattr(terminalreporter.config, "workerinput"):  # an xdist worker: the controller lists
        return
    path = tally_file()
    if path.exists():
        terminalreporter.section("injected faults and inputs")
        for line in sorted(path.read_text().splitlines()):
            terminalreporter.write_line(line)
        path.unlink()
