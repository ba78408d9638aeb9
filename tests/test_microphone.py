"""The microphone path through PortAudio: a device is found by name, its bytes arrive
exactly, and the encoder stamps them on the monotonic clock without drifting ahead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PROBE = """
import sys, time
from hw.microphone import PortAudioSource, AacMicrophone
src = PortAudioSource("testmic", 16000)
src.open()
data = src.read(4096)
src.close()
expected = open(sys.argv[1], "rb").read(len(data))
print("exact" if data == expected else "different", len(data))

packets = []
mic = AacMicrophone(PortAudioSource("testmic", 16000), bitrate=32000)
t0 = time.monotonic_ns() // 1000
mic.start(packets.append)
time.sleep(2.0)
mic.stop()
t1 = time.monotonic_ns() // 1000
span = (packets[-1].end_us - packets[0].pts_us) / 1e6
gaps = [b.pts_us - a.end_us for a, b in zip(packets, packets[1:])]
print("span", round(span, 2), "maxgap", max(abs(g) for g in gaps), "ahead", packets[-1].end_us - t1)
"""


def test_portaudio_delivers_the_device_bytes_and_is_paced_to_the_clock(alsa_home: Path) -> None:
    raw = next(alsa_home.glob("*.raw"))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(raw)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "HOME": str(alsa_home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "exact 8192"
    words = second.split()
    span, maxgap, ahead = float(words[1]), int(words[3]), int(words[5])
    # The file plugin answers instantly; the microphone still produces real time, not 10x.
    assert 1.5 <= span <= 2.3
    assert maxgap <= 1  # consecutive AAC frames touch (µs rounding only)
    assert ahead <= 100_000  # never stamped in the future
