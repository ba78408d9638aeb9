"""Raspberry Pi camera: picamera2 with the hardware H.264 encoder.

Owns: configuring picamera2 and handing each encoded frame to the sink. Must not: buffer,
segment or write files. It is deliberately thin: everything below the sink is the same
code that runs in simulation.

picamera2's encoders deliver frames to an ``Output`` object through
``outputframe(frame, keyframe, timestamp, packet, audio)``; ``RecorderOutput`` is that
object. Its timestamps (microseconds) are re-based onto CLOCK_MONOTONIC once, at the first
frame, so they share a clock with the microphone whatever epoch picamera2 uses.
"""

from __future__ import annotations

from typing import Any

from hw.clock import monotonic_us
from hw.media import DeviceError, EncodedPacket, PacketSink, VideoFormat


def _output_base() -> type:
    try:
        from picamera2.outputs import Output
    except Exception as exc:  # ImportError off the Pi; libcamera errors on a broken Pi
        raise DeviceError(
            "Pi camera: picamera2 is not importable here "
            f"({exc}); on Raspberry Pi OS install python3-picamera2 and create the venv "
            "with --system-site-packages"
        ) from exc
    return Output


def make_recorder_output(sink: PacketSink, fps: int) -> Any:
    """A picamera2 Output that forwards every encoded frame to ``sink``."""

    class RecorderOutput(_output_base()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._offset_us: int | None = None
            self._frame_us = round(1_000_000 / fps)

        def outputframe(
            self,
            frame: bytes,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio:
                return  # audio comes from our own microphone path
            ts = monotonic_us() if timestamp is None else int(timestamp)
            if self._offset_us is None:
                self._offset_us = monotonic_us() - ts
            sink(
                EncodedPacket(
                    kind="video",
                    data=bytes(frame),
                    pts_us=ts + self._offset_us,
                    duration_us=self._frame_us,
                    keyframe=bool(keyframe),
                )
            )

    return RecorderOutput()


class PiCamera:
    """The Pi camera module, encoding on the VideoCore with SPS/PPS before each keyframe."""

    def __init__(self, fmt: VideoFormat, *, bitrate: int, gop_seconds: float = 1.0) -> None:
        self.format = fmt
        self._bitrate = bitrate
        self._iperiod = max(1, round(fmt.fps * gop_seconds))
        self._cam: Any = None
        self.overlay = ""

    def set_overlay(self, text: str) -> None:
        """Text burnt into the frames with the time (drawn by OpenCV if installed)."""
        self.overlay = text

    def _draw_overlay(self, request: Any) -> None:
        try:
            import time

            import cv2
            from picamera2 import MappedArray
        except ImportError:
            return
        line = time.strftime("%Y-%m-%d %H:%M:%S") + "  " + self.overlay
        with MappedArray(request, "main") as m:
            cv2.putText(m.array, line, (16, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)

    def start(self, sink: PacketSink) -> None:
        try:
            from picamera2 import Picamera2
            from picamera2.encoders import H264Encoder
        except Exception as exc:
            raise DeviceError(f"Pi camera: picamera2 unavailable ({exc})") from exc
        try:
            cam = Picamera2()
            config = cam.create_video_configuration(
                main={"size": (self.format.width, self.format.height)},
                controls={"FrameRate": self.format.fps},
            )
            cam.configure(config)
            cam.pre_callback = self._draw_overlay
            encoder = H264Encoder(bitrate=self._bitrate, repeat=True, iperiod=self._iperiod)
            cam.start_recording(encoder, make_recorder_output(sink, self.format.fps))
        except Exception as exc:
            raise DeviceError(f"Pi camera could not start: {exc}") from exc
        self._cam = cam

    def stop(self) -> None:
        if self._cam is not None:
            self._cam.stop_recording()
            self._cam.close()
            self._cam = None
