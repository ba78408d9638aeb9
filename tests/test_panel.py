"""The panel on gpiozero's own MockFactory: what an observer would see on the LED pins,
what the buzzer pin does, and which callbacks a press, a hold, a knock or a trigger
produce. Real gpiozero devices and pins throughout; nothing of gpiozero is mocked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.media import DeviceError
from hw.panel import (
    BUZZ_PATTERNS,
    FAULTS_BY_SEVERITY,
    LEDS,
    MEANING,
    PATTERNS,
    REFERENCE_PINS,
    Indication,
    LedName,
    LedPattern,
    Panel,
    PanelPins,
    error_overlay,
    indication_for,
    render_buzz_table,
    render_led_table,
)

ROOT = Path(__file__).resolve().parents[1]
PINS = replace(REFERENCE_PINS, hold_seconds=0.3)
LED_PIN: dict[LedName, int] = {"green": 5, "red": 6, "yellow": 13}
TOLERANCE = 0.06  # seconds: how far apart two durations must be to look different


def new_factory() -> MockFactory:
    return MockFactory(pin_class=MockPWMPin)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's MockFactory as the default pin factory, as in ../shared/SETUP.md."""
    previous = Device.pin_factory
    Device.pin_factory = new_factory()
    yield Device.pin_factory
    Device.pin_factory = previous


@pytest.fixture
def panel(factory: MockFactory) -> Iterator[Panel]:
    p = Panel(PINS)
    yield p
    p.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0, what: str = "") -> float:
    """Poll until ``predicate()``; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.005)
    return time.monotonic() - start


def stays(predicate: Callable[[], bool], seconds: float) -> bool:
    """``predicate()`` holds throughout ``seconds`` (for things that must NOT happen)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not predicate():
            return False
        time.sleep(0.01)
    return predicate()


# --- reading a pin's history like an observer ---------------------------------------


