"""Hashing and verification throughput, against ``openssl dgst -sha256`` and
``sha256sum`` over the same files.

Owns: timing the product's own hashing code paths over the segments the pipeline
benchmark wrote: ``hashlib.file_digest`` (the whole-file SHA-256 a third party checks
with sha256sum), ``evidence.parts.hash_parts`` (recovery: per-part hashes read back),
``StreamingPartHasher`` fed the file from memory in the muxer's 32 KiB writes (the
recording path: whole-file and per-part SHA-256 of every byte), and
``evidence.verify.verify`` (``liuhen verify``: signatures, chain and every file part by
part). Files are read once first so every method, the tools included, reads from the
page cache. Must not: write files.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import run_command
from bench.pipeline import evidence_dir, run_product
from bench.results import Context, Figure, Goal, Result
from evidence.parts import StreamingPartHasher, hash_parts, iter_boxes

MUXER_WRITE = 32 * 1024  # PyAV's I/O buffer: the size of each write the recorder sees


def _file_digest(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256")


def _hash_parts(files: list[Path]) -> None:
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as f:
            hash_parts(f, list(iter_boxes(f, size)), size)


def _streaming(blobs: list[bytes]) -> Callable[[list[Path]], None]:
    def run(files: list[Path]) -> None:
        for blob in blobs:
            hasher = StreamingPartHasher()
            view = memoryview(blob)
            for at in range(0, len(view), MUXER_WRITE):
                hasher.update(view[at : at + MUXER_WRITE])
            hasher.finish()

    return run


def _verifier() -> Callable[[list[Path]], None] | None:
    """``evidence.verify.verify`` if that module is there (it was being written when the
    benchmarks were), else None."""
    try:
        verify = importlib.import_module("evidence.verify").verify
    except (ImportError, AttributeError):
        return None

    def run(files: list[Path]) -> None:
        report = verify(files[0].parent)
        if not report.ok:
            raise RuntimeError(f"verify found errors in the benchmark's own evidence: {report}")

    return run


def _best(n: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def run(ctx: Context) -> Result:
    evidence = evidence_dir(ctx)
    if not list(evidence.glob("*.mp4")):  # --only hashing: make the segments first
        run_product(ctx.input.path, evidence.parent.parent)
    files = sorted(evidence.glob("*.mp4"))
    total = sum(p.stat().st_size for p in files)
    mb = total / 1e6
    n = max(3, ctx.repeat)
    _file_digest(files)  # into the page cache
    tools = {
        "openssl dgst -sha256": _best(
            n, lambda: run_command(["openssl", "dgst", "-sha256", *map(str, files)])
        ),
        "sha256sum": _best(n, lambda: run_command(["sha256sum", *map(str, files)])),
    }
    fastest = min(tools, key=lambda k: tools[k])
    other = max(tools, key=lambda k: tools[k])
    methods: dict[str, tuple[Callable[[list[Path]], None] | None, str]] = {
        "hashlib.file_digest (whole-file SHA-256)": (_file_digest, "one SHA-256 pass"),
        "evidence.parts.hash_parts (recovery)": (_hash_parts, "per-part SHA-256, one pass"),
        "StreamingPartHasher (recording path)": (
            _streaming([p.read_bytes() for p in files]),
            "whole-file AND per-part SHA-256: two digests of every byte, from memory",
        ),
        "evidence.verify.verify (liuhen verify)": (
            _verifier(),
            "signatures + chain + whole-file and per-part SHA-256 of every file",
        ),
    }
    figures = []
    todo = None
    timings: dict[str, float] = {f"tool: {k}": v for k, v in tools.items()}
    for name, (method, what) in methods.items():
        if method is None:
            todo = "TODO: evidence.verify.verify was not importable; bench it when it lands"
            continue
        seconds = _best(n, lambda m=method: m(files))  # type: ignore[misc]
        timings[name] = seconds
        figures.append(
            Figure(
                name,
                mb / seconds,
                "MB/s",
                mb / tools[fastest],
                fastest,
                Goal("ratio", ">=", 0.9),
                note=f"{what}; vs {other}: {tools[other] / seconds:.2f}x",
            )
        )
    return Result(
        id="hashing",
        title="Hashing and verify throughput",
        what=(
            f"{len(files)} segment files, {mb:.0f} MB, written by the pipeline benchmark, read "
            f"from the page cache; best of {n} wall times; ratio = product throughput / "
            f"throughput of the faster tool ({fastest}) on the same files."
        ),
        command=f"python -m bench --only hashing{' --quick' if ctx.quick else ''}",
        figures=figures,
        details={"bytes": total, "files": len(files), "seconds": timings},
        todo=todo,
    )
