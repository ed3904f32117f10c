"""Sending against a real aiosmtpd server on loopback: faults, journal, resume."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge.cli import cli
from mailmerge.sending.pacing import RateLimiter, backoff

from .conftest import SMTP_BLOCK, CampaignDir, parse
from .smtpserver import Server

PEOPLE = [["email", "name"], *[[f"p{i}@example.org", f"Person {i}"] for i in range(5)]]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def make(basic, server: Server, extra: str = "", rows=PEOPLE, **smtp: object) -> CampaignDir:
    block = SMTP_BLOCK.format(port=server.port)
    for key, value in smtp.items():
        lines = [line for line in block.splitlines() if not line.startswith(f"  {key}:")]
        block = "\n".join([*lines, f"  {key}: {value}"]) + "\n"
    return basic(block + extra, rows=rows)


def send(c: CampaignDir, *args: str, env: dict[str, str] | None = None):
    return run("send", str(c.folder / "campaign.yaml"), "--yes", *args, env=env)


def journal_rows(c: CampaignDir) -> dict[str, tuple]:
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    try:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT key, state, attempts, last_reply, message_id FROM recipients")}
    finally:
        db.close()


def test_sends_one_message_per_row_over_one_connection(basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 0, result.output
    received = smtp_server.handler.received
    assert [r.rcpt_tos for r in received] == [[f"p{i}@example.org"] for i in range(5)]
    assert smtp_server.handler.sessions == 1
    first = parse(received[0].content)
    assert first["Subject"] == "Hi Person 0" and first["To"] == "p0@example.org"
    assert received[0].mail_from == "news@acme.example"
    journal = journal_rows(c)
    assert {v[0] for v in journal.values()} == {"sent"}
    assert journal["p0@example.org"][3] == first["Message-ID"]
    assert ("                this run    in all\n"
            "sent                   5         5\n"
            "failed                 0         0\n"
            "deferred               0         0\n"
            "not yet sent                     0\n"
            "uncertain                        0\n") in result.output
    again = send(c)
    assert again.exit_code == 0 and "Nothing to send." in again.output
    assert len(smtp_server.handler.received) == 5


def test_permanent_refusal_fails_that_recipient_only(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "550 5.1.1 No such user" if a == "p2@example.org" else None
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 1
    assert len(smtp_server.handler.received) == 4
    assert journal_rows(c)["p2@example.org"][:3] == ("failed", 1, "p2@example.org: 550 5.1.1 No such user")
    status = run("status", str(c.folder / "campaign.yaml"))
    assert "sent 4" in status.output and "failed 1" in status.output
    assert "row 4 p2@example.org: p2@example.org: 550 5.1.1 No such user (attempts 1)" in status.output


def test_temporary_refusal_is_retried_with_the_same_message_id(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "451 4.7.1 Greylisted" if a == "p1@example.org" and n < 3 else None
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert smtp_server.handler.by_recipient()["p1@example.org"] == 1
    state, attempts, reply, message_id = journal_rows(c)["p1@example.org"]
    assert (state, attempts) == ("sent", 3)
    delivered = [parse(r.content) for r in smtp_server.handler.received if r.rcpt_tos == ["p1@example.org"]]
    assert delivered[0]["Message-ID"] == message_id


def test_gives_up_after_retries_and_resumes_later(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "452 4.2.2 Mailbox full" if a == "p3@example.org" else None
    c = make(basic, smtp_server, retries=1)
    result = send(c)
    assert result.exit_code == 1
    assert journal_rows(c)["p3@example.org"][:2] == ("failed", 2)
    assert "gave up after 2 attempts" in journal_rows(c)["p3@example.org"][2]


def test_deferred_beyond_the_time_limit_stay_deferred(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "451 try later" if a == "p3@example.org" and n < 2 else None
    c = make(basic, smtp_server, retry_delay=60, retry_for=1)
    result = send(c)
    assert result.exit_code == 1
    assert "1 recipient is still waiting" in result.output
    assert journal_rows(c)["p3@example.org"][0] == "deferred"
    result = send(c)  # a later run retries the deferred one at once
    assert result.exit_code == 0, result.output
    assert smtp_server.handler.by_recipient()["p3@example.org"] == 1


def test_421_closes_the_connection_and_sending_goes_on(basic, smtp_server) -> None:
    smtp_server.handler.data_rule = lambda env, i: "421 4.3.2 Closing, try later" if i == 2 else None
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert sorted(smtp_server.handler.by_recipient().values()) == [1] * 5
    assert smtp_server.handler.sessions >= 2


def test_a_connection_lost_after_the_text_leaves_the_recipient_uncertain(basic,
                                                                         smtp_server) -> None:
    smtp_server.handler.data_rule = lambda env, i: "DROP" if i in (1, 3) else None
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 1, result.output  # never sent again on a guess
    uncertain = {key: row for key, row in journal_rows(c).items() if row[0] == "sending"}
    assert len(uncertain) == 2 and len(smtp_server.handler.received) == 3
    assert all(row[2].startswith(f"{key}: no reply to the text: connection lost")
               for key, row in uncertain.items())
    assert "Uncertain (may or may not have been delivered): " in result.output
    # this server did not keep them: resent (same Message-ID), everyone has one copy
    assert send(c, "--resend-uncertain").exit_code == 0
    assert sorted(smtp_server.handler.by_recipient().values()) == [1] * 5


def test_a_final_reply_without_a_valid_code_is_never_taken_for_delivered(basic,
                                                                        smtp_server) -> None:
    # smtplib reads "2500" as 250: the row would have been marked sent on a reply that is
    # no reply at all
    smtp_server.handler.data_rule = lambda env, i: "2500 OK" if i == 1 else None
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 1, result.output
    uncertain = {key: row for key, row in journal_rows(c).items() if row[0] == "sending"}
    assert len(uncertain) == 1
    ((key, row),) = uncertain.items()
    assert row[2] == (f"{key}: no reply to the text: protocol error: the reply '2500 OK' "
                      "does not start with a three-digit code")
    assert [v[0] for v in journal_rows(c).values()].count("sent") == 4


def test_a_late_reply_to_the_text_is_waited_for(basic, smtp_server) -> None:
    smtp_server.handler.data_delay = 1.5  # a slow content filter, past `timeout`
    c = make(basic, smtp_server, rows=PEOPLE[:3], timeout=0.5)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert smtp_server.handler.by_recipient() == {"p0@example.org": 1, "p1@example.org": 1}
    assert {row[0] for row in journal_rows(c).values()} == {"sent"}


def test_slow_server_times_out_and_is_deferred(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_delay = 1.0
    c = make(basic, smtp_server, rows=PEOPLE[:2], timeout=0.2, retries=0)
    result = send(c)
    assert result.exit_code == 1
    state, attempts, reply, _ = journal_rows(c)["p0@example.org"]
    assert state == "failed" and "connection lost" in reply and "timed out" in reply


def test_partial_rcpt_refusal_is_recorded(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "550 5.1.1 unknown" if a == "gone@example.org" else None
    c = make(basic, smtp_server, extra="cc: gone@example.org\n", rows=PEOPLE[:3])
    result = send(c)
    assert result.exit_code == 0, result.output
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["p0@example.org"], ["p1@example.org"]]
    state, _, reply, _ = journal_rows(c)["p0@example.org"]
    assert state == "sent" and reply == "250 2.0.0 Message accepted; gone@example.org: 550 5.1.1 unknown"


def test_partial_deferral_retries_only_the_deferred_address(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "451 later" if a == "slow@example.org" and n == 1 else None
    c = make(basic, smtp_server, extra="cc: slow@example.org\n", rows=PEOPLE[:2])
    result = send(c)
    assert result.exit_code == 0, result.output
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["p0@example.org"], ["slow@example.org"]]
    first, second = (parse(r.content) for r in smtp_server.handler.received)
    assert first["Message-ID"] == second["Message-ID"]


def test_policy_refusal_of_the_sender_stops_the_campaign(basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    original = smtp_server.handler.handle_RCPT

    async def refuse_mail(server, session, envelope, address, options):
        return "550 5.7.1 Sender not allowed"

    smtp_server.handler.handle_RCPT = original
    smtp_server.handler.handle_MAIL = refuse_mail  # type: ignore[attr-defined]
    result = send(c)
    assert result.exit_code == 2
    assert "Error: stopped: the server refused the sender news@acme.example (550 5.7.1 Sender not allowed)" in result.output
    assert smtp_server.handler.received == []
    assert send(c).exit_code == 2  # resumable: nothing was recorded as failed


def test_unreachable_server_stops_at_once(basic) -> None:
    from .smtpserver import free_port

    port = free_port()
    c = basic(SMTP_BLOCK.format(port=port), rows=PEOPLE)
    result = send(c)
    assert result.exit_code == 2
    assert f"Error: stopped: 127.0.0.1:{port} refused the connection" in result.output
    assert {v[0] for v in journal_rows(c).values()} == {"pending"}


def test_invalid_rows_block_sending_unless_skip_invalid(basic, smtp_server) -> None:
    rows = [*PEOPLE[:3], ["bad@", "X"]]
    c = make(basic, smtp_server, rows=rows)
    result = send(c)
    assert result.exit_code == 1
    assert "row 4, column 'email'" in result.output and "Nothing was sent." in result.output
    assert smtp_server.handler.received == []
    result = send(c, "--skip-invalid")
    assert result.exit_code == 1
    assert len(smtp_server.handler.received) == 2
    assert journal_rows(c)["row 4"][0] == "failed"


def test_duplicate_recipients_are_a_problem(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=[*PEOPLE[:3], ["p1@example.org", "Again"]])
    result = send(c)
    assert result.exit_code == 1
    assert "row 4: recipient key 'p1@example.org' is also on row 3" in result.output


ZOE = [["email", "name"], ["zoe@example.org", "Zoe"], ["ZOE@EXAMPLE.ORG", "Zoe"],
       ["Zoe@Example.Org", "Zoe"], ["p1@example.org", "P"]]


def test_addresses_that_differ_only_in_case_are_one_recipient(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=ZOE)
    check = run("check", str(c.folder / "campaign.yaml"))
    assert check.exit_code == 1
    assert (f"  {c.folder / 'people.csv'}: recipient key 'zoe@example.org' is also on row 2; "
            "each recipient must appear once; remove the duplicate row (addresses are compared "
            "without regard to case; name a unique column with `recipients: {key: ...}` to "
            "tell them apart) [rows 3-4]") in check.output
    assert send(c).exit_code == 1  # refused as check says: nothing was sent
    assert smtp_server.handler.received == []
    c.csv([ZOE[0], ZOE[2], ZOE[4]])  # one spelling of the address left
    assert send(c).exit_code == 0
    assert send(c).exit_code == 0  # the mailbox is the same whatever the case: not again
    assert smtp_server.handler.by_recipient() == {"ZOE@example.org": 1, "p1@example.org": 1}
    assert sorted(journal_rows(c)) == ["p1@example.org", "zoe@example.org"]


def test_a_journal_begun_before_keys_ignored_case_is_not_sent_again(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=[ZOE[0], ZOE[3], ZOE[4]])
    assert send(c).exit_code == 0
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    with db:  # as an earlier version wrote it: the address as the sheet spelt it
        db.execute("UPDATE recipients SET key = 'Zoe@Example.Org' WHERE key = 'zoe@example.org'")
        db.execute("DELETE FROM meta WHERE name = 'keys'")
    db.close()
    again = send(c)
    assert again.exit_code == 0, again.output
    assert "Nothing to send." in again.output
    assert smtp_server.handler.by_recipient() == {"Zoe@example.org": 1, "p1@example.org": 1}
    assert sorted(journal_rows(c)) == ["p1@example.org", "zoe@example.org"]


def test_changed_templates_need_allow_changes(basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    assert send(c, "--limit", "2").exit_code == 1
    assert len(smtp_server.handler.received) == 2
    (c.root / "templates" / "mail.html").write_text("<p>New {{ name }}</p>")
    result = send(c)
    assert result.exit_code == 2
    assert "the campaign file or the files its messages are made from changed since this journal began" in result.output
    assert "--allow-changes" in result.output
    assert send(c, "--allow-changes").exit_code == 0
    assert len(smtp_server.handler.received) == 5
    assert "New Person 4" in smtp_server.handler.received[-1].content.decode()


def test_restart_keeps_the_old_journal(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=PEOPLE[:3])
    assert send(c).exit_code == 0
    assert send(c, "--restart").exit_code == 0
    assert len(smtp_server.handler.received) == 4
    assert len(list(c.folder.glob("test.journal.sqlite.*"))) >= 1


def test_new_and_removed_rows(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=PEOPLE[:3])  # p0, p1
    assert send(c).exit_code == 0
    c.csv([PEOPLE[0], PEOPLE[2], PEOPLE[3]])  # p1, p2
    result = send(c)
    assert result.exit_code == 0
    assert ("1 recipient in the journal is no longer in the sheet or is left out by `where` "
            "(left alone): p0@example.org") in result.output
    assert smtp_server.handler.by_recipient() == {f"p{i}@example.org": 1 for i in range(3)}


def test_test_send_goes_to_the_given_address_only(basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    result = run("send", str(c.folder / "campaign.yaml"), "--to", "me@test.example", "--row", "4")
    assert result.exit_code == 0, result.output
    assert result.output == "row 4: sent to me@test.example (test; not recorded)\n"
    (message,) = smtp_server.handler.received
    assert message.rcpt_tos == ["me@test.example"]
    assert parse(message.content)["Subject"] == "Hi Person 2"
    assert not (c.folder / "test.journal.sqlite").exists()


def test_not_on_a_terminal_needs_yes(basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    result = run("send", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 2
    assert "Error: not on a terminal, so no confirmation can be asked; add --yes" in result.output
    assert smtp_server.handler.received == []


def test_concurrent_connections_deliver_everyone_once(basic, smtp_server) -> None:
    rows = [["email", "name"], *[[f"c{i}@example.org", "C"] for i in range(30)]]
    smtp_server.handler.rcpt_rule = lambda a, n: "451 later" if a.endswith("7@example.org") and n == 1 else None
    c = make(basic, smtp_server, rows=rows, concurrency=3)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert smtp_server.handler.by_recipient() == {f"c{i}@example.org": 1 for i in range(30)}
    assert smtp_server.handler.sessions >= 3


def test_non_ascii_address_goes_with_smtputf8(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=[["email", "name"], ["zoë@bücher.example", "Zoë"]])
    result = send(c)
    assert result.exit_code == 0, result.output
    (message,) = smtp_server.handler.received
    assert message.rcpt_tos == ["zoë@xn--bcher-kva.example"]
    assert parse(message.content)["To"] == "zoë@xn--bcher-kva.example"


def test_status_csv(basic, smtp_server, tmp_path: Path) -> None:
    c = make(basic, smtp_server, rows=PEOPLE[:3])
    assert send(c).exit_code == 0
    out = tmp_path / "report.csv"
    result = run("status", str(c.folder / "campaign.yaml"), "--csv", str(out))
    assert result.exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == ("row,key,state,attempts,last_reply,message_id,time,settled,"
                        "status_code,diagnostic,soft_bounces")
    assert lines[1].startswith("2,p0@example.org,sent,1,250 2.0.0 Message accepted,<")
    assert lines[1].endswith(",reply,,,0")  # settled by the server's reply; no bounce


def test_status_without_journal(basic) -> None:
    c = basic()
    result = run("status", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 0  # before the first send: nothing sent, not an error
    assert "nothing sent yet" in result.output


# --- rate and backoff, with an injected clock ----------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_holds_the_rate_exactly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60 / 600, clock=clock, sleep=clock.sleep)  # 600/minute
    start = clock.now
    for _ in range(1000):
        limiter.wait()
    assert clock.now - start == pytest.approx(99.9)  # 1000 messages: 999 gaps of 0.1 s


def test_rate_limiter_does_not_bank_idle_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep)
    limiter.wait()
    clock.now += 10  # idle
    limiter.wait()
    limiter.wait()
    assert clock.sleeps == [0.5]


def test_a_message_pipelined_early_takes_a_slot_only_when_one_is_due() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep)
    limiter.wait()
    assert not limiter.take_if_due()  # the next slot is 0.5 s away: it waits its turn
    clock.now += 0.5
    assert limiter.take_if_due()
    assert not limiter.take_if_due()
    limiter.wait()  # and the slots it took count against the rate
    assert clock.sleeps == [0.5] and clock.now == 1001.0
    assert RateLimiter(None, clock=clock, sleep=clock.sleep).take_if_due()


def test_backoff_grows_with_jitter() -> None:
    assert backoff(1, 60, rand=lambda: 0.0) == 30
    assert backoff(1, 60, rand=lambda: 1.0) == 60
    assert backoff(3, 60, rand=lambda: 1.0) == 240


def test_uncertain_recipients_are_named_and_resent_only_on_request(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=PEOPLE[:4])
    assert send(c, "--limit", "1").exit_code == 1
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    with db:  # as if the process had died during p1's transaction
        db.execute("UPDATE recipients SET state = 'sending', attempts = 1, message_id = '<x@y>' "
                   "WHERE key = 'p1@example.org'")
    db.close()
    result = send(c)
    assert result.exit_code == 1
    assert ("1 recipient is uncertain: a run stopped while its message was with the "
            "server; it will NOT be sent again: settle them with `mailmerge resolve` (or add "
            "--resend-uncertain):\n    row 3: p1@example.org\n") in result.output
    config = c.folder / "campaign.yaml"
    assert (f"Settle them: `mailmerge resolve {config} --sent 3` for those who got the message, "
            f"`mailmerge resolve {config} --resend 3` for those who did not; with `imap: "
            "{lookup: FOLDER}` (a Sent or archive folder) send looks them up itself.") in (
                result.output)
    assert smtp_server.handler.by_recipient() == {"p0@example.org": 1, "p2@example.org": 1}
    status = run("status", str(c.folder / "campaign.yaml"))
    assert "uncertain 1" in status.output and "row 3 p1@example.org" in status.output
    assert f"`mailmerge resolve {config} --sent 3`" in status.output
    result = send(c, "--resend-uncertain")
    assert result.exit_code == 0, result.output
    delivered = [parse(r.content) for r in smtp_server.handler.received
                 if r.rcpt_tos == ["p1@example.org"]]
    assert [m["Message-ID"] for m in delivered] == ["<x@y>"]  # the first attempt's id


def test_progress_line() -> None:
    from mailmerge.cli import progress_line

    assert progress_line({"sent": 30, "failed": 10, "deferred": 2}, 100, 10.0, width=10) == (
        "[####......] 40/100  3.0/s  ETA 0:20  failed 10  deferred 2")
    assert progress_line({"sent": 0, "failed": 0, "deferred": 0}, 0, 0.0, width=4) == (
        "[####] 0/0  0.0/s  ETA ?  failed 0  deferred 0")


def test_suppressed_recipients_are_skipped_and_reported(basic, smtp_server) -> None:
    rows = [["email", "name", "cc"], ["p0@example.org", "A", "boss@example.org, ok@example.org"],
            ["P1@Example.ORG", "B", ""], ["p2@example.org", "C", ""]]
    c = make(basic, smtp_server, rows=rows, extra="cc: '{{ cc }}'\nsuppress: [bounces.csv, unsubscribed.txt]\n")
    (c.folder / "bounces.csv").write_text("Email,reason\nboss@example.org,hard bounce\n")
    (c.folder / "unsubscribed.txt").write_text("# unsubscribed\np1@example.org\n\n")
    check = run("check", str(c.folder / "campaign.yaml"))
    assert check.exit_code == 0
    assert check.output.endswith("3 rows: 2 messages ok, 1 suppressed.\n")
    result = send(c)
    assert result.exit_code == 0, result.output
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [
        ["p0@example.org", "ok@example.org"], ["p2@example.org"]]
    assert parse(smtp_server.handler.received[0].content)["Cc"] == "ok@example.org"
    journal = journal_rows(c)
    # the key of an address ignores case, as the suppression list does
    assert journal["p1@example.org"][:3] == ("skipped", 0, "suppressed: on a suppression list")
    status = run("status", str(c.folder / "campaign.yaml"))
    assert "sent 2" in status.output and "skipped 1" in status.output


def test_missing_suppression_list_is_a_configuration_error(basic, smtp_server) -> None:
    c = make(basic, smtp_server, extra="suppress: nope.txt\n")
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 2
    assert "the suppression list" in result.output and "nope.txt does not exist" in result.output


def test_a_session_the_server_closed_is_reopened_without_a_retry(basic, smtp_server) -> None:
    smtp_server.handler.data_rule = lambda env, i: "ACCEPT_CLOSE" if i in (0, 2) else None
    c = make(basic, smtp_server)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert sorted(smtp_server.handler.by_recipient().values()) == [1] * 5
    assert {v[1] for v in journal_rows(c).values()} == {1}  # one attempt each: no deferral
    assert smtp_server.handler.sessions == 3


@pytest.mark.parametrize("extension", ["SIZE abc", "SIZE 12x"])
def test_a_worker_that_fails_ends_the_run_cleanly_and_sends_nothing(basic, smtp_server,
                                                                     extension: str) -> None:
    smtp_server.handler.ehlo_extra = [extension]  # the transport cannot read it
    c = make(basic, smtp_server, rows=PEOPLE[:3])
    done = subprocess.run([sys.executable, "-m", "mailmerge", "send",
                           str(c.folder / "campaign.yaml"), "--yes", "-q"],
                          capture_output=True, text=True, timeout=60)  # a hang fails here
    assert done.returncode == 2, done.stdout + done.stderr
    assert ("Error: stopped: sending stopped on an unexpected error: ValueError: "
            "invalid literal for int()") in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    states = {key: row[0] for key, row in journal_rows(c).items()}
    assert states == {"p0@example.org": "pending", "p1@example.org": "pending"}
    assert smtp_server.handler.received == []


def test_a_refused_to_address_fails_the_row_though_its_copies_went_out(basic, smtp_server) -> None:
    smtp_server.handler.rcpt_rule = lambda a, n: "550 5.1.1 unknown" if a == "p0@example.org" else None
    c = make(basic, smtp_server, extra="cc: boss@example.org\n", rows=PEOPLE[:3])
    result = send(c)
    assert result.exit_code == 1, result.output  # a recipient failed
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [
        ["boss@example.org"], ["p1@example.org", "boss@example.org"]]
    state, _, reply, _ = journal_rows(c)["p0@example.org"]
    assert state == "failed"
    assert reply == ("250 2.0.0 Message accepted; p0@example.org: 550 5.1.1 unknown (not delivered to "
                     "p0@example.org; copies accepted for boss@example.org)")
    assert journal_rows(c)["p1@example.org"][0] == "sent"


def test_a_server_that_drips_its_greeting_forever_is_given_up_on(basic) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip(connection: socket.socket) -> None:
        with connection:
            while not stop.is_set():  # a 220- line every 50 ms: no read ever times out
                try:
                    connection.sendall(b"220-still greeting\r\n")
                except OSError:
                    return
                time.sleep(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    block = SMTP_BLOCK.format(port=port).replace("timeout: 5",
                                                                      "timeout: 0.2")
    c = basic(block, rows=PEOPLE[:2])
    try:
        done = subprocess.run([sys.executable, "-m", "mailmerge", "send",
                               str(c.folder / "campaign.yaml"), "--yes", "-q"],
                              capture_output=True, text=True, timeout=60)  # a hang fails here
    finally:
        stop.set()
        listener.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert (f"Error: stopped: 127.0.0.1:{port} did not finish its "
            "greeting within 0.8 s; check `smtp.port` and `smtp.security`") in done.stderr
    assert journal_rows(c)["p0@example.org"][0] == "pending"  # nothing was sent


def test_send_lists_the_pre_flight_warnings_before_it_sends(basic, smtp_server) -> None:
    c = basic(SMTP_BLOCK.format(port=smtp_server.port), rows=PEOPLE,
              html='<html><body><p>Hi {{ name }} <a href="https://localhost/x">x</a></p>'
                   "</body></html>")
    result = send(c)
    assert result.exit_code == 0, result.output
    before = result.output.split("Before you send (pre-flight warnings):\n", 1)
    assert len(before) == 2, result.output
    assert before[1].startswith("  rows 2-6: <html> has no lang attribute")
    assert "a link goes to a host no reader can reach" in before[1]
    assert before[1].index("(localhost)") < before[1].index("this run")
    assert len(smtp_server.handler.by_recipient()) == len(PEOPLE) - 1  # warned, and sent


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["newsletter", "invoices", "welcome"])
def test_a_dry_run_writes_the_bytes_that_send_sends(name: str, smtp_server: Server,
                                                    tmp_path: Path) -> None:
    """Each shipped campaign's .eml files are what goes over SMTP, Date, Message-ID and
    the multipart boundaries (new for every message made) aside."""
    import re
    import shutil

    for folder in ("campaigns", "templates"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    config = tmp_path / "campaigns" / f"{name}.yaml"
    config.write_text(config.read_text(encoding="utf-8")
                      .replace("host: localhost", "host: 127.0.0.1")
                      .replace("port: 2525", f"port: {smtp_server.port}"), encoding="utf-8")
    out = tmp_path / "out"
    assert run("preview", str(config), "-o", str(out)).exit_code == 0
    assert run("send", str(config), "--yes").exit_code == 0

    def masked(data: bytes) -> bytes:
        data = re.sub(rb"(?m)^(Date|Message-ID): [^\r\n]*", rb"\1: -", data)
        return re.sub(rb"=_mm_[0-9a-f]+", b"=_mm_boundary", data)

    written = {parse(p.read_bytes())["To"].addresses[0].addr_spec: p.read_bytes()
               for p in out.glob("*.eml")}
    sent = {r.rcpt_tos[0]: r.content for r in smtp_server.handler.received}
    assert sent.keys() == written.keys() and len(sent) >= 3
    for recipient, data in sent.items():
        assert masked(data) == masked(written[recipient]), recipient
