"""The SMTP transport: one persistent connection per worker, per-recipient replies.

The transport knows nothing of campaigns or journals: it is handed an envelope and bytes
and says, for every recipient, whether the server accepted, deferred (4xx, or the
connection was lost before the final reply) or refused (5xx) it. Problems that make
going on pointless (authentication, certificates, TLS, policy refusals of the sender)
raise :class:`SendError` and stop the campaign; a session that cannot be had raises
:class:`Unreachable`, which names host and port and says what to check.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..campaign import Smtp
from ..errors import SendError
from .oauth import TokenSource, xoauth2


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        """The reply as the server gave it; code 0 (no reply: a connection lost, a
        protocol error) is no code a server gave, and is left out."""
        return f"{self.code} {self.text}".strip() if self.code else self.text

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500 or self.code == 0

    @property
    def policy(self) -> bool:
        """A 5.7.x refusal (authentication or policy) that no retry will fix."""
        return self.code >= 500 and bool(re.match(r"5\.7\.\d", self.text))


@dataclass
class Delivery:
    """What the server said about each envelope recipient of one message."""

    accepted: list[str] = field(default_factory=list)
    deferred: dict[str, Reply] = field(default_factory=dict)
    refused: dict[str, Reply] = field(default_factory=dict)
    # the text went out and no final reply came: these may or may not have the message
    unknown: dict[str, Reply] = field(default_factory=dict)
    reconnect: bool = False  # the connection was lost or closed by the server (421)
    unreachable: bool = False  # no session could be had: nothing of it was sent
    # the server's reply to the message's final dot when it accepted it: its queue ID is
    # what the server's operator asks for
    reply: Reply | None = None

    def summary(self) -> str:
        if self.unreachable and self.deferred:  # one reason for all: said once
            return str(next(iter(self.deferred.values())))
        parts = []
        if self.accepted:
            parts.append(str(self.reply or Reply(250, "accepted")))
        parts += [f"{addr}: {reply}" for addr, reply in
                  {**self.deferred, **self.refused, **self.unknown}.items()]
        return "; ".join(parts)


def token_source(smtp: Smtp) -> TokenSource | None:
    """Where XOAUTH2 tokens come from, for a campaign that logs in with them."""
    return TokenSource(smtp.token_command) if smtp.token_command else None


FINAL_REPLY_TIMEOUT = 600.0  # seconds (RFC 5321 4.5.3.2.6)
OPEN_DEADLINE_FACTOR = 4  # greeting, EHLO, STARTTLS and AUTH together: 4 x `timeout`

# The next transaction on a connection: sender, recipients, message, SMTPUTF8 needed.
Envelope = tuple[str, list[str], bytes, bool]


class Unreachable(ConnectionError):
    """No session could be had with the server (nothing of any message was sent): the
    connection was refused, the host name is unknown, the server did not answer or
    refused the session. ``str()`` names host and port; ``hint`` says what to check."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class SmtpConnection:
    """One persistent SMTP session, opened on first use and reopened when lost.

    Where the server offers PIPELINING, :meth:`send` can write the next transaction's
    MAIL, RCPT and DATA together with this one's message (RFC 2920 lets the message
    content open a group): one round trip per message instead of two. That transaction
    is then *primed*: the next :meth:`send` of the same message reads its replies.
    """

    def __init__(self, settings: Smtp, password: str | None,
                 tokens: TokenSource | None = None) -> None:
        self.settings = settings
        self._password = password
        self._tokens = tokens
        self._smtp: smtplib.SMTP | None = None
        self._clean = False  # the last transaction ended with its final reply
        self._replied = False  # the server has answered part of this transaction
        self.text_sent = False  # the last send() began sending the message text
        self._primed: bytes | None = None  # message whose MAIL/RCPT/DATA went out already

    def _login(self, smtp: smtplib.SMTP) -> None:
        s = self.settings
        assert s.username is not None
        if s.auth == "xoauth2":
            assert self._tokens is not None
            for refresh in (False, True):  # a rejected token has most likely expired
                response = xoauth2(s.username, self._tokens.get(refresh=refresh))
                try:
                    _auth_utf8(smtp, "XOAUTH2", response)
                    return
                except smtplib.SMTPAuthenticationError:
                    if refresh:
                        raise
            return
        if self._password is None:
            raise SendError("`smtp.username` is set but no password was given",
                            hint=f"set the environment variable {s.password_env}")
        if s.username.isascii() and self._password.isascii():
            smtp.login(s.username, self._password)
        elif smtp.has_extn("auth") and "PLAIN" in smtp.esmtp_features["auth"].upper().split():
            # smtplib sends only ASCII; SASL PLAIN carries UTF-8 (RFC 4616)
            _auth_utf8(smtp, "PLAIN", f"\0{s.username}\0{self._password}")
        else:
            raise SendError("the login name or password is not ASCII, and the server does "
                            "not offer AUTH PLAIN, which could carry it",
                            hint="use an ASCII login, or a server that offers AUTH PLAIN")

    def _context(self) -> ssl.SSLContext:
        cafile = str(self.settings.ca_file) if self.settings.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    def open(self) -> smtplib.SMTP:
        """Connect, secure and log in. Raises SendError (stop) or OSError (try again)."""
        s = self.settings
        where = f"{s.host}:{s.effective_port}"
        # `timeout` bounds each read; a server that drips a line at a time (220- ...
        # forever) is bounded by this deadline on the whole opening
        deadline = OPEN_DEADLINE_FACTOR * s.timeout
        sockets: list[socket.socket] = []
        expired = threading.Event()
        watchdog = threading.Timer(deadline, _hang_up, [sockets, expired])
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                if s.security == "ssl":
                    # the watchdog bounds the opening; the replies' own deadline comes after
                    smtp: smtplib.SMTP = _watched(smtplib.SMTP_SSL, sockets.append, 2 * deadline)(
                        s.host, s.effective_port, timeout=s.timeout, context=self._context())
                else:
                    smtp = _watched(smtplib.SMTP, sockets.append, 2 * deadline)(
                        s.host, s.effective_port, timeout=s.timeout)
            except OSError as exc:
                if expired.is_set():
                    raise Unreachable(f"{where} did not finish its greeting within "
                                      f"{deadline:g} s", hint=_SILENT) from None
                if isinstance(exc.__cause__, TimeoutError):  # no greeting at all
                    raise Unreachable(f"{where} did not greet within {s.timeout:g} s",
                                      hint=_SILENT) from exc
                if isinstance(exc, ProtocolError):  # another service listens there
                    raise Unreachable(f"{where} answered, but not as a mail server does "
                                      f"({exc})", hint="check `smtp.host` and `smtp.port`: "
                                      "another service (IMAP, POP3, a web server) listens "
                                      "there") from exc
                if isinstance(exc, ssl.SSLError | smtplib.SMTPException):
                    raise  # a TLS failure, or the server's own answer: each handled below
                raise _unreachable(s.host, where, s.timeout, exc) from exc
            try:
                # Each write is a whole group of commands, or the message: no reason to let
                # Nagle's algorithm hold one back for the server's (delayed) ACK.
                assert smtp.sock is not None
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                smtp.ehlo()
                if s.security == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise SendError(f"the server at {where} does not offer STARTTLS",
                                        hint="set `smtp.security: ssl` (port 465) if it uses "
                                             "implicit TLS, or `none` only for a local relay")
                    smtp.starttls(context=self._context())
                    smtp.ehlo()
                if s.username:
                    self._login(smtp)
            except BaseException:
                smtp.close()
                if expired.is_set():
                    raise Unreachable(f"{where} did not finish opening the session (its "
                                      f"greeting, EHLO, TLS and login) within {deadline:g} s",
                                      hint=_SILENT) from None
                raise
        except ssl.SSLCertVerificationError as exc:
            raise SendError(f"the TLS certificate of {where} could not be verified "
                            f"({exc.verify_message})",
                            hint="for a private CA, set `smtp.ca_file` to its certificate") from exc
        except ssl.SSLError as exc:  # e.g. TLS spoken to a port that expects plain SMTP
            raise SendError(f"TLS with {where} failed ({exc.reason or exc})",
                            hint="`smtp.security: ssl` is implicit TLS (usually port 465), "
                                 "`starttls` begins plain and then asks for TLS (587); check "
                                 "that `smtp.security` matches `smtp.port`") from exc
        except smtplib.SMTPAuthenticationError as exc:
            reply = Reply(exc.smtp_code, _text(exc.smtp_error))
            secret = ("the token from `smtp.token_command` (fetched twice)"
                      if s.auth == "xoauth2" else f"the password in ${s.password_env}")
            raise SendError(f"the server at {where} refused the login for "
                            f"{s.username!r} ({reply})",
                            hint=f"check `smtp.username` and {secret}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise SendError(f"the server at {where} does not support AUTH: {exc}",
                            hint="remove `smtp.username`, or use STARTTLS/SSL "
                                 "(servers offer AUTH only over TLS)") from exc
        except smtplib.SMTPConnectError as exc:
            refusal = Reply(exc.smtp_code, _text(exc.smtp_error))
            if refusal.temporary:  # busy for now (421): worth another try
                raise ConnectionError(f"{where} refused the session: {refusal}") from exc
            raise Unreachable(f"{where} refused the session ({refusal})",
                              hint="the server does not take mail from here; check "
                                   "`smtp.host` and `smtp.port`") from exc
        finally:
            watchdog.cancel()
        smtp.reply_deadline = deadline  # type: ignore[attr-defined]  # a _StrictReplies
        self._smtp = smtp
        self._primed = None
        return smtp

    def connect(self) -> None:
        """Open the session now unless one is open. Raises as :meth:`open`."""
        if self._smtp is None:
            self.open()
            self._clean = True  # a new session: no transaction to reset

    def close(self) -> None:
        if self._primed is not None:  # the server waits for a message: QUIT would be one
            self.drop()
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def drop(self) -> None:
        self._primed = None  # a message never sent after its DATA is never delivered
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def send(self, sender: str, recipients: list[str], data: bytes, smtputf8: bool,
             following: Callable[[], Envelope | None] | None = None,
             before_text: Callable[[], None] | None = None) -> Delivery:
        """One transaction. Raises SendError to stop, OSError when no session can be had.

        After a transaction that ended normally the session is clean and the next one
        starts at once; only after a failed one is RSET sent first. If a reused session
        turns out to be closed (servers drop idle ones) before the server answered
        anything of this transaction, nothing was sent: it is reopened and tried again.

        ``following`` is asked, just before the message goes out, for the next
        transaction to pipeline with it; whatever it returns must be sent next, through
        this connection, with the same ``data`` object. ``before_text`` is called just
        before the message itself goes out, and not at all if the transaction ends first.
        If either raises, the session ends without the message.
        """
        if self._primed is not None and self._primed is not data:
            self.drop()  # not the message promised: that transaction ends unsent
        reused = self._smtp is not None
        primed, self._primed = reused and self._primed is data, None
        smtp = self._smtp or self.open()
        if reused and not self._clean and not primed:
            try:
                code, _ = smtp.rset()
                if code != 250:
                    raise smtplib.SMTPServerDisconnected(f"RSET: {code}")
            except (smtplib.SMTPServerDisconnected, OSError):
                self.drop()
                smtp, reused = self.open(), False
        while True:
            delivery = Delivery()
            self._replied = False
            self.text_sent = False
            try:
                self._transaction(smtp, sender, recipients, data, smtputf8, delivery, primed,
                                  following, before_text)
            # first: SMTPException derives from OSError, and a reply is no lost connection
            except smtplib.SMTPResponseException as exc:  # e.g. DATA refused before the body
                reply = Reply(*_not_354(Reply(exc.smtp_code, _text(exc.smtp_error))))
                pending = [a for a in recipients if a not in delivery.refused]
                delivery.accepted.clear()
                self._all(delivery, pending, reply)
                delivery.reconnect = True
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                if reused and not self._replied:
                    self.drop()
                    smtp, reused, primed = self.open(), False, False
                    continue
                lost = (str(exc) if isinstance(exc, ProtocolError)
                        else f"connection lost: {exc or type(exc).__name__}")
                if self.text_sent:  # after the text, silence is no refusal: it may be there
                    self._unknown(delivery, recipients, Reply(0, f"no reply to the text: {lost}"))
                else:
                    self._lost(delivery, recipients, Reply(0, lost))
            break
        self._clean = not delivery.reconnect  # every other path ended with a reply or RSET
        if delivery.reconnect:
            self.drop()
        return delivery

    @staticmethod
    def _options(smtp: smtplib.SMTP, data: bytes, smtputf8: bool) -> list[str] | Reply:
        """MAIL's parameters, or the reply that refuses the message before anything is sent."""
        options = []
        if smtputf8:
            if not smtp.has_extn("smtputf8"):
                return Reply(555, "the server does not support SMTPUTF8, needed for a "
                                  "non-ASCII address")
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        if smtp.has_extn("size"):
            limit = int(smtp.esmtp_features.get("size") or 0)
            if limit and len(data) > limit:
                return Reply(552, f"message of {len(data)} bytes exceeds the server's limit "
                                  f"of {limit} bytes")
            options.append(f"SIZE={len(data)}")
        return options

    @staticmethod
    def _group(sender: str, recipients: list[str], options: list[str]) -> bytes:
        """MAIL, every RCPT and DATA, as one write (RFC 2920)."""
        group = [f"mail FROM:{smtplib.quoteaddr(sender)} {' '.join(options)}".rstrip()]
        group += [f"rcpt TO:{smtplib.quoteaddr(address)}" for address in recipients]
        text = "".join(f"{line}\r\n" for line in [*group, "data"])
        return text.encode("utf-8" if "SMTPUTF8" in options else "ascii")

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipients: list[str], data: bytes,
                     smtputf8: bool, delivery: Delivery, primed: bool = False,
                     following: Callable[[], Envelope | None] | None = None,
                     before_text: Callable[[], None] | None = None) -> None:
        options = self._options(smtp, data, smtputf8)
        if isinstance(options, Reply):
            for address in recipients:
                delivery.refused[address] = options
            return
        pipelined = smtp.has_extn("pipelining")
        data_reply: Reply | None = None
        if pipelined:  # RFC 2920: MAIL, every RCPT and DATA in one go, then the replies
            # the whole group in one write: written command by command, each small write
            # waited for the server's delayed ACK of the one before (up to 40 ms)
            if not primed:  # else it went out with the message before
                smtp.send(self._group(sender, recipients, options))
            mail_reply = Reply(*_reply(smtp.getreply()))
            self._replied = True
            rcpt_replies = [_reply(smtp.getreply()) for _ in recipients]
            data_reply = Reply(*_reply(smtp.getreply()))
        else:
            mail_reply = Reply(*_reply(smtp.mail(sender, options)))
            self._replied = True
        if mail_reply.code != 250:
            self._end_empty_data(smtp, data_reply)
            if mail_reply.policy:
                raise SendError(f"the server refused the sender {sender} ({mail_reply})",
                                hint="check `from`/`sender` and that the account may send "
                                     "as that address")
            self._all(delivery, recipients, mail_reply)
            smtp.rset()
            return
        replies = iter(rcpt_replies) if pipelined else (_reply(smtp.rcpt(a)) for a in recipients)
        for address, (code, text) in zip(recipients, replies, strict=True):
            reply = Reply(code, text)
            if code in (250, 251):
                delivery.accepted.append(address)
            elif code == 421:
                self._all(delivery, [a for a in recipients if a not in delivery.refused], reply)
                delivery.accepted.clear()
                delivery.reconnect = True
                return
            elif reply.temporary:
                delivery.deferred[address] = reply
            else:
                delivery.refused[address] = reply
        if not delivery.accepted:
            self._end_empty_data(smtp, data_reply)
            smtp.rset()
            return
        if data_reply is None:
            if before_text is not None:
                before_text()
            code, text = _reply(smtp.docmd("DATA"))
            if code != 354:
                raise smtplib.SMTPDataError(code, text)
            self._send_text(smtp, _with_final_dot(data))
            code, text = self._final_reply(smtp)
        elif data_reply.code != 354:  # the text does not go: nothing can be delivered
            code, text = _not_354(data_reply)
        else:
            body = _with_final_dot(data)
            try:
                if before_text is not None:
                    before_text()
                following_envelope = following() if following is not None else None
            except BaseException:
                self.drop()  # the server waits for this message: end the session unsent
                raise
            if following_envelope is not None:
                next_sender, next_recipients, next_data, next_utf8 = following_envelope
                next_options = self._options(smtp, next_data, next_utf8)
                if not isinstance(next_options, Reply):  # else refused without a word
                    body.append(self._group(next_sender, next_recipients, next_options))
                    self._primed = next_data
            self._send_text(smtp, body)
            code, text = self._final_reply(smtp)
        reply = Reply(code, text)
        if code == 250:
            delivery.reply = reply
        else:
            accepted, delivery.accepted = delivery.accepted, []
            self._all(delivery, accepted, reply)
            if code == 421:
                delivery.reconnect = True

    @staticmethod
    def _end_empty_data(smtp: smtplib.SMTP, data_reply: Reply | None) -> None:
        """A pipelined DATA the server accepted although nothing can be sent: end it empty."""
        if data_reply is not None and data_reply.code == 354:
            smtp.send(b".\r\n")
            smtp.getreply()

    def _send_text(self, smtp: smtplib.SMTP, pieces: list[bytes]) -> None:
        """Write the message text, its final dot and anything after (``pieces``).

        Small texts are joined into one write, so that the final dot (and the next
        transaction's commands) leave with the message. A large text is written piece by
        piece, not copied once more to add five bytes; and until its final dot is written
        a lost connection means certainly not delivered (a server keeps no message without
        its dot), so ``text_sent`` (uncertain if lost) is set only then. Each write may
        take ``timeout`` plus the time the text needs at SLOWEST_UPLOAD.
        """
        total = sum(len(piece) for piece in pieces)
        writes = [b"".join(pieces)] if total < JOIN_BELOW else pieces
        assert smtp.sock is not None
        try:
            for index, write in enumerate(writes):
                if index > 0 or len(writes) == 1:
                    self.text_sent = True  # this write holds the final dot (or follows it)
                smtp.sock.settimeout(self.settings.timeout + len(write) / SLOWEST_UPLOAD)
                smtp.send(write)
        finally:
            if smtp.sock is not None:
                smtp.sock.settimeout(self.settings.timeout)

    def _final_reply(self, smtp: smtplib.SMTP) -> tuple[int, str]:
        """The reply to the final dot, waited for as RFC 5321 4.5.3.2.6 says (10 minutes,
        or ``timeout`` if longer): content filters take their time, and a reply given up
        on leaves the message uncertain."""
        assert smtp.sock is not None
        wait = max(self.settings.timeout, FINAL_REPLY_TIMEOUT)
        smtp.sock.settimeout(wait)
        usual = smtp.reply_deadline  # type: ignore[attr-defined]  # a _StrictReplies
        smtp.reply_deadline = wait  # type: ignore[attr-defined]
        try:
            return _reply(smtp.getreply())
        finally:
            smtp.reply_deadline = usual  # type: ignore[attr-defined]
            if smtp.sock is not None:
                smtp.sock.settimeout(self.settings.timeout)

    @staticmethod
    def _unknown(delivery: Delivery, recipients: list[str], reply: Reply) -> None:
        """The session died after the text went out: whoever was not refused may have it."""
        delivery.accepted.clear()
        for address in recipients:
            if address not in delivery.refused and address not in delivery.deferred:
                delivery.unknown[address] = reply
        delivery.reconnect = True

    @staticmethod
    def _lost(delivery: Delivery, recipients: list[str], reply: Reply) -> None:
        """The session died mid-transaction: nothing was accepted, all not refused may retry."""
        delivery.accepted.clear()
        for address in recipients:
            if address not in delivery.refused:
                delivery.deferred[address] = reply
        delivery.reconnect = True

    @staticmethod
    def _all(delivery: Delivery, recipients: list[str], reply: Reply) -> None:
        for address in recipients:
            if reply.temporary:
                delivery.deferred[address] = reply
            else:
                delivery.refused[address] = reply
        if reply.code == 421:
            delivery.reconnect = True


