"""Bounces and complaints read back over IMAP and POP3 (a real Dovecot), from reports a
real Postfix made (tests/data/reports), and from ARF and auto-reply samples written from
the RFCs' examples."""

from __future__ import annotations

import ast
import imaplib
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge.cli import cli
from mailmerge.reports import read_report

from .conftest import SMTP_BLOCK, CampaignDir
from .imapserver import POP3
from .smtpserver import Server
from .test_drafts import deleted_but_kept
from .test_drafts import plain_dovecot as plain_dovecot  # a fixture, shared

DATA = Path(__file__).parent / "data" / "reports"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("name, kind, findings, ids", [
    ("postfix-hard.txt", "bounce", [("nosuchuser@bounce.test", "hard", "5.1.1")],
     ["<hard.ef36d0fa@example.test>"]),
    ("postfix-delayed.txt", "bounce", [("fulluser@defer.test", "soft", "4.2.2")],
     ["<soft.ef36d0fa@example.test>"]),
    ("postfix-failed-4xx.txt", "bounce", [("fulluser@defer.test", "soft", "4.2.2")],
     ["<soft.ef36d0fa@example.test>"]),
    ("arf-abuse.txt", "complaint", [("carol@example.org", None, "abuse")],
     ["<campaign-carol@acme.example>"]),
    ("autoreply-rfc3834.txt", "autoreply", [], ["<campaign-dave@acme.example>"]),
    ("autoreply-outlook.txt", "autoreply", [], ["<campaign-erin@acme.example>"]),
    ("qmail.txt", "bounce", [("frank@example.net", "hard", "5.1.1")],
     ["<campaign-frank@acme.example>"]),
    ("exim.txt", "bounce", [("grace@example.com", "hard", "5.1.1")],
     ["<campaign-grace@acme.example>"]),
])
def test_reports_are_read_as_what_they_are(name: str, kind: str, findings: list[tuple],
                                           ids: list[str]) -> None:
    report = read_report(sample(name))
    assert report.kind == kind, report.why
    assert [(f.address, f.severity, f.status) for f in report.findings] == findings
    assert list(report.message_ids) == ids


def test_a_postfix_dsn_gives_its_diagnostic_and_the_address_it_came_back_to() -> None:
    report = read_report(sample("postfix-hard.txt"))
    assert report.report_id == "<20261128042524.C19C516E0EE@mail.realmail.test>"
    assert report.delivered_to[0] == "news+bounce-hard-ef36d0fa@example.test"
    assert report.findings[0].diagnostic == ("X-Postfix; User unknown (realmail: bounce.test "
                                             "always bounces)")


@pytest.mark.parametrize("data, why", [
    (b"\x00\xff garbage \r\n\r\n\xfe", "neither a delivery report"),
    (b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
     b"--x\r\nContent-Type: text/plain\r\n\r\nno status part\r\n--x--\r\n",
     "without its message/delivery-status part"),
    (b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
     b"--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
     b"Final-Recipient: rfc822; a@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n--x--",
     "names no failed or delayed recipient"),
    (b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x"
     b"\r\n\r\n--x--\r\n", "a report of type 'disposition-notification'"),
])
def test_what_is_not_understood_says_why_and_never_raises(data: bytes, why: str) -> None:
    report = read_report(data)
    assert report.kind == "unknown" and why in report.why
    assert report.report_id.startswith("sha256:")


def test_a_report_cut_short_is_still_read() -> None:
    whole = sample("postfix-hard.txt")
    cut = whole[:whole.index(b"Content-Type: message/rfc822") + 40]  # its copy cut off
    report = read_report(cut)
    assert [(f.address, f.status) for f in report.findings] == [("nosuchuser@bounce.test",
                                                                 "5.1.1")]


# --- against a campaign that was sent ---------------------------------------------------------

PEOPLE = [["email", "name", "token"],
          *[[f"p{i}@example.org", f"P{i}", f"t{i:03d}"] for i in range(8)]]


@pytest.fixture
def smtp():
    server = Server(pipelining=True)
    yield server
    server.stop()


def sent_campaign(basic, smtp: Server, dovecot, protocol: str = "imap",
                  extra: str = "") -> CampaignDir:
    port = dovecot.port if protocol == "imap" else dovecot.pop3_port
    c = basic(SMTP_BLOCK.format(port=smtp.port)
              + 'return_path: "news+bounce-{{ token }}@acme.example"\n'
              + f"bounces: {{protocol: {protocol}, host: 127.0.0.1, port: {port}, "
                f"security: none, username: {dovecot.user}, password_env: BOUNCE_PW"
              + (", soft_limit: 2" if "soft_limit" not in extra else "") + extra + "}\n",
              rows=PEOPLE)
    done = run("send", c, "--yes", "-q")
    assert done.exit_code == 0, done.output
    return c


