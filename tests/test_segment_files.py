"""Segment files on their own: what the writer makes, what recovery keeps after a cut."""

from __future__ import annotations

import hashlib
import random
import shutil
import stat
from pathlib import Path

import pytest
from conftest import decode_errors, ffprobe, stream_spans
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence.parts import (
    StreamingPartHasher,
    WrittenSegment,
    hash_parts,
    iter_boxes,
    whole_fragment_prefix,
)
from hw.camera_sim import SimulatedCamera
from hw.media import AudioFormat, EncodedPacket, VideoFormat
from hw.microphone import tone_packets
from recorder.fmp4 import SegmentWriter
from recorder.recovery import recover
from store.index import Index

ORIGIN = 5_000_000_000  # a monotonic time, as on a unit that has been up for a while
RATE = 16000


@pytest.fixture(scope="module")
def clip() -> list[EncodedPacket]:
    """Six seconds of real H.264 + AAC, interleaved by time."""
    camera = SimulatedCamera(VideoFormat(320, 240, 30), bitrate=400_000)
    packets = camera.packets(ORIGIN, 180) + [
        p for p in tone_packets(RATE, ORIGIN, 6.0) if p.pts_us >= ORIGIN
    ]
    return sorted(packets, key=lambda p: p.pts_us)


def write_segment(path: Path, packets: list[EncodedPacket], origin: int = ORIGIN) -> WrittenSegment:
    writer = SegmentWriter(path, packets[0], AudioFormat(RATE, 1), origin, fragment_us=500_000)
    for p in packets:
        writer.write(p)
    return writer.seal()


def test_a_sealed_segment_is_read_only_playable_and_hashed_as_written(
    tmp_path: Path, clip: list[EncodedPacket]
) -> None:
    written = write_segment(tmp_path / "seg.mp4", clip)

    path = tmp_path / "seg.mp4"
    assert not (tmp_path / "seg.mp4.part").exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    streams = ffprobe(path, "-count_frames", "-show_streams")["streams"]
    assert sorted(s["codec_type"] for s in streams) == ["audio", "video"]
    assert decode_errors(path) == ""
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with open(path, "rb") as f:
        boxes = list(iter_boxes(f, path.stat().st_size))
        assert hash_parts(f, boxes, written.size) == written.parts
    assert [b.type for b in boxes[:2]] == ["ftyp", "moov"]
    assert len(written.parts) >= 12  # init + about two fragments a second
    spans = stream_spans(path)
    assert spans["video"].first_pts == 0 and spans["video"].frames == 180
    assert abs(spans["video"].end - 6.0) < 1e-3


def test_timestamps_continue_the_recording_timeline(
    tmp_path: Path, clip: list[EncodedPacket]
) -> None:
    """A later segment of a recording carries media time from where the earlier one ended."""
    second = [p for p in clip if p.pts_us >= ORIGIN + 3_000_000]
    written = write_segment(tmp_path / "later.mp4", second)
    spans = stream_spans(tmp_path / "later.mp4")
    assert written.media_start_us == 3_000_000
    assert abs(spans["video"].first_pts - 3.0) < 1e-6


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=200))
def test_hashing_while_writing_equals_hashing_the_file(
    tmp_path_factory: pytest.TempPathFactory, cuts: list[int]
) -> None:
    data = _reference_file(tmp_path_factory).read_bytes()
    hasher = StreamingPartHasher()
    pos = 0
    for n in [*cuts, len(data)]:
        hasher.update(data[pos : pos + n])
        pos = min(len(data), pos + n)
    path = _reference_file(tmp_path_factory)
    with open(path, "rb") as f:
        expected = hash_parts(f, list(iter_boxes(f, len(data))), len(data))
    assert hasher.finish() == expected
    assert hasher.file_sha256.hexdigest() == hashlib.sha256(data).hexdigest()


_REFERENCE: dict[str, Path] = {}


def _reference_file(factory: pytest.TempPathFactory) -> Path:
    if "f" not in _REFERENCE:
        camera = SimulatedCamera(VideoFormat(320, 240, 30), bitrate=400_000)
        path = factory.mktemp("ref") / "ref.mp4"
        write_segment(path, camera.packets(ORIGIN, 60))
        _REFERENCE["f"] = path
    return _REFERENCE["f"]


def test_a_power_cut_in_recoverys_own_rename_still_says_recovered(
    tmp_path: Path, clip: list[EncodedPacket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovery renames the cut file, then updates the index; power failing between the
    two must not turn the segment into a clean "sealed" one at the next start."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    data = (write_segment(tmp_path / "orig.mp4", clip).path).read_bytes()
    (evidence / "unit_seg.mp4.part").write_bytes(data[: len(data) * 2 // 3])
    index = Index.open(tmp_path / "index.sqlite")

    def power_fails(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for the power cut right after the rename

    monkeypatch.setattr(index, "close_segment", power_fails)
    with pytest.raises(KeyboardInterrupt):
        recover(evidence, index)
    monkeypatch.undo()
    assert (evidence / "unit_seg.mp4").exists() and index.segment("unit_seg.mp4")["state"] == "recovering"  # type: ignore[index]  # fmt: skip
    [again] = recover(evidence, index)
    assert again.state == "recovered" and again.torn_bytes > 0
    assert index.segment("unit_seg.mp4")["state"] == "recovered"  # type: ignore[index]
    index.close()


def test_recovery_keeps_every_whole_fragment_and_sets_the_torn_tail_aside(
    tmp_path: Path, clip: list[EncodedPacket]
) -> None:
    original = tmp_path / "orig.mp4"
    write_segment(original, clip)
    data = original.read_bytes()
    with open(original, "rb") as f:
        boxes = list(iter_boxes(f, len(data)))
    rng = random.Random(1)
    cuts = sorted(
        {b.offset for b in boxes}
        | {b.offset + 5 for b in boxes}
        | {rng.randrange(len(data)) for _ in range(10)}
        | {len(data)}
    )

    for cut in cuts:
        evidence = tmp_path / f"cut{cut}" / "evidence"
        evidence.mkdir(parents=True)
        part = evidence / "unit_seg.mp4.part"
        part.write_bytes(data[:cut])
        index = Index.open(evidence.parent / "index.sqlite")
        [result] = recover(evidence, index)

        keep = whole_fragment_prefix([b for b in boxes if b.end <= cut])
        final = evidence / "unit_seg.mp4"
        tail = evidence / "torn" / "unit_seg.mp4.tail"
        has_media = any(b.type == "moof" and b.end <= keep for b in boxes)
        if has_media:
            assert result.state == "recovered", cut
            assert final.read_bytes() == data[:keep]
            assert stat.S_IMODE(final.stat().st_mode) == 0o444
            assert decode_errors(final) == "", cut
            row = index.segment("unit_seg.mp4")
            assert row is not None and row["state"] == "recovered"
            assert row["sha256"] == hashlib.sha256(data[:keep]).hexdigest()
        else:
            assert result.state == "empty" and not final.exists()
        kept = final.read_bytes() if final.exists() else b""
        assert kept + (tail.read_bytes() if tail.exists() else b"") == data[:cut], "bytes lost"
        assert not part.exists()
        [event] = index.events("interrupted")
        assert event["detail"]["segment"] == "unit_seg.mp4"
        index.close()
        shutil.rmtree(evidence.parent)
