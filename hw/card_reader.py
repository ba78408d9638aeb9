"""Officer log-in by card: a reader hands over the id of the card presented, as text.

Owns: the CardReader interface, the card id format (``normalize_card_id``), a simulated
reader, and the adapter for USB HID card readers that type the card number like a
keyboard, through python-evdev, with the decoder that turns their key events into card
ids (docs/decisions/0007-card-reader.md says why this kind of reader).

Must not: know officers, rosters or sessions (firmware_py.roster maps ids to officers,
the state machine decides what a card does), nor let a reader's typing reach anything
else on the unit: the input device is grabbed while the reader is started.

A card id is what the reader typed: 4 to 32 digits or letters A–Z, case-folded to upper
case, leading zeros kept (``0004321987`` and ``4321987`` are different cards).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from hw.media import DeviceError

log = logging.getLogger(__name__)

CARD_ID_PATTERN = r"[0-9A-Z]{4,32}"
"""A normalized card id. Readers print 8 hex digits (a 13.56 MHz MIFARE UID) or 10
decimal digits (a 125 kHz EM4100 number) or similar; configure them without separators."""

OnCard = Callable[[str], None]
OnBadRead = Callable[[str], None]


class InvalidCardId(ValueError):
    """Not a card id; the message says what is wrong."""


def normalize_card_id(text: str) -> str:
    """``text`` as a card id (stripped, upper case), or InvalidCardId."""
    card = text.strip().upper()
    if not re.fullmatch(CARD_ID_PATTERN, card):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidCardId(f"card id {shown!r}: must be 4 to 32 digits or letters A-Z")
    return card


class CardReader(Protocol):
    """Calls ``on_card(card_id)`` for every card presented, from the reader's own thread
    (or the caller's, for the simulated one); ``on_bad_read(reason)`` when a card was
    presented but could not be read whole. Neither is called after ``stop()``."""

    def start(self, on_card: OnCard, on_bad_read: OnBadRead | None = None) -> None: ...

    def stop(self) -> None: ...


def _report(what: str, callback: Callable[[str], None] | None, arg: str) -> None:
    if callback is None:
        log.warning("card reader: %s %s (no handler)", what, arg)
        return
    try:
        callback(arg)
    except Exception:
        log.exception("card reader: handler for %s failed", what)


class SimulatedCardReader:
    """A reader for tests, the demo and ``liuhen ctl login CARD``: ``present`` is a tap.
    The id goes through the same rule as a real read; the handler runs in the caller's
    thread, before ``present`` returns."""

    def __init__(self) -> None:
        self._on_card: OnCard | None = None
        self._on_bad_read: OnBadRead | None = None

    def start(self, on_card: OnCard, on_bad_read: OnBadRead | None = None) -> None:
        self._on_card, self._on_bad_read = on_card, on_bad_read

    def stop(self) -> None:
        self._on_card = self._on_bad_read = None

    def present(self, card_id: str) -> bool:
        """Tap a card. True if it was read and handed over; False if the reader is not
        started or the id is not a card id (then ``on_bad_read`` says why)."""
        if self._on_card is None:
            log.warning("card reader: a card was presented but the reader is not started")
            return False
        try:
            card = normalize_card_id(card_id)
        except InvalidCardId as exc:
            _report("bad read", self._on_bad_read, str(exc))
            return False
        _report("card", self._on_card, card)
        return True


# --- USB HID (keyboard-emulating) readers -------------------------------------------

# Linux input event codes (linux/input-event-codes.h: a stable kernel ABI), so that
# the decoder needs no evdev to be tested. tests/test_card_reader.py checks them
# against evdev.ecodes where evdev is installed.
EV_KEY = 1
KEY_UP, KEY_DOWN, KEY_AUTOREPEAT = 0, 1, 2
KEY_ENTER, KEY_KPENTER = 28, 96
KEY_LEFTSHIFT, KEY_RIGHTSHIFT = 42, 54
KEY_CAPSLOCK, KEY_NUMLOCK = 58, 69
_DIGIT_ROW = {code: str((code - 1) % 10) for code in range(2, 12)}  # KEY_1=2 … KEY_0=11
_KEYPAD = dict(zip((82, 79, 80, 81, 75, 76, 77, 71, 72, 73), "0123456789", strict=True))
_LETTERS = {
    code: letter
    for first, row in ((16, "QWERTYUIOP"), (30, "ASDFGHJKL"), (44, "ZXCVBNM"))
    for code, letter in enumerate(row, start=first)
}
_SHIFTS = {KEY_LEFTSHIFT, KEY_RIGHTSHIFT}
_IGNORED = {KEY_CAPSLOCK, KEY_NUMLOCK}


@dataclass(frozen=True)
class BadRead:
    """A card was presented but not read whole; ``reason`` says how."""

    reason: str


Decoded = str | BadRead


class KeystrokeDecoder:
    """Turns a keyboard-emulating reader's key events into card ids.

    Counts key presses only (not releases, not autorepeat); a card ends with Enter.
    Letters are case-folded; a shifted digit (a symbol) or any other key spoils the card,
    which is then reported once, at its Enter, as a BadRead. A card with no key for
    ``timeout`` seconds is reported as incomplete, and the rest of it, if it comes within
    ``tail_window`` seconds of its last key, is dropped up to its Enter, so that the end
    of one card is never taken for another card.
    """

    def __init__(self, *, timeout: float = 0.5, tail_window: float = 2.0) -> None:
        self.timeout, self.tail_window = timeout, tail_window
        self._chars: list[str] = []
        self._spoiled: str | None = None
        self._last_key: float | None = None
        self._shift: set[int] = set()
        self._tail_until: float | None = None

    def feed(self, type_: int, code: int, value: int, at: float) -> list[Decoded]:
        """One input event as evdev delivers it, received at ``at`` (monotonic s)."""
        if type_ != EV_KEY:
            return []
        if code in _SHIFTS:
            if value == KEY_DOWN:
                self._shift.add(code)
            elif value == KEY_UP:
                self._shift.discard(code)
            return []
        if value != KEY_DOWN or code in _IGNORED:
            return []
        out: list[Decoded] = [stale] if (stale := self.expire(at)) else []
        if self._in_tail(at):
            if code in (KEY_ENTER, KEY_KPENTER):
                self._tail_until = None
            return out
        self._last_key = at
        if code in (KEY_ENTER, KEY_KPENTER):
            if (done := self._finish()) is not None:
                out.append(done)
        else:
            self._add(code)
        return out

    def expire(self, now: float) -> BadRead | None:
        """Report a card left without its Enter for ``timeout`` seconds."""
        pending = self._chars or self._spoiled
        if not pending or self._last_key is None or now - self._last_key < self.timeout:
            return None
        count = len(self._chars)
        self._reset()
        self._tail_until = self._last_key + self.tail_window
        return BadRead(
            f"incomplete card read: no Enter within {self.timeout:g} s after {count} characters"
        )

    def _in_tail(self, at: float) -> bool:
        if self._tail_until is not None and at >= self._tail_until:
            self._tail_until = None
        return self._tail_until is not None

    def _add(self, code: int) -> None:
        char = _LETTERS.get(code) or _KEYPAD.get(code)
        if char is None and not self._shift:
            char = _DIGIT_ROW.get(code)
        if char is None:
            self._spoiled = self._spoiled or f"unexpected key (code {code}) in a card read"
        elif len(self._chars) >= 32:
            self._spoiled = self._spoiled or "card read longer than 32 characters"
        else:
            self._chars.append(char)

    def _finish(self) -> Decoded | None:
        text, spoiled = "".join(self._chars), self._spoiled
        self._reset()
        if spoiled:
            return BadRead(spoiled)
        if not text:
            return None  # a stray Enter
        try:
            return normalize_card_id(text)
        except InvalidCardId as exc:
            return BadRead(str(exc))

    def _reset(self) -> None:
        self._chars, self._spoiled = [], None


class EvdevCardReader:
    """A USB HID card reader that types the card number and Enter, read through
    python-evdev from ``path`` (best a stable ``/dev/input/by-id/...-event-kbd`` link).

    The device is grabbed (EVIOCGRAB) so its digits reach no console or other program.
    A reader that is missing or unplugged is logged and opened again every
    ``retry_seconds``; the unit goes on without it meanwhile. ``open_device`` is for
    tests: it is called with ``path`` and returns an object with ``fileno()``,
    ``read()`` (events with ``type``, ``code``, ``value``), ``grab()``, ``ungrab()``,
    ``close()``, as ``evdev.InputDevice`` has.
    """

    def __init__(
        self,
        path: str,
        *,
        timeout: float = 0.5,
        retry_seconds: float = 2.0,
        open_device: Callable[[str], Any] | None = None,
    ) -> None:
        self.path = path
        self._timeout = timeout
        self._retry = retry_seconds
        self._open_device = open_device
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False

    def start(self, on_card: OnCard, on_bad_read: OnBadRead | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("card reader already started")
        opener = self._open_device or _evdev_opener()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run,
            args=(opener, on_card, on_bad_read),
            name="card-reader",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, opener: Callable[[str], Any], on_card: OnCard, on_bad: OnBadRead | None) -> None:
        complained = False
        while not self._stopping.is_set():
            try:
                device = opener(self.path)
            except OSError as exc:
                if not complained:
                    log.error("card reader %s: cannot open: %s; retrying", self.path, exc)
                    complained = True
                self._stopping.wait(self._retry)
                continue
            complained = False
            try:
                device.grab()
                self.connected = True
                log.info("card reader %s: ready", self.path)
                self._read(device, KeystrokeDecoder(timeout=self._timeout), on_card, on_bad)
            except OSError as exc:
                log.error("card reader %s: lost: %s; retrying", self.path, exc)
                self._stopping.wait(self._retry)
            finally:
                self.connected = False
                _close_quietly(device)

    def _read(
        self, device: Any, decoder: KeystrokeDecoder, on_card: OnCard, on_bad: OnBadRead | None
    ) -> None:
        while not self._stopping.is_set():
            ready, _, _ = select.select([device], [], [], 0.1)
            now = time.monotonic()
            results: list[Decoded] = []
            if ready:
                with contextlib.suppress(BlockingIOError):  # woken, but nothing to read
                    for event in device.read():
                        results += decoder.feed(event.type, event.code, event.value, now)
            if stale := decoder.expire(now):
                results.append(stale)
            if not self._stopping.is_set():
                _deliver(results, on_card, on_bad)


def _deliver(results: Iterable[Decoded], on_card: OnCard, on_bad: OnBadRead | None) -> None:
    for result in results:
        if isinstance(result, BadRead):
            _report("bad read", on_bad, result.reason)
        else:
            _report("card", on_card, result)


def _close_quietly(device: Any) -> None:
    for step in (device.ungrab, device.close):
        with contextlib.suppress(OSError):
            step()


def _evdev_opener() -> Callable[[str], Any]:
    try:
        evdev = importlib.import_module("evdev")  # optional: only this adapter needs it
    except ImportError:
        raise DeviceError(
            "card reader: python-evdev is not installed "
            "(Raspberry Pi OS: apt install python3-evdev; elsewhere: pip install evdev)"
        ) from None
    opener: Callable[[str], Any] = evdev.InputDevice
    return opener
