"""The uplink: one unit's MQTT 5 session with the centre (docs/MQTT.md).

Owns: the paho-mqtt client and its network thread (``loop_start``: every byte of network
I/O, TLS and reconnection with backoff happen there), the birth/death certificates and
their bdseq, the heartbeat thread, the outbox sender thread (ledger lines in order,
deleted only after PUBACK), and the command worker thread (verify, hand to the daemon,
reply). Must not: decide when to record, block the caller on the network, or drop a
ledger line the broker has not acknowledged.

The daemon's side is four calls: ``start()``, ``publish_entry(seq, line)``,
``status()`` and ``close()``; it is called back through ``status`` (its status dict),
``on_command`` (an authenticated, fresh command) and ``on_event`` (something the
ledger should record, e.g. a refused command).

Threads and what they may touch:
- the caller's: ``publish_entry`` (SQLite insert, fsync'ed) and ``status()`` (memory);
- paho's loop thread: callbacks only queue work or publish (paho queues, never waits);
- ``uplink-sender``: outbox reads/deletes, ``client.publish`` of ledger lines;
- ``uplink-heartbeat``: the daemon's status provider, status and birth publishes;
- ``uplink-commands``: command checks, ``on_command``/``on_event``, replies.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from evidence.certs import fingerprint, load_chain_pem
from evidence.ledger import key_id
from hw.clock import clock_synced
from protocol.topics import DEFAULT_PREFIX, Topics, check_device_id, check_prefix
from uplink import payloads
from uplink.commands import (
    UPLINK_COMMANDS,
    Command,
    CommandRefused,
    CommandVerifier,
    SeenNonces,
    load_command_keys,
)
from uplink.outbox import Outbox, Queued
from uplink.store import Store

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
CommandHandler = Callable[[dict[str, Any]], dict[str, Any]]
EventSink = Callable[[str, dict[str, Any]], None]

LEDGER_CONTENT_TYPE = "application/vnd.liuhen.ledger-entry.v1+json"
JSON_CONTENT_TYPE = "application/json"
SEND_WINDOW = 100  # ledger lines handed to paho and not yet acknowledged
PAHO_INFLIGHT = 50  # of those, on the wire at once (paho queues the rest, in order)
ACK_TIMEOUT_S = 60.0  # no PUBACK for this long while connected: send the window again
NACK_RETRY_S = 5.0  # after a PUBACK with a failure reason code
MAX_INCOMING_BYTES = 2 << 20  # MQTT 5 Maximum Packet Size: the broker drops bigger ones
COMMAND_QUEUE = 16
REPLY_EXPIRY_S = 300
CORRELATION_MAX = 1024
REFUSAL_EVENTS_PER_MINUTE = 10


class UplinkError(RuntimeError):
    """The uplink cannot be set up as configured; the message names the setting."""


@dataclass(frozen=True, kw_only=True)
class UplinkSettings:
    """The ``[uplink]`` configuration section (docs/MQTT.md, "Configuration")."""

    host: str
    port: int = 8883
    device_id: str
    ca_file: str | None = None  # None: the system's trust store
    cert_file: str | None = None  # TLS client certificate (chain), PEM
    key_file: str | None = None  # its private key, PEM (see docs/MQTT.md for tokens)
    topic_prefix: str = DEFAULT_PREFIX
    heartbeat_s: float = 10.0
    heartbeat_recording_s: float | None = None
    command_key_file: str | None = None  # PEM public key(s) of the central command signer
    keepalive_s: int = 30
    device_cert_file: str | None = (
        None  # evidence certificate (keys.certificate); default cert_file
    )
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"uplink.{what}")

        need(bool(self.host), "host: must not be empty")
        need(1 <= self.port <= 65535, f"port: must be 1..65535 (got {self.port})")
        check_device_id(self.device_id)
        check_prefix(self.topic_prefix)
        need(
            1 <= self.heartbeat_s <= 3600, f"heartbeat_s: must be 1..3600 (got {self.heartbeat_s})"
        )
        need(
            self.heartbeat_recording_s is None
            or 1 <= self.heartbeat_recording_s <= self.heartbeat_s,
            f"heartbeat_recording_s: must be 1..heartbeat_s (got {self.heartbeat_recording_s})",
        )
        need(
            5 <= self.keepalive_s <= 3600, f"keepalive_s: must be 5..3600 (got {self.keepalive_s})"
        )
        need(
            0 < self.reconnect_min_s <= self.reconnect_max_s <= 3600,
            "reconnect_min_s/reconnect_max_s: need 0 < min <= max <= 3600",
        )
        need(
            (self.cert_file is None) == (self.key_file is None),
            "cert_file/key_file: give both (mutual TLS) or neither",
        )


def software_version() -> str:
    try:
        return f"liuhen {version('liuhen')}"
    except PackageNotFoundError:
        return "liuhen (unknown version)"


def load_identity(settings: UplinkSettings) -> dict[str, str | None]:
    """What the birth certificate says about the unit's keys (schema: presence)."""
    identity: dict[str, str | None] = {
        "key_id": None,
        "device_certificate_sha256": None,
        "device_certificate": None,
        "tls_certificate_sha256": None,
    }
    if settings.cert_file:
        identity["tls_certificate_sha256"] = fingerprint(
            _read_chain(settings.cert_file, "cert_file")[0]
        )
    device_file = settings.device_cert_file or settings.cert_file
    if device_file:
        what = "device_cert_file" if settings.device_cert_file else "cert_file"
        chain = _read_chain(device_file, what)
        public = chain[0].public_key()
        identity["device_certificate_sha256"] = fingerprint(chain[0])
        identity["device_certificate"] = Path(device_file).read_text("ascii")
        if isinstance(public, ec.EllipticCurvePublicKey):
            identity["key_id"] = key_id(public)
    return identity


