"""`mailmerge drafts` against a real Dovecot: stored once, replaced on request, never sent."""

from __future__ import annotations

import imaplib
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge.cli import cli
from mailmerge.sending.mailbox import decode_folder_name, folder_name

from .conftest import content, parse

PEOPLE = [["email", "name", "cc"], ["ann@example.org", "Ann", ""],
          ["bob@example.org", "Bob", "boss@example.org"], ["cy@example.org", "Cy", ""]]


def campaign(basic, port: int, extra: str = "", text: str = "Hello {{ name }}\n"):
    return basic(f"imap: {{host: 127.0.0.1, port: {port}, security: none, username: news"
                 f"{extra}}}\ncc: \"{{{{ cc }}}}\"\nbcc: archive@acme.example\n",
                 text=text, rows=PEOPLE)


def drafts(c, *args: str, password: str = "imap-secret"):
    return CliRunner().invoke(cli, ["drafts", str(c.folder / "campaign.yaml"), *args],
                              env={"MAILMERGE_IMAP_PASSWORD": password},
                              catch_exceptions=False)


def stored(server, folder: str = "Drafts") -> list[tuple[bytes, bytes]]:
    """(flags, message) of every message in the folder."""
    with imaplib.IMAP4("127.0.0.1", server.port) as imap:
        imap.login(server.user, server.password)
        status, _ = imap.select(folder_name(folder), readonly=True)
        assert status == "OK"
        _, data = imap.search(None, "ALL")
        found = []
        for number in data[0].split():
            _, parts = imap.fetch(number, "(FLAGS BODY.PEEK[])")
            found.append((parts[0][0], parts[0][1]))
        return found


def test_each_row_becomes_one_draft_and_a_second_run_adds_none(basic, dovecot,
                                                               tmp_path: Path) -> None:
    c = campaign(basic, dovecot.port)
    result = drafts(c)
    assert result.exit_code == 0, result.output
    assert result.output == "In 'Drafts' at 127.0.0.1: 3 drafts stored.\n"
    messages = stored(dovecot)
    assert len(messages) == 3
    for flags, _ in messages:
        assert b"\\Draft" in flags and b"\\Seen" in flags
    bob = parse(next(d for _, d in messages if b"To: bob@example.org" in d))
    assert bob["Cc"] == "boss@example.org"
    assert bob["Bcc"] == "archive@acme.example"  # for the mail client to send to
    assert bob["Message-ID"].startswith("<mm-draft.") and "DKIM-Signature" not in bob
    assert content(bob, "plain") == "Hello Bob\n"
    assert dovecot.folder_count("Sent") == 0 and dovecot.folder_count("INBOX") == 0
    assert not list(c.folder.glob("*.journal.sqlite"))  # nothing sent, no journal

    again = drafts(c)
    assert again.exit_code == 0, again.output
    assert again.output == "In 'Drafts' at 127.0.0.1: 0 drafts stored, 3 already there.\n"
    assert len(stored(dovecot)) == 3


def test_a_changed_message_is_named_and_replaced_only_with_replace(basic, dovecot) -> None:
    c = campaign(basic, dovecot.port)
    assert drafts(c).exit_code == 0
    (c.root / "templates/mail.txt").write_text("Good morning {{ name }}\n")
    kept = drafts(c, "--row", "3")
    assert kept.exit_code == 1
    assert "1 draft of rows 3 changed since stored" in kept.output
    assert "--replace" in kept.output
    bodies = sorted(content(parse(d), "plain") for _, d in stored(dovecot))
    assert bodies == ["Hello Ann\n", "Hello Bob\n", "Hello Cy\n"]

    replaced = drafts(c, "--replace", "--row", "3")
    assert replaced.exit_code == 0, replaced.output
    assert "0 drafts stored, 1 replaced" in replaced.output
    bodies = sorted(content(parse(d), "plain") for _, d in stored(dovecot))
    assert bodies == ["Good morning Bob\n", "Hello Ann\n", "Hello Cy\n"]
    everything = drafts(c, "--replace")
    assert "0 drafts stored, 2 replaced, 1 already there" in everything.output
    assert len(stored(dovecot)) == 3


def test_other_drafts_in_the_folder_are_left_alone(basic, dovecot) -> None:
    mine = (b"From: me@example.org\r\nTo: friend@example.org\r\nSubject: my own draft\r\n"
            b"Message-ID: <mm-draft-lookalike@example.org>\r\n\r\nHi\r\n")
    dovecot.append(mine, folder="Drafts")
    c = campaign(basic, dovecot.port)
    assert drafts(c, "--replace").exit_code == 0
    (c.root / "templates/mail.txt").write_text("Changed {{ name }}\n")
    assert drafts(c, "--replace").exit_code == 0
    subjects = sorted(parse(d)["Subject"] for _, d in stored(dovecot))
    assert subjects == ["Hi Ann", "Hi Bob", "Hi Cy", "my own draft"]


def test_a_folder_that_does_not_exist_is_named_with_the_folders_there(basic, dovecot) -> None:
    c = campaign(basic, dovecot.port, extra=", drafts: Entwürfe")
    result = drafts(c)
    assert result.exit_code == 2
    assert ("Error: the IMAP folder 'Entwürfe' does not exist at 127.0.0.1; set "
            "`imap.drafts` to one of its folders: Drafts, INBOX, Sent") in result.output
    assert dovecot.folder_count("Drafts") == 0


