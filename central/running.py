"""Waiting for the end of a long-running ``liuhen central`` command.

Owns: turning SIGTERM/SIGINT (in the main thread only), a ``--duration`` or a test's
``stop`` event into one wait, and putting the previous signal handlers back. Must not:
stop anything itself (the caller closes what it started after the wait).
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def until_stopped(stop: threading.Event, duration: float | None) -> None:
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *a: stop.set())
    try:
        stop.wait(duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
