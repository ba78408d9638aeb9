"""Encryption at rest (ADR 0010): the unit writes segments it cannot read back, every
check an outsider makes still works without the agency key, and the centre decrypts
with it — also what a power cut left — refusing anything altered, by record number."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from conftest import (
    Daemon,
    RecordedData,
    decode_errors,
    ffprobe,
    liuhen,
    stream_spans,
    write_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence.certs import chain_pem
from evidence.ledger import LEDGER_FILE, Entry
from evidence.records import (
    HEADER_KEYS,
    MAGIC,
    MAX_RECORD_PLAINTEXT,
    AgencyKey,
    EncryptionError,
    Recipient,
    RecordPartHasher,
    RecordSealer,
    decrypt,
    generate_agency_key,
    read_preamble,
)
from hw.camera_sim import SimulatedCamera
from hw.media import AudioFormat, EncodedPacket, VideoFormat
from hw.microphone import tone_packets
from recorder import fmp4
from recorder.fmp4 import SegmentWriter
from recorder.recovery import recover
from signer.c2pa_embed import read_validation
from signer.identity import issue_device_cert, make_dev_ca
from signer.keys import KeySpec, init_key
from store.index import Index


# --- the format, in memory -------------------------------------------------------------
@pytest.fixture(scope="module", params=[True, False], ids=["mlkem768-x25519", "x25519"])
def agency(request: pytest.FixtureRequest) -> AgencyKey:
    return AgencyKey.from_pem(generate_agency_key(hybrid=request.param)[0])


def sealed_file(agency: AgencyKey, records: list[bytes], final: bool = True) -> bytes:
    sealer = RecordSealer(agency.recipient, "unit-7", "unit-7_r00001_s0001.mp4.enc")
    out = sealer.preamble
    for i, plain in enumerate(records):
        out += sealer.seal(plain, final=final and i == len(records) - 1)
    return out


def record_spans(data: bytes) -> list[tuple[int, int]]:
    hasher = RecordPartHasher()
    hasher.update(data)
    return [(p.offset, p.length) for p in hasher.finish()[1:]]


def open_file(agency: AgencyKey, data: bytes) -> tuple[bytes, Any]:
    out = io.BytesIO()
    result = decrypt(io.BytesIO(data), out, agency)
    return out.getvalue(), result


def test_records_round_trip_and_split_the_same_in_any_chunking(agency: AgencyKey) -> None:
    rng = random.Random(7)
    plains = [rng.randbytes(rng.randrange(0, 70_000)) for _ in range(12)]
    data = sealed_file(agency, plains)
    whole = RecordPartHasher()
    whole.update(data)
    for _ in range(20):
        streamed, at = RecordPartHasher(), 0
        while at < len(data):
            step = rng.choice((1, 3, 4, 11, 4096, 32768))
            streamed.update(data[at : at + step])
            at += step
        assert streamed.finish() == whole.finish()
    assert len(whole.parts) == 1 + len(plains)
    assert whole.file_sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    plain, result = open_file(agency, data)
    assert plain == b"".join(plains) and result.final and result.records == len(plains)
    assert result.plaintext_sha256 == hashlib.sha256(plain).hexdigest()


def test_every_tamper_is_refused_and_named_by_record(agency: AgencyKey) -> None:
    plains = [bytes([i]) * 5000 for i in range(6)]
    data = sealed_file(agency, plains)
    spans = record_spans(data)
    tampers = 0

    def refused(mangled: bytes, says: str) -> None:
        nonlocal tampers
        tampers += 1
        with pytest.raises(EncryptionError, match=says):
            open_file(agency, mangled)

    off, length = spans[2]
    flipped = bytearray(data)
    flipped[off + length // 2] ^= 0x01
    refused(bytes(flipped), r"record 2 \(bytes")
    (a0, al), (b0, bl) = spans[1], spans[2]
    swapped = data[:a0] + data[b0 : b0 + bl] + data[a0 : a0 + al] + data[b0 + bl :]
    refused(swapped, "record 1 ")
    dropped = data[:a0] + data[a0 + al :]
    refused(dropped, "record 1 ")
    other = sealed_file(agency, plains)  # same plaintext, another file: its own key
    o0, ol = record_spans(other)[3]
    refused(data[:o0] + other[o0 : o0 + ol] + data[o0 + ol :], "record 3 ")
    refused(data + other[o0 : o0 + ol], "after the final record: appended")
    refused(data + other[o0 : o0 + 7], "after the final record: appended")
    _, header_bytes, start = read_preamble(io.BytesIO(data))
    renamed = json.loads(header_bytes)
    renamed["segment"] = "unit-7_r00001_s0002.mp4.enc"
    new_header = bytes(rfc8785.dumps(renamed))
    relabelled = MAGIC + len(new_header).to_bytes(4, "big") + new_header + data[start:]
    refused(relabelled, "wrapped data key does not open")
    stranger = AgencyKey.from_pem(generate_agency_key(hybrid=agency.mlkem is not None)[0])
    tampers += 1
    with pytest.raises(EncryptionError, match="encrypted for agency key"):
        open_file(stranger, data)
    # Cut after a whole record (a power cut): everything before it opens, marked not final.
    plain, result = open_file(agency, data[: spans[3][0]])
    assert plain == b"".join(plains[:3]) and not result.final and result.records == 3
    print(f"[encryption] tampered files refused: {tampers}")


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(max_size=2048), cut=st.integers(0, 4000), flip=st.integers(0, 4000))
def test_random_and_mangled_bytes_never_crash_the_reader(
    garbage: bytes, cut: int, flip: int, agency: AgencyKey
) -> None:
    """Whatever the bytes, the framing and the decryptor say EncryptionError or open a
    prefix that authenticates; nothing else escapes."""
    data = bytearray(sealed_file(agency, [b"x" * 700, b"y" * 900]))
    if flip < len(data):
        data[flip] ^= 0x40
    for candidate in (garbage, bytes(data[:cut]), bytes(data), b"LIUHENC1" + garbage):
        try:
            hasher = RecordPartHasher()
            hasher.update(candidate)
        except EncryptionError:
            pass
        try:
            plain, _ = open_file(agency, candidate)
        except EncryptionError:
            continue
        assert (b"x" * 700 + b"y" * 900).startswith(plain)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from([*sorted(HEADER_KEYS), "extra"]), value=json_values,
       drop=st.booleans())  # fmt: skip
def test_a_header_with_any_field_wrong_is_refused_cleanly(
    field: str, value: Any, drop: bool, agency: AgencyKey
) -> None:
    """A file made by anyone holding the public key, with a header field of the wrong type
    or value, missing, or extra: EncryptionError naming it, never a traceback."""
    data = sealed_file(agency, [b"z" * 300])
    _, header_bytes, start = read_preamble(io.BytesIO(data))
    header = json.loads(header_bytes)
    if drop and field in header:
        del header[field]
    else:
        header[field] = value
    new = bytes(rfc8785.dumps(header))
    candidate = MAGIC + len(new).to_bytes(4, "big") + new + data[start:]
    try:
        plain, _ = open_file(agency, candidate)
    except EncryptionError:
        return
    assert plain == b"z" * 300 and header_bytes == new  # only an unchanged header opens


# --- the writer and recovery, on real H.264 + AAC --------------------------------------
ORIGIN = 5_000_000_000


@pytest.fixture(scope="module")
def clip() -> list[EncodedPacket]:
    camera = SimulatedCamera(VideoFormat(320, 240, 30), bitrate=1_500_000)
    packets = camera.packets(ORIGIN, 90) + [
        p for p in tone_packets(16000, ORIGIN, 3.0) if p.pts_us >= ORIGIN
    ]
    return sorted(packets, key=lambda p: p.pts_us)


def encrypted_writer(path: Path, clip: list[EncodedPacket], recipient: Recipient) -> SegmentWriter:
    return SegmentWriter(path, clip[0], AudioFormat(16000, 1), ORIGIN, fragment_us=500_000,
                         encrypt_for=recipient, device_id="unit-7")  # fmt: skip


def test_a_pre_event_burst_is_split_into_bounded_records_and_decrypts_whole(
    tmp_path: Path, clip: list[EncodedPacket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-event ring goes to disk in one flush; however long it is, no record may
    exceed what a reader accepts (here the limit is made small, to test the splitting)."""
    private, public = generate_agency_key()
    limit = 8 << 10
    monkeypatch.setattr(fmp4, "MAX_RECORD_PLAINTEXT", limit)
    writer = encrypted_writer(tmp_path / "burst.mp4.enc", clip, Recipient.from_pem(public))
    for packet in clip:
        writer.write(packet, sync=False)  # the whole ring in one burst
    writer.sync()
    written = writer.seal()
    lengths = [p.length for p in written.parts[1:]]
    assert len(lengths) > 4 and max(lengths) <= 4 + limit + 16, lengths
    out = tmp_path / "burst.mp4"
    with open(written.path, "rb") as src, open(out, "wb") as dst:
        result = decrypt(src, dst, AgencyKey.from_pem(private))
    assert result.final and result.records == len(lengths)
    assert written.encryption is not None
    assert result.plaintext_sha256 == written.encryption["plaintext"]["sha256"]
    assert decode_errors(out) == "" and stream_spans(out)["video"].frames == 90
    sealer = RecordSealer(Recipient.from_pem(public), "unit-7", "x.mp4.enc")
    with pytest.raises(EncryptionError, match="split at"):
        sealer.seal(bytes(MAX_RECORD_PLAINTEXT + 1))  # the writer's own limit, unpatched


