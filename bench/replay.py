"""Playing pre-encoded packets to a sink at their timestamps, as the camera and the
microphone threads deliver them on a unit.

Owns: pacing (sleep until each packet's CLOCK_MONOTONIC time, then hand it over) and
stopping a replay. Packets already in the past are handed over at once, which is how a
benchmark fills the pre-event ring before the clock catches up. Must not: encode, or
do anything per packet but wait and call the sink.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator

from hw.clock import sleep_until_us
from hw.media import EncodedPacket, PacketSink


def restamp(packets: Iterable[EncodedPacket], offset_us: int) -> Iterator[EncodedPacket]:
    """The packets moved ``offset_us`` on the clock."""
    for p in packets:
        yield dataclasses.replace(p, pts_us=p.pts_us + offset_us)


def play(
    packets: Iterable[EncodedPacket],
    sink: PacketSink,
    until_us: int | None = None,
    before: Callable[[EncodedPacket], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Deliver each packet at its ``pts_us``; ``before(packet)`` runs first (a benchmark's
    hook to start a phase at a media time); ends at ``until_us`` or when ``stop`` is set."""
    for packet in packets:
        if (until_us is not None and packet.pts_us >= until_us) or (stop and stop.is_set()):
            return
        sleep_until_us(packet.pts_us)
        if before is not None:
            before(packet)
        sink(packet)


class Player:
    """``play`` on a thread of its own."""

    def __init__(self, packets: Iterable[EncodedPacket], sink: PacketSink) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=play,
            args=(packets, sink),
            kwargs={"stop": self._stop},
            name="replay",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
