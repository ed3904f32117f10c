"""A copy of every sent message in the IMAP Sent folder, as most mail programs keep one.

The exact bytes that went over SMTP are put in a spool table of the journal in the same
transaction that records the message as sent; a saver thread APPENDs them (flag \\Seen)
and removes them from the spool. So a kill at any moment neither loses a copy nor saves
one twice (a copy left in the spool by a dead run is looked up by Message-ID before it
is appended again). A copy that cannot be saved is reported and kept for the next run;
it never holds up sending. Once the server is found unreachable or broken (a reply too
slow or too large), the run tries no further copy: each would wait as long again.
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..campaign import Imap
from .journal import Journal
from .mailbox import IMAP_ERRORS, Mailbox, WireError


@dataclass
class SaveReport:
    saved: int = 0
    failed: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


class Saver:
    """The thread that empties the spool into the Sent folder."""

    def __init__(self, settings: Imap, password: str | None, journal_path: Path) -> None:
        self.settings, self.password, self.journal_path = settings, password, journal_path
        self.keys: queue.Queue[str | None] = queue.Queue()
        self.report = SaveReport()
        self._thread = threading.Thread(target=self._run, daemon=True, name="imap-saver")

    def start(self, leftovers: list[str]) -> None:
        for key in leftovers:
            self.keys.put("?" + key)  # left by an earlier run: look before appending
        self._thread.start()

    def save(self, key: str) -> None:
        self.keys.put(key)

    def finish(self) -> SaveReport:
        self.keys.put(None)
        self._thread.join()
        return self.report

    def _not_saved(self, journal: Journal, key: str, error: str) -> None:
        journal.spool_error(key, error)
        self.report.failed += 1
        self.report.last_error = error

    def _run(self) -> None:
        mailbox = Mailbox(self.settings, self.password)
        folder = self.settings.folder
        journal = Journal(self.journal_path)
        given_up = ""  # the server is unreachable or broken: each try would wait again
        try:
            while (item := self.keys.get()) is not None:
                check, key = item.startswith("?"), item.lstrip("?")
                spooled = journal.spooled(key)
                if spooled is None:
                    continue
                if given_up:
                    self._not_saved(journal, key, given_up)
                    continue
                message_id, data = spooled
                try:
                    if not (check and message_id and mailbox.has(folder, message_id)):
                        mailbox.append(folder, data)
                    journal.unspool(key)
                    self.report.saved += 1
                except IMAP_ERRORS as exc:
                    error = re.sub(r"\s+", " ", str(exc) or type(exc).__name__)[:200]
                    self._not_saved(journal, key, error)
                    mailbox.close()
                    if isinstance(exc, (WireError, OSError)):  # not a refusal of this copy
                        given_up = error
        finally:
            mailbox.close()
            journal.close()
