"""A copy of every sent message in the IMAP Sent folder, as most mail programs keep one.

The exact bytes that went over SMTP are put in a spool table of the journal in the same
transaction that records the message as sent; a saver thread APPENDs them (flag \\Seen)
and removes them from the spool. So a kill at any moment neither loses a copy nor saves
one twice (a copy left in the spool by a dead run is looked up by Message-ID before it
is appended again). A copy that cannot be saved is reported and kept for the next run;
it never holds up sending.
"""

from __future__ import annotations

import imaplib
import queue
import re
import ssl
import threading
import time
from dataclasses import dataclass, field

from ..campaign import Imap
from .journal import Journal


@dataclass
class SaveReport:
    saved: int = 0
    failed: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SentFolder:
    """One IMAP session that appends messages to the Sent folder."""

    def __init__(self, settings: Imap, password: str | None) -> None:
        self.settings, self._password = settings, password
        self._imap: imaplib.IMAP4 | None = None

    def _open(self) -> imaplib.IMAP4:
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if s.security == "ssl":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.host, s.effective_port,
                                                   ssl_context=context, timeout=s.timeout)
        else:
            imap = imaplib.IMAP4(s.host, s.effective_port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                imap.starttls(ssl_context=context)
            imap.login(s.username, self._password or "")
        except BaseException:
            imap.shutdown()
            raise
        self._imap = imap
        return imap

    def close(self) -> None:
        if self._imap is not None:
            try:
                self._imap.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
            self._imap = None

    def has(self, message_id: str) -> bool:
        imap = self._imap or self._open()
        imap.select(_quote(self.settings.folder), readonly=True)
        status, data = imap.search(None, "HEADER", "Message-ID", _quote(message_id))
        return status == "OK" and bool(data and data[0].split())

    def append(self, data: bytes) -> None:
        imap = self._imap or self._open()
        status, reply = imap.append(_quote(self.settings.folder), r"(\Seen)",
                                    imaplib.Time2Internaldate(time.time()), data)
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND refused: {reply!r}")


class Saver:
    """The thread that empties the spool into the Sent folder."""

    def __init__(self, settings: Imap, password: str | None, journal_path: object) -> None:
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

    def _run(self) -> None:
        folder = SentFolder(self.settings, self.password)
        journal = Journal(self.journal_path)  # type: ignore[arg-type]
        try:
            while (item := self.keys.get()) is not None:
                check, key = item.startswith("?"), item.lstrip("?")
                spooled = journal.spooled(key)
                if spooled is None:
                    continue
                message_id, data = spooled
                try:
                    if not (check and message_id and folder.has(message_id)):
                        folder.append(data)
                    journal.unspool(key)
                    self.report.saved += 1
                except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
                    error = re.sub(r"\s+", " ", str(exc) or type(exc).__name__)[:200]
                    journal.spool_error(key, error)
                    self.report.failed += 1
                    self.report.last_error = error
                    folder.close()
        finally:
            folder.close()
            journal.close()
