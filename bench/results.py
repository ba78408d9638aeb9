"""What a benchmark reports: figures with their baseline, ratio and goal, and the run
context every benchmark receives.

Owns: the result types, the goal check, and writing ``bench/results.json``.
Must not: measure, print or plot.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.inputs import Input

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"

Compare = Literal["<=", ">="]
_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Goal:
    """``subject`` (value or ratio) ``op`` ``limit``; e.g. ratio <= 1.2."""

    subject: Literal["value", "ratio"]
    op: Compare
    limit: float
    text: str = ""

    def met(self, value: float, ratio: float | None) -> bool | None:
        x = value if self.subject == "value" else ratio
        return None if x is None else _OPS[self.op](x, self.limit)

    def describe(self, unit: str) -> str:
        if self.text:
            return self.text
        if self.subject == "ratio":
            return f"ratio {self.op} {self.limit:g}x"
        return f"{self.op} {self.limit:g} {unit}"


@dataclass
class Figure:
    """One published number. ``ratio`` is product / baseline for costs and times, and
    product / baseline for throughputs too (so > 1 is better for a throughput)."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    goal: Goal | None = None
    note: str = ""
    ratio: float | None = field(default=None)
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline
        if self.goal is not None:
            self.met = self.goal.met(self.value, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["goal"] = self.goal.describe(self.unit) if self.goal else None
        return d


@dataclass
class Result:
    id: str
    title: str
    what: str  # what was measured, in one or two sentences
    command: str  # how to run this benchmark alone
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    todo: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["figures"] = [f.as_dict() for f in self.figures]
        return d


@dataclass
class Context:
    """What every benchmark gets: the mode, the input and a scratch directory."""

    quick: bool
    repeat: int
    input: Input
    work: Path
    done: dict[str, Result] = field(default_factory=dict)

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def area(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def write(meta: dict[str, Any], results: list[Result], path: Path = RESULTS) -> None:
    doc = {"meta": meta, "benchmarks": {r.id: r.as_dict() for r in results}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
