"""The daemon: check, recover, wire the rooms together, run until told to stop.

Owns: the order of start-up (config and devices are checked before the data directory is
touched; interrupted segments are recovered before anything new is written), the data
directory lock, the main loop — the only thread that writes the journal: recorder
events, people's actions (panel, card reader, control socket), state transitions — and a
clean shutdown on SIGTERM/SIGINT (seal what there is, exit 0). SIGKILL is a power cut,
and the next start recovers from it.

Must not: do the recorder's, the devices' or the index's work itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from evidence.ledger import Entry
from evidence.records import EncryptionError, Recipient
from firmware_py.actions import NoFeedback, Reply, UnitActions
from firmware_py.clockwatch import ClockWatch
from firmware_py.config import Config, ConfigError
from firmware_py.control import ControlServer
from firmware_py.devices import (
    build_camera,
    build_card_reader,
    build_microphone,
    build_panel,
    check_devices,
    load_roster,
)
from firmware_py.sdnotify import Notifier, ServiceReport
from firmware_py.session import Session
from firmware_py.state import Fault, Mode, Observation, StateMachine, Verdict, judge
from hw.clock import ClockReading, monotonic_us, utc_iso
from recorder.recorder import Recorder, RecorderEvent, RecorderSettings
from recorder.recovery import recover
from signer.sealer import Sealer
from store.index import Index, IndexUnavailable
from uplink.client import Uplink, UplinkSettings
from uplink.upload import Uploader

if TYPE_CHECKING:
    from firmware_py.view import StatusView

log = logging.getLogger(__name__)

# sysexits.h, so systemd and scripts can tell a bad config from a missing device.
EX_OK = 0
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_CONFIG = 78


class DataDirError(RuntimeError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def evidence(self) -> Path:
        return self.root / "evidence"

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / "liuhen.lock"

    @property
    def control(self) -> Path:
        return self.root / "control.sock"

    def prepare(self) -> int:
        """Create the layout and take the lock; returns the lock's file descriptor."""
        try:
            self.evidence.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise DataDirError(f"data directory {self.root}: {exc.strerror}", EX_CANTCREAT) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirError(
                f"data directory {self.root} is in use by another liuhen process", EX_TEMPFAIL
            ) from None
        return fd


