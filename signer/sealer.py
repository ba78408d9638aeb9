"""The sealer: turns the index's journal of segments and events into ledger entries.

Owns: the order of sealing (the ``events`` table, oldest first), embedding a C2PA
manifest into each finished segment before it is committed, building entry bodies,
signing them through the key backend on its own thread, and reconciling the index with
the ledger file after a crash. Must not: touch the camera, or slow the recorder: it runs
off the capture path, so a slow key (a TPM takes ~100 ms a signature) or an absent one
only grows a backlog, which it works off when the key is back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from evidence.certs import fingerprint, load_chain_pem
from evidence.durable import fsync_dir
from evidence.ledger import CERT_FILE, LEDGER_FILE, Entry, Ledger, LedgerError, Stamp, iter_lines
from evidence.parts import fragment_digests, hash_segment_file, part_scheme
from hw.clock import ClockReading, boot_id, clock_synced, utc_iso
from signer.keys import KeyBackend, KeyBackendError, KeySpec, open_backend
from store.index import SealingQueue, open_sealing_queue

log = logging.getLogger(__name__)

RETRY_S = 5.0
SOFTWARE = f"liuhen {version('liuhen')}"


@dataclass(frozen=True)
class SealerStatus:
    state: str = "starting"  # starting | ok | fault
    error: str | None = None
    backlog: int = 0
    last_seq: int | None = None
    key: str | None = None  # protection kind of the key in use


def stamp_now() -> Stamp:
    clock = ClockReading.now()
    return Stamp(
        utc_iso(clock.wall_for(clock.monotonic_us)), clock.monotonic_us, boot_id(), clock_synced()
    )


def segment_body(row: dict[str, Any], context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of a segment entry; ``context`` (officer, case) when there is one."""
    return {
        **({"context": context} if context else {}),
        "segment": {
            "name": row["name"],
            "recording": row["recording_id"],
            "seq": row["seq"],
            "state": row["state"],
            "bytes": row["bytes"],
            "sha256": row["sha256"],
            "parts": json.loads(row["parts"]),
            "part_digest": part_scheme(
                {"sha256": row["sha256"], "parts": json.loads(row["parts"])}
            ),
            "media_start_us": row["media_start_us"],
            "media_end_us": row["media_end_us"],
            "wall_start": row["wall_start"],
            "wall_end": row["wall_end"],
            "video_frames": row["video_frames"],
            "audio_frames": row["audio_frames"],
            "c2pa": bool(row.get("c2pa")),
            **({"encryption": json.loads(row["encryption"])} if row.get("encryption") else {}),
        },
    }


