"""Mailboxes over IMAP and POP3: where sent mail is kept, and where reports come back.

One IMAP session serves the copy in Sent (APPEND), the lookup of uncertain recipients (a
message found by its Message-ID) and the reading of bounces and complaints. IMAP's SEARCH
HEADER matches a substring, so every hit is fetched and its Message-ID compared whole:
another message whose header merely contains ours is not taken for it. POP3 serves the
reading of reports only (:class:`Pop3Box`); both give them as a :class:`ReportBox`.

The server is not trusted. Every reply is read through a :class:`Wire`: it must arrive
whole within the section's ``timeout`` (a deadline for the reply, checked before every
read, so a server that drips a byte at a time is cut off too) and within
``MAX_REPLY_BYTES``, counted as it arrives whatever size the server announced.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Protocol

from ..campaign import Bounces, Imap

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer  # the type imaplib's stubs give send()


class WireError(Exception):
    """The server broke the rules a reply must keep: too slow or too large."""


# What a lost, refused, broken or hostile IMAP or POP3 session raises.
IMAP_ERRORS = (imaplib.IMAP4.error, poplib.error_proto, OSError, ssl.SSLError, WireError)
MAX_REPORT_BYTES = 1024 * 1024  # read of each report: its fields come first, not its copy
MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # a report announced larger is left unread
MAX_REPLY_BYTES = 16 * 1024 * 1024  # what one reply of a server may bring, in all
MAX_LINE_BYTES = 1024 * 1024


class Wire:
    """A socket's replies, read under a deadline and a byte budget that :meth:`start`
    renews for each exchange (a command and its reply). Raises WireError when the server
    drips past the deadline or sends more than the budget, OSError when it fails."""

    def __init__(self, sock: socket.socket, timeout: float, budget: int = MAX_REPLY_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sock, self.timeout, self.budget, self.clock = sock, timeout, budget, clock
        self.buffer = bytearray()
        self.start()

    def start(self) -> None:
        """A new exchange: the whole of its reply is due within ``timeout`` seconds."""
        self.deadline = self.clock() + self.timeout
        self.left = self.budget
        self.sock.settimeout(self.timeout)

    def readline(self, limit: int = MAX_LINE_BYTES) -> bytes:
        """One line with its end, or what came before the server closed the connection."""
        scanned = 0
        while (end := self.buffer.find(b"\n", scanned)) < 0:
            if len(self.buffer) > limit:
                raise WireError(f"the server sent a line longer than {limit} bytes")
            scanned = len(self.buffer)
            if not self._fill():
                return self._take(len(self.buffer))
        if end >= limit:
            raise WireError(f"the server sent a line longer than {limit} bytes")
        return self._take(end + 1)

    def read(self, size: int) -> bytes:
        """``size`` bytes (fewer if the server closed the connection); a size beyond the
        budget is refused before anything is read."""
        if size > self.left + len(self.buffer):
            raise WireError(f"the server announced {size} bytes, more than the "
                            f"{self.budget} a reply may have")
        while len(self.buffer) < size and self._fill():
            pass
        return self._take(min(size, len(self.buffer)))

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _fill(self) -> bool:
        """Read what the server sent; False when it closed the connection."""
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise WireError(f"the server sent no whole reply within {self.timeout:g} s")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(min(65536, max(self.left, 1)))
        except TimeoutError:
            raise WireError(f"the server sent no whole reply within {self.timeout:g} s"
                            ) from None
        self.left -= len(chunk)
        if self.left < 0:
            raise WireError(f"the server sent more than the {self.budget} bytes a reply "
                            "may have")
        self.buffer += chunk
        return bool(chunk)


class GuardedImap(imaplib.IMAP4):
    """imaplib's client reading through a :class:`Wire`, by the hooks imaplib documents
    for overriding (``open``, ``read``, ``readline``, ``send``)."""

    wire: Wire

    def open(self, host: str = "", port: int | None = None,
             timeout: float | None = None) -> None:
        super().open(host, 143 if port is None else port, timeout)  # imaplib gives a port
        self.wire = Wire(self.sock, timeout or 30.0)

    def _current(self) -> Wire:
        if self.wire.sock is not self.sock:  # after STARTTLS: nothing sent before it is kept
            self.wire = Wire(self.sock, self.wire.timeout)
        return self.wire

    def read(self, size: int) -> bytes:
        return self._current().read(size)

    def readline(self) -> bytes:
        return self._current().readline()

    def send(self, data: ReadableBuffer) -> None:
        # What the server sends unasked (EXISTS, RECENT, ...) piles up in imaplib's dict of
        # untagged responses for the whole session, which imaplib does not document: each
        # reply is capped, the pile would not be. What a command asks for is read from it
        # before the next command is sent (tests/test_mailbox_hostile.py checks the pile).
        self.untagged_responses.clear()
        self._current().start()
        super().send(data)


class GuardedImapSsl(GuardedImap, imaplib.IMAP4_SSL):
    """:class:`GuardedImap` over TLS from the first byte."""


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
        self._capabilities: frozenset[str] | None = None

    def session(self) -> imaplib.IMAP4:
        """The IMAP session, opened and logged in on first use."""
        if self._imap is not None:
            return self._imap
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if s.security == "ssl":
            imap: imaplib.IMAP4 = GuardedImapSsl(s.host, s.effective_port,
                                                 ssl_context=context, timeout=s.timeout)
        else:
            imap = GuardedImap(s.host, s.effective_port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                imap.starttls(ssl_context=context)
            imap.login(s.username, self._password or "")
        except BaseException:
            imap.shutdown()
            raise
        self._imap = imap
        return imap

    def capable(self, name: str) -> bool:
        """Whether the server has the capability ``name`` (asked after login: the
        greeting's list may be shorter)."""
        if self._capabilities is None:
            status, data = self.session().capability()
            words = b" ".join(d for d in data if isinstance(d, bytes)) if status == "OK" else b""
            self._capabilities = frozenset(words.decode("ascii", "replace").upper().split())
        return name.upper() in self._capabilities

    def close(self) -> None:
        """Log out, or at least hang up: a failed LOGOUT leaves the socket to close."""
        imap, self._imap, self._capabilities = self._imap, None, None
        if imap is not None:
            try:
                imap.logout()
            except IMAP_ERRORS:
                try:
                    imap.shutdown()
                except OSError:
                    pass

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

    def expunge_uids(self, uids: list[bytes]) -> None:
        """Expunge exactly these messages, marked \\Deleted, with UID EXPUNGE (RFC 4315).
        The caller checks UIDPLUS first: a plain EXPUNGE would also remove every other
        message marked deleted in the folder, the user's own among them."""
        assert self.capable("UIDPLUS"), "a plain EXPUNGE would remove others' messages"
        status, reply = self.session().xatom("UID", "EXPUNGE",
                                             b",".join(uids).decode())  # uid() lacks it
        if status != "OK":
            raise imaplib.IMAP4.error(f"UID EXPUNGE refused: {_text(reply)}")


@dataclass(frozen=True)
class Item:
    """One message of a report mailbox."""

    number: str  # IMAP UID or POP3 message number: what fetch and remove take
    size: int  # as the server announced it (not trusted: reads are counted)
    mark: str = ""  # where it is, for good (UIDVALIDITY and UID, or UIDL); "" if unknown


class ReportBox(Protocol):
    """A mailbox of reports, read one message at a time."""

    def listing(self) -> list[Item]:
        """Every message, oldest first."""
        ...

    def fetch(self, item: Item) -> bytes:
        """The message, or its first MAX_REPORT_BYTES."""
        ...

    def remove(self, item: Item, move_to: str | None) -> bool:
        """Delete the message, or move it to ``move_to`` (IMAP); False when the server
        cannot do so without touching other messages (it is then left)."""
        ...

    def close(self) -> None:
        """End the session, making removals final."""
        ...


class ImapBox:
    """The reports in one IMAP folder, by UID."""

    def __init__(self, mailbox: Mailbox, folder: str) -> None:
        self.mailbox, self.folder = mailbox, folder

    def listing(self) -> list[Item]:
        imap = self.mailbox.session()
        status, reply = imap.select(folder_name(self.folder))
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot open the folder {self.folder!r}: {_text(reply)}")
        _, validity = imap.response("UIDVALIDITY")
        where = (f"imap:{self.mailbox.settings.username}@{self.mailbox.settings.host}/"
                 f"{self.folder};UIDVALIDITY={_text(validity)}" if validity and validity[0]
                 else "")
        status, data = imap.uid("FETCH", "1:*", "(RFC822.SIZE)")
        found = []
        for item in data if status == "OK" else []:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes):
                uid = re.search(rb"UID (\d+)", line)
                size = re.search(rb"RFC822\.SIZE (\d+)", line)
                if uid and size:
                    number = uid.group(1).decode()
                    found.append(Item(number, int(size.group(1)),
                                      f"{where};UID={number}" if where else ""))
        return sorted(found, key=lambda item: int(item.number))

    def fetch(self, item: Item) -> bytes:
        status, data = self.mailbox.session().uid(
            "FETCH", item.number, f"(BODY.PEEK[]<0.{MAX_REPORT_BYTES}>)")
        for part in data if status == "OK" else []:
            if isinstance(part, tuple):
                return bytes(part[1][:MAX_REPORT_BYTES])
        raise imaplib.IMAP4.error(f"cannot fetch message {item.number}: {_text(data)}")

    def remove(self, item: Item, move_to: str | None) -> bool:
        """MOVE (RFC 6851) where the server has it; else mark and UID EXPUNGE that one
        message (UIDPLUS); else nothing: a plain EXPUNGE removes what else is marked."""
        mailbox, imap = self.mailbox, self.mailbox.session()
        if move_to is not None and mailbox.capable("MOVE"):
            imap.create(folder_name(move_to))  # already there: a NO, which is fine
            status, reply = imap.uid("MOVE", item.number, folder_name(move_to))
            if status != "OK":
                raise imaplib.IMAP4.error(f"cannot move to {move_to!r}: {_text(reply)}")
            return True
        if not mailbox.capable("UIDPLUS"):
            return False
        if move_to is not None:
            imap.create(folder_name(move_to))
            status, reply = imap.uid("COPY", item.number, folder_name(move_to))
            if status != "OK":
                raise imaplib.IMAP4.error(f"cannot copy to {move_to!r}: {_text(reply)}")
        status, reply = imap.uid("STORE", item.number, "+FLAGS.SILENT", r"(\Deleted)")
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot delete message {item.number}: {_text(reply)}")
        mailbox.expunge_uids([item.number.encode()])
        return True

    def close(self) -> None:
        self.mailbox.close()


