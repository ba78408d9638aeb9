"""Storage that runs out or goes away, on real small file systems (tmpfs, needs root).

The storage budget works end to end: below ``low_free_mb`` the unit warns, below
``stop_free_mb`` it stops recording cleanly — fault LED, a signed ``state_changed`` and
``recording_stopped (storage-full)`` entry for the centre, the status says why — and
refuses to start again until there is room. When another program eats the space below
the threshold, the write really fails (ENOSPC): every whole fragment is kept, the
daemon stays up with a clear fault and catches up once there is room. A file system
remounted read-only mid-recording is the same. Nothing already recorded is ever lost,
deleted or overwritten, and ``liuhen verify`` says the evidence is intact.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from faultkit import (
    InProcessUnit,
    Tally,
    errors,
    ext4,
    ext4_available,
    fill,
    ledger_events,
    rows,
    tmpfs,
    verify,
    wait_until,
)

from hw.panel import REFERENCE_PINS, Indication

MB = 1 << 20
LOW_MB, STOP_MB = 20, 16
PANEL = {"kind": "mock", "green": REFERENCE_PINS.green, "red": REFERENCE_PINS.red,
         "yellow": REFERENCE_PINS.yellow}  # fmt: skip

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path, alsa_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 30 MiB tmpfs as the data directory."""
    monkeypatch.setenv("HOME", str(alsa_home))
    with tmpfs(tmp_path / "data", 30) as data:
        yield data


def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "unit.toml",
        recorder={"pre_event_seconds": 2, "segment_seconds": 5},
        storage={"low_free_mb": LOW_MB, "stop_free_mb": STOP_MB},
        panel=PANEL,
    )


def unit_faults(unit: InProcessUnit) -> set[str]:
    return set(unit.status()["unit"]["faults"])


def sealed_so_far(data: Path) -> dict[str, str]:
    """name -> sha256 of every segment the index calls finished."""
    return {
        r["name"]: r["sha256"]
        for r in rows(
            data, "SELECT name, sha256 FROM segments WHERE state IN ('sealed', 'recovered')"
        )
    }


def assert_all_kept(data: Path, before: dict[str, str]) -> dict[str, Any]:
    """Every segment finished before the fault is still there, byte for byte, and the
    evidence verifies."""
    after = sealed_so_far(data)
    assert before.items() <= after.items(), "a segment finished before the fault changed"
    report = verify(data)
    assert report["exit"] == 0, errors(report)
    return report


def test_low_warns_full_stops_cleanly_refuses_to_start_and_keeps_everything(
    tmp_path: Path, small_disk: Path
) -> None:
    tally = Tally()
    ballast = small_disk / "ballast"  # another program's file on the same disk
    fill(ballast, leave_bytes=(LOW_MB - 1) * MB)
    unit = InProcessUnit.start(config(tmp_path), small_disk)
    try:
        wait_until(lambda: unit_faults(unit) == {"storage_low"}, 10, "the storage_low warning")
        assert unit.daemon.panel.indication == Indication.STORAGE_LOW
        assert unit.request(cmd="record", action="start")["ok"]  # low is a warning only
        wait_until(lambda: unit.status()["segments_sealed"] >= 1, 20, "a segment sealed")
        before = sealed_so_far(small_disk)

        fill(ballast, leave_bytes=STOP_MB * MB + 200_000)  # the recording crosses the line
        tally["storage_full"] += 1
        stopped = {"mode": "ready", "faults": ["storage_full"]}
        wait_until(lambda: unit.status()["unit"] == stopped, 15, "the recording stopped")
        status = unit.status()
        assert status["state"] == "ready", status
        assert status["storage_free_bytes"] < STOP_MB * MB
        assert unit.daemon.panel.indication == Indication.STORAGE_FULL
        wait_until(lambda: ledger_events(small_disk, "recording_stopped"), 10, "the stop signed")
        assert (
            ledger_events(small_disk, "recording_stopped")[0]["detail"]["reason"] == "storage-full"
        )
        alarm = [e for e in ledger_events(small_disk, "state_changed")
                 if "storage_full" in e["detail"]["to"]["faults"]]  # fmt: skip
        assert alarm, "no signed state_changed entry for the centre"

        refused = unit.request(cmd="record", action="start")
        tally["record_start_refused"] += 1
        assert not refused["ok"] and "storage" in refused["error"], refused
        assert unit.status()["state"] == "ready"

        ballast.unlink()  # the space comes back: the recording the disk cut short resumes
        wait_until(lambda: unit.status()["state"] == "recording", 10, "recording again by itself")
        tally["resumed"] += 1
        wait_until(lambda: len(ledger_events(small_disk, "recording_started")) >= 2, 10, "signed")
        resumed = ledger_events(small_disk, "recording_started")[-1]["detail"]
        assert resumed["trigger"] == "resume:storage-full", resumed
        assert unit.request(cmd="record", action="stop")["ok"]
        fill(ballast, leave_bytes=STOP_MB * MB - 100_000)  # full again, but nobody owes a
        wait_until(lambda: "storage_full" in unit_faults(unit), 10, "full again")  # recording:
        ballast.unlink()  # a person stopped it, so room coming back starts nothing
        wait_until(lambda: "storage_full" not in unit_faults(unit), 10, "room again")
        time.sleep(1)
        assert unit.status()["state"] == "ready"
    finally:
        assert unit.stop() == 0
    report = assert_all_kept(small_disk, before)
    assert report["segments"] >= 2
    tally.report("storage thresholds")


