"""Real faults for the systemd, storage and fault-injection tests.

Owns: a real sd_notify socket (what systemd listens on), the daemon run in a thread of
the test process (so a test can freeze its simulated camera), small real file systems
(tmpfs mounts, remounted read-only or filled up), SIGKILL at an exact system call
(strace's fault injection: a real kill, at a chosen step, every time), reading what was
left on disk, ``liuhen verify`` as the judge, and a tally of injected faults that the
tests print. A plain module: test modules import what they use.
Must not: mock the daemon, the file system or the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import liuhen, wait_for, write_config

from firmware_py.config import load
from firmware_py.daemon import Daemon
from firmware_py.view import LogView

STRACE = shutil.which("strace")


wait_until = wait_for  # the fault tests' name for it


# --- systemd's side of sd_notify -----------------------------------------------------------


@dataclass
class Notice:
    at: float  # time.monotonic() when it arrived
    fields: dict[str, str]


class NotifySocket:
    """An AF_UNIX datagram socket bound where systemd's would be; collects every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self.notices: list[Notice] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.notices.append(Notice(time.monotonic(), fields))

    def all(self) -> list[Notice]:
        with self._lock:
            return list(self.notices)

    def having(self, key: str, value: str | None = None) -> list[Notice]:
        return [
            n for n in self.all() if key in n.fields and (value is None or n.fields[key] == value)
        ]

    def wait(self, key: str, value: str | None, timeout: float, after: float = 0.0) -> Notice:
        def found() -> Notice | None:
            return next((n for n in self.having(key, value) if n.at >= after), None)

        notice: Notice = wait_until(found, timeout, f"{key}={value or '*'} on {self.path}")
        return notice

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


# --- the daemon in a thread -----------------------------------------------------------------


@dataclass
class InProcessUnit:
    """The real Daemon on a thread of this process: the test can reach its camera."""

    daemon: Daemon
    thread: threading.Thread
    data: Path
    result: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, config: Path, data: Path, timeout: float = 30) -> InProcessUnit:
        daemon = Daemon(load(config), data, LogView(60))
        result: list[int] = []

        def run() -> None:
            result.append(daemon.run(install_signals=False))

        thread = threading.Thread(target=run, name="daemon", daemon=True)
        thread.start()
        unit = cls(daemon, thread, data, result)
        wait_until(lambda: daemon.actions is not None or not thread.is_alive(), timeout, "start")
        assert thread.is_alive(), "the daemon thread ended during start-up"
        return unit

    @classmethod
    def recording(cls, tmp_path: Path) -> InProcessUnit:
        """A small simulated unit in ``tmp_path / "data"`` that starts recording at once
        (autostart, 1 s of pre-event); stopped again if it never gets there."""
        config = write_config(
            tmp_path / "unit.toml", recorder={"autostart": True, "pre_event_seconds": 1}
        )
        unit = cls.start(config, tmp_path / "data")
        try:
            wait_until(lambda: unit.status()["state"] == "recording", 20, "recording")
        except BaseException:
            unit.stop()
            raise
        return unit

    def status(self) -> dict[str, Any]:
        return self.daemon.status()

    def request(self, **request: Any) -> dict[str, Any]:
        return self.daemon.handle_request(request)

    def mode(self) -> str:
        return str(self.status()["unit"]["mode"])

    def stop(self, timeout: float = 30) -> int:
        self.daemon.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the daemon did not stop"
        return self.result[0]


# --- small real file systems -------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted at ``path`` for the duration (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, f"mount tmpfs at {path} (root needed): {done.stderr}"
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    """Unmount, waiting a little for files still open; lazily if they stay open."""
    for _ in range(30):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)  # a daemon thread may still hold a file open
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=True)


@dataclass
class Ext4:
    """An ext4 file system in an image on a loop device, mounted ``errors=remount-ro``:
    an I/O error makes the kernel turn it read-only under the writer's feet, as an SD
    card's failing block does (``mount -o remount,ro`` is refused while files are open
    for writing, so it cannot model that)."""

    image: Path
    mountpoint: Path

    def mount(self) -> None:
        done = subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mountpoint)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, f"mount {self.image}: {done.stderr}"

    def device(self) -> str:
        done = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.mountpoint)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return Path(done.stdout.strip()).name

    def fail(self) -> None:
        """An ext4 error, as the kernel's own test hook raises it: remounted read-only."""
        Path(f"/sys/fs/ext4/{self.device()}/trigger_fs_error").write_text("liuhen test\n")

    def repair(self) -> str:
        """Unmount, fsck (as the boot after the failure would), mount again."""
        unmount(self.mountpoint)
        done = subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, text=True)
        assert done.returncode in (0, 1), f"e2fsck: {done.stdout}{done.stderr}"  # 1: fixed
        self.mount()
        return done.stdout


