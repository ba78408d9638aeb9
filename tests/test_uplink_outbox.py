"""The uplink's store without a broker: the outbox's promises, used nonces that survive
a restart, and settings and key files refused with a message naming the problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.keys import KeySpec, init_key
from uplink.client import UplinkSettings
from uplink.commands import (
    CommandRefused,
    CommandVerifier,
    SeenNonces,
    load_command_keys,
    make_command,
    sign_command,
)
from uplink.outbox import Outbox, OutboxConflict, Queued
from uplink.store import Store


def test_the_outbox_keeps_lines_across_a_reopen_and_refuses_a_fork(tmp_path: Path) -> None:
    store = Store(tmp_path / "outbox.sqlite")
    outbox = Outbox(store)
    assert outbox.put(0, b"zero\n") is Queued.NEW
    assert outbox.put(2, b"two\n") is Queued.NEW
    assert outbox.put(1, b"one\n") is Queued.BEHIND  # a backfill after a power cut
    assert outbox.put(1, b"one\n") is Queued.ALREADY
    with pytest.raises(OutboxConflict, match="ledger seq 1"):
        outbox.put(1, b"another one\n")
    with pytest.raises(ValueError, match="non-negative"):
        outbox.put(-1, b"x")
    outbox.acknowledged([0])
    store.close()

    reopened = Outbox(Store(tmp_path / "outbox.sqlite"))
    assert reopened.from_seq(0, 10) == [(1, b"one\n"), (2, b"two\n")]
    assert reopened.backlog().entries == 2 and reopened.backlog().bytes == 8
    assert reopened.backlog().oldest_seq == 1 and reopened.highest_queued() == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=40))
def test_backlog_counts_match_the_table(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[bool, int]]
) -> None:
    store = Store(tmp_path_factory.mktemp("ob") / "outbox.sqlite")
    outbox = Outbox(store)
    model: dict[int, bytes] = {}
    for is_put, seq in ops:
        if is_put:
            line = b"x" * (seq + 1)
            outbox.put(seq, line)
            model[seq] = line
        else:
            outbox.acknowledged([seq])
            model.pop(seq, None)
    backlog = outbox.backlog()
    assert backlog.entries == len(model) and backlog.bytes == sum(map(len, model.values()))
    assert backlog.oldest_seq == (min(model) if model else None)
    assert outbox.from_seq(0, 100) == sorted(model.items())
    store.close()


def test_a_used_nonce_is_refused_after_a_restart(tmp_path: Path) -> None:
    central = init_key(KeySpec(kind="software", path=str(tmp_path / "central.key")))
    keys_file = tmp_path / "keys.pem"
    keys_file.write_bytes(
        central.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    payload = sign_command(central, make_command("u1", "ping"))
    store = Store(tmp_path / "outbox.sqlite")
    CommandVerifier("u1", load_command_keys(keys_file), SeenNonces(store)).verify(payload)
    store.close()
    store = Store(tmp_path / "outbox.sqlite")
    verifier = CommandVerifier("u1", load_command_keys(keys_file), SeenNonces(store))
    with pytest.raises(CommandRefused) as refused:
        verifier.verify(payload)
    assert refused.value.code == "replayed"
    far = make_command("u1", "ping", lifetime=timedelta(days=1))
    with pytest.raises(CommandRefused) as refused:
        verifier.verify(sign_command(central, far))
    assert refused.value.code == "too_long_lived"
    late = make_command("u1", "ping", now=datetime.now(UTC) - timedelta(minutes=3))
    with pytest.raises(CommandRefused, match="this unit's clock reads"):
        verifier.verify(sign_command(central, late))


def test_command_key_files_and_settings_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "keys.pem"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="no PEM block"):
        load_command_keys(bad)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValueError, match="block 1 is not an EC P-256 key"):
        load_command_keys(bad)
    with pytest.raises(ValueError, match=r"uplink\.port"):
        UplinkSettings(host="h", device_id="u1", port=0)
    with pytest.raises(ValueError, match="heartbeat_recording_s"):
        UplinkSettings(host="h", device_id="u1", heartbeat_recording_s=30)
    with pytest.raises(ValueError, match="cert_file/key_file"):
        UplinkSettings(host="h", device_id="u1", cert_file="c.pem")
    with pytest.raises(ValueError, match="cannot be an MQTT topic level"):
        UplinkSettings(host="h", device_id="unit/+")
