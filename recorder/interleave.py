"""Putting packets from several devices into one timestamp order.

Owns: merging per-device packet streams (each already in order) into a single stream in
``pts_us`` order, as a muxer and the segment policy need. Must not: drop packets.

A packet is released once every live stream has delivered something at or after its
time. A stream that has delivered nothing for ``stall_us`` no longer holds the others
back, so a dead microphone never stops the video.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator

from hw.media import EncodedPacket, Kind


class Interleaver:
    def __init__(self, kinds: Iterable[Kind], stall_us: int = 1_000_000) -> None:
        self._kinds = tuple(kinds)
        self._stall_us = stall_us
        self._heap: list[tuple[int, int, EncodedPacket]] = []
        self._seq = itertools.count()
        self._latest: dict[Kind, int] = {}
        self._arrived: dict[Kind, int] = {}
        self._first_arrival = 0

    def push(self, packet: EncodedPacket, now_us: int) -> None:
        if not self._arrived:
            self._first_arrival = now_us
        heapq.heappush(self._heap, (packet.pts_us, next(self._seq), packet))
        self._latest[packet.kind] = max(self._latest.get(packet.kind, packet.pts_us), packet.pts_us)
        self._arrived[packet.kind] = now_us

    def pop_ready(self, now_us: int) -> Iterator[EncodedPacket]:
        """Packets that no live stream can still precede, in time order."""
        if not self._heap:
            return
        never = [k for k in self._kinds if k not in self._latest]
        if never and now_us - self._first_arrival < self._stall_us:
            return  # give a late-starting device a moment before going on without it
        live = [k for k in self._latest if now_us - self._arrived[k] < self._stall_us]
        mark = min(self._latest[k] for k in live) if live else None
        while self._heap and (mark is None or self._heap[0][0] <= mark):
            yield heapq.heappop(self._heap)[2]

    def drain(self) -> Iterator[EncodedPacket]:
        while self._heap:
            yield heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)