def ext4_available() -> str | None:
    """Why an ext4 loop mount cannot be made here, or None."""
    if os.geteuid() != 0:
        return "mounting needs root"
    for tool in ("mkfs.ext4", "e2fsck", "losetup", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["losetup", "-f"], capture_output=True).returncode != 0:
        return "no free loop device"
    return None


@contextlib.contextmanager
def ext4(directory: Path, size_mb: int) -> Iterator[Ext4]:
    image, mountpoint = directory / "disk.img", directory / "data"
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    fs = Ext4(image, mountpoint)
    fs.mount()
    try:
        yield fs
    finally:
        unmount(mountpoint)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def fill(path: Path, leave_bytes: int) -> int:
    """Grow the file ``path`` (ballast: another program eating the space) until only
    ``leave_bytes`` are free on its file system; returns the bytes it holds."""
    need = free_bytes(path.parent) - leave_bytes
    with open(path, "ab") as f:
        chunk = b"\xa5" * (1 << 20)
        while need > 0:
            try:
                need -= f.write(chunk[: min(len(chunk), need)])
                f.flush()
            except OSError:
                break
    return path.stat().st_size


def traced_pid(tracer: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The pid of the program strace started (signals for it must not go to strace,
    which would detach and leave it running)."""
    children = Path(f"/proc/{tracer.pid}/task/{tracer.pid}/children")
    pids: list[str] = wait_until(lambda: children.read_text().split(), timeout, "strace's child")
    return int(pids[0])


# --- SIGKILL at an exact step -------------------------------------------------------------

# What CapabilityBoundingSet= leaves the service: no capability at all, so file modes
# bind it (uid 0 stays the owner of the files the tests make).
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def kill_at(syscalls: str, nth: int, path: Path | None = None) -> list[str]:
    """A command prefix: strace SIGKILLs the program as one of its threads enters its
    ``nth`` call of ``syscalls`` (counted per thread; with ``path``, only calls on that
    path). ``?name`` tolerates a call this architecture lacks (``?rename`` on arm64)."""
    assert STRACE is not None
    where = ["-P", str(path)] if path is not None else []
    return [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscalls}",
            "-e", f"inject={syscalls}:signal=KILL:when={nth}", *where]  # fmt: skip


RENAME = "?rename,?renameat,?renameat2"


def wait_killed(daemon: Any, timeout: float, what: str) -> None:
    """The injected SIGKILL came (strace passes the signal on as its own death)."""
    assert daemon.proc is not None
    try:
        rc = daemon.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"no SIGKILL at {what} within {timeout} s\n{daemon.output()}"
        ) from None
    assert rc in (-9, 137), f"exit {rc}, not a SIGKILL at {what}\n{daemon.output()}"


# --- what is on disk ----------------------------------------------------------------------


def rows(data: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of the unit's index, read as a bystander; none where a cut came before the
    daemon created it (on a loaded machine, start-up can outlast a short run)."""
    if not (data / "index.sqlite").exists():
        return []
    with contextlib.closing(
        sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True)
    ) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def ledger_entries(data: Path) -> list[dict[str, Any]]:
    """Every signed entry of the ledger as header + decoded body."""
    import base64

    out = []
    path = data / "evidence" / "ledger.jsonl"
    for line in path.read_bytes().splitlines() if path.exists() else []:
        obj = json.loads(line)
        header = json.loads(base64.b64decode(obj["payload"]))
        body = json.loads(base64.b64decode(obj["body"])) if "body" in obj else {}
        out.append({"header": header, **body})
    return out


def ledger_events(data: Path, kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in ledger_entries(data) if "event" in e and e["event"]["type"] == kind]


def verify(data: Path, *extra: str) -> dict[str, Any]:
    """``liuhen verify --json``: the report, with its exit status as ``exit``."""
    done = liuhen("verify", str(data), "--json", *extra)
    assert done.returncode in (0, 1), f"verify could not run: {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    report["exit"] = done.returncode
    return report


def errors(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["severity"] == "error"]


# --- a tally of injected faults --------------------------------------------------------------


def tally_file() -> Path:
    """Where the tallies of one pytest run go: named by the controlling pytest process
    (tests/conftest.py sets it for xdist's workers), read by its terminal summary."""
    default = Path(tempfile.gettempdir()) / f"liuhen-fault-tally-{os.getpid()}.txt"
    return Path(os.environ.setdefault(TALLY_ENV, str(default)))


TALLY_ENV = "LIUHEN_FAULT_TALLY"


class Tally(Counter[str]):
    """Faults injected and inputs tried: one line per test, printed (``pytest -s``) and
    listed at the end of the run by the terminal reporter."""

    def report(self, what: str) -> str:
        line = f"{what}: " + ", ".join(f"{k}={v}" for k, v in sorted(self.items()))
        print(f"[faults] {line}")
        with open(tally_file(), "a") as f:
            f.write(line + "\n")
        return line
