"""Record-start latency: the record command -> the recording's first fragment fsync'ed,
-> the recorder reporting "recording" (what the LED shows), -> the media of the moment
of the press durable; with a full 30 s pre-event buffer.

Owns: the worker that, per trial, starts a fresh ``bench.rig``, fills the pre-event
ring (the replay starts 30 s in the past, so the ring fills at once, then plays at real
time), presses record at a random point in the GOP and watches. Fsyncs are seen by
wrapping ``recorder.fmp4._DurableSink.sync`` and ``SegmentWriter.write`` in this process
(the wrappers note when the real call returns and which packet was being written); the
state is polled from ``Recorder.status()`` every millisecond.
Must not: press a button: the GPIO panel does not exist yet, so the button -> LED part
is not measured.

By hand: ``python -m bench.startlat INPUT.mp4 WORKDIR TRIALS``.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.inputs import load_packets
from bench.keys import make_key
from bench.measure import emit, percentiles, run_worker
from bench.replay import Player, restamp
from bench.results import Context, Figure, Goal, Result
from bench.rig import Rig, settings
from hw.clock import monotonic_us
from hw.media import EncodedPacket
from recorder import fmp4

PRE_EVENT_S = 30.0
POLL_S = 0.001
TIMEOUT_S = 10.0


class _Syncs:
    """When fragments reached the disk after ``arm(press)``: the first one, and the first
    one muxed after a packet captured after the press (then the media of the press is
    on disk: the muxer emits a fragment when the next packet is past its end)."""

    def __init__(self) -> None:
        self.press: int | None = None
        self.first_at: int | None = None
        self.press_at: int | None = None
        self.count = 0
        self._pts = 0  # capture time of the packet being written
        sync, write = fmp4._DurableSink.sync, fmp4.SegmentWriter.write

        def timed_sync(sink: fmp4._DurableSink) -> bool:
            synced = sync(sink)
            if synced and self.press is not None:
                self.count += 1
                now = monotonic_us()
                self.first_at = self.first_at or now
                if self._pts > self.press:
                    self.press_at = self.press_at or now
            return synced

        def noted_write(
            writer: fmp4.SegmentWriter, packet: EncodedPacket, sync: bool = True
        ) -> None:
            self._pts = packet.pts_us
            write(writer, packet, sync)

        fmp4._DurableSink.sync = timed_sync  # type: ignore[method-assign,assignment]
        fmp4.SegmentWriter.write = noted_write  # type: ignore[method-assign,assignment]

    def arm(self, press: int) -> None:
        self.press, self.first_at, self.press_at, self.count = press, None, None, 0


def _trial(work: Path, key: Any, packets: list[Any], syncs: _Syncs) -> dict[str, float]:
    """One press on a fresh unit whose ring is full."""
    rig = Rig(work, key, settings(pre_event_s=PRE_EVENT_S))
    rig.start()
    span = packets[-1].pts_us - packets[0].pts_us
    # Stamp the input so that PRE_EVENT_S of it is already in the past: the ring fills
    # at once, then the replay goes on at real time.
    offset = monotonic_us() - int(PRE_EVENT_S * 1e6) - packets[0].pts_us
    player = Player(restamp(packets, offset), rig.recorder.sink)
    player.start()
    recorder = rig.recorder
    deadline = time.monotonic() + TIMEOUT_S
    while (recorder.status().ring_s < PRE_EVENT_S - 1 or recorder.status().queued) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 1.0))  # anywhere in the GOP
    press = monotonic_us()
    syncs.arm(press)
    recorder.start("bench")
    recording_at = None
    fsyncs = 0
    while (recording_at is None or syncs.press_at is None) and (
        monotonic_us() - press < TIMEOUT_S * 1e6
    ):
        if recording_at is None and recorder.status().state == "recording":
            recording_at, fsyncs = monotonic_us(), syncs.count
        time.sleep(POLL_S)
    player.stop()
    rig.close()
    first_at, press_at = syncs.first_at, syncs.press_at
    if first_at is None or recording_at is None or press_at is None or span < 31e6:
        raise RuntimeError("the recording did not start within the timeout")
    return {
        "first_fragment_ms": (first_at - press) / 1e3,
        "recording_ms": (recording_at - press) / 1e3,
        "press_durable_ms": (press_at - press) / 1e3,
        "fsyncs_before_recording": fsyncs,
    }


def _worker(src: Path, work: Path, trials: int) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    key = make_key("software", work / "key")
    packets = load_packets(src, seconds=PRE_EVENT_S + TIMEOUT_S / 2)
    syncs = _Syncs()
    samples = [_trial(work / f"trial-{i}", key, packets, syncs) for i in range(trials)]
    return {k: [s[k] for s in samples] for k in samples[0]}


def run(ctx: Context) -> Result:
    trials = ctx.pick(20, 5)
    area = ctx.area("startlat")
    out = run_worker("bench.startlat", str(ctx.input.path), str(area), str(trials))
    stats = {k: percentiles(v) for k, v in out.items()}
    names = {
        "first_fragment_ms": "record -> first fragment fsync'ed (p99)",
        "recording_ms": "record -> state 'recording' = LED on (p99)",
        "press_durable_ms": "record -> media of the press fsync'ed (p99)",
    }
    figures = [
        Figure(
            names[k],
            stats[k]["p99"],
            "ms",
            goal=Goal("value", "<=", 100.0) if k != "press_durable_ms" else None,
            note=f"p50 {stats[k]['p50']:.1f} ms, max {stats[k]['max']:.1f} ms, n={trials}",
        )
        for k in names
    ]
    return Result(
        id="startlat",
        title="Record-start latency",
        what=(
            f"{trials} trials, each a fresh Recorder + journal + Sealer fed at real time with "
            f"a full {PRE_EVENT_S:g} s pre-event ring, record pressed at a random point of "
            "the GOP through Recorder.start() (the command the control socket and the panel "
            "use). The button -> LED part waits for the GPIO panel (another issue)."
        ),
        command=f"python -m bench --only startlat{' --quick' if ctx.quick else ''}",
        figures=figures,
        details={"stats": stats, "samples": out},
    )


if __name__ == "__main__":
    emit(_worker(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
