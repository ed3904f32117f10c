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
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session, SMTP


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    pipelining: bool = False  # advertise PIPELINING (aiosmtpd reads commands in order anyway)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
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
        if action == "DROP":
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
    xoauth2_seen: list[str] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """XOAUTH2 as the large providers speak it: a bad token gets a 334 JSON error,
        the client answers with an empty line, then 535."""
        import base64

        raw = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        fields = dict(part.split("=", 1) for part in raw.split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ")
        self.xoauth2_seen.append(token)
        if fields.get("user") == "news" and token in self.valid_tokens:
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
                 tokens: set[str] | None = None, pipelining: bool = False) -> None:
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
                          auth_require_tls=tls is not None and not implicit_tls)
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
