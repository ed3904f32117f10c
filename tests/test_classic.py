"""`mailmerge import` on the classic tool's own files: the messages must read the same.

Each case in tests/data/classic/ holds the classic tool's three files and what its dry
run printed (made by make_cases.py with the classic tool itself). The imported campaign
is rendered by this tool, and both sets of messages are parsed back and compared: To,
Cc, Subject, the body text and the attachments.
"""

from __future__ import annotations

import email
import email.policy
import glob
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mailmerge import ConfigError, iter_messages, load_campaign
from mailmerge.campaign import Campaign
from mailmerge.classic import convert, import_classic
from mailmerge.cli import cli

from .conftest import parse, scanned_alone

CASES = Path(__file__).parent / "data" / "classic"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "classic_output.txt").is_file())


def classic_messages(folder: Path) -> list[EmailMessage]:
    """The messages of the classic dry run (`--output-format raw`)."""
    text = (folder / "classic_output.txt").read_text(encoding="utf-8")
    found = re.findall(r">>> message \d+\n(.*?)\n>>> message \d+ sent\n", text, re.S)
    messages = []
    for raw in found:
        message = email.message_from_string(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._skip += tag in ("style", "title", "head")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "title", "head")

    def handle_data(self, data: str) -> None:
        if self._skip <= 0:
            self.parts.append(data)


def visible(html: str) -> str:
    reader = _Text()
    reader.feed(html)
    return " ".join("".join(reader.parts).split())


def body(message: EmailMessage, kind: str) -> str | None:
    part = message.get_body((kind,))
    if part is None:
        return None
    text = part.get_content().replace("\r\n", "\n")
    return visible(text) if kind == "html" else text.rstrip()


def attachments(message: EmailMessage) -> list[tuple[str, object]]:
    return sorted((part.get_filename() or "", part.get_payload(decode=True))
                  for part in message.walk()
                  if part.get_content_disposition() == "attachment")


def addresses(message: EmailMessage, name: str) -> list[str]:
    header = message[name]
    return sorted(a.addr_spec for a in header.addresses) if header is not None else []


@pytest.mark.parametrize("case", NAMES)
def test_an_imported_classic_campaign_makes_the_same_messages(case: str,
                                                              tmp_path: Path) -> None:
    classic = tmp_path / "classic"
    shutil.copytree(CASES / case, classic)
    imported = import_classic(classic, tmp_path / "new")
    theirs = classic_messages(classic)
    outcomes = list(iter_messages(load_campaign(tmp_path / "new" / "campaign.yaml")))
    assert all(o.built is not None for o in outcomes), [str(e) for o in outcomes
                                                        for e in o.errors]
    ours = [parse(o.built.data) for o in outcomes if o.built is not None]
    assert len(ours) == len(theirs) >= 1
    for mine, their in zip(ours, theirs, strict=True):
        assert addresses(mine, "To") == addresses(their, "To")
        assert addresses(mine, "Cc") == addresses(their, "Cc")
        assert mine["Subject"] == their["Subject"]
        assert mine["From"] == their["From"]
        their_text = body(their, "plain")
        if their_text is not None:
            assert body(mine, "plain") == their_text
        their_html = body(their, "html")
        if their_html is not None:
            assert body(mine, "html") == their_html
        shown = set(imported_images(tmp_path / "new"))
        assert attachments(mine) == [a for a in attachments(their) if a[0] not in shown]
        for name in shown:  # embedded instead: the same bytes, as an inline image
            data = (tmp_path / "new" / name).read_bytes()
            assert any(p.get_content() == data and p["Content-ID"]
                       for p in mine.walk() if p.get_content_maintype() == "image")
    assert not (set(imported.todo) and case in ("html", "html_plaintext", "bom_database"))


def imported_images(folder: Path) -> list[str]:
    campaign = yaml.safe_load((folder / "campaign.yaml").read_text())
    listed = set(campaign.get("attachments", []))
    return [p.name for p in folder.iterdir() if p.suffix in (".jpg", ".png")
            and p.name not in listed]