class Daemon:
    def __init__(
        self, config: Config, data_dir: Path, view: StatusView, pin_factory: Any = None
    ) -> None:
        self.config = config
        self.data = DataDir(data_dir)
        self.view = view
        self._pin_factory = pin_factory
        self._events: queue.SimpleQueue[RecorderEvent] = queue.SimpleQueue()
        self._actions: queue.SimpleQueue[tuple[Callable[[], Reply], _Reply | None]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._recorder: Recorder | None = None
        self._recipient: Recipient | None = None
        self._sealer: Sealer | None = None
        self._index: Index | None = None
        self.session = Session()
        self.state = StateMachine()
        self.panel: Any = None
        self.actions: UnitActions | None = None
        self.camera: Any = None
        self.uplink: Uplink | None = None
        self.uploader: Uploader | None = None
        self._started_us = monotonic_us()
        self._last_reminder_us = 0
        self._on_duty: dict[str, dict[str, Any]] = {}  # officers during the current segment
        self.systemd = ServiceReport(  # READY/WATCHDOG/STATUS/STOPPING
            Notifier.from_env(), require_clock=config.unit.require_set_clock
        )
        self.clock_watch = ClockWatch()  # every step of the wall clock becomes an event
        self._held: list[tuple[str, int, str, dict[str, Any]]] = []  # refused by the index
        self._held_error: str | None = None

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self._stop.set()

    # --- the journal (main thread only) -----------------------------------------------
    def journal(self, kind: str, detail: dict[str, Any]) -> None:
        """Record an event in the index for the sealer, with who and which case."""
        assert self._index is not None
        clock = ClockReading.now()
        event = RecorderEvent(kind, clock.monotonic_us, utc_iso(clock.wall_for(clock.monotonic_us)),
                              {**detail, **self.session.context()})  # fmt: skip
        self._add_event(event.kind, event.mono_us, event.at, event.detail)
        self.view.event(event)
        if self._sealer is not None:
            self._sealer.notify()

    def _record_event(self, event: RecorderEvent) -> None:
        assert self._index is not None
        if event.kind == "segment_sealed":
            # A segment carries every officer on duty at any time while it was recorded.
            officers = list(self._on_duty.values())
            current = self.session.officer
            self._on_duty = {current.id: current.to_json()} if current else {}
            detail: dict[str, Any] = {"name": event.detail["name"], "officers": officers}
            if self.session.case is not None:
                detail["case"] = self.session.case
        else:
            detail = {**event.detail, **self.session.context()}
        self._add_event(event.kind, event.mono_us, event.at, detail)  # the sealer's journal
        self.view.event(event)
        if self._sealer is not None:
            self._sealer.notify()

    def _add_event(self, kind: str, mono_us: int, at: str, detail: dict[str, Any]) -> None:
        """Into the index, in order. While the index refuses writes (a full or read-only
        disk) events are held here and written, still in order, once it takes them."""
        self._held.append((kind, mono_us, at, detail))
        self._write_held()

    def _write_held(self) -> None:
        assert self._index is not None
        while self._held:
            try:
                self._index.add_event(*self._held[0])
            except sqlite3.Error as exc:
                if self._held_error is None:
                    log.error("the index refuses events (%s): holding them until it does", exc)
                self._held_error = str(exc)
                return
            self._held.pop(0)
        if self._held_error is not None:
            log.info("the index takes events again: held events journaled")
            self._held_error = None

    # --- actions from other threads ---------------------------------------------------
    def submit(self, action: Callable[[], Reply], wait: float | None = 10.0) -> Reply:
        """Run ``action`` on the main thread; wait for its reply unless ``wait`` is None."""
        if wait is None:
            self._actions.put((action, None))
            return {"ok": True}
        slot = _Reply()
        self._actions.put((action, slot))
        if not slot.done.wait(wait):
            return {"ok": False, "error": "the daemon did not answer in time"}
        return slot.value

    def run(self, install_signals: bool = True) -> int:
        check_devices(self.config)  # raises DeviceError before the data dir is touched
        if self.config.uplink is not None:
            check_uplink(self.config)  # unreadable TLS files: a configuration error
        roster = load_roster(self.config)  # likewise: a bad roster is refused up front
        self._recipient = load_recipient(self.config)  # and an unreadable agency key
        if self._recipient is not None:
            keep_memory_private()
        lock_fd = self.data.prepare()
        try:
            return self._run(roster, install_signals)
        finally:
            os.close(lock_fd)

    def _run(self, roster: Any, install_signals: bool) -> int:
        cfg = self.config
        index = self._index = self._open_and_recover()
        uplink = self.uplink = self._make_uplink()
        uploader = self.uploader = self._make_uploader()
        sealer = self._sealer = Sealer(
            self.data.evidence,
            self.data.index,
            cfg.unit.device_id,
            cfg.keys.spec(),
            Path(cfg.keys.certificate) if cfg.keys.certificate else None,
            cfg.signer.c2pa,
            on_entry=self._entry_made,
            replay_after=uplink.last_queued_seq if uplink else (lambda: None),
        )
        sealer.run_in_thread()
        if uplink is not None:
            uplink.start()
        if uploader is not None:
            uploader.start()
        camera = self.camera = build_camera(cfg.camera, label=cfg.unit.device_id)
        microphone = build_microphone(cfg.microphone)
        settings = RecorderSettings(
            device_id=cfg.unit.device_id,
            segment_us=round(cfg.recorder.segment_seconds * 1e6),
            fragment_us=round(cfg.recorder.fragment_seconds * 1e6),
            pre_event_us=round(cfg.recorder.pre_event_seconds * 1e6),
            pre_event_audio=cfg.recorder.pre_event_audio,
            encrypt_for=self._recipient,
        )
        recorder = self._recorder = Recorder(
            self.data.evidence,
            self.data.index,
            settings,
            camera.format,
            microphone.format if microphone else None,
            self._events.put,
        )
        self.panel = build_panel(cfg.panel, self._pin_factory)
        actions = self.actions = UnitActions(
            recorder, self.session, roster, self.journal, self.panel or NoFeedback(),
            on_session_change=self._session_changed, profile=cfg.unit.profile,
            cannot_record=self._cannot_record,
        )  # fmt: skip
        if self.panel is not None:
            self._wire_panel(actions)
        reader = build_card_reader(cfg)
        if reader is not None:
            reader.start(
                lambda card: self.submit(lambda: actions.card(card, "reader"), wait=None),
                lambda why: self.submit(lambda: self._bad_read(why), wait=None),
            )
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.request_stop)
        recorder.run_in_thread()
        control = ControlServer(self.data.control, self.handle_request)
        control.start()
        self._session_changed()
        camera.start(recorder.sink)
        if microphone:
            microphone.start(recorder.sink)
        log.info("liuhen %s running, data in %s", cfg.unit.device_id, self.data.root)
        self.journal("unit_started", {"profile": cfg.unit.profile})
        if cfg.recorder.autostart:
            actions.record_start("autostart")
        for name in sorted(self.panel.active_triggers() if self.panel is not None else ()):
            actions.record_start(f"trigger:{name}")  # already active at start: no edge will come
        try:
            while not self._stop.is_set():
                self._tick(timeout=0.2)
        finally:
            log.info("stopping: sealing what is being written")
            self.systemd.stopping()
            control.close()
            recorder.close()
            camera.stop()
            if microphone:
                microphone.stop()
            self._tick(timeout=0)
            self.journal("unit_stopped", {})
            if self._held:
                log.error("%d events were never journaled (%s): %s", len(self._held),
                          self._held_error, ", ".join(e[0] for e in self._held))  # fmt: skip
            sealer.close()
            if uplink is not None:
                uplink.close()
            if uploader is not None:
                uploader.close()
            self.view.status(recorder.status(), sealer.status())
            if reader is not None:
                reader.stop()
            if self.panel is not None:
                self.panel.close()
            self.view.close()
            index.close()
        return EX_OK

    def _open_and_recover(self) -> Index:
        """The index, with every interrupted segment recovered. A damaged index (garbage
        pages, not a database) is IndexUnavailable naming it, not a traceback."""
        try:
            index = Index.open(self.data.index)
            for r in recover(self.data.evidence, index):
                self.view.event(
                    RecorderEvent(
                        "interrupted",
                        monotonic_us(),
                        utc_iso(ClockReading.now().wall_for(monotonic_us())),
                        asdict(r),
                    )
                )
            now = ClockReading.now()  # segments sealed just before a power cut, not journaled
            index.journal_unjournaled_segments(
                now.monotonic_us, utc_iso(now.wall_for(now.monotonic_us))
            )
        except (sqlite3.DatabaseError, IndexUnavailable) as exc:
            cause = exc.__cause__ if isinstance(exc, IndexUnavailable) else exc
            if isinstance(cause, sqlite3.OperationalError):  # a full or read-only disk: retry
                free = shutil.disk_usage(self.data.root).free / 2**20
                raise DataDirError(
                    f"{self.data.index} cannot be used ({cause}); {free:.1f} MB free", EX_CANTCREAT
                ) from None
            if isinstance(exc, IndexUnavailable) and cause is None:
                raise  # not damage (e.g. a newer schema): rebuilding is no remedy
            what = (
                str(exc)
                if isinstance(exc, IndexUnavailable)
                else f"{self.data.index} is damaged ({exc})"
            )
            raise IndexUnavailable(
                f"{what}; the evidence files and ledger.jsonl do not depend on it (liuhen "
                f"verify checks them): `liuhen index rebuild --data {self.data.root}` sets it "
                "aside and rebuilds it from them"
            ) from None
        return index

    def _cannot_record(self) -> str | None:
        """Below [storage] stop_free_mb a recording would eat the reserve: refuse it."""
        free, stop = shutil.disk_usage(self.data.root).free, self.config.storage.stop_free_mb
        if free < stop << 20:
            return f"storage full: {free / 2**20:.1f} MB free, under [storage] stop_free_mb={stop}"
        return None

    def _entry_made(self, entry: Entry) -> None:
        """Every ledger entry, in order, as the sealer makes it (the sealer's thread)."""
        if self.uplink is not None:
            self.uplink.publish_entry(entry.seq, entry.to_line())
        if self.uploader is not None and entry.kind == "segment":
            self.uploader.notify()

    def _make_uploader(self) -> Uploader | None:
        cfg, up = self.config, self.config.upload
        if up is None:
            return None
        tls = cfg.uplink
        return Uploader(
            self.data.evidence, self.data.index, up.url,
            up.ca_file or (tls.ca_file if tls else None),
            up.cert_file or (tls.cert_file if tls else None),
            up.key_file or (tls.key_file if tls else None),
            cfg.unit.device_id, self._uplink_event,
            chunk_bytes=up.chunk_bytes, poll_s=up.poll_seconds, retry_max_s=up.retry_max_seconds,
        )  # fmt: skip

    def _make_uplink(self) -> Uplink | None:
        cfg = self.config
        if cfg.uplink is None:
            return None
        return Uplink(
            uplink_settings(cfg),
            self.data.root / "outbox.sqlite",
            status=self.status,
            on_command=self._central_command,
            on_event=self._uplink_event,
        )

    def _uplink_event(self, kind: str, detail: dict[str, Any]) -> None:
        """Something the uplink wants on record (a refused command): journal it."""
        self.submit(lambda: self._journaled(kind, detail), wait=None)

    def _journaled(self, kind: str, detail: dict[str, Any]) -> Reply:
        self.journal(kind, detail)
        return {"ok": True}

    def _central_command(self, command: dict[str, Any]) -> Reply:
        """An authenticated, fresh command from the centre (uplink's thread)."""
        actions = self.actions
        assert actions is not None
        name, args = command.get("cmd"), command.get("args") or {}
        source = f"central:{command.get('issuer', '?')}"
        if name == "record.start":
            return self.submit(lambda: actions.record_start(source))
        if name == "record.stop":
            return self.submit(lambda: actions.record_stop(source))
        if name == "mark":
            text = args.get("text") if isinstance(args.get("text"), str) else None
            return self.submit(lambda: actions.mark(source, text))
        if name == "config.get":
            return {"ok": True, "config": self.config.model_dump(mode="json")}
        return {"ok": False, "error": f"command {name!r} is not one this unit carries out"}

    def _wire_panel(self, actions: UnitActions) -> None:
        panel = self.panel
        panel.on_record_press = lambda: self.submit(actions.record_press, wait=None)
        panel.on_record_hold = lambda: self.submit(
            lambda: actions.record_stop("button-hold"), wait=None
        )
        panel.on_mark = lambda: self.submit(lambda: actions.mark("button"), wait=None)
        panel.on_credential = lambda: self.submit(
            lambda: actions.credential_shown("button"), wait=None
        )
        panel.on_trigger = lambda name: self.submit(
            lambda: actions.record_start(f"trigger:{name}"), wait=None
        )

    def _bad_read(self, why: str) -> Reply:
        """A card read cut short or garbled: flash the error, keep a note of it."""
        if self.panel is not None:
            self.panel.flash_error()
        self.journal("card_read_failed", {"reason": why[:200]})
        return {"ok": False, "error": why}

    def _session_changed(self) -> None:
        if self.session.officer is not None:
            self._on_duty[self.session.officer.id] = self.session.officer.to_json()
        if (
            self.config.osd.enabled
            and self.camera is not None
            and hasattr(self.camera, "set_overlay")
        ):
            self.camera.set_overlay(self.session.overlay(self.config.unit.device_id))

    # --- the main loop ----------------------------------------------------------------
    def _tick(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._record_event(self._events.get_nowait())
                continue
            except queue.Empty:
                pass
            try:
                action, slot = self._actions.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            try:
                reply = action()
            except Exception as exc:  # a bad request must never take the unit down
                log.exception("action failed")
                reply = {"ok": False, "error": f"internal error: {exc}"}
            if slot is not None:
                slot.set(reply)
        self._assess()

    def _assess(self) -> None:
        assert self._recorder is not None and self._sealer is not None
        self._write_held()
        if (step := self.clock_watch.step()) is not None:
            self.journal("clock_stepped", step)
        rec, seal = self._recorder.status(), self._sealer.status()
        usage = shutil.disk_usage(self.data.root)
        now = monotonic_us()
        verdict = judge(Observation(
            now_us=now, recorder=rec, sealer=seal, wall_year=time.gmtime().tm_year,
            free_bytes=usage.free, low_bytes=self.config.storage.low_free_mb << 20,
            full_bytes=self.config.storage.stop_free_mb << 20,
            microphone=self.config.microphone.kind != "none", started_us=self._started_us,
        ))  # fmt: skip
        previous = self.state.update(verdict)
        if previous is not None:
            self.journal("state_changed", {"from": previous.to_json(), "to": verdict.to_json(),
                                           "sealer_error": seal.error, "recorder_fault": rec.fault})  # fmt: skip
            if self.panel is not None:
                self.panel.show(indication_for(verdict))
        assert self.actions is not None
        if Fault.STORAGE_FULL in verdict.faults and rec.state == "recording":
            self.actions.stop_for_storage()
        elif self.actions.owed and usage.free >= self.config.storage.low_free_mb << 20:
            self.actions.resume_owed()  # above the warning line, not just the stop line
        reminder = self.config.panel.reminder_seconds
        if (
            verdict.recording
            and reminder
            and self.panel is not None
            and now - self._last_reminder_us > reminder * 1e6
        ):
            if self._last_reminder_us:
                self.panel.buzz("reminder")
            self._last_reminder_us = now
        elif not verdict.recording:
            self._last_reminder_us = 0
        unit_line = self.describe_unit(verdict)
        self.systemd.update(verdict, unit_line.splitlines()[0])
        self.view.status(rec, seal, unit_line)

    def describe_unit(self, verdict: Verdict) -> str:
        """One line for people: the verdict, and what the LEDs say if there are LEDs."""
        faults = ", ".join(sorted(f.value for f in verdict.faults))
        line = verdict.mode.value + (f" — faults: {faults}" if faults else "")
        if self.panel is not None:
            from hw.panel import MEANING

            indication = indication_for(verdict)
            line += f"\nLEDs: {indication.value} ({MEANING[indication]})"
        return line

    # --- control socket (its own threads) ---------------------------------------------
    def status(self) -> dict[str, Any]:
        assert self._recorder is not None
        usage = shutil.disk_usage(self.data.root)
        return {
            "device_id": self.config.unit.device_id,
            "profile": self.config.unit.profile,
            "unit": self.state.verdict.to_json(),
            "officer": self.session.officer.to_json() if self.session.officer else None,
            "case": self.session.case,
            **asdict(self._recorder.status()),
            "sealer": asdict(self._sealer.status()) if self._sealer else None,
            "upload": self.uploader.status() if self.uploader is not None else None,
            "storage_free_bytes": usage.free,
            "storage_total_bytes": usage.total,
            "encrypting": self._recipient is not None,
        }

    def handle_request(self, request: dict[str, Any]) -> Reply:
        """A request from the control socket (see firmware_py.control)."""
        actions = self.actions
        assert actions is not None
        cmd = request["cmd"]
        text = request.get("text")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "record" and request.get("action") in ("start", "stop"):
            act = actions.record_start if request["action"] == "start" else actions.record_stop
            return self.submit(lambda: act(str(request.get("source", "ctl"))))
        if cmd == "mark":
            return self.submit(lambda: actions.mark("ctl", text if isinstance(text, str) else None))
        if cmd == "credential":
            return self.submit(lambda: actions.credential_shown("ctl"))
        if cmd == "login" and isinstance(request.get("card"), str):
            return self.submit(lambda: actions.card(request["card"], "ctl"))
        if cmd == "note" and isinstance(text, str):
            return self.submit(lambda: actions.note(text, "ctl"))
        if cmd == "case" and (request.get("case") is None or isinstance(request.get("case"), str)):
            return self.submit(lambda: actions.set_case(request.get("case"), "ctl"))
        return {
            "ok": False,
            "error": f"unknown or malformed request {cmd!r}; known: " + KNOWN_REQUESTS,
        }


KNOWN_REQUESTS = 'status, record {"action": start|stop}, mark {"text"?}, credential, login {"card"}, note {"text"}, case {"case"}'


def uplink_settings(cfg: Config) -> UplinkSettings:
    u = cfg.uplink
    assert u is not None
    return UplinkSettings(
        host=u.host, port=u.port, device_id=cfg.unit.device_id, ca_file=u.ca_file,
        cert_file=u.cert_file, key_file=u.key_file, topic_prefix=u.topic_prefix,
        heartbeat_s=u.heartbeat_seconds, heartbeat_recording_s=u.heartbeat_recording_seconds,
        command_key_file=u.command_key_file, keepalive_s=u.keepalive_seconds,
        device_cert_file=cfg.keys.certificate, reconnect_min_s=u.reconnect_min_seconds,
        reconnect_max_s=u.reconnect_max_seconds,
    )  # fmt: skip


def check_uplink(cfg: Config) -> None:
    from uplink.client import UplinkError, tls_context

    try:
        tls_context(uplink_settings(cfg))
    except (UplinkError, ValueError, OSError) as exc:
        raise ConfigError(f"uplink: {exc}") from None


def keep_memory_private() -> None:
    """No core dump and no ptrace or /proc/PID/mem reading by other processes of the same
    user: memory holds the open segment's data key (prctl PR_SET_DUMPABLE = 0)."""
    import ctypes

    try:
        if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.warning("cannot mark the process non-dumpable: %s", exc)


def load_recipient(cfg: Config) -> Recipient | None:
    """The agency key segments are encrypted for, or None when encryption is off."""
    if not cfg.encrypts() or cfg.encryption.recipient is None:
        return None
    try:
        return Recipient.load(Path(cfg.encryption.recipient))
    except EncryptionError as exc:
        raise ConfigError(f"encryption.recipient: {exc}") from None


class _Reply:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Reply = {}

    def set(self, value: Reply) -> None:
        self.value = value
        self.done.set()


_PANEL_FAULT = {  # the unit's faults as the panel shows them (docs/HARDWARE.md)
    Fault.STORAGE_FULL: "STORAGE_FULL",
    Fault.WRITE_FAILED: "STORAGE_FULL",  # cannot record: the store refuses writes
    Fault.WRITE_STALLED: "STORAGE_FULL",
    Fault.CAMERA_STALLED: "CAMERA_STALLED",
    Fault.MIC_STALLED: "MIC_STALLED",
    Fault.KEY_UNAVAILABLE: "KEY_UNAVAILABLE",
    Fault.STORAGE_LOW: "STORAGE_LOW",
    Fault.CLOCK_UNSET: "CLOCK_UNSET",
}


def indication_for(verdict: Verdict) -> Any:
    """The one LED indication that tells the truth about a verdict: what is being
    recorded, and the most severe fault (hw.panel.FAULTS_BY_SEVERITY)."""
    from hw.panel import FAULTS_BY_SEVERITY, Indication
    from hw.panel import indication_for as combine

    if verdict.mode in (Mode.BOOT, Mode.STOPPED):
        return Indication.BOOT
    activity = {Mode.RECORDING: "recording", Mode.AUDIO_ONLY: "audio_only"}.get(
        verdict.mode, "idle"
    )
    shown = {Indication[_PANEL_FAULT[f]] for f in verdict.faults}
    fault = next((f for f in FAULTS_BY_SEVERITY if f in shown), None)
    try:
        return combine(activity, fault)  # type: ignore[arg-type]
    except ValueError:  # e.g. storage full in the instant before the recording stops
        return fault