def test_a_non_ascii_folder_is_written_in_modified_utf7(basic, dovecot) -> None:
    with imaplib.IMAP4("127.0.0.1", dovecot.port) as imap:
        imap.login(dovecot.user, dovecot.password)
        assert imap.create(folder_name("Entwürfe"))[0] == "OK"
        _, listing = imap.list()
    assert any(b"Entw&APw-rfe" in line for line in listing)
    assert decode_folder_name("Entw&APw-rfe") == "Entwürfe"
    c = campaign(basic, dovecot.port, extra=", drafts: Entwürfe")
    result = drafts(c, "--limit", "1")
    assert result.exit_code == 0, result.output
    assert len(stored(dovecot, "Entwürfe")) == 1


def test_rows_with_problems_get_no_draft_and_a_wrong_password_is_a_clear_error(
        basic, dovecot) -> None:
    c = campaign(basic, dovecot.port, text="Hello {{ name }}{% if name == 'Cy' %}{{ nope }}"
                                           "{% endif %}\n")
    result = drafts(c)
    assert result.exit_code == 1
    assert re.search(r"mail\.txt, line 1, row 4: 'nope' is undefined", result.output)
    assert "2 drafts stored" in result.output
    wrong = drafts(c, password="not-the-Pa55word")
    assert wrong.exit_code == 2
    assert "Error: the IMAP server at 127.0.0.1 failed" in wrong.output
    assert "not-the-Pa55word" not in wrong.output  # a password never shows


def test_drafts_needs_an_imap_section(basic) -> None:
    c = basic()
    result = CliRunner().invoke(cli, ["drafts", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 2
    assert "drafts go to an IMAP mailbox, and the campaign has no `imap:`" in result.output


def test_a_signed_campaign_stores_its_drafts_unsigned(basic, dovecot, tmp_path: Path) -> None:
    import subprocess

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    c = campaign(basic, dovecot.port)
    (c.folder / "dkim.pem").write_bytes(key.read_bytes())
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text() + "dkim: {domain: acme.example, selector: s1, "
                                           "key_file: dkim.pem}\n")
    preview = CliRunner().invoke(cli, ["preview", str(config), "-o", str(tmp_path / "o"),
                                       "--row", "2"])
    assert preview.exit_code == 0, preview.output
    assert (tmp_path / "o").glob("*.eml").__next__().read_bytes().startswith(
        b"DKIM-Signature:")  # the campaign does sign
    result = drafts(c)
    assert result.exit_code == 0, result.output
    for _, data in stored(dovecot):
        assert b"DKIM-Signature" not in data
        assert data.startswith(b"Bcc: archive@acme.example\r\n")
        assert parse(data)["From"] == "Acme <news@acme.example>"


# Dovecot as a server without UIDPLUS (RFC 4315) or MOVE (RFC 6851) advertises itself
WITHOUT_UIDPLUS = ("imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
                   "LITERAL+ NAMESPACE\n")


@pytest.fixture
def plain_dovecot(monkeypatch: pytest.MonkeyPatch):
    """A real Dovecot that says it has neither UIDPLUS nor MOVE."""
    from . import imapserver

    if imapserver.DOVECOT is None:
        pytest.skip("needs the dovecot-imapd package")
    monkeypatch.setattr(imapserver, "CONFIG", imapserver.CONFIG + WITHOUT_UIDPLUS)
    server = imapserver.Dovecot()
    yield server
    server.stop()


def deleted_but_kept(server, folder: str) -> None:
    """Put a message of the user's in ``folder``, marked \\Deleted as mail clients leave
    what they delete until the folder is expunged."""
    with imaplib.IMAP4("127.0.0.1", server.port) as imap:
        imap.login(server.user, server.password)
        status, _ = imap.append(folder_name(folder), r"(\Deleted)", None,
                                b"From: me@example.org\r\nSubject: mine, marked deleted\r\n"
                                b"\r\nstill wanted\r\n")
        assert status == "OK"


def test_replace_without_uidplus_is_refused_and_expunges_nothing(basic, plain_dovecot) -> None:
    with imaplib.IMAP4("127.0.0.1", plain_dovecot.port) as imap:
        imap.login(plain_dovecot.user, plain_dovecot.password)
        assert b"UIDPLUS" not in b" ".join(imap.capability()[1])
    c = campaign(basic, plain_dovecot.port)
    assert drafts(c).exit_code == 0
    deleted_but_kept(plain_dovecot, "Drafts")
    (c.root / "templates/mail.txt").write_text("Good morning {{ name }}\n")
    refused = drafts(c, "--replace")
    assert refused.exit_code == 2, refused.output
    assert refused.output == (
        "Error: the IMAP server at 127.0.0.1 cannot delete one message alone (it lacks "
        "UIDPLUS), so the old draft of row 2 is not replaced: a plain EXPUNGE would also "
        "remove every other message marked deleted in 'Drafts'; delete the old drafts of "
        "the changed rows in your mail client and run again without --replace (the drafts "
        "stored so far stay)\n")
    subjects = sorted(parse(d)["Subject"] for _, d in stored_with_deleted(plain_dovecot))
    assert subjects == ["Hi Ann", "Hi Bob", "Hi Cy", "mine, marked deleted"]


def stored_with_deleted(server, folder: str = "Drafts") -> list[tuple[bytes, bytes]]:
    """(flags, message) of every message in the folder, those marked \\Deleted too."""
    with imaplib.IMAP4("127.0.0.1", server.port) as imap:
        imap.login(server.user, server.password)
        assert imap.select(folder_name(folder), readonly=True)[0] == "OK"
        _, data = imap.search(None, "ALL")
        return [(parts[0][0], parts[0][1]) for number in data[0].split()
                for _, parts in [imap.fetch(number, "(FLAGS BODY.PEEK[])")]]
