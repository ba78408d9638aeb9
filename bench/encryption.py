"""Encryption at rest: what sealing a segment costs the unit and opening it costs the
centre, against OpenSSL and ``sha256sum`` on the same bytes.

Owns: timing ``evidence.records`` over one real 60 s segment the pipeline benchmark
wrote (8 Mbit/s, 0.5 s fragments), cut where the unit cuts its records (the init, then
each ``moof``+``mdat`` fragment: one record per fsync'ed flush):

- ``RecordSealer.seal`` alone (AES-256-GCM per record), also with the same bytes cut
  into 125 kB records (0.5 s of 2 Mbit/s), against the faster of ``openssl speed -evp
  aes-256-gcm`` at the same record size and ``openssl enc -aes-256-ctr`` over the file;
  ``AESGCM.encrypt`` alone on the same records as a diagnostic (what ``seal`` adds);
- the unit's whole per-segment path as ``recorder.fmp4._EncryptingSink`` runs it, minus
  the disk: the muxer's 32 KiB writes into the pending buffer and a plaintext
  ``StreamingPartHasher``, then per fragment ``seal`` and the ciphertext
  ``RecordPartHasher``, one ``RecordSealer`` (one key wrap) per segment; against
  ``sha256sum`` of the same file (what the unencrypted pipeline's baseline runs); also
  against the same work done by OpenSSL alone (``openssl speed`` AES-256-GCM + four
  SHA-256 passes), and the unencrypted recording path (``StreamingPartHasher`` alone)
  for what encryption adds;
- the per-segment key wrap (``RecordSealer(...)``: HPKE to the agency key) for
  MLKEM768-X25519 and X25519, as latency percentiles;
- the centre's ``decrypt`` from a file in the page cache to /dev/null, against the
  faster of ``openssl speed -decrypt -evp aes-256-gcm`` and ``openssl enc -d
  -aes-256-ctr`` over the encrypted file.

Product and tools alternate, best of N wall times. Must not: change the evidence it
reads; it writes one scratch encrypted file and removes it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.hashing import MUXER_WRITE
from bench.measure import percentiles, run_command
from bench.pipeline import evidence_dir, run_product
from bench.results import Context, Figure, Result
from bench.rig import DEVICE_ID
from evidence.parts import StreamingPartHasher, iter_boxes
from evidence.records import (
    AgencyKey,
    Recipient,
    RecordPartHasher,
    RecordSealer,
    decrypt,
    generate_agency_key,
    is_encrypted,
)

SMALL_RECORD = 125_000  # 0.5 s of 2 Mbit/s: a low-bitrate unit's fragment
SEGMENT = "bench-encryption.mp4"
SHA256_PASSES = 4  # whole file + part, of the plaintext and of the ciphertext


def _segment(ctx: Context) -> Path:
    """The first plaintext segment the pipeline benchmark wrote (recording one first when
    there is none, as ``--only hashing`` does)."""
    evidence = evidence_dir(ctx)
    if not list(evidence.glob("*.mp4")):
        run_product(ctx.input.path, evidence.parent.parent)
    for path in sorted(evidence.glob("*.mp4")):
        if not is_encrypted(path):
            return path
    raise RuntimeError(f"no plaintext segment in {evidence}")


def _fragments(path: Path, size: int) -> list[bytes]:
    """The records the unit seals for this file: the init (ftyp + moov), then each
    fragment from its ``moof`` to the next."""
    with open(path, "rb") as f:
        starts = [0] + [b.offset for b in iter_boxes(f, size) if b.type == "moof"] + [size]
        f.seek(0)
        return [f.read(end - start) for start, end in itertools.pairwise(starts)]


def _cut(records: list[bytes], size: int) -> list[bytes]:
    data = b"".join(records)
    return [data[at : at + size] for at in range(0, len(data), size)]


def _encrypted_file(recipient: Recipient, records: list[bytes]) -> bytes:
    sealer = RecordSealer(recipient, DEVICE_ID, SEGMENT)
    last = len(records) - 1
    return sealer.preamble + b"".join(
        sealer.seal(r, final=i == last) for i, r in enumerate(records)
    )


def _seal(recipient: Recipient, records: list[bytes]) -> float:
    """Seconds in ``seal``, each record dropped once sealed, as the unit drops it once
    written; the key wrap is not timed."""
    sealer = RecordSealer(recipient, DEVICE_ID, SEGMENT)
    last = len(records) - 1
    start = time.perf_counter()
    for i, record in enumerate(records):
        sealer.seal(record, final=i == last)
    return time.perf_counter() - start


def _aesgcm(records: list[bytes]) -> float:
    """``AESGCM.encrypt`` alone on the same records (diagnostic: what ``seal`` adds)."""
    aead, aad = AESGCM(AESGCM.generate_key(256)), bytes(41)
    start = time.perf_counter()
    for i, record in enumerate(records):
        aead.encrypt(i.to_bytes(12, "big"), record, aad)
    return time.perf_counter() - start


def _unit_path(recipient: Recipient, records: list[bytes]) -> tuple[float, int, int, str]:
    """``_EncryptingSink`` without the disk, one segment: (seconds, plaintext parts,
    ciphertext parts, the plaintext's and the ciphertext's whole-file SHA-256)."""
    start = time.perf_counter()
    sealer = RecordSealer(recipient, DEVICE_ID, SEGMENT)
    cipher, plain, pending = RecordPartHasher(), StreamingPartHasher(), bytearray()
    cipher.update(sealer.preamble)
    last = len(records) - 1
    for i, record in enumerate(records):
        view = memoryview(record)
        for at in range(0, len(view), MUXER_WRITE):
            chunk = view[at : at + MUXER_WRITE]
            pending += chunk
            plain.update(chunk)
        cipher.update(sealer.seal(bytes(pending), final=i == last))
        pending.clear()
    plain_parts, cipher_parts = plain.finish(), cipher.finish()
    digests = plain.file_sha256.hexdigest() + " " + cipher.file_sha256.hexdigest()
    return time.perf_counter() - start, len(plain_parts), len(cipher_parts), digests


def _plain_path(records: list[bytes]) -> float:
    """The unencrypted recording path's hashing over the same writes, for the difference."""
    start = time.perf_counter()
    plain = StreamingPartHasher()
    for record in records:
        view = memoryview(record)
        for at in range(0, len(view), MUXER_WRITE):
            plain.update(view[at : at + MUXER_WRITE])
    plain.finish()
    plain.file_sha256.hexdigest()
    return time.perf_counter() - start


