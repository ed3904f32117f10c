"""What a run tells the user without stopping it: warnings to act on, and notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NoticeKind = Literal["warning", "note"]


@dataclass(frozen=True)
class Notice:
    """One thing worth saying once per run (a campaign-wide finding, not a row's problem).

    A ``warning`` asks the user to change something; a ``note`` only explains.
    """

    kind: NoticeKind
    text: str

    @classmethod
    def warning(cls, text: str) -> Notice:
        return cls("warning", text)

    @classmethod
    def note(cls, text: str) -> Notice:
        return cls("note", text)

    def __str__(self) -> str:
        return f"{self.kind.capitalize()}: {self.text}"
