"""Everyday sending as a new user meets it: a greylisted recipient in a daily batch, a
campaign changed before anyone got anything, a wrong port, invalid rows fixed later, the
server's queue ID, a SIGTERM from a scheduler. Real server, real processes, real signals."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

from .conftest import SMTP_BLOCK, CampaignDir
from .smtpserver import Server
from .test_send import PEOPLE, journal_rows, make, run, send


def send_process(c: CampaignDir, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mailmerge send` in its own process; a run that never ends fails the test here
    (and is killed) instead of hanging the suite."""
    command = [sys.executable, "-m", "mailmerge", "send", str(c.folder / "campaign.yaml"),
               "--yes", "-q", *extra]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"send never ended: {exc.stdout!r} {exc.stderr!r}") from None


def finish(process: subprocess.Popen, group: bool = False) -> str:
    """Its output once it ends; one that never ends is killed and fails the test."""
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"send never ended: {output!r}") from None
    return output.decode() if isinstance(output, bytes) else output


def read_until(process: subprocess.Popen, text: bytes) -> bytes:
    """What ``process`` wrote up to and with ``text`` (a guard fails a silent one)."""
    import select

    assert process.stdout is not None
    seen = b""
    while text not in seen:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        chunk = os.read(process.stdout.fileno(), 1024) if ready else b""
        assert chunk, seen  # ended, or a guard against a hang
        seen += chunk
    return seen


# --- item: `--limit N` with a deferred recipient -----------------------------------------------

def test_a_deferred_recipient_within_the_limit_is_retried_and_the_run_ends(basic) -> None:
    server = Server()
    try:
        server.handler.rcpt_rule = (lambda a, n: "451 4.7.1 Greylisted, try later"
                                    if a == "p0@example.org" else None)
        c = make(basic, server, retries=2)
        done = send_process(c, "--limit", "2")
    finally:
        server.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    states = {key: row[:2] for key, row in journal_rows(c).items()}
    # retried within the retry settings (its retries are no new messages beyond the limit)
    assert states["p0@example.org"] == ("failed", 3)
    assert states["p1@example.org"] == ("sent", 1)
    assert [states[f"p{i}@example.org"][0] for i in (2, 3, 4)] == ["pending"] * 3
    assert server.handler.rcpt_seen["p0@example.org"] == 3
    assert server.handler.by_recipient() == {"p1@example.org": 1}


def test_a_limit_reached_by_other_rows_leaves_an_earlier_deferral_for_later(basic) -> None:
    server = Server()
    try:
        server.handler.rcpt_rule = lambda a, n: "451 later" if a == "p0@example.org" and n == 1 else None
        c = make(basic, server, retry_delay=3600)
        assert send_process(c).returncode == 1  # p0 deferred for an hour
        db = sqlite3.connect(c.folder / "test.journal.sqlite")
        with db:  # its hour is over
            db.execute("UPDATE recipients SET next_attempt = 1 WHERE key = 'p0@example.org'")
        db.close()
        c.csv([PEOPLE[0], ["new1@example.org", "N"], ["new2@example.org", "N"], *PEOPLE[1:]])
        done = send_process(c, "--limit", "1")  # the first new row takes the one message
    finally:
        server.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    states = {key: row[0] for key, row in journal_rows(c).items()}
    assert (states["new1@example.org"], states["new2@example.org"],
            states["p0@example.org"]) == ("sent", "pending", "deferred")


def test_a_deferred_recipient_no_longer_in_the_sheet_is_not_waited_for(basic) -> None:
    server = Server()
    try:
        server.handler.rcpt_rule = lambda a, n: "451 later" if a == "p4@example.org" else None
        c = make(basic, server, retry_delay=3600)
        assert send_process(c).returncode == 1
        db = sqlite3.connect(c.folder / "test.journal.sqlite")
        with db:  # due now, but the row is gone from the sheet: nothing to retry
            db.execute("UPDATE recipients SET next_attempt = 1 WHERE key = 'p4@example.org'")
        db.close()
        c.csv(PEOPLE[:5])
        done = send_process(c)
        c.csv(PEOPLE)
        filtered = send_process(c, "--where", "email != 'p4@example.org'")
    finally:
        server.stop()
    # the sheet's recipients are all sent: the one removed (or left out) is left alone
    for run_ in (done, filtered):
        assert run_.returncode == 0, run_.stdout + run_.stderr
        assert "Nothing to send." in run_.stdout
        assert "(left alone): p4@example.org" in run_.stdout
    assert journal_rows(c)["p4@example.org"][0] == "deferred"
    assert "p4@example.org" not in server.handler.by_recipient()


