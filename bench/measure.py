"""Measuring: CPU time, wall time and peak memory of this process or of a command,
percentiles, and the best of several runs.

Owns: the clock and ``getrusage``/``wait4`` arithmetic every benchmark uses, so they all
count the same way (CPU = user + system time of every thread of the process measured).
Must not: know what is being measured.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Cost:
    """What a piece of work cost: wall seconds, CPU seconds (user, system), peak RSS."""

    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float = 0.0
    machine_cpu_s: float | None = None  # every CPU of the machine, kernel threads too

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def __add__(self, other: Cost) -> Cost:
        machine = (
            None
            if self.machine_cpu_s is None or other.machine_cpu_s is None
            else self.machine_cpu_s + other.machine_cpu_s
        )
        return Cost(
            self.wall_s + other.wall_s,
            self.user_s + other.user_s,
            self.sys_s + other.sys_s,
            max(self.max_rss_mb, other.max_rss_mb),
            machine,
        )

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "cpu_s": self.cpu_s}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    """This process's resident memory now (VmRSS)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent's memory across fork + exec, so a worker would report the
    memory of whoever started it."""
    return _status_mb("VmHWM")


def machine_busy_s() -> float:
    """CPU seconds every CPU of the machine has spent not idle since boot (/proc/stat):
    counts the kernel's flusher threads, which write back what a process left dirty."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Meter:
    """CPU and wall time of this process (all its threads) between start and ``cost``,
    and of the whole machine over the same time."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._ru = resource.getrusage(resource.RUSAGE_SELF)
        self._busy = machine_busy_s()

    def cost(self) -> Cost:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return Cost(
            time.perf_counter() - self._wall,
            ru.ru_utime - self._ru.ru_utime,
            ru.ru_stime - self._ru.ru_stime,
            peak_rss_mb(),
            machine_busy_s() - self._busy,
        )


def run_command(cmd: Sequence[str], *, stdin: Path | None = None) -> Cost:
    """Run a command to completion; its wall time and its own CPU time (from wait4, so
    nothing else on the machine is counted). Raises on failure. No peak RSS: wait4's
    ru_maxrss includes the parent's memory before exec (see ``peak_rss_mb``)."""
    with open(stdin or os.devnull, "rb") as inp, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdin=inp, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {text}")
    return Cost(wall, ru.ru_utime, ru.ru_stime)


def run_worker(module: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m module args`` (a benchmark worker, in a process of its own so its
    CPU time and memory are its alone) and return the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"worker {module} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(n: int, run: Callable[[], T], key: Callable[[T], float]) -> tuple[T, list[T]]:
    """Run ``n`` times; the run with the smallest ``key`` (least disturbed by whatever
    else the machine was doing) and all runs."""
    runs = [run() for _ in range(n)]
    return min(runs, key=key), runs


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latency samples (linear interpolation, as numpy does)."""
    a = np.asarray(samples, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "n": len(a),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
        "min": float(a.min()),
    }


def emit(result: Any) -> None:
    """A worker's answer to run_worker: one JSON line on stdout."""
    print(json.dumps(result), flush=True)
