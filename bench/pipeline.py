"""Pipeline cost: CPU seconds per recorded hour of the whole recording path, against
``ffmpeg -c copy -f segment`` + ``sha256sum`` making the same segments.

Owns: the worker that feeds the pre-encoded input, already in memory as a camera would
hand it over, through ``bench.rig`` as fast as it goes (Recorder -> 60 s fragmented-MP4
segments, hashed and fsync'ed per fragment -> index -> Sealer -> one signed ledger entry
per segment, software key), and the baseline command. Must not: count the demuxing of
the input (the camera's job) in the product's cost.

Run a worker by hand: ``python -m bench.pipeline INPUT.mp4 WORKDIR``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench import inputs
from bench.keys import certificate, make_key
from bench.measure import Cost, Meter, emit, machine_busy_s, run_command, run_worker
from bench.results import Context, Figure, Goal, Result
from bench.rig import DEVICE_ID, Rig, settings
from hw.clock import monotonic_us
from recorder.fmp4 import MOVFLAGS


def baseline_command(src: Path, out: Path) -> list[str]:
    """The same job done by C tools: cut the stream into 60 s fragmented-MP4 segments
    (same movflags and fragment length as the product), then hash every segment."""
    rs = settings()
    segment = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
        "-map", "0", "-c", "copy", "-f", "segment", "-segment_time", f"{rs.segment_us / 1e6:g}",
        "-segment_format", "mp4",
        "-segment_format_options", f"movflags={MOVFLAGS}:frag_duration={rs.fragment_us}",
        "-reset_timestamps", "0", str(out / "seg%03d.mp4"),
    ]  # fmt: skip
    return segment


def run_baseline(src: Path, out: Path) -> Cost:
    """CPU of the baseline's own processes; machine-wide CPU up to a final sync, so the
    kernel's writeback of what they left dirty is counted too."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    busy = machine_busy_s()
    cost = run_command(baseline_command(src, out))
    cost = cost + run_command(["sha256sum", *sorted(str(p) for p in out.glob("seg*.mp4"))])
    os.sync()
    return replace(cost, machine_cpu_s=machine_busy_s() - busy)


def _worker(src: Path, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    key = make_key("software", work / "key")
    cert = certificate(key, DEVICE_ID, work / "key" / "device.pem")
    packets = inputs.load_packets(src, offset_us=monotonic_us())
    rig = Rig(work / "data", key, settings(pre_event_s=0), certificate=cert)
    meter = Meter()
    rig.start()
    rig.recorder.start("bench")
    for packet in packets:
        rig.recorder.sink(packet)
    rig.close()
    os.sync()
    cost = meter.cost()
    status = rig.sealer.status()
    segments = sorted(rig.evidence.glob("*.mp4"))
    return {
        "cost": asdict(cost),
        "media_s": (packets[-1].end_us - packets[0].pts_us) / 1e6,
        "packets": len(packets),
        "segments": len(segments),
        "bytes_out": sum(p.stat().st_size for p in segments),
        "ledger_entries": None if status.last_seq is None else status.last_seq + 1,
        "sealer": status.state,
    }


def run_product(src: Path, work: Path) -> tuple[Cost, dict[str, Any]]:
    """The worker above, in a process of its own."""
    out = run_worker("bench.pipeline", str(src), str(work))
    if out["sealer"] != "ok" or out["segments"] < 1:
        raise RuntimeError(f"the product run did not record and seal: {out}")
    return Cost(**out.pop("cost")), out


def evidence_dir(ctx: Context) -> Path:
    """Segments the product wrote in this run (the hashing benchmark reads them)."""
    return ctx.area("pipeline") / "product" / "data" / "evidence"


def run(ctx: Context) -> Result:
    area = ctx.area("pipeline")
    src = ctx.input.path
    products: list[Cost] = []
    baselines: list[Cost] = []
    info: dict[str, Any] = {}
    for _ in range(ctx.repeat):  # alternate, so a disturbance hits both alike
        cost, info = run_product(src, area / "product")
        products.append(cost)
        baselines.append(run_baseline(src, area / "baseline"))
    product = min(products, key=lambda c: c.cpu_s)
    baseline = min(baselines, key=lambda c: c.cpu_s)
    hours = info["media_s"] / 3600
    machine_p = min(c.machine_cpu_s or 0.0 for c in products)
    machine_b = min(c.machine_cpu_s or 0.0 for c in baselines)
    name = "ffmpeg -c copy -f segment + sha256sum"
    figures = [
        Figure(
            "CPU per recorded hour (process)",
            product.cpu_s / hours,
            "CPU s/h",
            baseline.cpu_s / hours,
            name,
            Goal("ratio", "<=", 1.2),
        ),
        Figure(
            "CPU per recorded hour (whole machine, incl. kernel writeback)",
            machine_p / hours,
            "CPU s/h",
            machine_b / hours,
            name + " + sync",
            note="all CPUs from /proc/stat up to a final sync; noisier: counts anything else running",
        ),
        Figure("wall time per recorded hour", product.wall_s / hours, "s/h"),
    ]
    return Result(
        id="pipeline",
        title="Pipeline cost",
        what=(
            f"{info['media_s']:.0f} s of pre-encoded 1080p30 8 Mbit/s H.264 + AAC, in memory, fed "
            "as fast as it goes through Recorder -> 60 s fragmented-MP4 segments (0.5 s "
            "fragments, each hashed and fsync'ed) -> index -> Sealer (software key, one signed "
            "ledger entry per segment and event). CPU = user + system of the recording process, "
            f"best of {ctx.repeat}; baseline: same segments by ffmpeg, then sha256sum of them."
        ),
        command=f"python -m bench --only pipeline{' --quick' if ctx.quick else ''}",
        figures=figures,
        details={
            "product": asdict(product),
            "baseline": asdict(baseline),
            "runs": {
                "product": [asdict(c) for c in products],
                "baseline": [asdict(c) for c in baselines],
            },
            "baseline_commands": [
                " ".join(baseline_command(Path("INPUT.mp4"), Path("OUT"))),
                "sha256sum OUT/seg*.mp4",
            ],
            **info,
        },
    )


if __name__ == "__main__":
    emit(_worker(Path(sys.argv[1]), Path(sys.argv[2])))