# --- item: the server's reply is kept -------------------------------------------------------

def test_the_servers_final_reply_with_its_queue_id_is_kept_and_shown(basic, tmp_path) -> None:
    server = Server()
    try:
        server.handler.data_rule = lambda env, i: f"250 2.0.0 Ok: queued as 4Bx{i}Q7"
        c = make(basic, server, rows=PEOPLE[:3])
        assert send(c).exit_code == 0
    finally:
        server.stop()
    assert journal_rows(c)["p0@example.org"][:3] == ("sent", 1, "250 2.0.0 Ok: queued as 4Bx0Q7")
    result = run("status", str(c.folder / "campaign.yaml"), "--csv", str(tmp_path / "s.csv"))
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "s.csv").read_text(encoding="utf-8").splitlines()
    assert lines[2].startswith("3,p1@example.org,sent,1,250 2.0.0 Ok: queued as 4Bx1Q7,<")


def test_a_servers_reply_is_kept_as_one_bounded_line_without_control_characters(basic) -> None:
    hostile = ("250-2.0.0 Ok: queued as 4BxQ7\r\n250 \x1b]0;owned\x07\x1b[2J" + "x" * 5000)
    server = Server()
    try:
        server.handler.data_rule = lambda env, i: hostile
        server.handler.rcpt_rule = (lambda a, n: "550-5.1.1 no\r\n550 5.1.1 \x1b[31mgone\u202e"
                                    if a == "p1@example.org" else None)
        c = make(basic, server, rows=PEOPLE[:3])
        result = send(c)
    finally:
        server.stop()
    assert result.exit_code == 1, result.output
    reply = journal_rows(c)["p0@example.org"][2]
    assert reply.startswith("250 2.0.0 Ok: queued as 4BxQ7 ]0;owned [2Jxxx")
    assert len(reply) <= 304 and reply.endswith("x…")
    assert reply.isprintable()
    assert journal_rows(c)["p1@example.org"][2] == "p1@example.org: 550 5.1.1 no 5.1.1 [31mgone"
    assert "\x1b" not in result.output


# --- item: a server that cannot be reached ---------------------------------------------------

def closed_port() -> int:
    from .smtpserver import free_port

    return free_port()  # nothing listens on it: the connection is refused


def test_a_closed_port_stops_the_run_at_once_naming_host_and_port(basic) -> None:
    port = closed_port()
    c = basic(SMTP_BLOCK.format(port=port) + "  concurrency: 3\n", rows=PEOPLE)
    done = send_process(c)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"Error: stopped: 127.0.0.1:{port} refused the connection: no mail server listens "
        "there; check `smtp.host` and `smtp.port` (587 for `starttls`, 465 for `ssl`, 25 "
        "for a relay); nothing was sent, run send again once it is right\n")
    assert "cannot connect" not in done.stdout + done.stderr  # no line per row
    # nothing was tried: no attempt counted, every recipient still pending
    assert {row[:3] for row in journal_rows(c).values()} == {("pending", 0, "")}


def test_an_unknown_host_name_stops_the_run_at_once(basic) -> None:
    block = SMTP_BLOCK.format(port=25).replace("127.0.0.1", "no-such-host.invalid")
    c = basic(block, rows=PEOPLE)
    done = send_process(c)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("Error: stopped: the server name 'no-such-host.invalid' "
                                  "of no-such-host.invalid:25 cannot be found (")
    assert done.stderr.count("\n") == 1
    assert {row[0] for row in journal_rows(c).values()} == {"pending"}