def test_recovery_of_a_cut_encrypted_file_keeps_whole_records_and_sets_garbage_aside(
    tmp_path: Path, clip: list[EncodedPacket]
) -> None:
    """A cut inside a record keeps the records before it; a header that does not parse
    (a bit flipped on the card) keeps nothing playable but loses no byte: all go to torn/."""
    private, public = generate_agency_key()
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    writer = encrypted_writer(evidence / "cut.mp4.enc", clip, Recipient.from_pem(public))
    for packet in clip:
        writer.write(packet)
    writer.abandon()
    cut = evidence / "cut.mp4.enc.part"
    spans = record_spans(cut.read_bytes() + b"")  # whole records only: abandon wrote them all
    with open(cut, "r+b") as f:  # a power cut in the middle of record 3
        f.truncate(spans[3][0] + spans[3][1] // 2)
    bad = evidence / "bad.mp4.enc.part"
    mangled = bytearray(cut.read_bytes())
    mangled[20] ^= 0x04  # inside the header's JSON
    bad.write_bytes(mangled)
    index = Index.open(tmp_path / "index.sqlite")
    try:
        results = {r.name: r for r in recover(evidence, index)}
        assert results["cut.mp4.enc"].state == "recovered"
        assert results["cut.mp4.enc"].kept_bytes == spans[3][0]
        assert results["bad.mp4.enc"].state == "empty"
        assert (evidence / "torn" / "bad.mp4.enc.tail").read_bytes() == bytes(mangled)
        assert index.segment("cut.mp4.enc")["state"] == "recovered"  # type: ignore[index]
    finally:
        index.close()
    out = tmp_path / "cut.mp4"
    with open(evidence / "cut.mp4.enc", "rb") as src, open(out, "wb") as dst:
        result = decrypt(src, dst, AgencyKey.from_pem(private))
    assert result.records == 3 and not result.final
    assert stream_spans(out)["video"].frames > 0


# --- a unit recording encrypted, cut by a power cut, and the centre opening it ------------
@dataclass(frozen=True)
class Unit(RecordedData):
    agency_key: Path

    def entries(self) -> dict[str, dict[str, Any]]:
        found = {}
        for line in (self.evidence / LEDGER_FILE).read_bytes().splitlines():
            entry = Entry.from_line(line)
            if entry.kind == "segment":
                found[entry.segment_name] = entry.body_json()["segment"]
        return found


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory, alsa_home: Path) -> Iterator[Unit]:
    """An encrypting body unit: a clean recording, then one cut by SIGKILL, then the
    restart that recovers it."""
    base = tmp_path_factory.mktemp("encrypting-unit")
    made = liuhen("keys", "agency-key", str(base / "agency"))
    assert made.returncode == 0 and "recipient sha256" in made.stdout, made.stderr
    config = write_config(
        base / "unit.toml",
        recorder={"autostart": True, "segment_seconds": 5, "pre_event_seconds": 1},
        encryption={"enabled": True, "recipient": str(base / "agency" / "agency.pub.pem")},
    )
    env = {**os.environ, "HOME": str(alsa_home), "PYTHONUNBUFFERED": "1"}
    data = base / "data"
    run = [Daemon(config, data, env, base / f"run{n}.log") for n in range(3)]
    run[0].start().wait_for(lambda s: s["segments_sealed"] >= 2, 60, "two sealed segments")
    assert run[0].terminate() == 0, run[0].output()
    run[1].start().wait_for(
        lambda s: s["segments_sealed"] >= 1 and s["segment_media_s"] > 1.5, 60, "recording again"
    )
    run[1].kill()
    run[2].start().wait_for(lambda s: s["state"] == "recording" and s["sealer"]["backlog"] == 0
                            and s["sealer"]["last_seq"] is not None, 60, "recovered and sealed")  # fmt: skip
    time.sleep(1)
    assert run[2].terminate() == 0, run[2].output()
    yield Unit(data, env, agency_key=base / "agency" / "agency.key.pem")
    for d in run:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()