def clusters(durations: list[float]) -> tuple[float, ...]:
    """Group durations that an observer could not tell apart; one median per group."""
    groups: list[list[float]] = []
    for d in sorted(durations):
        if groups and d - groups[-1][0] <= TOLERANCE:
            groups[-1].append(d)
        else:
            groups.append([d])
    # One edge made late by a loaded CPU is not what an observer reads as the pattern:
    # a lone duration beside a group of five or more of its kind is left out.
    largest = max((len(g) for g in groups), default=0)
    kept = [g for g in groups if not (len(g) == 1 and largest >= 5)]
    return tuple(g[len(g) // 2] for g in kept)


@dataclass(frozen=True)
class Look:
    """What one LED looked like over a window: steadily on, off, or blinking with these
    distinct lit and dark durations."""

    kind: Literal["on", "off", "blinking"]
    lit: tuple[float, ...] = ()
    dark: tuple[float, ...] = ()

    def same_as(self, other: Look) -> bool:
        def close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
            return len(a) == len(b) and all(
                abs(x - y) <= TOLERANCE for x, y in zip(a, b, strict=True)
            )

        return (
            self.kind == other.kind and close(self.lit, other.lit) and close(self.dark, other.dark)
        )


def observed(pin: Any) -> Look:
    """The Look of a pin since its last clear_states(); the first (partial) and the
    last (ongoing) intervals are left out."""
    changes = pin.states[1:]
    if not changes:
        return Look("on" if pin.states[0].state else "off")
    lit: list[float] = []
    dark: list[float] = []
    for before, after in pairwise(changes):
        (lit if before.state else dark).append(after.timestamp)
    return Look("blinking", clusters(lit), clusters(dark))


def expected(pattern: LedPattern | None) -> Look:
    if pattern is None:
        return Look("off")
    if pattern.steady:
        return Look("on")
    gaps = {round(pattern.off, 6)} if pattern.flashes > 1 or not pattern.pause else set()
    if pattern.pause:
        gaps.add(round(pattern.off + pattern.pause, 6))
    return Look("blinking", (pattern.on,), tuple(sorted(gaps)))


def expected_looks(patterns: tuple[LedPattern, ...]) -> dict[LedName, Look]:
    by_led = {p.led: p for p in patterns}
    return {led: expected(by_led.get(led)) for led in LEDS}


def looks(factory: MockFactory) -> dict[LedName, Look]:
    return {led: observed(factory.pin(LED_PIN[led])) for led in LEDS}


def clear(factory: MockFactory) -> None:
    for pin in LED_PIN.values():
        factory.pin(pin).clear_states()


def mismatch(seen: dict[LedName, Look], want: dict[LedName, Look]) -> list[str]:
    return [
        f"{led}: saw {seen[led]}, want {want[led]}"
        for led in LEDS
        if not seen[led].same_as(want[led])
    ]


def watch_every_indication() -> dict[Indication, dict[LedName, Look]]:
    """Every indication shown at once, each on its own panel and MockFactory, watched for
    4.2 s (two cycles of the slowest pattern) after it settled."""
    leds_only = replace(
        PINS,
        buzzer=None,
        record=None,
        mark=None,
        credential=None,
        triggers={},
        inverted_triggers=frozenset(),
    )
    factories = {ind: new_factory() for ind in Indication}
    panels = [Panel(leds_only, pin_factory=f) for f in factories.values()]
    try:
        for p, ind in zip(panels, factories, strict=True):
            p.show(ind)
        time.sleep(0.1)
        for f in factories.values():
            clear(f)
        time.sleep(4.2)  # the observation window itself
        return {ind: looks(f) for ind, f in factories.items()}
    finally:
        for p in panels:
            p.close()


# --- LED patterns -------------------------------------------------------------------


def test_every_indication_has_a_pattern_and_a_meaning() -> None:
    assert set(PATTERNS) == set(Indication) == set(MEANING)


def test_every_indication_on_the_pins_is_as_documented_distinct_and_honest() -> None:
    """One window for three checks (the window is the slow part)."""
    seen = watch_every_indication()

    # 1. each indication looks as the table says
    wrong = {
        ind.name: problems
        for ind, looks_now in seen.items()
        if (problems := mismatch(looks_now, expected_looks(PATTERNS[ind])))
    }
    assert not wrong, "not as the table says"

    # 2. an observer can tell every pair apart
    alike = [
        (a.name, b.name)
        for a in Indication
        for b in Indication
        if a.value < b.value and all(seen[a][led].same_as(seen[b][led]) for led in LEDS)
    ]
    assert not alike, "indistinguishable"

    # 3. red steady iff video records, yellow steady iff audio only; green never steady
    for ind, looks_now in seen.items():
        assert (looks_now["red"].kind == "on") == ind.recording_video, ind
        assert (looks_now["yellow"].kind == "on") == ind.recording_audio_only, ind
        assert looks_now["green"].kind != "on", ind


def test_show_is_idempotent_it_does_not_restart_a_blink(panel: Panel, factory: MockFactory) -> None:
    panel.show(Indication.READY)
    green = factory.pin(LED_PIN["green"])
    wait_for(lambda: bool(green.state), what="green on")
    wait_for(lambda: not green.state, what="green off")
    green.clear_states()
    panel.show(Indication.READY)  # mid dark half: a restart would light it at once
    assert stays(lambda: not green.state, 0.3)


def test_the_documented_table_is_the_code() -> None:
    doc = (ROOT / "docs" / "HARDWARE.md").read_text()
    for table in (render_led_table(), render_buzz_table()):
        assert table in doc, "docs/HARDWARE.md is stale: paste in `python -m hw.panel`"


@settings(deadline=None)
@given(
    st.builds(
        LedPattern,
        led=st.sampled_from(LEDS),
        on=st.floats(0.05, 2),
        off=st.floats(0.05, 2),
        flashes=st.integers(1, 4),
        pause=st.floats(0, 2),
        phase=st.sampled_from([0.0, 0.2, 0.4, 1.0]),
    ),
    st.floats(0, 100),
)
def test_next_change_is_where_the_led_changes(pattern: LedPattern, t: float) -> None:
    """The driver sleeps until next_change: nothing may change before it."""
    due = pattern.next_change(t)
    assert t <= due <= t + pattern.cycle
    inside = [t + (due - t) * f for f in (0.01, 0.25, 0.5, 0.75, 0.99)]
    assert len({pattern.is_on(x) for x in inside}) == 1 or due - t < 1e-6
    assert pattern.is_on(due + 1e-4) != pattern.is_on(due - 1e-4) or pattern.cycle < 3e-4


# --- choosing an indication, and the error flash ------------------------------------


def test_indication_for_every_activity_and_fault_tells_the_truth_or_refuses() -> None:
    activities: tuple[Literal["idle", "recording", "audio_only"], ...] = (
        "idle",
        "recording",
        "audio_only",
    )
    for activity in activities:
        for fault in (None, *FAULTS_BY_SEVERITY):
            try:
                ind = indication_for(activity, fault)
            except ValueError as exc:
                assert "show" in str(exc)  # says what to show instead
                continue
            assert ind.recording_video == (activity == "recording")
            assert ind.recording_audio_only == (activity == "audio_only")
    with pytest.raises(ValueError, match="while recording: video is not being recorded"):
        indication_for("recording", Indication.CAMERA_STALLED)


def test_error_overlay_keeps_the_recording_light() -> None:
    assert error_overlay(Indication.READY) == PATTERNS[Indication.ERROR]
    for ind in Indication:
        kept = [p for p in error_overlay(ind) if p.steady]
        assert kept == [p for p in PATTERNS[ind] if p.steady]


def test_flash_error_shows_the_error_then_the_indication_again(
    panel: Panel, factory: MockFactory
) -> None:
    panel.show(Indication.READY)
    clear(factory)
    panel.flash_error(0.8)
    time.sleep(0.7)  # watch the flash
    assert not mismatch(looks(factory), expected_looks(PATTERNS[Indication.ERROR]))
    red = factory.pin(LED_PIN["red"])
    wait_for(lambda: stays(lambda: not red.state, 0.3), what="error flash to end")
    clear(factory)
    time.sleep(1.6)  # watch READY again
    assert not mismatch(looks(factory), expected_looks(PATTERNS[Indication.READY]))
    assert panel.indication is Indication.READY


def test_flash_error_while_recording_never_drops_the_red_light(
    panel: Panel, factory: MockFactory
) -> None:
    panel.show(Indication.RECORDING)
    red, green = factory.pin(LED_PIN["red"]), factory.pin(LED_PIN["green"])
    wait_for(lambda: bool(red.state), what="red on")
    clear(factory)
    panel.flash_error(0.5)
    wait_for(lambda: len(green.states) > 3, what="green to blink")
    wait_for(lambda: stays(lambda: not green.state, 0.3), timeout=2, what="flash to end")
    assert [s.state for s in red.states] == [1.0], "red went off during the error flash"


def test_a_new_indication_ends_an_error_flash_at_once_the_same_one_does_not(
    panel: Panel, factory: MockFactory
) -> None:
    panel.show(Indication.READY)
    panel.flash_error(5)
    yellow, red = factory.pin(LED_PIN["yellow"]), factory.pin(LED_PIN["red"])
    wait_for(lambda: len(yellow.states) > 3, what="error flash")
    panel.show(Indication.READY)  # the same again: the flash goes on
    yellow.clear_states()
    wait_for(lambda: len(yellow.states) > 2, what="the flash to go on")
    panel.show(Indication.RECORDING)
    took = wait_for(lambda: bool(red.state) and not yellow.state, what="red steady")
    assert took < 0.2
    assert stays(lambda: bool(red.state) and not yellow.state, 0.3)


# --- buzzer -------------------------------------------------------------------------


def test_each_buzz_drives_the_buzzer_pin_as_the_table_says_and_returns_at_once() -> None:
    """All five at once, each on its own panel and MockFactory."""
    buzzer_only = PanelPins(
        green=None, red=None, yellow=None, buzzer=12, record=None, mark=None, credential=None,
        triggers={},
    )  # fmt: skip
    factories = {name: new_factory() for name in BUZZ_PATTERNS}
    panels = {name: Panel(buzzer_only, pin_factory=f) for name, f in factories.items()}
    pins = {name: f.pin(12) for name, f in factories.items()}
    try:
        for name, panel in panels.items():
            panel.buzz(name)
            assert len(pins[name].states) < 1 + 2 * BUZZ_PATTERNS[name].pulses, "buzz blocked"

        def all_done() -> bool:
            return all(len(pins[n].states) == 1 + 2 * s.pulses for n, s in BUZZ_PATTERNS.items())

        wait_for(all_done, what="every pattern's pulses")
        assert stays(all_done, 0.2), "extra pulses"
        for name, spec in BUZZ_PATTERNS.items():
            changes = pins[name].states[1:]
            assert [bool(c.state) for c in changes] == [True, False] * spec.pulses
            lit = [after.timestamp for before, after in pairwise(changes) if before.state]
            dark = [after.timestamp for before, after in pairwise(changes) if not before.state]
            assert all(abs(t - spec.on) < TOLERANCE for t in lit), (name, lit)
            assert all(abs(t - spec.off) < TOLERANCE for t in dark), (name, dark)
    finally:
        for panel in panels.values():
            panel.close()


def test_an_active_low_buzzer_idles_high(factory: MockFactory) -> None:
    p = Panel(replace(PINS, active_high_buzzer=False))
    try:
        pin = factory.pin(PINS.buzzer)
        assert pin.state
        p.buzz("ack")
        wait_for(lambda: not pin.state, what="pulse")
        wait_for(lambda: bool(pin.state), what="idle again")
    finally:
        p.close()


def test_unknown_buzz_pattern_is_refused(panel: Panel) -> None:
    with pytest.raises(ValueError, match="no buzz pattern 'siren'"):
        panel.buzz("siren")  # type: ignore[arg-type]


# --- buttons and triggers -----------------------------------------------------------


class Calls:
    """Records every callback of a panel, in order, from whatever thread it comes."""

    def __init__(self, panel: Panel) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        panel.on_record_press = lambda: self.add("press")
        panel.on_record_hold = lambda: self.add("hold")
        panel.on_mark = lambda: self.add("mark")
        panel.on_credential = lambda: self.add("credential")
        panel.on_trigger = lambda name: self.add(f"trigger:{name}")

    def add(self, what: str) -> None:
        with self._lock:
            self.seen.append(what)

    def __len__(self) -> int:
        return len(self.seen)


def press(pin: Any, seconds: float) -> None:
    pin.drive_low()
    time.sleep(seconds)  # how long the finger is on the button
    pin.drive_high()


def test_a_short_press_reports_a_press_only(panel: Panel, factory: MockFactory) -> None:
    calls = Calls(panel)
    press(factory.pin(PINS.record), 0.08)
    wait_for(lambda: len(calls) == 1, what="the press")
    assert stays(lambda: calls.seen == ["press"], PINS.hold_seconds + 0.1)


def test_a_long_press_reports_a_hold_once_and_nothing_at_release(
    panel: Panel, factory: MockFactory
) -> None:
    calls = Calls(panel)
    pin = factory.pin(PINS.record)
    pin.drive_low()
    took = wait_for(lambda: len(calls) == 1, what="the hold")
    assert calls.seen == ["hold"]
    assert took >= PINS.hold_seconds - 0.02
    assert stays(lambda: len(calls) == 1, 0.3), "a hold is reported once however long"
    pin.drive_high()
    assert stays(lambda: calls.seen == ["hold"], 0.2)


def test_knocks_shorter_than_the_hold_never_report_a_hold(
    panel: Panel, factory: MockFactory
) -> None:
    calls = Calls(panel)
    pin = factory.pin(PINS.record)
    for _ in range(3):  # a bouncy knock, then a press let go just before the hold time
        press(pin, 0.01)
    press(pin, PINS.hold_seconds * 0.7)
    wait_for(lambda: len(calls) == 4, what="four presses")
    assert stays(lambda: calls.seen == ["press"] * 4, PINS.hold_seconds)


def test_mark_and_credential_buttons(panel: Panel, factory: MockFactory) -> None:
    calls = Calls(panel)
    press(factory.pin(PINS.mark), 0.05)
    wait_for(lambda: len(calls) == 1, what="mark")
    press(factory.pin(PINS.credential), 0.05)
    wait_for(lambda: len(calls) == 2, what="credential")
    assert calls.seen == ["mark", "credential"]


def test_triggers_report_their_name_when_they_go_active(panel: Panel, factory: MockFactory) -> None:
    calls = Calls(panel)
    holster, lightbar = factory.pin(16), factory.pin(26)
    holster.drive_low()  # weapon holstered: the reed contact closes, not a trigger
    assert panel.active_triggers() == frozenset()
    lightbar.drive_low()  # light bar on (through an optocoupler to ground)
    wait_for(lambda: len(calls) == 1, what="light bar")
    holster.drive_high()  # weapon drawn: the contact opens
    wait_for(lambda: len(calls) == 2, what="holster")
    assert calls.seen == ["trigger:lightbar", "trigger:holster"]
    assert panel.active_triggers() == {"lightbar", "holster"}
    lightbar.drive_high()
    assert stays(lambda: len(calls) == 2, 0.1), "going inactive is not a trigger"


def test_a_failing_callback_does_not_break_the_button(panel: Panel, factory: MockFactory) -> None:
    seen: list[str] = []

    def broken() -> None:
        seen.append("called")
        raise RuntimeError("bug in the handler")

    panel.on_mark = broken
    for _ in range(2):
        press(factory.pin(PINS.mark), 0.03)
    wait_for(lambda: len(seen) == 2, what="both presses")


# --- wiring -------------------------------------------------------------------------


def test_a_pin_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="GPIO17 is given to both record button and mark button"):
        replace(REFERENCE_PINS, mark=17)


def test_a_pin_in_use_is_refused_naming_the_part_and_nothing_is_left_held(
    factory: MockFactory,
) -> None:
    first = Panel(PINS)
    with pytest.raises(DeviceError, match="panel: green LED on GPIO5"):
        Panel(PINS)
    first.close()
    Panel(PINS).close()  # the failed one released what it had taken


def test_parts_not_fitted_are_left_alone(factory: MockFactory) -> None:
    bare = PanelPins(
        green=None,
        red=6,
        yellow=None,
        buzzer=None,
        record=17,
        mark=None,
        credential=None,
        triggers={},
    )
    p = Panel(bare)
    try:
        p.show(Indication.RECORDING)
        p.buzz("start")
        p.flash_error(0.1)
        red = factory.pin(6)
        wait_for(lambda: bool(red.state), what="red")
        assert p.active_triggers() == frozenset()
    finally:
        p.close()
    assert not factory.pin(6).state, "close turns the LEDs off"


def test_the_documented_wiring_is_the_reference_wiring() -> None:
    doc = (ROOT / "docs" / "HARDWARE.md").read_text()
    for role, pin in REFERENCE_PINS.roles():
        assert f"| {role.replace(chr(39), '`')} | GPIO{pin} |" in doc, role