def test_tls_spoken_to_a_plain_port_stops_the_run_at_once(basic) -> None:
    server = Server()
    try:
        block = SMTP_BLOCK.format(port=server.port).replace("security: none", "security: ssl")
        c = basic(block, rows=PEOPLE)
        done = send_process(c)
    finally:
        server.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"Error: stopped: TLS with 127.0.0.1:{server.port} failed (")
    assert "check that `smtp.security` matches `smtp.port`" in done.stderr
    assert done.stderr.count("\n") == 1
    assert {row[:2] for row in journal_rows(c).values()} == {("pending", 0)}


def test_a_test_send_to_a_closed_port_is_one_error_line(basic) -> None:
    port = closed_port()
    c = basic(SMTP_BLOCK.format(port=port), rows=PEOPLE)
    result = run("send", str(c.folder / "campaign.yaml"), "--to", "me@example.org")
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: 127.0.0.1:{port} refused the connection: no mail server listens there; "
        "check `smtp.host` and `smtp.port` (587 for `starttls`, 465 for `ssl`, 25 for a "
        "relay)\n")


def test_plain_smtp_spoken_to_an_implicit_tls_port_stops_the_run_at_once(basic) -> None:
    import trustme

    from .test_send_tls import server_context

    server = Server(tls=server_context(trustme.CA()), implicit_tls=True)
    try:  # the server waits for TLS, the client for a greeting
        block = SMTP_BLOCK.format(port=server.port).replace("timeout: 5", "timeout: 0.2")
        c = basic(block.replace("security: none", "security: starttls"), rows=PEOPLE)
        done = send_process(c)
    finally:
        server.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"Error: stopped: 127.0.0.1:{server.port} did not greet within 0.2 s; "
        "check `smtp.port` and `smtp.security`: a port of implicit TLS (465) says nothing "
        "until TLS begins, so it needs `security: ssl`; nothing was sent, run send again "
        "once it is right\n")
    assert {row[:2] for row in journal_rows(c).values()} == {("pending", 0)}