def test_the_unit_writes_only_ciphertext_and_verify_needs_no_key(unit: Unit) -> None:
    files = unit.segments()
    assert len(files) >= 4 and not list(unit.evidence.glob("*.mp4"))
    for path in files:
        assert path.read_bytes()[:8] == b"LIUHENC1"
        assert b"ftyp" not in path.read_bytes() and b"mdat" not in path.read_bytes()
    done = liuhen("verify", str(unit.data), "--json")
    assert done.returncode == 0, done.stdout
    codes = {f["code"] for f in json.loads(done.stdout)["findings"]}
    assert {"encrypted", "recovered"} <= codes
    entries = unit.entries()
    states = [entries[p.name]["state"] for p in files]
    assert states.count("recovered") == 1, states
    for path in files:
        enc = entries[path.name]["encryption"]
        assert enc["kem"] == "MLKEM768-X25519" and enc["records"] >= 2
        assert (enc["plaintext"] is None) == (entries[path.name]["state"] == "recovered")


def test_the_centre_decrypts_every_segment_to_the_signed_plaintext(
    unit: Unit, tmp_path: Path
) -> None:
    entries = unit.entries()
    previous_end: float | None = None
    for path in unit.segments():
        out = tmp_path / path.name.removesuffix(".enc")
        done = liuhen("central", "decrypt", str(path), str(out), "--key", str(unit.agency_key),
                      "--trust", str(unit.data.parent / "device.pem"))  # fmt: skip
        assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
        assert out.stat().st_mode & 0o077 == 0  # plaintext evidence: for its owner only
        seg = entries[path.name]
        assert ffprobe(out, "-count_frames", "-show_streams")["streams"][0]["nb_read_frames"] != "0"
        assert decode_errors(out) == ""
        spans = stream_spans(out)
        if seg["state"] == "recovered":
            assert "recovered after a power cut" in done.stdout
            previous_end = None
            continue
        assert "whole; matches entry" in done.stdout
        plain = hashlib.sha256(out.read_bytes()).hexdigest()
        assert plain == seg["encryption"]["plaintext"]["sha256"]
        assert out.stat().st_size == seg["encryption"]["plaintext"]["bytes"]
        if previous_end is not None and seg["seq"] > 1:  # consecutive files join
            assert abs(spans["video"].first_pts - previous_end) < 1 / 30
        previous_end = spans["video"].end


