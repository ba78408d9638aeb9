"""The unit's state: one owner of the truth about what the unit is doing.

Owns: judging, from what the recorder, the sealer, the clock and the disk report, which
mode the unit is in (boot, ready, recording, audio only, stopped) and which faults hold;
and noticing transitions, each of which the daemon journals as a signed event. It is a
pure function of its observation, so it is tested without hardware.

Must not: act. It does not start or stop anything and drives no LED; the daemon reads
its verdict and does that. "Recording" is claimed only while encoded media is actually
reaching the disk: a stalled encoder or a stuck write turns into a fault within
``STALL_US`` plus one daemon tick (well under 2 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from recorder.recorder import RecorderStatus
from signer.sealer import SealerStatus

STALL_US = 1_500_000
MIN_CLOCK_YEAR = 2024


class Mode(StrEnum):
    BOOT = "boot"
    READY = "ready"
    RECORDING = "recording"
    AUDIO_ONLY = "audio_only"
    STOPPED = "stopped"


class Fault(StrEnum):
    CLOCK_UNSET = "clock_unset"
    STORAGE_LOW = "storage_low"
    STORAGE_FULL = "storage_full"
    CAMERA_STALLED = "camera_stalled"
    MIC_STALLED = "mic_stalled"
    WRITE_STALLED = "write_stalled"
    WRITE_FAILED = "write_failed"
    KEY_UNAVAILABLE = "key_unavailable"


@dataclass(frozen=True)
class Observation:
    now_us: int
    recorder: RecorderStatus
    sealer: SealerStatus
    wall_year: int
    free_bytes: int
    low_bytes: int
    full_bytes: int
    microphone: bool
    started_us: int


@dataclass(frozen=True)
class Verdict:
    mode: Mode
    faults: frozenset[Fault] = field(default_factory=frozenset)

    @property
    def recording(self) -> bool:
        return self.mode in (Mode.RECORDING, Mode.AUDIO_ONLY)

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode.value, "faults": sorted(f.value for f in self.faults)}


def _age(now: int, then: int | None) -> int:
    return now - then if then is not None else 1 << 62


def judge(o: Observation) -> Verdict:
    """What the unit is doing, honestly, given one observation."""
    faults: set[Fault] = set()
    r = o.recorder
    video_age = _age(o.now_us, r.last_packet_us.get("video"))
    audio_age = _age(o.now_us, r.last_packet_us.get("audio"))
    booting = o.now_us - o.started_us < STALL_US
    if video_age > STALL_US and not booting:
        faults.add(Fault.CAMERA_STALLED)
    if o.microphone and audio_age > STALL_US and not booting:
        faults.add(Fault.MIC_STALLED)
    if o.wall_year < MIN_CLOCK_YEAR:
        faults.add(Fault.CLOCK_UNSET)
    if o.free_bytes < o.full_bytes:
        faults.add(Fault.STORAGE_FULL)
    elif o.free_bytes < o.low_bytes:
        faults.add(Fault.STORAGE_LOW)
    if o.sealer.state == "fault":
        faults.add(Fault.KEY_UNAVAILABLE)
    if r.state == "fault":
        faults.add(Fault.WRITE_FAILED)

    if r.state == "starting" or (booting and r.state == "ready" and not r.last_packet_us):
        mode = Mode.BOOT
    elif r.state == "stopped":
        mode = Mode.STOPPED
    elif r.state == "recording":
        last_progress = max(r.last_sync_us or 0, r.recording_since_us or 0)
        writing = _age(o.now_us, last_progress or None) <= STALL_US
        if not writing:
            faults.add(Fault.WRITE_STALLED)
            mode = Mode.READY  # not claimed: nothing is reaching the disk
        elif Fault.CAMERA_STALLED in faults:
            mode = Mode.AUDIO_ONLY if Fault.MIC_STALLED not in faults else Mode.READY
        else:
            mode = Mode.RECORDING
    else:
        mode = Mode.READY
    return Verdict(mode, frozenset(faults))


class StateMachine:
    """Keeps the last verdict and says when it changed."""

    def __init__(self) -> None:
        self.verdict = Verdict(Mode.BOOT)

    def update(self, verdict: Verdict) -> Verdict | None:
        """The previous verdict if this one differs from it, else None."""
        if verdict == self.verdict:
            return None
        previous, self.verdict = self.verdict, verdict
        return previous