S = TypeVar("S", bound=smtplib.SMTP)

# RFC 5321 4.2: three digits (2-5, then 0-5, then any), then a space, a hyphen (more lines
# follow) or the end of the line
_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])|\r?\n?$)")
MAX_REPLY_LINES = 1000  # no EHLO lists more; a server that goes on is not answering


class ProtocolError(smtplib.SMTPServerDisconnected):
    """The server broke the protocol (a reply that is not one), so the session is ended:
    whatever it meant cannot be known. Like a lost connection, it never means delivered."""


class _StrictReplies(smtplib.SMTP):
    """smtplib's reply reader, made strict and bounded.

    smtplib reads "2500 ok" as 250, "abc" as -1 and a line over 8 KB as a 500 refusal,
    and reads continuation lines as long as they come, each within the socket timeout.
    Here a line that does not start with a valid code, a code that changes within one
    reply, an overlong line, more than MAX_REPLY_LINES lines or a reply still going after
    ``reply_deadline`` seconds ends the session with :class:`ProtocolError`.
    """

    reply_deadline = 60.0

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None:
            assert self.sock is not None
            self.file = self.sock.makefile("rb")
        deadline = time.monotonic() + self.reply_deadline
        code: bytes | None = None
        lines: list[bytes] = []
        while True:
            try:
                line = self.file.readline(smtplib._MAXLINE + 1)  # type: ignore[attr-defined]
            except OSError as exc:
                self.close()
                raise smtplib.SMTPServerDisconnected(
                    f"Connection unexpectedly closed: {exc}") from exc
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            problem = None
            match = _REPLY_LINE.match(line)
            if len(line) > smtplib._MAXLINE:  # type: ignore[attr-defined]
                problem = f"a reply line longer than {smtplib._MAXLINE} bytes"  # type: ignore[attr-defined]
            elif match is None:
                problem = (f"the reply {line[:40].decode('ascii', 'replace').strip()!r} does "
                           "not start with a three-digit code")
            elif code is not None and match[1] != code:
                problem = (f"a reply whose lines have different codes ({code.decode()} and "
                           f"{match[1].decode()})")
            elif match[2] == b"-" and (len(lines) >= MAX_REPLY_LINES
                                       or time.monotonic() > deadline):
                problem = (f"a reply still going on after {len(lines) + 1} lines and "
                           f"{self.reply_deadline:g} s")
            if problem is not None:
                self.close()
                raise ProtocolError(f"protocol error: {problem}")
            assert match is not None
            code = match[1]
            lines.append(line[4:].strip(b" \t\r\n"))
            if match[2] != b"-":
                return int(code), b"\n".join(lines)