def test_the_centre_can_embed_its_own_c2pa_manifest_on_decrypting(
    unit: Unit, tmp_path: Path
) -> None:
    """The unit cannot put C2PA into a file it cannot read; the centre signs one into the
    plaintext, citing the entry, and the media fragments stay those the unit signed."""
    ca = make_dev_ca(tmp_path / "agency-ca")
    with init_key(KeySpec(kind="software", path=str(tmp_path / "agency-sign.key"))) as backend:
        cert = issue_device_cert(backend, "agency-centre", ca.directory)
    chain = tmp_path / "agency-sign.pem"
    chain.write_text(chain_pem(cert, ca.intermediate_cert))
    entries = unit.entries()
    sealed = next(p for p in unit.segments() if entries[p.name]["state"] == "sealed")
    out = tmp_path / "signed.mp4"
    done = liuhen("central", "decrypt", str(sealed), str(out), "--key", str(unit.agency_key),
                  "--trust", str(unit.data.parent / "device.pem"),
                  "--c2pa-key", str(tmp_path / "agency-sign.key"), "--c2pa-cert", str(chain))  # fmt: skip
    assert done.returncode == 0 and "C2PA manifest embedded" in done.stdout, done.stderr
    assert read_validation(out, ca.root_pem) == "Trusted"
    manifest_facts = json.dumps(entries[sealed.name]["sha256"])
    assert manifest_facts.strip('"').encode() in out.read_bytes()  # the entry is cited
    assert decode_errors(out) == ""
    lone = liuhen("central", "decrypt", str(sealed), str(tmp_path / "x.mp4"), "--key",
                  str(unit.agency_key), "--c2pa-key", str(tmp_path / "agency-sign.key"))  # fmt: skip
    assert lone.returncode == 2 and "go together" in lone.stderr


