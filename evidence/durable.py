"""Durable writes for evidence files: what must reach the disk before a step counts.

Owns: fsync of a directory (so a rename or a new file in it survives a power cut).
Must not: know what the files mean.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
