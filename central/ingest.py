"""The collector's MQTT session: a persistent MQTT 5 session, QoS 1, acknowledged late.

Owns: the paho client (mutual TLS, clean start off, a session expiry, subscriptions to
every unit's presence, status and ledger topics), a queue between paho's network thread
and one ingest thread, and acknowledging each QoS 1 message only after the batch it is
in has been stored (``manual_ack``): the broker is the hand-over point (docs/MQTT.md),
so a message the collector has not durably stored stays the broker's responsibility
and comes again after a crash. Must not: verify or store anything itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.config import MqttSection
from central.service import Message
from protocol.topics import fleet_filter

log = logging.getLogger(__name__)

BATCH = 500
RETRY_S = 2.0
LEAVES = ("presence", "status", "ledger")


class Ingest:
    def __init__(self, settings: MqttSection, take: Callable[[list[Message]], None]) -> None:
        self.settings = settings
        self.take = take
        self.connected = threading.Event()
        self.last_error: str | None = None
        self._queue: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="central-ingest", daemon=True)
        s = settings
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)  # fmt: skip
        self.client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_seconds
        self._thread.start()
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive_seconds,
                                  clean_start=False, properties=props)  # fmt: skip
        self.client.loop_start()

    def close(self) -> None:
        """Stop taking messages; what is queued and not stored is not acknowledged (the
        broker keeps it for the session)."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(30)
        self.client.disconnect()
        self.client.loop_stop()

    def depth(self) -> int:
        return self._queue.qsize()

    # --- paho's thread --------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:  # fmt: skip
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.error("central: %s", self.last_error)
            return
        self.last_error = None
        prefix = self.settings.topic_prefix
        client.subscribe([(fleet_filter(prefix, leaf), 1) for leaf in LEAVES])
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:  # fmt: skip
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(Message(message.topic, bytes(message.payload), message.mid, message.qos))

    # --- the ingest thread ------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stop.set()
                    break
                batch.append(more)
            self._store(batch)

    def _store(self, batch: list[Message]) -> None:
        while True:
            try:
                self.take(batch)
                break
            except Exception as exc:  # the database: keep the batch, never ack it unstored
                self.last_error = f"storing failed: {exc}"
                log.exception("central: storing %d messages failed; retrying", len(batch))
                if self._stop.wait(RETRY_S):
                    return
        for message in batch:
            if message.qos:
                self.client.ack(message.mid, message.qos)
