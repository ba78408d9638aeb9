"""SIGKILL — a power cut as far as the process can tell — at each step of making
evidence, then a restart: nothing recorded is lost, the chain goes on, ``liuhen
verify`` names what the cut left (a recovered segment), and the unit records again.

Steps that a system call names are hit exactly, every time: strace kills the daemon as
a thread enters the call (a segment's rename, a ledger line's write and its fsync, the
signed head's rename, an index write, an outbox write). The rest — a fragment half
written, a segment renamed but not yet indexed — are hit by killing at random moments
(seeded) and counted by what each kill left on disk. The daemon runs without any
capability, as systemd/liuhen.service runs it. A SIGKILL cannot tear a line the kernel
accepted; what a power cut adds, a ledger line half on disk, is made by cutting the
file where the cut would, then recovered.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import shutil
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, make_software_identity, write_config
from faultkit import (
    NO_CAPS,
    RENAME,
    STRACE,
    Tally,
    errors,
    kill_at,
    rows,
    verify,
    wait_killed,
)

from evidence.ledger import HEAD_FILE, LEDGER_FILE
from evidence.parts import iter_boxes, whole_fragment_prefix

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed")

RANDOM_KILLS = 10
SEED = 20261122


def unit_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "unit.toml",
        recorder={"autostart": True, "segment_seconds": 5, "pre_event_seconds": 1},
        **sections,
    )


def ledger_seqs(data: Path) -> list[int]:
    path = data / "evidence" / LEDGER_FILE
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(base64.b64decode(json.loads(line)["payload"]))["seq"] for line in lines]


def restart_and_check(
    factory: Any, config: Path, data: Path, until: tuple[Any, str] | None = None
) -> dict[str, Any]:
    """Start as the unit would after the cut, record (``until`` a status predicate
    holds), stop cleanly; then everything must be whole: no .part, every file as
    indexed, every event signed, verify intact."""
    unit: Daemon = factory(config, data)
    unit.prefix = NO_CAPS
    unit.start()
    unit.wait_for(lambda s: s["state"] == "recording", 30, "recording after the cut")
    unit.wait_for(lambda s: s["sealer"]["state"] == "ok" and s["sealer"]["backlog"] == 0,
                  30, "the backlog signed")  # fmt: skip
    if until is not None:
        unit.wait_for(until[0], 60, until[1])
    assert unit.terminate() == 0, unit.output()
    assert not list((data / "evidence").glob("*.part")), "a segment left unrecovered"
    for seg in rows(data, "SELECT * FROM segments WHERE state IN ('sealed', 'recovered')"):
        body = (data / "evidence" / seg["name"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == seg["sha256"], seg["name"]
    unsigned = rows(data, "SELECT kind FROM events WHERE ledger_seq IS NULL")
    assert not unsigned, f"events never signed: {unsigned}"
    seqs = ledger_seqs(data)
    assert seqs == list(range(len(seqs))), "the chain has gaps or repeats"
    report = verify(data)
    assert report["exit"] == 0, errors(report)
    return report


def killed_run(factory: Any, config: Path, data: Path, prefix: list[str], what: str) -> None:
    unit: Daemon = factory(config, data)
    unit.prefix = [*prefix, *NO_CAPS]
    unit.start()
    wait_killed(unit, 40, what)


# --- exact steps ------------------------------------------------------------------------------

STEPS = {  # step -> (system calls, which call, on which file)
    "ledger line write": ("write", 4, f"evidence/{LEDGER_FILE}"),
    "ledger line fsync": ("fsync", 5, f"evidence/{LEDGER_FILE}"),
    "signed head rename": (RENAME, 4, f"evidence/.{HEAD_FILE}.tmp"),  # rename's source
    "index write": ("pwrite64", 25, "index.sqlite-wal"),
}


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_of_signing_and_indexing(
    step: str, tmp_path: Path, daemon_factory: Any
) -> None:
    syscalls, nth, where = STEPS[step]
    config, data = unit_config(tmp_path), tmp_path / "data"
    killed_run(daemon_factory, config, data, kill_at(syscalls, nth, data / where), step)
    tally = Tally({step: 1})
    lines, indexed = ledger_seqs(data), rows(data, "SELECT seq FROM ledger")
    if step == "ledger line write":  # killed before entry nth-1 reached the file
        assert len(lines) == nth - 1 and len(indexed) == nth - 1
    elif step == "ledger line fsync":  # written, not yet durable nor indexed
        assert len(lines) == nth and len(indexed) == nth - 1
    elif step == "signed head rename":  # the entry is durable, the head one behind
        head = json.loads(base64.b64decode(json.loads((data / "evidence" / HEAD_FILE).read_bytes())["payload"]))  # fmt: skip
        assert lines[-1] == nth - 1 and head["seq"] == nth - 2
    restart_and_check(daemon_factory, config, data)
    tally.report(f"SIGKILL at {step}")


def test_sigkill_between_fsync_and_rename_of_a_segment(tmp_path: Path, daemon_factory: Any) -> None:
    """The segment is whole and read-only but still ``.part``: recovery must open it for
    writing without the capability that would override its mode."""
    config, data = unit_config(tmp_path), tmp_path / "data"
    key = tmp_path / "device.key"
    hidden = key.rename(tmp_path / "away.key")  # no signing: the recorder's is the only rename
    killed_run(daemon_factory, config, data, kill_at(RENAME, 1), "the segment rename")
    (part,) = (data / "evidence").glob("*.mp4.part")
    assert stat.S_IMODE(part.stat().st_mode) == 0o444, "killed elsewhere than at the rename"
    size = part.stat().st_size
    hidden.rename(key)
    report = restart_and_check(daemon_factory, config, data)
    (row,) = rows(data, "SELECT * FROM segments WHERE name = ?", part.name.removesuffix(".part"))
    assert row["state"] == "recovered" and row["bytes"] == size, row  # every byte kept
    assert any(f["code"] == "recovered" and f["where"] == row["name"] for f in report["findings"])
    Tally({"segment rename": 1}).report("SIGKILL between a segment's fsync and its rename")


def test_a_power_cut_tears_the_last_ledger_line(tmp_path: Path, daemon_factory: Any) -> None:
    """Killed after a line's write, before its fsync; then the cut keeps only half of
    that line on disk. verify names the torn line; the restart sets it aside and signs
    the same event again under the same number."""
    config, data = unit_config(tmp_path), tmp_path / "data"
    syscalls, nth, where = STEPS["ledger line fsync"]
    killed_run(daemon_factory, config, data, kill_at(syscalls, nth, data / where), "fsync")
    ledger = data / "evidence" / LEDGER_FILE
    body = ledger.read_bytes()
    last = body.rstrip(b"\n").rfind(b"\n") + 1
    ledger.write_bytes(body[: last + (len(body) - last) // 2])  # half the last line
    torn = [f for f in verify(data)["findings"] if f["code"] == "corrupt-entry"]
    assert [f["where"] for f in torn] == [f"{LEDGER_FILE} line {nth}"], torn
    restart_and_check(daemon_factory, config, data)
    assert list((data / "evidence" / "torn").glob(f"{LEDGER_FILE}.*.tail"))
    Tally({"torn ledger line": 1}).report("power cut mid ledger line")


# --- random moments ------------------------------------------------------------------------------


def what_the_cut_hit(data: Path, seen: set[str]) -> list[str]:
    """Name the steps a kill interrupted, from what it left on disk; ``seen`` holds the
    ``.part`` files earlier cuts left (a cut during start-up may come before their
    recovery) and gains the new ones that hold media."""
    hit = []
    for part in (data / "evidence").glob("*.part"):
        if part.name in seen:
            hit.append("start-up, before recovering the last cut")
            continue
        size = part.stat().st_size
        with open(part, "rb") as f:
            boxes = list(iter_boxes(f, size))
        whole = whole_fragment_prefix(boxes)
        media = any(b.type == "moof" and b.end <= whole for b in boxes)  # as recovery sees it
        if stat.S_IMODE(part.stat().st_mode) == 0o444:
            hit.append("segment sealed, not renamed")
        elif not media:
            hit.append("segment begun, no whole fragment yet")
        elif whole < size:
            hit.append("fragment half written")
        else:
            hit.append("between fragments")
        if media:
            seen.add(part.name)
    opened = rows(data, "SELECT name FROM segments WHERE state = 'open'")
    if any((data / "evidence" / r["name"]).exists() for r in opened):
        hit.append("segment renamed, not indexed")
    if len(ledger_seqs(data)) > len(rows(data, "SELECT seq FROM ledger")):
        hit.append("ledger line durable, not indexed")
    if rows(data, "SELECT id FROM events WHERE ledger_seq IS NULL"):
        hit.append("events journaled, not yet signed")
    return hit or ["nothing in flight"]


def test_sigkill_at_random_moments_many_times(tmp_path: Path, daemon_factory: Any) -> None:
    rng = random.Random(SEED)
    config, data = unit_config(tmp_path), tmp_path / "data"
    tally, parts, cuts = Tally(), set[str](), list[str]()
    for _ in range(RANDOM_KILLS):
        unit = daemon_factory(config, data)
        unit.prefix = NO_CAPS
        unit.start()  # cut anywhere from start-up (recovering the last cut) to recording
        time.sleep(rng.uniform(0.5, 5.0))
        assert unit.proc is not None and unit.proc.poll() is None, unit.output()
        unit.kill()
        tally["kills"] += 1
        hits = what_the_cut_hit(data, parts)
        cuts.append(f"cut {tally['kills']}: {', '.join(hits)}")
        tally.update(hits)
    report = restart_and_check(daemon_factory, config, data)
    recovered = {f["where"] for f in report["findings"] if f["code"] == "recovered"}
    states = [(r["name"][-16:], r["state"]) for r in rows(data, "SELECT * FROM segments")]
    assert recovered == {p.removesuffix(".part") for p in parts}, (cuts, states)
    tally.report(f"{RANDOM_KILLS} SIGKILLs at random moments (seed {SEED})")


def test_sigkill_in_an_outbox_write_loses_no_entry_for_the_centre(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """Killed while the outbox commits an entry for the broker: the restart queues
    again what the outbox lacks, and the centre gets every signed line."""
    from mqttfixtures import Observer, running_broker, wait_for

    with running_broker(tmp_path / "broker") as broker:
        observer = Observer(broker).start()
        cert, key = broker.pki.issue("test-unit")
        uplink = {"host": "127.0.0.1", "port": broker.port, "ca_file": str(broker.pki.ca_file),
                  "cert_file": str(cert), "key_file": str(key), "heartbeat_seconds": 1}  # fmt: skip
        config, data = unit_config(tmp_path, uplink=uplink), tmp_path / "data"
        wal = data / "outbox.sqlite-wal"
        killed_run(daemon_factory, config, data, kill_at("pwrite64", 6, wal), "an outbox write")
        before = ledger_seqs(data)
        restart_and_check(daemon_factory, config, data)
        lines = (data / "evidence" / LEDGER_FILE).read_bytes().splitlines(keepends=True)
        received = lambda: list(dict.fromkeys(m.payload for m in observer.on("ledger")))  # noqa: E731
        wait_for(lambda: len(received()) >= len(lines), 20, "every entry at the centre")
        assert received() == lines, "the centre's copy differs from the ledger"
        assert len(lines) > len(before)
        observer.stop()
    Tally({"outbox write": 1}).report("SIGKILL in an outbox write")


def test_sigkill_as_an_upload_is_acknowledged_loses_no_receipt(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """Killed while the uploader records the collector's receipt: the segment is stored
    at the centre, the unit does not know yet. After the restart it asks again, gets the
    receipt, and the centre holds every sealed segment byte for byte; the unit deleted
    nothing."""
    from centralfixtures import CentralRig
    from mqttfixtures import running_broker

    with running_broker(tmp_path / "broker") as broker:
        rig = CentralRig(tmp_path / "central", broker)
        cert, key = broker.pki.issue("test-unit")
        uplink = {"host": "127.0.0.1", "port": broker.port, "ca_file": str(broker.pki.ca_file),
                  "cert_file": str(cert), "key_file": str(key), "heartbeat_seconds": 1}  # fmt: skip
        make_software_identity(tmp_path / "device.key", tmp_path / "device.pem", "test-unit")
        shutil.copy(tmp_path / "device.pem", rig.trust / "test-unit.pem")  # the centre trusts it
        with rig.running() as server:
            upload = {"url": server.upload_url, "chunk_bytes": 65536, "poll_seconds": 1}
            config = unit_config(tmp_path, uplink=uplink, upload=upload)
            data = tmp_path / "data"
            first: Daemon = daemon_factory(config, data)
            first.start()  # the progress file made, one segment uploaded
            first.wait_for(lambda s: s["upload"]["acknowledged"] >= 1, 30, "a first receipt")
            assert first.terminate() == 0, first.output()
            progress = data / "upload.sqlite-wal"  # the uploader thread's 2nd write: a receipt
            killed_run(daemon_factory, config, data, kill_at("pwrite64", 2, progress), "a receipt")
            stored = {r["name"]: r["sha256"] for r in server.store.segments("test-unit")}
            with contextlib.closing(sqlite3.connect(data / "upload.sqlite")) as db:
                known = {r[0] for r in db.execute("SELECT name FROM receipts")}
            assert set(stored) - known, f"not cut between the centre's receipt and the unit's: {stored}, {known}"  # fmt: skip

            def all_acknowledged(status: dict[str, Any]) -> bool:
                sealed = rows(
                    data, "SELECT name FROM segments WHERE state IN ('sealed', 'recovered')"
                )
                return status["upload"]["acknowledged"] >= len(sealed) > len(stored)

            restart_and_check(daemon_factory, config, data, (all_acknowledged, "every upload"))
            at_centre = {r["name"]: r["sha256"] for r in server.store.segments("test-unit")}
        for seg in rows(
            data, "SELECT name, sha256 FROM segments WHERE state IN ('sealed', 'recovered')"
        ):
            assert at_centre.get(seg["name"]) == seg["sha256"], seg["name"]
            assert (data / "evidence" / seg["name"]).exists()  # the unit keeps its copy
    Tally({"upload receipt": 1}).report("SIGKILL as an upload is acknowledged")
