"""What a person can do to the unit, and how each act is recorded.

Owns: the meaning of record start/stop, mark, credential shown (出示证件), card log-in and
log-out, notes and the hearing-room case number — wherever they come from (panel
buttons, trigger inputs, the control socket, later central commands) — and the journal
entry each one leaves, with the officer, the case and the media position. Every method
runs on the daemon's main thread (the daemon queues them there) and returns a reply for
whoever asked.

Must not: touch pins or sockets, or write files other than through ``journal``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from firmware_py.session import OfficerLike, Session
from recorder.recorder import Recorder

log = logging.getLogger(__name__)

MAX_NOTE = 4000
Reply = dict[str, Any]


class RosterLike(Protocol):
    def lookup(self, card_id: str) -> OfficerLike | None: ...


class Feedback(Protocol):
    """What the officer feels and sees right away (the panel, if fitted)."""

    def buzz(self, pattern: str) -> None: ...

    def flash_error(self) -> None: ...


class NoFeedback:
    def buzz(self, pattern: str) -> None:
        pass

    def flash_error(self) -> None:
        pass


class UnitActions:
    def __init__(
        self,
        recorder: Recorder,
        session: Session,
        roster: RosterLike | None,
        journal: Callable[[str, dict[str, Any]], None],
        feedback: Feedback,
        on_session_change: Callable[[], None] = lambda: None,
        profile: str = "body",
        cannot_record: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.recorder = recorder
        self.session = session
        self.roster = roster
        self.journal = journal
        self.feedback = feedback
        self.on_session_change = on_session_change
        self.profile = profile
        self.cannot_record = cannot_record  # why a recording must not start now (full disk)
        # A recording the unit owes: started by no person (autostart, a trigger) but
        # refused for storage, or cut short by a full disk. Resumed when room returns;
        # forgotten when anyone stops or starts recording.
        self.owed: str | None = None
        self._stopped_by_person = False

    def position(self) -> dict[str, Any] | None:
        """Where in the recorded media this moment falls, if recording."""
        s = self.recorder.status()
        if s.state != "recording":
            return None
        return {"recording_id": s.recording_id, "segment": s.segment, "media_us": s.media_us}

    def record_start(self, source: str) -> Reply:
        if self.recorder.status().state == "recording":
            return {"ok": True, "note": "already recording"}
        why = self.cannot_record()
        if why is not None:
            self.journal("record_refused", {"source": source, "reason": why})
            self.feedback.flash_error()
            if source == "autostart" or source.startswith(("trigger:", "resume:")):
                self.owed = source.removeprefix("resume:")
            return {"ok": False, "error": f"recording not started: {why}"}
        self.owed = None
        self._stopped_by_person = False
        self.recorder.start(source)
        self.feedback.buzz("start")
        return {"ok": True}

    def record_stop(self, source: str) -> Reply:
        self.owed = None
        self._stopped_by_person = True  # until the next start: a storage stop owes nothing
        if self.recorder.status().state != "recording":
            return {"ok": True, "note": "not recording"}
        self.recorder.stop(source)
        self.feedback.buzz("stop")
        return {"ok": True}

    def stop_for_storage(self) -> Reply:
        """The disk is full: stop, and owe the recording until there is room again —
        unless a person asked for a stop since it started (their stop may still be on its
        way through the recorder's queue)."""
        person_stopped = self._stopped_by_person
        reply = self.record_stop("storage-full")
        self._stopped_by_person = person_stopped
        if not person_stopped:
            self.owed = "storage-full"
        return reply

    def resume_owed(self) -> Reply | None:
        """Start the owed recording (the caller has seen room come back). Nothing is
        journaled or flashed while it still cannot start: this is asked every tick."""
        if self.owed is None or self.recorder.status().state != "ready":
            return None
        if self.cannot_record() is not None:
            return None
        log.info("room on the disk again: resuming the recording stopped by %s", self.owed)
        return self.record_start(f"resume:{self.owed}")

    def record_press(self) -> Reply:
        """The record button, pressed briefly: starts; while recording it is a knock."""
        if self.recorder.status().state == "recording":
            self.journal("record_button_knock", {"position": self.position()})
            return {"ok": True, "note": "recording continues: hold the button to stop"}
        return self.record_start("button")

    def mark(self, source: str, text: str | None = None) -> Reply:
        detail: dict[str, Any] = {"source": source, "position": self.position()}
        if text:
            detail["text"] = text[:MAX_NOTE]
        self.journal("mark", detail)
        self.feedback.buzz("ack")
        return {"ok": True, "position": detail["position"]}

    def credential_shown(self, source: str) -> Reply:
        officer = self.session.officer
        detail = {"source": source, "position": self.position()}
        if officer is None:
            self.journal("credential_shown", {**detail, "error": "no officer logged in"})
            self.feedback.flash_error()
            return {
                "ok": False,
                "error": "credential shown, but no officer is logged in: present a card first",
            }
        self.journal("credential_shown", {**detail, "credential": officer.credential})
        self.feedback.buzz("ack")
        return {"ok": True, "officer": officer.id, "credential": officer.credential}

    def card(self, card_id: str, source: str) -> Reply:
        card_id = card_id.strip()
        officer = self.roster.lookup(card_id) if self.roster and card_id else None
        if officer is None:
            why = "no roster is configured" if self.roster is None else "not in the roster"
            self.journal("unknown_card", {"card": card_id[:64], "source": source, "reason": why})
            self.feedback.flash_error()
            return {"ok": False, "error": f"card {card_id[:64]!r} refused: {why}"}
        current = self.session.officer
        if current is not None and current.id == officer.id:
            self.journal("officer_logout", {"source": source, "position": self.position()})
            self.session.officer = None
            self.on_session_change()
            self.feedback.buzz("ack")
            return {"ok": True, "logged_out": officer.id}
        if current is not None:
            self.journal(
                "officer_logout",
                {"source": source, "replaced_by": officer.id, "position": self.position()},
            )
        self.session.officer = officer
        self.journal("officer_login", {"source": source, "position": self.position()})
        self.on_session_change()
        self.feedback.buzz("ack")
        return {"ok": True, "logged_in": officer.to_json()}

    def note(self, text: str, source: str) -> Reply:
        text = text.strip()
        if not text:
            return {"ok": False, "error": "a note needs text"}
        if len(text) > MAX_NOTE:
            return {
                "ok": False,
                "error": f"a note is at most {MAX_NOTE} characters (got {len(text)})",
            }
        self.journal("note", {"text": text, "source": source, "position": self.position()})
        return {"ok": True}

    def set_case(self, case: str | None, source: str) -> Reply:
        if case is not None and not (0 < len(case.strip()) <= 64):
            return {"ok": False, "error": "a case number is 1 to 64 characters"}
        previous = self.session.case
        self.session.case = case.strip() if case else None
        self.journal("case_set", {"previous": previous, "source": source})
        self.on_session_change()
        return {"ok": True, "case": self.session.case}
