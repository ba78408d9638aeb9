"""Configuration: one TOML file, validated completely before anything else happens.

Owns: the schema of every key (type, default, valid range, meaning), loading and
validating a file, and rendering docs/CONFIG.md from the schema so the document cannot
drift from the code. Must not: open devices or touch the data directory.

Errors name the key and the problem: ``recorder.pre_event_seconds: must be <= 120
(got 300)``; unknown keys are refused, because a misspelt key silently ignored is a
setting an operator believes in and the unit does not have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.validation import constraints, read_toml, validate


class ConfigError(ValueError):
    """The configuration cannot be used; ``str()`` lists every problem, one per line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class UnitConfig(_Section):
    profile: Literal["body", "hearing"] = Field(
        "body",
        description="`body`: a worn unit (officer log-in by card). `hearing`: a fixed hearing-room unit; entries carry the case number set by the clerk (`liuhen ctl case`).",
    )
    device_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            description="Identity of this unit; part of every file name and, later, of the device certificate.",
        ),
    ]
    require_set_clock: bool = Field(
        True,
        description="Withhold READY from systemd while the wall clock is unset (year < 2024). Evidence is recorded either way, its entries marking the clock unsynchronised.",
    )
    data_dir: str = Field(
        "/var/lib/liuhen",
        description="Where evidence, the index and recovery files live. `liuhen run --data` overrides it.",
    )


class CameraConfig(_Section):
    kind: Literal["simulated", "pi"] = Field(
        description="`pi`: picamera2 with the hardware H.264 encoder. `simulated`: a libx264-encoded test pattern with the wall-clock time drawn in."
    )
    width: int = Field(1280, ge=160, le=1920, multiple_of=16, description="Frame width in pixels.")
    height: int = Field(720, ge=120, le=1088, multiple_of=2, description="Frame height in pixels.")
    fps: int = Field(30, ge=5, le=60, description="Frames per second.")
    bitrate: int = Field(
        4_000_000, ge=200_000, le=25_000_000, description="Target H.264 bit rate, bits per second."
    )
    gop_seconds: float = Field(
        1.0, ge=0.5, le=2.0, description="Keyframe interval. Segments start on keyframes."
    )


class MicrophoneConfig(_Section):
    kind: Literal["portaudio", "tone", "none"] = Field(
        "portaudio",
        description="`portaudio`: an input device through PyAudio. `tone`: a generated tone (no sound card). `none`: video only.",
    )
    device: str = Field(
        "default",
        min_length=1,
        description="PortAudio input device, by exact name or a unique part of it (`liuhen devices` lists them).",
    )
    sample_rate: Literal[16000, 22050, 24000, 32000, 44100, 48000] = Field(
        48000, description="Samples per second, mono."
    )
    bitrate: int = Field(
        64_000, ge=16_000, le=256_000, description="AAC bit rate, bits per second."
    )


class RecorderConfig(_Section):
    autostart: bool = Field(
        False,
        description="Start recording at launch (fixed hearing-room units, continuous recording).",
    )
    pre_event_seconds: float = Field(
        30,
        ge=0,
        le=120,
        description="Media kept in memory before the record command and put at the start of the recording. 0 still keeps the GOP in progress.",
    )
    pre_event_audio: bool = Field(True, description="Keep audio in the pre-event buffer too.")
    segment_seconds: float = Field(
        60,
        ge=5,
        le=900,
        description="Length of each evidence file; a new file begins at the first keyframe after this.",
    )
    fragment_seconds: float = Field(
        0.5,
        ge=0.2,
        le=1.0,
        description="Length of each fsync'ed fragment: the most media a power cut can lose, plus the time the muxer holds packets to interleave them.",
    )

    @field_validator("pre_event_seconds", "segment_seconds", "fragment_seconds")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return v