def _read_chain(path: str, what: str) -> list[Any]:
    try:
        chain = load_chain_pem(Path(path).read_bytes())
    except OSError as exc:
        raise UplinkError(f"uplink.{what}: cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise UplinkError(f"uplink.{what}: {path} is not a PEM certificate ({exc})") from None
    if not chain:
        raise UplinkError(f"uplink.{what}: {path} holds no certificate")
    return chain


def tls_context(settings: UplinkSettings) -> ssl.SSLContext:
    """TLS 1.2+ client context: the broker must prove its name; we present ours."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"uplink.ca_file: cannot load {settings.ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file and settings.key_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise UplinkError(
                f"uplink.cert_file/key_file: cannot load {settings.cert_file} with "
                f"{settings.key_file}: {exc}"
            ) from None
    return context


class _RefusalLimiter:
    """At most N refusal events a minute reach the ledger; the rest are counted."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._times: list[float] = []
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < 60]
        if len(self._times) >= self._per_minute:
            self.suppressed += 1
            return False
        self._times.append(now)
        return True


class Uplink:
    def __init__(
        self,
        settings: UplinkSettings,
        outbox_path: Path,
        status: StatusProvider,
        on_command: CommandHandler,
        on_event: EventSink,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, settings.device_id)
        self._status_provider = status
        self._on_command = on_command
        self._on_event = on_event
        self._identity = load_identity(settings)
        keys = {}
        if settings.command_key_file:
            try:
                keys = load_command_keys(Path(settings.command_key_file))
            except ValueError as exc:
                raise UplinkError(f"uplink.command_key_file: {exc}") from None
        self._store = Store(outbox_path)
        self._outbox = Outbox(self._store)
        self._verifier = CommandVerifier(settings.device_id, keys, SeenNonces(self._store))
        self._software = software_version()

        self._lock = threading.Lock()  # guards the fields below
        self._connected = False
        self._bdseq = self._store.get_meta("bdseq", -1)
        self._last_error: str | None = None
        self._last_puback_seq: int | None = None
        self._last_status: dict[str, Any] = {}
        self._born_as: tuple[Any, Any] | None = None  # (state, officer) in the last birth

        self._stop = threading.Event()
        self._send_wake = threading.Event()
        self._beat_wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, ReasonCode]] = queue.SimpleQueue()
        self._rewind: int | None = None  # an entry older than the send cursor was queued
        self._commands: queue.Queue[tuple[bytes, Properties | None] | None] = queue.Queue(
            COMMAND_QUEUE
        )
        self._limiter = _RefusalLimiter(REFUSAL_EVENTS_PER_MINUTE)
        self._threads: list[threading.Thread] = []
        self._client = self._make_client()
        self._started = False

    # --- the daemon's side -----------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and keep connecting, with backoff, until close()."""
        if self._started:
            raise UplinkError("uplink already started")
        self._started = True
        self._client.tls_set_context(tls_context(self.settings))
        snapshot = self._daemon_status()  # so the first birth already says state/officer
        with self._lock:
            self._last_status = snapshot
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=True,
            properties=self._connect_properties(),
        )
        self._client.loop_start()
        for name, target in (
            ("uplink-sender", self._send_loop),
            ("uplink-heartbeat", self._beat_loop),
            ("uplink-commands", self._command_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def publish_entry(self, seq: int, line: bytes) -> None:
        """Queue a ledger line durably (fsync'ed by SQLite), then let the sender publish
        it. Never waits for the network. Raises ValueError for a bad seq or line, or
        OutboxConflict for a different line under a queued seq."""
        if self._outbox.put(seq, line) is Queued.BEHIND:
            with self._lock:  # the sender may be past it: make it look back
                self._rewind = seq if self._rewind is None else min(self._rewind, seq)
        self._send_wake.set()

    def last_queued_seq(self) -> int | None:
        """The highest ledger seq ever queued here: on start the daemon queues every
        ledger entry after it (a power cut can fall between the ledger and the outbox)."""
        return self._outbox.highest_queued()

    def status_changed(self) -> None:
        """Optional: the daemon's state or officer changed; send a heartbeat now."""
        self._beat_wake.set()

    def status(self) -> dict[str, Any]:
        backlog = self._outbox.backlog()
        with self._lock:
            return {
                "connected": self._connected,
                "broker": f"{self.settings.host}:{self.settings.port}",
                "bdseq": self._bdseq,
                "backlog_entries": backlog.entries,
                "backlog_bytes": backlog.bytes,
                "oldest_unsent_seq": backlog.oldest_seq,
                "last_puback_seq": self._last_puback_seq,
                "last_error": self._last_error,
            }

    def close(self, timeout: float = 5.0) -> None:
        """Publish a death (reason ``closed``), then DISCONNECT cleanly: the broker
        discards the last will. The outbox keeps whatever was not acknowledged."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._send_wake.set()
        self._beat_wake.set()
        with contextlib.suppress(queue.Full):
            self._commands.put_nowait(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._started:
            if self._is_connected():
                info = self._publish_json(
                    self.topics.presence,
                    payloads.death(
                        self.settings.device_id, self._bdseq, "closed", at=payloads.now_text()
                    ),
                    qos=1,
                    retain=True,
                )
                while not info.is_published() and time.monotonic() < deadline:
                    time.sleep(0.01)
            self._client.disconnect()
            stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
            stopper.start()
            stopper.join(max(0.1, deadline - time.monotonic()))
        self._store.close()

    # --- paho's loop thread ----------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.device_id,
            protocol=mqtt.MQTTv5,
        )
        client.suppress_exceptions = True  # a bug in a callback must not end the loop
        paho_log = logging.getLogger("uplink.paho")
        paho_log.addFilter(self._quiet_not_connected)
        client.enable_logger(paho_log)
        client.reconnect_delay_set(self.settings.reconnect_min_s, self.settings.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(PAHO_INFLIGHT)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.message_callback_add(self.topics.command, self._on_command_message)
        return client

    @staticmethod
    def _quiet_not_connected(record: logging.LogRecord) -> bool:
        """paho logs "Client is not connected" at ERROR on every loop while the broker is
        away; the uplink reports the real error once, in ``status()`` and its own log."""
        return not record.getMessage().startswith("Client is not connected")

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        props.MaximumPacketSize = MAX_INCOMING_BYTES
        return props

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        """A new connection, a new bdseq: its death (the will) names it."""
        bdseq = self._store.next_counter("bdseq")
        with self._lock:
            self._bdseq = bdseq
        will = payloads.death(self.settings.device_id, bdseq, "lost")
        client.will_set(
            self.topics.presence,
            payloads.encode(will),
            qos=1,
            retain=True,
            properties=self._json_properties(PacketTypes.WILLMESSAGE),
        )

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._set_error(f"broker refused the connection: {reason}")
            return
        with self._lock:
            self._connected = True
            self._last_error = None
        log.info("uplink: connected to %s:%d", self.settings.host, self.settings.port)
        client.subscribe(self.topics.command, qos=1)
        self._publish_birth()
        self._send_wake.set()
        self._beat_wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` block: the exception is current.
        exc = sys.exception()
        where = f"{self.settings.host}:{self.settings.port}"
        self._set_error(
            f"cannot connect to {where}: {exc}" if exc else f"cannot connect to {where}"
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._connected = False
        if reason.is_failure and not self._stop.is_set():
            self._set_error(f"disconnected: {reason}")

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Called with paho's message lock held: only hand the ack over.
        self._acks.put((mid, reason))
        self._send_wake.set()

    def _on_command_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        try:
            self._commands.put_nowait((bytes(message.payload), message.properties))
        except queue.Full:
            self._reply(message.properties, None, None, error=("busy", "command queue is full"))

    # --- helpers any thread may use --------------------------------------------------

    def _is_connected(self) -> bool:
        with self._lock:
            return self._connected

    def _set_error(self, error: str) -> None:
        with self._lock:
            changed = error != self._last_error
            self._last_error = error
        if changed:
            log.warning("uplink: %s (recording goes on; entries wait in the outbox)", error)

    def _json_properties(self, packet_type: int, expiry_s: int | None = None) -> Properties:
        props = Properties(packet_type)
        props.ContentType = JSON_CONTENT_TYPE
        props.PayloadFormatIndicator = 1
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        return props

    def _publish_json(
        self,
        topic: str,
        document: dict[str, Any],
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        return self._client.publish(
            topic,
            payloads.encode(document),
            qos=qos,
            retain=retain,
            properties=properties or self._json_properties(PacketTypes.PUBLISH),
        )

    def _publish_birth(self) -> None:
        with self._lock:
            snapshot, bdseq = self._last_status, self._bdseq
            self._born_as = (snapshot.get("state"), snapshot.get("officer"))
        document = payloads.birth(
            self.settings.device_id, bdseq, snapshot, self._software, self._identity
        )
        self._publish_json(self.topics.presence, document, qos=1, retain=True)

    # --- uplink-sender ---------------------------------------------------------------

    def _send_loop(self) -> None:
        inflight: dict[int, int] = {}  # paho mid -> ledger seq
        cursor = 0  # next seq to hand to paho
        hold_until = 0.0
        last_progress = time.monotonic()
        while not self._stop.is_set():
            self._send_wake.wait(1.0)
            self._send_wake.clear()
            acked: list[int] = []
            while True:
                try:
                    mid, reason = self._acks.get_nowait()
                except queue.Empty:
                    break
                seq = inflight.pop(mid, None)
                if seq is None:
                    continue  # a birth, status or reply
                last_progress = time.monotonic()
                if reason.is_failure:
                    self._set_error(f"broker refused ledger entry {seq}: {reason}")
                    cursor = min(cursor, seq)
                    hold_until = time.monotonic() + NACK_RETRY_S
                else:
                    acked.append(seq)
            if acked:
                self._outbox.acknowledged(acked)
                with self._lock:
                    top = max(acked)
                    if self._last_puback_seq is None or top > self._last_puback_seq:
                        self._last_puback_seq = top
            with self._lock:
                if self._rewind is not None:
                    cursor = min(cursor, self._rewind)
                    self._rewind = None
            if not self._is_connected():
                last_progress = time.monotonic()
                continue
            if inflight and time.monotonic() - last_progress > ACK_TIMEOUT_S:
                log.warning("uplink: no PUBACK for %.0f s; sending the window again", ACK_TIMEOUT_S)
                cursor = min(cursor, *inflight.values())
                inflight.clear()
                last_progress = time.monotonic()
            if time.monotonic() < hold_until:
                continue
            cursor = self._hand_to_paho(inflight, cursor)

    def _hand_to_paho(self, inflight: dict[int, int], cursor: int) -> int:
        room = SEND_WINDOW - len(inflight)
        if room <= 0:
            return cursor
        for seq, line in self._outbox.from_seq(cursor, room):
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = LEDGER_CONTENT_TYPE
            props.PayloadFormatIndicator = 1
            props.UserProperty = ("seq", str(seq))
            info = self._client.publish(self.topics.ledger, line, qos=1, properties=props)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                break  # not queued by paho; try again on the next wake
            inflight[info.mid] = seq  # NO_CONN: paho holds it and sends it on reconnect
            cursor = seq + 1
        return cursor

    # --- uplink-heartbeat ------------------------------------------------------------

    def _daemon_status(self) -> dict[str, Any]:
        try:
            snapshot = self._status_provider()
        except Exception:
            log.exception("uplink: the status provider failed")
            return {}
        return snapshot if isinstance(snapshot, dict) else {}

    def _heartbeat_document(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            bdseq, last_puback = self._bdseq, self._last_puback_seq
        return payloads.status(
            self.settings.device_id,
            bdseq,
            snapshot,
            self._outbox.backlog(),
            last_puback,
            clock_synced(),
        )

    def _beat_loop(self) -> None:
        expiry = math.ceil(3 * self.settings.heartbeat_s)
        while not self._stop.is_set():
            snapshot = self._daemon_status()
            with self._lock:
                self._last_status = snapshot
                reborn = self._born_as not in (
                    None,
                    (snapshot.get("state"), snapshot.get("officer")),
                )
            if self._is_connected():
                if reborn:
                    self._publish_birth()  # presence is retained: keep it current
                self._publish_json(
                    self.topics.status,
                    self._heartbeat_document(snapshot),
                    qos=0,
                    retain=True,
                    properties=self._json_properties(PacketTypes.PUBLISH, expiry),
                )
            fast = self.settings.heartbeat_recording_s
            interval = (
                fast if fast and snapshot.get("state") == "recording" else self.settings.heartbeat_s
            )
            self._beat_wake.wait(interval)
            self._beat_wake.clear()

    # --- uplink-commands -------------------------------------------------------------

    def _command_loop(self) -> None:
        while True:
            item = self._commands.get()
            if item is None or self._stop.is_set():
                return
            payload, properties = item
            try:
                self._handle_command(payload, properties)
            except Exception:
                log.exception("uplink: command handling failed")

    def _handle_command(self, payload: bytes, properties: Properties | None) -> None:
        try:
            command = self._verifier.verify(payload)
        except CommandRefused as refused:
            self._refuse(payload, properties, refused)
            return
        self._event("command_accepted", command.as_dict())
        try:
            result = self._execute(command)
        except Exception as exc:
            log.exception("uplink: command %s failed", command.cmd)
            message = f"{type(exc).__name__}: {exc}"
            self._event("command_failed", {**command.as_dict(), "error": message})
            self._reply(properties, command.cmd, command.nonce, error=("failed", message))
            return
        if result.get("ok") is False:
            message = str(result.get("error", "refused by the unit"))
            self._reply(properties, command.cmd, command.nonce, error=("failed", message))
            return
        self._reply(properties, command.cmd, command.nonce, result=result)

    def _execute(self, command: Command) -> dict[str, Any]:
        if command.cmd == "ping":
            return {"pong": True, "uplink": self.status()}
        if command.cmd == "status":
            return {"status": self._heartbeat_document(self._daemon_status())}
        assert command.cmd not in UPLINK_COMMANDS
        result = self._on_command(command.as_dict())
        if not isinstance(result, dict):
            raise TypeError(f"on_command returned {type(result).__name__}, not a dict")
        return result

    def _refuse(
        self, payload: bytes, properties: Properties | None, refused: CommandRefused
    ) -> None:
        log.warning("uplink: command refused (%s): %s", refused.code, refused.message)
        cmd, nonce = refused.known.get("cmd"), refused.known.get("nonce")
        self._reply(properties, cmd, nonce, error=(refused.code, refused.message))
        if self._limiter.allow():
            detail: dict[str, Any] = {
                "code": refused.code,
                "message": refused.message,
                "bytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
                **refused.known,
            }
            if self._limiter.suppressed:
                detail["suppressed_since_last"] = self._limiter.suppressed
                self._limiter.suppressed = 0
            self._event("command_refused", detail)

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        try:
            self._on_event(kind, detail)
        except Exception:
            log.exception("uplink: on_event(%s) failed", kind)

    def _reply(
        self,
        properties: Properties | None,
        cmd: str | None,
        nonce: str | None,
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        topic = self.topics.reply
        props = self._json_properties(PacketTypes.PUBLISH, REPLY_EXPIRY_S)
        if properties is not None:
            asked = getattr(properties, "ResponseTopic", None)
            if isinstance(asked, str) and self.topics.is_reply_topic(asked):
                topic = asked
            correlation = getattr(properties, "CorrelationData", None)
            if isinstance(correlation, bytes) and len(correlation) <= CORRELATION_MAX:
                props.CorrelationData = correlation
        document = payloads.reply(
            self.settings.device_id, cmd=cmd, nonce=nonce, result=result, error=error
        )
        self._publish_json(topic, document, qos=1, properties=props)
