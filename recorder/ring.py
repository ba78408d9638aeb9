"""The pre-event ring: the last N seconds of encoded media, held in memory.

Owns: keeping whole GOPs (each starting at a video keyframe) covering at least
``window_us`` of media, and handing them over when recording starts. It is the only
thing in liuhen that ever overwrites media. Must not: write files.

With a window of 0 the ring still keeps the GOP in progress, so a recording starts at the
keyframe at or before the press instead of waiting up to a GOP for the next one.
"""

from __future__ import annotations

from collections import deque

from hw.media import EncodedPacket


class PreEventRing:
    def __init__(self, window_us: int, include_audio: bool = True) -> None:
        self.window_us = window_us
        self.include_audio = include_audio
        self._gops: deque[list[EncodedPacket]] = deque()
        self.bytes = 0

    def push(self, packet: EncodedPacket) -> None:
        if packet.kind == "video" and packet.keyframe:
            self._gops.append([])
        if not self._gops:
            return  # nothing decodable before the first keyframe
        if packet.kind == "audio" and not self.include_audio:
            return
        self._gops[-1].append(packet)
        self.bytes += len(packet.data)
        self._trim(packet.end_us)

    def _trim(self, newest_end_us: int) -> None:
        while len(self._gops) > 1 and newest_end_us - self._gops[1][0].pts_us >= self.window_us:
            dropped = self._gops.popleft()
            self.bytes -= sum(len(p.data) for p in dropped)

    @property
    def seconds(self) -> float:
        if not self._gops:
            return 0.0
        last = self._gops[-1][-1]
        return (last.end_us - self._gops[0][0].pts_us) / 1e6

    def take(self) -> list[EncodedPacket]:
        """All held packets, oldest first, starting at a keyframe; the ring is left empty."""
        packets = [p for gop in self._gops for p in gop]
        self.clear()
        return packets

    def clear(self) -> None:
        self._gops.clear()
        self.bytes = 0
