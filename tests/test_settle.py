"""Uncertain recipients settled from evidence (their Message-ID in a real Dovecot) or by hand.

A run is made uncertain for real: a `mailmerge send` process is killed while the test
server holds the final dot of some messages without replying, having accepted some of
them (their archive copy then goes into the mailbox, as a relay's Bcc would put it).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from mailmerge.cli import cli

from .conftest import SMTP_BLOCK, CampaignDir, parse
from .smtpserver import Server, free_port

PEOPLE = [["email", "name"], *[[f"p{i}@example.org", f"P {i}"] for i in range(4)]]
ROW = {f"p{i}@example.org": i + 2 for i in range(4)}  # sheet rows: the header is row 1


@pytest.fixture
def server() -> Iterator[Server]:
    # without PIPELINING: a connection whose message hangs would otherwise hold the next
    # message's commands too, and which one depends on timing
    server = Server(pipelining=False)
    yield server
    server.stop()


def campaign(basic, server: Server, imap_port: int | None, *, lookup_wait: float = 1,
             concurrency: int = 2) -> CampaignDir:
    smtp = SMTP_BLOCK.format(port=server.port) + f"  concurrency: {concurrency}\n"
    imap = (f"imap: {{host: 127.0.0.1, port: {imap_port}, security: none, username: news, "
            f"copy: false, lookup: INBOX, lookup_wait: {lookup_wait}}}\n" if imap_port else "")
    return basic(smtp + imap, rows=PEOPLE)


def die_while_waiting(c: CampaignDir, server: Server, rules: dict[str, str],
                      pause: float = 0.2) -> None:
    """Send until the server holds every message of ``rules`` ("HANG_ACCEPT": accepted,
    "HANG": not) without a reply, then SIGKILL the sender. Every other message is taken."""
    server.handler.data_rule = lambda envelope, index: next(
        (rule for address, rule in rules.items() if address in envelope.rcpt_tos), None)
    process = subprocess.Popen([sys.executable, "-m", "mailmerge", "send",
                                str(c.folder / "campaign.yaml"), "--yes", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "MAILMERGE_IMAP_PASSWORD": "imap-secret"})
    deadline = time.monotonic() + 30
    while len(server.handler.hung) < len(rules) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(pause)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert sorted(map(tuple, server.handler.hung)) == sorted((a,) for a in rules)
    server.handler.data_rule = lambda envelope, index: None


def journal(c: CampaignDir) -> dict[str, tuple[str, str, str]]:
    """key -> (state, Message-ID, settled)."""
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    try:
        return {key: (state, message_id, settled) for key, state, message_id, settled in
                db.execute("SELECT key, state, message_id, settled FROM recipients")}
    finally:
        db.close()


def accepted(server: Server, address: str) -> list[bytes]:
    return [r.content for r in server.handler.received if address in r.rcpt_tos]


def run(*args: str, password: str = "imap-secret") -> Result:
    return CliRunner().invoke(cli, list(args), env={"MAILMERGE_IMAP_PASSWORD": password},
                              catch_exceptions=False)


def test_a_delivered_message_settles_as_sent_and_a_lost_one_is_resent(basic, server,
                                                                     dovecot) -> None:
    c = campaign(basic, server, dovecot.port)
    die_while_waiting(c, server, {"p1@example.org": "HANG_ACCEPT", "p2@example.org": "HANG"})
    before = journal(c)
    assert before["p1@example.org"][0] == before["p2@example.org"][0] == "sending"
    (copy,) = accepted(server, "p1@example.org")
    dovecot.append(copy)  # the archive copy of the message the server did accept

    result = run("send", str(c.folder / "campaign.yaml"), "--yes")
    assert result.exit_code == 0, result.output
    assert "they will be looked up in INBOX" in result.output
    assert ("Uncertain recipients looked up: 1 found (sent), 1 not found (to be sent again)."
            in result.output)
    counts = server.handler.by_recipient()
    assert counts == {f"p{i}@example.org": 1 for i in range(4)}  # nobody lost, nobody twice
    (resent,) = accepted(server, "p2@example.org")
    assert parse(resent)["Message-ID"] == before["p2@example.org"][1]  # the same Message-ID
    after = journal(c)
    assert after["p1@example.org"] == ("sent", before["p1@example.org"][1], "lookup")
    assert after["p2@example.org"] == ("sent", before["p2@example.org"][1], "reply")

    status = run("status", str(c.folder / "campaign.yaml"), "--csv", "-")
    assert f"{ROW['p1@example.org']},p1@example.org,sent," in status.output
    assert status.output.count(",lookup,,,0\n") == 1


def test_a_copy_that_arrives_late_is_found_within_lookup_wait(basic, server, dovecot) -> None:
    c = campaign(basic, server, dovecot.port, lookup_wait=20, concurrency=1)
    die_while_waiting(c, server, {"p1@example.org": "HANG_ACCEPT"})
    (copy,) = accepted(server, "p1@example.org")
    late = threading.Timer(2.0, dovecot.append, [copy])  # the relay delivers it 2 s later
    late.start()
    try:
        result = run("send", str(c.folder / "campaign.yaml"), "--yes")
    finally:
        late.join()
    assert result.exit_code == 0, result.output
    assert len(accepted(server, "p1@example.org")) == 1  # found, so not sent again
    assert journal(c)["p1@example.org"][0::2] == ("sent", "lookup")


def test_another_message_with_a_similar_message_id_is_not_taken_for_it(basic, server,
                                                                        dovecot) -> None:
    c = campaign(basic, server, dovecot.port, concurrency=1)
    die_while_waiting(c, server, {"p1@example.org": "HANG"})
    message_id = journal(c)["p1@example.org"][1]
    inner = message_id.strip("<>")
    for decoy in (f"<9{inner}>", f"<{inner}9>", f"<decoy@acme.example> {message_id}",
                  inner):
        dovecot.append(b"From: other@acme.example\r\nTo: p1@example.org\r\nSubject: another "
                       b"campaign\r\nMessage-ID: " + decoy.encode() + b"\r\n\r\nHello\r\n")
    result = run("send", str(c.folder / "campaign.yaml"), "--yes")
    assert result.exit_code == 0, result.output
    (resent,) = accepted(server, "p1@example.org")  # none of them is ours: sent again
    assert parse(resent)["Message-ID"] == message_id
    assert journal(c)["p1@example.org"][0::2] == ("sent", "reply")


@pytest.mark.parametrize("wrong", ["password", "server"])
def test_an_unreadable_mailbox_leaves_them_uncertain_and_sends_nothing(basic, server, dovecot,
                                                                       wrong: str) -> None:
    port = dovecot.port if wrong == "password" else free_port()  # nothing listens there
    c = campaign(basic, server, port, concurrency=1)
    die_while_waiting(c, server, {"p1@example.org": "HANG"})
    before, received = journal(c), len(server.handler.received)
    result = run("send", str(c.folder / "campaign.yaml"), "--yes",
                 password="wrong" if wrong == "password" else "imap-secret")
    assert result.exit_code == 2, result.output
    assert ("Error: could not look up the uncertain recipients in the mailbox of news at "
            "127.0.0.1:") in result.output
    assert ("; check `imap:` (its host, port and security) and its password, as the reason "
            "says; until the lookup works they stay uncertain "
            "(nothing is resent on a guess), or settle them by hand with `mailmerge "
            "resolve`") in result.output
    assert journal(c) == before and before["p1@example.org"][0] == "sending"
    assert len(server.handler.received) == received  # nobody was sent anything


def test_resolve_lookup_settles_without_sending(basic, server, dovecot) -> None:
    c = campaign(basic, server, dovecot.port, concurrency=1)
    die_while_waiting(c, server, {"p1@example.org": "HANG_ACCEPT"})
    dovecot.append(accepted(server, "p1@example.org")[0])
    received = len(server.handler.received)
    result = run("resolve", str(c.folder / "campaign.yaml"), "--lookup")
    assert result.exit_code == 0, result.output
    assert result.output == ("Looked up: 1 found (now sent), 0 not found (the next send sends "
                             "them again).\nNo recipient is uncertain.\n")
    assert journal(c)["p1@example.org"][0::2] == ("sent", "lookup")
    assert len(server.handler.received) == received


def test_resolve_by_hand(basic, server) -> None:
    c = campaign(basic, server, None)
    die_while_waiting(c, server, {"p1@example.org": "HANG_ACCEPT", "p2@example.org": "HANG"})
    config = str(c.folder / "campaign.yaml")
    before = journal(c)

    listed = run("resolve", config)
    assert listed.exit_code == 1
    assert f"  row 3 p1@example.org: Message-ID {before['p1@example.org'][1]}\n" in listed.output
    assert f"`mailmerge resolve {config} --sent 3,4`" in listed.output
    assert run("send", config, "--yes").exit_code == 1  # not sent again on a guess
    assert len(accepted(server, "p2@example.org")) == 0

    assert run("resolve", config, "--sent", "99").output == (
        f"Error: {c.folder / 'test.journal.sqlite'}: '99' is not an uncertain recipient; "
        "name uncertain recipients by sheet row or key; `mailmerge resolve` lists them\n")
    assert run("resolve", config, "--sent", "3", "--resend", "3").exit_code == 2
    assert journal(c) == {**before, **{k: v for k, v in journal(c).items()
                                       if k not in ("p1@example.org", "p2@example.org")}}

    done = run("resolve", config, "--sent", "p1@example.org", "--resend", "4")
    assert done.exit_code == 0, done.output
    assert "1 recorded as sent: row 3 p1@example.org" in done.output
    assert "1 recorded as to be sent again: row 4 p2@example.org" in done.output
    assert journal(c)["p1@example.org"][0::2] == ("sent", "hand")

    again = run("send", config, "--yes")
    assert again.exit_code == 0, again.output
    assert server.handler.by_recipient() == {f"p{i}@example.org": 1 for i in range(4)}
    (resent,) = accepted(server, "p2@example.org")
    assert parse(resent)["Message-ID"] == before["p2@example.org"][1]


def test_a_failure_in_an_earlier_run_does_not_fail_every_later_send(basic, server) -> None:
    server.handler.rcpt_rule = lambda address, seen: (
        "550 5.1.1 no such user" if address == "p1@example.org" else None)
    c = campaign(basic, server, None)
    config = str(c.folder / "campaign.yaml")
    assert run("send", config, "--yes").exit_code == 1  # this run had a failure
    again = run("send", config, "--yes")
    assert again.exit_code == 0, again.output  # every recipient is settled
    assert "Nothing to send." in again.output


def test_a_message_answered_250_is_sent_in_the_journal_before_the_next_one_goes(basic,
                                                                                server) -> None:
    c = campaign(basic, server, None, concurrency=1)
    # killed the moment the server holds p3's final dot: p0 to p2 had their 250 before it
    die_while_waiting(c, server, {"p3@example.org": "HANG"}, pause=0)
    states = {key: state for key, (state, _, _) in journal(c).items()}
    assert states == {"p0@example.org": "sent", "p1@example.org": "sent",
                      "p2@example.org": "sent", "p3@example.org": "sending"}


def test_a_message_whose_reply_is_lost_is_looked_up_in_the_same_run(basic, server,
                                                                    dovecot) -> None:
    c = campaign(basic, server, dovecot.port, concurrency=1)

    def accept_then_hang_up(envelope, index: int) -> str | None:
        if "p1@example.org" not in envelope.rcpt_tos:
            return None
        dovecot.append(envelope.original_content or envelope.content)  # the archive copy
        return "DROP"  # ... and the reply to the final dot never comes

    server.handler.data_rule = accept_then_hang_up
    result = run("send", str(c.folder / "campaign.yaml"), "--yes")
    assert result.exit_code == 0, result.output  # settled within this run
    assert "Uncertain recipients looked up: 1 found (sent), 0 not found" in result.output
    assert journal(c)["p1@example.org"][0::2] == ("sent", "lookup")
    assert len(server.handler.dropped) == 1  # sent once, never again


def test_resolve_checks_every_name_first_and_records_all_or_nothing(basic, server) -> None:
    c = campaign(basic, server, None)
    die_while_waiting(c, server, {"p1@example.org": "HANG_ACCEPT", "p2@example.org": "HANG"})
    config = str(c.folder / "campaign.yaml")
    before = journal(c)

    bad = run("resolve", config, "--sent", "3", "--resend", "99")  # one good, one bad name
    assert bad.exit_code == 2
    assert bad.output == (
        f"Error: {c.folder / 'test.journal.sqlite'}: '99' is not an uncertain recipient; "
        "name uncertain recipients by sheet row or key; `mailmerge resolve` lists them\n")
    assert journal(c) == before  # row 3 was not recorded either
    both = run("resolve", config, "--sent", "all", "--resend", "all")
    assert both.output == ("Error: `all` cannot be both --sent and --resend; give `all` to "
                           "one of them, and name the others by row\n")
    twice = run("resolve", config, "--sent", "p1@example.org", "--resend", "3")
    assert twice.output == ("Error: row 3 (p1@example.org) cannot be both --sent and "
                            "--resend; name each recipient once\n")
    assert journal(c) == before

    done = run("resolve", config, "--sent", "all", "--resend", "4")  # all but row 4
    assert done.exit_code == 0, done.output
    assert done.output == ("1 recorded as sent: row 3 p1@example.org\n"
                           "1 recorded as to be sent again: row 4 p2@example.org\n"
                           "No recipient is uncertain.\n")
    assert journal(c)["p1@example.org"][0::2] == ("sent", "hand")
    assert journal(c)["p2@example.org"][0] == "deferred"
