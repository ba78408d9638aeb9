"""The configuration of ``liuhen central serve``: one TOML file, checked whole before start.

Owns: the schema of every key (pydantic, strict: no silent type coercion; unknown keys
refused), its defaults and ranges, and turning a validation failure into one line per
problem that names the key (``collector.port: must be <= 65535 (got 70000)``). The
reference table in docs/CENTRAL.md is this schema. Must not: open files, sockets or the
database (``central.serve`` does, and names the key when a file is unusable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.validation import read_toml, validate
from protocol.topics import DEFAULT_PREFIX


class CentralConfigError(ValueError):
    """The configuration cannot be used; ``str()`` lists every problem, one per line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CentralSection(_Section):
    id: str = Field("central", min_length=1, max_length=64, description="Name of this collector, written into every upload receipt.")  # fmt: skip
    data_dir: str = Field(min_length=1, description="Directory for the database, stored segments, uploads in progress and quarantine.")  # fmt: skip
    database: str | None = Field(None, description="`sqlite:///PATH` (default: DATA/central.sqlite) or, for a fleet, `postgresql://…` (not implemented in this version).")  # fmt: skip


class MqttSection(_Section):
    host: str = Field(min_length=1, description="Broker host; must match its certificate.")
    port: int = Field(8883, ge=1, le=65535, description="Broker TLS port.")
    ca_file: str | None = Field(None, description="CA of the broker's certificate (default: the system CAs).")  # fmt: skip
    cert_file: str = Field(min_length=1, description="This collector's TLS client certificate, PEM (CN `central` in the shipped ACL).")  # fmt: skip
    key_file: str = Field(min_length=1, description="Its private key, PEM.")
    client_id: str = Field("liuhen-central", min_length=1, max_length=128, description="MQTT client id; must stay the same across restarts: the broker keeps the persistent session under it.")  # fmt: skip
    topic_prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", description="Topic root (docs/MQTT.md).")  # fmt: skip
    session_expiry_seconds: int = Field(7 * 86400, ge=60, le=0xFFFFFFFF, description="How long the broker keeps the session (and queues entries) while the collector is away.")  # fmt: skip
    keepalive_seconds: int = Field(30, ge=5, le=3600, description="MQTT keep alive.")


class TrustSection(_Section):
    directory: str = Field(min_length=1, description="Trusted device certificates and/or the agency's CA roots (`*.pem`, `*.crt`). Entries signed by other keys are kept apart and alarmed.")  # fmt: skip


class CollectorSection(_Section):
    listen: str = Field("0.0.0.0", min_length=1, description="Address of the upload endpoint (HTTPS, mutual TLS).")  # fmt: skip
    port: int = Field(8443, ge=0, le=65535, description="Its port (0: any free port, for tests).")
    cert_file: str = Field(min_length=1, description="The endpoint's TLS server certificate, PEM.")  # fmt: skip
    key_file: str = Field(min_length=1, description="Its private key, PEM.")
    client_ca_file: str = Field(min_length=1, description="CA that issued the units' TLS client certificates; the certificate's CN is the device id.")  # fmt: skip
    max_segment_bytes: int = Field(4 << 30, ge=1 << 20, description="Largest segment accepted.")  # fmt: skip
    max_request_bytes: int = Field(64 << 20, ge=1 << 16, description="Largest body of one PUT (a chunk).")  # fmt: skip
    receipt_key_file: str | None = Field(None, description="PEM private key (P-256) that signs upload receipts (DSSE). None: receipts are authenticated by TLS only.")  # fmt: skip


class MonitorSection(_Section):
    listen: str = Field("127.0.0.1", min_length=1, description="Address of the fleet monitor page. Put it behind the agency's authenticating proxy; it has no log-in of its own.")  # fmt: skip
    port: int = Field(8080, ge=0, le=65535, description="Its port (0: any free port, for tests).")  # fmt: skip
    cert_file: str | None = Field(None, description="TLS certificate for HTTPS; none: plain HTTP.")  # fmt: skip
    key_file: str | None = Field(None, description="Its private key; with cert_file.")
    client_ca_file: str | None = Field(None, description="Require browser client certificates issued by this CA (with cert_file).")  # fmt: skip

    @model_validator(mode="after")
    def _pairs(self) -> MonitorSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file (HTTPS)")
        return self


class AlertsSection(_Section):
    status_stale_seconds: float = Field(35, ge=1, le=86400, description="A unit whose last status is older than this is treated as offline (3 heartbeats + a margin).")  # fmt: skip
    storage_low_percent: float = Field(10, ge=0, le=100, description="Storage low below this share of the unit's storage free.")  # fmt: skip
    storage_low_bytes: int = Field(1 << 30, ge=0, description="Storage low below this many bytes free.")  # fmt: skip
    backlog_entries: int = Field(10, ge=1, description="A unit's MQTT backlog (entries not acknowledged by the broker) at or above this ...")  # fmt: skip
    backlog_growing_seconds: float = Field(60, ge=1, le=86400, description="... that has grown without shrinking for this long raises `backlog_growing`.")  # fmt: skip


class CentralConfig(_Section):
    central: CentralSection
    mqtt: MqttSection
    trust: TrustSection
    collector: CollectorSection
    monitor: MonitorSection = Field(default_factory=lambda: MonitorSection())
    alerts: AlertsSection = Field(default_factory=lambda: AlertsSection())

    @property
    def data_dir(self) -> Path:
        return Path(self.central.data_dir)

    def database(self) -> tuple[Literal["sqlite", "postgresql"], str]:
        """(kind, location): the SQLite file path, or the PostgreSQL URL."""
        url = self.central.database
        if url is None:
            return "sqlite", str(self.data_dir / "central.sqlite")
        if url.startswith("sqlite:///"):
            return "sqlite", url.removeprefix("sqlite://")
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql", url
        raise CentralConfigError(
            f"central.database: {url!r} is neither sqlite:///PATH nor postgresql://…"
        )


def parse(data: dict[str, Any], source: str = "config") -> CentralConfig:
    return validate(CentralConfig, data, source, CentralConfigError)


def load(path: Path) -> CentralConfig:
    return parse(read_toml(path, CentralConfigError), str(path))


def _valid(field: Any) -> str:
    rules = (("ge", ">="), ("le", "<="), ("min_length", "length >="), ("max_length", "length <="))
    return ", ".join(
        f"{sign} {getattr(meta, attr)}"
        for meta in field.metadata
        for attr, sign in rules
        if getattr(meta, attr, None) is not None
    )


def reference_markdown() -> str:
    """The key reference of docs/CENTRAL.md, from this schema."""
    lines = []
    for name, section in CentralConfig.model_fields.items():
        model = section.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        required = " (required)" if section.is_required() else ""
        lines += [
            f"### [{name}]{required}",
            "",
            "| key | default | valid | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for key, field in model.model_fields.items():
            default = "*required*" if field.is_required() else f"`{json.dumps(field.default)}`"
            lines.append(f"| `{key}` | {default} | {_valid(field)} | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)
