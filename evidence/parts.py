"""ISO BMFF (MP4) box structure: just enough to find fragment boundaries.

Owns: reading top-level box headers, from a file or from a stream of written bytes, and
the definition of a *fragment* used everywhere in liuhen (docs/FORMAT.md):

- the init part is every byte before the first top-level ``moof`` box (ftyp + moov);
- fragment *i* runs from the *i*-th top-level ``moof`` to the next ``moof`` or the end.

and how a part is committed to (ADR 0019). A part's digest is, under the ``prefix``
scheme every new entry uses, the SHA-256 of the file from byte 0 to the part's end: one
hash pass gives every part digest and the file's SHA-256 (the last part's digest), and a
cut file proves its prefix with ``head -c N FILE | sha256sum``. Entries written before
carry the ``part`` scheme (each part hashed on its own); both verify.

Must not: interpret media. Only the 8/16-byte box headers are parsed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


@dataclass(frozen=True, slots=True)
class Box:
    type: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def parse_header(header: bytes, offset: int, file_size: int | None = None) -> tuple[str, int, int]:
    """(type, size, header length) of a box header; size 0 means "to end of file"."""
    size, kind = struct.unpack(">I4s", header[:8])
    hlen = 8
    if size == 1:
        (size,) = struct.unpack(">Q", header[8:16])
        hlen = 16
    elif size == 0 and file_size is not None:
        size = file_size - offset
    return kind.decode("latin-1"), size, hlen


def iter_boxes(f: BinaryIO, file_size: int) -> Iterator[Box]:
    """Top-level boxes of a file, stopping at the first one that is cut short or malformed."""
    offset = 0
    while offset + 8 <= file_size:
        f.seek(offset)
        header = f.read(16)
        kind, size, hlen = parse_header(header, offset, file_size)
        if size < hlen or offset + size > file_size:
            return
        yield Box(kind, offset, size)
        offset += size


PREFIX, PER_PART = "prefix", "part"  # the two part-digest schemes (ADR 0019)


def part_scheme(segment: dict[str, Any]) -> str:
    """The scheme a segment entry's part digests follow: its signed ``part_digest``, or,
    for an entry without one, ``prefix`` exactly when the last part's digest is the
    file's SHA-256 (what prefix digests are by definition; under the ``part`` scheme it
    would take a SHA-256 collision). Either way a file that matches is the signed file."""
    declared = segment.get("part_digest")
    if declared in (PREFIX, PER_PART):
        return str(declared)
    parts = segment.get("parts") or []
    last = parts[-1] if parts and isinstance(parts[-1], list) and len(parts[-1]) == 3 else None
    return PREFIX if last is not None and last[2] == segment.get("sha256") else PER_PART


class Digests:
    """Part digests of one byte stream under either scheme; ``whole`` is the running
    SHA-256 of every byte (computed only where it is asked for or is the scheme)."""

    def __init__(self, scheme: str, whole_file: bool) -> None:
        if scheme not in (PREFIX, PER_PART):
            raise ValueError(f"unknown part digest scheme {scheme!r}")
        self.scheme = scheme
        self._whole_wanted = whole_file or scheme == PREFIX
        self.whole = hashlib.sha256()
        self._part = hashlib.sha256()

    def update(self, view: bytes | bytearray | memoryview) -> None:
        if self._whole_wanted:
            self.whole.update(view)
        if self.scheme == PER_PART:
            self._part.update(view)

    def cut(self) -> str:
        """The digest of the part that ends here; the next part starts."""
        if self.scheme == PREFIX:
            return self.whole.copy().hexdigest()
        digest, self._part = self._part.hexdigest(), hashlib.sha256()
        return digest


@dataclass(frozen=True, slots=True)
class Part:
    """The init part (index 0) or a fragment (index >= 1) as a byte range and its digest
    (under the segment's part-digest scheme)."""

    index: int
    offset: int
    length: int
    sha256: str


def whole_fragment_prefix(boxes: list[Box]) -> int:
    """Length of the longest prefix that is init + whole fragments (moof followed by mdat)."""
    end = 0
    seen_moov = False
    i = 0
    while i < len(boxes):
        box = boxes[i]
        if box.type == "moof":
            if not seen_moov or i + 1 >= len(boxes) or boxes[i + 1].type != "mdat":
                break
            end = boxes[i + 1].end
            i += 2
            continue
        if box.type == "moov":
            seen_moov = True
            end = box.end
        elif seen_moov and box.type not in ("free", "skip", "sidx", "prft", "styp", "emsg"):
            break
        i += 1
    return end if seen_moov else 0


def hash_parts(f: BinaryIO, boxes: list[Box], length: int, scheme: str = PREFIX) -> list[Part]:
    """Digest the init part and each fragment within the first ``length`` bytes, in one
    sequential read."""
    return _hash_ranges(f, boxes, length, Digests(scheme, whole_file=False))


def _hash_ranges(f: BinaryIO, boxes: list[Box], length: int, digests: Digests) -> list[Part]:
    starts = [0] + [b.offset for b in boxes if b.type == "moof" and b.offset < length]
    parts = []
    f.seek(0)
    for index, start in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else length
        remaining = stop - start
        while remaining:
            chunk = f.read(min(remaining, 1 << 20))
            if not chunk:
                raise OSError(f"file shorter than expected at offset {stop - remaining}")
            digests.update(chunk)
            remaining -= len(chunk)
        parts.append(Part(index, start, stop - start, digests.cut()))
    return parts


def fragment_digests(path: Path) -> list[str]:
    """Each fragment's own SHA-256 (every part but the init part): what a rewrite of the
    init part alone (a C2PA manifest) must leave unchanged."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        return [p.sha256 for p in hash_parts(f, list(iter_boxes(f, size)), size, PER_PART)[1:]]


@dataclass(frozen=True)
class FileHashes:
    """A segment file as the ledger commits to it: its size, SHA-256 and parts."""

    size: int
    sha256: str
    parts: list[Part]


def hash_segment_file(path: Path, length: int | None = None) -> FileHashes:
    """Hash the first ``length`` bytes (default: all) of a plain fragmented-MP4 file:
    its SHA-256 and prefix part digests, from one read."""
    size = path.stat().st_size if length is None else length
    digests = Digests(PREFIX, whole_file=True)
    with open(path, "rb") as f:
        parts = _hash_ranges(f, list(iter_boxes(f, size)), size, digests)
    return FileHashes(size, digests.whole.hexdigest(), parts)


class StreamingPartHasher:
    """Hashes bytes as they are written, split into the init part and fragments.

    Fed the exact byte stream a muxer writes (strictly sequential, never seeking back),
    it gives the same parts as ``hash_parts`` over the finished file, without reading
    the file again. Under the ``prefix`` scheme each byte is hashed once.
    """

    def __init__(self, whole_file: bool = True, scheme: str = PREFIX) -> None:
        self.parts: list[Part] = []
        self._digests = Digests(scheme, whole_file)
        self.file_sha256 = self._digests.whole  # empty unless whole_file or prefix
        self.position = 0
        self._part_start = 0
        self._box_left = 0  # bytes of the current box body still to come
        self._header = b""

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._box_left:
                n = min(self._box_left, len(view))
                self._digests.update(view[:n])
                self._box_left -= n
                self.position += n
                view = view[n:]
                continue
            need = 8 if len(self._header) < 8 else 16
            take = min(need - len(self._header), len(view))
            self._header += bytes(view[:take])
            view = view[take:]
            if len(self._header) < 8:
                continue
            if struct.unpack(">I", self._header[:4])[0] == 1 and len(self._header) < 16:
                continue
            self._begin_box()

    def _begin_box(self) -> None:
        kind, size, _ = parse_header(self._header, self.position)
        header, self._header = self._header, b""
        box_start = self.position
        if kind == "moof":
            self._close_part(box_start)
        self._digests.update(header)
        self.position += len(header)
        self._box_left = max(0, size - len(header)) if size else 1 << 62

    def _close_part(self, at: int) -> None:
        if at > self._part_start:
            self.parts.append(
                Part(
                    len(self.parts),
                    self._part_start,
                    at - self._part_start,
                    self._digests.cut(),
                )
            )
        self._part_start = at

    def finish(self) -> list[Part]:
        """Close the last part; the stream must end on a box boundary."""
        if self._box_left or self._header:
            raise ValueError("stream ended inside a box")
        self._close_part(self.position)
        return list(self.parts)


@dataclass
class WrittenSegment:
    """What a sealed file holds: its hashes, parts and media span (µs on the timeline)."""

    path: Path
    size: int
    sha256: str
    parts: list[Part]
    # None where the unit cannot know: an encrypted file recovered after a power cut
    media_start_us: int | None
    media_end_us: int | None
    video_frames: int | None
    audio_frames: int | None
    # For a file encrypted at rest: KEM, recipient, records and the plaintext's hashes
    # (``None`` in "plaintext" when a power cut left them unknown to the unit).
    encryption: dict[str, Any] | None = None
