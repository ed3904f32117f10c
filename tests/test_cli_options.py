"""Options as a new user types them: each does what it says, alone or refused.

An option that only means something together with another is a usage error alone, never
silently ignored (`send --row 5` once sent every row). Tests talk to a real aiosmtpd.
"""

from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge.cli import cli

from .conftest import SMTP_BLOCK, CampaignDir, parse
from .smtpserver import Server

PEOPLE = [["email", "name"], *[[f"p{i}@example.org", f"Person {i}"] for i in range(5)]]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def server():
    started = Server()
    yield started
    started.stop()


@pytest.fixture
def campaign(basic, server: Server) -> CampaignDir:
    return basic(SMTP_BLOCK.format(port=server.port), rows=PEOPLE)


def _path(c: CampaignDir) -> str:
    return str(c.folder / "campaign.yaml")


def test_send_row_without_to_sends_that_row_only(campaign: CampaignDir, server: Server) -> None:
    result = run("send", _path(campaign), "--yes", "--row", "4")
    assert result.exit_code == 0, result.output
    assert [r.rcpt_tos for r in server.handler.received] == [["p2@example.org"]]
    assert parse(server.handler.received[0].content)["Subject"] == "Hi Person 2"
    # the rows it left out are neither sent nor recorded: the next run sends them, once
    result = run("send", _path(campaign), "--yes")
    assert result.exit_code == 0, result.output
    assert server.handler.by_recipient() == {f"p{i}@example.org": 1 for i in range(5)}


def test_send_rows_past_the_end_of_the_sheet_send_nothing(campaign: CampaignDir,
                                                          server: Server) -> None:
    result = run("send", _path(campaign), "--yes", "--row", "3", "--row", "40")
    assert result.exit_code != 0
    assert "no row 40" in result.output
    assert server.handler.received == []


