"""MQTT topic names of one unit, version 1 (docs/MQTT.md, "Topics").

Owns: the topic tree under a prefix (default ``liuhen/v1``), one subtree per device, and
checking that a device id or prefix cannot escape it (no ``+``, ``#``, ``/`` in an id,
no wildcards in a prefix). Must not: know what is published on a topic (payloads.py) or
when (client.py).

    <prefix>/<device>/presence   retained birth / death (last will), QoS 1
    <prefix>/<device>/status     retained heartbeat with message expiry, QoS 0
    <prefix>/<device>/ledger     every ledger line, in order, QoS 1
    <prefix>/<device>/cmd        signed commands to the unit, QoS 1
    <prefix>/<device>/reply[/…]  replies to commands, QoS 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "liuhen/v1"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PREFIX_LEVEL = re.compile(r"^[A-Za-z0-9._-]+$")


def check_device_id(device_id: str) -> str:
    if not _DEVICE_ID.match(device_id):
        raise ValueError(
            f"device id {device_id!r} cannot be an MQTT topic level: use 1-64 of "
            "A-Z a-z 0-9 . _ - (starting with a letter or digit)"
        )
    return device_id


def check_prefix(prefix: str) -> str:
    levels = prefix.split("/")
    if not prefix or not all(_PREFIX_LEVEL.match(level) for level in levels):
        raise ValueError(
            f"topic prefix {prefix!r} must be one or more '/'-separated levels of "
            "A-Z a-z 0-9 . _ - (no wildcards, no empty levels)"
        )
    return prefix


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_device_id(self.device)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def presence(self) -> str:
        return f"{self.base}/presence"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def ledger(self) -> str:
        return f"{self.base}/ledger"

    @property
    def command(self) -> str:
        return f"{self.base}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    def is_reply_topic(self, topic: str) -> bool:
        """A response topic a command may ask for: this unit's reply topic or below it."""
        return (topic == self.reply or topic.startswith(self.reply + "/")) and not any(
            c in topic for c in "+#\0"
        )


def fleet_filter(prefix: str, leaf: str) -> str:
    """Subscription filter for one leaf of every unit, e.g. ``liuhen/v1/+/ledger``."""
    return f"{check_prefix(prefix)}/+/{leaf}"


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(device, leaf) of a unit topic under ``prefix``; None for anything else."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    rest = topic[len(head) :].split("/")
    if len(rest) < 2 or not _DEVICE_ID.match(rest[0]):
        return None
    return rest[0], "/".join(rest[1:])
