"""A damaged index is rebuilt from the ledger and the files: the unit starts again, its
chain goes on (recording numbers continue, no segment signed twice), and segments that
were sealed but not yet signed when the index broke are signed afterwards."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from conftest import Daemon, liuhen, write_config
from faultkit import errors, verify

from evidence.ledger import LEDGER_FILE, Entry


def entries(data: Path) -> list[Entry]:
    lines = (data / "evidence" / LEDGER_FILE).read_bytes().splitlines(keepends=True)
    return [Entry.from_line(line) for line in lines]


def set_aside(data: Path) -> list[Path]:
    """The damaged indexes kept (their -wal/-shm companions aside)."""
    return sorted(
        p for p in data.glob("index.sqlite.damaged-*") if not p.name.endswith(("-wal", "-shm"))
    )


def segment_bodies(data: Path) -> list[dict[str, Any]]:
    return [e.body_json()["segment"] for e in entries(data) if e.kind == "segment"]


def test_a_damaged_index_is_rebuilt_and_the_chain_goes_on(
    tmp_path: Path, daemon_factory: Any
) -> None:
    key = tmp_path / "device.key"
    config = write_config(
        tmp_path / "unit.toml", recorder={"autostart": True, "segment_seconds": 5}
    )
    data = tmp_path / "data"

    signed: Daemon = daemon_factory(config, data).start()
    signed.wait_for(lambda s: s["segments_sealed"] >= 2 and s["sealer"]["backlog"] == 0, 40,
                    "two segments signed")  # fmt: skip
    assert signed.ctl("mark", "before the damage")["ok"]
    assert signed.terminate() == 0, signed.output()

    key.rename(tmp_path / "device.key.away")  # the key is gone: segments seal, none is signed
    unsigned: Daemon = daemon_factory(config, data).start()
    unsigned.wait_for(lambda s: s["segments_sealed"] >= 2 and s["sealer"]["state"] == "fault", 40,
                      "segments sealed while the key is away")  # fmt: skip
    assert unsigned.terminate() == 0, unsigned.output()
    (tmp_path / "device.key.away").rename(key)
    files = sorted(p.name for p in (data / "evidence").glob("*.mp4"))
    signed_names = {s["name"] for s in segment_bodies(data)}
    waiting = [name for name in files if name not in signed_names]
    assert len(waiting) >= 2, (files, signed_names)

    with open(data / "index.sqlite", "r+b") as f:  # garbage over the header page
        f.write(random.Random(7).randbytes(4096))
    refused: Daemon = daemon_factory(config, data).start()
    assert refused.proc is not None and refused.proc.wait(30) == 65, refused.output()
    assert f"liuhen index rebuild --data {data}" in refused.output()

    done = liuhen("index", "rebuild", "--data", str(data))
    assert done.returncode == 0, done.stderr
    kept = set_aside(data)
    assert kept and "nothing was deleted" in done.stdout
    for name in waiting:
        assert f"{name}: not in the ledger yet" in done.stdout
    damaged = kept[0].read_bytes()
    again = liuhen("index", "rebuild", "--data", str(data))  # re-run: nothing is overwritten
    assert again.returncode == 0, again.stderr
    assert len(set_aside(data)) == 2 and kept[0].read_bytes() == damaged

    resumed: Daemon = daemon_factory(config, data).start()
    resumed.wait_for(lambda s: s["segments_sealed"] >= 1 and s["sealer"]["backlog"] == 0
                     and s["sealer"]["state"] == "ok", 40, "recording on, backlog signed")  # fmt: skip
    assert resumed.terminate() == 0, resumed.output()

    bodies = segment_bodies(data)
    names = [s["name"] for s in bodies]
    assert len(names) == len(set(names)), "a segment was signed twice"
    assert set(files) <= set(names), "a sealed file was never signed"
    refs = [e.ref for e in entries(data) if e.ref is not None]
    assert len(refs) == len(set(refs)), "two entries claim the same journaled event"
    starts = [json.loads(e.body or b"{}")["event"]["detail"]["recording_id"]
              for e in entries(data) if e.kind == "event"
              and json.loads(e.body or b"{}")["event"]["type"] == "recording_started"]  # fmt: skip
    # Recording 2's start was journaled while the key was away, in the index the garbage
    # destroyed: it is lost, the signed index_rebuilt event says so, and its number is
    # not given out again.
    assert starts == [1, 3], starts
    rebuilt = [json.loads(e.body or b"{}")["event"]["detail"] for e in entries(data)
               if e.kind == "event" and json.loads(e.body or b"{}")["event"]["type"] == "index_rebuilt"]  # fmt: skip
    assert (
        rebuilt
        and rebuilt[0]["salvage_error"]
        and set(waiting) <= set(rebuilt[0]["unsigned_files"])
    )
    report = verify(data)
    assert report["exit"] == 0, errors(report)


def recorded_and_signed(tmp_path: Path, daemon_factory: Any, segments: int) -> tuple[Path, Path]:
    """(config, data dir) of a unit that recorded and signed ``segments`` segments."""
    config = write_config(
        tmp_path / "unit.toml", recorder={"autostart": True, "segment_seconds": 5}
    )
    data = tmp_path / "data"
    unit: Daemon = daemon_factory(config, data).start()
    unit.wait_for(lambda s: s["segments_sealed"] >= segments and s["sealer"]["backlog"] == 0,
                  40, "segments signed")  # fmt: skip
    assert unit.terminate() == 0, unit.output()
    return config, data


def test_a_damaged_ledger_is_not_rebuilt_over(tmp_path: Path, daemon_factory: Any) -> None:
    _, data = recorded_and_signed(tmp_path, daemon_factory, 1)
    ledger = data / "evidence" / LEDGER_FILE
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.chmod(0o644)
    ledger.write_bytes(b"".join([*lines[:1], b"{not an entry}\n", *lines[1:]]))
    index_before = (data / "index.sqlite").read_bytes()
    done = liuhen("index", "rebuild", "--data", str(data))
    assert done.returncode == 65 and "line 2 is unreadable" in done.stderr, done.stderr
    assert (data / "index.sqlite").read_bytes() == index_before
    assert not set_aside(data)


def test_a_last_entry_cut_before_its_newline_is_left_to_the_sealer(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """A power cut can leave the last entry whole but without its newline; the sealer sets
    such a line aside and reuses its number, so the rebuild must not index it."""
    config, data = recorded_and_signed(tmp_path, daemon_factory, 2)
    ledger = data / "evidence" / LEDGER_FILE
    ledger.chmod(0o644)
    ledger.write_bytes(ledger.read_bytes()[:-1])  # the last newline never reached the card
    (data / "index.sqlite").write_bytes(b"garbage" * 1000)
    done = liuhen("index", "rebuild", "--data", str(data))
    assert done.returncode == 0 and "torn line" in done.stdout, done.stdout + done.stderr
    again: Daemon = daemon_factory(config, data).start()
    again.wait_for(lambda s: s["segments_sealed"] >= 1 and s["sealer"]["backlog"] == 0
                   and s["sealer"]["state"] == "ok", 40, "recording on, backlog signed")  # fmt: skip
    assert again.terminate() == 0, again.output()
    report = verify(data)
    assert report["exit"] == 0, errors(report)