def test_send_dry_run_with_rows_writes_those_rows(campaign: CampaignDir, tmp_path: Path) -> None:
    out = tmp_path / "dry"
    result = run("send", _path(campaign), "--dry-run", "--row", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.eml"))) == 1


# (command, its options) that must be refused, and the words of the refusal
REFUSED = [
    (["send", "--out", "x"], "--out goes only with --dry-run"),
    (["send", "--to", "me@test.example", "--restart"], "--to does not go with --restart"),
    (["send", "--to", "me@test.example", "--skip-invalid"],
     "--to does not go with --skip-invalid"),
    (["send", "--to", "me@test.example", "--allow-changes"],
     "--to does not go with --allow-changes"),
    (["send", "--to", "me@test.example", "--resend-uncertain"],
     "--to does not go with --resend-uncertain"),
    (["send", "--to", "me@test.example", "--dry-run"], "--to does not go with --dry-run"),
    (["send", "--dry-run", "--restart"], "--dry-run does not go with --restart"),
    (["send", "--dry-run", "--resend-uncertain"],
     "--dry-run does not go with --resend-uncertain"),
    (["check", "--spam-rows", "5"], "--spam-rows goes only with --spam"),
    (["preview", "--port", "8000"], "--port goes only with --watch"),
    (["preview", "--print", "--limit", "3"], "--print does not go with --limit"),
    (["preview", "--print", "--out", "x"], "--print does not go with --out"),
    (["preview", "--print", "--open"], "--print does not go with --open"),
    (["preview", "--watch", "--jobs", "2"], "--watch does not go with --jobs"),
    (["preview", "--watch", "--print"], "--watch does not go with --print"),
    (["preview", "--watch", "--row", "2"], "--watch does not go with --row"),
    (["preview", "--eml"], "--eml goes only with --print"),
]


@pytest.mark.parametrize(("args", "said"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_an_option_that_needs_another_is_refused_alone(campaign: CampaignDir, server: Server,
                                                       tmp_path: Path, args: list[str],
                                                       said: str) -> None:
    command, *options = args
    options += ["--yes"] if command == "send" else []
    if "--watch" in options:  # in a process of its own: a watch not refused would go on
        done = subprocess.run([sys.executable, "-m", "mailmerge", command, _path(campaign),
                               *options], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        code, output = done.returncode, done.stdout + done.stderr
    else:
        result = run(command, _path(campaign), *options)
        code, output = result.exit_code, result.output
    assert code == 2, output
    assert said in output
    assert server.handler.received == []
    assert not (campaign.folder / "test.journal.sqlite").exists()
    assert not (tmp_path / "x").exists() and not (Path.cwd() / "x").exists()


def test_the_limit_of_send_says_it_counts_messages_of_this_run() -> None:
    text = run("send", "--help").output
    assert "Send at most N messages in this run" in text
    assert "Only the first N rows" not in text


def test_status_before_the_first_send_says_nothing_was_sent(campaign: CampaignDir) -> None:
    result = run("status", _path(campaign))
    assert result.exit_code == 0, result.output
    assert "nothing sent yet" in result.output
    result = run("status", _path(campaign), "--csv", "-")
    assert result.exit_code == 0
    # the header line alone: an empty report a CSV reader reads, and no words in it
    assert result.stdout.splitlines() == ["row,key,state,attempts,last_reply,message_id,time,"
                                          "settled,status_code,diagnostic,soft_bounces"]
    result = run("resolve", _path(campaign))
    assert result.exit_code == 0, result.output
    assert "nothing was sent yet" in result.output


def test_status_csv_on_stdout_is_csv_alone(campaign: CampaignDir) -> None:
    assert run("send", _path(campaign), "--yes").exit_code == 0
    result = run("status", _path(campaign), "--csv", "-")
    assert result.exit_code == 0, result.output
    lines = list(csv.reader(io.StringIO(result.stdout)))
    assert lines[0][:3] == ["row", "key", "state"]
    assert [line[1] for line in lines[1:]] == [f"p{i}@example.org" for i in range(5)]
    assert "Campaign test" in result.stderr  # the summary is still there, beside the data


def test_declining_at_the_prompt_says_nothing_was_sent(campaign: CampaignDir,
                                                       server: Server) -> None:
    controller, terminal = pty.openpty()  # the prompt is asked only on a terminal
    try:
        os.write(controller, b"n\n")
        done = subprocess.run([sys.executable, "-m", "mailmerge", "send", _path(campaign)],
                              stdin=terminal, capture_output=True, timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    assert b"Send now?" in done.stdout + done.stderr
    assert b"Nothing was sent." in done.stdout, done.stdout
    assert done.returncode == 1
    assert server.handler.received == []


def test_a_classic_samples_placeholders_warn_in_every_later_check(tmp_path: Path) -> None:
    """`import` lists them as to-dos; `check` goes on saying so until they are replaced."""
    sample = Path(__file__).parent / "data" / "classic" / "sample"
    assert run("import", str(sample), str(tmp_path / "s")).exit_code == 1
    campaign = str(tmp_path / "s" / "campaign.yaml")
    result = run("check", campaign)
    assert result.exit_code == 0, result.output
    assert "Warning: `smtp.username` YOUR_USERNAME_HERE is a placeholder" in result.output
    assert run("check", campaign, "--strict").exit_code == 1
    text = Path(campaign).read_text().replace("YOUR_USERNAME_HERE", "jo")
    Path(campaign).write_text(text)
    result = run("check", campaign)
    assert "smtp.username" not in result.output


def test_strict_fails_on_a_campaign_wide_warning(basic) -> None:
    c = basic('smtp: {host: smtp.example.org, port: 587, security: starttls}\n')
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 0 and "`smtp.host` smtp.example.org is a placeholder" in result.output
    assert run("check", str(c.folder / "campaign.yaml"), "--strict").exit_code == 1


@pytest.mark.parametrize("html", ['<p>x</p>\n<a href={{ name }}>x</a>', '<p>x</p>\n<td {{ name }}>x</td>',
                                  '<p>x</p>\n<img alt="a" src=x title={{ name }}>'])
def test_a_value_outside_quotes_in_a_tag_is_a_warning(basic, html: str) -> None:
    """Autoescaping keeps a cell data in text and quoted values only: unquoted, a cell of
    `x onmouseover=...` adds an attribute."""
    c = basic(html=html, rows=[["email", "name"], ["a@x.org", "x onmouseover=alert(1)"]])
    result = run("check", _path(c))
    assert result.exit_code == 0, result.output
    assert "mail.html, line 2: {{ name }} stands inside the tag" in result.output
    assert "write the value in quotes" in result.output
    assert run("check", _path(c), "--strict").exit_code == 1


def test_values_in_text_quoted_values_and_statements_in_tags_are_no_warning(basic) -> None:
    html = ('<a {% if name %}class="b"{% endif %} href="https://x.example/{{ name }}" '
            "title='{{ name }}'>{{ name }}</a>{# <b {{ name }}> #}<!-- <i {{ name }}> -->")
    c = basic(html=html)
    result = run("check", _path(c), "--strict")
    assert result.exit_code == 0, result.output
    assert "outside quotes" not in result.output


EMPTY = [(["send", "--yes", "--to", ""], "--to is empty"),
         (["send", "--yes", "--to", "", "--row", "2"], "--to is empty"),
         (["send", "--yes", "--where", ""], "--where is empty"),
         (["send", "--yes", "--where", "   "], "--where is empty"),
         (["send", "--dry-run", "--out", ""], "--out is empty"),
         (["status", "--csv", ""], "--csv is empty"),
         (["preview", "--where", ""], "--where is empty")]


@pytest.mark.parametrize(("args", "said"), EMPTY, ids=[" ".join(map(repr, a)) for a, _ in EMPTY])
def test_an_empty_value_is_refused_not_taken_for_no_option(campaign: CampaignDir,
                                                           server: Server, args: list[str],
                                                           said: str) -> None:
    """`--to "$ME"` with $ME unset must not become the real send."""
    command, *options = args
    result = run(command, _path(campaign), *options)
    assert result.exit_code == 2, result.output
    assert said in result.output and "shell variable" in result.output
    assert server.handler.received == []
    assert not (campaign.folder / "test.journal.sqlite").exists()


@pytest.mark.parametrize("use", ["{{ row }}", "{{ row|pprint }}", "{{ row.values()|list }}",
                                 "{{ row|dictsort }}", "{{ row|tojson }}",
                                 "{% for k, v in row.items() %}{{ v }}{% endfor %}"])
def test_a_bad_cell_used_through_the_whole_row_fails_its_row(basic, use: str) -> None:
    """A formula not calculated never shows as the word "Undefined", however it is used."""
    c = basic("recipients: people.xlsx\n", html=f"<p>{use}</p>",
              rows=[["email", "name"], ["a@x.org", "A"]])
    c.xlsx([["email", "name", "total"], ["a@x.org", "A", 5], ["b@x.org", "B", "=C2*2"]])
    result = run("check", _path(c))
    assert result.exit_code == 1, result.output
    assert "row 3, column 'total' (cell C3): the cell holds a formula" in result.output
    assert "Problems in 1 of 2 rows" in result.output


@pytest.mark.parametrize("own", ["campaign.yaml", "people.csv", "../templates/mail.html"])
def test_status_csv_never_replaces_a_file_of_the_campaign(campaign: CampaignDir,
                                                          own: str) -> None:
    before = (campaign.folder / own).read_bytes()
    result = run("status", _path(campaign), "--csv", str(campaign.folder / own))
    assert result.exit_code == 2, result.output
    assert "is a file of the campaign itself" in result.output
    assert (campaign.folder / own).read_bytes() == before


def test_a_send_narrowed_by_row_says_the_other_rows_wait(campaign: CampaignDir) -> None:
    result = run("send", _path(campaign), "--yes", "--row", "3")
    assert result.exit_code == 0, result.output
    assert "Only the rows --row chose were sent; the others are not recorded" in result.output


def test_send_says_a_campaign_wide_warning_before_it_asks(basic, server: Server) -> None:
    c = basic(SMTP_BLOCK.format(port=server.port)
              + "bounces: {host: imap.example.org, username: you@example.org}\n",
              rows=PEOPLE[:2])
    result = run("send", _path(c), "--yes")
    assert result.exit_code == 0, result.output
    said = result.output.index("Warning: `bounces.host` imap.example.org is a placeholder")
    assert said < result.output.index("sent ")
    assert "Warning: `bounces.username` you@example.org is a placeholder" in result.output


@pytest.mark.parametrize("args", [["preview", "--row", "2", "--print", "--eml"],
                                  ["status", "--csv", "-"], ["check"]])
def test_output_to_a_full_disk_is_one_error_line(campaign: CampaignDir, args: list[str]) -> None:
    command, *options = args
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "mailmerge", command, _path(campaign),
                               *options], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Error: cannot write the output: No space left on device" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("line", "said"), [
    ("name: yes", '`name` must be a text, not bool True; YAML reads yes, no, on, off, true, '
                  'false and numbers as such: put the text in quotes (name: "yes")'),
    ("name: null", "`name` has no value (YAML reads an empty value, `null` and `~` as none)"),
    ("journal: ../templates", "the journal"),
    ("suppress: ../templates", "the suppression list"),
])
def test_a_wrong_value_is_blamed_for_what_it_is(basic, line: str, said: str) -> None:
    c = basic(line + "\n")
    result = run("send", _path(c), "--yes")
    assert result.exit_code == 2, result.output
    assert said in result.output
    if "templates" in line:
        assert "is a folder, not a file" in result.output


def test_a_cell_in_an_attachment_path_is_a_name_never_a_pattern(basic, tmp_path: Path) -> None:
    """A cell of "*" must not attach every invoice in the folder to one recipient; the
    path's own text keeps its patterns."""
    c = basic('attachments: ["inv/{{ id }}.pdf", "notes/{{ id }}-*.txt"]\n',
              rows=[["email", "name", "id"], ["a@x.org", "A", "1"], ["b@x.org", "B", "*"],
                    ["c@x.org", "C", "[12]"]])
    for name in ("inv/1.pdf", "inv/2.pdf", "notes/1-a.txt", "notes/1-b.txt", "notes/2-a.txt"):
        c.file(f"campaign/{name}", b"%PDF-1.4 " + name.encode())  # beside campaign.yaml
    out = tmp_path / "dry"
    result = run("preview", _path(c), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "Problems in 2 of 3 rows" in result.output
    (first,) = sorted(out.glob("*.eml"))
    names = sorted(part.get_filename() for part in parse(first.read_bytes()).iter_attachments())
    assert names == ["1-a.txt", "1-b.txt", "1.pdf"]


@pytest.mark.parametrize("option", ["--sent", "--resend"])
def test_resolve_with_a_list_that_names_nobody_is_a_usage_error(campaign: CampaignDir,
                                                                option: str) -> None:
    assert run("send", _path(campaign), "--yes", "--row", "2").exit_code == 0
    result = run("resolve", _path(campaign), option, ",")
    assert result.exit_code == 2, result.output
    assert f"{option} names no recipient" in result.output


def test_a_row_run_names_the_rows_it_leaves_out_for_what_they_are(campaign: CampaignDir) -> None:
    """After a whole run, `--row 3` leaves the others alone: they are not 'no longer in
    the sheet'."""
    assert run("send", _path(campaign), "--yes", "--row", "2").exit_code == 0
    result = run("send", _path(campaign), "--yes", "--row", "3")
    assert result.exit_code == 0, result.output
    assert "1 recipient in the journal is outside the rows --row chose (left alone)" \
        in result.output
    assert "no longer in the sheet" not in result.output
