"""Choosing and checking the devices a configuration names.

Owns: mapping config sections to hw classes, and a check that every configured device
exists *before* the daemon touches its data directory. Must not: start capture.
"""

from __future__ import annotations

from firmware_py.config import CameraConfig, Config, MicrophoneConfig
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
