"""A real daemon recording in simulation: segments, pre-event, continuity, audio through
PortAudio, and a clean seal on SIGTERM."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import ROOT, TONE_HZ, decode_errors, ffprobe, stream_spans, write_config

FRAME_S = 1 / 30
AAC_FRAME_S = 1024 / 16000


def index_rows(data: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(data / "index.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]


def dominant_hz(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
        rate = stream.rate
    spectrum = np.abs(np.fft.rfft(samples[: rate * 4]))
    return float(np.argmax(spectrum[1:]) + 1) * rate / min(len(samples), rate * 4)


@pytest.mark.slow
def test_three_minutes_of_recording(tmp_path: Path, daemon_factory: Any) -> None:
    config = write_config(
        tmp_path / "unit.toml",
        microphone={"kind": "portaudio", "device": "testmic"},
        recorder={"pre_event_seconds": 30, "segment_seconds": 60},
    )
    unit = daemon_factory(config).start()
    unit.wait_for(
        lambda s: s["state"] == "ready" and s["ring_s"] >= 10, 60, "10 s of pre-event media"
    )
    pressed_at = time.time()
    unit.ctl("record", "start")
    unit.wait_for(lambda s: s["state"] == "recording", 10, "recording")
    time.sleep(180)
    assert unit.terminate() == 0, unit.output()

    segments = index_rows(unit.data, "segments")
    files = sorted((unit.data / "evidence").glob("*.mp4"))
    assert len(segments) >= 3 and [s["name"] for s in segments] == [f.name for f in files]
    assert not list((unit.data / "evidence").glob("*.part"))
    assert all(s["state"] == "sealed" for s in segments)

    previous: dict[str, Any] | None = None
    for row, path in zip(segments, files, strict=True):
        streams = ffprobe(path, "-count_frames", "-show_streams")["streams"]
        assert sorted(s["codec_type"] for s in streams) == ["audio", "video"], path.name
        assert all(int(s["nb_read_frames"]) > 0 for s in streams)
        assert decode_errors(path) == "", path.name
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        spans = stream_spans(path)
        assert abs(spans["video"].first_pts - row["media_start_us"] / 1e6) < 1e-3
        if previous is not None:  # no gap, no overlap: under one frame of each stream
            assert abs(spans["video"].first_pts - previous["video"].end) < FRAME_S, path.name
            assert abs(spans["audio"].first_pts - previous["audio"].end) < AAC_FRAME_S, path.name
        previous = spans
    total = sum(r["media_end_us"] - r["media_start_us"] for r in segments) / 1e6
    assert total >= 180 + 10

    # The first segment begins with what the camera saw before the button was pressed.
    first = segments[0]
    started = [e for e in index_rows(unit.data, "events") if e["kind"] == "recording_started"]
    assert len(started) == 1 and '"trigger": "ctl"' in started[0]["detail"]
    assert datetime.fromisoformat(first["wall_start"]).timestamp() <= pressed_at - 9
    assert 59.9 <= (first["media_end_us"] - first["media_start_us"]) / 1e6 <= 61

    # The sound in the files is the sound PortAudio captured from the ALSA device.
    assert abs(dominant_hz(files[1]) - TONE_HZ) < 5


def test_start_stop_restart_keeps_one_index_and_recovers_nothing(
    tmp_path: Path, daemon_factory: Any
) -> None:
    config = write_config(
        tmp_path / "unit.toml", recorder={"autostart": True, "segment_seconds": 5}
    )
    for _run in range(2):
        unit = daemon_factory(config).start()
        unit.wait_for(lambda s: s["segments_sealed"] >= 1, 30, "a sealed segment")
        assert unit.terminate() == 0, unit.output()
    segments = index_rows(unit.data, "segments")
    assert {s["recording_id"] for s in segments} == {1, 2}
    assert all(s["state"] == "sealed" for s in segments)
    assert not [e for e in index_rows(unit.data, "events") if e["kind"] == "interrupted"]


def test_a_second_daemon_on_the_same_data_is_refused(tmp_path: Path, daemon_factory: Any) -> None:
    config = write_config(tmp_path / "unit.toml")
    first = daemon_factory(config).start()
    first.wait_for(lambda s: s["state"] == "ready", 30, "ready")
    second = subprocess.run(
        [sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--data", str(first.data)],
        capture_output=True, text=True, env=first.env, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert second.returncode == 75 and "in use by another liuhen process" in second.stderr
    assert first.terminate() == 0