def test_a_busy_server_is_retried_and_given_up_on_naming_host_and_port(basic) -> None:
    """421 at the greeting is the server's word that it is busy for now: retried, then
    the run stops, with host and port said once."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"421 4.3.2 busy, try later\r\n")

    threading.Thread(target=serve, daemon=True).start()
    c = basic(SMTP_BLOCK.format(port=port), rows=PEOPLE)
    try:
        done = send_process(c)
    finally:
        listener.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"Error: stopped: gave up after 5 failed connections in a row (127.0.0.1:{port} "
        "refused the session: 421 4.3.2 busy, try later); check `smtp.host`, `smtp.port` "
        "and `smtp.security`, then run send again to resume\n")
    assert {row[0] for row in journal_rows(c).values()} <= {"deferred", "pending"}


# --- item: SIGTERM ends `send` as Ctrl-C does ---------------------------------------------------

# (the first SIGTERM during a run: test_resume.py, beside the first Ctrl-C)


def test_sigterm_before_sending_begins_says_how_to_resume(basic) -> None:
    """A SIGTERM while the rows are checked (here: while the password is asked for on
    a terminal that never answers) ends as Ctrl-C does, with nothing sent."""
    import pty

    server = Server()
    c = make(basic, server, extra="", username="news")
    leader, follower = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if k != "MAILMERGE_SMTP_PASSWORD"}
        process = subprocess.Popen(
            [sys.executable, "-m", "mailmerge", "send", str(c.folder / "campaign.yaml"),
             "--yes"], stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env)
        asked = read_until(process, b"Password for news")  # the question is out
        process.send_signal(signal.SIGTERM)
        output = finish(process)
    finally:
        os.close(leader)
        os.close(follower)
        server.stop()
    assert process.returncode == 143, output
    assert (asked.decode() + output).endswith(
        "Stopped by SIGTERM. Run the same command again to resume (mailmerge send "
        f"{c.folder / 'campaign.yaml'}).\n")
    assert server.handler.received == []


def test_sigterm_to_the_whole_process_group_ends_as_cleanly(basic) -> None:
    """A service manager ends every process of the job: the render worker too."""

    from .test_resume import journal_states, wait_for

    server = Server()
    server.handler.data_delay = 0.005
    people = [["email", "name"], *[[f"g{i}@example.org", "G"] for i in range(3000)]]
    c = basic(SMTP_BLOCK.format(port=server.port), rows=people)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailmerge", "send", str(c.folder / "campaign.yaml"),
             "--yes", "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        wait_for(server, 10)
        os.killpg(process.pid, signal.SIGTERM)
        output = finish(process, group=True)
    finally:
        server.stop()
    assert process.returncode == 143, output
    assert "Stopped by SIGTERM. Run the same command again to resume" in output
    assert "Error" not in output and "Traceback" not in output
    assert "sending" not in journal_states(c).values()


# --- item: --skip-invalid ----------------------------------------------------------------------

def test_invalid_rows_fixed_later_leave_no_ghost_failure(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=[*PEOPLE[:3], ["bad@", "X"]])
    result = send(c, "--skip-invalid")
    assert result.exit_code == 1, result.output  # some rows had problems
    assert journal_rows(c)["row 4"][:3] == ("failed", 0, "invalid: `to`: 'bad@' is not a valid "
                                            "email address (There must be something after "
                                            "the @-sign.)")
    c.csv([*PEOPLE[:3], ["fixed@example.org", "X"]])
    result = send(c)
    assert result.exit_code == 0, result.output
    assert smtp_server.handler.by_recipient()["fixed@example.org"] == 1
    states = {key: row[0] for key, row in journal_rows(c).items()}
    assert states == {"p0@example.org": "sent", "p1@example.org": "sent",
                      "fixed@example.org": "sent"}
    status = run("status", str(c.folder / "campaign.yaml"))
    assert "failed 0" in status.output and "Failed:" not in status.output


def test_a_run_that_records_invalid_rows_and_sends_nothing_says_so(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=PEOPLE[:3])
    assert send(c).exit_code == 0
    c.csv([*PEOPLE[:3], ["bad@", "X"]])  # a new row, and it is wrong
    result = send(c, "--skip-invalid")
    assert "Nothing to send." in result.output
    assert result.exit_code == 1, result.output


def test_an_invalid_row_with_a_key_column_is_recorded_under_its_key(basic, smtp_server) -> None:
    rows = [["id", "email", "name"], ["a1", "p0@example.org", "A"], ["b2", "bad@", "B"]]
    c = make(basic, smtp_server, extra="recipients: {path: people.csv, key: id}\n", rows=rows)
    result = send(c, "--skip-invalid")
    assert result.exit_code == 1, result.output
    assert journal_rows(c)["b2"][0] == "failed"
    c.csv([rows[0], rows[1], ["b2", "fixed@example.org", "B"]])
    result = send(c)
    assert result.exit_code == 0, result.output
    assert {key: row[0] for key, row in journal_rows(c).items()} == {"a1": "sent", "b2": "sent"}
    assert smtp_server.handler.by_recipient()["fixed@example.org"] == 1


# --- item: what counts as a change --------------------------------------------------------------

CHANGED = "changed since this journal began"


def test_a_change_before_anyone_got_anything_needs_no_allow_changes(basic, smtp_server) -> None:
    from .smtpserver import free_port

    c = make(basic, smtp_server, rows=PEOPLE[:3])
    wrong = (c.folder / "campaign.yaml").read_text().replace(
        f"port: {smtp_server.port}", f"port: {free_port()}")
    right = (c.folder / "campaign.yaml").read_text()
    (c.folder / "campaign.yaml").write_text(wrong)
    assert send(c).exit_code == 2  # a wrong port: nobody was sent anything
    (c.root / "templates" / "mail.html").write_text("<p>Better {{ name }}</p>")
    (c.folder / "campaign.yaml").write_text(right)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert "Better Person 0" in smtp_server.handler.received[0].content.decode()


def test_a_declined_confirmation_is_no_version_sent(basic, smtp_server) -> None:
    import pty

    c = make(basic, smtp_server, rows=PEOPLE[:3])
    leader, follower = pty.openpty()
    try:  # on a terminal, the question is asked, and answered no
        process = subprocess.Popen(
            [sys.executable, "-m", "mailmerge", "send", str(c.folder / "campaign.yaml")],
            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        read_until(process, b"Send now?")
        os.write(leader, b"n\n")
        finish(process)
    finally:
        os.close(leader)
        os.close(follower)
    assert process.returncode == 1 and smtp_server.handler.received == []
    (c.root / "templates" / "mail.html").write_text("<p>Better {{ name }}</p>")
    result = send(c)
    assert result.exit_code == 0, result.output


def test_delivery_settings_are_no_change_to_the_messages(basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    assert send(c, "--limit", "2").exit_code == 1
    text = (c.folder / "campaign.yaml").read_text()
    (c.folder / "campaign.yaml").write_text(
        text.replace("  timeout: 5\n", "  timeout: 7\n  concurrency: 2\n  rate: 100/second\n")
        + "# a comment\nwhere: \"name != 'nobody'\"\n")
    result = send(c)
    assert result.exit_code == 0, result.output
    assert len(smtp_server.handler.received) == 5


def included(c: CampaignDir) -> None:
    c.file("templates/mail.html", '{% extends "layout.html" %}{% block body %}'
                                  '{% include "part.html" %}{% endblock %}')
    c.file("templates/layout.html", '<html><head><link rel="stylesheet" href="style.css">'
                                    '</head><body>{% block body %}{% endblock %}'
                                    '<img src="logo.png" alt="logo"></body></html>')
    c.file("templates/part.html", '{% import "macros.html" as m %}<p>{{ m.hi(name) }}</p>')
    c.file("templates/macros.html", "{% macro hi(name) %}Hi {{ name }}{% endmacro %}")
    c.file("templates/style.css", "p { color: #123456; }")
    c.file("templates/logo.png", _PNG)
    c.file("campaign/terms.txt", "terms, version 1")


_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360f8ffff3f0005fe02fe0dc7e6"
                     "d00000000049454e44ae426082")


def test_every_file_a_message_is_made_from_counts_as_a_change(basic, smtp_server) -> None:
    c = make(basic, smtp_server, extra="attachments: [terms.txt]\n")
    included(c)
    assert send(c, "--limit", "1").exit_code == 1
    edits = {"templates/part.html": "<p>Hello {{ name }}</p>",  # {% include %}
             "templates/macros.html": "{% macro hi(name) %}Hey {{ name }}{% endmacro %}",
             "templates/layout.html": "<html><body>{% block body %}{% endblock %}</body></html>",
             "templates/style.css": "p { color: #654321; }",  # linked, inlined
             "templates/logo.png": _PNG + b"\0",  # embedded
             "campaign/terms.txt": "terms, version 2"}  # attached
    for name, text in edits.items():
        before = (c.root / name).read_bytes()
        c.file(name, text)
        result = send(c, "--limit", "1")
        assert result.exit_code == 2 and CHANGED in result.output, (name, result.output)
        assert "1 recipient got the earlier version" in result.output
        c.file(name, before)
    assert send(c, "--limit", "1").exit_code == 1  # as it was: the same version


def test_a_template_named_by_an_expression_counts_its_folder_not_the_data(basic,
                                                                         smtp_server) -> None:
    """A name known only when rendering: every file of the templates' folder counts,
    but not the sheet, the journal or the campaign file's delivery settings there."""
    c = make(basic, smtp_server, rows=[["email", "name", "part"],
                                       *[[f"p{i}@example.org", "P", "part.html"] for i in range(3)]])
    c.file("templates/mail.html", "{% include part %}")
    c.file("templates/part.html", "<p>Hi {{ name }}</p>")
    text = (c.folder / "campaign.yaml").read_text()
    (c.folder / "campaign.yaml").write_text(  # everything in one folder
        text.replace("../templates/", "").replace("recipients: people.csv",
                                                  "recipients: people.csv\n"))
    for name in ("mail.html", "part.html"):
        (c.folder / name).write_bytes((c.root / "templates" / name).read_bytes())
    assert send(c, "--limit", "1").exit_code == 1
    c.csv([["email", "name", "part"],
           *[[f"p{i}@example.org", "P", "part.html"] for i in range(4)]])  # a row more
    assert send(c, "--limit", "1").exit_code == 1  # journal and sheet changed: no change
    (c.folder / "part.html").write_text("<p>Hello {{ name }}</p>")
    result = send(c)
    assert result.exit_code == 2 and CHANGED in result.output, result.output