def data_keys(unit: Unit) -> list[bytes]:
    """Each segment's data key, unwrapped with the agency key (as only the centre can)."""
    from cryptography.hazmat.primitives import hpke

    from evidence.records import KEMS, _info

    agency = AgencyKey.load(unit.agency_key)
    keys = []
    for path in unit.segments():
        with open(path, "rb") as f:
            header, _, _ = read_preamble(f)
        suite = hpke.Suite(KEMS[header["kem"]], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
        keys.append(suite.decrypt(base64.b64decode(header["wrapped_key"]), agency.hpke_key(),
                                  info=_info(header["device"], header["segment"])))  # fmt: skip
    return keys


def test_no_data_key_is_left_on_the_unit(unit: Unit) -> None:
    keys = data_keys(unit)
    assert len(keys) == len(unit.segments()) and all(len(k) == 32 for k in keys)
    forms = [f for k in keys for f in (k, k.hex().encode(), base64.b64encode(k))]
    scanned = 0
    for path in unit.data.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            scanned += 1
            assert not any(f in blob for f in forms), f"a data key is in {path}"
    assert scanned >= len(keys) + 3  # segments, ledger, head, index


def test_a_flipped_ciphertext_byte_is_named_by_verify_and_refused_by_decrypt(
    unit: Unit, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence"
    shutil.copytree(unit.evidence, evidence)
    victim = sorted(evidence.glob("*.enc"))[0]
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    offset, length = record_spans(bytes(data))[3]
    data[offset + length // 2] ^= 0x80
    victim.write_bytes(data)
    done = liuhen("verify", str(evidence), "--json")
    assert done.returncode == 1
    found = [f for f in json.loads(done.stdout)["findings"] if f["severity"] == "error"]
    assert [(f["code"], f["where"]) for f in found] == [("altered", victim.name)]
    assert "part 4 " in found[0]["message"]
    out = tmp_path / "out.mp4"
    refused = liuhen("central", "decrypt", str(victim), str(out), "--key", str(unit.agency_key))
    assert refused.returncode == 1 and "part 4 " in refused.stderr, refused.stderr
    assert "record k - 1" in refused.stderr and not out.exists()
    assert not list(tmp_path.glob(".*partial*"))


def without_encryption_section(config: Path) -> Path:
    """The profile's default, as a config that never mentions encryption has it."""
    text = config.read_text()
    assert "[encryption]\nenabled = false\n" in text
    config.write_text(text.replace("[encryption]\nenabled = false\n", ""))
    return config


def test_a_body_unit_without_an_agency_key_refuses_to_start(tmp_path: Path) -> None:
    bare = without_encryption_section(write_config(tmp_path / "bare.toml"))
    done = liuhen("run", "--config", str(bare), "--data", str(tmp_path / "d1"), "--no-live")
    assert done.returncode == 78 and "encryption.recipient" in done.stderr, done.stderr
    wrong = write_config(tmp_path / "wrong.toml",
                         encryption={"enabled": True, "recipient": str(tmp_path / "device.pem")})  # fmt: skip
    done = liuhen("run", "--config", str(wrong), "--data", str(tmp_path / "d2"), "--no-live")
    assert done.returncode == 78 and "encryption.recipient:" in done.stderr, done.stderr
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()
    hearing = without_encryption_section(
        write_config(tmp_path / "hearing.toml", unit={"device_id": "room-1", "profile": "hearing"})
    )
    assert liuhen("config", "check", str(hearing)).returncode == 0