class KeysConfig(_Section):
    kind: Literal["pkcs11", "tpm2", "software"] = Field(
        description="Where the device signing key lives. `pkcs11`: a token through its PKCS#11 module (tpm2-pkcs11, ATECC608 via cryptoauthlib, YubiHSM, Nitrokey; SoftHSM2 in tests). `tpm2`: a TPM 2.0 directly. `software`: a PEM file, for development only; every entry it signs says so and `liuhen verify` warns."
    )
    module: str | None = Field(None, description="pkcs11: path of the PKCS#11 module (.so).")
    token_label: str | None = Field(None, description="pkcs11: label of the token.")
    pin_file: str | None = Field(
        None,
        description="pkcs11/tpm2: file whose first line is the user PIN (not readable by others). PINs never go in this file.",
    )
    key_label: str = Field(
        "liuhen-device", min_length=1, description="pkcs11: label of the key pair."
    )
    path: str | None = Field(None, description="software: path of the PEM private key.")
    tcti: str | None = Field(
        None, description="tpm2: TCTI string, e.g. `device:/dev/tpmrm0`; default: the TSS default."
    )
    tpm_handle: int = Field(0x81010001, description="tpm2: persistent handle of the key.")
    certificate: str | None = Field(
        None,
        description="Device certificate, PEM, leaf first then intermediates (`liuhen keys cert`). It travels with the evidence as `device.pem`; C2PA needs one issued by a CA.",
    )

    @model_validator(mode="after")
    def _spec_is_complete(self) -> KeysConfig:
        from signer.keys import InvalidKeySpec

        try:
            self.spec()
        except InvalidKeySpec as exc:
            raise ValueError(str(exc).replace("KeySpec", "keys")) from None
        return self

    def spec(self) -> Any:
        """The signer.keys.KeySpec this section describes."""
        from signer.keys import KeySpec

        return KeySpec(
            kind=self.kind,
            module=self.module,
            token_label=self.token_label,
            pin_file=self.pin_file,
            key_label=self.key_label,
            path=self.path,
            tcti=self.tcti,
            tpm_handle=self.tpm_handle,
        )


class SignerConfig(_Section):
    c2pa: bool = Field(
        True,
        description="Embed a C2PA manifest, signed by the device key, in every sealed segment (needs a CA-issued certificate).",
    )


class PanelConfig(_Section):
    kind: Literal["gpio", "mock", "none"] = Field(
        "none",
        description="`gpio`: real pins through gpiozero (lgpio on a Pi 5). `mock`: gpiozero's MockFactory, so a simulated unit shows its LEDs in the live view. `none`: no panel.",
    )
    green: int | None = Field(None, ge=0, le=27, description="BCM pin of the green LED (ready).")
    red: int | None = Field(None, ge=0, le=27, description="BCM pin of the red LED (recording).")
    yellow: int | None = Field(
        None, ge=0, le=27, description="BCM pin of the yellow LED (audio only, faults)."
    )
    buzzer: int | None = Field(
        None, ge=0, le=27, description="BCM pin of the vibration motor or buzzer."
    )
    record: int | None = Field(
        None, ge=0, le=27, description="BCM pin of the record button (to ground)."
    )
    mark: int | None = Field(None, ge=0, le=27, description="BCM pin of the mark button.")
    credential: int | None = Field(
        None, ge=0, le=27, description="BCM pin of the credential-shown (出示证件) button."
    )
    triggers: dict[str, int] = Field(
        default_factory=dict,
        description="Inputs that start recording when they go active, by name, e.g. `{holster = 16, lightbar = 20}`.",
    )
    inverted_triggers: list[str] = Field(
        default_factory=list,
        description="Triggers that are active when their contact opens (a holster reed switch), by name.",
    )
    hold_seconds: float = Field(
        2.0,
        ge=1.0,
        le=5.0,
        description="How long the record button must be held to stop recording (a knock never stops it).",
    )
    reminder_seconds: float = Field(
        120,
        ge=0,
        le=600,
        description="Vibration reminder interval while recording; 0 turns it off (only here, never from the panel).",
    )


