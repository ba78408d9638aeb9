"""Real-time overhead: CPU share of one core and peak memory of the recording path
while the input plays at real time, with a 30 s pre-event buffer.

Owns: the worker that replays the pre-encoded input at its timestamps into ``bench.rig``
(standby: packets fill the pre-event ring; then ``recorder.start``: the ring is written
out and recording goes on, a segment is sealed and signed), and the same worker with a
sink that drops every packet: the cost of reading and pacing the input alone, which is
subtracted. Both run at once, each in a process of its own.
Must not: count encoding: the input is already encoded.

By hand: ``python -m bench.realtime record|feed INPUT.mp4 WORKDIR PRE_S REC_S``.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.inputs import iter_packets
from bench.keys import make_key
from bench.measure import Cost, Meter, emit, peak_rss_mb, rss_mb, run_worker
from bench.replay import play
from bench.results import Context, Figure, Goal, Result
from bench.rig import Rig, settings
from hw.clock import monotonic_us
from hw.media import EncodedPacket

WARMUP_S = 2.0  # threads start, the key opens, the genesis entry is signed


class _Phases:
    """Cuts the replay into warm-up, standby (ring filling) and recording by media time."""

    def __init__(self, t0: int, pre_s: float, start: Any) -> None:
        self.standby_at = t0 + int(WARMUP_S * 1e6)
        self.record_at = t0 + int(pre_s * 1e6)
        self._start = start
        self.meter: Meter | None = None
        self.standby: Cost | None = None
        self.rss_standby_mb = 0.0

    def __call__(self, packet: EncodedPacket) -> None:
        if self.meter is None and packet.pts_us >= self.standby_at:
            self.meter = Meter()
        elif self.standby is None and self.meter and packet.pts_us >= self.record_at:
            self.standby = self.meter.cost()
            self.rss_standby_mb = rss_mb()
            self.meter = Meter()
            self._start()


def _worker(mode: str, src: Path, work: Path, pre_s: float, rec_s: float) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    rig = None
    if mode == "record":
        rig = Rig(work / "data", make_key("software", work / "key"), settings(pre_event_s=30))
        rig.start()
    t0 = monotonic_us() + 200_000
    phases = _Phases(t0, pre_s, (lambda: rig.recorder.start("bench")) if rig else (lambda: None))
    sink = rig.recorder.sink if rig else (lambda p: None)
    play(iter_packets(src, t0), sink, until_us=phases.record_at + int(rec_s * 1e6), before=phases)
    assert phases.meter is not None and phases.standby is not None
    recording = phases.meter.cost()
    out: dict[str, Any] = {"standby": asdict(phases.standby), "recording": asdict(recording)}
    out["rss_standby_mb"] = phases.rss_standby_mb
    if rig is not None:
        status = rig.recorder.status()
        out.update(state=status.state, ring_s_at_end=status.ring_s, sealed=status.segments_sealed)
        out["since_last_fsync_ms"] = (monotonic_us() - (status.last_sync_us or 0)) / 1e3
        rig.close()
        out["sealer"] = asdict(rig.sealer.status())
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _daemon_imports_mb() -> float:
    """RSS of a fresh process that has imported the daemon (``firmware_py.cli``) and
    nothing else: what the unit's process holds before any media or thread."""
    out = run_worker("bench.realtime", "imports", "", "", "0", "0")
    return float(out["rss_mb"])


def _pct(cost: dict[str, float]) -> float:
    return 100 * (cost["user_s"] + cost["sys_s"]) / cost["wall_s"]


def run(ctx: Context) -> Result:
    area = ctx.area("realtime")
    pre_s, rec_s = (30.0, 45.0) if not ctx.quick else (8.0, 12.0)
    args = [str(ctx.input.path), "", str(pre_s), str(rec_s)]
    with ThreadPoolExecutor(2) as pool:
        jobs = {
            mode: pool.submit(
                run_worker, "bench.realtime", mode, args[0], str(area / mode), *args[2:]
            )
            for mode in ("record", "feed")
        }
        record, feed = jobs["record"].result(), jobs["feed"].result()
    if record.get("state") != "recording":
        raise RuntimeError(f"the recorder was not recording at the end: {record}")
    rec_pct = _pct(record["recording"]) - _pct(feed["recording"])
    standby_pct = _pct(record["standby"]) - _pct(feed["standby"])
    figures = [
        Figure(
            "CPU while recording (recording path only)",
            rec_pct,
            "% of a core",
            goal=Goal("value", "<=", 2.0),
            note=f"recording process {_pct(record['recording']):.2f} % minus input replay "
            f"{_pct(feed['recording']):.2f} %; includes writing out the {pre_s:g} s ring",
        ),
        Figure(
            "CPU in standby (pre-event ring only)",
            standby_pct,
            "% of a core",
            note=f"{_pct(record['standby']):.2f} % minus replay {_pct(feed['standby']):.2f} %",
        ),
        Figure(
            "peak RSS of the recording process",
            record["peak_rss_mb"],
            "MB",
            feed["peak_rss_mb"],
            "same process replaying into a sink that drops packets",
            Goal("value", "<=", 100.0),
            note="the worker imports the recording path only; see the next line",
        ),
        Figure(
            "RSS of the daemon's imports alone (firmware_py.cli, no media)",
            _daemon_imports_mb(),
            "MB",
            note="config, uplink, view: what the daemon adds to the worker's libraries",
        ),
    ]
    return Result(
        id="realtime",
        title="Real-time overhead",
        what=(
            f"The input replayed at real time (packets handed over at their timestamps) into "
            f"Recorder + journal + Sealer (software key), 30 s pre-event buffer: {WARMUP_S:g} s "
            f"warm-up, standby until {pre_s:g} s, then record start and {rec_s:g} s of recording "
            "(the 60 s segment that began with the ring is sealed and signed during it). CPU = "
            "user + system time of the process over wall time, minus the same replay into a "
            "sink that drops every packet (run at the same time)."
        ),
        command=f"python -m bench --only realtime{' --quick' if ctx.quick else ''}",
        figures=figures,
        details={"record": record, "feed": feed, "pre_s": pre_s, "rec_s": rec_s},
    )


if __name__ == "__main__":
    mode, src, work, pre, rec = sys.argv[1:6]
    if mode == "imports":
        importlib.import_module("firmware_py.cli")
        emit({"rss_mb": rss_mb()})
    else:
        emit(_worker(mode, Path(src), Path(work), float(pre), float(rec)))