def run(command: str, c: CampaignDir, *args: str, password: str = "imap-secret"):
    return CliRunner().invoke(cli, [command, str(c.folder / "campaign.yaml"), *args],
                              env={"BOUNCE_PW": password}, catch_exceptions=False)


def journal(c: CampaignDir) -> dict[str, tuple]:
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    try:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT key, state, status_code, soft_bounces, message_id, return_path "
            "FROM recipients")}
    finally:
        db.close()


def dsn(c: CampaignDir, row: int, kind: str = "hard", report_id: str | None = None,
        verp: bool = True, message_id: bool = True, recipient: str | None = None) -> bytes:
    """A Postfix DSN for the message of sheet row ``row``, as it would come back."""
    key = f"p{row - 2}@example.org"
    _, _, _, mid, return_path = journal(c)[key]
    name = {"hard": "postfix-hard.txt", "delayed": "postfix-delayed.txt",
            "failed4": "postfix-failed-4xx.txt"}[kind]
    text = sample(name).decode()
    text = re.sub(r"news\+bounce-\w+-ef36d0fa@example\.test",
                  return_path if verp else "news@acme.example", text)
    text = re.sub(r"(nosuchuser@bounce|fulluser@defer)\.test", recipient or key, text)
    text = re.sub(r"<(hard|soft)\.ef36d0fa@example\.test>",
                  mid if message_id else "<elsewhere@example.net>", text)
    text = re.sub(r"(?m)^Message-Id: <[^>]+>",
                  f"Message-Id: <{report_id or f'{kind}-{row}'}@mx.example>", text)
    return text.encode()


@pytest.mark.parametrize("protocol", ["imap", pytest.param(
    "pop3", marks=pytest.mark.skipif(not POP3, reason="needs the dovecot-pop3d package"))])
def test_bounces_are_recorded_suppressed_and_counted_once(basic, smtp, dovecot,
                                                           protocol: str) -> None:
    c = sent_campaign(basic, smtp, dovecot, protocol)
    dovecot.append(dsn(c, 2))  # hard, by VERP
    dovecot.append(dsn(c, 3, verp=False))  # hard, by the returned Message-ID
    dovecot.append(dsn(c, 4, "delayed"))  # soft
    dovecot.append(dsn(c, 4, "failed4"))  # soft again: the limit (2 here) suppresses
    dovecot.append(dsn(c, 5, "delayed"))  # soft once: counted, not suppressed
    dovecot.append(sample("arf-abuse.txt").replace(b"carol@example.org", b"p4@example.org")
                   .replace(b"news+bounce-carol@acme.example", b"news+bounce-t004@acme.example"))
    dovecot.append(sample("autoreply-rfc3834.txt").replace(
        b"news+bounce-dave@acme.example", b"news+bounce-t005@acme.example"))
    dovecot.append(sample("qmail.txt"))  # another campaign's
    dovecot.append(b"Subject: hello\r\n\r\nnot a report\r\n")
    done = run("bounces", c)
    assert done.exit_code == 0, done.output
    assert done.output.startswith(
        "Read 9 messages: 2 hard bounces, 3 soft (1 now suppressed), 1 complaint, "
        "1 auto-reply; 0 read before.\n"
        "Left in the mailbox: 1 of other campaigns, 1 not understood, 0 not believed.\n")
    rows = journal(c)
    assert rows["p0@example.org"][:3] == ("bounced", "5.1.1", 0)
    assert rows["p1@example.org"][:3] == ("bounced", "5.1.1", 0)
    assert rows["p2@example.org"][:3] == ("bounced", "4.2.2", 2)
    assert rows["p3@example.org"][:3] == ("sent", "4.2.2", 1)
    assert rows["p4@example.org"][:2] == ("complained", "abuse")
    assert rows["p5@example.org"][:3] == ("sent", "", 0)  # an auto-reply is no bounce
    suppressed = (c.folder / "test.bounced.txt").read_text()
    assert [line.split()[0] for line in suppressed.splitlines()[1:]] == [
        "p0@example.org", "p1@example.org", "p2@example.org", "p4@example.org"]
    assert "hard bounce 5.1.1" in suppressed and "complaint" in suppressed

    again = run("bounces", c)  # the same reports: nothing changes
    assert again.output.startswith("Read 9 messages: 0 hard bounces, 0 soft (0 now "
                                   "suppressed), 0 complaints, 0 auto-replies; 7 read before.")
    assert ("1 not understood (1 of them on an earlier reading)" in again.output)  # unread
    assert journal(c) == rows
    assert (c.folder / "test.bounced.txt").read_text() == suppressed

    status = CliRunner().invoke(cli, ["status", str(c.folder / "campaign.yaml"), "--csv", "-"])
    assert "bounced 3, complained 1, soft-bounced 1" in status.output
    assert "p0@example.org,bounced,1," in status.output.replace("\r", "")

    # a new run of the campaign mails nobody who bounced or complained
    before = len(smtp.handler.received)
    resend = run("send", c, "--yes", "-q", "--restart")
    assert resend.exit_code == 0, resend.output
    mailed = {r.rcpt_tos[0] for r in smtp.handler.received[before:]}
    assert mailed == {"p3@example.org", "p5@example.org", "p6@example.org", "p7@example.org"}


