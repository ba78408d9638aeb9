"""The unit's uploader: finished segments to the central collector, resumable, over HTTPS.

Owns: choosing what to upload next (only sealed segments the ledger already commits
to; segments where a ``mark`` or ``credential_shown`` was recorded first, then oldest
first), sending each in chunks with ``Content-Range`` and resuming where the collector
says it stands after any interruption, mutual TLS, its own progress file
(``DATA/upload.sqlite``) and the collector's receipts (SHA-256, size, stored-at: the
acknowledgement a retention policy may later rely on). The protocol is in
docs/CENTRAL.md, "Upload protocol".

Must not: delete, move or alter any file (deletion is a separate retention policy that
will consult ``acknowledged()``), write the unit's index, judge whether a file is intact
(the collector checks it against the ledger entry and quarantines a mismatch), or block
recording: it runs on its own thread at low CPU priority and touches the index only
with short read transactions.

The daemon's side: ``start()``, ``notify()`` after a segment entry is sealed,
``status()`` for the heartbeat, ``close()``. ``on_event(kind, detail)`` reports
``upload_acknowledged`` and ``upload_refused`` for the ledger.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from protocol.upload import UPLOAD_PATH

log = logging.getLogger(__name__)

PRIORITY_KINDS = ("mark", "credential_shown")
PROGRESS_FILE = "upload.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    name TEXT PRIMARY KEY,          -- segment file name
    sha256 TEXT NOT NULL,           -- what the collector acknowledged
    bytes INTEGER NOT NULL,
    stored_at TEXT NOT NULL,        -- the collector's time of storing
    collector TEXT,
    receipt TEXT NOT NULL,          -- the collector's answer as received (signed when it signs)
    acknowledged_at REAL NOT NULL   -- unit time the receipt arrived
);
CREATE TABLE IF NOT EXISTS refusals (
    name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class UploadError(RuntimeError):
    """The uploader cannot be set up as given; the message names the setting."""


@dataclass(frozen=True)
class Candidate:
    name: str
    sha256: str
    bytes: int
    seq: int  # its ledger entry
    priority: bool  # a mark or credential shown happened in it


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    retry_after: float | None = None


class _Retry(Exception):
    """Try this segment again after ``delay`` seconds (the message says why)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:  # fmt: skip
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class Uploader:
    """Device side; runs its own thread; never blocks recording."""

    def __init__(self, evidence_dir: Path, index_path: Path, url: str, ca_file: str | None,
                 cert_file: str | None, key_file: str | None, device_id: str,
                 on_event: Callable[[str, dict[str, Any]], None], *, chunk_bytes: int = 4 << 20,
                 retry_min_s: float = 2.0, retry_max_s: float = 300.0, poll_s: float = 30.0,
                 timeout_s: float = 30.0) -> None:  # fmt: skip
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise UploadError(f"upload url {url!r}: must be https://HOST[:PORT]")
        if (cert_file is None) != (key_file is None):
            raise UploadError("upload: cert_file and key_file go together")
        try:
            self._context = tls_context(ca_file, cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise UploadError(f"upload: TLS files: {exc}") from None
        self.evidence_dir = evidence_dir
        self.index_path = index_path
        self.host, self.port = parts.hostname, parts.port or 443
        self.device_id = device_id
        self.on_event = on_event
        self.chunk_bytes = chunk_bytes
        self.retry_min_s, self.retry_max_s, self.poll_s = retry_min_s, retry_max_s, poll_s
        self.timeout_s = timeout_s
        self.progress_path = index_path.parent / PROGRESS_FILE
        self._db = sqlite3.connect(self.progress_path, isolation_level=None, check_same_thread=False)  # fmt: skip
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPSConnection | None = None
        self._deferred: dict[str, float] = {}  # name -> monotonic time to try again
        self._state: dict[str, Any] = {"state": "starting", "current": None, "offset": 0,
                                       "pending": 0, "pending_bytes": 0, "last_error": None,
                                       "sent_bytes": 0}  # fmt: skip
        self._state_lock = threading.Lock()

    # --- the daemon's calls (any thread) ---------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink-upload", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A segment was sealed (or a mark made): look again now."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        with self._state_lock:
            state = dict(self._state)
        with self._db_lock:
            state["acknowledged"] = self._db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0]  # fmt: skip
            state["refused"] = self._db.execute("SELECT COUNT(*) FROM refusals").fetchone()[0]
        return state

    def acknowledged(self) -> dict[str, dict[str, Any]]:
        """Segment name -> its receipt (sha256, bytes, stored_at, collector): what a
        retention policy may rely on. Nothing here deletes anything."""
        with self._db_lock:
            rows = self._db.execute("SELECT name, sha256, bytes, stored_at, collector FROM receipts").fetchall()  # fmt: skip
        return {r[0]: {"sha256": r[1], "bytes": r[2], "stored_at": r[3], "collector": r[4]} for r in rows}  # fmt: skip

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._disconnect()
        with self._db_lock:
            self._db.close()

    # --- choosing ----------------------------------------------------------------------
    def candidates(self) -> list[Candidate]:
        """Sealed segments with a ledger entry, not yet acknowledged or refused, marked
        ones first, then in ledger order."""
        from evidence.ledger import Entry

        index = sqlite3.connect(self.index_path, timeout=10)
        try:
            rows = index.execute(
                "SELECT l.seq, l.line FROM ledger l JOIN segments s ON s.name = l.segment "
                "WHERE s.state IN ('sealed', 'recovered') ORDER BY l.seq"
            ).fetchall()
            kinds = ",".join("?" * len(PRIORITY_KINDS))
            details = index.execute(
                f"SELECT detail FROM events WHERE kind IN ({kinds}) AND ledger_seq IS NOT NULL",
                PRIORITY_KINDS,
            ).fetchall()
        finally:
            index.close()
        marked = {_position_segment(d[0]) for d in details}
        with self._db_lock:
            done = {r[0] for r in self._db.execute("SELECT name FROM receipts UNION SELECT name FROM refusals")}  # fmt: skip
        out = []
        for seq, line in rows:
            segment = Entry.from_line(line.encode()).body_json()["segment"]
            if segment["name"] not in done:
                out.append(Candidate(segment["name"], segment["sha256"], int(segment["bytes"]),
                                     int(seq), segment["name"] in marked))  # fmt: skip
        return sorted(out, key=lambda c: (not c.priority, c.seq))

    # --- the upload thread ---------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        with self._state_lock:
            self._state.update(changes)

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # lower CPU priority for this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        delay = self.retry_min_s
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.poll_s
            try:
                wait = self._pass()
                delay = self.retry_min_s
            except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
                self._disconnect()
                self._set(state="waiting", last_error=f"collector unreachable: {exc}")
                wait, delay = delay, min(delay * 2, self.retry_max_s)
            except sqlite3.Error as exc:
                self._set(state="waiting", last_error=f"index: {exc}")
            except Exception as exc:  # never let the thread die: say so and try again later
                log.exception("upload: unexpected failure")
                self._set(state="waiting", last_error=f"internal error: {exc!r}")
                wait, delay = delay, min(delay * 2, self.retry_max_s)
            self._wake.wait(wait)

    def _pass(self) -> float:
        """Upload what there is; the seconds to wait before looking again."""
        now = time.monotonic()
        todo = self.candidates()
        ready = [c for c in todo if self._deferred.get(c.name, 0) <= now]
        self._set(pending=len(todo), pending_bytes=sum(c.bytes for c in todo))
        if not ready:
            self._set(state="idle", current=None, offset=0)
            later = [self._deferred[c.name] - now for c in todo if c.name in self._deferred]
            return min([self.poll_s, *later])
        candidate = ready[0]
        try:
            self._upload(candidate)
            self._deferred.pop(candidate.name, None)
        except _Retry as retry:
            self._deferred[candidate.name] = time.monotonic() + retry.delay
            self._set(last_error=str(retry))
        return 0.0

    def _upload(self, c: Candidate) -> None:
        self._set(state="uploading", current=c.name, offset=0)
        answer = self._request("GET", c, None, b"")
        offset = self._follow(c, answer)
        path = self.evidence_dir / c.name
        if not path.is_file():
            raise _Retry(f"{c.name}: not in {self.evidence_dir} (its entry is {c.seq})", self.retry_max_s)  # fmt: skip
        with open(path, "rb") as f:
            while offset is not None and offset < c.bytes and not self._stop.is_set():
                f.seek(offset)
                chunk = f.read(min(self.chunk_bytes, c.bytes - offset))
                if not chunk:
                    raise _Retry(f"{c.name}: the file is shorter ({offset} bytes) than its entry says ({c.bytes})", self.retry_max_s)  # fmt: skip
                rng = f"bytes {offset}-{offset + len(chunk) - 1}/{c.bytes}"
                answer = self._request("PUT", c, rng, chunk)
                if answer.body.get("code") not in ("offset_mismatch", "busy"):  # it took them
                    self._set(sent_bytes=self._state["sent_bytes"] + len(chunk))
                offset = self._follow(c, answer)
                self._set(offset=offset or 0)

    def _follow(self, c: Candidate, answer: Answer) -> int | None:
        """Act on the collector's answer: the offset to continue from, or None (done)."""
        body, status = answer.body, answer.status
        if status in (200, 201) and body.get("state") == "stored":
            self._acknowledge(c, body)
            return None
        if status == 200 and isinstance(body.get("offset"), int):
            return int(body["offset"])
        code, message = str(body.get("code", status)), str(body.get("message", ""))
        if code == "offset_mismatch" and isinstance(body.get("offset"), int):
            return int(body["offset"])
        if status == 422 or code in ("hash_mismatch", "size_mismatch"):
            self._refused(c, code, message)
            return None
        delay = answer.retry_after or (self.retry_min_s if code == "busy" else self.retry_max_s)
        raise _Retry(f"{c.name}: {code}: {message}", delay)

    def _acknowledge(self, c: Candidate, body: dict[str, Any]) -> None:
        receipt = body.get("receipt") or {}
        if receipt.get("sha256") != c.sha256 or receipt.get("bytes") != c.bytes:
            raise _Retry(f"{c.name}: the collector's receipt names {str(receipt.get('sha256'))[:16]}…/{receipt.get('bytes')}, not what was sent", self.retry_max_s)  # fmt: skip
        with self._db_lock:
            self._db.execute(
                "INSERT OR REPLACE INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (c.name, c.sha256, c.bytes, str(receipt.get("stored_at")), receipt.get("collector"),
                 json.dumps(body, separators=(",", ":")), time.time()),
            )  # fmt: skip
        self._set(last_ack={"segment": c.name, "stored_at": receipt.get("stored_at")}, last_error=None)  # fmt: skip
        self._event("upload_acknowledged", {"segment": c.name, "sha256": c.sha256, "bytes": c.bytes,
                    "stored_at": receipt.get("stored_at"), "collector": receipt.get("collector"),
                    "signed": "signed" in body})  # fmt: skip

    def _refused(self, c: Candidate, code: str, message: str) -> None:
        with self._db_lock:
            self._db.execute("INSERT OR REPLACE INTO refusals VALUES (?, ?, ?, ?, ?)",
                             (c.name, c.sha256, code, message, time.time()))  # fmt: skip
        self._set(last_error=f"{c.name} refused: {message}")
        log.error("upload: the collector refused %s: %s", c.name, message)
        self._event("upload_refused", {"segment": c.name, "sha256": c.sha256, "code": code, "message": message})  # fmt: skip

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        try:
            self.on_event(kind, detail)
        except Exception:
            log.exception("upload: on_event(%s) failed", kind)

    # --- HTTP ------------------------------------------------------------------------------
    def _request(self, method: str, c: Candidate, content_range: str | None, data: bytes) -> Answer:  # fmt: skip
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=self.timeout_s)  # fmt: skip
        headers = {"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"}
        if content_range is not None:
            headers["Content-Range"] = content_range
        target = f"{UPLOAD_PATH}{c.sha256}?segment={quote(c.name)}"
        try:
            self._conn.request(method, target, body=data if method == "PUT" else None, headers=headers)  # fmt: skip
            response = self._conn.getresponse()
            raw = response.read()
        except BaseException:
            self._disconnect()
            raise
        if response.getheader("Connection", "").lower() == "close":
            self._disconnect()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"code": f"http_{response.status}", "message": raw[:200].decode(errors="replace")}  # fmt: skip
        retry = response.getheader("Retry-After")
        return Answer(response.status, body if isinstance(body, dict) else {},
                      float(retry) if retry and retry.isdigit() else None)  # fmt: skip

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _position_segment(detail: str) -> str | None:
    try:
        position = json.loads(detail).get("position") or {}
    except (ValueError, AttributeError):
        return None
    name = position.get("segment") if isinstance(position, dict) else None
    return name if isinstance(name, str) else None
