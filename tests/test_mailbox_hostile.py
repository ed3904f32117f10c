"""Mailbox servers that misbehave: each is a real TCP server on loopback, speaking just
enough IMAP or POP3 to drip, lie about a size, or send garbage. Well-behaved servers are
a real Dovecot (tests/test_bounces.py, test_drafts.py, test_settle.py)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sqlite3
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
import trustme
from click.testing import CliRunner, Result

from mailmerge.cli import cli

from .conftest import SMTP_BLOCK, CampaignDir
from .smtpserver import Server

PEOPLE = [["email", "name"], ["p0@example.org", "P0"], ["p1@example.org", "P1"]]
DEADLINE = 0.5  # the `timeout:` of a mailbox that drips: each reply must be whole within it
DRIP_PAUSE = 0.02  # a dripping server's pause between two bytes: far below the timeout
DRIPS = 200  # bytes it drips before ending its line: 4 s, far beyond the deadline
TIMEOUT = 30.0  # the `timeout:` where the deadline is not what the test is about
UNASKED = 1000  # untagged responses a server sends with each reply to NOOP
STREAM_END = 40 * 1024 * 1024  # a server that streams stops after this much


class Peer:
    """The server's end of one connection, which STARTTLS may wrap."""

    def __init__(self, sock: socket.socket, fake: Fake) -> None:
        self.sock, self.fake = sock, fake
        self.reader = sock.makefile("rb")

    def lines(self) -> Iterator[bytes]:
        while line := self.reader.readline():
            self.fake.heard.append(line.decode("utf-8", "replace").strip())
            yield line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def starttls(self) -> None:
        assert self.fake.tls is not None
        self.reader.close()
        self.sock = self.fake.tls.wrap_socket(self.sock, server_side=True)
        self.reader = self.sock.makefile("rb")


class Fake:
    """A TCP server on a loopback port; ``serve(lines, send, fake)`` speaks for it on each
    connection, reading lines from the client and sending bytes to it. With ``tls`` it
    can STARTTLS (``fake.peer.starttls()``), or speak TLS from the start (``implicit``)."""

    def __init__(self, serve: Callable[[Iterator[bytes], Callable[[bytes], None], Fake], None],
                 tls: ssl.SSLContext | None = None, implicit: bool = False) -> None:
        self.stop = threading.Event()
        self.heard: list[str] = []  # every line the client sent
        self.streamed_all = False  # a streaming server sent the whole of STREAM_END
        self.tls = tls
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    sock = tls.wrap_socket(self.request, server_side=True) if implicit and \
                        tls is not None else self.request
                    fake.peer = Peer(sock, fake)
                    with contextlib.closing(fake.peer.reader), contextlib.closing(sock):
                        try:
                            serve(fake.peer.lines(), fake.peer.send, fake)
                        finally:  # after STARTTLS: another socket, another reader
                            fake.peer.reader.close()
                            fake.peer.sock.close()
                except OSError:  # the client hung up: what a misbehaving server meets
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def drip(self, send: Callable[[bytes], None], start: bytes, drips: int = DRIPS) -> None:
        """``start``, then a byte at a time with a pause, then the line's end: a reply
        that comes, but too slowly to be waited for."""
        send(start)
        for _ in range(drips):
            if self.stop.wait(DRIP_PAUSE):  # the pace of a slow server; ends with the test
                return
            send(b"x")
        send(b"\r\n")

    def stream(self, send: Callable[[bytes], None], chunk: bytes) -> None:
        """``chunk`` again and again, up to STREAM_END bytes or until the client hangs up."""
        sent = 0
        while sent < STREAM_END and not self.stop.is_set():
            send(chunk)
            sent += len(chunk)
        self.streamed_all = sent >= STREAM_END

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def fakes() -> Iterator[list[Fake]]:
    made: list[Fake] = []
    yield made
    for fake in made:
        fake.close()


@pytest.fixture
def smtp() -> Iterator[Server]:
    server = Server(pipelining=True)
    yield server
    server.stop()