class OfficersConfig(_Section):
    roster: str | None = Field(
        None,
        description="Roster file (TOML) mapping cards to officer id, name and 执法证号 (examples/roster.toml).",
    )
    card_reader: Literal["none", "evdev"] = Field(
        "none",
        description="`evdev`: a USB HID card reader (docs/decisions/0007-card-reader.md). Cards can always be presented with `liuhen ctl login`.",
    )
    card_device: str | None = Field(
        None, description="evdev: the reader's /dev/input/by-id/… path."
    )


class StorageConfig(_Section):
    low_free_mb: int = Field(
        2048, ge=0, description="Below this much free space the unit warns (LED, status)."
    )
    stop_free_mb: int = Field(
        256,
        ge=16,
        description="Below this the unit stops recording cleanly rather than fill the disk; nothing is overwritten. Must be below `low_free_mb`: a recording the full disk stopped resumes only above `low_free_mb`.",
    )

    @model_validator(mode="after")
    def _warn_before_stopping(self) -> StorageConfig:
        if self.low_free_mb <= self.stop_free_mb:
            raise ValueError(
                f"low_free_mb ({self.low_free_mb}) must be above stop_free_mb "
                f"({self.stop_free_mb}): the warning comes first, and the gap between them "
                "keeps a resumed recording from stopping again at once"
            )
        return self


class OsdConfig(_Section):
    enabled: bool = Field(
        True, description="Burn time, device id and officer number into the video (GA/T 947 style)."
    )


class UplinkConfig(_Section):
    host: str = Field(
        min_length=1, description="MQTT broker host; must match the broker's certificate."
    )
    port: int = Field(8883, ge=1, le=65535, description="Broker TLS port.")
    ca_file: str | None = Field(
        None, description="CA that issued the broker's certificate (default: the system CAs)."
    )
    cert_file: str | None = Field(
        None, description="TLS client certificate, PEM (docs/MQTT.md: a per-unit TLS certificate)."
    )
    key_file: str | None = Field(None, description="TLS client key, PEM; with cert_file.")
    command_key_file: str | None = Field(
        None, description="Central command public key(s), PEM. Without it every command is refused."
    )
    topic_prefix: str = Field(
        "liuhen/v1",
        pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="Topic root (docs/MQTT.md).",
    )
    heartbeat_seconds: float = Field(
        10, ge=1, le=3600, description="Seconds between status heartbeats."
    )
    heartbeat_recording_seconds: float | None = Field(
        None,
        ge=1,
        le=3600,
        description="Faster heartbeat while recording (at most heartbeat_seconds).",
    )
    keepalive_seconds: int = Field(30, ge=5, le=3600, description="MQTT keep alive.")
    reconnect_min_seconds: float = Field(1.0, gt=0, le=3600, description="First reconnect delay.")
    reconnect_max_seconds: float = Field(
        60.0, gt=0, le=3600, description="Longest reconnect delay (backoff doubles up to it)."
    )

    @model_validator(mode="after")
    def _pairs(self) -> UplinkConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.reconnect_min_seconds > self.reconnect_max_seconds:
            raise ValueError("reconnect_min_seconds must not exceed reconnect_max_seconds")
        hb = self.heartbeat_recording_seconds
        if hb is not None and hb > self.heartbeat_seconds:
            raise ValueError("heartbeat_recording_seconds must not exceed heartbeat_seconds")
        return self


class UploadConfig(_Section):
    url: str = Field(
        pattern=r"^https://[^/\s]+(/.*)?$",
        description="The central collector's upload endpoint, e.g. `https://collector.example:8443` (docs/CENTRAL.md).",
    )
    ca_file: str | None = Field(
        None, description="CA of the collector's certificate (default: `[uplink] ca_file`)."
    )
    cert_file: str | None = Field(
        None, description="TLS client certificate (default: `[uplink] cert_file`)."
    )
    key_file: str | None = Field(None, description="TLS client key (default: `[uplink] key_file`).")
    chunk_bytes: int = Field(
        4 << 20,
        ge=64 << 10,
        le=64 << 20,
        description="Bytes sent per request; an interrupted upload resumes from the last whole chunk.",
    )
    poll_seconds: float = Field(
        30,
        ge=1,
        le=3600,
        description="How often to look for segments to upload when not told of a new one.",
    )
    retry_max_seconds: float = Field(
        300,
        ge=1,
        le=86400,
        description="Longest wait between attempts while the collector cannot be reached.",
    )


