"""The officer's side of the unit, with gpiozero's own MockFactory pins: what the LEDs say
in each state, what the buttons do (a knock never stops a recording), a holster trigger,
card log-in, unknown cards, credential shown and marks as signed entries with the officer
and the media position, and a stalled camera turning into a fault within 2 s."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, write_config
from gpiozero.pins.mock import MockFactory, MockPWMPin
from test_panel import expected_looks, observed

from evidence.ledger import LEDGER_FILE
from firmware_py.config import load
from firmware_py.daemon import Daemon
from firmware_py.view import LogView
from hw.panel import PATTERNS, REFERENCE_PINS, Indication

PINS = REFERENCE_PINS
ROSTER = """
[[officer]]
id = "110101"
name = "张三"
credential = "GA1101010001"
cards = ["04A1B2C3"]

[[officer]]
id = "110102"
name = "李四"
credential = "GA1101010002"
cards = ["04D4E5F6"]
"""


@dataclass
class Unit:
    daemon: Daemon
    factory: MockFactory
    thread: threading.Thread
    data: Path

    def pin(self, n: int | None) -> Any:
        assert n is not None
        return self.factory.pin(n)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; status {self.daemon.status()}")

    def status(self) -> dict[str, Any]:
        return self.daemon.status()

    def press(self, n: int | None, seconds: float = 0.15) -> None:
        self.pin(n).drive_low()
        time.sleep(seconds)
        self.pin(n).drive_high()

    def entries(self) -> list[dict[str, Any]]:
        """Signed ledger entries so far: header + body."""
        path = self.data / "evidence" / LEDGER_FILE
        out = []
        for line in path.read_bytes().splitlines():
            obj = json.loads(line)
            header = json.loads(base64.b64decode(obj["payload"]))
            body = json.loads(base64.b64decode(obj["body"]))
            out.append({"header": header, **body})
        return out

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e["event"] for e in self.entries() if "event" in e and e["event"]["type"] == kind]

    def led_shows(self, indication: Indication, window: float = 2.3) -> bool:
        """Watching the LEDs for ``window`` seconds, each does what the table says."""
        pins = {led: self.pin(getattr(PINS, led)) for led in ("green", "red", "yellow")}
        for pin in pins.values():
            pin.clear_states()
        time.sleep(window)
        want = expected_looks(PATTERNS[indication])
        seen = {led: observed(pin) for led, pin in pins.items()}
        if indication == Indication.ERROR:  # momentary: only "they blink fast" can be seen
            return all(look.kind == "blinking" for look in seen.values())
        return all(seen[led].same_as(want[led]) for led in pins)


@pytest.fixture
def unit(tmp_path: Path, alsa_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Unit]:
    monkeypatch.setenv("HOME", str(alsa_home))
    roster = tmp_path / "roster.toml"
    roster.write_text(ROSTER)
    panel = {
        "kind": "mock", "green": PINS.green, "red": PINS.red, "yellow": PINS.yellow,
        "buzzer": PINS.buzzer, "record": PINS.record, "mark": PINS.mark,
        "credential": PINS.credential, "triggers": {"lightbar": 26}, "hold_seconds": 1.0,
        "reminder_seconds": 0,
    }  # fmt: skip
    config = write_config(
        tmp_path / "unit.toml",
        panel=panel,
        officers={"roster": str(roster)},
        recorder={"pre_event_seconds": 3, "segment_seconds": 5},
    )
    factory = MockFactory(pin_class=MockPWMPin)
    daemon = Daemon(load(config), tmp_path / "data", LogView(60), pin_factory=factory)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    u = Unit(daemon, factory, thread, tmp_path / "data")
    u.wait(
        lambda: daemon.actions is not None and daemon.state.verdict.mode.value == "ready",
        30,
        "ready",
    )
    yield u
    daemon.request_stop()
    thread.join(30)
    factory.reset()


def test_the_record_button_the_knock_and_the_deliberate_stop(unit: Unit) -> None:
    assert unit.wait(lambda: unit.led_shows(Indication.READY), 5, "green blinking")
    unit.press(PINS.record)
    unit.wait(lambda: unit.status()["unit"]["mode"] == "recording", 5, "recording")
    assert unit.wait(lambda: unit.led_shows(Indication.RECORDING), 5, "red steady")
    buzzes = [v for _, v in unit.pin(PINS.buzzer).states]
    assert 1 in buzzes  # the vibration said "started"

    unit.press(PINS.record, 0.2)  # a knock
    time.sleep(1.5)
    assert unit.status()["unit"]["mode"] == "recording"
    assert unit.led_shows(Indication.RECORDING)

    unit.press(PINS.record, 1.4)  # a deliberate long press
    unit.wait(lambda: unit.status()["unit"]["mode"] == "ready", 5, "stopped by the long press")
    unit.wait(lambda: unit.events("recording_stopped"), 10, "the stop in the ledger")
    assert unit.events("recording_stopped")[0]["detail"]["reason"] == "button-hold"
    assert unit.events("record_button_knock")
    assert unit.events("recording_started")[0]["detail"]["trigger"] == "button"


def test_a_trigger_input_starts_recording(unit: Unit) -> None:
    unit.pin(26).drive_low()  # the light bar goes on (active low input)
    unit.wait(lambda: unit.status()["unit"]["mode"] == "recording", 5, "recording on the trigger")
    unit.wait(lambda: unit.events("recording_started"), 10, "signed")
    assert unit.events("recording_started")[0]["detail"]["trigger"] == "trigger:lightbar"


def test_cards_credential_and_mark_are_signed_with_officer_and_media_position(unit: Unit) -> None:
    reply = unit.daemon.handle_request({"cmd": "login", "card": "FFFF0000"})
    assert not reply["ok"] and "not in the roster" in reply["error"]
    assert unit.led_shows(Indication.ERROR, window=1.0)
    unit.wait(lambda: unit.events("unknown_card"), 10, "the unknown card in the ledger")
    assert unit.status()["officer"] is None  # never silently accepted

    assert unit.daemon.handle_request({"cmd": "login", "card": "04A1B2C3"})["ok"]
    unit.press(PINS.record)
    unit.wait(lambda: (unit.status()["media_us"] or 0) > 2_000_000, 10, "recording a while")
    unit.press(PINS.credential)
    unit.press(PINS.mark)
    shown = unit.wait(lambda: unit.events("credential_shown"), 10, "credential shown signed")[0]
    mark = unit.wait(lambda: unit.events("mark"), 10, "mark signed")[0]
    for event in (shown, mark):
        assert event["detail"]["officer"] == {
            "id": "110101",
            "name": "张三",
            "credential": "GA1101010001",
        }
        position = event["detail"]["position"]
        assert position["recording_id"] == 1 and position["media_us"] > 2_000_000
        assert position["segment"].endswith(".mp4")
    assert shown["detail"]["credential"] == "GA1101010001"
    assert shown["detail"]["source"] == "button"

    assert (
        unit.daemon.handle_request({"cmd": "login", "card": "04A1B2C3"})["logged_out"] == "110101"
    )
    unit.wait(lambda: unit.events("officer_logout"), 10, "log-out signed")
    unit.daemon.handle_request({"cmd": "record", "action": "stop"})
    segments = unit.wait(
        lambda: [e for e in unit.entries() if "segment" in e], 15, "a segment entry"
    )
    assert [o["id"] for o in segments[0]["context"]["officers"]] == ["110101"]  # on duty during it


def test_a_stalled_camera_is_a_fault_within_two_seconds(unit: Unit) -> None:
    unit.press(PINS.record)
    unit.wait(lambda: unit.status()["unit"]["mode"] == "recording", 5, "recording")
    unit.daemon.camera.freeze()
    frozen_at = time.monotonic()
    unit.wait(
        lambda: unit.status()["unit"]["mode"] != "recording", 3, "recording no longer claimed"
    )
    assert time.monotonic() - frozen_at < 2.0
    status = unit.status()
    assert status["unit"]["mode"] == "audio_only" and "camera_stalled" in status["unit"]["faults"]
    assert unit.wait(
        lambda: unit.led_shows(Indication.AUDIO_ONLY_CAMERA_STALLED), 4, "the LED says so"
    )
    unit.wait(lambda: [e for e in unit.events("state_changed") if "camera_stalled" in e["detail"]["to"]["faults"]],
              10, "the transition signed")  # fmt: skip
    unit.daemon.camera.freeze(False)
    unit.wait(lambda: unit.status()["unit"] == {"mode": "recording", "faults": []}, 5, "recovered")


def test_ctl_status_prints_state_officer_segments_and_storage(unit: Unit) -> None:
    unit.daemon.handle_request({"cmd": "login", "card": "04D4E5F6"})
    done = subprocess.run(
        [sys.executable, "-m", "firmware_py.cli", "ctl", "--data", str(unit.data), "status"],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "state     ready" in out and "110102 李四" in out
    assert "segments  0 sealed" in out and "GB free of" in out