def test_an_autostart_refused_for_storage_starts_once_there_is_room(
    tmp_path: Path, small_disk: Path
) -> None:
    """A hearing room's unit that boots on a nearly full disk cannot record yet; it must
    not wait for a person to notice, but start as soon as room comes back."""
    tally = Tally()
    ballast = small_disk / "ballast"
    fill(ballast, leave_bytes=STOP_MB * MB - 300_000)
    unit = InProcessUnit.start(
        write_config(
            tmp_path / "unit.toml",
            recorder={"autostart": True, "segment_seconds": 5},
            storage={"low_free_mb": LOW_MB, "stop_free_mb": STOP_MB},
            panel=PANEL,
        ),
        small_disk,
    )
    try:
        wait_until(lambda: ledger_events(small_disk, "record_refused"), 15, "the refusal signed")
        tally["autostart refused"] += 1
        wait_until(lambda: "storage_full" in unit_faults(unit), 10, "the storage_full fault")
        assert unit.status()["state"] == "ready"
        ballast.unlink()
        wait_until(lambda: unit.status()["state"] == "recording", 15, "recording by itself")
        tally["started when room came back"] += 1
        wait_until(lambda: ledger_events(small_disk, "recording_started"), 10, "the start signed")
        started = ledger_events(small_disk, "recording_started")[0]["detail"]
        assert started["trigger"] == "resume:autostart", started
    finally:
        assert unit.stop() == 0
    tally.report("autostart on a full disk")


def test_space_eaten_below_the_threshold_fails_a_write_and_keeps_every_whole_fragment(
    tmp_path: Path, small_disk: Path
) -> None:
    """Another program takes the last byte faster than the budget can see: the write
    itself fails with ENOSPC."""
    tally = Tally()
    ballast = small_disk / "ballast"
    ballast.touch()  # made while there is room: on a full tmpfs even a new name fails
    unit = InProcessUnit.start(config(tmp_path), small_disk)
    try:
        interrupted, before = record_into_a_second_segment(unit, small_disk)
        fill(ballast, leave_bytes=0)
        tally["ENOSPC"] += 1
        assert_write_failed(unit)
        ballast.unlink()  # the operator makes room: the held events and the backlog go in
        wait_until(lambda: ledger_events(small_disk, "write_failed"), 20, "the failure signed")
        assert "No space left" in ledger_events(small_disk, "write_failed")[0]["detail"]["error"]
        assert unit.request(cmd="record", action="start")["ok"]  # `record start` tries again
        wait_until(lambda: unit.status()["state"] == "recording", 10, "recording again")
    finally:
        assert unit.stop() == 0
    assert_recovered_after_restart(tmp_path, small_disk, interrupted, before)
    tally.report("disk filled below the threshold")


