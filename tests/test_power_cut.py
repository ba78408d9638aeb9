"""SIGKILL at random moments while recording is a power cut. After a restart every
earlier segment is intact, the interrupted one is kept and plays up to its last whole
fragment, and no more than a second of media is lost."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import ROOT, decode_errors, ffprobe, write_config

KILLS = 4
MAX_LOSS_S = 1.0


def rows(data: Path, sql: str) -> list[dict[str, Any]]:
    with sqlite3.connect(data / "index.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def test_sigkill_at_random_moments_loses_at_most_a_second(
    tmp_path: Path, daemon_factory: Any
) -> None:
    config = write_config(
        tmp_path / "unit.toml",
        microphone={"kind": "portaudio", "device": "testmic"},
        recorder={"autostart": True, "segment_seconds": 6, "fragment_seconds": 0.5},
    )
    rng = random.Random(20261121)
    kills: list[int] = []
    for n in range(KILLS):
        unit = daemon_factory(config).start()
        unit.wait_for(lambda s: s["state"] == "recording", 30, "recording")
        time.sleep(rng.uniform(2.0, 9.0))  # sometimes in the first segment, sometimes later
        kills.append(unit.kill())
        print(f"kill {n + 1}/{KILLS} at {kills[-1]} µs")
    unit = daemon_factory(config).start()  # the restart after the last cut recovers it
    unit.wait_for(lambda s: s["state"] == "recording", 30, "recording after the last cut")
    assert unit.terminate() == 0, unit.output()

    segments = rows(unit.data, "SELECT * FROM segments ORDER BY id")
    recovered = [s for s in segments if s["state"] == "recovered"]
    assert len(recovered) == KILLS, [(s["name"], s["state"]) for s in segments]
    assert {s["state"] for s in segments} == {"sealed", "recovered"}
    assert not list((unit.data / "evidence").glob("*.part"))
    for s in segments:
        path = unit.data / "evidence" / s["name"]
        assert s["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), s["name"]
        streams = ffprobe(path, "-count_frames", "-show_streams")["streams"]
        assert sorted(x["codec_type"] for x in streams) == ["audio", "video"], s["name"]
        assert decode_errors(path) == "", s["name"]

    # Each cut: the recovered segment reaches to within a second of the moment of the kill.
    for kill_us, seg in zip(kills, recovered, strict=True):
        last_media_us = seg["mono_start_us"] + seg["media_end_us"] - seg["media_start_us"]
        loss_s = (kill_us - last_media_us) / 1e6
        print(f"{seg['name']}: lost {loss_s:.3f} s")
        assert 0 <= loss_s <= MAX_LOSS_S, f"{seg['name']} lost {loss_s:.3f} s"

    # Every interruption is on record, and each interrupted recording says so.
    interrupted = rows(unit.data, "SELECT * FROM events WHERE kind = 'interrupted'")
    assert sorted(e["detail"] for e in interrupted) == sorted(
        e["detail"] for e in interrupted if '"state": "recovered"' in e["detail"]
    )
    assert len(interrupted) == KILLS
    stops = rows(unit.data, "SELECT stop_reason FROM recordings ORDER BY id")
    assert [r["stop_reason"] for r in stops] == ["interrupted"] * KILLS + ["shutdown"]

    # And the whole is still signed evidence: one unbroken chain, every file covered.
    done = subprocess.run(
        [sys.executable, "-m", "firmware_py.cli", "verify", str(unit.data), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0, [f for f in report["findings"] if f["severity"] == "error"]
    assert sum(f["code"] == "recovered" for f in report["findings"]) == KILLS
