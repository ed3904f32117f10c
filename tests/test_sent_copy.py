"""A copy of every sent message in the Sent folder of a real Dovecot, resumable."""

from __future__ import annotations

import sqlite3

from click.testing import CliRunner

from mailmerge.cli import cli

from .conftest import SMTP_BLOCK

PEOPLE = [["email", "name"], *[[f"s{i}@example.org", f"S {i}"] for i in range(4)]]


def campaign(basic, smtp_port: int, imap_port: int, folder: str = "Sent"):
    return basic(SMTP_BLOCK.format(port=smtp_port) +
                 f"imap: {{host: 127.0.0.1, port: {imap_port}, security: none, "
                 f"username: news, folder: '{folder}'}}\n", rows=PEOPLE)


def send(c, password: str = "imap-secret"):
    return CliRunner().invoke(cli, ["send", str(c.folder / "campaign.yaml"), "--yes"],
                              env={"MAILMERGE_IMAP_PASSWORD": password}, catch_exceptions=False)


def spool(c) -> list[str]:
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    try:
        return [row[0] for row in db.execute("SELECT key FROM spool")]
    finally:
        db.close()


def test_every_sent_message_is_copied_to_sent_with_the_same_bytes(basic, smtp_server,
                                                                   dovecot) -> None:
    c = campaign(basic, smtp_server.port, dovecot.port)
    result = send(c)
    assert result.exit_code == 0, result.output
    assert "Copies in the Sent folder: 4 saved" in result.output
    sent = sorted(m.content for m in smtp_server.handler.received)
    copies = sorted(m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in dovecot.messages())
    assert len(copies) == 4
    assert [c_.rstrip(b"\r\n") for c_ in copies] == [s.rstrip(b"\r\n") for s in sent]
    assert spool(c) == []
    assert send(c).exit_code == 0  # nothing more to send, nothing saved twice
    assert len(dovecot.messages()) == 4


def test_a_failing_imap_server_never_blocks_sending_and_the_copies_wait(basic, smtp_server,
                                                                         dovecot) -> None:
    c = campaign(basic, smtp_server.port, dovecot.port)
    result = send(c, password="wrong")
    assert result.exit_code == 0, result.output
    assert len(smtp_server.handler.received) == 4
    assert "Copies in the Sent folder: 0 saved, 4 not saved (" in result.output
    assert "AUTHENTICATIONFAILED" in result.output or "failed" in result.output.lower()
    assert len(spool(c)) == 4 and dovecot.messages() == []
    result = send(c)  # the next run saves what waited, once
    assert "Copies in the Sent folder: 4 saved" in result.output
    assert len(dovecot.messages()) == 4 and spool(c) == []
    assert len(smtp_server.handler.received) == 4


def test_a_copy_appended_just_before_a_crash_is_not_appended_again(basic, smtp_server,
                                                                    dovecot) -> None:
    c = campaign(basic, smtp_server.port, dovecot.port)
    assert send(c).exit_code == 0
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    with db:  # as if the run died after APPEND, before it took the copy off the spool
        key, message_id = db.execute("SELECT key, message_id FROM recipients LIMIT 1").fetchone()
        data = next(m for m in dovecot.messages() if message_id.encode() in m)
        db.execute("INSERT INTO spool (key, message_id, data) VALUES (?, ?, ?)",
                   (key, message_id, data))
    db.close()
    result = send(c)
    assert "Copies in the Sent folder: 1 saved" in result.output
    assert len(dovecot.messages()) == 4 and spool(c) == []