def _decrypt(src: Path, key: AgencyKey, expect: str, records: int) -> float:
    start = time.perf_counter()
    with open(src, "rb") as f, open(os.devnull, "wb") as out:
        done = decrypt(f, out, key)
    seconds = time.perf_counter() - start
    if not done.final or done.records != records or done.plaintext_sha256 != expect:
        raise RuntimeError(f"decrypt did not give back the segment: {done}")
    return seconds


def _openssl_speed(record: int, algorithm: str = "aes-256-gcm", decrypt: bool = False) -> float:
    """MB/s at ``record`` bytes per call, from ``openssl speed -mr``: in memory, like the
    product's calls, with no process start or file read in it."""
    cmd = ["openssl", "speed", "-mr", "-seconds", "1", "-bytes", str(record)]
    cmd += ["-decrypt"] if decrypt else []
    cmd += ["-evp", algorithm]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("+F:"):  # +F:<n>:<ALGORITHM>:<bytes per second>
            return float(line.rsplit(":", 1)[1]) / 1e6
    raise RuntimeError(f"no +F: line in the output of {' '.join(cmd)}: {out[-500:]}")


def _enc_ctr(path: Path, decrypt: bool = False) -> Callable[[], float]:
    key, iv = os.urandom(32).hex(), os.urandom(16).hex()
    cmd = ["openssl", "enc", "-aes-256-ctr", *(["-d"] if decrypt else [])]
    cmd += ["-K", key, "-iv", iv, "-nosalt", "-in", str(path), "-out", os.devnull]
    return lambda: run_command(cmd).wall_s