def test_only_recorded_reports_are_deleted(basic, smtp, dovecot) -> None:
    c = sent_campaign(basic, smtp, dovecot, extra=", after: delete")
    dovecot.append(dsn(c, 2))
    dovecot.append(sample("qmail.txt"))  # another campaign's: stays
    dovecot.append(b"Subject: hello\r\n\r\nnot a report\r\n")  # not understood: stays
    done = run("bounces", c)
    assert "1 recorded reports deleted." in done.output
    assert dovecot.folder_count("INBOX") == 2


@pytest.mark.parametrize("after", ["delete", "move"])
def test_removing_reports_leaves_what_the_user_marked_deleted(basic, smtp, dovecot,
                                                              after: str) -> None:
    c = sent_campaign(basic, smtp, dovecot, extra=f", after: {after}")
    dovecot.append(dsn(c, 2))
    deleted_but_kept(dovecot, "INBOX")  # the user's: a plain EXPUNGE would remove it
    done = run("bounces", c)
    assert f"1 recorded reports {after}d." in done.output
    with imaplib.IMAP4("127.0.0.1", dovecot.port) as imap:
        imap.login(dovecot.user, dovecot.password)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        (number,) = found[0].split()
        _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"mine, marked deleted" in data[0][1]


def test_recorded_reports_can_be_moved(basic, smtp, dovecot) -> None:
    c = sent_campaign(basic, smtp, dovecot, extra=", after: move, move_to: Processed")
    dovecot.append(dsn(c, 2))
    dovecot.append(dsn(c, 3))
    done = run("bounces", c)
    assert "2 recorded reports moved." in done.output
    assert dovecot.folder_count("INBOX") == 0 and dovecot.folder_count("Processed") == 2


def test_forged_and_stray_reports_are_skipped_with_a_reason(basic, smtp, dovecot) -> None:
    c = sent_campaign(basic, smtp, dovecot)
    # a DSN through a real VERP address that claims a recipient that message never had
    dovecot.append(dsn(c, 2, recipient="someone@else.example", report_id="claims"))
    # a forged VERP token, with a real recipient's address and no real Message-ID
    forged = dsn(c, 3, message_id=False, report_id="forged").replace(
        b"news+bounce-t001@acme.example", b"news+bounce-zzz@acme.example")
    dovecot.append(forged)
    # broken MIME and a 3 MB report
    dovecot.append(b"Content-Type: multipart/report; boundary=\r\n\r\n--\x00\xff")
    closing = b"--BC95D16E0E3.1795839924/mail.realmail.test--"  # a 3 MB returned message
    dovecot.append(dsn(c, 4, report_id="huge").replace(
        closing, b"\r\n".join([b"A" * 76] * 40_000) + b"\r\n" + closing))
    done = run("bounces", c)
    assert done.exit_code == 0, done.output
    assert "1 hard bounce" in done.output  # the huge one: its fields come first
    assert "1 of other campaigns, 1 not understood, 1 not believed." in done.output
    assert ("skipped: the report names someone@else.example, whom the message it answers "
            "(row 2) did not go to (<claims@mx.example>)") in done.output
    rows = journal(c)
    assert rows["p0@example.org"][0] == "sent" and rows["p1@example.org"][0] == "sent"
    assert rows["p2@example.org"][0] == "bounced"


def test_a_wrong_password_is_one_error_line(basic, smtp, dovecot) -> None:
    c = sent_campaign(basic, smtp, dovecot)
    done = run("bounces", c, password="wrong")
    assert done.exit_code == 2
    assert done.output.startswith("Error: cannot read the bounces mailbox at IMAP 127.0.0.1:")
    assert "Traceback" not in done.output


