"""The benchmark input: 1920x1080 30 fps H.264 at 8 Mbit/s with AAC audio, as a camera
and a microphone would deliver it.

Owns: generating the input once with ffmpeg/libx264 (lavfi ``testsrc2`` + ``sine``, a
keyframe every 30 frames, no B-frames, like the Pi's hardware encoder) into
``bench/cache/``, and reading it back as ``hw.media.EncodedPacket`` objects (PyAV demux;
``h264_mp4toannexb`` gives Annex B with SPS/PPS in front of every keyframe, as the
camera hands it to the recorder). Must not: time anything.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.bitstream

from hw.media import AudioFormat, EncodedPacket, Kind, VideoFormat

CACHE = Path(__file__).resolve().parent / "cache"

WIDTH, HEIGHT, FPS = 1920, 1080, 30
VIDEO_BITRATE = 8_000_000
AUDIO_RATE, AUDIO_BITRATE = 48_000, 64_000
GOP = 30  # one keyframe a second: segments and the pre-event ring cut on keyframes
VIDEO = VideoFormat(WIDTH, HEIGHT, FPS)
AUDIO = AudioFormat(sample_rate=AUDIO_RATE, channels=1)


@dataclass(frozen=True)
class Input:
    path: Path
    seconds: int

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


def ffmpeg_command(seconds: int, out: Path) -> list[str]:
    """The ffmpeg command that makes ``seconds`` of input (quoted in PERFORMANCE.md)."""
    gop = str(GOP)
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={AUDIO_RATE}",
        "-t", str(seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-b:v", str(VIDEO_BITRATE), "-maxrate", str(VIDEO_BITRATE), "-bufsize", str(VIDEO_BITRATE),
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-bf", "0",
        "-c:a", "aac", "-b:a", str(AUDIO_BITRATE), "-ac", "1",
        str(out),
    ]  # fmt: skip


def ensure_input(seconds: int, log: bool = True) -> Input:
    """The cached input of ``seconds``, generated first if it is not there yet."""
    path = CACHE / f"input-{WIDTH}x{HEIGHT}p{FPS}-{VIDEO_BITRATE // 1_000_000}M-{seconds}s.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.mp4")
        if log:
            print(f"generating {seconds} s of 1080p30 input into {path} (cached) ...", flush=True)
        subprocess.run(ffmpeg_command(seconds, tmp), check=True)
        tmp.rename(path)
    return Input(path, seconds)


def iter_packets(path: Path, offset_us: int = 0) -> Iterator[EncodedPacket]:
    """The input's packets in file order, stamped ``offset_us`` + media time.

    Audio priming packets before media time 0 are dropped, as a microphone has none.
    """
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", video)
        for packet in container.demux(video, audio):
            if packet.pts is None:
                continue
            if packet.stream is video:
                yield from (_packet("video", p, offset_us) for p in annexb.filter(packet))
            elif packet.pts >= 0:
                yield _packet("audio", packet, offset_us)


def _packet(kind: Kind, packet: av.Packet, offset_us: int) -> EncodedPacket:
    assert packet.pts is not None and packet.time_base is not None
    tb = packet.time_base
    start = int(packet.pts * tb * 1_000_000)
    end = int((packet.pts + (packet.duration or 0)) * tb * 1_000_000)
    keyframe = kind == "audio" or packet.is_keyframe
    return EncodedPacket(kind, bytes(packet), offset_us + start, end - start, keyframe)


def load_packets(
    path: Path, offset_us: int = 0, seconds: float | None = None
) -> list[EncodedPacket]:
    """All packets (or the first ``seconds``) in memory, as a camera would have them."""
    limit = None if seconds is None else offset_us + int(seconds * 1_000_000)
    out = []
    for packet in iter_packets(path, offset_us):
        if limit is not None and packet.pts_us >= limit:
            break
        out.append(packet)
    return out
