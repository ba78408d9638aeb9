"""The recording path as the daemon runs it, without the devices: Recorder, the event
journal and the Sealer, each on its own thread.

Owns: wiring ``recorder.Recorder`` -> index event journal -> ``signer.sealer.Sealer``
exactly as ``firmware_py.daemon.Daemon`` does (its ``_record_event``: journal the event
in the index, then wake the sealer), so a benchmark drives the same code, threads and
fsyncs as a unit in the field. Packets come from whoever calls ``recorder.sink``.
Must not: add work of its own on the recording path.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from bench.inputs import AUDIO, VIDEO
from evidence.ledger import Entry
from recorder.recorder import Recorder, RecorderEvent, RecorderSettings
from signer.keys import KeySpec
from signer.sealer import Sealer
from store.index import Index

DEVICE_ID = "bench-0001"


def settings(pre_event_s: float = 30.0, segment_s: float = 60.0) -> RecorderSettings:
    """The daemon's defaults (docs/CONFIG.md): 60 s segments, 0.5 s fragments."""
    return RecorderSettings(
        device_id=DEVICE_ID,
        segment_us=round(segment_s * 1e6),
        pre_event_us=round(pre_event_s * 1e6),
    )


class Rig:
    def __init__(
        self,
        root: Path,
        key: KeySpec,
        recorder_settings: RecorderSettings,
        on_entry: Callable[[Entry], None] = lambda e: None,
        certificate: Path | None = None,
    ) -> None:
        self.evidence = root / "evidence"
        self.evidence.mkdir(parents=True)
        index_path = root / "index.sqlite"
        Index.open(index_path).close()  # create the schema before three threads open it
        self.sealer = Sealer(
            self.evidence, index_path, DEVICE_ID, key, certificate, c2pa=False, on_entry=on_entry
        )
        self._events: queue.SimpleQueue[RecorderEvent | None] = queue.SimpleQueue()
        self.recorder = Recorder(
            self.evidence, index_path, recorder_settings, VIDEO, AUDIO, self._events.put
        )
        self._index_path = index_path
        self._journal = threading.Thread(target=self._run_journal, name="journal", daemon=True)

    def start(self) -> None:
        self.sealer.run_in_thread()
        self.recorder.run_in_thread()
        self._journal.start()

    def _run_journal(self) -> None:
        """Daemon._drain/_record_event: the daemon's main thread, minus the status view."""
        index = Index.open(self._index_path)
        try:
            while (event := self._events.get()) is not None:
                detail = (
                    {"name": event.detail["name"]}
                    if event.kind == "segment_sealed"
                    else event.detail
                )
                index.add_event(event.kind, event.mono_us, event.at, detail)
                self.sealer.notify()
        finally:
            index.close()

    def close(self, timeout: float = 600.0) -> None:
        """The daemon's shutdown order: seal what is written, journal it, sign it."""
        self.recorder.close(timeout)
        self._events.put(None)
        self._journal.join(timeout)
        self.sealer.close(timeout)