def test_the_return_path_is_the_envelope_sender_and_no_header(basic, smtp, dovecot) -> None:
    c = sent_campaign(basic, smtp, dovecot)
    first = smtp.handler.received[0]
    assert first.mail_from == "news+bounce-t000@acme.example"
    assert b"Return-Path" not in first.content  # the receiving server adds it
    out = c.folder / "dry"
    done = run("preview", c, "--out", str(out))
    assert done.exit_code == 0, done.output
    manifest = (out / "manifest.csv").read_text()
    assert "envelope_from" in manifest.splitlines()[0]
    assert "news+bounce-t003@acme.example" in manifest
    assert all(b"Return-Path" not in eml.read_bytes() for eml in out.glob("*.txt"))


def test_a_crash_between_the_suppression_file_and_the_journal_loses_and_doubles_nothing(
        basic, smtp, dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmerge import load_campaign
    from mailmerge.sending import Journal, read_bounces

    c = sent_campaign(basic, smtp, dovecot)
    dovecot.append(dsn(c, 2))
    dovecot.append(dsn(c, 3))
    campaign = load_campaign(c.folder / "campaign.yaml")
    calls = []

    def crash(self: Journal, report_id: str, kind: str, key: str | None) -> None:
        calls.append(report_id)
        if len(calls) == 2:  # the second report: its address is in the file, then "kill"
            raise KeyboardInterrupt
        original(self, report_id, kind, key)

    original = Journal.record_report
    monkeypatch.setattr(Journal, "record_report", crash)
    with Journal(c.folder / "test.journal.sqlite") as opened, pytest.raises(KeyboardInterrupt):
        read_bounces(campaign, opened, "imap-secret")
    monkeypatch.setattr(Journal, "record_report", original)
    rows = {k: v[0] for k, v in journal(c).items()}
    assert rows["p0@example.org"] == "bounced" and rows["p1@example.org"] == "sent"  # rolled back
    assert (c.folder / "test.bounced.txt").read_text().count("p1@example.org") == 1
    done = run("bounces", c)  # read again: the second is recorded now, the first not again
    assert done.output.startswith("Read 2 messages: 1 hard bounce, 0 soft (0 now "
                                  "suppressed), 0 complaints, 0 auto-replies; 1 read before.")
    journal_states = {k: v[0] for k, v in journal(c).items()}
    assert journal_states["p1@example.org"] == "bounced"
    suppressed = (c.folder / "test.bounced.txt").read_text()
    assert suppressed.count("p0@example.org") == 1 and suppressed.count("p1@example.org") == 1


@pytest.mark.parametrize("block, message", [
    ("{host: mail.example.net, username: u, security: none}",
     "`bounces.security: none` would send the login to mail.example.net unencrypted"),
    ("{protocol: pop3, host: 127.0.0.1, username: u, after: move}",
     "POP3 has no folders to move a report to"),
    ("{protocol: smtp, host: 127.0.0.1, username: u}", "`bounces.protocol` must be imap or pop3"),
    ("{host: 127.0.0.1, username: u, soft_limit: 0}", "`bounces.soft_limit` must be from 1"),
    ("{host: 127.0.0.1}", "missing required key `bounces.username`"),
])
def test_a_bounces_block_that_cannot_work_is_refused(basic, block: str, message: str) -> None:
    c = basic(f"bounces: {block}\n")
    done = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert done.exit_code == 2, done.output
    assert message in done.output


def test_bounces_without_a_mailbox_says_what_to_add(basic) -> None:
    c = basic()
    done = CliRunner().invoke(cli, ["bounces", str(c.folder / "campaign.yaml")])
    assert done.exit_code == 2
    assert "the campaign has no `bounces:` mailbox to read" in done.output
    assert '(see README, "mailmerge bounces")' in done.output


# --- reports as real servers and senders make them ------------------------------------------

def test_a_dsn_of_a_forwarded_address_counts_for_the_address_mailed(basic, smtp,
                                                                     dovecot) -> None:
    c = sent_campaign(basic, smtp, dovecot)
    # the address mailed forwards to another, which bounced: the DSN names the one mailed
    # as Original-Recipient only
    dovecot.append(dsn(c, 2).replace(b"Final-Recipient: rfc822; p0@example.org",
                                     b"Final-Recipient: rfc822; p0.moved@elsewhere.example"))
    done = run("bounces", c)
    assert done.exit_code == 0, done.output
    assert done.output.startswith("Read 1 message: 1 hard bounce, ")
    assert journal(c)["p0@example.org"][:2] == ("bounced", "5.1.1")
    suppressed = (c.folder / "test.bounced.txt").read_text().splitlines()[1:]
    assert [line.split()[0] for line in suppressed] == ["p0@example.org"]


@pytest.mark.parametrize("field", [b"Auto-Submitted: auto-replied", b"X-Autoreply: yes",
                                   b"Precedence: auto_reply"])
def test_a_bounce_that_says_it_was_sent_automatically_is_still_a_bounce(field: bytes) -> None:
    report = read_report(field + b"\n" + sample("exim.txt"))  # as Exim's bounces say
    assert report.kind == "bounce", report.why
    assert [(f.address, f.severity, f.status) for f in report.findings] == [
        ("grace@example.com", "hard", "5.1.1")]
    vacation = read_report(field + b"\nSubject: Out of office\n\nBack on Monday.\n")
    assert vacation.kind == "autoreply"


HEAD = (b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <hostile@mx.example>\r\n")
CPU_SECONDS = 5  # each report below takes well under a second; it took 13 s


@pytest.mark.parametrize("data", [
    pytest.param(HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(30_000)) + b"--b--\r\n",
        id="30000 tiny text parts"),
    pytest.param(HEAD + b"\r\nStatus: 5.1.1 " + b"a" * 70_000 + b"\r\n",
                 id="a 70 KB word without @"),
    pytest.param(HEAD + b"In-Reply-To: <" + b"a@" * 35_000 + b"\r\n\r\n5.1.1\r\n",
                 id="a Message-ID of 35000 @"),
    pytest.param(HEAD + b"\r\nHi. This is the qmail-send program\r\n<" + b"a@" * 35_000
                 + b"\r\n", id="a qmail address of 35000 @"),
])
def test_reports_anyone_can_send_are_classified_within_a_cpu_budget(data: bytes) -> None:
    # CPU time, which a busy machine does not stretch; the old code spent 13 s on each
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_CPU, ({CPU_SECONDS}, {CPU_SECONDS}))\n"
            "from mailmerge.reports import read_report\n"
            "print(read_report(sys.stdin.buffer.read()).kind)\n")
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                          check=False)
    assert done.returncode == 0, done.stderr  # SIGXCPU when over the budget
    assert done.stdout.strip() == b"unknown"


