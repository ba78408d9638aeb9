"""MQTT: how fast the uplink drains its outbox of real ledger lines to a local
mosquitto, against ``mosquitto_pub -q 1 -l`` sending the same lines.

Owns: the broker set-up (the project's own recipe, ``tests/mqttfixtures.py``: the
shipped mosquitto configuration, mutual TLS, QoS 1), the worker that queues N ledger
lines in ``uplink.client.Uplink``'s durable outbox and times ``start()`` -> outbox empty
(every line PUBACKed and deleted), a worker that publishes the same lines with bare
paho-mqtt (the client library's own ceiling, for diagnosis), and the baseline. The
lines are the ledger the seal benchmark wrote, repeated to N.
Must not: subscribe anything: QoS 1 to the broker is what the outbox waits for.

By hand: ``python -m bench.mqtt uplink|paho PORT CA CERT KEY LINES WORKDIR``.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.measure import REPO, Meter, emit, peak_rss_mb, percentiles, run_command, run_worker
from bench.results import Context, Figure, Result
from bench.rig import DEVICE_ID

TIMEOUT_S = 120.0


def fixtures() -> ModuleType:
    """tests/mqttfixtures.py: the project's real-broker recipe (one copy, not two)."""
    sys.path.insert(0, str(REPO / "tests"))
    import mqttfixtures  # type: ignore[import-not-found]

    return mqttfixtures


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _uplink(port: int, tls: tuple[str, str, str], lines: list[bytes], work: Path) -> Any:
    from uplink.client import Uplink, UplinkSettings

    ca, cert, key = tls
    settings = UplinkSettings(
        host="127.0.0.1",
        port=port,
        device_id=DEVICE_ID,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        heartbeat_s=3600,
    )
    uplink = Uplink(
        settings, work / "outbox.sqlite", dict, lambda c: {"ok": True}, lambda kind, detail: None
    )
    put_ms = []
    for seq, line in enumerate(lines):
        t = time.perf_counter()
        uplink.publish_entry(seq, line)
        put_ms.append((time.perf_counter() - t) * 1e3)
    meter = Meter()
    uplink.start()
    _wait(lambda: uplink.status()["connected"], "the uplink to connect")
    connected = meter.cost().wall_s
    _wait(lambda: uplink.status()["backlog_entries"] == 0, "the outbox to drain")
    cost = meter.cost()
    uplink.close()
    return {"cost": asdict(cost), "connect_s": connected, "put_ms": percentiles(put_ms)}


def _paho(port: int, tls: tuple[str, str, str], lines: list[bytes], topic: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from uplink.client import PAHO_INFLIGHT

    ca, cert, key = tls
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    client.max_inflight_messages_set(PAHO_INFLIGHT)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *a: acked.release()
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    meter = Meter()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(TIMEOUT_S)
    for line in lines:
        client.publish(topic, line, qos=1)
    for _ in lines:
        if not acked.acquire(timeout=TIMEOUT_S):
            raise RuntimeError("paho: PUBACKs stopped coming")
    cost = meter.cost()
    client.disconnect()
    client.loop_stop()
    return {"cost": asdict(cost)}


def _topic() -> str:
    from protocol.topics import DEFAULT_PREFIX, Topics

    return Topics(DEFAULT_PREFIX, DEVICE_ID).ledger


def _worker(mode: str, port: int, tls: tuple[str, str, str], src: Path, work: Path) -> Any:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lines = [line.rstrip(b"\n") for line in src.read_bytes().splitlines()]
    out = _uplink(port, tls, lines, work) if mode == "uplink" else _paho(port, tls, lines, _topic())
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _message_file(ledger: Path, n: int, out: Path) -> tuple[Path, int]:
    lines = ledger.read_bytes().splitlines(keepends=True)
    chosen = list(itertools.islice(itertools.cycle(lines), n))
    out.write_bytes(b"".join(chosen))
    return out, sum(len(x) - 1 for x in chosen)


def run(ctx: Context) -> Result:
    from bench.seal import ledger_lines
    from uplink.client import PAHO_INFLIGHT

    area = ctx.area("mqtt")
    ledger = ledger_lines(ctx)
    if not ledger.exists():  # --only mqtt: let the seal worker write some real lines
        run_worker("bench.seal", "software", str(area / "seal"), "20", "10", str(ledger))
    n = ctx.pick(4000, 800)
    messages, payload = _message_file(ledger, n, area / "messages.jsonl")
    fx = fixtures()
    best: dict[str, Any] = {}
    with fx.running_broker(area / "broker") as broker:
        tls = (str(broker.pki.ca_file), *map(str, broker.pki.issue(DEVICE_ID)))
        pub_tls = (str(broker.pki.ca_file), *map(str, broker.pki.issue("bench-pub")))
        baseline = [
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "5",
            "--cafile", pub_tls[0], "--cert", pub_tls[1], "--key", pub_tls[2],
            "-i", "bench-pub", "-q", "1", "-M", str(PAHO_INFLIGHT), "-t", _topic(), "-l",
        ]  # fmt: skip
        for _ in range(ctx.repeat):
            runs = {
                "mosquitto_pub": {"cost": asdict(run_command(baseline, stdin=messages))},
                **{
                    mode: run_worker(
                        "bench.mqtt", mode, str(broker.port), *tls, str(messages), str(area / mode)
                    )
                    for mode in ("uplink", "paho")
                },
            }
            for name, r in runs.items():
                if name not in best or r["cost"]["wall_s"] < best[name]["cost"]["wall_s"]:
                    best[name] = r
    rate = {k: n / v["cost"]["wall_s"] for k, v in best.items()}
    cpu_ms = {k: 1e3 * (v["cost"]["user_s"] + v["cost"]["sys_s"]) / n for k, v in best.items()}
    base = "mosquitto_pub -q 1 -l (same lines, same broker, TLS)"
    figures = [
        Figure("uplink outbox drain rate", rate["uplink"], "msg/s", rate["mosquitto_pub"], base,
               note=f"{cpu_ms['uplink']:.3f} CPU ms/msg vs {cpu_ms['mosquitto_pub']:.3f}; "
               f"includes the TLS connect ({best['uplink']['connect_s'] * 1e3:.0f} ms)"),
        Figure("bare paho-mqtt QoS 1 (diagnostic)", rate["paho"], "msg/s", rate["mosquitto_pub"],
               base, note=f"{cpu_ms['paho']:.3f} CPU ms/msg"),
        Figure("outbox put (publish_entry, fsync'ed) (p99)",
               best["uplink"]["put_ms"]["p99"], "ms",
               note=f"p50 {best['uplink']['put_ms']['p50']:.2f} ms; on the sealer's path"),
    ]  # fmt: skip
    return Result(
        id="mqtt",
        title="MQTT outbox drain",
        what=(
            f"{n} real ledger lines ({payload / n / 1e3:.1f} kB average) to a local mosquitto "
            "2.0 with the shipped configuration (mutual TLS 1.2, persistence on), QoS 1, "
            f"{PAHO_INFLIGHT} in flight for all three; uplink: outbox filled first, then "
            f"start() -> outbox empty; best of {ctx.repeat} by wall time."
        ),
        command=f"python -m bench --only mqtt{' --quick' if ctx.quick else ''}",
        figures=figures,
        details={"best": best, "rate": rate, "cpu_ms_per_msg": cpu_ms, "baseline": baseline},
    )


if __name__ == "__main__":
    mode, port, ca, cert, key, src, work = sys.argv[1:8]
    emit(_worker(mode, int(port), (ca, cert, key), Path(src), Path(work)))
