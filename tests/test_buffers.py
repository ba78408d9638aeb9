"""The pre-event ring and the interleaver, on synthetic packet streams."""

from __future__ import annotations

from hw.media import EncodedPacket
from recorder.interleave import Interleaver
from recorder.ring import PreEventRing

FRAME = 33_333


def video(i: int, gop: int = 30) -> EncodedPacket:
    return EncodedPacket("video", b"v" * 100, i * FRAME, FRAME, keyframe=i % gop == 0)


def audio(i: int) -> EncodedPacket:
    return EncodedPacket("audio", b"a" * 10, i * 64_000, 64_000, keyframe=True)


def test_ring_keeps_at_least_the_window_starting_at_a_keyframe() -> None:
    ring = PreEventRing(window_us=3_000_000)
    for i in range(10 * 30 + 7):
        ring.push(video(i))
    packets = ring.take()
    assert packets[0].keyframe
    span = packets[-1].end_us - packets[0].pts_us
    assert 3_000_000 <= span < 4_000_000 + FRAME
    assert ring.take() == [] and ring.bytes == 0


def test_ring_drops_what_precedes_the_first_keyframe_and_audio_when_told() -> None:
    ring = PreEventRing(window_us=30_000_000, include_audio=False)
    ring.push(EncodedPacket("video", b"p", 0, FRAME, keyframe=False))
    ring.push(audio(0))
    ring.push(video(30))
    ring.push(audio(20))
    assert [p.kind for p in ring.take()] == ["video"]


def test_ring_of_zero_keeps_the_gop_in_progress() -> None:
    ring = PreEventRing(window_us=0)
    for i in range(75):
        ring.push(video(i))
    packets = ring.take()
    assert packets[0].pts_us == 60 * FRAME and len(packets) == 15


def test_interleaver_orders_by_time_and_waits_for_the_slower_stream() -> None:
    il = Interleaver(["video", "audio"], stall_us=1_000_000)
    il.push(video(0), now_us=0)
    il.push(video(1), now_us=0)
    assert list(il.pop_ready(now_us=10)) == []  # audio has not started yet
    il.push(audio(0), now_us=20)
    out = list(il.pop_ready(now_us=20))
    assert [(p.kind, p.pts_us) for p in out] == [("video", 0), ("audio", 0)]
    il.push(audio(1), now_us=30)
    out = list(il.pop_ready(now_us=30))
    assert [(p.kind, p.pts_us) for p in out] == [("video", FRAME)]


def test_a_silent_stream_stops_holding_the_others_back() -> None:
    il = Interleaver(["video", "audio"], stall_us=1_000_000)
    il.push(audio(0), now_us=0)
    for i in range(60):
        il.push(video(i), now_us=500_000)
    assert len(list(il.pop_ready(now_us=500_000))) == 2  # video 0 and audio 0 only
    released = list(il.pop_ready(now_us=1_200_000))  # audio silent for > 1 s
    assert [p.pts_us for p in released] == [i * FRAME for i in range(1, 60)]