def test_recorded_reports_stay_where_the_server_cannot_remove_one_alone(
        basic, smtp, plain_dovecot) -> None:
    c = sent_campaign(basic, smtp, plain_dovecot, extra=", after: delete")
    plain_dovecot.append(dsn(c, 2))
    deleted_but_kept(plain_dovecot, "INBOX")  # the user's, marked deleted, not expunged
    done = run("bounces", c)
    assert done.exit_code == 0, done.output
    assert "1 hard bounce" in done.output
    assert done.output.endswith(
        "0 recorded reports deleted.\nRecorded reports stay in the mailbox: the server has "
        "neither MOVE nor UIDPLUS, and a plain EXPUNGE would also remove the other messages "
        "marked deleted in the folder.\nSuppressed addresses are in "
        f"{c.folder / 'test.bounced.txt'}.\n")
    assert plain_dovecot.folder_count("INBOX") == 2


def test_every_readme_section_a_message_names_exists() -> None:
    root = Path(__file__).resolve().parent.parent
    headings = [line.lstrip("#").replace("`", "").strip() for line in
                (root / "README.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    named = [(path.name, section.replace("`", ""))
             for path in sorted((root / "mailmerge").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             for section in re.findall(r"README(?:'s|,)?\s+(?:section\s+)?\"([^\"]+)\"",
                                       node.value)]
    assert ("sending.py", "mailmerge bounces") in named  # the one that was wrong
    for where, section in named:
        assert any(h == section or h.startswith(section + " ") for h in headings), (
            f"{where} names the README section {section!r}, which does not exist")


@pytest.mark.parametrize("address", ["10.4.2.1", "1.2.3.4", "2001:db8::5.1.2.3"])
def test_an_ip_address_in_a_bounce_is_never_taken_for_its_status(address: str) -> None:
    """Exim names the host it tried ([1.2.3.4]) before the server's 550 5.1.1: its numbers
    made a soft 2.3.4 of a hard bounce."""
    report = read_report(sample("exim.txt").replace(b"192.0.2.7", address.encode()))
    assert [(f.address, f.severity, f.status) for f in report.findings] == [
        ("grace@example.com", "hard", "5.1.1")]
