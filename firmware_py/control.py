"""The local control socket: how `liuhen ctl`, a clerk's desk software or a test drives
the running daemon.

Owns: a Unix stream socket in the data directory (mode 0660: the service user and its
group only), one JSON request per line, one JSON reply per line. Must not: act on a
request itself; it hands each one to the daemon's handler and returns what that says.

Requests: ``{"cmd": "status"}``, ``{"cmd": "record", "action": "start"|"stop"}``.
Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "what was wrong"}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(RuntimeError):
    pass


def _handle_line(line: bytes, handler: Handler) -> dict[str, Any]:
    if len(line) > MAX_REQUEST:
        return {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": f"request is not JSON: {exc}"}
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return {"ok": False, "error": 'request must be a JSON object with a string "cmd"'}
    try:
        return handler(request)
    except Exception as exc:  # the daemon keeps running whatever a client sends
        log.exception("control request %r failed", request)
        return {"ok": False, "error": f"internal error: {exc}"}


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path

        class _Conn(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while line := self.rfile.readline(MAX_REQUEST + 1):
                    reply = _handle_line(line.strip(), handler)
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        if path.exists() or path.is_symlink():
            path.unlink()  # a stale socket from a previous run; the data-dir lock is held
        old = os.umask(0o117)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(path), _Conn)
        finally:
            os.umask(old)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(OSError):  # gone, or on a disk gone read-only: the next
            self.path.unlink()  # start replaces a stale socket


def request(path: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to a running daemon and return its reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = sock.makefile("rb").readline()
    except FileNotFoundError:
        raise ControlError(f"no liuhen daemon is listening at {path}") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the daemon at {path}: {exc}") from None
    if not reply:
        raise ControlError(f"the daemon at {path} closed the connection without replying")
    result: dict[str, Any] = json.loads(reply)
    return result
