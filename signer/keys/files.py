"""Writing secret files: private, atomic, never over an existing file.

Owns: the one way the key layer (software keys, development CA keys) puts a secret
on disk.
Must not: decide what the secret is, or ever replace or chmod an existing file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from signer.keys.base import KeyAlreadyExists, KeyUnavailable


def write_new_private_file(path: Path, data: bytes, *, what: str = "file") -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically, never replacing a file.

    The bytes go to a temporary file that is fsynced and then hard-linked into place:
    link() fails if ``path`` exists, so nothing is ever overwritten, and a crash never
    leaves a half-written secret under the real name. Raises KeyAlreadyExists if
    ``path`` exists, KeyUnavailable if the directory is not writable.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise KeyUnavailable(f"{what} {path}: cannot create it ({e.strerror})") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as e:
            raise KeyAlreadyExists(f"{what} {path}: already exists; nothing was changed") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