class Sealer:
    def __init__(
        self,
        evidence_dir: Path,
        index_path: Path,
        device_id: str,
        key_spec: KeySpec,
        certificate: Path | None,
        c2pa: bool,
        on_entry: Callable[[Entry], None] = lambda e: None,
        replay_after: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.evidence_dir = evidence_dir
        self._index_path = index_path
        self.device_id = device_id
        self._spec = key_spec
        self._certificate = certificate
        self._c2pa = c2pa
        self._on_entry = on_entry
        self._replay_after = replay_after
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._status = SealerStatus()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._chain_pem: str | None = None
        self._backend: KeyBackend | None = None

    # --- any thread ------------------------------------------------------------------
    def notify(self) -> None:
        """Something was journaled: look at the queue now rather than at the next poll."""
        self._wake.set()

    def status(self) -> SealerStatus:
        with self._lock:
            return self._status

    def run_in_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sealer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Seal what is journaled (if the key allows) and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    # --- sealer thread ---------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _run(self) -> None:
        index = open_sealing_queue(self._index_path)
        backend: KeyBackend | None = None
        ledger: Ledger | None = None
        try:
            while True:
                if ledger is None:
                    try:
                        backend = open_backend(self._spec)
                        ledger = self._open_ledger(index, backend)
                        self._set(state="ok", error=None, key=backend.protection)
                    except (KeyBackendError, LedgerError, OSError, sqlite3.Error) as exc:
                        if backend is not None:
                            backend.close()
                            backend = None
                        self._fault(
                            index,
                            f"key unavailable: {exc}"
                            if isinstance(exc, KeyBackendError)
                            else str(exc),
                        )
                else:
                    try:
                        self._seal_pending(index, ledger)
                    except (KeyBackendError, LedgerError, OSError, sqlite3.Error) as exc:
                        # A full or read-only disk, or a key gone: nothing is marked sealed
                        # that is not in the ledger; reopening it sets a torn line aside.
                        what = "signing failed" if isinstance(exc, KeyBackendError) else "ledger"
                        self._fault(index, f"{what}: {exc}")
                        ledger = None
                        if backend is not None:
                            backend.close()
                            backend = None
                if self._stop.is_set():
                    return
                self._wake.wait(RETRY_S if ledger is None else 1.0)
                self._wake.clear()
        finally:
            if backend is not None:
                backend.close()
            index.close()

    def _fault(self, index: SealingQueue, error: str) -> None:
        try:
            backlog = index.pending_count()
        except sqlite3.Error:  # the index itself is what failed: keep the last count
            backlog = self.status().backlog
        if self.status().error != error:
            log.error(
                "sealer: %s (recording continues; %d items wait to be sealed)", error, backlog
            )
        self._set(state="fault", error=error, backlog=backlog)

    def _open_ledger(self, index: SealingQueue, backend: KeyBackend) -> Ledger:
        self._install_certificate(backend)
        self._backend = backend
        ledger = Ledger(self.evidence_dir, self.device_id, backend)
        self._reconcile(index, ledger)
        self._replay(index)
        if ledger.next_seq == 0:
            self._append(index, ledger, "genesis", self._genesis_body(backend), ref=None)
        return ledger

    def _replay(self, index: SealingQueue) -> None:
        """Hand the subscriber, in order, every entry it has not had (a power cut can fall
        between the ledger's fsync and the subscriber's own)."""
        after = self._replay_after()
        for row in index.entries_after(-1 if after is None else after):
            self._deliver(Entry.from_line(row["line"].encode()))

    def _install_certificate(self, backend: KeyBackend) -> None:
        """Copy the device certificate chain beside the evidence (it travels with it)."""
        self._chain_pem = None
        if self._certificate is None:
            return
        pem = self._certificate.read_text()
        try:
            chain = load_chain_pem(pem)
        except ValueError as exc:
            raise LedgerError(f"{self._certificate}: not a PEM certificate chain ({exc})") from None
        if not chain or chain[0].public_key() != backend.public_key():
            raise LedgerError(f"{self._certificate}: the certificate is not for this unit's key")
        self._chain_pem = pem
        target = self.evidence_dir / CERT_FILE
        if target.exists() and target.read_text(errors="replace") == pem:
            return
        if target.exists():  # a re-issued certificate, or one a crash mangled: keep it aside
            old = target.read_bytes()
            try:
                aside = f"device-{fingerprint(load_chain_pem(old)[0])[:16]}.pem"
            except (ValueError, IndexError):
                aside = f"device-unreadable-{hashlib.sha256(old).hexdigest()[:16]}.pem"
            os.replace(target, self.evidence_dir / aside)
        tmp = target.with_name(".device.pem.tmp")
        with open(tmp, "w") as f:  # on disk before the rename names it: a power cut after
            f.write(pem)  # the rename must not leave an empty device.pem
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(self.evidence_dir)

    def _genesis_body(self, backend: KeyBackend) -> dict[str, Any]:
        cert = load_chain_pem(self._chain_pem)[0] if self._chain_pem else None
        return {
            "genesis": {
                "device": self.device_id,
                "software": SOFTWARE,
                "key": {"protection": backend.protection, "description": backend.description},
                "certificate_sha256": fingerprint(cert) if cert else None,
            }
        }

    def _reconcile(self, index: SealingQueue, ledger: Ledger) -> None:
        """Index every ledger line the index has not seen (power failed in between)."""
        last = index.last_entry()
        start = 0 if last is None else last["offset"] + len(last["line"].encode()) + 1
        if start >= ledger.size:
            return
        with open(self.evidence_dir / LEDGER_FILE, "rb") as f:
            f.seek(start)
            for rel, line in iter_lines(f):
                if start + rel >= ledger.size:
                    break
                entry = Entry.from_line(line)
                index.record_entry(
                    entry.seq,
                    entry.kind,
                    entry.hash,
                    start + rel,
                    line.decode().rstrip("\n"),
                    entry.ref,
                    entry.segment_name,
                )
                log.info("sealer: re-indexed ledger entry %d after an interruption", entry.seq)

    def _append(
        self,
        index: SealingQueue,
        ledger: Ledger,
        kind: str,
        body: dict[str, Any],
        *,
        ref: int | None,
        file: str | None = None,
    ) -> Entry:
        offset = ledger.size
        entry = ledger.append(kind, body, stamp_now(), file=file, ref=ref)
        line = entry.to_line().decode().rstrip("\n")
        index.record_entry(entry.seq, entry.kind, entry.hash, offset, line, ref, entry.segment_name)
        self._set(last_seq=entry.seq)
        self._deliver(entry)
        return entry

    def _deliver(self, entry: Entry) -> None:
        try:
            self._on_entry(entry)
        except Exception:
            log.exception("entry subscriber failed on entry %d", entry.seq)

    def _seal_pending(self, index: SealingQueue, ledger: Ledger) -> None:
        while pending := index.pending_events(20):
            self._set(backlog=index.pending_count())
            for event in pending:
                self._seal_one(index, ledger, event)
        self._set(backlog=0)

    def _seal_one(self, index: SealingQueue, ledger: Ledger, event: dict[str, Any]) -> None:
        if event["kind"] != "segment_sealed":
            body = {
                "event": {
                    "type": event["kind"],
                    "at": event["at"],
                    "mono_us": event["mono_us"],
                    "detail": event["detail"],
                }
            }
            self._append(index, ledger, "event", body, ref=event["id"])
            return
        name = event["detail"]["name"]
        row = index.segment(name)
        if row is None:
            raise LedgerError(f"journal names segment {name!r} that the index does not know")
        already = index.entry_for_segment(name)
        if already is not None:  # journaled twice: a segment is committed once, ever
            log.warning("sealer: %s is already entry %d; not signing it again", name, already)
            index.mark_event(event["id"], already)
            return
        # An encrypted file cannot be read back here: its provenance is this entry, which
        # commits to the plaintext's hash; C2PA is embedded at the centre on decryption.
        if self._c2pa and not row.get("c2pa") and not row.get("encryption"):
            row = self._embed_c2pa(index, ledger, row)
        context = {k: v for k, v in event["detail"].items() if k != "name"}
        self._append(
            index, ledger, "segment", segment_body(row, context), ref=event["id"], file=name
        )

    def _embed_c2pa(
        self, index: SealingQueue, ledger: Ledger, row: dict[str, Any]
    ) -> dict[str, Any]:
        """Put a C2PA manifest signed by the device key into the file, before the ledger
        commits to it. The media fragments must come out byte for byte the same."""
        from signer.c2pa_embed import C2paEmbedError, embed_manifest, segment_claim

        path = self.evidence_dir / row["name"]
        if self._chain_pem is None or self._backend is None:
            return row
        new = path.with_name(f".{path.name}.c2pa")
        new.unlink(missing_ok=True)
        claim = segment_claim(
            row["name"],
            {
                "device": self.device_id,
                "recording": row["recording_id"],
                "segment": row["seq"],
                "state": row["state"],
                "wall_start": row["wall_start"],
                "wall_end": row["wall_end"],
            },
        )
        try:
            embed_manifest(path, new, self._backend, self._chain_pem, claim)
        except C2paEmbedError as exc:
            log.warning("sealer: %s sealed without C2PA: %s", row["name"], exc)
            return row
        written = hash_segment_file(new)
        if fragment_digests(new) != fragment_digests(path):
            new.unlink()
            log.error(
                "sealer: C2PA embedding changed the media of %s; kept without C2PA", row["name"]
            )
            return row
        os.chmod(new, 0o444)
        os.replace(new, path)
        fsync_dir(self.evidence_dir)
        index.update_segment_file(row["name"], written, c2pa=True)
        updated = index.segment(row["name"])
        assert updated is not None
        return updated
