"""The centre end to end: a real unit (the daemon in a subprocess, simulated camera and
microphone making real H.264/AAC) records against a real mosquitto; the collector
verifies every entry on arrival; the Uploader sends the segments (marked first); the
monitor page in headless Chromium shows the unit recording, its timeline and the
segments verified, and plays one from its place on the recording timeline; a segment
altered on the unit before upload is quarantined and alarmed; the centre's export of
the case verifies offline with `liuhen verify`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from centralfixtures import CentralRig
from conftest import ROOT, make_software_identity, write_config
from mqttfixtures import running_broker, wait_for

from central.blobs import Blobs
from central.export import ExportError, export
from store.index import Index
from uplink.upload import Uploader

DEVICE = "test-unit"
CASE = "2024-FA-0117"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _ledgered_segments(data: Path, recording: int) -> list[str]:
    index = Index.open(data / "index.sqlite")
    try:
        rows = index.execute(
            "SELECT s.name FROM segments s JOIN ledger l ON l.segment = s.name "
            "WHERE s.recording_id = ? ORDER BY s.seq", [recording]).fetchall()  # fmt: skip
    finally:
        index.close()
    return [r["name"] for r in rows]


def _browse(url: str, profile: Path, shot: Path) -> dict[str, Any]:
    """What the monitor page shows, read from the DOM of headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})  # fmt: skip
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text))
            page.goto(url)
            row = page.locator(f'#units tr[data-device="{DEVICE}"]')
            row.locator("td.state", has_text="recording").wait_for(timeout=15_000)
            page.locator("#live", has_text="live").wait_for(timeout=5_000)
            row.click()
            stored = page.locator('#segments tr[data-upload="stored"]')
            stored.nth(2).wait_for(timeout=20_000)  # the whole first recording
            page.locator('#segments tr[data-upload="quarantined"]').wait_for(timeout=20_000)
            page.locator('#timeline li[data-type="mark"]').first.wait_for(timeout=10_000)
            page.locator('#alerts li[data-code="upload_quarantined"]').wait_for(timeout=10_000)
            second = page.locator('#segments tr[data-upload="stored"]', has_text="r1 / s2")
            second.get_by_role("button", name="play").click()
            try:
                page.locator('#player[data-ready="1"]').wait_for(timeout=15_000)
            except Exception as exc:  # say what the player and the page said
                page.screenshot(path=str(shot), full_page=True)
                state = page.evaluate("""() => { const v = document.getElementById('player');
                    return [v.src, v.readyState, v.networkState, v.error && v.error.message]; }""")  # fmt: skip
                raise AssertionError(
                    f"the player did not get ready: {state}; page: {errors}"
                ) from exc
            shown = page.evaluate("""() => { const v = document.getElementById('player');
                return {time: v.currentTime, start: v.buffered.length ? v.buffered.start(0) : null,
                        ready: v.readyState, width: v.videoWidth, error: v.error && v.error.message,
                        status: document.getElementById('player-status').textContent,
                        marks: document.querySelectorAll('#timeline li[data-type="mark"]').length,
                        state: document.querySelector('#units tr[data-device="test-unit"] td.state').textContent,
                        case: document.querySelector('#units tr[data-device="test-unit"] td.case').textContent,
                        quarantined: document.querySelector('#segments tr[data-upload="quarantined"] td.verification').textContent}; }""")  # fmt: skip
            page.screenshot(path=str(shot), full_page=True)
            return dict(shown)
        finally:
            browser.close()


