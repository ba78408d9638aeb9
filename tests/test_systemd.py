"""The unit as systemd runs it: the units pass ``systemd-analyze verify`` cleanly and
score what docs/decisions/0009-service-hardening.md says; sysusers and tmpfiles make
the user and its directories; every system call a recording makes passes the unit's
filter, with W^X memory enforced; and the daemon speaks sd_notify over a real
NOTIFY_SOCKET — READY=1 only once it really records or is ready to, WATCHDOG=1 only
while media flows (a frozen camera stops it), STATUS= the unit's one line, STOPPING=1
on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, write_config
from faultkit import (
    STRACE,
    InProcessUnit,
    NotifySocket,
    ledger_entries,
    liuhen,
    traced_pid,
    wait_until,
)

from firmware_py.sdnotify import Notifier, ServiceReport
from firmware_py.state import Fault, Mode, Verdict

SYSTEMD = ROOT / "systemd"
ADR = ROOT / "docs" / "decisions" / "0009-service-hardening.md"
UNITS = ("liuhen.service", "liuhen-central.service")
SHIPPED_PREFIX = "/opt/liuhen/.venv/bin/liuhen"
# Refused with EPERM and harmless (SystemCallErrorNumber=EPERM): OpenBLAS's memory-policy
# hint when numpy loads; SQLite's fchown of its journal, which it only does as root.
REFUSED_HARMLESS = {"mbind", "fchown"}
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def unit_copy(unit: str, directory: Path) -> Path:
    """The unit as shipped, with ExecStart pointing at this checkout's liuhen."""
    text = (SYSTEMD / unit).read_text()
    assert SHIPPED_PREFIX in text, f"{unit}: ExecStart does not use {SHIPPED_PREFIX}"
    here = Path(sys.executable).parent / "liuhen"
    assert here.exists(), f"{here}: the liuhen entry point is not installed"
    copy = directory / unit
    copy.write_text(text.replace(SHIPPED_PREFIX, str(here)))
    return copy


def documented_scores() -> dict[str, float]:
    """The exposure scores ADR 0009 promises, from its table."""
    rows = re.findall(r"^\| `([\w-]+\.service)` \| ([\d.]+) \|", ADR.read_text(), re.M)
    assert {u for u, _ in rows} == set(UNITS), f"{ADR.name}: no score table for {UNITS}"
    return {unit: float(score) for unit, score in rows}


