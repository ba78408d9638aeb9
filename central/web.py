"""HTTP for the collector: the units' upload endpoint and the staff's monitor page.

Owns: two ``ThreadingHTTPServer``s (stdlib) — the upload endpoint (HTTPS, mutual TLS:
the client certificate's CN is the device id) and the monitor (HTTP or HTTPS) — the TLS
handshake in each connection's own thread (a slow client never holds up the others),
request parsing and routing, JSON replies, the page's static files, the segment media
with byte ranges (the video element seeks with them), and the Server-Sent Events
stream. Must not: decide anything about an upload (``central.collector``) or a unit
(``central.service``); the monitor is read-only.

    collector   GET  /v1/uploads/<sha256>?segment=<name>    where an upload stands
                PUT  /v1/uploads/<sha256>?segment=<name>    one chunk (Content-Range)
    monitor     GET  /  /static/<file>  /api/units  /api/units/<device>  /api/alerts
                GET  /api/stats  /api/events (SSE)  /media/<sha256>.mp4
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from central.collector import Collector, Reply, refuse
from central.hub import Hub
from protocol.upload import UPLOAD_PATH

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 30
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}  # fmt: skip
MEDIA = re.compile(r"^/media/([0-9a-f]{64})\.mp4$")
BYTE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class TlsHTTPServer(ThreadingHTTPServer):
    """A threading server that does each TLS handshake in the connection's thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext | None) -> None:  # fmt: skip
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is not None:
            request.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.info("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server_version = "liuhen-central"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_reply(self, reply: Reply) -> None:
        self.send_json(reply.status, reply.body, reply.headers)


# ---------------------------------------------------------------------------
# The upload endpoint (units, mutual TLS)
# ---------------------------------------------------------------------------


def peer_device(connection: Any) -> str | None:
    """The CN of the TLS client certificate (the device id), or None."""
    getpeercert = getattr(connection, "getpeercert", None)
    cert = getpeercert() if getpeercert else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _Counting:
    """The request body, counting what the collector read of it."""

    def __init__(self, source: Any) -> None:
        self.source, self.count = source, 0

    def read(self, n: int) -> bytes:
        # read1: what has arrived, at most one read from the socket. A buffered read(n)
        # would gather bytes until n and then lose them all to the error a link that
        # dies mid-body raises (an unclean TLS EOF), where they must be kept.
        reader = getattr(self.source, "read1", self.source.read)
        data: bytes = reader(n)
        self.count += len(data)
        return data

    def drain(self, n: int) -> bool:
        """Read and drop the unread rest of a refused body, so the connection can go
        on (a client still sending would otherwise see a reset, not the refusal)."""
        while n > 0 and (data := self.read(min(n, 1 << 16))):
            n -= len(data)
        return n == 0


def upload_handler(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class UploadHandler(_Handler):
        def _target(self) -> tuple[str, str, str] | Reply:
            device = peer_device(self.connection)
            if device is None:
                return refuse(403, "no_client_certificate", "a TLS client certificate naming the unit is required")  # fmt: skip
            url = urlsplit(self.path)
            if not url.path.startswith(UPLOAD_PATH):
                return refuse(404, "not_found", f"{url.path}: uploads go to {UPLOAD_PATH}<sha256>?segment=<name>")  # fmt: skip
            names = parse_qs(url.query).get("segment", [])
            if len(names) != 1:
                return refuse(400, "malformed", "exactly one ?segment=<file name> is required")
            return device, url.path[len(UPLOAD_PATH) :], names[0]

        def do_GET(self) -> None:
            target = self._target()
            self.send_reply(target if isinstance(target, Reply) else collector.query(*target))

        def do_PUT(self) -> None:
            target = self._target()
            length_text = self.headers.get("Content-Length")
            try:
                length = int(length_text) if length_text is not None else None
            except ValueError:
                length = None
            body = _Counting(self.rfile)
            if length is None or length < 0:
                reply = refuse(411, "malformed", f"Content-Length required (got {length_text!r})")  # fmt: skip
            elif isinstance(target, Reply):
                reply = target
            else:
                reply = collector.put(*target, self.headers.get("Content-Range"), length, body)  # type: ignore[arg-type]  # fmt: skip
            left = (length or 0) - body.count
            if left > 0 and (length is None or length > collector.max_request_bytes or not body.drain(left)):  # fmt: skip
                reply = Reply(reply.status, reply.body, {**reply.headers, "Connection": "close"})
            self.send_reply(reply)

    return UploadHandler


def upload_context(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(client_ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def monitor_context(cert_file: str | None, key_file: str | None,
                    client_ca_file: str | None) -> ssl.SSLContext | None:  # fmt: skip
    if cert_file is None or key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# ---------------------------------------------------------------------------
# The monitor page (staff, read-only)
# ---------------------------------------------------------------------------


class MonitorApi:
    """What the monitor handler needs from the rest of the process."""

    def __init__(self, units: Callable[[], Any], detail: Callable[[str], Any],
                 alerts: Callable[[], Any], stats: Callable[[], Any],
                 media: Callable[[str], Path | None], hub: Hub) -> None:  # fmt: skip
        self.units, self.detail, self.alerts, self.stats = units, detail, alerts, stats
        self.media, self.hub = media, hub


def monitor_handler(api: MonitorApi) -> type[BaseHTTPRequestHandler]:
    class MonitorHandler(_Handler):
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path.removeprefix("/static/"))
            if path == "/api/units":
                return self.send_json(200, {"units": api.units(), "alerts": api.alerts()})
            if path.startswith("/api/units/"):
                detail = api.detail(path.removeprefix("/api/units/"))
                if detail is None:
                    return self.send_json(404, {"ok": False, "code": "unknown_unit", "message": f"no unit {path[11:]!r}"})  # fmt: skip
                return self.send_json(200, detail)
            if path == "/api/alerts":
                return self.send_json(200, {"alerts": api.alerts()})
            if path == "/api/stats":
                return self.send_json(200, api.stats())
            if path == "/api/events":
                return self._events()
            match = MEDIA.match(path)
            if match:
                return self._media(match.group(1))
            return self.send_json(404, {"ok": False, "code": "not_found", "message": f"{path}: no such page"})  # fmt: skip

        def _static(self, name: str) -> None:
            if name not in STATIC:
                return self.send_json(404, {"ok": False, "code": "not_found", "message": f"no static file {name!r}"})  # fmt: skip
            data = resources.files("central").joinpath("static", name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", STATIC[name])
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _media(self, sha256: str) -> None:
            path = api.media(sha256)
            if path is None:
                return self.send_json(404, {"ok": False, "code": "not_stored", "message": f"no stored segment {sha256[:16]}…"})  # fmt: skip
            size = path.stat().st_size
            start, end = 0, size - 1
            wanted = BYTE_RANGE.match(self.headers.get("Range", "").strip())
            if wanted and (wanted.group(1) or wanted.group(2)):
                first, last = wanted.groups()
                start, end = (int(first), min(int(last or size - 1), size - 1)) if first else (max(0, size - int(last)), size - 1)  # fmt: skip
                if start > end:
                    return self.send_json(416, {"ok": False, "code": "bad_range", "message": f"range outside 0..{size - 1}"}, {"Content-Range": f"bytes */{size}"})  # fmt: skip
            self.send_response(206 if wanted else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0 and (chunk := f.read(min(left, 1 << 16))):
                    self.wfile.write(chunk)
                    left -= len(chunk)

        def _events(self) -> None:
            sub = api.hub.subscribe()
            if sub is None:
                return self.send_json(503, {"ok": False, "code": "busy", "message": "too many monitor pages open"})  # fmt: skip
            self.close_connection = True
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(b"retry: 2000\nevent: hello\ndata: {}\n\n")
                self.wfile.flush()
                while (text := sub.next(15)) is not None:
                    self.wfile.write(text.encode() if text else b": keep-alive\n\n")
                    self.wfile.flush()
            except (TimeoutError, OSError):
                pass  # the page went away
            finally:
                api.hub.unsubscribe(sub)

    return MonitorHandler
