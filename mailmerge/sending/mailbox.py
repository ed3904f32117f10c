"""Mailboxes over IMAP and POP3: where sent mail is kept, and where reports come back.

One IMAP session serves the copy in Sent (APPEND), the lookup of uncertain recipients (a
message found by its Message-ID) and the reading of bounces and complaints. IMAP's SEARCH
HEADER matches a substring, so every hit is fetched and its Message-ID compared whole:
another message whose header merely contains ours is not taken for it. POP3 serves the
reading of reports only (:class:`Pop3Box`); both give them as a :class:`ReportBox`.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import ssl
import time
from collections.abc import Iterable
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Protocol

from ..campaign import Bounces, Imap

# What a lost, refused or broken IMAP or POP3 session raises.
IMAP_ERRORS = (imaplib.IMAP4.error, poplib.error_proto, OSError, ssl.SSLError)
MAX_REPORT_BYTES = 1024 * 1024  # read of each report: its fields come first, not its copy


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def folder_name(name: str) -> str:
    """A folder name as IMAP writes it: modified UTF-7 (RFC 3501 5.1.3), quoted. "Entwürfe"
    is "Entw&APw-rfe"; an ASCII name stays as it is, "&" becoming "&-"."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=")
                       .replace("/", ",") + "-")
            run.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return quote("".join(out))


def decode_folder_name(name: str) -> str:
    """The inverse of :func:`folder_name` (without the quotes), for showing a name."""
    def decode(match: re.Match[str]) -> str:
        text = match.group(1)
        if not text:
            return "&"
        data = base64.b64decode(text.replace(",", "/") + "=" * (-len(text) % 4))
        return data.decode("utf-16-be", "replace")
    return re.sub(r"&([A-Za-z0-9+,]*)-", decode, name)


class Mailbox:
    """One IMAP session, opened on first use. Raises IMAP_ERRORS when it fails."""

    def __init__(self, settings: Imap | Bounces, password: str | None) -> None:
        self.settings, self._password = settings, password
        self._imap: imaplib.IMAP4 | None = None

    def session(self) -> imaplib.IMAP4:
        """The IMAP session, opened and logged in on first use."""
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
        imap = self.session()
        status, reply = imap.select(folder_name(folder), readonly=True)
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot open the folder {folder!r}: "
                                      f"{_text(reply)}")
        found = set()
        for message_id in message_ids:
            uids = self.search_message_id(message_id)
            whole = "".join(message_id.split())
            if uids and any(value == whole for _, value in self.message_ids(uids)):
                found.add(message_id)
        return found

    def search_message_id(self, text: str) -> list[bytes]:
        """The UIDs of the messages in the selected folder whose Message-ID field holds
        ``text`` (IMAP matches a substring: see :meth:`message_ids`)."""
        status, data = self.session().uid("SEARCH", "HEADER", "Message-ID", quote(text))
        return data[0].split() if status == "OK" and data and data[0] else []

    def message_ids(self, uids: list[bytes]) -> list[tuple[bytes, str]]:
        """(UID, Message-ID) of these messages in the selected folder, each ID whole (white
        space of folding aside), fetched 500 at a time."""
        found = []
        for start in range(0, len(uids), 500):
            status, data = self.session().uid(
                "FETCH", b",".join(uids[start:start + 500]).decode(),
                "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for item in data if status == "OK" else []:
                if not isinstance(item, tuple):
                    continue
                uid = re.search(rb"UID (\d+)", item[0])
                header = BytesHeaderParser(policy=compat32).parsebytes(item[1])
                if uid is not None:
                    found += [(uid.group(1), "".join(str(v).split()))
                              for v in header.get_all("Message-ID", [])]
        return found

    def has(self, folder: str, message_id: str) -> bool:
        return bool(self.find(folder, [message_id]))

    def append(self, folder: str, data: bytes) -> None:
        """Store ``data`` in ``folder``, marked as read."""
        status, reply = self.session().append(folder_name(folder), r"(\Seen)",
                                               imaplib.Time2Internaldate(time.time()), data)
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND refused: {_text(reply)}")


class ReportBox(Protocol):
    """A mailbox of reports, read one message at a time."""

    def listing(self) -> list[str]:
        """The id of every message, oldest first."""
        ...

    def fetch(self, item: str) -> bytes:
        """The message, or its first MAX_REPORT_BYTES."""
        ...

    def remove(self, item: str, move_to: str | None) -> None:
        """Delete the message, or move it to ``move_to`` (IMAP)."""
        ...

    def close(self) -> None:
        """End the session, making removals final."""
        ...


class ImapBox:
    """The reports in one IMAP folder, by UID."""

    def __init__(self, mailbox: Mailbox, folder: str) -> None:
        self.mailbox, self.folder = mailbox, folder
        self._removed = False

    def listing(self) -> list[str]:
        imap = self.mailbox.session()
        status, reply = imap.select(folder_name(self.folder))
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot open the folder {self.folder!r}: {_text(reply)}")
        status, data = imap.uid("FETCH", "1:*", "(RFC822.SIZE)")
        found = []
        for item in data if status == "OK" else []:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes):
                uid = re.search(rb"UID (\d+)", line)
                size = re.search(rb"RFC822\.SIZE (\d+)", line)
                if uid and size:
                    found.append((uid.group(1).decode(), int(size.group(1))))
        return [uid for uid, _ in sorted(found, key=lambda pair: int(pair[0]))]

    def fetch(self, item: str) -> bytes:
        status, data = self.mailbox.session().uid(
            "FETCH", item, f"(BODY.PEEK[]<0.{MAX_REPORT_BYTES}>)")
        for part in data if status == "OK" else []:
            if isinstance(part, tuple):
                return bytes(part[1])
        raise imaplib.IMAP4.error(f"cannot fetch message {item}: {_text(data)}")

    def remove(self, item: str, move_to: str | None) -> None:
        imap = self.mailbox.session()
        if move_to is not None:
            imap.create(folder_name(move_to))  # already there: a NO, which is fine
            status, reply = imap.uid("COPY", item, folder_name(move_to))
            if status != "OK":
                raise imaplib.IMAP4.error(f"cannot copy to {move_to!r}: {_text(reply)}")
        status, reply = imap.uid("STORE", item, "+FLAGS.SILENT", r"(\Deleted)")
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot delete message {item}: {_text(reply)}")
        self._removed = True

    def close(self) -> None:
        if self._removed and self.mailbox._imap is not None:
            self.mailbox._imap.expunge()
        self.mailbox.close()