@pytest.mark.skipif(ext4_available() is not None, reason=f"ext4 loop mount: {ext4_available()}")
def test_a_disk_gone_read_only_mid_recording_keeps_every_whole_fragment(
    tmp_path: Path, alsa_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel turns the evidence file system read-only (an ext4 error with
    errors=remount-ro): writes fail with EROFS; after fsck the next start recovers."""
    monkeypatch.setenv("HOME", str(alsa_home))
    tally = Tally()
    with ext4(tmp_path, 64) as fs:
        unit = InProcessUnit.start(config(tmp_path), fs.mountpoint)
        try:
            interrupted, before = record_into_a_second_segment(unit, fs.mountpoint)
            fs.fail()
            tally["EROFS"] += 1
            assert_write_failed(unit)
            assert "Read-only" in unit.status()["fault"]
            refused = unit.request(cmd="record", action="start")  # tries, fails, says so
            assert unit.thread.is_alive() and "ok" in refused
        finally:
            assert unit.stop() == 0  # what it cannot write any more is logged, not raised
        tally["fsck"] += 1
        fs.repair()
        assert_recovered_after_restart(tmp_path, fs.mountpoint, interrupted, before)
    tally.report("disk turned read-only")


def record_into_a_second_segment(unit: InProcessUnit, data: Path) -> tuple[str, dict[str, str]]:
    """Record until one segment is sealed and the next holds whole fragments; returns
    that segment's name and the finished ones."""
    assert unit.request(cmd="record", action="start")["ok"]
    wait_until(lambda: unit.status()["segments_sealed"] >= 1, 20, "a segment sealed")
    wait_until(lambda: unit.status()["segment_media_s"] > 1.6, 5, "fragments of the next")
    status = unit.status()
    return status["segment"], sealed_so_far(data)


def assert_write_failed(unit: InProcessUnit) -> None:
    """The unit stays up and says exactly what failed, on the panel too."""
    wait_until(lambda: "write_failed" in unit_faults(unit), 10, "the write failure")
    status = unit.status()
    assert unit.thread.is_alive(), "the daemon died"
    assert status["state"] == "fault", status
    assert status["fault"].startswith("write failed: [Errno"), status
    assert unit.daemon.panel.indication == Indication.STORAGE_FULL


def assert_recovered_after_restart(
    tmp_path: Path, data: Path, interrupted: str, before: dict[str, str]
) -> None:
    """A restart seals what the failure left; verify names it as recovered."""
    again = InProcessUnit.start(config(tmp_path), data)
    assert again.stop() == 0
    assert not list((data / "evidence").glob("*.part"))
    report = assert_all_kept(data, before)
    (row,) = rows(data, "SELECT * FROM segments WHERE name = ?", interrupted)
    assert (
        row["state"] == "recovered" and row["media_end_us"] - row["media_start_us"] > 1_000_000
    ), row
    assert [f for f in report["findings"] if f["code"] == "recovered" and f["where"] == interrupted]


def test_a_start_on_a_full_disk_says_so_and_is_retried_until_there_is_room(
    tmp_path: Path, small_disk: Path, daemon_factory: Any
) -> None:
    """Power cut while recording, then the disk fills before the next start: the start
    fails with exit 73 (systemd retries it) naming the index and the free space; once
    there is room the unit starts, recovers the cut segment and records."""
    unit_toml = write_config(
        tmp_path / "unit.toml",
        recorder={"autostart": True, "segment_seconds": 5},
        storage={"low_free_mb": LOW_MB, "stop_free_mb": STOP_MB},
    )
    cut = daemon_factory(unit_toml, small_disk).start()
    cut.wait_for(lambda s: (s["segment_media_s"] or 0) > 1.5, 30, "fragments written")
    cut.kill()
    ballast = small_disk / "ballast"
    fill(ballast, leave_bytes=0)
    full = daemon_factory(unit_toml, small_disk).start()
    assert full.proc is not None and full.proc.wait(30) == 73, full.output()
    assert f"{small_disk / 'index.sqlite'} cannot be used (" in full.output(), full.output()
    assert "MB free" in full.output() and "Traceback" not in full.output()
    ballast.unlink()
    again = daemon_factory(unit_toml, small_disk).start()
    again.wait_for(lambda s: s["state"] == "recording", 30, "recording once there is room")
    assert again.terminate() == 0, again.output()
    report = verify(small_disk)
    assert report["exit"] == 0 and any(f["code"] == "recovered" for f in report["findings"])
    Tally({"start on a full disk": 1}).report("start on a full disk")
