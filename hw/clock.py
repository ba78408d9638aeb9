"""The unit's one media clock, and the mapping from it to wall-clock time.

Owns: reading CLOCK_MONOTONIC (all media timestamps) and CLOCK_REALTIME (what a court
reads). Must not: set or step the clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime


def monotonic_us() -> int:
    """CLOCK_MONOTONIC in microseconds: the timeline every packet is stamped on."""
    return time.monotonic_ns() // 1000


def sleep_until_us(deadline_us: int) -> None:
    delay = deadline_us - monotonic_us()
    if delay > 0:
        time.sleep(delay / 1_000_000)


@dataclass(frozen=True, slots=True)
class ClockReading:
    """A simultaneous reading of both clocks, to place monotonic times on the calendar."""

    monotonic_us: int
    wall_ns: int

    @classmethod
    def now(cls) -> ClockReading:
        wall = time.time_ns()
        mono = monotonic_us()
        return cls(monotonic_us=mono, wall_ns=wall)

    def wall_for(self, mono_us: int) -> datetime:
        """Wall-clock time (UTC) of a monotonic instant, by this reading's offset."""
        ns = self.wall_ns + (mono_us - self.monotonic_us) * 1000
        return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def utc_iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def boot_id() -> str:
    """This boot's random id: CLOCK_MONOTONIC times compare only within one boot."""
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:
        return "unknown"


_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def clock_synced() -> bool | None:
    """Whether the kernel considers the system clock synchronised (NTP/PTP/GNSS
    discipline, as adjtimex(2) reports it); None where that cannot be asked."""
    libc = _libc()
    if libc is None:
        return None
    try:
        timex = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = int(libc.adjtimex(timex))
    except AttributeError:
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR
