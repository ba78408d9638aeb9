"""Part digests (ADR 0019): new entries commit to each part by the SHA-256 of the file up
to the part's end (one hash pass while recording); entries written before, with each
part hashed on its own, still verify. The files are real box streams (moov/moof/mdat)
and real LIUHENC1 encrypted files; tampering flips real bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from centralfixtures import box_file, encrypted_file, segment_body

from central.collector import judge
from evidence.parts import PER_PART, PREFIX, part_scheme
from evidence.verify import Report, compare_file, hash_file


def _check(path: Path, seg: dict[str, Any]) -> tuple[bool, Report]:
    report = Report(str(path))
    encrypted = isinstance(seg.get("encryption"), dict)
    hasher = hash_file(path, lambda n: None, encrypted, part_scheme(seg))
    return compare_file(path, seg, hasher, report, "entry 1"), report


@pytest.mark.parametrize("encrypted", [False, True], ids=["mp4", "encrypted"])
def test_prefix_digests_are_the_sha256_of_each_prefix(encrypted: bool) -> None:
    data = box_file(fragments=5)
    if encrypted:
        data = encrypted_file(data, "seg.mp4.enc", records=5)
    seg = segment_body("seg.mp4", data)["segment"]
    assert seg["part_digest"] == PREFIX and part_scheme(seg) == PREFIX
    for offset, length, digest in seg["parts"]:
        assert digest == hashlib.sha256(data[: offset + length]).hexdigest()
    assert seg["parts"][-1][2] == seg["sha256"] == hashlib.sha256(data).hexdigest()
    assert sum(p[1] for p in seg["parts"]) == len(data)


def test_the_scheme_of_an_entry_without_a_declaration_is_read_from_its_digests() -> None:
    data = box_file(fragments=3)
    old = segment_body("seg.mp4", data, scheme=PER_PART)["segment"]
    new = segment_body("seg.mp4", data)["segment"]
    assert "part_digest" not in old and part_scheme(old) == PER_PART
    assert part_scheme({k: v for k, v in new.items() if k != "part_digest"}) == PREFIX
    assert old["sha256"] == new["sha256"]  # the file's SHA-256 means the same in both
    assert part_scheme({**old, "part_digest": PREFIX}) == PREFIX  # the signed word wins


@pytest.mark.parametrize("scheme", [PREFIX, PER_PART])
@pytest.mark.parametrize("encrypted", [False, True], ids=["mp4", "encrypted"])
def test_both_schemes_verify_and_name_the_first_altered_part(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    data = box_file(fragments=4)
    if encrypted:
        data = encrypted_file(data, "seg.mp4.enc", records=4)
    seg = segment_body("seg.mp4", data, scheme=scheme)["segment"]
    path = tmp_path / "seg.mp4"
    path.write_bytes(data)
    assert _check(path, seg)[0]

    third = seg["parts"][3]
    altered = bytearray(data)
    altered[third[0] + third[1] // 2] ^= 0x01
    path.write_bytes(bytes(altered))
    ok, report = _check(path, seg)
    assert not ok
    finding = report.findings[-1]
    assert finding.code == "altered" and "part 3 " in finding.message, finding

    path.write_bytes(data[: seg["parts"][2][0] + seg["parts"][2][1]])  # cut after part 2
    ok, report = _check(path, seg)
    assert not ok and report.findings[-1].code == "truncated"
    assert "parts 0..2" in report.findings[-1].message, report.findings[-1]


@pytest.mark.parametrize("scheme", [PREFIX, PER_PART])
def test_the_collector_judges_an_upload_under_the_entrys_scheme(
    tmp_path: Path, scheme: str
) -> None:
    data = box_file(fragments=3)
    seg = segment_body("seg.mp4", data, scheme=scheme)["segment"]
    row = {"bytes": seg["bytes"], "sha256": seg["sha256"], "parts": json.dumps(seg["parts"]),
           "entry_seq": 7}  # fmt: skip
    path = tmp_path / "seg.mp4"
    path.write_bytes(data)
    assert judge(path, row) is None
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    verdict = judge(path, row)
    assert verdict is not None and "part 3 " in verdict, verdict
