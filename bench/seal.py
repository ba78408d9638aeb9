"""Seal latency: a segment file closed -> its signed ledger entry durable (fsync'ed)
and handed on for the uplink; and the key's own signing time, measured apart.

Owns: the worker that runs the real ``signer.sealer.Sealer`` on its thread against a
real index and ledger, and per sample does what the recorder and the daemon do once a
segment file is sealed (``Index.close_segment``, journal a ``segment_sealed`` event,
``Sealer.notify``) and waits for the sealer's ``on_entry`` callback, which runs once the
entry is fsync'ed in the ledger and indexed (that callback is where the uplink's outbox
takes it). Segment rows carry 121 part hashes, as a 60 s segment of 0.5 s fragments
does. One worker per key kind: software key file, SoftHSM2 token through PKCS#11.
Must not: write media: the file hashes are given, which is all the sealer reads.

By hand: ``python -m bench.seal software|softhsm2 WORKDIR SAMPLES SIGNATURES LINES_OUT``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.keys import KeyKind, make_key
from bench.load import loaded
from bench.measure import emit, percentiles, run_worker
from bench.results import Context, Figure, Goal, Result
from bench.rig import DEVICE_ID
from evidence.ledger import LEDGER_FILE, Entry
from evidence.parts import Part, WrittenSegment
from hw.clock import ClockReading, monotonic_us, utc_iso
from signer.keys import open_backend
from signer.sealer import Sealer
from store.index import Index

PARTS = 121  # init part + 120 fragments of 0.5 s: a 60 s segment
SIGNATURES_PER_ENTRY = 2  # the entry and the signed ledger.head
WARMUP = 3
KINDS: tuple[KeyKind, ...] = ("software", "softhsm2")


def _segment(path: Path, n: int) -> WrittenSegment:
    parts = [
        Part(i, i * 500_000, 500_000, hashlib.sha256(b"%d/%d" % (n, i)).hexdigest())
        for i in range(PARTS)
    ]
    start = n * 60_000_000
    return WrittenSegment(
        path, PARTS * 500_000, parts[-1].sha256, parts, start, start + 60_000_000, 1800, 2813
    )


def _signing_ms(spec: Any, n: int) -> list[float]:
    with open_backend(spec) as key:
        out = []
        for i in range(n):
            digest = hashlib.sha256(i.to_bytes(8, "big")).digest()
            t = time.perf_counter()
            key.sign_digest(digest)
            out.append((time.perf_counter() - t) * 1e3)
    return out


def _fsync_ms(path: Path, n: int) -> list[float]:
    """The disk's own latency: append 1 KiB to a file and fsync it."""
    out = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
            out.append((time.perf_counter() - t) * 1e3)
    finally:
        os.close(fd)
    return out


def _queue_for_uplink(path: Path) -> Callable[[Entry], None]:
    """What the daemon does with each new entry: queue it in the uplink's durable outbox
    (``Uplink.publish_entry`` is that put, then a wake-up of its sender)."""
    try:
        from uplink.outbox import Outbox
        from uplink.store import Store
    except ImportError:  # the uplink was being written when this was
        return lambda entry: None
    outbox = Outbox(Store(path))
    return lambda entry: outbox.put(entry.seq, entry.to_line()) and None


