"""Choosing and checking the devices a configuration names.

Owns: mapping config sections to hw classes, and a check that every configured device
exists *before* the daemon touches its data directory. Must not: start capture.
"""

from __future__ import annotations

from typing import Any

from firmware_py.config import CameraConfig, Config, ConfigError, MicrophoneConfig, PanelConfig
from hw.media import Camera, DeviceError, Microphone, VideoFormat


def build_camera(cfg: CameraConfig, label: str) -> Camera:
    fmt = VideoFormat(cfg.width, cfg.height, cfg.fps)
    if cfg.kind == "pi":
        from hw.camera_pi import PiCamera

        return PiCamera(fmt, bitrate=cfg.bitrate, gop_seconds=cfg.gop_seconds)
    from hw.camera_sim import SimulatedCamera

    return SimulatedCamera(fmt, bitrate=cfg.bitrate, gop_seconds=cfg.gop_seconds, label=label)


def build_microphone(cfg: MicrophoneConfig) -> Microphone | None:
    from hw.microphone import AacMicrophone, PortAudioSource, ToneSource

    if cfg.kind == "none":
        return None
    if cfg.kind == "tone":
        return AacMicrophone(ToneSource(cfg.sample_rate), bitrate=cfg.bitrate)
    return AacMicrophone(PortAudioSource(cfg.device, cfg.sample_rate), bitrate=cfg.bitrate)


def check_devices(config: Config) -> None:
    """Raise DeviceError, naming the device and what is wrong, if one is absent."""
    if config.camera.kind == "pi":
        try:
            from picamera2 import Picamera2
        except Exception as exc:
            raise DeviceError(
                f"camera: kind is 'pi' but picamera2 cannot be imported here ({exc}); "
                "on Raspberry Pi OS install python3-picamera2, elsewhere use kind = 'simulated'"
            ) from exc
        if not Picamera2.global_camera_info():
            raise DeviceError(
                "camera: kind is 'pi' but libcamera finds no camera; check the ribbon cable"
            )
    if config.microphone.kind == "portaudio":
        from hw.microphone import PortAudioSource

        PortAudioSource.check(config.microphone.device)


def build_panel(cfg: PanelConfig, pin_factory: Any = None) -> Any:
    """The LED/button panel, or None. ``mock`` uses gpiozero's MockFactory (simulation)."""
    if cfg.kind == "none":
        return None
    from hw.panel import Panel, PanelPins

    if pin_factory is None and cfg.kind == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        pin_factory = MockFactory(pin_class=MockPWMPin)
    pins = PanelPins(
        green=cfg.green, red=cfg.red, yellow=cfg.yellow, buzzer=cfg.buzzer,
        record=cfg.record, mark=cfg.mark, credential=cfg.credential,
        triggers=dict(cfg.triggers), inverted_triggers=frozenset(cfg.inverted_triggers),
        hold_seconds=cfg.hold_seconds,
    )  # fmt: skip
    try:
        return Panel(pins, pin_factory=pin_factory)
    except Exception as exc:  # gpiozero: no pin factory, pin in use, bad pin
        raise DeviceError(f"panel: cannot open the GPIO pins ({exc})") from exc


def load_roster(config: Config) -> Any:
    """The officers' roster, or None; a bad roster file is a configuration error."""
    if config.officers.roster is None:
        return None
    from pathlib import Path

    from firmware_py.roster import Roster, RosterError

    try:
        return Roster.load(Path(config.officers.roster))
    except RosterError as exc:
        raise ConfigError(f"officers.roster: {exc}") from None


def build_card_reader(config: Config) -> Any:
    """The officers' card reader, or None (cards can still be given with `liuhen ctl login`)."""
    if config.officers.card_reader != "evdev":
        return None
    from hw.card_reader import EvdevCardReader

    assert config.officers.card_device is not None
    return EvdevCardReader(config.officers.card_device)