class EncryptionConfig(_Section):
    enabled: bool | None = Field(
        None,
        description='Encrypt every segment at rest for the agency key, so the unit cannot read its own evidence back (docs/decisions/0010). Unset: on for `profile = "body"`, off for `"hearing"`.',
    )
    recipient: str | None = Field(
        None,
        description="Path of the agency's public key file (PEM: an ML-KEM-768 and an X25519 public key, from `liuhen keys agency-key`), read at start. Required when encryption is on: a body unit without it, or with a file that is not one, refuses to start (exit 78) rather than write plaintext.",
    )


class Config(_Section):
    unit: UnitConfig
    camera: CameraConfig
    keys: KeysConfig
    microphone: MicrophoneConfig = Field(default_factory=MicrophoneConfig)
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    signer: SignerConfig = Field(default_factory=SignerConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)
    officers: OfficersConfig = Field(default_factory=OfficersConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    osd: OsdConfig = Field(default_factory=OsdConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    uplink: UplinkConfig | None = Field(
        None, description="The central MQTT broker; absent: the unit works offline."
    )
    upload: UploadConfig | None = Field(
        None,
        description="Upload of sealed segments to the central collector (marked ones first); absent: no upload. Nothing is deleted on acknowledgement.",
    )

    @model_validator(mode="after")
    def _encryption_has_a_recipient(self) -> Config:
        if self.encrypts() and self.encryption.recipient is None:
            raise ValueError(
                f"encryption.recipient: a {self.unit.profile} unit encrypts its evidence "
                "(encryption.enabled is on) and needs the agency's public key; give "
                "encryption.recipient, or set encryption.enabled = false to record in the clear"
            )
        return self

    def encrypts(self) -> bool:
        """Whether segments are encrypted at rest (the profile's default unless set)."""
        enabled = self.encryption.enabled
        return self.unit.profile == "body" if enabled is None else enabled


def parse(data: dict[str, Any], source: str = "config") -> Config:
    return validate(Config, data, source, ConfigError)


def load(path: Path) -> Config:
    return parse(read_toml(path, ConfigError), str(path))


def render_markdown() -> str:
    """docs/CONFIG.md, generated from the schema (`liuhen config doc`)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `liuhen config doc` from firmware_py/config.py; a test keeps it in step. -->",
        "",
        "One TOML file, given as `liuhen run --config FILE`. Every key is checked before the",
        "unit touches its data directory or opens a device; unknown keys, wrong types and",
        "out-of-range values are refused with a message naming the key, and the daemon exits",
        "with status 78 (EX_CONFIG). `liuhen config check FILE` runs the same checks.",
        "",
    ]
    for section_name, section_field in Config.model_fields.items():
        model = section_field.annotation
        optional = False
        if not isinstance(model, type):  # `X | None`: an optional section
            model = next(a for a in getattr(model, "__args__", ()) if a is not type(None))
            optional = True
        assert isinstance(model, type) and issubclass(model, BaseModel)
        required = section_field.is_required()
        suffix = " (required)" if required else " (optional section)" if optional else ""
        lines += [f"## [{section_name}]{suffix}", ""]
        if section_field.description:
            lines += [section_field.description, ""]
        lines += ["| key | default | valid | meaning |", "| --- | --- | --- | --- |"]
        for key, field in model.model_fields.items():
            default = (
                "*required*" if field.is_required() else f"`{field.default!r}`".replace("'", '"')
            )
            default = default.replace("True", "true").replace("False", "false")
            lines.append(
                f"| `{key}` | {default} | {constraints(field)} | {field.description or ''} |"
            )
        lines.append("")
    return "\n".join(lines)