def test_a_journal_begun_by_an_earlier_version_resumes_without_allow_changes(
        basic, smtp_server) -> None:
    c = make(basic, smtp_server)
    assert send(c, "--limit", "2").exit_code == 1
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    with db:  # as an earlier version left it: its own fingerprint, of the files
        import hashlib
        digest = hashlib.sha256()
        for path in (c.folder / "campaign.yaml", c.root / "templates" / "mail.html"):
            digest.update(path.read_bytes() + b"\0")
        db.execute("DELETE FROM meta WHERE name = 'version'")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (digest.hexdigest(),))
    db.close()
    assert send(c, "--limit", "1").exit_code == 1  # unchanged since: resumes
    (c.root / "templates" / "mail.html").write_text("<p>New {{ name }}</p>")
    result = send(c)
    assert result.exit_code == 2 and CHANGED in result.output, result.output
    assert "3 recipients got the earlier version" in result.output


def test_ctrl_c_at_the_confirmation_says_how_to_resume(basic, smtp_server) -> None:
    """click makes a Ctrl-C at a prompt an "Aborted!" with exit code 1, the code of
    rows with problems; it is an interruption like any other."""
    import pty

    c = make(basic, smtp_server, rows=PEOPLE[:3])
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailmerge", "send", str(c.folder / "campaign.yaml")],
            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        read_until(process, b"Send now?")
        process.send_signal(signal.SIGINT)
        output = finish(process)
    finally:
        os.close(leader)
        os.close(follower)
    assert process.returncode == 130, output
    assert output.endswith("Interrupted. Run the same command again to resume (mailmerge send "
                           f"{c.folder / 'campaign.yaml'}).\n")
    assert smtp_server.handler.received == []