def _key_wrap(hybrid: bool, samples: int) -> dict[str, float]:
    _, public = generate_agency_key(hybrid=hybrid)
    recipient = Recipient.from_pem(public)
    times = []
    for i in range(samples):
        start = time.perf_counter()
        RecordSealer(recipient, DEVICE_ID, f"seg{i:04d}.mp4")
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def run(ctx: Context) -> Result:
    segment = _segment(ctx)
    size = segment.stat().st_size
    mb = size / 1e6
    fragments = _fragments(segment, size)
    small = _cut(fragments, SMALL_RECORD)
    digest = hashlib.sha256(segment.read_bytes()).hexdigest()
    typical = sorted(len(r) for r in fragments)[len(fragments) // 2]
    private, public = generate_agency_key()
    recipient, agency = Recipient.from_pem(public), AgencyKey.from_pem(private)

    scratch = ctx.area("encryption") / (SEGMENT + ".enc")
    scratch.write_bytes(_encrypted_file(recipient, fragments))
    enc_mb = scratch.stat().st_size / 1e6

    n = max(3, ctx.repeat)
    tools: dict[str, Callable[[], float]] = {
        "openssl enc -aes-256-ctr": _enc_ctr(segment),
        "openssl enc -d -aes-256-ctr": _enc_ctr(scratch, decrypt=True),
        "sha256sum": lambda: run_command(["sha256sum", str(segment)]).wall_s,
        "openssl dgst -sha256": lambda: (
            run_command(["openssl", "dgst", "-sha256", str(segment)]).wall_s
        ),
    }
    product: dict[str, Callable[[], float]] = {
        "seal": lambda: _seal(recipient, fragments),
        "seal_small": lambda: _seal(recipient, small),
        "aesgcm": lambda: _aesgcm(fragments),
        "unit": lambda: _unit_path(recipient, fragments)[0],
        "plain": lambda: _plain_path(fragments),
        "decrypt": lambda: _decrypt(scratch, agency, digest, len(fragments)),
    }
    seconds: dict[str, list[float]] = {k: [] for k in (*tools, *product)}
    speeds: dict[str, list[float]] = {
        "gcm": [],
        "gcm_small": [],
        "gcm_decrypt": [],
        "sha256": [],
    }
    try:
        _, plain_parts, cipher_parts, _ = _unit_path(recipient, fragments)
        if plain_parts != len(fragments) or cipher_parts != len(fragments) + 1:
            raise RuntimeError(
                f"unit path made {plain_parts} plaintext and {cipher_parts} ciphertext parts "
                f"for {len(fragments)} records"
            )
        for _ in range(n):  # alternate, so a disturbance hits product and tools alike
            for name, tool in tools.items():
                seconds[name].append(tool())
            speeds["gcm"].append(_openssl_speed(typical))
            speeds["gcm_small"].append(_openssl_speed(SMALL_RECORD))
            speeds["gcm_decrypt"].append(_openssl_speed(typical, decrypt=True))
            speeds["sha256"].append(_openssl_speed(typical, "sha256"))
            for name, method in product.items():
                seconds[name].append(method())
    finally:
        scratch.unlink(missing_ok=True)
    samples = ctx.pick(500, 200)
    wraps = {"MLKEM768-X25519": _key_wrap(True, samples), "X25519": _key_wrap(False, samples)}

    best = {k: min(v) for k, v in seconds.items()}
    rate = {k: mb / v for k, v in best.items()}
    rate["openssl enc -d -aes-256-ctr"] = enc_mb / best["openssl enc -d -aes-256-ctr"]
    gcm = {k: max(v) for k, v in speeds.items()}

    def faster(a: tuple[str, float], b: tuple[str, float]) -> tuple[str, float, str]:
        hi, lo = (a, b) if a[1] >= b[1] else (b, a)
        return hi[0], hi[1], f"{lo[0]}: {lo[1]:,.0f} MB/s"

    enc_ctr = ("openssl enc -aes-256-ctr (file -> /dev/null)", rate["openssl enc -aes-256-ctr"])
    dec_ctr = ("openssl enc -d -aes-256-ctr", rate["openssl enc -d -aes-256-ctr"])
    seal_base = faster((f"openssl speed -evp aes-256-gcm -bytes {typical}", gcm["gcm"]), enc_ctr)
    small_base = faster(
        (f"openssl speed -evp aes-256-gcm -bytes {SMALL_RECORD}", gcm["gcm_small"]), enc_ctr
    )
    dec_base = faster(
        (f"openssl speed -decrypt -evp aes-256-gcm -bytes {typical}", gcm["gcm_decrypt"]),
        dec_ctr,
    )
    dgst = rate["openssl dgst -sha256"]
    # The same work done by OpenSSL alone, per MB: what a C implementation could reach.
    unit_floor = 1 / (1 / gcm["gcm"] + SHA256_PASSES / gcm["sha256"])
    decrypt_floor = 1 / (1 / gcm["gcm_decrypt"] + 1 / gcm["sha256"])
    sha = rate["sha256sum"]
    encryption_cpu_per_mb = best["unit"] / mb - best["plain"] / mb  # s per MB, one thread

    figures = [
        Figure(
            f"RecordSealer.seal (AES-256-GCM), {len(fragments)} records of ~{typical / 1e3:.0f} kB",
            rate["seal"],
            "MB/s",
            seal_base[1],
            seal_base[0],
            note=(
                f"vs {seal_base[2]} ({rate['seal'] / enc_ctr[1]:.2f}x); AESGCM.encrypt alone "
                f"on the same records (diagnostic): {rate['aesgcm']:,.0f} MB/s"
            ),
        ),
        Figure(
            f"RecordSealer.seal, {len(small)} records of {SMALL_RECORD / 1e3:.0f} kB",
            rate["seal_small"],
            "MB/s",
            small_base[1],
            small_base[0],
            note=f"0.5 s fragments at 2 Mbit/s; vs {small_base[2]}",
        ),
        Figure(
            "unit path: seal + plaintext and ciphertext part hashers, per segment",
            rate["unit"],
            "MB/s",
            sha,
            "sha256sum",
            note=(
                f"AES-256-GCM + {SHA256_PASSES} SHA-256 passes + copies + one key wrap; "
                f"vs openssl dgst -sha256 ({dgst:,.0f} MB/s): {rate['unit'] / dgst:.2f}x; "
                f"vs the same work in OpenSSL (speed gcm + {SHA256_PASSES} x sha256, "
                f"{unit_floor:,.0f} MB/s): {rate['unit'] / unit_floor:.2f}x"
            ),
        ),
        Figure(
            "unencrypted recording path (StreamingPartHasher alone), same writes",
            rate["plain"],
            "MB/s",
            sha,
            "sha256sum",
            note=(
                f"encryption adds {encryption_cpu_per_mb * 1000:.2f} ms per MB on one core "
                f"({encryption_cpu_per_mb * 100:.3f} % of a core at 1 MB/s)"
            ),
        ),
    ]
    for kem, p in wraps.items():
        figures.append(
            Figure(
                f"segment key wrap, {kem} (RecordSealer(), p50)",
                p["p50"],
                "ms",
                note=f"p99 {p['p99']:.3f} ms, max {p['max']:.3f} ms, n={p['n']}; once per segment",
            )
        )
    figures.append(
        Figure(
            "decrypt (centre), page cache -> /dev/null",
            rate["decrypt"],
            "MB/s",
            dec_base[1],
            dec_base[0],
            note=(
                f"key unwrap + AES-256-GCM + SHA-256 of the plaintext; vs {dec_base[2]}; vs "
                f"OpenSSL speed gcm decrypt + sha256 ({decrypt_floor:,.0f} MB/s): "
                f"{rate['decrypt'] / decrypt_floor:.2f}x"
            ),
        )
    )
    details: dict[str, Any] = {
        "segment": segment.name,
        "bytes": size,
        "encrypted_bytes": round(enc_mb * 1e6),
        "records": len(fragments),
        "record_bytes_median": typical,
        "small_records": len(small),
        "seconds": seconds,
        "openssl_speed_mb_s": speeds,
        "key_wrap_ms": wraps,
        "openssl_floor_mb_s": {"unit": unit_floor, "decrypt": decrypt_floor},
        "encryption_cpu_s_per_mb": encryption_cpu_per_mb,
    }
    return Result(
        id="encryption",
        title="Encryption at rest",
        what=(
            f"one 60 s segment the pipeline wrote ({mb:.0f} MB, {len(fragments)} records: "
            f"init + 0.5 s fragments of ~{typical / 1e3:.0f} kB), in memory (decrypt: page "
            f"cache -> /dev/null); best of {n} wall times, product and tools alternating; "
            f"ratio = product MB/s / baseline MB/s; key wrap: {samples} samples per KEM."
        ),
        command=f"python -m bench --only encryption{' --quick' if ctx.quick else ''}",
        figures=figures,
        details=details,
    )
