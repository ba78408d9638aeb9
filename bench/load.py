"""A CPU and disk load beside whatever is measured or tested: the machine a unit or CI
really is, not an idle one.

Owns: starting one CPU hog process per core (a tight SHA-256 loop) and one disk hog
(writes 4 MiB blocks and fsyncs them, in a bounded file it rewrites), and stopping them
all. Used by the seal-latency benchmark's "loaded" row and by ``make test-loaded``:

    python -m bench.load -- python -m pytest -n 2      # exit status is pytest's

Must not: touch anything but its own scratch file, or outlive the command it runs
(the hogs are children in their own process group and are killed with it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

DISK_BLOCK = 4 << 20
DISK_FILE_BLOCKS = 64  # the scratch file never exceeds 256 MiB


def _cpu_hog() -> None:
    data = os.urandom(1 << 16)
    while True:
        hashlib.sha256(data).digest()


def _disk_hog(directory: str) -> None:
    block = os.urandom(DISK_BLOCK)
    path = Path(directory) / "liuhen-load.bin"
    with open(path, "wb") as f:
        while True:
            for _ in range(DISK_FILE_BLOCKS):
                f.write(block)
                f.flush()
                os.fsync(f.fileno())
            f.seek(0)


@contextlib.contextmanager
def loaded(cpu: int | None = None, disk: bool = True) -> Iterator[None]:
    """Run the body beside ``cpu`` CPU hogs (default: one per core) and a disk hog."""
    context = multiprocessing.get_context("spawn")
    hogs = [
        context.Process(target=_cpu_hog, daemon=True) for _ in range(cpu or os.cpu_count() or 1)
    ]
    with tempfile.TemporaryDirectory(prefix="liuhen-load-") as scratch:
        if disk:
            hogs.append(context.Process(target=_disk_hog, args=(scratch,), daemon=True))
        for hog in hogs:
            hog.start()
        try:
            yield
        finally:
            for hog in hogs:
                hog.kill()
            for hog in hogs:
                hog.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description="run a command beside a CPU and disk load"
    )
    parser.add_argument("--cpu", type=int, default=None, help="CPU hogs (default: one per core)")
    parser.add_argument("--no-disk", action="store_true", help="no disk hog")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with loaded(args.cpu, not args.no_disk):
        child = subprocess.Popen(command)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


if __name__ == "__main__":
    sys.exit(main())