def _watched(base: type[S], watch: Callable[[socket.socket], None],
             reply_deadline: float) -> type[S]:
    """``base`` with strict replies, that hands its socket to ``watch`` as soon as it
    exists, before the greeting is read (smtplib's SMTP_SSL overrides _get_socket for its
    TLS the same way)."""

    class Watched(_StrictReplies, base):  # type: ignore[valid-type,misc]
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            sock: socket.socket = super()._get_socket(host, port, timeout)
            watch(sock)
            return sock

    Watched.reply_deadline = reply_deadline
    return Watched


_SILENT = ("check `smtp.port` and `smtp.security`: a port of implicit TLS (465) says "
           "nothing until TLS begins, so it needs `security: ssl`")


def _unreachable(host: str, where: str, timeout: float, exc: OSError) -> Unreachable:
    """What a failed connection to ``where`` means, in words, and what to check."""
    check = "check `smtp.host` and `smtp.port`"
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"the server name {host!r} of {where} cannot be found "
                           f"({exc.strerror})",
                           hint=f"{check}, and the network or DNS of this machine")
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(f"{where} refused the connection: no mail server listens there",
                           hint=f"{check} (587 for `starttls`, 465 for `ssl`, 25 for a "
                                "relay)")
    if isinstance(exc, TimeoutError):
        return Unreachable(f"{where} did not answer within {timeout:g} s",
                           hint=f"{check}; a firewall may drop the connection (many networks "
                                "block port 25)")
    return Unreachable(f"cannot connect to {where}: {exc.strerror or exc}",
                       hint=f"{check}, and the network of this machine")


