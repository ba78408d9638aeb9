"""Clock steps: the wall clock jumping against the monotonic clock.

Owns: noticing, once per daemon tick, that wall time minus monotonic time moved by more
than ``STEP_NS`` since the last tick — an NTP or GNSS step, a manual ``date -s``, an RTC
read late in boot — and describing the step for the journal, so that every one of them
is a signed ledger event and a court can see which entries were stamped before it.
Slewing (at most 0.5 ms a second) and a late tick (both clocks advance together) are not
steps. Must not: set or slew the clock, or judge which of the two times was right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hw.clock import ClockReading, clock_synced, utc_iso

STEP_NS = 1_000_000_000  # more than this between two ticks is a step


class ClockWatch:
    def __init__(self, read: Callable[[], ClockReading] = ClockReading.now) -> None:
        self.read = read  # a test may substitute the reading, never the clock
        self._offset = _offset(self.read())

    def step(self) -> dict[str, Any] | None:
        """The step since the last call, as journal detail, or None."""
        now = self.read()
        offset = _offset(now)
        moved, self._offset = offset - self._offset, offset
        if abs(moved) <= STEP_NS:
            return None
        before = ClockReading(now.monotonic_us, now.wall_ns - moved)
        return {
            "step_s": round(moved / 1e9, 3),
            "from": utc_iso(before.wall_for(now.monotonic_us)),
            "to": utc_iso(now.wall_for(now.monotonic_us)),
            "clock_synced": clock_synced(),
        }


def _offset(reading: ClockReading) -> int:
    """Wall clock minus monotonic clock, in nanoseconds."""
    return reading.wall_ns - reading.monotonic_us * 1000
