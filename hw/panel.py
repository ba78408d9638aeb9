"""The unit's panel: three LEDs, a vibration motor or buzzer, three buttons and trigger
inputs, through gpiozero (lgpio on the Pi, gpiozero's MockFactory in tests).

Owns: what each indication looks like (``PATTERNS``, the one table that tests and
docs/HARDWARE.md are made from), what each buzz feels like (``BUZZ_PATTERNS``), driving
the pins, and turning raw button edges into reports: a short press, a deliberate hold, a
mark, a credential press, a trigger going active.

Must not: decide anything about the state of the unit. The caller (the state machine in
firmware_py) says which single ``Indication`` is true and what a press means; the panel
shows exactly that and reports exactly what the hands did. A knock on the record button
is reported as a short press and it is the caller that must not stop on it.

Honesty of the LEDs: red steady is shown if and only if the indication is one of the
``RECORDING*`` ones (video being recorded), yellow steady if and only if it is one of the
``AUDIO_ONLY*`` ones. Faults never use a steady light, and a momentary error flash keeps
the steady light of a recording on. Tests check this from the pin histories.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, get_args

from hw.media import DeviceError

log = logging.getLogger(__name__)

LedName = Literal["green", "red", "yellow"]
LEDS: tuple[LedName, ...] = get_args(LedName)
BuzzName = Literal["start", "stop", "reminder", "error", "ack"]
Activity = Literal["idle", "recording", "audio_only"]

BOUNCE_SECONDS = 0.03
"""Debounce for buttons and triggers: edges closer than this are one edge. Short enough
that a deliberate tap (~80 ms or more) is never lost. lgpio does it on the Pi; gpiozero's
MockFactory does not, so tests see every edge (a bouncy knock is several short presses)."""


@dataclass(frozen=True)
class PanelPins:
    """Where the panel's parts are wired: BCM GPIO numbers; ``None`` = not fitted.

    Buttons and triggers are contacts to ground, read with the internal pull-up: a
    trigger is active while its contact is closed, or while it is open if its name is in
    ``inverted_triggers`` (e.g. a holster reed switch that a holstered weapon holds closed).
    """

    green: int | None
    red: int | None
    yellow: int | None
    buzzer: int | None
    record: int | None
    mark: int | None
    credential: int | None
    triggers: Mapping[str, int]
    active_high_buzzer: bool = True
    hold_seconds: float = 2.0
    inverted_triggers: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        used: dict[int, str] = {}
        for role, pin in self.roles():
            if pin in used:
                raise ValueError(f"panel: GPIO{pin} is given to both {used[pin]} and {role}")
            used[pin] = role
        if not (0.2 <= self.hold_seconds <= 10):
            raise ValueError(f"panel: hold_seconds must be 0.2 to 10 (got {self.hold_seconds})")
        if unknown := self.inverted_triggers - set(self.triggers):
            raise ValueError(f"panel: inverted_triggers names no trigger: {sorted(unknown)}")
        if any(not name for name in self.triggers):
            raise ValueError("panel: a trigger needs a name")

    def roles(self) -> list[tuple[str, int]]:
        """(role, pin) of every fitted part, e.g. ("record button", 17)."""
        parts = [
            ("green LED", self.green),
            ("red LED", self.red),
            ("yellow LED", self.yellow),
            ("buzzer", self.buzzer),
            ("record button", self.record),
            ("mark button", self.mark),
            ("credential button", self.credential),
        ]
        parts += [(f"trigger {name!r}", pin) for name, pin in self.triggers.items()]
        return [(role, pin) for role, pin in parts if pin is not None]


REFERENCE_PINS = PanelPins(
    green=5,
    red=6,
    yellow=13,
    buzzer=12,
    record=17,
    mark=27,
    credential=22,
    triggers={"holster": 16, "lightbar": 26},
    inverted_triggers=frozenset({"holster"}),
)
"""The wiring in docs/HARDWARE.md: clear of I²C (2, 3), SPI0 (7–11, a TPM), UART (14,
15) and I²S (18–21, a MEMS microphone)."""


# --- LED patterns -------------------------------------------------------------------


@dataclass(frozen=True)
class LedPattern:
    """One LED's part of an indication, repeating: ``flashes`` times ``on`` seconds lit
    and ``off`` seconds dark, then ``pause`` more seconds dark; shifted by ``phase``.
    ``on = inf`` is steady on. An LED with no pattern in an indication is off."""

    led: LedName
    on: float = math.inf
    off: float = 0.0
    flashes: int = 1
    pause: float = 0.0
    phase: float = 0.0

    @property
    def steady(self) -> bool:
        return math.isinf(self.on)

    @property
    def cycle(self) -> float:
        return self.flashes * (self.on + self.off) + self.pause

    def _edges(self) -> list[float]:
        step = self.on + self.off
        return sorted(t for k in range(self.flashes) for t in (k * step, k * step + self.on))

    def _into_cycle(self, t: float) -> float:
        into = (t - self.phase) % self.cycle
        return 0.0 if into >= self.cycle else into  # % can round up to the cycle itself

    def is_on(self, t: float) -> bool:
        """Lit ``t`` seconds after the indication was shown?"""
        if self.steady:
            return True
        flash, into_flash = divmod(self._into_cycle(t), self.on + self.off)
        return flash < self.flashes and into_flash < self.on

    def next_change(self, t: float) -> float:
        """The first time after ``t`` at which the LED may change; inf if never."""
        if self.steady:
            return math.inf
        into = self._into_cycle(t)
        edges = self._edges()
        later = next(e for e in (*edges, *(self.cycle + e for e in edges)) if e > into)
        return t + (later - into)

    def describe(self) -> str:
        if self.steady:
            return "on"
        if self.pause or self.flashes > 1:
            s = "" if self.flashes == 1 else "es"
            return f"{self.flashes} flash{s} every {self.cycle:g} s"
        if self.phase or self.on != self.off:
            return f"{self.on:g} s on every {self.cycle:g} s, from {self.phase:g} s"
        return f"blink {1 / self.cycle:g} Hz"


def steady(led: LedName) -> LedPattern:
    return LedPattern(led)


def slow_blink(led: LedName) -> LedPattern:
    return LedPattern(led, on=0.5, off=0.5)


def fast_blink(led: LedName) -> LedPattern:
    return LedPattern(led, on=0.125, off=0.125)


def flashes(led: LedName, count: int) -> LedPattern:
    """``count`` short flashes, then dark, every 2 s: countable at a glance."""
    return LedPattern(led, on=0.15, off=0.25, flashes=count, pause=2.0 - count * 0.4)


def running_light() -> tuple[LedPattern, ...]:
    """green → yellow → red in turn, 0.2 s each: never mistaken for a steady light."""
    order: tuple[LedName, ...] = ("green", "yellow", "red")
    return tuple(LedPattern(led, on=0.2, off=0.4, phase=0.2 * i) for i, led in enumerate(order))


class Indication(StrEnum):
    """The one thing the panel is told is true. Plain names are states with nothing
    wrong or faults while idle; ``RECORDING_*`` and ``AUDIO_ONLY_*`` are faults during a
    recording that goes on. ERROR is momentary (``Panel.flash_error``)."""

    BOOT = "boot"
    READY = "ready"
    RECORDING = "recording"
    AUDIO_ONLY = "audio_only"
    ERROR = "error"
    CLOCK_UNSET = "clock_unset"
    STORAGE_LOW = "storage_low"
    STORAGE_FULL = "storage_full"
    CAMERA_STALLED = "camera_stalled"
    MIC_STALLED = "mic_stalled"
    KEY_UNAVAILABLE = "key_unavailable"
    RECORDING_CLOCK_UNSET = "recording_clock_unset"
    RECORDING_STORAGE_LOW = "recording_storage_low"
    RECORDING_MIC_STALLED = "recording_mic_stalled"
    RECORDING_KEY_UNAVAILABLE = "recording_key_unavailable"
    AUDIO_ONLY_CLOCK_UNSET = "audio_only_clock_unset"
    AUDIO_ONLY_STORAGE_LOW = "audio_only_storage_low"
    AUDIO_ONLY_KEY_UNAVAILABLE = "audio_only_key_unavailable"
    AUDIO_ONLY_CAMERA_STALLED = "audio_only_camera_stalled"

    @property
    def recording_video(self) -> bool:
        return self.name.startswith("RECORDING")

    @property
    def recording_audio_only(self) -> bool:
        return self.name.startswith("AUDIO_ONLY")


FAULTS_BY_SEVERITY: tuple[Indication, ...] = (
    Indication.STORAGE_FULL,
    Indication.CAMERA_STALLED,
    Indication.MIC_STALLED,
    Indication.KEY_UNAVAILABLE,
    Indication.STORAGE_LOW,
    Indication.CLOCK_UNSET,
)
"""The faults, most severe first: with several at once, show the first (suggested)."""

# How a fault looks, on whichever LED is not lit steadily: yellow normally, red while
# yellow is steady (audio only). Green blinking slowly means "a press records".
_FAULT_SIGNAL: dict[Indication, Callable[[LedName], LedPattern]] = {
    Indication.CLOCK_UNSET: slow_blink,
    Indication.STORAGE_LOW: lambda led: flashes(led, 2),
    Indication.KEY_UNAVAILABLE: lambda led: flashes(led, 3),
    Indication.MIC_STALLED: lambda led: flashes(led, 1),
    Indication.CAMERA_STALLED: fast_blink,
    Indication.STORAGE_FULL: fast_blink,
}


def _fault(fault: Indication, led: LedName, *rest: LedPattern) -> tuple[LedPattern, ...]:
    return (*rest, _FAULT_SIGNAL[fault](led))


PATTERNS: dict[Indication, tuple[LedPattern, ...]] = {
    Indication.BOOT: running_light(),
    Indication.READY: (slow_blink("green"),),
    Indication.RECORDING: (steady("red"),),
    Indication.AUDIO_ONLY: (steady("yellow"),),
    Indication.ERROR: tuple(fast_blink(led) for led in LEDS),
    # idle, a press still records
    Indication.CLOCK_UNSET: _fault(Indication.CLOCK_UNSET, "yellow", slow_blink("green")),
    Indication.STORAGE_LOW: _fault(Indication.STORAGE_LOW, "yellow", slow_blink("green")),
    Indication.MIC_STALLED: _fault(Indication.MIC_STALLED, "yellow", slow_blink("green")),
    Indication.KEY_UNAVAILABLE: _fault(Indication.KEY_UNAVAILABLE, "yellow", slow_blink("green")),
    # idle, a press cannot record video
    Indication.CAMERA_STALLED: _fault(Indication.CAMERA_STALLED, "yellow"),
    Indication.STORAGE_FULL: _fault(Indication.STORAGE_FULL, "red"),
    # recording video goes on: red stays steady
    Indication.RECORDING_CLOCK_UNSET: _fault(Indication.CLOCK_UNSET, "yellow", steady("red")),
    Indication.RECORDING_STORAGE_LOW: _fault(Indication.STORAGE_LOW, "yellow", steady("red")),
    Indication.RECORDING_MIC_STALLED: _fault(Indication.MIC_STALLED, "yellow", steady("red")),
    Indication.RECORDING_KEY_UNAVAILABLE: _fault(
        Indication.KEY_UNAVAILABLE, "yellow", steady("red")
    ),
    # recording audio only goes on: yellow stays steady, the fault shows on red
    Indication.AUDIO_ONLY_CLOCK_UNSET: _fault(Indication.CLOCK_UNSET, "red", steady("yellow")),
    Indication.AUDIO_ONLY_STORAGE_LOW: _fault(Indication.STORAGE_LOW, "red", steady("yellow")),
    Indication.AUDIO_ONLY_KEY_UNAVAILABLE: _fault(
        Indication.KEY_UNAVAILABLE, "red", steady("yellow")
    ),
    Indication.AUDIO_ONLY_CAMERA_STALLED: _fault(
        Indication.CAMERA_STALLED, "red", steady("yellow")
    ),
}

MEANING: dict[Indication, str] = {
    Indication.BOOT: "starting up (a running light: green, yellow, red); not recording",
    Indication.READY: "ready: pre-event buffer running, a press records",
    Indication.RECORDING: "recording video and audio",
    Indication.AUDIO_ONLY: "recording audio only",
    Indication.ERROR: "momentary (~2 s): that was refused, e.g. an unknown card; over a recording the steady light stays",
    Indication.CLOCK_UNSET: "ready, but the clock is not synchronized (times are marked unsynchronized)",
    Indication.STORAGE_LOW: "ready, but storage is low",
    Indication.MIC_STALLED: "ready, but the microphone is not working: a press records video only",
    Indication.KEY_UNAVAILABLE: "ready, but the signing key is unavailable: evidence is kept and signed later",
    Indication.CAMERA_STALLED: "not ready: the camera is not working",
    Indication.STORAGE_FULL: "cannot record: storage is full (nothing is overwritten)",
    Indication.RECORDING_CLOCK_UNSET: "recording; clock not synchronized",
    Indication.RECORDING_STORAGE_LOW: "recording; storage low",
    Indication.RECORDING_MIC_STALLED: "recording video, but no sound: the microphone is not working",
    Indication.RECORDING_KEY_UNAVAILABLE: "recording; signing key unavailable, signed later",
    Indication.AUDIO_ONLY_CLOCK_UNSET: "recording audio only; clock not synchronized",
    Indication.AUDIO_ONLY_STORAGE_LOW: "recording audio only; storage low",
    Indication.AUDIO_ONLY_KEY_UNAVAILABLE: "recording audio only; signing key unavailable, signed later",
    Indication.AUDIO_ONLY_CAMERA_STALLED: "the camera stopped during a recording: audio goes on, video does not",
}

_STOPPED_WHEN_FULL = "a full store stops recording: show STORAGE_FULL"
_NOT_SHOWN = {
    ("recording", Indication.STORAGE_FULL): _STOPPED_WHEN_FULL,
    ("audio_only", Indication.STORAGE_FULL): _STOPPED_WHEN_FULL,
    ("recording", Indication.CAMERA_STALLED): "video is not being recorded: show "
    "AUDIO_ONLY_CAMERA_STALLED if audio goes on, else CAMERA_STALLED",
    ("audio_only", Indication.MIC_STALLED): "nothing is being recorded: show MIC_STALLED",
}


def indication_for(activity: Activity, fault: Indication | None = None) -> Indication:
    """The indication for what is being recorded and the one fault to show (pick it
    with FAULTS_BY_SEVERITY). Combinations that cannot be true raise ValueError saying
    which indication tells the truth instead."""
    if fault is None:
        return {
            "idle": Indication.READY,
            "recording": Indication.RECORDING,
            "audio_only": Indication.AUDIO_ONLY,
        }[activity]
    if fault not in FAULTS_BY_SEVERITY:
        raise ValueError(f"{fault.name} is not a fault")
    if activity == "idle":
        return fault
    if (activity, fault) in _NOT_SHOWN:
        raise ValueError(f"{fault.name} while {activity}: {_NOT_SHOWN[activity, fault]}")
    return Indication[f"{activity.upper()}_{fault.name}"]


def error_overlay(under: Indication | None) -> tuple[LedPattern, ...]:
    """The momentary error: every LED blinks fast except a steady one, which stays
    (a recording still says it is recording)."""
    kept = tuple(p for p in PATTERNS[under] if p.steady) if under else ()
    lit = {p.led for p in kept}
    return kept + tuple(fast_blink(led) for led in LEDS if led not in lit)


# --- buzzer / vibration -------------------------------------------------------------


@dataclass(frozen=True)
class BuzzPattern:
    pulses: int
    on: float
    off: float

    def describe(self) -> str:
        times = "once" if self.pulses == 1 else f"{self.pulses} times, {self.off:g} s apart"
        return f"{self.on:g} s, {times}"


BUZZ_PATTERNS: dict[BuzzName, BuzzPattern] = {
    "start": BuzzPattern(pulses=1, on=0.5, off=0.0),
    "stop": BuzzPattern(pulses=2, on=0.25, off=0.2),
    "reminder": BuzzPattern(pulses=2, on=0.1, off=0.15),
    "error": BuzzPattern(pulses=4, on=0.1, off=0.1),
    "ack": BuzzPattern(pulses=1, on=0.1, off=0.0),
}

BUZZ_MEANING: dict[BuzzName, str] = {
    "start": "recording started",
    "stop": "recording stopped",
    "reminder": "still recording (the caller repeats it, e.g. every 2 min)",
    "error": "refused or a fault appeared",
    "ack": "a press or a card was taken (mark, credential shown, log-in)",
}


# --- the devices --------------------------------------------------------------------


class _LedPlayer:
    """Drives the fitted LEDs from a set of LedPatterns in one thread, all LEDs on one
    time base so that patterns stay in phase. Writes a pin only when it changes."""

    def __init__(self, leds: dict[LedName, Any]) -> None:
        self._leds = leds
        self._lock = threading.Lock()
        self._patterns: tuple[LedPattern, ...] = ()
        self._epoch = time.monotonic()
        self._closed = False
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="panel-leds", daemon=True)
        self._thread.start()

    def play(self, patterns: tuple[LedPattern, ...]) -> None:
        with self._lock:
            self._patterns, self._epoch = patterns, time.monotonic()
        self._changed.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._changed.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        lit: dict[LedName, bool | None] = dict.fromkeys(self._leds)
        try:
            while True:
                self._changed.clear()
                with self._lock:
                    if self._closed:
                        break
                    patterns, epoch = self._patterns, self._epoch
                t = time.monotonic() - epoch
                for name, led in self._leds.items():
                    want = any(p.is_on(t) for p in patterns if p.led == name)
                    if lit[name] != want:
                        led.value = want
                        lit[name] = want
                due = min(
                    (p.next_change(t) for p in patterns if p.led in self._leds), default=math.inf
                )
                self._changed.wait(None if math.isinf(due) else max(0.0, due - t))
            for led in self._leds.values():
                led.off()
        except Exception:
            log.exception("panel: LED driver stopped")


class _PressOrHold:
    """One report per press of a button: ``on_short`` at release if it was let go
    before the hold time, else ``on_hold`` once the hold time is reached (and nothing
    at release). A press cannot produce both, whatever the timing of the threads."""

    def __init__(
        self, button: Any, on_short: Callable[[], None], on_hold: Callable[[], None]
    ) -> None:
        self._on_short, self._on_hold = on_short, on_hold
        self._lock = threading.Lock()
        self._down = False
        self._held = False
        button.when_pressed = self._pressed
        button.when_held = self._reached_hold
        button.when_released = self._released

    def _pressed(self) -> None:
        with self._lock:
            self._down, self._held = True, False

    def _reached_hold(self) -> None:
        with self._lock:
            if not self._down or self._held:
                return
            self._held = True
        self._on_hold()

    def _released(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
            short = not self._held
        if short:
            self._on_short()


class Panel:
    """LEDs, buzzer, buttons and triggers of one unit.

    Callbacks run in gpiozero's threads; an exception in one is logged, never raised
    into the pin machinery. Set them before the first press; they are read per event.
    """

    def __init__(self, pins: PanelPins, *, pin_factory: Any = None) -> None:
        self.pins = pins
        self.on_record_press: Callable[[], None] | None = None
        self.on_record_hold: Callable[[], None] | None = None
        self.on_mark: Callable[[], None] | None = None
        self.on_credential: Callable[[], None] | None = None
        self.on_trigger: Callable[[str], None] | None = None
        self._factory = pin_factory
        self._devices: list[Any] = []
        self._lock = threading.Lock()
        self._indication: Indication | None = None
        self._flash: threading.Timer | None = None
        self._player: _LedPlayer | None = None
        self._buzzer: Any = None
        self._triggers: dict[str, Any] = {}
        try:
            self._open()
        except Exception:
            self.close()
            raise

    def _device(self, role: str, make: Callable[..., Any], pin: int, **kwargs: Any) -> Any:
        try:
            device = make(pin, pin_factory=self._factory, **kwargs)
        except Exception as exc:
            raise DeviceError(f"panel: {role} on GPIO{pin}: {exc}") from exc
        self._devices.append(device)
        return device

    def _open(self) -> None:
        from gpiozero import LED, Button, DigitalInputDevice, DigitalOutputDevice

        pins = self.pins
        leds: dict[LedName, Any] = {}
        for led in LEDS:
            pin = getattr(pins, led)
            if pin is not None:
                leds[led] = self._device(f"{led} LED", LED, pin, initial_value=False)
        self._player = _LedPlayer(leds)
        if pins.buzzer is not None:
            self._buzzer = self._device(
                "buzzer",
                DigitalOutputDevice,
                pins.buzzer,
                active_high=pins.active_high_buzzer,
                initial_value=False,
            )

        def button(role: str, pin: int, **kwargs: Any) -> Any:
            return self._device(
                role, Button, pin, pull_up=True, bounce_time=BOUNCE_SECONDS, **kwargs
            )

        if pins.record is not None:
            record = button("record button", pins.record, hold_time=pins.hold_seconds)
            _PressOrHold(
                record,
                on_short=lambda: self._call("record press", self.on_record_press),
                on_hold=lambda: self._call("record hold", self.on_record_hold),
            )
        if pins.mark is not None:
            mark = button("mark button", pins.mark)
            mark.when_pressed = lambda: self._call("mark", self.on_mark)
        if pins.credential is not None:
            credential = button("credential button", pins.credential)
            credential.when_pressed = lambda: self._call("credential", self.on_credential)
        for name, pin in pins.triggers.items():
            trigger = self._device(
                f"trigger {name!r}",
                DigitalInputDevice,
                pin,
                pull_up=True,
                bounce_time=BOUNCE_SECONDS,
            )
            fire = self._trigger_handler(name)
            if name in pins.inverted_triggers:
                trigger.when_deactivated = fire
            else:
                trigger.when_activated = fire
            self._triggers[name] = trigger

    def _trigger_handler(self, name: str) -> Callable[[], None]:
        return lambda: self._call(f"trigger {name!r}", self.on_trigger, name)

    @staticmethod
    def _call(what: str, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            log.debug("panel: %s with no handler", what)
            return
        try:
            callback(*args)
        except Exception:
            log.exception("panel: handler for %s failed", what)

    # --- indications

    @property
    def indication(self) -> Indication | None:
        """What the panel was last told to show (not the error flash)."""
        return self._indication

    def show(self, indication: Indication) -> None:
        """Show ``indication`` until told otherwise. Showing the same one again changes
        nothing (no restart of a blink, an error flash in progress goes on); a different
        one ends an error flash at once: the real state beats a message."""
        indication = Indication(indication)
        with self._lock:
            if indication == self._indication:
                return
            self._indication = indication
            self._end_flash_locked()
            self._play(PATTERNS[indication])

    def flash_error(self, seconds: float = 2.0) -> None:
        """The error pattern for ``seconds``, then back to the indication being shown."""
        with self._lock:
            self._end_flash_locked()
            self._play(error_overlay(self._indication))
            timer = threading.Timer(seconds, self._flash_ended)
            timer.daemon = True
            self._flash = timer
            timer.start()

    def _flash_ended(self) -> None:
        with self._lock:
            if self._flash is not threading.current_thread():
                return  # this timer was cancelled or replaced (a Timer is its own thread)
            self._flash = None
            self._play(PATTERNS[self._indication] if self._indication else ())

    def _end_flash_locked(self) -> None:
        if self._flash is not None:
            self._flash.cancel()
            self._flash = None

    def _play(self, patterns: tuple[LedPattern, ...]) -> None:
        if self._player is not None:
            self._player.play(patterns)

    # --- buzzer

    def buzz(self, pattern: BuzzName) -> None:
        """Start a buzz pattern and return at once; a new one cuts the previous one."""
        try:
            spec = BUZZ_PATTERNS[pattern]
        except KeyError:
            raise ValueError(
                f"no buzz pattern {pattern!r}; one of {sorted(BUZZ_PATTERNS)}"
            ) from None
        if self._buzzer is not None:
            self._buzzer.blink(on_time=spec.on, off_time=spec.off, n=spec.pulses, background=True)

    # --- inputs

    def active_triggers(self) -> frozenset[str]:
        """Triggers active right now (e.g. already drawn at start-up, when no edge comes)."""
        return frozenset(
            name
            for name, device in self._triggers.items()
            if device.is_active != (name in self.pins.inverted_triggers)
        )

    def close(self) -> None:
        """LEDs and buzzer off, every pin released. Safe to call twice."""
        with self._lock:
            self._end_flash_locked()
            player, self._player = self._player, None
        if player is not None:
            player.close()
        # Side by side: a gpiozero Button takes ~0.1 s to stop its hold thread.
        closing = [threading.Thread(target=_close_device, args=(d,)) for d in self._devices]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(timeout=2)
        self._devices.clear()
        self._triggers.clear()
        self._buzzer = None


def _close_device(device: Any) -> None:
    try:
        device.close()
    except Exception:
        log.exception("panel: closing %r", device)


def render_led_table() -> str:
    """The LED table of docs/HARDWARE.md (`python -m hw.panel` prints both tables)."""
    lines = [
        "| indication | green | red | yellow | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for indication, patterns in PATTERNS.items():
        by_led = {p.led: p.describe() for p in patterns}
        cells = " | ".join(by_led.get(led, "–") for led in LEDS)
        lines.append(f"| `{indication.name}` | {cells} | {MEANING[indication]} |")
    return "\n".join(lines)


def render_buzz_table() -> str:
    """The buzz table of docs/HARDWARE.md."""
    lines = ["| buzz | pulses | meaning |", "| --- | --- | --- |"]
    for name, spec in BUZZ_PATTERNS.items():
        lines.append(f"| `{name}` | {spec.describe()} | {BUZZ_MEANING[name]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_led_table(), render_buzz_table(), sep="\n\n")
