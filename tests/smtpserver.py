"""A real SMTP server for tests: aiosmtpd in-process on a free loopback port.

The handler records what it accepted and can misbehave on purpose: refuse or defer
chosen recipients, answer 421 and hang up, drop the connection mid-DATA, reply slowly.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports.

    The probes stay bound until all are chosen: one after another, the kernel may hand
    out a port just released again, and a server given the same port twice will not start.
    """
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Recorder:
    """The handler: what arrived, and the rules for misbehaving."""

    received: list[Received] = field(default_factory=list)
    rcpt_rule: Callable[[str, int], str | None] = lambda address, seen: None
    data_rule: Callable[[Envelope, int], str | None] = lambda envelope, index: None
    rcpt_delay: float = 0.0
    data_delay: float = 0.0
    rcpt_seen: Counter[str] = field(default_factory=Counter)
    data_seen: int = 0
    sessions: int = 0
    hung: list[list[str]] = field(default_factory=list)  # recipients of unanswered messages
    dropped: list[list[str]] = field(default_factory=list)  # ... of messages hung up on
    ehlo_extra: list[str] = field(default_factory=list)  # more EHLO lines, as they are
    pipelining: bool = False  # advertise PIPELINING (aiosmtpd reads commands in order anyway)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        for extension in self.ehlo_extra:
            responses.insert(len(responses) - 1, f"250-{extension}")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        with self.lock:
            self.rcpt_seen[address] += 1
            seen = self.rcpt_seen[address]
        status = self.rcpt_rule(address, seen)
        if status is not None and status.startswith("STALL "):  # reply late, then accept
            await asyncio.sleep(float(status.split()[1]))
            status = None
        if status is not None:
            return status
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            index = self.data_seen
            self.data_seen += 1
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        action = self.data_rule(envelope, index)
        if action in ("HANG", "HANG_ACCEPT"):  # take the final dot, then never reply
            if action == "HANG_ACCEPT":  # ... having accepted the message all the same
                content = envelope.original_content or envelope.content
                assert isinstance(content, bytes)
                with self.lock:
                    self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                                  content))
            with self.lock:
                self.hung.append(list(envelope.rcpt_tos))
            await asyncio.sleep(3600)
            return "451 too late"
        if action == "DROP":
            with self.lock:
                self.dropped.append(list(envelope.rcpt_tos))
            assert server.transport is not None
            server.transport.abort()
            return "250 never heard"
        if action and action.startswith("421"):
            await server.push(action)
            assert server.transport is not None
            server.transport.abort()
            return action
        if action and action != "ACCEPT_CLOSE":
            return action
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), content))
        if action == "ACCEPT_CLOSE":  # accept, then hang up as servers do with idle sessions
            await server.push("250 2.0.0 Message accepted")
            assert server.transport is not None
            server.transport.close()
        return "250 2.0.0 Message accepted"

    valid_tokens: set[str] = field(default_factory=set)
    xoauth2_users: set[str] = field(default_factory=lambda: {"news"})
    xoauth2_seen: list[str] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """XOAUTH2 as the large providers speak it: a bad token gets a 334 JSON error,
        the client answers with an empty line, then 535."""
        import base64

        raw = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        fields = dict(part.split("=", 1) for part in raw.split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ")
        self.xoauth2_seen.append(token)
        if fields.get("user") in self.xoauth2_users and token in self.valid_tokens:
            return AuthResult(success=True, handled=False)
        await server.challenge_auth('{"status":"401","schemes":"bearer"}')
        return AuthResult(success=False, handled=False)

    def by_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(r for message in self.received for r in message.rcpt_tos)


class Server:
    """A running server; ``stop()`` shuts it down."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 users: dict[str, str] | None = None, smtputf8: bool = True,
                 tokens: set[str] | None = None, pipelining: bool = False,
                 auth_exclude: list[str] | None = None) -> None:
        self.handler = Recorder(pipelining=pipelining)
        self.handler.valid_tokens = tokens or set()
        self.port = free_port()
        kwargs: dict[str, object] = {"enable_SMTPUTF8": smtputf8, "data_size_limit": 50_000_000}
        if users is not None:
            def authenticator(server: SMTP, session: Session, envelope: Envelope,
                              mechanism: str, auth_data: object) -> AuthResult:
                ok = (isinstance(auth_data, LoginPassword)
                      and users.get(auth_data.login.decode()) == auth_data.password.decode())
                return AuthResult(success=ok, handled=False)
            # implicit TLS is TLS too, but aiosmtpd only counts STARTTLS as such
            kwargs.update(authenticator=authenticator,
                          auth_require_tls=tls is not None and not implicit_tls,
                          auth_exclude_mechanism=auth_exclude or [])
        if tokens is not None:
            kwargs.update(auth_require_tls=tls is not None and not implicit_tls)
        if tls is not None and not implicit_tls:
            kwargs.update(tls_context=tls, require_starttls=True)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     ssl_context=tls if implicit_tls else None,
                                     server_hostname="mx.test", **kwargs)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class PipeServer:
    """A small SMTP server that offers PIPELINING and sees how the client uses it.

    For every message it records whether the client sent more (the next transaction's
    commands) before the reply to the message's final dot: that is what pipelining
    across messages means, whatever the timing. It waits up to ``patience`` seconds for
    such bytes before it replies. ``data_rule(index)`` may answer a message with another
    reply, or "DROP" to hang up instead (having read whatever the client sent with it);
    ``rcpt_rule(address, times_seen)`` may answer a RCPT with another reply.
    ``greeting_delay`` holds back the 220, so that a client's queue fills meanwhile.
    """

    def __init__(self, patience: float = 0.5, size: int = 0, greeting_delay: float = 0.0,
                 pipelining: bool = True) -> None:
        self.patience, self.size, self.greeting_delay = patience, size, greeting_delay
        self.pipelining = pipelining
        self.data_rule: Callable[[int], str | None] = lambda index: None
        self.rcpt_rule: Callable[[str, int], str | None] = lambda address, seen: None
        self.data_command_reply: str | None = None  # what DATA gets instead of 354
        self.mail_reply: str | None = None  # what MAIL gets instead of 250 OK
        self.mail_drip = 0.0  # answer MAIL with a 250- line this often, forever
        self.drop_in_text = 0  # hang up once this many bytes of a message's text came
        self.rcpt_seen: Counter[str] = Counter()
        self.received: list[Received] = []
        self.followed: list[bool] = []  # per message: the next commands came before its reply
        self.unfinished: list[bytes] = []  # text of messages whose session ended in DATA
        self.sessions = 0
        self.ended = threading.Semaphore(0)  # released as each session ends
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", self.port))
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            sessions = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for task in sessions:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*sessions, return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        pending = bytearray()

        async def more(timeout: float | None) -> bool:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                return False
            except ConnectionError:  # the client hung up: what it sent is still read
                chunk = b""
            pending.extend(chunk)
            return bool(chunk)

        async def line() -> bytes | None:
            while b"\n" not in pending:
                if not await more(None):
                    return None
            end = pending.index(b"\n") + 1
            text = bytes(pending[:end])
            del pending[:end]
            return text

        gone = False  # the client hung up: what it sent before is still read, not answered

        def reply(text: str) -> None:
            if not gone:
                writer.write(text.encode() + b"\r\n")

        if self.greeting_delay:
            await asyncio.sleep(self.greeting_delay)
        reply("220 pipe ESMTP")
        mail_from, rcpts, content, in_data = "", [], bytearray(), False
        try:
            while (text := await line()) is not None:
                if in_data:
                    if text != b".\r\n":
                        content += text[1:] if text.startswith(b".") else text
                        if self.drop_in_text and len(content) > self.drop_in_text:
                            break  # mid-text, before any final dot
                        continue
                    in_data = False
                    index = len(self.followed)
                    self.followed.append(bool(pending) or await more(self.patience))
                    rule = self.data_rule(index)
                    if rule == "DROP":
                        break
                    if rule is None:
                        self.received.append(Received(mail_from, rcpts, bytes(content)))
                    reply(rule or "250 2.0.0 accepted")
                    mail_from, rcpts, content = "", [], bytearray()
                    continue
                command = text[:4].upper()
                if command == b"EHLO":
                    size = f"250 SIZE {self.size}" if self.size else "250 8BITMIME"
                    offer = "250-PIPELINING\r\n" if self.pipelining else ""
                    reply(f"250-pipe\r\n{offer}{size}")
                elif command == b"MAIL":
                    mail_from = text.split(b":", 1)[1].split()[0].decode().strip("<>")
                    rcpts = []
                    if self.mail_drip:
                        while not gone:
                            reply("250-still thinking")
                            try:
                                await writer.drain()
                            except ConnectionError:
                                gone = True
                            await asyncio.sleep(self.mail_drip)
                    reply(self.mail_reply or "250 OK")
                elif command == b"RCPT":
                    address = text.split(b":", 1)[1].strip().decode().strip("<>")
                    self.rcpt_seen[address] += 1
                    refusal = self.rcpt_rule(address, self.rcpt_seen[address])
                    if refusal is None:
                        rcpts.append(address)
                    reply(refusal or "250 OK")
                elif command == b"DATA":
                    if self.data_command_reply is not None:
                        reply(self.data_command_reply)  # and no text is taken
                    else:
                        in_data = bool(rcpts)
                        reply("354 go ahead" if rcpts else "554 no valid recipients")
                elif command == b"QUIT":
                    reply("221 bye")
                    break
                else:  # RSET, NOOP
                    mail_from, rcpts = "", []
                    reply("250 OK")
                try:
                    await writer.drain()
                except ConnectionError:
                    gone = True
            if in_data:
                self.unfinished.append(bytes(content))
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            self.ended.release()

    def wait_ended(self, sessions: int) -> None:
        """Wait until that many sessions have ended (the client hung up)."""
        for _ in range(sessions):
            assert self.ended.acquire(timeout=5), "a session is still open"

    def stop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
