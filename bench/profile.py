"""Where the pipeline-cost run spends its CPU: py-spy samples summarised.

Owns: running the pipeline worker under ``py-spy record --native`` (Python and C frames,
so time in libavformat, OpenSSL's SHA-256 or fsync shows under the product function that
called it) and summarising the samples of the recording path's threads (Recorder,
journal, Sealer; the main thread only loads the input and waits). Must not: be part of
a timed run: sampling slows the process it watches.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure import REPO
from bench.results import Context, Figure, Result

PRODUCT = ("recorder/", "signer/", "hw/", "firmware_py/", "uplink/")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
RATE = 250
WAITS = frozenset(
    {"pthread_cond_timedwait", "pthread_cond_wait", "sem_timedwait", "sem_clockwait",
     "clock_nanosleep", "nanosleep", "poll", "select", "epoll_wait", "Event.wait",
     "PyThread_acquire_lock_timed", "take_gil", "drop_gil",
     "Condition.wait"}
)  # fmt: skip
DISK = frozenset({"fsync", "fdatasync"})


def command(src: Path, work: Path, out: Path) -> list[str]:
    return [
        shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy",
        "record", "--native", "-r", str(RATE), "-f", "raw", "-o", str(out), "--",
        sys.executable, "-m", "bench.pipeline", str(src), str(work),
    ]  # fmt: skip


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text)
    return (m["func"], m["file"]) if m else (text, "")


def _name(func: str, file: str) -> str:
    if file.endswith(".py"):
        return f"{file}:{func}"
    lib = re.sub(r"[-.]([0-9a-f]{8}|so).*$", "", Path(file).name) if file else "?"
    return f"{'(no symbol)' if func.startswith('0x') else func} [{lib}]"


def _state(frames: list[tuple[str, str]]) -> str:
    """on-cpu, disk (blocked in fsync) or wait (GIL, a lock, a queue, a sleep)."""
    funcs = {func for func, _ in frames}
    if funcs & WAITS:
        return "wait"
    return "disk" if funcs & DISK else "cpu"


def summarise(raw: Path, top: int = 12) -> dict[str, Any]:
    """py-spy samples wall-clock time. Samples are split into waiting (the GIL, a lock,
    a queue), blocked in fsync, and on CPU; the tables rank on-CPU samples by the
    function running (C or Python) and by the innermost product function (its own time
    plus the library and C code it called)."""
    leaf: Counter[str] = Counter()
    product: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    states: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";")]
        if not any(func == "Thread._bootstrap" for func, _ in frames):
            continue  # main thread: loading the input, then waiting
        n = int(count_text)
        state = _state(frames)
        states[state] += n
        if state != "cpu":
            continue
        total += n
        leaf[_name(*frames[-1])] += n
        owner = next((_name(f, p) for f, p in reversed(frames) if p.startswith(PRODUCT)), "(other)")
        product[owner] += n
        run = next((f for f, _ in frames if f.endswith("._run") or f.endswith("_run_journal")), "?")
        threads[run] += n

    def table(c: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": k, "samples": v, "share": v / total if total else 0.0}
            for k, v in c.most_common(top)
        ]

    return {
        "samples": dict(states),
        "rate_hz": RATE,
        "by_thread": table(threads),
        "self": table(leaf),
        "by_product_function": table(product),
    }


def run(ctx: Context) -> Result:
    area = ctx.area("profile")
    raw = area / "pipeline.raw.txt"
    cmd = command(ctx.input.path, area / "run", raw)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    shutil.rmtree(area / "run", ignore_errors=True)
    if proc.returncode:
        raise RuntimeError(f"py-spy failed: {proc.stderr[-2000:]}")
    summary = summarise(raw)
    states = summary["samples"]
    awake = sum(states.values()) or 1
    return Result(
        id="profile",
        title="Profile of the pipeline-cost run",
        what=(
            f"py-spy --native at {RATE} Hz over the pipeline worker "
            f"({ctx.input.seconds} s input); recording threads only. Of their samples "
            f"{100 * states.get('cpu', 0) / awake:.0f} % on CPU, "
            f"{100 * states.get('disk', 0) / awake:.0f} % blocked in fsync, "
            f"{100 * states.get('wait', 0) / awake:.0f} % waiting (queue, GIL, locks). "
            "Shares below are of the on-CPU samples, by innermost product function."
        ),
        command=f"python -m bench --only profile{' --quick' if ctx.quick else ''}",
        figures=[
            Figure(row["function"], 100 * row["share"], "% on-CPU")
            for row in summary["by_product_function"][:6]
        ],
        details={"raw": str(raw), "py_spy": " ".join(["py-spy", *cmd[1:]]), **summary},
    )