def test_invalid_rows_an_earlier_version_recorded_are_judged_again(basic, smtp_server) -> None:
    c = make(basic, smtp_server, rows=PEOPLE[:3])
    assert send(c).exit_code == 0
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    with db:  # a ghost as the earlier version left it
        db.execute("INSERT INTO recipients (key, row, state, last_reply, created, updated, "
                   "seen_run) VALUES ('row 4', 4, 'failed', 'invalid: `to`: ...', 0, 0, 1)")
    db.close()
    c.csv([*PEOPLE[:3], ["fixed@example.org", "X"]])
    assert send(c).exit_code == 0
    assert sorted(journal_rows(c)) == ["fixed@example.org", "p0@example.org", "p1@example.org"]


def test_a_refused_login_is_said_once_whatever_the_connections(basic) -> None:
    server = Server(users={"news": "right"})
    try:
        c = make(basic, server, username="news", concurrency=3)
        result = send(c, env={"MAILMERGE_SMTP_PASSWORD": "wrong"})
    finally:
        server.stop()
    assert result.exit_code == 2, result.output
    assert result.output.count("refused the login") == 1, result.output
    assert {row[:2] for row in journal_rows(c).values()} == {("pending", 0)}


def test_another_service_on_the_port_stops_the_run_at_once(basic) -> None:
    """An IMAP server where the mail server was expected greets with '* OK': that is no
    passing fault, and no recipient is deferred for it."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def greet() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with client:
                client.sendall(b"* OK IMAP4rev1 ready\r\n")
                client.recv(1024)  # until the client hangs up

    threading.Thread(target=greet, daemon=True).start()
    try:
        c = basic(SMTP_BLOCK.format(port=port), rows=PEOPLE)
        done = send_process(c)
    finally:
        listener.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"Error: stopped: 127.0.0.1:{port} answered, but not as a "
                                  "mail server does (protocol error: the reply '* OK")
    assert done.stderr.count("\n") == 1
    assert {row[:2] for row in journal_rows(c).values()} == {("pending", 0)}
