"""The fleet as the centre sees it over MQTT, and checking every ledger entry on arrival.

Owns: the per-unit view (online/offline with bdseq, the last status, the key learned
from a birth, chain position, gaps) and the checks made on each entry as it arrives:
its signature (against a trusted device certificate, or one learned from the unit's
birth, which is flagged *untrusted* unless a trusted CA vouches for it), its body hash,
the unit it claims, sequence continuity and ``prev`` == the previous entry's hash;
gaps, duplicates and forks are named, each problem with a stable code
(``PROBLEM_CODES``) so a collector can raise an alert on it.
Must not: publish, store, or decide what a problem means (``central watch`` prints
it, ``central serve`` stores it and raises an alert).

Used by ``central/watch.py`` (console) and ``central/serve.py`` (collector): one copy of
the verification rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from central.trust import Trust
from evidence.certs import load_chain_pem
from evidence.envelope import sha256_hex
from evidence.ledger import GENESIS_PREV, Entry, key_id
from protocol.topics import DEFAULT_PREFIX, split_topic

PROBLEM_CODES = {
    "unreadable": "a message that is not what its topic carries",
    "wrong_device": "an entry published under one unit that claims another",
    "unknown_key": "an entry signed by a key nobody vouches for and no birth announced",
    "untrusted_key": "a birth announcing a key that no trusted certificate or CA vouches for",
    "bad_birth": "a birth whose certificate is unreadable or does not match its key id",
    "bad_signature": "an entry whose signature does not verify",
    "body_mismatch": "an entry whose body does not match its signed hash",
    "fork": "two different signed entries with one sequence number",
    "chain_broken": "an entry whose prev is not the hash of the entry before it",
    "chain_gap": "entries missing between two received ones",
}
RECENT = 4096  # entry hashes kept in memory per unit when a History holds the rest


class History(Protocol):
    """Entries already stored, for checks that reach further back than memory."""

    def known_entry(self, device: str, seq: int) -> tuple[str, str] | None:
        """(entry hash, prev) of ``device``'s entry ``seq``, if stored."""
        ...


@dataclass
class UnitView:
    device: str
    online: bool | None = None
    bdseq: int | None = None
    death_reason: str | None = None
    firmware: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    status_at: float | None = None
    presence_at: float | None = None
    learned_key: ec.EllipticCurvePublicKey | None = None
    learned_key_id: str | None = None
    learned_trusted: bool = False
    learned_pem: str | None = None
    entries: int = 0
    duplicates: int = 0
    verified: int = 0
    untrusted: int = 0
    last_seq: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> entry hash
    prevs: dict[int, str] = field(default_factory=dict)  # seq -> its prev
    missing: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        del self.problems[:-20]  # the last twenty are enough on a console


Verdict = Literal["new", "duplicate", "rejected"]


@dataclass(frozen=True)
class EntryOutcome:
    """What became of one ledger message: a ``new`` verified entry (``trusted`` says
    whether its key is vouched for), a ``duplicate`` of one already held, or
    ``rejected`` with a problem code and message (``entry`` is None if unreadable)."""

    verdict: Verdict
    entry: Entry | None
    trusted: bool = False
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Handled:
    """One message taken: its unit, its leaf, and for ledger messages the outcome."""

    view: UnitView
    leaf: str
    outcome: EntryOutcome | None = None
    document: dict[str, Any] | None = None


ProblemSink = Callable[[UnitView, str, str], None]


