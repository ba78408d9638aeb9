"""The evidence collector: resumable segment uploads, each checked against its ledger entry.

Owns: the upload protocol's decisions (docs/CENTRAL.md, "Upload protocol") — which
unit may upload what (the TLS client certificate's CN is the device; it may upload only
segments its own verified ledger entries commit to), where a chunk must start, and,
when the last byte is in, whether the file is exactly what the entry says (size,
SHA-256, every part). A match is stored by its SHA-256 and acknowledged with a receipt;
anything else is quarantined (kept, never accepted) and alarmed. Must not: speak HTTP
(``central.web`` does) or delete a byte a unit sent.

Every refusal is a ``Reply`` with a status, a stable ``code`` and a message saying
exactly what was wrong; nothing is half-accepted.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from central.blobs import Blobs
from central.receipts import make_receipt, sign_receipt
from central.store import CentralStore, Row
from evidence.parts import part_scheme
from evidence.records import is_encrypted
from evidence.verify import Report, compare_file, file_sha256, hash_file
from signer.keys import KeyBackend

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SEGMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.mp4(\.enc)?$")  # .enc: encrypted
RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
RETRY_ENTRY_S = 10


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def refuse(status: int, code: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"ok": False, "code": code, "message": message, **extra})


AlertSink = Callable[[str, str, str], None]  # device, code, message


def judge(path: Path, segment: Row) -> str | None:
    """None if the file is byte for byte what the entry commits to; else what differs."""
    expected = {
        "bytes": segment["bytes"], "sha256": segment["sha256"], "parts": json.loads(segment["parts"])
    }  # fmt: skip
    report = Report(str(path))
    try:
        hasher = hash_file(path, lambda n: None, is_encrypted(path), part_scheme(expected))
    except ValueError as exc:
        return f"not the segment file its entry describes: {exc}"
    if compare_file(path, expected, hasher, report, f"entry {segment['entry_seq']}"):
        return None
    return report.findings[-1].message if report.findings else "differs from its entry"


class Collector:
    def __init__(
        self,
        store: CentralStore,
        blobs: Blobs,
        collector_id: str,
        *,
        max_segment_bytes: int,
        max_request_bytes: int,
        receipt_key: KeyBackend | None,
        alert: AlertSink,
        changed: Callable[[str], None] = lambda device: None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.collector_id = collector_id
        self.max_segment_bytes = max_segment_bytes
        self.max_request_bytes = max_request_bytes
        self.receipt_key = receipt_key
        self.alert = alert
        self.changed = changed
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # --- shared checks ------------------------------------------------------------
    def _segment(self, device: str, sha256: str, name: str) -> Row | Reply:
        if not SHA256.match(sha256):
            return refuse(400, "malformed", f"{sha256[:80]!r} is not a lowercase hex SHA-256")
        if not SEGMENT_NAME.match(name):
            return refuse(
                400, "malformed", f"segment name {name[:80]!r} is not a segment file name"
            )
        segment = self.store.segment(device, name)
        if segment is None:
            if not self.store.certificates(device):
                message = f"unit {device!r} has sent no verified ledger entry: unknown device"
                self.alert(device, "upload_refused", message)
                return refuse(403, "unknown_device", message)
            return Reply(
                409,
                {"ok": False, "code": "entry_not_received",
                 "message": f"no ledger entry for {name} from {device} has reached the centre yet; retry later"},
                {"Retry-After": str(RETRY_ENTRY_S)},
            )  # fmt: skip
        if segment["sha256"] != sha256:
            message = (f"{name}: uploaded as {sha256[:16]}… but its ledger entry "
                       f"{segment['entry_seq']} commits to {segment['sha256'][:16]}…")  # fmt: skip
            self.alert(device, "upload_refused", message)
            return refuse(409, "hash_mismatch", message)
        return segment

    def _stored(self, segment: Row) -> Reply:
        return Reply(200, {"ok": True, "state": "stored", "offset": segment["bytes"],
                           **json.loads(segment["receipt"])})  # fmt: skip

    # --- the two requests ---------------------------------------------------------
    def query(self, device: str, sha256: str, name: str) -> Reply:
        """Where an upload stands: absent/partial (with the offset to resume from),
        stored (with the receipt) or quarantined (with why)."""
        found = self._segment(device, sha256, name)
        if isinstance(found, Reply):
            return found
        if found["upload"] == "stored":
            return self._stored(found)
        offset = self.blobs.offset(device, sha256)
        state = "partial" if offset else "absent"
        body: dict[str, Any] = {"ok": True, "state": state, "offset": offset}
        if found["upload"] == "quarantined":
            body["last_refusal"] = found["reason"]
        return Reply(200, body)

    def put(self, device: str, sha256: str, name: str, content_range: str | None,
            length: int | None, source: BinaryIO) -> Reply:  # fmt: skip
        """One chunk: ``Content-Range: bytes FIRST-LAST/TOTAL`` with exactly
        ``LAST - FIRST + 1`` bytes of body, FIRST being the current offset."""
        match = RANGE.match(content_range or "")
        if match is None:
            return refuse(400, "malformed", f"Content-Range must be 'bytes FIRST-LAST/TOTAL' (got {content_range!r})")  # fmt: skip
        first, last, total = (int(g) for g in match.groups())
        if not first <= last < total:
            return refuse(400, "malformed", f"Content-Range {content_range!r}: need FIRST <= LAST < TOTAL")  # fmt: skip
        if length != last - first + 1:
            return refuse(400, "malformed", f"Content-Length {length} does not match Content-Range {content_range!r} ({last - first + 1} bytes)")  # fmt: skip
        if length > self.max_request_bytes:
            return refuse(413, "too_large", f"a chunk is at most {self.max_request_bytes} bytes (got {length})")  # fmt: skip
        if total > self.max_segment_bytes:
            return refuse(413, "too_large", f"a segment is at most {self.max_segment_bytes} bytes (got {total})")  # fmt: skip
        found = self._segment(device, sha256, name)
        if isinstance(found, Reply):
            return found
        if total != found["bytes"]:
            message = f"{name}: {total} bytes offered but its ledger entry {found['entry_seq']} commits to {found['bytes']}"  # fmt: skip
            self.alert(device, "upload_refused", message)
            return refuse(409, "size_mismatch", message)
        if found["upload"] == "stored":
            return self._stored(found)
        key = (device, sha256)
        with self._lock:
            if key in self._busy:
                return refuse(409, "busy", f"{name}: another upload of it is in progress")
            self._busy.add(key)
        try:
            return self._append(found, first, length, source)
        finally:
            with self._lock:
                self._busy.discard(key)

    def _append(self, segment: Row, first: int, length: int, source: BinaryIO) -> Reply:
        device, sha256, name = segment["device"], segment["sha256"], segment["name"]
        offset = self.blobs.offset(device, sha256)
        if first != offset:
            return refuse(409, "offset_mismatch",
                          f"{name}: the upload stands at byte {offset}, not {first}; resume from there",
                          offset=offset)  # fmt: skip
        offset += self.blobs.append(device, sha256, source, length)
        if offset < segment["bytes"]:
            self.store.set_upload(device, name, upload="partial", received_bytes=offset)
            self.changed(device)
            return Reply(200, {"ok": True, "state": "partial", "offset": offset})
        return self._complete(segment)

    def _complete(self, segment: Row) -> Reply:
        device, sha256, name = segment["device"], segment["sha256"], segment["name"]
        path = self.blobs.partial(device, sha256)
        problem = judge(path, segment)
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # fmt: skip
        if problem is not None:
            actual = file_sha256(path)
            kept = self.blobs.quarantine(device, sha256, name, actual)
            reason = f"{problem} (kept in quarantine as {kept.name}, SHA-256 {actual[:16]}…)"
            self.store.set_upload(device, name, upload="quarantined", received_bytes=0, reason=reason)  # fmt: skip
            self.alert(device, "upload_quarantined", f"{name}: {reason}")
            self.changed(device)
            return refuse(422, "content_mismatch", f"{name}: {reason}", state="quarantined")
        self.blobs.accept(device, sha256)
        entry = self.store.known_entry(device, segment["entry_seq"])
        receipt = make_receipt(self.collector_id, segment, entry[0] if entry else None, stamp)
        body: dict[str, Any] = {"receipt": receipt}
        if self.receipt_key is not None:
            body["signed"] = sign_receipt(self.receipt_key, receipt)
        self.store.set_upload(device, name, upload="stored", received_bytes=segment["bytes"],
                              stored_at=stamp, receipt=json.dumps(body), reason=None)  # fmt: skip
        self.changed(device)
        return Reply(201, {"ok": True, "state": "stored", "offset": segment["bytes"], **body})
