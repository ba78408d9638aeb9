"""``python -m bench``: run every benchmark, write bench/results.json and bench/plots/,
print the table.

Owns: the command line, the order of the benchmarks (the pipeline writes the segments
hashing and encryption read; seal writes the ledger lines MQTT sends), keeping one
failure from stopping the others, and the table. Must not: measure anything itself.

    python -m bench                # full: 10 min input, best of 5 (< 10 min on 2 cores)
    python -m bench --quick        # 2 min input, fewer samples (< 2 min)
    python -m bench --only seal,mqtt
    python -m bench --table        # the last results as Markdown (for PERFORMANCE.md)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from bench import inputs, machine, results
from bench.results import Context, Result

ORDER = (
    "pipeline",
    "hashing",
    "encryption",
    "seal",
    "mqtt",
    "realtime",
    "startlat",
    "panel",
    "profile",
    "fleet",
)
MODULES = {"startlat": "bench.startlat", "profile": "bench.profile"}
FULL_INPUT_S, QUICK_INPUT_S = 600, 120


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short input and samples (< 2 min)")
    p.add_argument("--only", default=",".join(ORDER), help=f"comma list of: {', '.join(ORDER)}")
    p.add_argument("--repeat", type=int, help="runs per figure, best kept (default 5; quick 2)")
    p.add_argument("--no-plots", action="store_true", help="skip bench/plots/*.png")
    p.add_argument(
        "--table", action="store_true", help="print bench/results.json as Markdown; run nothing"
    )
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ORDER)
    if unknown:
        p.error(f"--only: unknown {', '.join(sorted(unknown))}; known: {', '.join(ORDER)}")
    return args


def _cell(value: float | None, fmt: str = ".3g") -> str:
    return "" if value is None else format(value, fmt)


def table(benchmarks: list[dict[str, Any]], markdown: bool = False) -> str:
    """The figures of results.json's benchmarks as a text (or Markdown) table."""
    rows = [("benchmark", "figure", "value", "baseline", "ratio", "goal", "met")]
    for r in benchmarks:
        if r["error"]:
            rows.append((r["id"], f"FAILED: {r['error'].splitlines()[-1][:70]}", *[""] * 5))
        for f in r["figures"]:
            met = {True: "yes", False: "NO", None: ""}[f["met"]]
            ratio = f"{_cell(f['ratio'])}x" if f["ratio"] else ""
            value = f"{_cell(f['value'])} {f['unit']}"
            row = (r["id"], f["name"], value, _cell(f["baseline"]), ratio, f["goal"] or "", met)
            rows.append(row)
        if r["todo"]:
            rows.append((r["id"], r["todo"], *[""] * 5))
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.table:
        doc = json.loads(results.RESULTS.read_text())
        print(table(list(doc["benchmarks"].values()), markdown=True))
        print(f"\n{machine.one_line(doc['meta']['machine'])}; {doc['meta']['command']}")
        return 0
    started, t0 = datetime.now(UTC), time.monotonic()
    seconds = QUICK_INPUT_S if args.quick else FULL_INPUT_S
    src = inputs.ensure_input(seconds)
    ctx = Context(
        quick=args.quick,
        repeat=args.repeat or (2 if args.quick else 5),
        input=src,
        work=inputs.CACHE / "run",
    )
    about = machine.describe()
    done: list[Result] = []
    for name in (n for n in ORDER if n in args.only.split(",")):
        print(f"[{time.monotonic() - t0:5.0f} s] {name} ...", flush=True)
        try:
            module = importlib.import_module(MODULES.get(name, f"bench.{name}"))
            result: Result = module.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            result = Result(name, name, "", "", error=f"{type(exc).__name__}: {exc}")
        ctx.done[name] = result
        done.append(result)
    meta: dict[str, Any] = {
        "command": "python -m bench " + " ".join(argv),
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "repeat": ctx.repeat,
        "machine": about,
        "input": {
            "path": str(src.path.relative_to(inputs.CACHE.parent.parent)),
            "seconds": src.seconds,
            "bytes": src.bytes,
            "ffmpeg": " ".join(inputs.ffmpeg_command(src.seconds, src.path.with_name("OUT.mp4"))),
        },
    }
    results.write(meta, done)
    if not args.no_plots:
        from bench.plots import PLOTS, draw

        # Quick figures are for development: keep them out of the committed plots.
        out = inputs.CACHE / "plots-quick" if args.quick else PLOTS
        try:
            draw(done, machine.one_line(about), out)
        except ImportError as exc:
            print(f"no plots: {exc.name} is not installed (pip install matplotlib)")
    print()
    print(table([r.as_dict() for r in done]))
    print(f"\n{machine.one_line(about)}")
    print(f"{meta['mode']} run in {meta['elapsed_s']:.0f} s; wrote {results.RESULTS}")
    return 1 if any(r.error for r in done) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
