"""Encoded media as it leaves the hardware: the one currency between hw and recorder.

Owns: the packet type, the stream formats, the sink signature and the device protocols.
Must not: know about files, segments or signing.

Every timestamp is CLOCK_MONOTONIC in microseconds (see hw.clock), so audio and video
from different devices share one clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal["video", "audio"]


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded video frame or audio frame.

    ``data`` is H.264 Annex B (with SPS/PPS in front of every keyframe) for video, raw AAC
    for audio. ``pts_us`` is the capture time of the first sample on CLOCK_MONOTONIC.
    """

    kind: Kind
    data: bytes
    pts_us: int
    duration_us: int
    keyframe: bool

    @property
    def end_us(self) -> int:
        return self.pts_us + self.duration_us


@dataclass(frozen=True, slots=True)
class VideoFormat:
    width: int
    height: int
    fps: int
    codec: str = "h264"


@dataclass(frozen=True, slots=True)
class AudioFormat:
    sample_rate: int
    channels: int
    codec: str = "aac"


PacketSink = Callable[[EncodedPacket], None]
"""Called from the device's own thread for every encoded packet, in capture order."""


class DeviceError(RuntimeError):
    """A device could not be opened or stopped working; the message names it."""


class Camera(Protocol):
    format: VideoFormat

    def start(self, sink: PacketSink) -> None: ...

    def stop(self) -> None: ...


class Microphone(Protocol):
    format: AudioFormat

    def start(self, sink: PacketSink) -> None: ...

    def stop(self) -> None: ...


class DeviceThread:
    """The thread a device produces packets on, and the flag that stops it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, target: Callable[..., None], *args: Any) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=target, args=args, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
