"""The wall clock stepping under a running unit: every step is a signed ``clock_stepped``
event with its size and the times before and after; slewing and a late tick are not
steps. The machine's clock is never touched: the daemon reads it through
``ClockWatch.read``, which the test shifts as a step would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import InProcessUnit, Tally, ledger_events, verify, wait_until

from firmware_py.clockwatch import ClockWatch
from hw.clock import ClockReading


def clock(readings: list[tuple[int, int]]) -> Callable[[], ClockReading]:
    """(monotonic µs, wall ns) readings, one per call."""
    it = iter(readings)
    return lambda: ClockReading(*next(it))


def test_steps_are_found_slewing_and_late_ticks_are_not() -> None:
    t0, w0 = 1_000_000, 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    ticks = [(t0 + n * 200_000, w0 + n * 200_000_000 + n * 100_000) for n in range(10)]  # slew
    watch = ClockWatch(clock([*ticks, (t0 + 60_000_000, w0 + 60 * 10**9 + 1_000_000)]))
    assert [watch.step() for _ in range(10)] == [None] * 10  # 0.5 ms/s slew, a 58 s late tick

    watch = ClockWatch(clock([(t0, w0), (t0 + 200_000, w0 + 200_000_000 + 90 * 10**9),
                              (t0 + 400_000, w0 + 400_000_000 + 87 * 10**9)]))  # fmt: skip
    forward = watch.step()
    assert forward is not None and forward["step_s"] == 90.0
    assert (forward["from"], forward["to"]) == (
        "2026-01-01T00:00:00.200Z",
        "2026-01-01T00:01:30.200Z",
    )
    back = watch.step()
    assert back is not None and back["step_s"] == -3.0


def test_a_running_unit_signs_every_clock_step(
    tmp_path: Path, alsa_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(alsa_home))
    unit = InProcessUnit.recording(tmp_path)
    tally = Tally()
    try:
        for shift_s in (3600, 0, -2):  # NTP sets a wrong RTC right; back; a small step back
            shift = shift_s * 10**9
            unit.daemon.clock_watch.read = lambda s=shift: _shifted(s)
            tally["clock steps"] += 1
            wait_until(lambda n=tally["clock steps"]: len(ledger_events(unit.data, "clock_stepped")) >= n,
                       10, f"the step by {shift_s} s signed")  # fmt: skip
        assert unit.status()["state"] == "recording"  # a step does not touch the recording
    finally:
        assert unit.stop() == 0
    steps = [e["detail"]["step_s"] for e in ledger_events(unit.data, "clock_stepped")]
    assert [round(s) for s in steps] == [3600, -3600, -2], steps
    assert verify(unit.data)["exit"] == 0
    tally.report("clock steps")


def _shifted(ns: int) -> ClockReading:
    now = ClockReading.now()
    return ClockReading(now.monotonic_us, now.wall_ns + ns)