def _worker(kind: KeyKind, work: Path, samples: int, signatures: int, lines: Path) -> Any:
    shutil.rmtree(work, ignore_errors=True)
    spec = make_key(kind, work / "key")
    signing = _signing_ms(spec, signatures)
    fsync = _fsync_ms(work / "fsync-probe", samples)
    evidence = work / "evidence"
    evidence.mkdir(parents=True)
    index_path = work / "index.sqlite"
    index = Index.open(index_path)
    done: dict[int, float] = {}
    arrived = threading.Condition()
    queue_for_uplink = _queue_for_uplink(work / "outbox.sqlite")

    def on_entry(entry: Entry) -> None:
        queue_for_uplink(entry)
        with arrived:
            done[entry.ref if entry.ref is not None else -1] = time.perf_counter()
            arrived.notify_all()

    sealer = Sealer(evidence, index_path, DEVICE_ID, spec, None, c2pa=False, on_entry=on_entry)
    sealer.run_in_thread()
    clock = ClockReading.now()
    at = utc_iso(clock.wall_for(clock.monotonic_us))
    recording = index.begin_recording("bench", at)
    latencies = []
    for n in range(samples + WARMUP):
        name = f"{DEVICE_ID}_r{recording:05d}_s{n + 1:04d}.mp4"
        written = _segment(evidence / name, n)
        index.add_open_segment(
            name=name,
            recording_id=recording,
            seq=n + 1,
            mono_start_us=monotonic_us(),
            wall_start=at,
            media_start_us=written.media_start_us,
        )
        time.sleep(0.01)  # the sealer is idle, as it is between two segments
        t0 = time.perf_counter()
        index.close_segment(name, written, "sealed", at)  # the recorder, after seal()
        ref = index.add_event("segment_sealed", monotonic_us(), at, {"name": name})  # daemon
        sealer.notify()
        with arrived:
            if not arrived.wait_for(lambda r=ref: r in done, timeout=30):  # type: ignore[misc]
                raise RuntimeError(f"sealer status {sealer.status()}: no entry for {name}")
        if n >= WARMUP:
            latencies.append((done[ref] - t0) * 1e3)
    sealer.close()
    index.close()
    shutil.copyfile(evidence / LEDGER_FILE, lines)
    return {"seal_ms": latencies, "sign_ms": signing, "fsync_ms": fsync}


def ledger_lines(ctx: Context) -> Path:
    """Real ledger lines written by this benchmark (the MQTT benchmark sends them)."""
    return ctx.area("seal") / "ledger-software.jsonl"


def run(ctx: Context) -> Result:
    area = ctx.area("seal")
    samples, signatures = ctx.pick(200, 40), ctx.pick(2000, 300)
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    rows: list[tuple[KeyKind, bool]] = [(kind, False) for kind in KINDS] + [("software", True)]
    for kind, under_load in rows:
        label = f"{kind}, loaded" if under_load else kind
        with loaded() if under_load else contextlib.nullcontext():
            out = run_worker(
                "bench.seal",
                kind,
                str(area / label.replace(", ", "-")),
                str(samples),
                str(signatures),
                str(area / f"ledger-{label.replace(', ', '-')}.jsonl"),
            )
        seal, sign = percentiles(out["seal_ms"]), percentiles(out["sign_ms"])
        details[label] = {"seal_ms": seal, "sign_ms": sign, "samples": out}
        limit = 20.0 + SIGNATURES_PER_ENTRY * sign["p99"]
        figures += [
            Figure(
                f"seal -> entry durable + queued, {label} key (p99)",
                seal["p99"],
                "ms",
                goal=Goal("value", "<=", limit, f"<= 20 ms + 2 x signing p99 = {limit:.1f} ms"),
                note=f"p50 {seal['p50']:.2f} ms, max {seal['max']:.2f} ms, n={samples}"
                + (
                    "; beside a CPU hog per core and an fsync'ing disk hog (bench/load.py)"
                    if under_load
                    else ""
                ),
            ),
            Figure(
                f"key signing time, {label} (p99)",
                sign["p99"],
                "ms",
                note=f"p50 {sign['p50']:.3f} ms, n={signatures}; sign_digest incl. self-verify",
            ),
        ]
    return Result(
        id="seal",
        title="Seal latency",
        what=(
            "From a segment file sealed (Index.close_segment by the recorder, the "
            "segment_sealed event journaled by the daemon, Sealer.notify) to the Sealer's "
            "on_entry callback: entry signed, appended and fsync'ed in ledger.jsonl, "
            "ledger.head re-signed, fsync'ed and renamed, entry indexed. Each entry costs "
            f"{SIGNATURES_PER_ENTRY} signatures; the key's signing time is measured apart "
            "(KeyBackend.sign_digest, which verifies each signature before returning it)."
        ),
        command=f"python -m bench --only seal{' --quick' if ctx.quick else ''}",
        figures=figures,
        details=details,
    )


if __name__ == "__main__":
    kind, work, n, m, lines = sys.argv[1:6]
    assert kind in KINDS
    emit(_worker(kind, Path(work), int(n), int(m), Path(lines)))
    os._exit(0)  # python-pkcs11 may hang finalising the library at exit