def _hang_up(sockets: list[socket.socket], expired: threading.Event) -> None:
    """The opening took too long: end the session, which ends the read waiting in it."""
    expired.set()
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _not_354(reply: Reply) -> tuple[int, str]:
    """A reply to DATA other than 354: the transaction ends without its text. A refusal
    stays what it is; anything else (a 250, say) is a protocol error, retried later."""
    if reply.code >= 400:
        return reply.code, reply.text
    return 0, (f"protocol error: the server answered DATA with {reply}, not 354; the text "
               "was not sent")


def _auth_utf8(smtp: smtplib.SMTP, mechanism: str, initial: str) -> None:
    """AUTH with an initial response in UTF-8 (RFC 4954). A 334 challenge (XOAUTH2's error
    details) is answered with an empty line, after which the server gives its verdict.
    Raises smtplib.SMTPAuthenticationError when refused."""
    response = base64.b64encode(initial.encode("utf-8")).decode("ascii")
    code, reply = smtp.docmd("AUTH", f"{mechanism} {response}")
    if code == 334:
        code, reply = smtp.docmd("")
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, reply)


def _with_final_dot(data: bytes) -> list[bytes]:
    """The message text as it goes after DATA, in pieces: dot-stuffed, ended by CRLF . CRLF."""
    body = dot_stuff(data)
    return [body, b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"]


JOIN_BELOW = 256 * 1024  # smaller messages go out in one write: one segment, not two
SLOWEST_UPLOAD = 16 * 1024  # bytes/s (128 kbit/s) a message's text is given time for


def dot_stuff(data: bytes) -> bytes:
    """Double every dot that starts a line (RFC 5321 4.5.2), in C: a regular expression
    over every message cost the sending threads more time than the rest of SMTP."""
    return (b"." if data.startswith(b".") else b"") + data.replace(b"\n.", b"\n..")


def _reply(reply: tuple[int, bytes | str]) -> tuple[int, str]:
    return reply[0], _text(reply[1])


MAX_REPLY_TEXT = 300  # characters of a server's reply kept (journal, status, messages)


def _text(value: bytes | str) -> str:
    """A server's reply text as it may be kept and shown: the server is not ours to trust,
    so one line, no control characters (a terminal would obey them), bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return text if len(text) <= MAX_REPLY_TEXT else text[:MAX_REPLY_TEXT - 1] + "…"

