"""The unit's verdict on what it is doing, from what its parts report (pure logic)."""

from __future__ import annotations

from dataclasses import replace

from firmware_py.state import STALL_US, Fault, Mode, Observation, StateMachine, judge
from recorder.recorder import RecorderStatus
from signer.sealer import SealerStatus

NOW = 100_000_000
GB = 1 << 30


def observe(**changes: object) -> Observation:
    fresh = {"video": NOW - 30_000, "audio": NOW - 60_000}
    base = Observation(
        now_us=NOW,
        recorder=RecorderStatus(state="ready", last_packet_us=fresh),
        sealer=SealerStatus(state="ok"),
        wall_year=2026,
        free_bytes=100 * GB,
        low_bytes=2 * GB,
        full_bytes=GB // 4,
        microphone=True,
        started_us=NOW - 60_000_000,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def recording(**changes: object) -> RecorderStatus:
    base = RecorderStatus(
        state="recording",
        last_packet_us={"video": NOW - 30_000, "audio": NOW - 60_000},
        last_sync_us=NOW - 400_000,
        recording_since_us=NOW - 10_000_000,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_ready_and_recording_when_all_is_well() -> None:
    assert judge(observe()).mode == Mode.READY and not judge(observe()).faults
    verdict = judge(observe(recorder=recording()))
    assert verdict.mode == Mode.RECORDING and verdict.recording and not verdict.faults


def test_recording_is_not_claimed_when_nothing_reaches_the_disk() -> None:
    stuck = recording(last_sync_us=NOW - STALL_US - 1)
    verdict = judge(observe(recorder=stuck))
    assert verdict.mode != Mode.RECORDING and Fault.WRITE_STALLED in verdict.faults
    # ... but a recording that began a moment ago has not had time to write yet
    just_started = recording(last_sync_us=None, recording_since_us=NOW - 300_000)
    assert judge(observe(recorder=just_started)).mode == Mode.RECORDING


def test_a_stalled_camera_with_live_audio_is_audio_only() -> None:
    frozen = recording(last_packet_us={"video": NOW - 2_000_000, "audio": NOW - 50_000})
    verdict = judge(observe(recorder=frozen))
    assert verdict.mode == Mode.AUDIO_ONLY and Fault.CAMERA_STALLED in verdict.faults
    both = recording(last_packet_us={"video": NOW - 2_000_000, "audio": NOW - 2_000_000})
    assert not judge(observe(recorder=both)).recording


def test_each_fault_is_named() -> None:
    assert Fault.CLOCK_UNSET in judge(observe(wall_year=1970)).faults
    assert Fault.STORAGE_LOW in judge(observe(free_bytes=GB)).faults
    assert judge(observe(free_bytes=GB // 8)).faults >= {Fault.STORAGE_FULL}
    assert Fault.STORAGE_LOW not in judge(observe(free_bytes=GB // 8)).faults
    assert (
        Fault.KEY_UNAVAILABLE
        in judge(observe(sealer=SealerStatus(state="fault", error="x"))).faults
    )
    assert (
        Fault.MIC_STALLED
        in judge(
            observe(recorder=RecorderStatus(state="ready", last_packet_us={"video": NOW}))
        ).faults
    )
    assert (
        Fault.MIC_STALLED
        not in judge(
            observe(
                microphone=False,
                recorder=RecorderStatus(state="ready", last_packet_us={"video": NOW}),
            )
        ).faults
    )
    assert (
        Fault.WRITE_FAILED
        in judge(
            observe(
                recorder=RecorderStatus(state="fault", last_packet_us={"video": NOW, "audio": NOW})
            )
        ).faults
    )


def test_boot_grace_and_transitions() -> None:
    booting = observe(started_us=NOW - 100_000, recorder=RecorderStatus(state="ready"))
    assert judge(booting).mode == Mode.BOOT and not judge(booting).faults
    machine = StateMachine()
    assert machine.update(judge(booting)) is None  # starts in BOOT
    ready = judge(observe())
    assert machine.update(ready) is not None
    assert machine.update(ready) is None
    assert machine.update(judge(observe(recorder=recording()))) == ready
