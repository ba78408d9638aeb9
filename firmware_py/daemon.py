"""The daemon: check, recover, wire devices to the recorder, run until told to stop.

Owns: the order of start-up (config and devices are checked before the data directory is
touched; interrupted segments are recovered before anything new is written), the data
directory lock, routing recorder events to the index and the status view, and a clean
shutdown on SIGTERM/SIGINT (seal what there is, exit 0). SIGKILL is a power cut, and the
next start recovers from it.

Must not: do the recorder's, the devices' or the index's work itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import shutil
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from firmware_py.config import Config
from firmware_py.control import ControlServer
from firmware_py.devices import build_camera, build_microphone, check_devices
from firmware_py.view import StatusView
from hw.clock import ClockReading, monotonic_us, utc_iso
from recorder.index import Index
from recorder.recorder import Recorder, RecorderEvent, RecorderSettings
from recorder.recovery import recover
from signer.sealer import Sealer

log = logging.getLogger(__name__)

# sysexits.h, so systemd and scripts can tell a bad config from a missing device.
EX_OK = 0
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
    def __init__(self, config: Config, data_dir: Path, view: StatusView) -> None:
        self.config = config
        self.data = DataDir(data_dir)
        self.view = view
        self._events: queue.SimpleQueue[RecorderEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._recorder: Recorder | None = None
        self._sealer: Sealer | None = None

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self._stop.set()

    def _record_event(self, index: Index, event: RecorderEvent) -> None:
        detail = {"name": event.detail["name"]} if event.kind == "segment_sealed" else event.detail
        index.add_event(event.kind, event.mono_us, event.at, detail)  # the sealer's journal
        self.view.event(event)
        if self._sealer is not None:
            self._sealer.notify()

    def run(self) -> int:
        check_devices(self.config)  # raises DeviceError before the data dir is touched
        lock_fd = self.data.prepare()
        try:
            return self._run()
        finally:
            os.close(lock_fd)

    def _run(self) -> int:
        cfg = self.config
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
        now = ClockReading.now()  # segments sealed just before a power cut, not yet journaled
        index.journal_unjournaled_segments(
            now.monotonic_us, utc_iso(now.wall_for(now.monotonic_us))
        )
        sealer = Sealer(
            self.data.evidence,
            self.data.index,
            cfg.unit.device_id,
            cfg.keys.spec(),
            Path(cfg.keys.certificate) if cfg.keys.certificate else None,
            cfg.signer.c2pa,
        )
        self._sealer = sealer
        sealer.run_in_thread()
        camera = build_camera(cfg.camera, label=cfg.unit.device_id)
        microphone = build_microphone(cfg.microphone)
        settings = RecorderSettings(
            device_id=cfg.unit.device_id,
            segment_us=round(cfg.recorder.segment_seconds * 1e6),
            fragment_us=round(cfg.recorder.fragment_seconds * 1e6),
            pre_event_us=round(cfg.recorder.pre_event_seconds * 1e6),
            pre_event_audio=cfg.recorder.pre_event_audio,
        )
        recorder = Recorder(
            self.data.evidence,
            self.data.index,
            settings,
            camera.format,
            microphone.format if microphone else None,
            self._events.put,
        )
        self._recorder = recorder
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        recorder.run_in_thread()
        control = ControlServer(self.data.control, self.handle_request)
        control.start()
        camera.start(recorder.sink)
        if microphone:
            microphone.start(recorder.sink)
        log.info("liuhen %s running, data in %s", cfg.unit.device_id, self.data.root)
        if cfg.recorder.autostart:
            recorder.start("autostart")
        try:
            while not self._stop.is_set():
                self._drain(index, timeout=0.25)
                self.view.status(recorder.status(), sealer.status())
        finally:
            log.info("stopping: sealing what is being written")
            control.close()
            recorder.close()
            camera.stop()
            if microphone:
                microphone.stop()
            self._drain(index, timeout=0)
            sealer.close()
            self.view.status(recorder.status(), sealer.status())
            self.view.close()
            index.close()
        return EX_OK

    def status(self) -> dict[str, Any]:
        assert self._recorder is not None
        usage = shutil.disk_usage(self.data.root)
        return {
            "device_id": self.config.unit.device_id,
            **asdict(self._recorder.status()),
            "sealer": asdict(self._sealer.status()) if self._sealer else None,
            "storage_free_bytes": usage.free,
            "storage_total_bytes": usage.total,
        }

    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request from the control socket (see firmware_py.control)."""
        assert self._recorder is not None
        cmd = request["cmd"]
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "record":
            action = request.get("action")
            if action == "start":
                self._recorder.start(str(request.get("trigger", "ctl")))
            elif action == "stop":
                self._recorder.stop(str(request.get("reason", "ctl")))
            else:
                return {"ok": False, "error": 'record needs "action": "start" or "stop"'}
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}; known: status, record"}

    def _drain(self, index: Index, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout) if timeout else self._events.get_nowait()
            while True:
                self._record_event(index, event)
                event = self._events.get_nowait()
        except queue.Empty:
            return