def campaign_of(case: str, tmp_path: Path) -> tuple[dict[str, object], list[str]]:
    imported = import_classic(CASES / case, tmp_path / case)
    return yaml.safe_load((tmp_path / case / "campaign.yaml").read_text()), imported.todo


def test_the_server_configuration_carries_over(tmp_path: Path) -> None:
    html, todo = campaign_of("html", tmp_path)
    assert html["smtp"] == {"host": "mail.example.org", "port": 587, "security": "starttls",
                            "username": "someone@example.org", "rate": "30/minute"}
    assert html["reply_to"] == "Help <help@example.org>" and todo == []
    ssl, _ = campaign_of("html_plaintext", tmp_path)
    assert ssl["smtp"] == {"host": "mail.example.org", "port": 465, "security": "ssl",
                           "username": "me"}
    never, _ = campaign_of("bom_database", tmp_path)
    assert never["smtp"] == {"host": "localhost", "port": 25, "security": "none"}


def test_plain_and_xoauth_are_carried_over_with_what_to_do(tmp_path: Path) -> None:
    plain, todo = campaign_of("attachments", tmp_path)
    assert plain["smtp"]["security"] == "starttls"  # type: ignore[index]
    assert any("`security = PLAIN` logged in to mail.example.org without encryption" in t
               for t in todo)
    oauth, todo = campaign_of("markdown", tmp_path)
    assert oauth["smtp"] == {"host": "smtp.office365.com", "port": 587,
                             "security": "starttls", "auth": "xoauth2",
                             "token_command": "printenv MAILMERGE_SMTP_TOKEN",
                             "username": "me@example.org"}
    assert any("export MAILMERGE_SMTP_TOKEN=" in t for t in todo)
    assert oauth["templates"] == {"markdown": "mail.md", "line_breaks": True}
    assert oauth["bcc"] == "archive@example.org"


def test_the_bcc_of_a_classic_template_goes_in_the_envelope_only(tmp_path: Path) -> None:
    import_classic(CASES / "markdown", tmp_path / "new")
    outcome = next(iter_messages(load_campaign(tmp_path / "new" / "campaign.yaml")))
    assert outcome.built is not None
    assert "archive@example.org" in outcome.built.envelope_to
    assert b"archive@example.org" not in outcome.built.data


TEMPLATE = """\
TO: {{email}}
FROM: me@example.org
ATTACHMENT: ~/report.pdf
ATTACHMENT: /etc/hosts
ATTACHMENT:
ATTACHMENT: ../outside.txt
X-Campaign: spring-{{ year }}

Hello {{name}}
"""


def test_what_cannot_carry_over_is_listed_with_what_to_do() -> None:
    converted = convert(TEMPLATE, None, name="x", sheet="people.csv")
    text = "\n".join(converted.todo)
    assert "has no SUBJECT: write one in campaign.yaml" in text
    assert "ATTACHMENT ~/report.pdf: outside the classic folder. Copy the file into" in text
    assert "ATTACHMENT /etc/hosts: outside" in text and "ATTACHMENT ../outside.txt" in text
    assert "an empty ATTACHMENT line was left out" in text
    assert "no mailmerge_server.conf" in text
    campaign = yaml.safe_load(converted.campaign)
    assert campaign["subject"] == "" and "attachments" not in campaign
    assert campaign["headers"] == {"X-Campaign": "spring-{{ year }}"}
    assert converted.templates == {"mail.txt": "Hello {{name}}\n"}


def test_logic_among_the_header_fields_is_named() -> None:
    converted = convert("TO: {{email}}\nFROM: a@example.org\n{% if vip %}\nCC: boss@example.org"
                        "\n{% endif %}\nSUBJECT: Hi\n\nBody\n", None, name="x", sheet="p.csv")
    assert any("the line '{% if vip %}' among the header fields is not a field" in t
               for t in converted.todo)