def directive(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", (SYSTEMD / unit).read_text(), re.M)


# --- the unit files ----------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
@needs_systemd
def test_unit_verifies_cleanly(unit: str, tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit_copy(unit, tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("unit", UNITS)
@needs_systemd
def test_exposure_score_is_what_the_decision_record_says(unit: str, tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit_copy(unit, tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    score, promised = float(found.group(1)), documented_scores()[unit]
    print(f"[systemd] {unit}: exposure {score} (documented at most {promised})")
    assert score <= promised, f"{unit} scores {score}, ADR 0009 promises at most {promised}"


def test_the_recorder_unit_is_notify_restarts_and_stops_on_a_bad_config() -> None:
    unit = "liuhen.service"
    assert directive(unit, "Type") == ["notify"] and directive(unit, "NotifyAccess") == ["main"]
    assert directive(unit, "Restart") == ["always"] and directive(unit, "WatchdogSec")
    from firmware_py.daemon import EX_CONFIG, EX_DATAERR

    assert directive(unit, "RestartPreventExitStatus") == [f"{EX_CONFIG} {EX_DATAERR}"]
    assert directive(unit, "User") == ["liuhen"]
    assert directive(unit, "ReadWritePaths") == ["/var/lib/liuhen"]
    assert directive(unit, "DevicePolicy") == ["closed"]
    assert directive(unit, "CapabilityBoundingSet") == [""]
    assert directive(unit, "ProtectClock") == []  # would refuse the read-only adjtimex
    assert " --data /var/lib/liuhen " in directive(unit, "ExecStart")[0] + " "
    central = directive("liuhen-central.service", "ExecStart")[0]
    assert central.endswith("liuhen central serve --config /etc/liuhen/central.toml")


@needs_systemd
def test_sysusers_and_tmpfiles_make_the_user_and_its_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, conf in (
        ("systemd-sysusers", "sysusers.d/liuhen.conf"),
        ("systemd-sysusers", "sysusers.d/liuhen-central.conf"),
        ("systemd-tmpfiles", "tmpfiles.d/liuhen.conf"),
    ):
        args = [
            tool,
            f"--root={root}",
            *(["--create"] if "tmpfiles" in tool else []),
            str(SYSTEMD / conf),
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    users = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert users["liuhen"][5] == "/var/lib/liuhen" and users["liuhen"][6] == "/usr/sbin/nologin"
    assert "liuhen-central" in users
    wanted = directive("liuhen.service", "SupplementaryGroups")[0].split()
    for group in wanted:
        assert "liuhen" in groups[group][3].split(","), f"liuhen is not in group {group}"
    uid, gid = int(users["liuhen"][2]), int(users["liuhen"][3])
    for path, mode, owner in (("var/lib/liuhen", 0o750, (uid, gid)), ("run/liuhen", 0o750, (uid, gid)),
                              ("etc/liuhen", 0o750, (0, gid))):  # fmt: skip
        st = (root / path).stat()
        assert (st.st_mode & 0o7777, (st.st_uid, st.st_gid)) == (mode, owner), path


# --- what the daemon needs from the sandbox ------------------------------------------------


@cache
def syscall_group(name: str) -> frozenset[str]:
    """A system call group of this systemd, expanded (``systemd-analyze syscall-filter``)."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= syscall_group(item) if item.startswith("@") else {item}
    return frozenset(names)


def unit_syscall_filter(unit: str) -> set[str]:
    """The allow list the unit's SystemCallFilter= lines make, in systemd's order rules."""
    allowed: set[str] = set()
    for line in directive(unit, "SystemCallFilter"):
        deny = line.startswith("~")
        names: set[str] = set()
        for item in line.removeprefix("~").split():
            names |= syscall_group(item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


@needs_systemd
@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_every_system_call_of_a_recording_passes_the_filter_and_c2pa_works_without_wx_memory(
    tmp_path: Path, alsa_home: Path
) -> None:
    """The daemon records, seals, embeds C2PA and signs under strace (which lists every
    system call it makes) and with W^X memory enforced by the kernel (PR_SET_MDWE, what
    MemoryDenyWriteExecute=yes asks for): each call must pass the unit's filter."""
    from evidence.certs import chain_pem
    from signer.identity import issue_device_cert, make_dev_ca
    from signer.keys import KeySpec, init_key

    key = tmp_path / "device.key"
    ca = make_dev_ca(tmp_path / "ca")
    with init_key(KeySpec(kind="software", path=str(key))) as backend:
        cert = issue_device_cert(backend, "test-unit", tmp_path / "ca")
    (tmp_path / "device.pem").write_text(chain_pem(cert, ca.intermediate_cert))
    config = write_config(
        tmp_path / "unit.toml",
        keys={"kind": "software", "path": str(key), "certificate": str(tmp_path / "device.pem")},
        signer={"c2pa": True},
        recorder={"autostart": True, "segment_seconds": 5, "pre_event_seconds": 1},
    )
    counts = tmp_path / "syscalls.txt"
    data = tmp_path / "data"
    mdwe = (
        "import ctypes, runpy, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.prctl(65, 1, 0, 0, 0) == 0, f'PR_SET_MDWE: errno {ctypes.get_errno()}'\n"
        "sys.argv = ['liuhen', *sys.argv[1:]]\n"
        "runpy.run_module('firmware_py.cli', run_name='__main__')\n"
    )
    env = {**os.environ, "HOME": str(alsa_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(STRACE), "-f", "-qq", "-c", "-o", str(counts), sys.executable, "-c", mdwe,
         "run", "--config", str(config), "--data", str(data), "--no-live"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: any(e.get("segment", {}).get("c2pa") for e in ledger_entries(data)),
                   60, "a segment sealed with C2PA and signed")  # fmt: skip
    finally:
        os.kill(traced_pid(proc), signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "PR_SET_MDWE" not in output

    used = set(re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+\d+\s+(?:\d+\s+)?(\w+)$",
                          counts.read_text(), re.M)) - {"total"}  # fmt: skip
    assert len(used) > 30, counts.read_text()
    refused = used - unit_syscall_filter("liuhen.service") - REFUSED_HARMLESS
    print(
        f"[systemd] {len(used)} distinct system calls made; outside the filter: {sorted(refused)}"
    )
    assert not refused, f"liuhen.service's SystemCallFilter refuses {sorted(refused)}"
    assert liuhen("verify", str(data)).returncode == 0


# --- sd_notify, with the real daemon ----------------------------------------------------


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # 1 s: a ping every 0.25 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def test_ready_watchdog_status_and_stopping_from_the_real_daemon(
    tmp_path: Path, notify: NotifySocket, daemon_factory: Any
) -> None:
    config = write_config(tmp_path / "unit.toml", recorder={"pre_event_seconds": 2})
    unit = daemon_factory(config).start()
    ready = notify.wait("READY", "1", 30)
    status = unit.status()  # asked after READY: everything READY promised is there
    assert status["unit"]["mode"] == "ready", status
    assert status["last_packet_us"].keys() == {"video", "audio"}
    assert ready.fields["STATUS"] == "ready"
    before = [n for n in notify.all() if n.at < ready.at]
    assert all("WATCHDOG" not in n.fields for n in before), "pinged before it was ready"
    assert {n.fields.get("STATUS") for n in before} <= {"boot", None}, before

    unit.ctl("record", "start")
    recording = notify.wait("STATUS", "recording", 10)
    wait_until(lambda: len(notify.having("WATCHDOG", "1")) >= 4, 5, "watchdog pings")
    wait_until(lambda: any(n.at > recording.at for n in notify.having("WATCHDOG", "1")), 5,
               "a watchdog ping while recording")  # fmt: skip

    assert unit.terminate() == 0, unit.output()
    stopping = notify.wait("STOPPING", "1", 5)
    assert not [n for n in notify.having("WATCHDOG") if n.at > stopping.at]
    assert len(notify.having("READY")) == 1


def test_watchdog_pings_stop_while_the_camera_is_frozen(
    tmp_path: Path, notify: NotifySocket, alsa_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(alsa_home))
    config = write_config(tmp_path / "unit.toml", recorder={"pre_event_seconds": 2})
    unit = InProcessUnit.start(config, tmp_path / "data")
    try:
        notify.wait("READY", "1", 30)
        assert unit.request(cmd="record", action="start")["ok"]
        notify.wait("STATUS", "recording", 10)
        wait_until(lambda: len(notify.having("WATCHDOG")) >= 3, 5, "pings while recording")

        unit.daemon.camera.freeze()
        stalled = notify.wait("STATUS", "audio_only — faults: camera_stalled", 5)
        time.sleep(2.0)  # twice the watchdog timeout: systemd would have restarted it
        late = [n for n in notify.having("WATCHDOG") if n.at > stalled.at]
        assert not late, f"{len(late)} pings while the camera was frozen"

        unit.daemon.camera.freeze(False)
        back = notify.wait("STATUS", "recording", 5)
        notify.wait("WATCHDOG", "1", 2, after=back.at)
    finally:
        assert unit.stop() == 0
    notify.wait("STOPPING", "1", 5)


# --- the rules, for what a test machine cannot make happen (an unset clock) ---------------


class Recorded(Notifier):
    def __init__(self, watchdog_usec: int | None = 1_000_000) -> None:
        super().__init__("@unused", watchdog_usec)
        self.sent: list[str] = []

    def _send(self, message: str) -> None:
        self.sent.append(message)


def test_ready_is_refused_while_the_clock_is_unset_unless_allowed() -> None:
    now = [0.0]
    notifier = Recorded()
    report = ServiceReport(notifier, clock=lambda: now[0])
    unset = Verdict(Mode.READY, frozenset({Fault.CLOCK_UNSET}))
    for _ in range(3):
        report.update(unset, "ready — faults: clock_unset")
        now[0] += 5
    assert not [m for m in notifier.sent if "READY=1" in m]
    assert not [m for m in notifier.sent if "WATCHDOG" in m]  # not armed before READY
    extends = [m for m in notifier.sent if m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert len(extends) == 2  # at 0 s and 10 s: alive, waiting for the clock
    report.update(Verdict(Mode.READY), "ready")
    assert notifier.sent[-2:] == ["READY=1\nSTATUS=ready", "WATCHDOG=1"]

    allowed = Recorded()
    ServiceReport(allowed, require_clock=False).update(unset, "ready — faults: clock_unset")
    assert allowed.sent[0] == "READY=1\nSTATUS=ready — faults: clock_unset"


def test_no_ready_in_boot_no_pings_in_a_stall_and_quiet_without_a_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notifier = Recorded()
    report = ServiceReport(notifier, clock=time.monotonic)
    report.update(Verdict(Mode.BOOT), "boot")
    assert notifier.sent == ["STATUS=boot"]
    for stall in (Fault.CAMERA_STALLED, Fault.MIC_STALLED, Fault.WRITE_STALLED):
        assert not report.media_flowing(Verdict(Mode.RECORDING, frozenset({stall})))
    assert report.media_flowing(Verdict(Mode.RECORDING, frozenset({Fault.STORAGE_LOW})))

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    quiet = Notifier.from_env()
    assert not quiet.enabled and quiet.watchdog_interval_s is None
    quiet.ready("ready")  # a no-op, not an error

    monkeypatch.setenv("NOTIFY_SOCKET", "@liuhen-test")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert Notifier.from_env().watchdog_interval_s is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_interval_s == 30.0


def test_abstract_socket_address_and_a_dead_socket(tmp_path: Path) -> None:
    name = f"liuhen-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(2)
        Notifier("@" + name).ready("ready")
        assert listener.recv(100) == b"READY=1\nSTATUS=ready"
    Notifier(str(tmp_path / "nobody-listens")).watchdog()  # logged once, never raised