class Pop3Box:
    """The reports in a POP3 mailbox (RFC 1939), by message number; deletions are made
    final when the session ends. A small client of its own, for every reply is read
    through a :class:`Wire`. Raises IMAP_ERRORS when the session fails."""

    def __init__(self, settings: Bounces, password: str | None) -> None:
        self.settings = settings
        for what, value in (("username", settings.username), ("password", password or "")):
            if "\r" in value or "\n" in value or "\0" in value:
                raise poplib.error_proto(f"the {what} holds a line break, which POP3 cannot "
                                         "send")
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None)
        sock = socket.create_connection((settings.host, settings.effective_port),
                                        timeout=settings.timeout)
        try:
            if settings.security == "ssl":
                sock = context.wrap_socket(sock, server_hostname=settings.host)
            self.wire = Wire(sock, settings.timeout)
            self._reply()  # the greeting
            if settings.security == "starttls":
                self._command("STLS")  # what the server sent before TLS is dropped with it
                sock = context.wrap_socket(sock, server_hostname=settings.host)
                self.wire = Wire(sock, settings.timeout)
            self._command(f"USER {settings.username}")
            self._command(f"PASS {password or ''}")
        except BaseException:
            sock.close()
            raise

    def listing(self) -> list[Item]:
        self._command("LIST")
        items = []
        for line in self._lines(MAX_REPLY_BYTES):
            match = re.fullmatch(rb"(\d{1,9}) +(\d{1,15})\s*", line)
            if match is None:
                raise poplib.error_proto("the server's LIST has a line that is not a "
                                         f"message number and a size: {_text(line[:80])!r}")
            items.append(Item(match.group(1).decode(), int(match.group(2))))
        marks = self._uidls()
        return [Item(i.number, i.size, marks.get(i.number, "")) for i in items]

    def _uidls(self) -> dict[str, str]:
        """Each message's lasting id (UIDL, which RFC 1939 makes optional), as a mark."""
        try:
            self._command("UIDL")
        except poplib.error_proto:
            return {}
        where = f"pop3:{self.settings.username}@{self.settings.host}"
        found = {}
        for line in self._lines(MAX_REPLY_BYTES):
            match = re.fullmatch(rb"(\d{1,9}) +([\x21-\x7e]{1,70})\s*", line)
            if match is not None:
                found[match.group(1).decode()] = f"{where};UIDL={match.group(2).decode()}"
        return found

    def fetch(self, item: Item) -> bytes:
        if item.size > MAX_REPORT_BYTES:  # its beginning: headers and ~1 MB of lines
            self._command(f"TOP {item.number} {MAX_REPORT_BYTES // 80}")
        else:
            self._command(f"RETR {item.number}")
        return b"".join(line + b"\r\n" for line in self._lines(MAX_REPORT_BYTES))

    def remove(self, item: Item, move_to: str | None) -> bool:
        self._command(f"DELE {item.number}")
        return True

    def close(self) -> None:
        try:
            self._command("QUIT")
        except IMAP_ERRORS:
            pass
        finally:
            self.wire.sock.close()

    def _command(self, line: str) -> bytes:
        self.wire.start()
        self.wire.sock.sendall(line.encode("utf-8") + b"\r\n")
        return self._reply()

    def _reply(self) -> bytes:
        line = self.wire.readline()
        if not line.startswith(b"+OK"):
            raise poplib.error_proto(f"the server answered {_text(line) or 'nothing'!r}")
        return line

    def _lines(self, keep: int) -> list[bytes]:
        """The lines of a multi-line reply, without their ends and dot-stuffing: as many
        as fit in ``keep`` bytes; the rest is read (within the reply's budget) and dropped."""
        lines: list[bytes] = []
        kept, full = 0, False
        while True:
            line = self.wire.readline()
            if not line.endswith(b"\n"):
                raise poplib.error_proto("the server closed the connection within a reply")
            line = line.rstrip(b"\r\n")
            if line == b".":
                return lines
            line = line[1:] if line.startswith(b".") else line
            full = full or kept + len(line) + 2 > keep
            if not full:
                lines.append(line)
                kept += len(line) + 2


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