class Pop3Box:
    """The reports in a POP3 mailbox (RFC 1939), by message number; deletions are made
    final when the session ends."""

    def __init__(self, settings: Bounces, password: str | None) -> None:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None)
        pop: poplib.POP3
        if settings.security == "ssl":
            pop = poplib.POP3_SSL(settings.host, settings.effective_port, context=context,
                                  timeout=settings.timeout)
        else:
            pop = poplib.POP3(settings.host, settings.effective_port, timeout=settings.timeout)
        try:
            if settings.security == "starttls":
                pop.stls(context=context)
            pop.user(settings.username)
            pop.pass_(password or "")
        except BaseException:
            pop.close()
            raise
        self.pop = pop
        self._sizes: dict[str, int] = {}

    def listing(self) -> list[str]:
        _, lines, _ = self.pop.list()
        for line in lines:
            number, _, size = line.decode("ascii", "replace").partition(" ")
            self._sizes[number] = int(size or 0)
        return list(self._sizes)

    def fetch(self, item: str) -> bytes:
        if self._sizes.get(item, 0) > MAX_REPORT_BYTES:  # its beginning: headers and ~1 MB of lines
            _, lines, _ = self.pop.top(int(item), MAX_REPORT_BYTES // 80)
        else:
            _, lines, _ = self.pop.retr(int(item))
        return b"\r\n".join(lines) + b"\r\n"

    def remove(self, item: str, move_to: str | None) -> None:
        self.pop.dele(int(item))

    def close(self) -> None:
        try:
            self.pop.quit()
        except IMAP_ERRORS:
            self.pop.close()


def open_reports(settings: Bounces, password: str | None) -> ReportBox:
    """The mailbox ``settings`` names, logged in. Raises IMAP_ERRORS when it cannot be."""
    if settings.protocol == "pop3":
        return Pop3Box(settings, password)
    box = ImapBox(Mailbox(settings, password), settings.folder)
    box.mailbox.session()
    return box


def _text(reply: object) -> str:
    """An IMAP server's reply as one short line."""
    if isinstance(reply, list):
        reply = b" ".join(r for r in reply if isinstance(r, bytes))
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return re.sub(r"\s+", " ", str(reply)).strip()[:200]
