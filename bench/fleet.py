"""Fleet: how many units one ``liuhen central serve`` keeps up with on this machine.

Owns: simulated units' MQTT traffic — a birth each, a status every 10 s and one signed
ledger entry (a segment entry of a 60 s segment: 121 parts) every 60 s per unit, made
with ``evidence.ledger.Ledger`` and software keys — sped up ``--speed`` times (default
100x) with fewer units, against the collector in its own process (``python -m
central.serve``) and a mosquitto with the shipped configuration (tests/mqttfixtures.py),
and deciding, fleet size by fleet size, whether the collector kept up. Must not:
change the collector to make it pass.

Method: an equivalent fleet of F units is simulated as F / speed units, each sending
``speed`` times as often: the collector sees the same number of messages per second of
the same kinds. A size *holds* when, during a run of ``--seconds``, the collector's
queue never held more than 2 s of traffic, and within 2 s of the last publish every
entry and status sent had been verified and stored (counted by the collector itself,
``/api/stats``). The figure is the largest equivalent fleet that holds. What a sped-up
fleet does not reproduce: the broker's connection count (a few publishing connections,
not F), and F units' rows in the database (F / speed units). Simulator, broker and
collector share the machine's cores: the figure is a floor for the collector alone.

    python -m bench.fleet [--quick] [--speed 100] [--seconds 15] [--sizes 5000,10000,...]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.measure import REPO, emit
from bench.results import Context, Figure, Goal, Result

STATUS_S, ENTRY_S = 10.0, 60.0
PER_UNIT = 1 / STATUS_S + 1 / ENTRY_S  # messages per second per unit
PARTS = 121  # a 60 s segment in 0.5 s fragments, plus the init part
SIM_CLIENTS = 2
DRAIN_S = 2.0


def _fixtures() -> Any:
    from bench.mqtt import fixtures

    return fixtures()


# ---------------------------------------------------------------------------
# Units: keys, certificates and pre-made ledgers (signing is not what is measured)
# ---------------------------------------------------------------------------


def make_units(directory: Path, count: int, entries: int) -> list[str]:
    """``count`` units with ``entries`` signed entries each; returns their ids. Kept on
    tmpfs when there is one (the fsyncs of making them are not what is measured)."""
    from evidence.certs import chain_pem
    from evidence.ledger import LEDGER_FILE, Ledger
    from signer.identity import self_signed_device_cert
    from signer.keys import KeySpec, init_key, open_backend
    from signer.sealer import stamp_now

    devices = [f"sim-{i:05d}" for i in range(count)]
    (directory / "trust").mkdir(parents=True, exist_ok=True)
    for n, device in enumerate(devices):
        unit = directory / device
        if (unit / LEDGER_FILE).exists() and len((unit / LEDGER_FILE).read_bytes().splitlines()) >= entries:  # fmt: skip
            continue
        shutil.rmtree(unit, ignore_errors=True)
        unit.mkdir(parents=True)
        spec = KeySpec(kind="software", path=str(unit / "device.key"))
        init_key(spec).close()
        with open_backend(spec) as backend:
            pem = chain_pem(self_signed_device_cert(backend, device))
            (unit / "device.pem").write_text(pem)
            (directory / "trust" / f"{device}.pem").write_text(pem)
            ledger = Ledger(unit, device, backend)
            for seq in range(entries):
                ledger.append("segment", _segment_body(device, n, seq), stamp_now())
    return devices


def _segment_body(device: str, n: int, seq: int) -> dict[str, Any]:
    digest = f"{n:08x}{seq:08x}".ljust(64, "0")
    parts = [[i * 250_000, 250_000, digest] for i in range(PARTS)]
    return {"context": {"officers": [{"id": f"{n:04d}"}]},
            "segment": {"name": f"{device}_r00001_s{seq:04d}.mp4", "recording": 1, "seq": seq,
                        "state": "sealed", "bytes": PARTS * 250_000, "sha256": digest,
                        "parts": parts, "media_start_us": seq * 60_000_000,
                        "media_end_us": (seq + 1) * 60_000_000, "wall_start": "2024-05-02T08:00:00.000Z",
                        "wall_end": "2024-05-02T08:01:00.000Z", "video_frames": 1800,
                        "audio_frames": 2813, "c2pa": False}}  # fmt: skip


# ---------------------------------------------------------------------------
# The simulator (its own process): births, statuses and entries on schedule
# ---------------------------------------------------------------------------


def simulate(cfg: dict[str, Any]) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from uplink import payloads
    from uplink.outbox import Backlog

    units, speed, seconds = cfg["units"], cfg["speed"], cfg["seconds"]
    prefix = "liuhen/v1"
    clients = []
    for i, (cert, key) in enumerate(cfg["tls"]):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sim-{i}", protocol=mqtt.MQTTv5)  # fmt: skip
        client.tls_set(ca_certs=cfg["ca"], certfile=cert, keyfile=key)
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", cfg["port"])
        client.loop_start()
        clients.append(client)
    lines = {d: (Path(cfg["dir"]) / d / "ledger.jsonl").read_bytes().splitlines(keepends=True) for d in units}  # fmt: skip
    expiry = Properties(PacketTypes.PUBLISH)
    expiry.MessageExpiryInterval = 30
    sent = {"births": 0, "statuses": 0, "entries": 0}
    for n, device in enumerate(units):
        pem = (Path(cfg["dir"]) / device / "device.pem").read_text()
        from evidence.certs import load_chain_pem
        from evidence.ledger import key_id

        identity = {"key_id": key_id(load_chain_pem(pem)[0].public_key()),  # type: ignore[arg-type]
                    "device_certificate_sha256": None, "device_certificate": pem,
                    "tls_certificate_sha256": None}  # fmt: skip
        birth = payloads.birth(device, 0, {"state": "recording"}, "bench", identity)
        clients[n % len(clients)].publish(f"{prefix}/{device}/presence", payloads.encode(birth), qos=1, retain=True)  # fmt: skip
        sent["births"] += 1
    status_every, entry_every = STATUS_S / speed, ENTRY_S / speed
    start = time.monotonic() + 0.5
    due: list[tuple[float, int, str]] = []
    for n in range(len(units)):  # spread the phases evenly
        due.append((start + status_every * n / len(units), n, "status"))
        due.append((start + entry_every * n / len(units), n, "entry"))
    heapq.heapify(due)
    next_seq = dict.fromkeys(units, 0)
    worst_late = 0.0
    end = start + seconds
    daemon = {"state": "recording", "segments_sealed": 1, "storage_free_bytes": 20_000_000_000,
              "storage_total_bytes": 32_000_000_000, "battery": {"percent": 80, "charging": False},
              "clock_synced": True, "officer": {"id": "0421"}}  # fmt: skip
    last: dict[tuple[int, str], Any] = {}  # (client, kind) -> its newest MessageInfo
    while due and due[0][0] < end:
        at, n, kind = heapq.heappop(due)
        now = time.monotonic()
        if at > now:
            time.sleep(at - now)
        worst_late = max(worst_late, time.monotonic() - at)
        device, client = units[n], clients[n % len(clients)]
        if kind == "status":
            doc = payloads.status(
                device, 0, daemon, Backlog(0, 0, None), next_seq[device] - 1, True
            )
            last[n % len(clients), kind] = client.publish(f"{prefix}/{device}/status", payloads.encode(doc), qos=0, retain=True, properties=expiry)  # fmt: skip
            sent["statuses"] += 1
            heapq.heappush(due, (at + status_every, n, kind))
        else:
            last[n % len(clients), kind] = client.publish(f"{prefix}/{device}/ledger", lines[device][next_seq[device]], qos=1)  # fmt: skip
            next_seq[device] += 1
            sent["entries"] += 1
            heapq.heappush(due, (at + entry_every, n, kind))
    published_for = time.monotonic() - start
    for info in last.values():  # everything handed over before disconnecting
        info.wait_for_publish(30)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return {**sent, "worst_late_s": worst_late, "published_for_s": published_for}


# ---------------------------------------------------------------------------
# One fleet size against a fresh broker and collector
# ---------------------------------------------------------------------------


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/stats", timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _central(work: Path, broker: Any, trust: Path) -> tuple[subprocess.Popen[str], str]:
    cert, key = broker.pki.issue("central")
    scert, skey = broker.pki.issue("collector", server=True)
    ca = str(broker.pki.ca_file)
    data = work / "central"
    shutil.rmtree(data, ignore_errors=True)
    config = work / "central.toml"
    config.write_text("\n".join([
        "[central]", f'data_dir = "{data}"',
        "[mqtt]", 'host = "127.0.0.1"', f"port = {broker.port}", f'ca_file = "{ca}"',
        f'cert_file = "{cert}"', f'key_file = "{key}"', "session_expiry_seconds = 600",
        "[trust]", f'directory = "{trust}"',
        "[collector]", 'listen = "127.0.0.1"', "port = 0", f'cert_file = "{scert}"',
        f'key_file = "{skey}"', f'client_ca_file = "{ca}"',
        "[monitor]", 'listen = "127.0.0.1"', "port = 0", ""]))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "central.serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=open(work / "central.log", "w"),  # noqa: SIM115
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "monitor " not in line:
        raise RuntimeError(f"central serve did not start: {line!r}; see {work / 'central.log'}")
    url = line.rsplit("monitor ", 1)[1].strip()
    deadline = time.monotonic() + 20
    while not _stats(url)["mqtt_connected"]:
        if time.monotonic() > deadline:
            raise RuntimeError("central serve did not connect to the broker")
        time.sleep(0.05)
    return proc, url


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_size(work: Path, units_dir: Path, devices: list[str], speed: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    fx = _fixtures()
    shutil.rmtree(work / "broker", ignore_errors=True)
    with fx.running_broker(work / "broker") as broker:
        proc, url = _central(work, broker, units_dir / "trust")
        try:
            tls = [list(map(str, broker.pki.issue(f"bench-sim-{i}"))) for i in range(SIM_CLIENTS)]
            cfg = {"units": devices, "speed": speed, "seconds": seconds, "port": broker.port,
                   "ca": str(broker.pki.ca_file), "tls": tls, "dir": str(units_dir)}  # fmt: skip
            (work / "sim.json").write_text(json.dumps(cfg))
            cpu0 = _cpu_s(proc.pid)
            sim = subprocess.Popen([sys.executable, "-m", "bench.fleet", "simulate", str(work / "sim.json")],
                                   stdout=subprocess.PIPE, text=True, cwd=REPO,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
            worst_queue, worst_wait = 0, 0.0
            while sim.poll() is None:
                s = _stats(url)
                worst_queue, worst_wait = max(worst_queue, s["queue"]), max(worst_wait, s["max_wait_s"])  # fmt: skip
                time.sleep(0.25)
            assert sim.stdout is not None
            sent = json.loads(sim.stdout.read().strip().splitlines()[-1])
            stopped = time.monotonic()
            while True:
                s = _stats(url)
                done = s["entries"] >= sent["entries"] and s["statuses"] >= sent["statuses"]
                if done or time.monotonic() - stopped > 30:
                    break
                time.sleep(0.05)
            drain = time.monotonic() - stopped
            cpu = _cpu_s(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(30)
    rate = len(devices) * speed * PER_UNIT
    holds = bool(done and drain <= DRAIN_S and worst_wait <= 2.0 and worst_queue <= 2 * rate)
    return {"units": len(devices), "speed": speed, "equivalent_units": len(devices) * speed,
            "offered_msg_s": rate, "sent": sent, "stored": {k: s[k] for k in ("entries", "statuses", "presences", "rejected")},
            "drain_s": drain, "worst_queue": worst_queue, "worst_wait_s": worst_wait,
            "collector_cpu_s": cpu, "collector_cpu_share": cpu / max(sent["published_for_s"], 1e-9),
            "holds": holds}  # fmt: skip


def sweep(work: Path, sizes: list[int], speed: float, seconds: float, log: Any = print) -> list[dict[str, Any]]:  # fmt: skip
    """Run the equivalent fleet sizes in order until one does not hold."""
    most = max(sizes)
    entries = math.ceil(seconds * speed / ENTRY_S) + 3
    units_dir = Path("/dev/shm/liuhen-bench-fleet") if Path("/dev/shm").is_dir() else work / "units"
    t = time.monotonic()
    devices = make_units(units_dir, math.ceil(most / speed), entries)
    log(f"fleet: {len(devices)} units with {entries} signed entries each ready in {time.monotonic() - t:.0f} s")  # fmt: skip
    runs = []
    try:
        for size in sorted(sizes):
            result = run_size(work, units_dir, devices[: max(1, round(size / speed))], speed, seconds)  # fmt: skip
            runs.append(result)
            _report(result, log)
            if not result["holds"]:
                break
    finally:
        shutil.rmtree(units_dir, ignore_errors=True)  # ~0.4 MB a unit, in memory on tmpfs
    return runs


def _report(result: dict[str, Any], log: Any) -> None:
    log(f"fleet: {result['equivalent_units']:.0f} units ({result['offered_msg_s']:.0f} msg/s): "
            f"{'holds' if result['holds'] else 'DOES NOT HOLD'}; drain {result['drain_s']:.2f} s, "
            f"worst wait {result['worst_wait_s']:.2f} s, collector CPU {100 * result['collector_cpu_share']:.0f}%")  # fmt: skip


def run(ctx: Context) -> Result:
    speed, seconds = 100.0, ctx.pick(20, 10)
    sizes = [2_000, 5_000, 10_000, 20_000, 30_000, 40_000, 60_000, 80_000]
    runs = sweep(ctx.area("fleet"), sizes if not ctx.quick else sizes[:5], speed, seconds)
    held = [r for r in runs if r["holds"]]
    best = max((r["equivalent_units"] for r in held), default=0.0)
    top = max(held, key=lambda r: r["equivalent_units"]) if held else runs[0]
    return Result(
        id="fleet",
        title="Central collector: fleet size held",
        what=(
            f"Simulated units (birth; status every {STATUS_S:.0f} s; one signed 121-part segment "
            f"entry every {ENTRY_S:.0f} s) at {speed:.0f}x speed, {seconds:.0f} s per size, "
            "against `python -m central.serve` (SQLite, persistent MQTT 5 session, every "
            "signature and chain link verified) and mosquitto with the shipped configuration; "
            "a size holds if nothing waited more than 2 s and all was stored within 2 s of "
            "the last publish. Equivalent fleet = units x speed."
        ),
        command=f"python -m bench --only fleet{' --quick' if ctx.quick else ''}",
        figures=[
            Figure(
                "units held by one collector (equivalent fleet)",
                best,
                "units",
                goal=Goal("value", ">=", 1000, "≥ 1000 units"),
                note=f"{top['offered_msg_s']:.0f} msg/s; collector CPU "
                f"{100 * top['collector_cpu_share']:.0f}% of a core; sizes tried: "
                + ", ".join(
                    f"{r['equivalent_units']:.0f}{'' if r['holds'] else ' (no)'}" for r in runs
                ),
            )
        ],
        details={"runs": runs, "speed": speed, "seconds": seconds},
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["simulate"]:
        emit(simulate(json.loads(Path(argv[1]).read_text())))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=(__doc__ or "").split("\n")[0])  # fmt: skip
    p.add_argument("--quick", action="store_true")
    p.add_argument("--speed", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--sizes", default="2000,5000,10000,20000,30000,40000,60000,80000")
    args = p.parse_args(argv)
    seconds = args.seconds or (10.0 if args.quick else 20.0)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = sweep(Path(REPO / "bench" / "cache" / "run" / "fleet"), sizes, args.speed, seconds)
    held = [r["equivalent_units"] for r in runs if r["holds"]]
    print(f"one collector holds an equivalent fleet of {max(held, default=0):.0f} units "
          f"(speed {args.speed:.0f}x, {seconds:.0f} s per size)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
