"""The collector's files: uploads in progress, stored segments by SHA-256, quarantine.

Owns: the directory layout under the data directory and every write to it —
appending a chunk durably (fsync before the new offset is reported), moving a checked
upload into the content-addressed store read-only, and setting a refused upload aside
in quarantine (never deleting it). Must not: decide whether a file is acceptable
(``central.collector`` does), or touch the database.

    DATA/incoming/<device>/<sha256>.part        an upload in progress; its size is the offset
    DATA/segments/<sha256[:2]>/<sha256>.mp4     accepted segments, mode 0444
    DATA/quarantine/<device>/<name>.<actual sha256>.mp4   refused uploads, kept for inquiry
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from evidence.durable import fsync_dir

CHUNK = 1 << 20


class Blobs:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("incoming", "segments", "quarantine"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def partial(self, device: str, sha256: str) -> Path:
        return self.root / "incoming" / device / f"{sha256}.part"

    def stored(self, sha256: str) -> Path:
        return self.root / "segments" / sha256[:2] / f"{sha256}.mp4"

    def offset(self, device: str, sha256: str) -> int:
        path = self.partial(device, sha256)
        return path.stat().st_size if path.exists() else 0

    def append(self, device: str, sha256: str, source: BinaryIO, length: int) -> int:
        """Copy up to ``length`` bytes from ``source`` onto the partial file; returns how
        many arrived (fewer if the sender stopped: what came is kept, fsync'ed)."""
        path = self.partial(device, sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            while received < length:
                try:
                    chunk = source.read(min(CHUNK, length - received))
                except (OSError, TimeoutError):
                    break
                if not chunk:
                    break
                os.write(fd, chunk)
                received += len(chunk)
        finally:
            os.fsync(fd)
            os.close(fd)
        return received

    def accept(self, device: str, sha256: str) -> Path:
        """The checked partial file becomes the stored segment (read-only)."""
        source, target = self.partial(device, sha256), self.stored(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(source, 0o444)
        os.replace(source, target)
        fsync_dir(target.parent)
        return target

    def quarantine(self, device: str, sha256: str, name: str, actual: str) -> Path:
        """Set a refused upload aside under its own hash; the upload starts afresh."""
        source = self.partial(device, sha256)
        target = self.root / "quarantine" / device / f"{Path(name).stem}.{actual}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(source, 0o444)
        os.replace(source, target)
        fsync_dir(target.parent)
        return target

    def discard_partial(self, device: str, sha256: str) -> None:
        """Only for an upload of a file already stored (same bytes, kept once)."""
        self.partial(device, sha256).unlink(missing_ok=True)