def test_the_centre_collects_verifies_shows_and_exports_a_real_unit(
    tmp_path: Path, daemon_factory: Any
) -> None:
    # Both come with `make test` (scripts/bootstrap.sh, the dev extra): absent is a failure.
    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (apt-get install chromium)"
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (never `playwright install`)")  # fmt: skip
    with running_broker(tmp_path / "broker") as broker:
        rig = CentralRig(tmp_path / "central", broker)
        make_software_identity(tmp_path / "device.key", tmp_path / "device.pem", DEVICE)
        shutil.copy(tmp_path / "device.pem", rig.trust / f"{DEVICE}.pem")
        tls_cert, tls_key = broker.pki.issue(DEVICE)
        config = write_config(
            tmp_path / "unit.toml",
            recorder={"segment_seconds": 5, "pre_event_seconds": 3},
            uplink={"host": "127.0.0.1", "port": broker.port, "ca_file": str(broker.pki.ca_file),
                    "cert_file": str(tls_cert), "key_file": str(tls_key), "heartbeat_seconds": 1},
        )  # fmt: skip
        with rig.running() as server:
            unit = daemon_factory(config).start()
            unit.wait_for(lambda s: s["state"] == "ready" and s["ring_s"] >= 2, 30, "pre-event media")  # fmt: skip
            unit.ctl("case", CASE)
            unit.ctl("record", "start")
            unit.ctl("mark", "suspect", "leaves")
            unit.ctl("note", "inspection of the premises")
            unit.wait_for(lambda s: s["segments_sealed"] >= 2, 30, "two segments sealed")
            unit.ctl("record", "stop")
            unit.ctl("case", "2024-FA-0999")  # (`ctl case --clear` is refused by argparse)
            unit.ctl("record", "start")
            wait_for(lambda: _ledgered_segments(unit.data, 2), 30, "recording 2's first segment signed")  # fmt: skip
            altered = unit.data / "evidence" / _ledgered_segments(unit.data, 2)[0]
            altered.chmod(0o644)
            with open(altered, "r+b") as f:  # tampering on the unit, before the upload
                f.seek(altered.stat().st_size // 2)
                byte = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([byte[0] ^ 0xFF]))

            uploader = Uploader(unit.data / "evidence", unit.data / "index.sqlite", server.upload_url,
                                str(broker.pki.ca_file), str(tls_cert), str(tls_key), DEVICE,
                                lambda kind, detail: None, poll_s=0.5)  # fmt: skip
            uploader.start()
            try:
                shown = _browse(server.monitor_url, tmp_path / "chromium-profile", tmp_path / "monitor.png")  # fmt: skip
                assert shown["state"] == "recording" and shown["marks"] == 1, shown
                assert shown["case"] == "2024-FA-0999", shown
                assert shown["ready"] >= 2 and shown["width"] == 320 and shown["error"] is None, (
                    shown
                )
                r1s2 = next(r for r in server.store.segments(DEVICE) if (r["recording"], r["rseq"]) == (1, 2))  # fmt: skip
                assert r1s2["media_start_us"] > 4_000_000, (
                    r1s2
                )  # it continues the recording's timeline
                assert abs(shown["time"] - r1s2["media_start_us"] / 1e6) < 0.1, shown
                assert shown["time"] >= shown["start"], shown
                assert shown["status"].startswith("verified"), shown
                assert "QUARANTINED" in shown["quarantined"] and "differs" in shown["quarantined"], shown  # fmt: skip
                unit.ctl("record", "stop")
                assert unit.terminate() == 0, unit.output()
                last = json.loads((unit.data / "evidence" / "ledger.jsonl").read_bytes().splitlines()[-1])  # fmt: skip
                assert last  # every entry, including the last, reaches the centre:
                lines = (unit.data / "evidence" / "ledger.jsonl").read_bytes().splitlines(keepends=True)  # fmt: skip
                wait_for(lambda: server.central.fleet.unit(DEVICE).last_seq == len(lines) - 1, 15, "all entries")  # fmt: skip
                assert [line for _, line in server.store.lines(DEVICE)] == lines
                assert server.central.fleet.unit(DEVICE).missing == set()
                alerts = {a["code"] for a in server.alerts()}
                assert "upload_quarantined" in alerts and not alerts & {"bad_signature", "chain_gap", "fork", "unknown_key"}, alerts  # fmt: skip
            finally:
                uploader.close()
            assert altered.exists()  # the unit keeps its (tampered) file; the centre kept a copy
            assert len(list((rig.directory / "data" / "quarantine" / DEVICE).iterdir())) == 1

            # The centre's package for the case verifies offline, with `liuhen verify`.
            blobs, trust = Blobs(rig.directory / "data"), rig.trust
            report = export(server.store, blobs, trust, f"case:{CASE}", tmp_path / "package")
            assert report["ok"] and report["units"][DEVICE]["recordings"] == [1], report
            package = tmp_path / "package" / DEVICE
            done = subprocess.run(
                [sys.executable, "-m", "firmware_py.cli", "verify", str(package),
                 "--trust", str(tmp_path / "package" / "trusted-certificates.pem"), "--json"],
                capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
            verdict = json.loads(done.stdout)
            assert done.returncode == 0 and verdict["ok"] and verdict["anchored"], done.stdout
            assert verdict["segments"] >= 2 and verdict["withheld"] > 0, verdict
            with pytest.raises(ExportError, match="quarantined"):
                export(server.store, blobs, trust, f"{DEVICE}/r2", tmp_path / "package-r2")
