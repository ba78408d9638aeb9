"""systemd's notify protocol, and what the unit honestly tells systemd.

Owns: sending sd_notify(3) datagrams (``READY=1``, ``STATUS=``, ``WATCHDOG=1``,
``STOPPING=1``, ``EXTEND_TIMEOUT_USEC=``) straight to ``$NOTIFY_SOCKET`` over an AF_UNIX
datagram socket (no libsystemd, no extra dependency), reading ``$WATCHDOG_USEC`` and
``$WATCHDOG_PID``; and ``ServiceReport``, the rule that turns the unit's verdict into
those messages:

- ``READY=1`` once, when the pipeline really is ready or recording (verdict mode
  ``ready``, ``recording`` or ``audio_only``, so never during ``boot``) and the wall
  clock is set (no ``clock_unset`` fault) unless ``require_clock`` is off. Until then,
  while media flows, ``EXTEND_TIMEOUT_USEC=`` keeps systemd's start timeout from
  killing a unit that records but waits for its clock.
- ``WATCHDOG=1`` only while media is flowing: no camera, microphone or write stall.
  A frozen encoder stops the pings and systemd restarts the service.
- ``STATUS=`` the one-line description of the unit, whenever it changes.
- ``STOPPING=1`` when shutdown begins.

Must not: judge the unit's state (firmware_py.state does), or ever block or fail the
daemon: without ``$NOTIFY_SOCKET`` every call is a no-op, and a send that fails is
logged once and dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from firmware_py.state import Fault, Mode, Verdict

log = logging.getLogger(__name__)

READY_MODES = frozenset({Mode.READY, Mode.RECORDING, Mode.AUDIO_ONLY})
STALLS = frozenset({Fault.CAMERA_STALLED, Fault.MIC_STALLED, Fault.WRITE_STALLED})
EXTEND_EVERY_S = 10.0  # while waiting for READY (e.g. for the clock) and media flows...
EXTEND_BY_US = 30_000_000  # ...ask systemd for this much more start time
SEND_TIMEOUT_S = 0.5


class Notifier:
    """Messages to the service manager. Build with ``from_env()``."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls) -> Notifier:
        """From ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and
        ``$WATCHDOG_USEC``/``$WATCHDOG_PID``; a no-op when ``$NOTIFY_SOCKET`` is unset."""
        address = os.environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX address; not notifying", address)
            address = None
        usec: int | None = None
        raw, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        if raw and (not pid or pid == str(os.getpid())):
            try:
                usec = int(raw)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number of microseconds; ignored", raw)
            if usec is not None and usec <= 0:
                usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout systemd set for this process, or None (no watchdog)."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1e6

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def extend_timeout(self, usec: int) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping: sealing what is being written")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.settimeout(SEND_TIMEOUT_S)
            self._socket.sendto(message.encode(), target)
        except OSError as exc:
            if not self._failed:  # once: a dead socket must not flood the journal
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            self._failed = True
        else:
            self._failed = False


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ServiceReport:
    """What the unit tells systemd, from the verdict of each daemon tick."""

    def __init__(
        self,
        notifier: Notifier,
        require_clock: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.require_clock = require_clock
        self._clock = clock
        self.ready_sent = False
        self._status: str | None = None
        self._last_ping = float("-inf")
        self._last_extend = float("-inf")
        interval = notifier.watchdog_interval_s
        self._ping_every = None if interval is None else interval / 4

    def is_ready(self, verdict: Verdict) -> bool:
        """The pipeline really records or is ready to, with a clock a court can read."""
        if verdict.mode not in READY_MODES:
            return False
        return not (self.require_clock and Fault.CLOCK_UNSET in verdict.faults)

    @staticmethod
    def media_flowing(verdict: Verdict) -> bool:
        """Encoded media is arriving (and, while recording, reaching the disk)."""
        return verdict.mode in READY_MODES and not (verdict.faults & STALLS)

    def update(self, verdict: Verdict, status: str) -> None:
        if not self.notifier.enabled:
            return
        now = self._clock()
        line = _one_line(status)
        if not self.ready_sent and self.is_ready(verdict):
            self.notifier.ready(line)
            self.ready_sent = True
            self._status = line
        elif line != self._status:
            self.notifier.status(line)
            self._status = line
        flowing = self.media_flowing(verdict)
        if not self.ready_sent and flowing and now - self._last_extend >= EXTEND_EVERY_S:
            self.notifier.extend_timeout(EXTEND_BY_US)
            self._last_extend = now
        if (
            self.ready_sent
            and flowing
            and self._ping_every is not None
            and now - self._last_ping >= self._ping_every
        ):
            self.notifier.watchdog()
            self._last_ping = now

    def stopping(self) -> None:
        self.notifier.stopping()