class Fleet:
    def __init__(
        self,
        trust: Trust,
        prefix: str = DEFAULT_PREFIX,
        *,
        history: History | None = None,
        on_problem: ProblemSink | None = None,
        expect_genesis: bool = False,
    ) -> None:
        """``history``: stored entries (older hashes are then dropped from memory).
        ``on_problem(view, code, text)``: called for every problem named.
        ``expect_genesis``: a unit's first entry seen after seq 0 is a gap from 0 (a
        collector needs the whole chain; a console only watches from now on)."""
        self.trust = trust
        self.prefix = prefix
        self.history = history
        self.on_problem = on_problem
        self.expect_genesis = expect_genesis
        self.units: dict[str, UnitView] = {}

    def unit(self, device: str) -> UnitView:
        return self.units.setdefault(device, UnitView(device))

    def _problem(self, view: UnitView, code: str, text: str) -> None:
        view.problem(text)
        if self.on_problem is not None:
            self.on_problem(view, code, text)

    def handle(self, topic: str, payload: bytes) -> Handled | None:
        """Take one message; None if it is not a unit topic this fleet follows."""
        where = split_topic(self.prefix, topic)
        if where is None:
            return None
        device, leaf = where
        if leaf not in ("ledger", "presence", "status"):
            return None
        view = self.unit(device)
        if leaf == "ledger":
            return Handled(view, leaf, outcome=self.take_entry(view, payload))
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            self._problem(view, "unreadable", f"{leaf}: not JSON")
            return Handled(view, leaf)
        if not isinstance(document, dict):
            self._problem(view, "unreadable", f"{leaf}: not a JSON object")
            return Handled(view, leaf)
        if leaf == "presence":
            self.take_presence(view, document)
        else:
            view.status = document
            view.status_at = time.time()
        return Handled(view, leaf, document=document)

    def take_presence(self, view: UnitView, document: dict[str, Any]) -> None:
        bdseq = document.get("bdseq")
        view.presence_at = time.time()
        if document.get("online") is False:
            # A death from an older connection (its will can arrive after the new birth)
            # does not make the unit offline: bdseq tells them apart (Sparkplug).
            if view.bdseq is not None and view.online and bdseq != view.bdseq:
                return
            view.online, view.death_reason = False, str(document.get("reason"))
            view.bdseq = bdseq if isinstance(bdseq, int) else view.bdseq
            return
        view.online, view.death_reason = True, None
        view.bdseq = bdseq if isinstance(bdseq, int) else None
        view.firmware = document.get("firmware")
        view.status = {
            **view.status,
            "state": document.get("state"),
            "officer": document.get("officer"),
        }
        pem = document.get("device_certificate")
        if isinstance(pem, str):
            self.learn(view, pem, document.get("key_id"))

    def learn(self, view: UnitView, pem: str, claimed: Any) -> bool:
        """Take the ledger key a birth announces; False (and a problem) if unusable."""
        try:
            chain = load_chain_pem(pem)
        except ValueError:
            self._problem(view, "bad_birth", "birth: device_certificate is not PEM")
            return False
        public = chain[0].public_key() if chain else None
        if not isinstance(public, ec.EllipticCurvePublicKey):
            self._problem(view, "bad_birth", "birth: device certificate is not an EC key")
            return False
        kid = key_id(public)
        if claimed != kid:
            self._problem(
                view,
                "bad_birth",
                f"birth: key_id {str(claimed)[:16]}… does not match its certificate",
            )
            return False
        trusted = self.trust.vouches_for_chain(chain)
        if not trusted and view.learned_key_id != kid:
            self._problem(
                view,
                "untrusted_key",
                f"birth: key {kid[:16]}… is not vouched for by a trusted certificate or CA",
            )
        view.learned_key, view.learned_key_id = public, kid
        view.learned_trusted, view.learned_pem = trusted, pem
        return True

    def key_for(self, view: UnitView, keyid: str) -> tuple[ec.EllipticCurvePublicKey | None, bool]:
        """(public key, trusted) for an entry's keyid."""
        if keyid in self.trust.public_keys:
            return self.trust.public_keys[keyid], True
        if keyid == view.learned_key_id:
            return view.learned_key, view.learned_trusted
        return None, False

    def _reject(self, view: UnitView, entry: Entry | None, code: str, text: str) -> EntryOutcome:
        self._problem(view, code, text)
        return EntryOutcome("rejected", entry, code=code, message=text)

    def take_entry(self, view: UnitView, line: bytes) -> EntryOutcome:
        try:
            entry = Entry.from_line(line)
        except (ValueError, KeyError) as exc:
            return self._reject(view, None, "unreadable", f"unreadable ledger entry: {exc}")
        seq = entry.seq
        if entry.header["device"] != view.device:
            return self._reject(view, entry, "wrong_device",
                                f"entry {seq} claims device {entry.header['device']!r} (published by {view.device})")  # fmt: skip
        public, trusted = self.key_for(view, entry.envelope.keyid)
        if public is None:
            return self._reject(view, entry, "unknown_key",
                                f"entry {seq}: signed by unknown key {entry.envelope.keyid[:16]}…")  # fmt: skip
        if not entry.envelope.verify(public):
            return self._reject(view, entry, "bad_signature", f"entry {seq}: BAD SIGNATURE")
        if entry.body is not None and sha256_hex(entry.body) != entry.header["body"]:
            return self._reject(view, entry, "body_mismatch",
                                f"entry {seq}: body does not match its signed hash")  # fmt: skip
        known = self._known(view, seq)
        if known is not None:
            if known[0] == entry.hash:
                view.duplicates += 1
                return EntryOutcome("duplicate", entry, trusted)
            return self._reject(view, entry, "fork",
                                f"entry {seq}: FORK (a different signed entry with this seq)")  # fmt: skip
        view.entries += 1
        view.verified += 1
        view.untrusted += 0 if trusted else 1
        self._chain(view, seq, entry.hash, entry.header["prev"])
        return EntryOutcome("new", entry, trusted)

    def _known(self, view: UnitView, seq: int) -> tuple[str, str] | None:
        if seq in view.hashes:
            return view.hashes[seq], view.prevs[seq]
        if self.history is None or seq < 0:
            return None
        return self.history.known_entry(view.device, seq)

    def _chain(self, view: UnitView, seq: int, digest: str, prev: str) -> None:
        view.hashes[seq], view.prevs[seq] = digest, prev
        before, after = self._known(view, seq - 1), self._known(view, seq + 1)
        if seq == 0 and prev != GENESIS_PREV:
            self._problem(view, "chain_broken", "entry 0: prev is not the genesis value")
        if before is not None and before[0] != prev:
            self._problem(view, "chain_broken",
                          f"entry {seq}: prev is not the hash of entry {seq - 1} (BROKEN CHAIN)")  # fmt: skip
        if after is not None and after[1] != digest:
            self._problem(view, "chain_broken",
                          f"entry {seq + 1}: prev is not the hash of entry {seq} (BROKEN CHAIN)")  # fmt: skip
        view.missing.discard(seq)
        if view.last_seq is None and (seq == 0 or not self.expect_genesis):
            view.last_seq = seq
        else:
            last = -1 if view.last_seq is None else view.last_seq
            if seq > last + 1:
                gap = range(last + 1, seq)
                view.missing.update(gap)
                self._problem(view, "chain_gap",
                              f"GAP: entries {gap.start}..{gap.stop - 1} not received (yet)")  # fmt: skip
            view.last_seq = max(last, seq)
        self._forget_old(view)

    def _forget_old(self, view: UnitView) -> None:
        """With a History, keep only the newest RECENT hashes in memory."""
        if self.history is None or len(view.hashes) <= 2 * RECENT or view.last_seq is None:
            return
        floor = view.last_seq - RECENT
        for seq in [s for s in view.hashes if s < floor]:
            del view.hashes[seq], view.prevs[seq]
