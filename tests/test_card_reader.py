"""Card readers: the keystroke decoder against event sequences as evdev delivers them
from a USB HID reader (scan codes, key down/up, SYN reports, shift, repeated keys,
autorepeat, garbage, a card cut short), the evdev adapter's thread against a stand-in
input device, and the simulated reader."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.card_reader import (
    CARD_ID_PATTERN,
    KEY_DOWN,
    KEY_ENTER,
    KEY_KPENTER,
    KEY_LEFTSHIFT,
    KEY_UP,
    BadRead,
    Decoded,
    EvdevCardReader,
    InvalidCardId,
    KeystrokeDecoder,
    SimulatedCardReader,
    normalize_card_id,
)
from hw.media import DeviceError

EV_SYN, EV_KEY, EV_MSC, MSC_SCAN = 0, 1, 4, 4
KEY_CODE = {
    **{str(d): 11 if d == 0 else d + 1 for d in range(10)},
    **{ch: code for code, ch in enumerate("QWERTYUIOP", 16)},
    **{ch: code for code, ch in enumerate("ASDFGHJKL", 30)},
    **{ch: code for code, ch in enumerate("ZXCVBNM", 44)},
}
KEYPAD = dict(zip("0123456789", (82, 79, 80, 81, 75, 76, 77, 71, 72, 73), strict=True))
KEY_SPACE, KEY_MINUS, KEY_1 = 57, 12, 2

Event = tuple[int, int, int]


def tap(code: int) -> list[Event]:
    """One key as a USB keyboard reports it: scan code, down, SYN, scan code, up, SYN."""
    scan = 0x70000 + code
    return [(EV_MSC, MSC_SCAN, scan), (EV_KEY, code, KEY_DOWN), (EV_SYN, 0, 0),
            (EV_MSC, MSC_SCAN, scan), (EV_KEY, code, KEY_UP), (EV_SYN, 0, 0)]  # fmt: skip


def shifted(code: int) -> list[Event]:
    return [(EV_KEY, KEY_LEFTSHIFT, KEY_DOWN), *tap(code), (EV_KEY, KEY_LEFTSHIFT, KEY_UP)]


def typed(text: str, enter: int = KEY_ENTER) -> list[Event]:
    """What a reader types for ``text``: upper-case letters with shift, as most do."""
    events: list[Event] = []
    for ch in text:
        events += (
            shifted(KEY_CODE[ch]) if ch.isalpha() and ch.isupper() else tap(KEY_CODE[ch.upper()])
        )
    return events + tap(enter)


def decode(*bursts: list[Event], gap: float = 0.0, step: float = 0.004) -> list[Decoded]:
    """Feed bursts of events ``step`` s apart, with ``gap`` s of silence between bursts."""
    decoder, at, out = KeystrokeDecoder(timeout=0.5, tail_window=2.0), 100.0, []
    for i, burst in enumerate(bursts):
        if i:
            at += gap
        for event in burst:
            out += decoder.feed(*event, at)
            at += step
    return out


# --- the decoder --------------------------------------------------------------------


def test_decimal_card_with_leading_zeros() -> None:
    assert decode(typed("0004321987")) == ["0004321987"]


def test_hex_card_letters_with_shift_or_without_are_the_same_card() -> None:
    assert decode(typed("04A1B2C3")) == ["04A1B2C3"]
    assert decode(typed("04a1b2c3")) == ["04A1B2C3"]


def test_repeated_digits_are_each_counted() -> None:
    assert decode(typed("11223300")) == ["11223300"]


def test_autorepeat_and_key_releases_add_nothing() -> None:
    held = [*tap(KEY_CODE["7"])[:3], (EV_KEY, KEY_CODE["7"], 2), (EV_KEY, KEY_CODE["7"], 2)]
    stray_releases = [(EV_KEY, KEY_CODE["9"], KEY_UP), (EV_KEY, KEY_ENTER, KEY_UP)]
    events = [*held, (EV_KEY, KEY_CODE["7"], KEY_UP), *stray_releases, *typed("123")]
    assert decode(events) == ["7123"]


def test_keypad_digits_and_keypad_enter() -> None:
    events = [e for d in "55012345" for e in tap(KEYPAD[d])] + tap(KEY_KPENTER)
    assert decode(events) == ["55012345"]


def test_a_garbage_key_spoils_that_card_only_and_is_reported_once() -> None:
    spoiled = typed("1234")[:-6] + tap(KEY_SPACE) + tap(KEY_MINUS) + typed("5678")
    out = decode(spoiled, typed("87654321"), gap=1.0)
    assert out[1:] == ["87654321"]
    assert isinstance(out[0], BadRead) and "unexpected key (code 57)" in out[0].reason


def test_a_shifted_digit_is_a_symbol_not_a_digit() -> None:
    out = decode(typed("12")[:-6] + shifted(KEY_1) + typed("34"))
    assert len(out) == 1 and isinstance(out[0], BadRead)


def test_a_card_cut_short_is_reported_and_its_tail_never_becomes_a_card() -> None:
    first, tail = typed("1234"), typed("5678")
    head = first[:-6]  # no Enter: the reader paused, or was pulled out
    out = decode(head, tail, typed("99990000"), gap=0.8)
    assert isinstance(out[0], BadRead) and "incomplete card read" in out[0].reason
    assert out[1:] == ["99990000"], "the tail 5678 was taken for a card"


def test_a_card_cut_short_is_reported_by_expire_without_further_keys() -> None:
    decoder = KeystrokeDecoder(timeout=0.5)
    for event in typed("1234")[:-6]:
        assert decoder.feed(*event, 10.0) == []
    assert decoder.expire(10.3) is None
    stale = decoder.expire(10.6)
    assert isinstance(stale, BadRead) and "after 4 characters" in stale.reason
    assert decoder.expire(11.0) is None, "reported once"
    later = [r for e in typed("12345678") for r in decoder.feed(*e, 13.0)]
    assert later == ["12345678"], "a card well after the tail window is a new card"


def test_too_long_too_short_and_a_stray_enter() -> None:
    out = decode(typed("1" * 40), typed("12"), tap(KEY_ENTER), gap=1.0)
    assert [type(r) for r in out] == [BadRead, BadRead]
    assert "longer than 32" in out[0].reason  # type: ignore[union-attr]


EVENTS = st.lists(
    st.tuples(
        st.sampled_from([EV_SYN, EV_KEY, EV_KEY, EV_KEY, EV_MSC]),
        st.one_of(st.integers(0, 120), st.sampled_from([KEY_ENTER, KEY_LEFTSHIFT])),
        st.sampled_from([0, 1, 1, 2]),
        st.floats(0, 1.5),
    ),
    max_size=80,
)


@settings(deadline=None)
@given(EVENTS)
def test_any_event_stream_gives_only_card_ids_or_bad_reads(
    events: list[tuple[int, int, int, float]],
) -> None:
    decoder, at = KeystrokeDecoder(), 0.0
    for type_, code, value, pause in events:
        at += pause
        for result in decoder.feed(type_, code, value, at):
            assert isinstance(result, BadRead) or normalize_card_id(result) == result


def test_key_codes_are_the_kernels() -> None:
    ecodes = pytest.importorskip("evdev.ecodes")
    assert (KEY_ENTER, KEY_KPENTER, KEY_LEFTSHIFT) == (
        ecodes.KEY_ENTER,
        ecodes.KEY_KPENTER,
        ecodes.KEY_LEFTSHIFT,
    )
    for ch, code in KEY_CODE.items():
        assert getattr(ecodes, f"KEY_{ch}") == code
    for d, code in KEYPAD.items():
        assert getattr(ecodes, f"KEY_KP{d}") == code
    assert (ecodes.EV_KEY, ecodes.EV_SYN, ecodes.EV_MSC, ecodes.MSC_SCAN) == (
        EV_KEY,
        EV_SYN,
        EV_MSC,
        MSC_SCAN,
    )


# --- card ids -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0004321987", " 04a1b2c3 ", "ABCD", "9" * 32])
def test_card_ids_accepted(text: str) -> None:
    assert normalize_card_id(text) == text.strip().upper()


@pytest.mark.parametrize(
    "text", ["", "123", "1" * 33, "12 34", "123,45678", "04:A1:B2:C3", "卡号1234"]
)
def test_card_ids_refused(text: str) -> None:
    with pytest.raises(InvalidCardId, match="must be 4 to 32 digits or letters"):
        normalize_card_id(text)
    assert CARD_ID_PATTERN  # the documented pattern is exported for the roster


# --- the simulated reader -----------------------------------------------------------


class Seen:
    def __init__(self) -> None:
        self.cards: list[str] = []
        self.bad: list[str] = []
        self.lock = threading.Lock()

    def card(self, card: str) -> None:
        with self.lock:
            self.cards.append(card)

    def bad_read(self, reason: str) -> None:
        with self.lock:
            self.bad.append(reason)


def test_simulated_reader_hands_over_normalized_ids_and_refuses_bad_ones() -> None:
    reader, seen = SimulatedCardReader(), Seen()
    assert reader.present("00012345") is False, "not started"
    reader.start(seen.card, seen.bad_read)
    assert reader.present("04a1b2c3") is True
    assert reader.present("04:A1") is False
    reader.stop()
    assert reader.present("00012345") is False
    assert seen.cards == ["04A1B2C3"]
    assert len(seen.bad) == 1 and "'04:A1'" in seen.bad[0]


# --- the evdev adapter, against a stand-in input device ------------------------------


class InputEvent(NamedTuple):
    type: int
    code: int
    value: int


class StandInDevice:
    """Behaves like evdev.InputDevice for the adapter: a pipe to select on, events
    queued by the test, grab/ungrab/close recorded; ``unplug()`` makes read() fail
    as the kernel does when the USB device goes away."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self._queue: deque[InputEvent] = deque()
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.unplugged = False

    def fileno(self) -> int:
        return self._r

    def push(self, events: list[Event]) -> None:
        with self._lock:
            self._queue.extend(InputEvent(*e) for e in events)
        os.write(self._w, b".")

    def unplug(self) -> None:
        self.unplugged = True
        os.write(self._w, b".")

    def read(self) -> Iterator[InputEvent]:
        os.read(self._r, 4096)
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        with self._lock:
            events, self._queue = list(self._queue), deque()
        if not events:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        yield from events

    def grab(self) -> None:
        self.calls.append("grab")

    def ungrab(self) -> None:
        self.calls.append("ungrab")

    def close(self) -> None:
        self.calls.append("close")
        os.close(self._r)
        os.close(self._w)


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_evdev_reader_grabs_reads_cards_in_its_thread_and_lets_go_at_stop() -> None:
    device, seen = StandInDevice(), Seen()
    reader = EvdevCardReader(
        "/dev/input/by-id/usb-reader-event-kbd", timeout=0.2, open_device=lambda path: device
    )
    reader.start(seen.card, seen.bad_read)
    try:
        wait_for(lambda: reader.connected)
        assert device.calls == ["grab"]
        device.push(typed("0004321987"))
        device.push(typed("12")[:-6])  # cut short: reported by the timeout alone
        wait_for(lambda: len(seen.cards) == 1 and len(seen.bad) == 1)
        assert seen.cards == ["0004321987"]
        assert "incomplete" in seen.bad[0]
    finally:
        reader.stop()
    assert device.calls == ["grab", "ungrab", "close"]
    assert not reader.connected


def test_evdev_reader_unplugged_is_opened_again_and_reads_on() -> None:
    devices: list[StandInDevice] = []
    missing = {"times": 1}

    def open_device(path: str) -> StandInDevice:
        if missing["times"]:
            missing["times"] -= 1
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        devices.append(StandInDevice())
        return devices[-1]

    seen = Seen()
    reader = EvdevCardReader("/dev/input/event7", retry_seconds=0.05, open_device=open_device)
    reader.start(seen.card, seen.bad_read)
    try:
        wait_for(lambda: len(devices) == 1 and reader.connected)  # absent at start, then there
        devices[0].unplug()
        wait_for(lambda: len(devices) == 2 and reader.connected)
        devices[1].push(typed("87654321"))
        wait_for(lambda: seen.cards == ["87654321"])
    finally:
        reader.stop()
    assert devices[0].calls == ["grab", "ungrab", "close"]
    assert seen.bad == []


def test_evdev_reader_without_evdev_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_evdev(name: str, *args: object) -> object:
        if name == "evdev":
            raise ImportError("No module named 'evdev'")
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", no_evdev)

    with pytest.raises(DeviceError, match="python3-evdev"):
        EvdevCardReader("/dev/input/event0").start(lambda card: None)
