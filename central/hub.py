"""Live updates for the monitor page: Server-Sent Events fan-out.

Owns: the set of connected pages (one bounded queue each), publishing an event to all
of them, coalescing "this unit changed" marks so a busy fleet costs one update per unit
per flush rather than one per message, and dropping a page that does not keep up (its
EventSource reconnects and reloads the whole state). Must not: render or store anything.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Any

QUEUE = 256


class Subscription:
    def __init__(self) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue(QUEUE)

    def next(self, timeout: float) -> str | None:
        """The next encoded event; '' on timeout (send a keep-alive); None: stop."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return ""


class Hub:
    def __init__(self, max_pages: int = 64) -> None:
        self.max_pages = max_pages
        self._pages: set[Subscription] = set()
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription | None:
        """None when too many pages are connected."""
        with self._lock:
            if len(self._pages) >= self.max_pages:
                return None
            sub = Subscription()
            self._pages.add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._pages.discard(sub)

    @property
    def listening(self) -> bool:
        return bool(self._pages)

    def publish(self, kind: str, data: Any) -> None:
        text = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        with self._lock:
            pages = list(self._pages)
        for sub in pages:
            try:
                sub.queue.put_nowait(text)
            except queue.Full:  # too slow: let it reconnect and start afresh
                self.unsubscribe(sub)
                self._stop(sub)

    def touch(self, device: str) -> None:
        with self._lock:
            self._dirty.add(device)

    def take_dirty(self) -> set[str]:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty

    def close(self) -> None:
        with self._lock:
            pages, self._pages = list(self._pages), set()
        for sub in pages:
            self._stop(sub)

    @staticmethod
    def _stop(sub: Subscription) -> None:
        while True:
            try:
                sub.queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    sub.queue.get_nowait()
