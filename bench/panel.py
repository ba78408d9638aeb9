"""The panel's two halves of "button -> LED on", on gpiozero's own MockFactory pins:
record button released -> ``Panel.on_record_press`` called, and ``Panel.show(RECORDING)``
-> the red LED pin high.

Owns: a worker that opens ``hw.panel.Panel`` on the reference wiring with a MockFactory
and times both halves. Must not: stand in for the daemon: the middle part (the press
becoming a record command, and the recorder reporting "recording") is the startlat
benchmark's, and the end-to-end figure waits for the daemon's panel wiring to land.

A short press is reported when the button is let go (so a hold can mean something
else): the officer's own press time comes on top of these figures.

By hand: ``python -m bench.panel SAMPLES``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from bench.measure import emit, percentiles, run_worker
from bench.results import Context, Figure, Result

TAP_S = 0.08  # a deliberate tap
POLL_S = 0.0002


def _worker(samples: int) -> dict[str, list[float]]:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from hw.panel import REFERENCE_PINS, Indication, Panel

    factory = MockFactory(pin_class=MockPWMPin)
    panel = Panel(REFERENCE_PINS, pin_factory=factory)
    assert REFERENCE_PINS.record is not None and REFERENCE_PINS.red is not None
    button, red = factory.pin(REFERENCE_PINS.record), factory.pin(REFERENCE_PINS.red)
    reported = threading.Event()
    panel.on_record_press = reported.set
    press_ms, led_ms = [], []
    try:
        for _ in range(samples):
            reported.clear()
            button.drive_low()
            time.sleep(TAP_S)
            t0 = time.perf_counter()
            button.drive_high()
            if not reported.wait(5):
                raise RuntimeError("the panel reported no record press")
            press_ms.append((time.perf_counter() - t0) * 1e3)
            panel.show(Indication.READY)
            time.sleep(0.05)
            t0 = time.perf_counter()
            panel.show(Indication.RECORDING)
            while not red.state:
                time.sleep(POLL_S)
            led_ms.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.05)  # past the button's debounce time
    finally:
        panel.close()
    return {"release_to_report_ms": press_ms, "show_to_led_ms": led_ms}


def run(ctx: Context) -> Result:
    samples = ctx.pick(100, 20)
    out = run_worker("bench.panel", str(samples))
    stats = {k: percentiles(v) for k, v in out.items()}
    start = ctx.done.get("startlat")
    middle = next((f.value for f in start.figures if "LED" in f.name), None) if start else None
    figures = [
        Figure(
            "button released -> Panel.on_record_press (p99)",
            stats["release_to_report_ms"]["p99"],
            "ms",
            note=f"p50 {stats['release_to_report_ms']['p50']:.2f} ms, n={samples}",
        ),
        Figure(
            "Panel.show(RECORDING) -> red LED pin on (p99)",
            stats["show_to_led_ms"]["p99"],
            "ms",
            note=f"p50 {stats['show_to_led_ms']['p50']:.2f} ms, n={samples}",
        ),
    ]
    details: dict[str, Any] = {"stats": stats, "samples": out}
    if middle is not None:
        total = stats["release_to_report_ms"]["p99"] + middle + stats["show_to_led_ms"]["p99"]
        details["sum_of_p99s_ms"] = total
        figures.append(
            Figure(
                "button -> LED, sum of the parts' p99s (estimate)",
                total,
                "ms",
                note="panel halves + startlat's record -> 'recording'; not measured end to end",
            )
        )
    return Result(
        id="panel",
        title="Panel halves of button -> LED",
        what=(
            f"hw.panel.Panel on gpiozero's MockFactory (reference wiring), {samples} taps of "
            f"{TAP_S * 1e3:.0f} ms: release of the record button -> on_record_press, and "
            "show(RECORDING) -> red LED pin high (polled every 0.2 ms). The daemon's panel "
            "wiring was still being written; the end-to-end figure is pending it."
        ),
        command=f"python -m bench --only panel{' --quick' if ctx.quick else ''}",
        figures=figures,
        details=details,
        todo="TODO: button -> LED end to end through the Daemon once its panel wiring lands",
    )


if __name__ == "__main__":
    emit(_worker(int(sys.argv[1])))
