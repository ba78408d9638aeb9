"""The Pi camera adapter against picamera2's real Output class.

libcamera and pykms exist only on a Pi; as ../shared/SETUP.md allows, exactly those two
modules are stubbed so that picamera2.outputs imports. The adapter is then driven the way
picamera2's H264Encoder drives an Output — ``outputframe(bytes, keyframe, timestamp_us)``
with real H.264 — and what it hands on must make a valid segment file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from conftest import decode_errors, stream_spans

from hw.camera_sim import SimulatedCamera
from hw.clock import monotonic_us
from hw.media import EncodedPacket, VideoFormat
from recorder.fmp4 import SegmentWriter


@pytest.fixture
def picamera2_outputs(monkeypatch: pytest.MonkeyPatch) -> object:
    for name in ("libcamera", "pykms"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or MagicMock())
    import picamera2.outputs

    return picamera2.outputs


def test_encoded_frames_from_picamera2_become_a_valid_segment(
    tmp_path: Path, picamera2_outputs: object
) -> None:
    from hw.camera_pi import make_recorder_output

    received: list[EncodedPacket] = []
    output = make_recorder_output(received.append, fps=30)
    assert isinstance(output, picamera2_outputs.Output)  # type: ignore[attr-defined]

    # What the VideoCore encoder emits: Annex B bytes, a keyframe flag, a µs timestamp
    # on picamera2's own epoch (here: starting at 0, as picamera2's encoders do).
    frames = SimulatedCamera(VideoFormat(320, 240, 30), bitrate=400_000).packets(0, 90)
    before = monotonic_us()
    for f in frames:
        output.outputframe(f.data, f.keyframe, f.pts_us)
    output.outputframe(b"\x00", True, 0, None, True)  # picamera2 audio: ignored, ours is separate

    assert [p.data for p in received] == [f.data for f in frames]
    assert [p.keyframe for p in received] == [f.keyframe for f in frames]
    # Re-based once onto CLOCK_MONOTONIC, spacing untouched.
    assert before <= received[0].pts_us <= monotonic_us()
    assert [p.pts_us - received[0].pts_us for p in received] == [f.pts_us for f in frames]

    writer = SegmentWriter(tmp_path / "pi.mp4", received[0], None, received[0].pts_us, 500_000)
    for p in received:
        writer.write(p)
    writer.seal()
    assert decode_errors(tmp_path / "pi.mp4") == ""
    assert stream_spans(tmp_path / "pi.mp4")["video"].frames == 90


def test_the_pi_camera_refuses_clearly_where_there_is_no_pi() -> None:
    from hw.camera_pi import PiCamera
    from hw.media import DeviceError

    camera = PiCamera(VideoFormat(1280, 720, 30), bitrate=4_000_000)
    with pytest.raises(DeviceError, match=r"^Pi camera"):
        camera.start(lambda p: None)
