"""Who is on duty and for which case: the context every entry carries.

Owns: the officer logged in (by card) and, in a hearing room, the case number, and how
they appear in journal entries. Must not: read cards or decide what a card means (the
roster does), or journal anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class OfficerLike(Protocol):
    id: str
    name: str
    credential: str

    def to_json(self) -> dict[str, Any]: ...


@dataclass
class Session:
    officer: OfficerLike | None = None
    case: str | None = None

    def context(self) -> dict[str, Any]:
        """Fields added to every journal entry made now."""
        out: dict[str, Any] = {}
        if self.officer is not None:
            out["officer"] = self.officer.to_json()
        if self.case is not None:
            out["case"] = self.case
        return out

    def overlay(self, device_id: str) -> str:
        """The text burnt into the video beside the time."""
        parts = [device_id]
        if self.officer is not None:
            parts.append(f"officer {self.officer.id}")
        if self.case is not None:
            parts.append(f"case {self.case}")
        return "  ".join(parts)
