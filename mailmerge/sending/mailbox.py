"""The sending account's mailbox over IMAP: where sent mail is kept and can be found.

One session serves the copy in Sent (APPEND) and the lookup of uncertain recipients
(a message found by its Message-ID). IMAP's SEARCH HEADER matches a substring, so every
hit is fetched and its Message-ID compared whole: another message whose header merely
contains ours is not taken for it.
"""

from __future__ import annotations

import imaplib
import re
import ssl
import time
from collections.abc import Iterable
from email.parser import BytesHeaderParser
from email.policy import compat32

from ..campaign import Imap

# What a lost, refused or broken IMAP session raises.
IMAP_ERRORS = (imaplib.IMAP4.error, OSError, ssl.SSLError)


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Mailbox:
    """One IMAP session, opened on first use. Raises IMAP_ERRORS when it fails."""

    def __init__(self, settings: Imap, password: str | None) -> None:
        self.settings, self._password = settings, password
        self._imap: imaplib.IMAP4 | None = None

    def _session(self) -> imaplib.IMAP4:
        if self._imap is not None:
            return self._imap
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
            except IMAP_ERRORS:
                pass
            self._imap = None

    def find(self, folder: str, message_ids: Iterable[str]) -> set[str]:
        """Which of ``message_ids`` a message in ``folder`` has (as seen now)."""
        imap = self._session()
        status, reply = imap.select(quote(folder), readonly=True)
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot open the folder {folder!r}: "
                                      f"{_text(reply)}")
        found = set()
        for message_id in message_ids:
            status, data = imap.uid("SEARCH", "HEADER", "Message-ID", quote(message_id))
            uids = data[0].split() if status == "OK" and data and data[0] else []
            if uids and "".join(message_id.split()) in self._message_ids(imap, uids):
                found.add(message_id)
        return found

    @staticmethod
    def _message_ids(imap: imaplib.IMAP4, uids: list[bytes]) -> list[str]:
        """The Message-ID fields of these messages, whole (white space of folding aside)."""
        status, data = imap.uid("FETCH", b",".join(uids).decode(),
                                "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        found = []
        for item in data if status == "OK" else []:
            if isinstance(item, tuple):
                header = BytesHeaderParser(policy=compat32).parsebytes(item[1])
                found += ["".join(str(v).split()) for v in header.get_all("Message-ID", [])]
        return found

    def has(self, folder: str, message_id: str) -> bool:
        return bool(self.find(folder, [message_id]))

    def append(self, folder: str, data: bytes) -> None:
        """Store ``data`` in ``folder``, marked as read."""
        status, reply = self._session().append(quote(folder), r"(\Seen)",
                                               imaplib.Time2Internaldate(time.time()), data)
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND refused: {_text(reply)}")


def _text(reply: object) -> str:
    """An IMAP server's reply as one short line."""
    if isinstance(reply, list):
        reply = b" ".join(r for r in reply if isinstance(r, bytes))
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return re.sub(r"\s+", " ", str(reply)).strip()[:200]