def test_import_refuses_a_folder_that_is_not_empty_and_names_a_missing_file(
        tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        import_classic(CASES / "sample", tmp_path / "new")
    assert (tmp_path / "new" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"the classic template file .*mailmerge_template"
                                          r"\.txt does not exist"):
        import_classic(tmp_path / "empty", tmp_path / "new2")


def test_the_import_command_lists_to_dos_checks_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["import", str(CASES / "attachments"),
                                      str(tmp_path / "new")], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert f"  created {tmp_path / 'new' / 'campaign.yaml'}" in result.output
    assert "To do: mailmerge_server.conf: `security = PLAIN`" in result.output
    assert "Checked: 2 rows, 2 messages ok." in result.output
    clean = CliRunner().invoke(cli, ["import", str(CASES / "html"), str(tmp_path / "h")],
                               catch_exceptions=False)
    assert clean.exit_code == 0, clean.output
    assert "To do" not in clean.output


def test_the_classic_samples_placeholders_are_to_dos(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["import", str(CASES / "sample"), str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert ("To do: mailmerge_server.conf: username is 'YOUR_USERNAME_HERE', the classic "
            "sample's placeholder (YOUR_USERNAME_HERE): put your own in `smtp.username:` in "
            "campaign.yaml") in result.output
    assert ("To do: mailmerge_template.txt: FROM is 'My Self <myself@mydomain.com>', the "
            "classic sample's placeholder (mydomain.com): put your own in `from:`") in result.output
    assert ("To do: mailmerge_database.csv holds the classic sample's rows (with "
            "mydomain.com): put your own recipients in it") in result.output
    text = (tmp_path / "s" / "campaign.yaml").read_text()
    assert ('  # TODO: "YOUR_USERNAME_HERE" is the classic sample\'s placeholder: write your '
            'own\n  username: "YOUR_USERNAME_HERE"\n') in text
    assert ('# TODO: "mydomain.com" is the classic sample\'s placeholder: write your own\n'
            'from: "My Self <myself@mydomain.com>"\n') in text


# Hostile classic files: every value written into campaign.yaml stays that value


@pytest.mark.parametrize("attachment", ["a\x85- b.pdf", "x\x80y.pdf", "a\u2028b.pdf",
                                        'q"uote\\d.pdf', "#not-a-comment.pdf", "*alias.pdf"])
def test_an_attachment_name_stays_one_value(attachment: str) -> None:
    converted = convert(f"TO: {{{{email}}}}\nFROM: a@example.org\nSUBJECT: s\n"
                        f"ATTACHMENT: {attachment}\n\nHi\n", None, name="x", sheet="p.csv")
    assert yaml.safe_load(converted.campaign)["attachments"] == [glob.escape(attachment)]


def test_file_names_in_the_comment_cannot_add_keys() -> None:
    converted = convert("TO: {{email}}\nFROM: a@example.org\nSUBJECT: s\n\nHi\n",
                        "[smtp_server]\nhost = localhost\n", name="x",
                        sheet='p\x85where: "False"\x85#.csv',
                        template_name="t\u2028headers: {X-Injected: yes}\u2028#.txt")
    campaign = yaml.safe_load(converted.campaign)
    assert "where" not in campaign and "headers" not in campaign
    assert campaign["recipients"] == 'p\x85where: "False"\x85#.csv'


@pytest.mark.parametrize("folder", ["yes", "on", "no", "null", "true", "~", "0x10", "1e3"])
def test_a_folder_named_like_a_yaml_word_makes_a_campaign_that_loads(
        tmp_path: Path, folder: str) -> None:
    import_classic(CASES / "html", tmp_path / folder)
    campaign = load_campaign(tmp_path / folder / "campaign.yaml")
    assert campaign.name == (folder.strip("~") or "campaign")


def test_header_names_that_are_yaml_syntax_carry_over() -> None:
    converted = convert("TO: {{email}}\nFROM: a@example.org\nSUBJECT: s\n#X-Note: n\n"
                        "*X-Tag: t\n!X-Flag: f\n&X-Anchor: a\nX-Twice: 1\nX-Twice: 2\n"
                        "Sender: s@example.org\nX-" + "a" * 70 + ": long\n\nHi\n",
                        None, name="x", sheet="p.csv")
    campaign = parse_campaign(converted.campaign)
    assert campaign.headers == (("#X-Note", "n"), ("*X-Tag", "t"), ("!X-Flag", "f"),
                                ("&X-Anchor", "a"), ("X-Twice", "1"))
    assert ("mailmerge_template.txt: X-Twice is given 2 times; the first was kept under "
            "`headers:`") in converted.todo
    assert ("mailmerge_template.txt: the header field 'Sender' was left out: mailmerge sets "
            "it itself (see the campaign keys in the README)") in converted.todo
    assert any("the header field 'X-aaa" in t and "at most 64 printable ASCII" in t
               for t in converted.todo)


def parse_campaign(text: str) -> Campaign:
    from mailmerge.campaign import parse_campaign as parse
    return parse(text, Path("/nowhere/campaign.yaml"))


@pytest.mark.parametrize("which, what", [("mailmerge_template.txt", "template file"),
                                         ("mailmerge_server.conf", "config file"),
                                         ("mailmerge_database.csv", "database")])
def test_a_fifo_among_the_classic_files_is_refused(tmp_path: Path, which: str,
                                                   what: str) -> None:
    classic = tmp_path / "classic"
    shutil.copytree(CASES / "html", classic)
    (classic / which).unlink()
    os.mkfifo(classic / which)
    done = subprocess.run([sys.executable, "-m", "mailmerge", "import", str(classic),
                           str(tmp_path / "new")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert (f"Error: the classic {what} {classic / which} is not a regular file; give the "
            f"{what} itself, not a pipe, device or folder\n") == done.stderr
    assert not (tmp_path / "new").exists()


def test_a_failed_import_leaves_nothing_to_block_the_retry(tmp_path: Path) -> None:
    classic = tmp_path / "classic"
    shutil.copytree(CASES / "html", classic)
    (classic / "mailmerge_database.csv").rename(classic / "campaign.yaml")
    with pytest.raises(ConfigError, match="cannot write into"):
        import_classic(classic, tmp_path / "new", database=classic / "campaign.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classic"]
    (classic / "campaign.yaml").rename(classic / "mailmerge_database.csv")
    import_classic(classic, tmp_path / "new")
    assert load_campaign(tmp_path / "new" / "campaign.yaml").name == "new"


def test_the_database_is_copied_a_block_at_a_time(tmp_path: Path) -> None:
    classic = tmp_path / "classic"
    shutil.copytree(CASES / "html", classic)
    sheet = classic / "mailmerge_database.csv"
    rows = sheet.read_bytes().splitlines(keepends=True)
    block = rows[-1] * 1024
    with open(sheet, "ab") as handle:
        handle.writelines(block for _ in range(48 * 1024 * 1024 // len(block)))
    tracemalloc.start()
    try:
        import_classic(classic, tmp_path / "new")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "new" / sheet.name).read_bytes() == sheet.read_bytes()
    assert peak < 8 * 1024 * 1024, peak  # the sheet is 48 MB


def test_a_template_of_unclosed_images_converts_in_linear_time() -> None:
    """In a process of its own, stopped after 30 s: the images a body shows were found
    with a regular expression that took 44 s on a crafted template (these take minutes so)."""
    code = ("from mailmerge.classic import convert;"
            "body = '<img ' * 40_000 + '![' * 60_000 + '![x](a.png)';"
            "c = convert('TO: a@example.org\\nFROM: b@example.org\\nSUBJECT: s\\n"
            "ATTACHMENT: a.png\\n\\n' + body, None, name='x', sheet='p.csv');"
            "print(c.images)")
    done = scanned_alone(code)
    assert done.stdout == "['a.png']\n", done.stderr


def test_a_literal_attachment_name_is_not_read_as_a_glob_or_jinja(tmp_path: Path) -> None:
    """`[DRAFT]` in a file name was a character class once imported: the import's own check
    found no file, and a file `T report.pdf` would have been attached instead; a `{{` in a
    name would have been rendered as Jinja."""
    classic = tmp_path / "classic"
    shutil.copytree(CASES / "attachments", classic)
    names = ["[DRAFT] report.pdf", "odd {{ name.txt", "what? *.txt", "{{number}} [v2].txt"]
    decoys = ["T report.pdf", "what_ x.txt", "17 2.txt", "1 v.txt"]
    for name in names[:3] + decoys + ["17 [v2].txt", "1 [v2].txt"]:
        (classic / name).write_text(f"this is {name}")
    template = classic / "mailmerge_template.txt"
    text = template.read_text()
    template.write_text(text.replace("ATTACHMENT: attachment_1.txt\n", "".join(
        f"ATTACHMENT: {name}\n" for name in names)))
    result = CliRunner().invoke(cli, ["import", str(classic), str(tmp_path / "new")],
                                catch_exceptions=False)
    assert "Checked: 2 rows, 2 messages ok." in result.output, result.output
    assert not any((tmp_path / "new" / decoy).exists() for decoy in decoys)
    for outcome in iter_messages(load_campaign(tmp_path / "new" / "campaign.yaml")):
        assert outcome.built is not None
        message = parse(outcome.built.data)
        got = sorted(name for name, _ in attachments(message))
        number = "17" if "myself" in str(message["To"]) else "1"
        assert got == sorted([*names[:3], f"{number} [v2].txt", "attachment_2.pdf",
                              f"attachment_{number}.txt"])


def test_an_import_removes_what_a_killed_import_left(tmp_path: Path) -> None:
    """SIGKILL during an import left its hidden work folder beside the target for ever;
    the next import removes those whose process is gone, and keeps one whose runs."""
    code = ("import os, signal, sys, tempfile; from pathlib import Path;"
            "import mailmerge.classic as c; target = Path(sys.argv[1]);"
            "c.shutil.copyfileobj = lambda *a: os.kill(os.getpid(), signal.SIGKILL);"
            "c.import_classic(Path(sys.argv[2]), target)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "new"),
                           str(CASES / "html")], capture_output=True, check=False)
    assert done.returncode == -9, done.stderr
    left, = (p.name for p in tmp_path.iterdir())
    assert left.startswith(".new.") and left.endswith(".importing")
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as running:
        busy = tmp_path / f".other.{running.pid}.abcd1234.importing"
        busy.mkdir()
        import_classic(CASES / "html", tmp_path / "new")
        assert running.stdin is not None
        running.stdin.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name, "new"]


@pytest.mark.parametrize("which", ["mailmerge_template.txt", "mailmerge_server.conf"])
def test_a_huge_template_or_config_is_refused_without_reading_it_whole(
        tmp_path: Path, which: str) -> None:
    """The template and the configuration were read whole, however large."""
    classic = tmp_path / "classic"
    shutil.copytree(CASES / "html", classic)
    with open(classic / which, "ab") as handle:
        handle.writelines(b"#" * 2**20 + b"\n" for _ in range(40))
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            import_classic(classic, tmp_path / "new")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    what = "template" if "template" in which else "config"
    assert str(info.value).startswith(
        f"the classic {what} file {classic / which} is larger than 16 MB")
    assert peak < 20 * 2**20, peak  # 40 MB were there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classic"]


def test_an_import_whose_database_has_a_huge_line_says_where(tmp_path: Path) -> None:
    """The import's check read a 200 MB line whole (617 MB) before refusing it."""
    classic = tmp_path / "classic"
    shutil.copytree(CASES / "html", classic)
    with open(classic / "mailmerge_database.csv", "ab") as handle:
        handle.writelines(b"x" * 2**20 for _ in range(20))
    tracemalloc.start()
    try:
        result = CliRunner().invoke(cli, ["import", str(classic), str(tmp_path / "new")],
                                    catch_exceptions=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows = len((classic / "mailmerge_database.csv").read_bytes().splitlines())
    assert result.exit_code == 1, result.output
    assert (f"  {tmp_path / 'new' / 'mailmerge_database.csv'}, row {rows}: a line is longer "
            "than 16 MB") in result.output
    assert peak < 40 * 2**20, peak
