"""Pictures of a run: one PNG per benchmark in ``bench/plots/``.

Owns: drawing the figures of ``bench/results.json`` with matplotlib (Agg, no display),
each titled with what was measured and the machine. Must not: compute new numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results import HERE, Result

PLOTS = HERE / "plots"


def _bars(ax: Any, labels: list[str], values: list[float], unit: str, colors: list[str]) -> None:
    bars = ax.barh(labels, values, color=colors)
    ax.bar_label(bars, fmt="%.3g", padding=3)
    ax.set_xlabel(unit)
    ax.invert_yaxis()
    ax.margins(x=0.2)


def _pipeline(r: Result, ax: Any) -> None:
    d, hours = r.details, r.details["media_s"] / 3600
    labels = [
        "liuhen (process)",
        "ffmpeg + sha256sum",
        "liuhen (whole machine)",
        "ffmpeg + sha256sum + sync (whole machine)",
    ]
    values = [
        d["product"]["user_s"] + d["product"]["sys_s"],
        d["baseline"]["user_s"] + d["baseline"]["sys_s"],
        d["product"]["machine_cpu_s"] or 0,
        d["baseline"]["machine_cpu_s"] or 0,
    ]
    _bars(
        ax,
        labels,
        [v / hours for v in values],
        "CPU seconds per recorded hour",
        ["C0", "C1", "C0", "C1"],
    )


def _samples(r: Result, ax: Any) -> None:
    if r.id == "seal":
        data = {f"seal, {k}": r.details[k]["samples"]["seal_ms"] for k in ("software", "softhsm2")}
        data["disk: append + fsync"] = r.details["software"]["samples"]["fsync_ms"]
    elif r.id == "panel":
        data = {
            "button released -> press reported": r.details["samples"]["release_to_report_ms"],
            "show(RECORDING) -> red LED on": r.details["samples"]["show_to_led_ms"],
        }
    else:
        s = r.details["samples"]
        data = {
            "first fragment fsync'ed": s["first_fragment_ms"],
            "state 'recording' (LED)": s["recording_ms"],
            "media of the press fsync'ed": s["press_durable_ms"],
        }
    ax.boxplot(list(data.values()), vert=False, whis=(1, 99))
    ax.set_yticks(range(1, len(data) + 1), list(data))
    ax.invert_yaxis()
    ax.set_xlabel("ms (box: quartiles, whiskers: p1-p99)")
    for f in r.figures:
        if f.goal is not None and f.goal.subject == "value":
            ax.axvline(f.goal.limit, color="C3", linestyle="--", linewidth=1)
            ax.text(f.goal.limit, 0.02, " goal", color="C3", transform=ax.get_xaxis_transform())
            break


def _figures(r: Result, ax: Any) -> None:
    """Every figure of the result that has a baseline: product and baseline side by side."""
    labels, values, colors = [], [], []
    for f in r.figures:
        labels.append(f.name)
        values.append(f.value)
        colors.append("C0")
        if f.baseline is not None and f.baseline_name not in labels:
            labels.append(str(f.baseline_name))
            values.append(f.baseline)
            colors.append("C1")
    _bars(ax, labels, values, r.figures[0].unit if r.figures else "", colors)


def _realtime(r: Result, ax: Any) -> None:
    rec, feed = r.details["record"], r.details["feed"]

    def pct(c: dict[str, float]) -> float:
        return 100 * (c["user_s"] + c["sys_s"]) / c["wall_s"]

    labels = [
        "recording: recording process",
        "recording: replay alone",
        "standby: recording process",
        "standby: replay alone",
    ]
    values = [
        pct(rec["recording"]),
        pct(feed["recording"]),
        pct(rec["standby"]),
        pct(feed["standby"]),
    ]
    _bars(ax, labels, values, "% of one core", ["C0", "C1", "C0", "C1"])
    ax.axvline(2.0 + pct(feed["recording"]), color="C3", linestyle="--", linewidth=1)


def _profile(r: Result, ax: Any) -> None:
    rows = r.details["by_product_function"][:10]
    _bars(
        ax,
        [x["function"] for x in rows],
        [100 * x["share"] for x in rows],
        "% of on-CPU samples of the recording threads",
        ["C0"] * len(rows),
    )


DRAW = {
    "pipeline": _pipeline,
    "realtime": _realtime,
    "seal": _samples,
    "startlat": _samples,
    "panel": _samples,
    "hashing": _figures,
    "mqtt": _figures,
    "profile": _profile,
}


def draw(results: list[Result], machine: str, out: Path = PLOTS) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        if r.error or r.id not in DRAW:
            continue
        fig, ax = plt.subplots(figsize=(10, 4.2))
        if r.id == "mqtt":  # msg/s and ms do not share an axis
            r = Result(
                r.id, r.title, r.what, r.command, [f for f in r.figures if f.unit == "msg/s"]
            )
        DRAW[r.id](r, ax)
        ax.set_title(f"{r.title} — {r.command}", fontsize=10)
        fig.text(0.01, 0.01, machine, fontsize=7, color="0.4")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = out / f"{r.id}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
