"""`liuhen central serve --config FILE`: the collector, verifier and fleet monitor, one process.

Owns: building the process from its configuration (``central.config``) — the store,
the trust directory, the MQTT session (``central.ingest``), the upload endpoint and the
monitor page (``central.web``) — refusing a configuration whose files cannot be used
(exit 78, naming the key), the ticker that sweeps time-based alerts and pushes page
updates, and a clean stop on SIGTERM/SIGINT. Must not: verify, store or decide
anything itself; run on a unit.

The lead registers it in the CLI: ``add_parser(subparsers)`` adds ``serve`` and
``run_serve(args)`` runs it. Also ``python -m central.serve --config FILE``.
Exit status: 0 stopped cleanly, 2 bad usage, 69 a port or the database is unavailable,
78 bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from central.alerts import TITLES, AlertBook, severity
from central.blobs import Blobs
from central.collector import Collector
from central.config import CentralConfig, CentralConfigError, load
from central.hub import Hub
from central.ingest import Ingest
from central.running import until_stopped
from central.service import Central
from central.store import StoreError, open_store
from central.trust import Trust
from central.web import (
    MonitorApi,
    TlsHTTPServer,
    monitor_context,
    monitor_handler,
    upload_context,
    upload_handler,
)

log = logging.getLogger(__name__)

EX_UNAVAILABLE = 69
EX_CONFIG = 78
TICK_S = 0.5


class Unavailable(RuntimeError):
    """A port or the database cannot be had (exit 69)."""


def _tls(what: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except (OSError, ssl.SSLError, ValueError) as exc:
        text = str(exc)
        raise CentralConfigError(text if text.startswith(what) else f"{what}: {text}") from None


class CentralServer:
    """The whole collector; ``start()``, then ``close()``."""

    def __init__(self, cfg: CentralConfig) -> None:
        self.cfg = cfg
        trust = _tls("trust.directory", lambda: Trust.from_dir(Path(cfg.trust.directory), "trust.directory"))  # fmt: skip
        receipt_key = None
        if cfg.collector.receipt_key_file:
            from signer.keys import KeyBackendError, KeySpec, open_backend

            try:
                receipt_key = open_backend(KeySpec(kind="software", path=cfg.collector.receipt_key_file))  # fmt: skip
            except KeyBackendError as exc:
                raise CentralConfigError(f"collector.receipt_key_file: {exc}") from None
        c = cfg.collector
        upload_tls = _tls("collector.cert_file/key_file/client_ca_file",
                          lambda: upload_context(c.cert_file, c.key_file, c.client_ca_file))  # fmt: skip
        m = cfg.monitor
        monitor_tls = _tls("monitor.cert_file/key_file/client_ca_file",
                           lambda: monitor_context(m.cert_file, m.key_file, m.client_ca_file))  # fmt: skip
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            self.store = open_store(*cfg.database())
        except (OSError, StoreError) as exc:
            raise Unavailable(str(exc)) from None
        self.hub = Hub()
        self.central = Central(self.store, trust, AlertBook(self.store, cfg.alerts, self.hub.publish), cfg.mqtt.topic_prefix)  # fmt: skip
        self.central.on_changed = self._touch
        self.blobs = Blobs(cfg.data_dir)
        self.collector = Collector(
            self.store, self.blobs, cfg.central.id, max_segment_bytes=c.max_segment_bytes,
            max_request_bytes=c.max_request_bytes, receipt_key=receipt_key,
            alert=self.central.raise_alert, changed=self.hub.touch,
        )  # fmt: skip
        self.central.collector = self.collector
        self.ingest = _tls("mqtt.ca_file/cert_file/key_file", lambda: Ingest(cfg.mqtt, self.central.take))  # fmt: skip
        api = MonitorApi(self.central.units, self.central.detail, self.alerts, self.stats, self.media, self.hub)  # fmt: skip
        try:
            self.uploads = TlsHTTPServer((c.listen, c.port), upload_handler(self.collector), upload_tls)  # fmt: skip
            self.monitor = TlsHTTPServer((m.listen, m.port), monitor_handler(api), monitor_tls)
        except OSError as exc:
            raise Unavailable(f"cannot listen: {exc}") from None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _touch(self, devices: set[str]) -> None:
        for device in devices:
            self.hub.touch(device)

    # --- for the page ----------------------------------------------------------------
    def alerts(self) -> list[dict[str, Any]]:
        return [{**a, "severity": severity(a["code"]), "title": TITLES.get(a["code"], a["code"])}
                for a in self.store.alerts(active=True)]  # fmt: skip

    def stats(self) -> dict[str, Any]:
        return {**self.central.stats(), "queue": self.ingest.depth(),
                "mqtt_connected": self.ingest.connected.is_set(),
                "mqtt_error": self.ingest.last_error, "store": self.store.stats()}  # fmt: skip

    def media(self, sha256: str) -> Path | None:
        row = self.store.segment_by_sha256(sha256)
        path = self.blobs.stored(sha256)
        return path if row is not None and row["upload"] == "stored" and path.exists() else None

    @property
    def monitor_url(self) -> str:
        scheme = "https" if self.monitor.context else "http"
        return f"{scheme}://{self.cfg.monitor.listen}:{self.monitor.port}/"

    @property
    def upload_url(self) -> str:
        return f"https://{self.cfg.collector.listen}:{self.uploads.port}"

    # --- running ---------------------------------------------------------------------
    def start(self) -> None:
        self.ingest.start()
        for name, target in (("central-uploads", self.uploads.serve_forever),
                             ("central-monitor", self.monitor.serve_forever),
                             ("central-ticker", self._tick)):  # fmt: skip
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _tick(self) -> None:
        last_sweep = 0.0
        while not self._stop.wait(TICK_S):
            try:
                dirty = self.hub.take_dirty()
                if dirty and self.hub.listening:
                    self.hub.publish("units", [self.central.summary(d) for d in sorted(dirty)])
                if time.monotonic() - last_sweep >= 1.0:
                    self.central.sweep()
                    last_sweep = time.monotonic()
            except Exception:
                log.exception("central: ticker failed; going on")

    def close(self) -> None:
        self._stop.set()
        self.ingest.close()
        self.hub.close()
        for server in (self.uploads, self.monitor):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(10)
        self.store.close()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="collect, verify and monitor the fleet: MQTT, uploads, web page",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--config", type=Path, required=True, help="TOML configuration (docs/CENTRAL.md)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")  # fmt: skip
    parser.set_defaults(func=run_serve)
    return parser


def run_serve(args: argparse.Namespace, out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:  # fmt: skip
    """Serve until SIGTERM/SIGINT, ``--duration``, or ``stop`` is set (tests)."""
    try:
        server = CentralServer(load(args.config))
    except CentralConfigError as exc:
        print(f"liuhen central serve: {exc}", file=sys.stderr)
        return EX_CONFIG
    except Unavailable as exc:
        print(f"liuhen central serve: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    server.start()
    cfg = server.cfg
    print(f"liuhen central serve: MQTT {cfg.mqtt.host}:{cfg.mqtt.port} as {cfg.mqtt.client_id}; "
          f"uploads {server.upload_url}; monitor {server.monitor_url}", file=out, flush=True)  # fmt: skip
    try:
        until_stopped(stop or threading.Event(), getattr(args, "duration", None))
    finally:
        server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    parser = argparse.ArgumentParser(prog="liuhen central")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