def imap(messages: dict[int, bytes] | None = None, sizes: dict[int, int] | None = None,
         body: Callable[[Callable[[bytes], None], Fake, str, int], None] | None = None,
         greeting: Callable[[Callable[[bytes], None], Fake], None] | None = None,
         appended: Callable[[Callable[[bytes], None], Fake, str], None] | None = None):
    """An IMAP server with one folder of ``messages`` (UID: bytes), whose sizes it may
    lie about (``sizes``), whose bodies ``body`` may send instead, whose greeting
    ``greeting`` may send, and whose reply to APPEND ``appended`` may send."""
    messages = messages or {}
    sizes = {uid: len(data) for uid, data in messages.items()} | (sizes or {})

    def serve(lines: Iterator[bytes], send: Callable[[bytes], None], fake: Fake) -> None:
        if greeting is not None:
            greeting(send, fake)
        else:
            send(b"* OK fake IMAP ready\r\n")
        for line in lines:
            tag, _, rest = line.decode().strip().partition(" ")
            words = rest.upper().split()
            if words[:1] == ["CAPABILITY"]:
                send(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN STARTTLS\r\n")
            elif words[:1] == ["STARTTLS"]:
                send(f"{tag} OK begin TLS\r\n".encode())
                fake.peer.starttls()
                continue
            elif words[:1] in (["SELECT"], ["EXAMINE"]):
                send(f"* {len(messages)} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n"
                     .encode())
            elif words[:2] == ["UID", "FETCH"] and "RFC822.SIZE" in rest.upper():
                for number, uid in enumerate(sorted(sizes), 1):
                    send(f"* {number} FETCH (UID {uid} RFC822.SIZE {sizes[uid]})\r\n".encode())
            elif words[:2] == ["UID", "FETCH"]:
                uid = int(words[2])
                if body is not None:
                    body(send, fake, tag, uid)
                    continue
                data = messages[uid]
                send(f"* 1 FETCH (UID {uid} BODY[]<0> {{{len(data)}}}\r\n".encode() + data
                     + b")\r\n")
            elif words[:1] == ["APPEND"] and rest.endswith("}"):
                send(b"+ go on\r\n")
                fake.peer.reader.read(int(rest[rest.rindex("{") + 1:-1]))
                fake.peer.reader.readline()  # the end of the command
                if appended is not None:
                    appended(send, fake, tag)
                    continue
            elif words[:1] == ["NOOP"]:
                send(b"* 1 EXISTS\r\n" * UNASKED)
            elif words[:1] == ["LOGOUT"]:
                send(f"* BYE\r\n{tag} OK bye\r\n".encode())
                return
            send(f"{tag} OK done\r\n".encode())

    return serve


def pop3(listing: list[bytes], retr: Callable[[Callable[[bytes], None], Fake], None] | None = None,
         greeting: Callable[[Callable[[bytes], None], Fake], None] | None = None):
    """A POP3 server whose LIST answers ``listing`` and whose RETR ``retr`` sends."""
    def serve(lines: Iterator[bytes], send: Callable[[bytes], None], fake: Fake) -> None:
        if greeting is not None:
            greeting(send, fake)
        else:
            send(b"+OK fake POP3 ready\r\n")
        for line in lines:
            command = line.decode().strip().upper().split()
            if command[:1] == ["LIST"]:
                send(b"+OK\r\n" + b"".join(item + b"\r\n" for item in listing) + b".\r\n")
            elif command[:1] == ["STLS"]:
                send(b"+OK begin TLS\r\n")
                fake.peer.starttls()
            elif command[:1] == ["UIDL"]:
                send(b"-ERR not here\r\n")
            elif command[:1] in (["RETR"], ["TOP"]) and retr is not None:
                retr(send, fake)
            elif command[:1] == ["QUIT"]:
                send(b"+OK bye\r\n")
                return
            else:
                send(b"+OK\r\n")

    return serve


def sent(basic, smtp: Server, block: str) -> CampaignDir:
    """A campaign sent to PEOPLE, with ``block`` (its `bounces:` or `imap:`)."""
    c = basic(SMTP_BLOCK.format(port=smtp.port) + block, rows=PEOPLE)
    done = run("send", c, "--yes", "-q")
    assert done.exit_code == 0, done.output
    return c


def bounces_block(fake: Fake, protocol: str = "imap", extra: str = "",
                  timeout: float = TIMEOUT) -> str:
    return (f"bounces: {{protocol: {protocol}, host: 127.0.0.1, port: {fake.port}, "
            f"security: none, username: news, password_env: BOUNCE_PW, "
            f"timeout: {timeout}{extra}}}\n")


def run(command: str, c: CampaignDir, *args: str) -> Result:
    return CliRunner().invoke(cli, [command, str(c.folder / "campaign.yaml"), *args],
                              env={"BOUNCE_PW": "pw", "MAILMERGE_IMAP_PASSWORD": "pw"},
                              catch_exceptions=False)


def start(fakes: list[Fake], serve, tls: ssl.SSLContext | None = None,
          implicit: bool = False) -> Fake:
    fake = Fake(serve, tls, implicit)
    fakes.append(fake)
    return fake


# --- a reply that drips ---------------------------------------------------------------------

@pytest.mark.parametrize("protocol, first", [("imap", b"* OK "), ("pop3", b"+OK ")])
def test_a_greeting_that_drips_is_cut_off_at_the_deadline(basic, smtp, fakes, protocol: str,
                                                          first: bytes) -> None:
    def greeting(send: Callable[[bytes], None], fake: Fake) -> None:
        fake.drip(send, first)

    serve = imap(greeting=greeting) if protocol == "imap" else pop3([], greeting=greeting)
    fake = start(fakes, serve)
    c = sent(basic, smtp, bounces_block(fake, protocol, timeout=DEADLINE))
    done = run("bounces", c)
    assert done.exit_code == 2, done.output
    assert done.output == (
        f"Error: cannot read the bounces mailbox at {protocol.upper()} 127.0.0.1:{fake.port}: "
        f"the server sent no whole reply within {DEADLINE:g} s; check `bounces:` and the "
        "password in $BOUNCE_PW\n")


def test_a_fetch_that_drips_is_cut_off_at_the_deadline(basic, smtp, fakes) -> None:
    def body(send: Callable[[bytes], None], fake: Fake, tag: str, uid: int) -> None:
        fake.drip(send, f"* 1 FETCH (UID {uid} BODY[]<0> NIL".encode(), drips=DRIPS * 5)

    # time enough for the replies before it, even on a busy machine; the drip lasts 20 s
    fake = start(fakes, imap(sizes={1: 100}, body=body))
    c = sent(basic, smtp, bounces_block(fake, timeout=DEADLINE * 6))
    done = run("bounces", c)
    assert done.exit_code == 2, done.output
    assert (f"reading the bounces mailbox at IMAP 127.0.0.1:{fake.port} failed: the server "
            f"sent no whole reply within {DEADLINE * 6:g} s") in done.output


def test_resolve_lookup_against_a_dripping_server_ends_with_one_error(basic, smtp,
                                                                     fakes) -> None:
    def greeting(send: Callable[[bytes], None], fake: Fake) -> None:
        fake.drip(send, b"* OK ")

    fake = start(fakes, imap(greeting=greeting))
    c = sent(basic, smtp, f"imap: {{host: 127.0.0.1, port: {fake.port}, security: none, "
                          f"username: news, copy: false, drafts: Drafts, "
                          f"timeout: {DEADLINE}}}\n")
    with sqlite3.connect(c.folder / "test.journal.sqlite") as db:  # as a killed run leaves it
        db.execute("UPDATE recipients SET state = 'sending' WHERE key = 'p0@example.org'")
    db.close()
    (c.folder / "campaign.yaml").write_text((c.folder / "campaign.yaml").read_text().replace(
        "drafts: Drafts", "lookup: INBOX"))
    done = run("resolve", c, "--lookup")
    assert done.exit_code == 2, done.output
    assert done.output.startswith(
        "Error: could not look up the uncertain recipients in the mailbox of news at "
        f"127.0.0.1:{fake.port}: the server sent no whole reply within {DEADLINE:g} s;")


# --- sizes that lie --------------------------------------------------------------------------

def test_an_imap_literal_larger_than_a_reply_may_be_is_refused_unread(basic, smtp,
                                                                      fakes) -> None:
    def body(send: Callable[[bytes], None], fake: Fake, tag: str, uid: int) -> None:
        send(f"* 1 FETCH (UID {uid} BODY[]<0> {{1700000000}}\r\n".encode())
        fake.stream(send, b"\0" * 65536)

    fake = start(fakes, imap(sizes={1: 100}, body=body))
    c = sent(basic, smtp, bounces_block(fake))
    done = run("bounces", c)
    assert done.exit_code == 2, done.output
    assert ("failed: the server announced 1700000000 bytes, more than the 16777216 a reply "
            "may have") in done.output
    assert not fake.streamed_all  # the client hung up rather than read it


def test_a_pop3_message_longer_than_its_listed_size_is_cut_off(basic, smtp, fakes) -> None:
    def retr(send: Callable[[bytes], None], fake: Fake) -> None:
        send(b"+OK 100 octets\r\n")
        fake.stream(send, b"x" * 998 + b"\r\n")  # and never the final "."

    fake = start(fakes, pop3([b"1 100"], retr=retr))
    c = sent(basic, smtp, bounces_block(fake, "pop3"))  # the size ends it, not the time
    done = run("bounces", c)
    assert done.exit_code == 2, done.output
    assert ("failed: the server sent more than the 16777216 bytes a reply may have"
            in done.output)
    assert not fake.streamed_all


@pytest.mark.parametrize("line", [b"1 abc", b"garbage", b"1", b"-1 5", b"1 5 6"])
def test_a_pop3_listing_with_garbage_is_one_error(basic, smtp, fakes, line: bytes) -> None:
    fake = start(fakes, pop3([b"1 120", line]))
    c = sent(basic, smtp, bounces_block(fake, "pop3"))
    done = run("bounces", c)
    assert done.exit_code == 2, done.output
    assert done.output == (
        f"Error: reading the bounces mailbox at POP3 127.0.0.1:{fake.port} failed: the "
        "server's LIST has a line that is not a message number and a size: "
        f"{line.decode()!r}; run `mailmerge bounces` again: what was recorded stays, and "
        "nothing is counted twice\n")


def test_a_message_announced_over_the_size_cap_is_not_fetched(basic, smtp, fakes) -> None:
    fake = start(fakes, imap({1: b"Subject: hi\r\n\r\nsmall\r\n"}, sizes={1: 20_000_000}))
    c = sent(basic, smtp, bounces_block(fake))
    done = run("bounces", c)
    assert done.exit_code == 0, done.output
    assert ("  not read: message 1 has 20000000 bytes, more than the 10 MB a report may have"
            in done.output)
    assert not [line for line in fake.heard if "BODY" in line.upper()]


def test_what_a_server_sends_unasked_does_not_pile_up_over_a_session(fakes) -> None:
    from mailmerge.campaign import Bounces
    from mailmerge.sending.mailbox import Mailbox

    fake = start(fakes, imap())
    mailbox = Mailbox(Bounces(host="127.0.0.1", username="news", port=fake.port,
                              security="none"), "pw")
    try:
        imap_session = mailbox.session()
        for _ in range(20):
            assert imap_session.noop()[0] == "OK"
        # imaplib keeps them in an attribute it does not document: the one to watch
        assert len(imap_session.untagged_responses.get("EXISTS", [])) <= UNASKED
    finally:
        mailbox.close()


# --- what is not understood is read once -----------------------------------------------------

def test_a_report_not_understood_is_not_fetched_again(basic, smtp, fakes) -> None:
    fake = start(fakes, imap({1: b"Subject: hello\r\n\r\nnot a report\r\n"}))
    c = sent(basic, smtp, bounces_block(fake, extra=", after: delete"))
    first = run("bounces", c)
    assert first.exit_code == 0, first.output
    assert "Left in the mailbox: 0 of other campaigns, 1 not understood" in first.output
    assert "  not understood: neither a delivery report" in first.output
    fetched = [line for line in fake.heard if "BODY.PEEK[]" in line.upper()]
    assert len(fetched) == 1

    again = run("bounces", c)
    assert again.exit_code == 0, again.output
    assert ("Left in the mailbox: 0 of other campaigns, 1 not understood (1 of them on an "
            "earlier reading), 0 not believed.\n") in again.output
    assert "  not understood:" not in again.output
    assert [line for line in fake.heard if "BODY.PEEK[]" in line.upper()] == fetched
    assert not [line for line in fake.heard if "STORE" in line.upper()]  # it stays there


# --- over TLS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_mailbox_over_tls_is_read_through_the_same_guard(basic, smtp, fakes, tmp_path,
                                                            protocol: str,
                                                            security: str) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    message = b"Subject: hello\r\n\r\nnot a report\r\n"
    serve = (imap({1: message}) if protocol == "imap" else
             pop3([f"1 {len(message)}".encode()],
                  retr=lambda send, fake: send(b"+OK\r\n" + message + b".\r\n")))
    fake = start(fakes, serve, context, implicit=security == "ssl")
    c = sent(basic, smtp, bounces_block(fake, protocol).replace(
        "security: none", f"security: {security}, ca_file: {tmp_path / 'ca.pem'}"))
    done = run("bounces", c)
    assert done.exit_code == 0, done.output
    assert done.output.startswith("Read 1 message: ")
    assert "1 not understood" in done.output
    asked = {line.split()[-1].upper() for line in fake.heard if line}
    assert bool(asked & {"STARTTLS", "STLS"}) == (security == "starttls")


# --- the copy in Sent -------------------------------------------------------------------------

def test_copies_stop_at_the_first_reply_too_slow_and_wait_for_the_next_run(basic, smtp,
                                                                           fakes) -> None:
    def appended(send: Callable[[bytes], None], fake: Fake, tag: str) -> None:
        fake.drip(send, f"{tag} OK ".encode(), drips=DRIPS * 5)

    fake = start(fakes, imap(appended=appended))
    c = basic(SMTP_BLOCK.format(port=smtp.port)
              + f"imap: {{host: 127.0.0.1, port: {fake.port}, security: none, username: news, "
                f"timeout: {DEADLINE * 6}}}\n", rows=PEOPLE)
    done = run("send", c, "--yes", "-q")
    assert done.exit_code == 0, done.output
    assert len(smtp.handler.received) == 2  # sending never waited for the copies
    assert (f"Copies in the Sent folder: 0 saved, 2 not saved (the server sent no whole "
            f"reply within {DEADLINE * 6:g} s); they are kept and saved on the next run"
            ) in done.output
    assert len([line for line in fake.heard if " APPEND " in line.upper()]) == 1
