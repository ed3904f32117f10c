"""The command line: exit codes, output, the dry-run folder, and every shipped campaign."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge.cli import cli

from .conftest import SMTP_BLOCK, content, parse, tree

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "campaigns").glob("*.yaml"))
HTML_TOTAL = ('<html lang="en"><head><title>T</title></head><body><p>Hi {{ name }}, you owe '
              "{{ total }}.</p></body></html>")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_check_clean_campaign(basic) -> None:
    c = basic(rows=[["email", "name"], ["a@x.org", "A"], ["b@x.org", "B"]])
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 0
    assert result.output == "2 rows: 2 messages ok.\n"


def test_check_lists_every_problem_and_exits_1(basic) -> None:
    rows = [["email", "name"], ["bob@", "A"], ["ok@x.org", "B"]] + [
        [f"p{i}@x.org", "C"] for i in range(4)]
    c = basic(text="{% if name == 'C' %}{{ missing }}{% endif %}\n",
              rows=rows)
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 1
    assert result.output == (
        "Problems in 5 of 6 rows:\n"
        f"  {c.folder}/people.csv, row 2, column 'email': `to`: 'bob@' is not a valid email "
        "address (There must be something after the @-sign.); correct the cell in the sheet\n"
        f"  {c.root}/templates/mail.txt, line 1: 'missing' is undefined; the sheet has no column "
        "'missing'; its columns are: email, name (a column with spaces is row[\"Column Name\"]) "
        "[rows 4-7]\n"
        "6 rows: 1 message ok, 5 rows with problems (fix them and run again).\n")


def test_check_exits_2_when_the_campaign_file_is_wrong(basic) -> None:
    c = basic("smtp: {password: x}\n")
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {c.folder}/campaign.yaml, line 7: `smtp.password` "
                                    "is not allowed; passwords never go in the campaign file")
    assert "Traceback" not in result.output


def test_check_exits_2_on_a_template_syntax_error(basic) -> None:
    c = basic(text="{{ name }\n")
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {c.root}/templates/mail.txt, line 1: template syntax")


def test_missing_campaign_file_exits_2(tmp_path: Path) -> None:
    result = run("preview", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.output == (f"Error: {tmp_path}/nope.yaml: campaign file not found; check the "
                             "path, or create one with a text editor\n")


def test_unreadable_sheet_exits_1(basic) -> None:
    c = basic()
    (c.folder / "people.csv").write_bytes(b"email,name\na@x.org,\"x\n")
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 1
    assert "row 2: malformed CSV: unexpected end of data" in result.output


def test_preview_writes_eml_manifest_and_index(basic, tmp_path: Path) -> None:
    c = basic(rows=[["email", "name"], ["zoe@example.org", "Zoë"], ["bad@", "X"],
                    ["li@example.com", "李"]])
    out = tmp_path / "out"
    result = run("preview", str(c.folder / "campaign.yaml"), "--out", str(out))
    assert result.exit_code == 1
    assert result.output.startswith(f"Wrote 2 .eml files, manifest.csv and index.html to {out}/\n")
    assert "row 3, column 'email'" in result.output
    files = sorted(p.name for p in out.glob("*.eml"))
    assert files == ["00002-zoe@example.org.eml", "00004-li@example.com.eml"]
    msg = parse((out / files[1]).read_bytes())
    assert msg["Subject"] == "Hi 李"
    with open(out / "manifest.csv", encoding="utf-8") as handle:
        manifest = list(csv.DictReader(handle))
    assert [(m["row"], m["key"], m["envelope_to"], m["subject"], m["file"]) for m in manifest] == [
        ("2", "zoe@example.org", "zoe@example.org", "Hi Zoë", files[0]),
        ("4", "li@example.com", "li@example.com", "Hi 李", files[1])]
    assert int(manifest[0]["size"]) == (out / files[0]).stat().st_size
    assert manifest[1]["message_id"] == msg["Message-ID"]
    index = (out / "index.html").read_text()
    assert "const CHUNKS = 1, TOTAL = 3," in index
    chunk = (out / "list" / "00000.js").read_text()
    entries = json.loads(chunk[len("mm.add("):-len(");\n")])
    assert [e["row"] for e in entries] == [2, 3, 4]
    assert entries[0]["html"] == entries[0]["text"] == 1
    assert entries[0]["part"] == entries[2]["part"] == "00002"  # parts/00002.js
    assert entries[0]["to"] == "zoe@example.org" and entries[0]["subject"] == "Hi Zoë"
    assert "'bad@' is not a valid email address" in entries[1]["error"]
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["00002.js"]
    parts = {}
    for line in (out / "parts" / "00002.js").read_text().splitlines():
        row, _, body = line.removeprefix("mm.part(").removesuffix(");").partition(", ")
        parts[int(row)] = json.loads(body)
    assert list(parts) == [2, 4]  # the rows with messages
    assert "Hello Zoë" in parts[2]["html"] and parts[2]["text"] == "Hello Zoë\n"
    assert not (out / "html").exists()  # one file per message: the .eml


def test_preview_limit_and_rerun_clears_old_messages(basic, tmp_path: Path) -> None:
    c = basic(rows=[["email", "name"], *[[f"p{i}@x.org", "P"] for i in range(5)]])
    out = tmp_path / "out"
    assert run("preview", str(c.folder / "campaign.yaml"), "-o", str(out)).exit_code == 0
    assert len(list(out.glob("*.eml"))) == 5
    assert run("preview", str(c.folder / "campaign.yaml"), "-o", str(out), "-n", "2").exit_code == 0
    assert len(list(out.glob("*.eml"))) == 2


def test_preview_clears_a_folder_an_earlier_version_wrote(basic, tmp_path: Path) -> None:
    c = basic()
    out = tmp_path / "out"
    assert run("preview", str(c.folder / "campaign.yaml"), "-o", str(out)).exit_code == 0
    # earlier versions wrote each message's parts, and the images, under html/
    (out / "html" / "images").mkdir(parents=True)
    (out / "html" / "images" / "logo.png").write_bytes(b"png")
    (out / "html" / "00002-old@example.org.html").write_text("<p>old</p>")
    (out / "html" / "00002-old@example.org.txt").write_text("old")
    assert run("preview", str(c.folder / "campaign.yaml"), "-o", str(out)).exit_code == 0
    assert not (out / "html").exists() and (out / "parts" / "00002.js").is_file()


def test_preview_refuses_a_foreign_non_empty_folder(basic, tmp_path: Path) -> None:
    c = basic()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    result = run("preview", str(c.folder / "campaign.yaml"), "-o", str(tmp_path / "mine"))
    assert result.exit_code == 2
    assert "is not empty and was not written by mailmerge" in result.output
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_preview_never_clears_a_folder_that_holds_anything_of_the_user(basic,
                                                                       tmp_path: Path) -> None:
    c = basic()
    out = tmp_path / "previews"
    assert run("preview", str(c.folder / "campaign.yaml"), "-o", str(out)).exit_code == 0
    (out / "parts" / "newsletter.html").write_text("<p>the user's own template</p>")
    (out / "images" / "holiday").mkdir()
    (out / "notes.txt").write_text("precious")
    for stranger in ("notes.txt", "parts/newsletter.html", "images/holiday"):
        result = run("preview", str(c.folder / "campaign.yaml"), "-o", str(out))
        assert result.exit_code == 2, result.output
        assert (f"Error: the output folder {out} holds {stranger}, which mailmerge preview "
                "did not write; nothing was deleted") in result.output
        (out / stranger).rmdir() if (out / stranger).is_dir() else (out / stranger).unlink()
    assert len(list(out.glob("*.eml"))) == 1  # nothing of ours was deleted either
    assert run("preview", str(c.folder / "campaign.yaml"), "-o", str(out)).exit_code == 0


def test_preview_into_a_parent_through_dot_dot_is_refused(basic, tmp_path: Path,
                                                         monkeypatch) -> None:
    c = basic()
    project = tmp_path / "project"
    (project / "html").mkdir(parents=True)
    (project / "html" / "mail.html").write_text("<p>template</p>")
    monkeypatch.chdir(project)
    for _ in range(2):  # `out` does not exist the first time, and does the second
        result = run("preview", str(c.folder / "campaign.yaml"), "-o", "out/..")
        assert result.exit_code == 2, result.output
        assert "is not empty and was not written by mailmerge" in result.output
        (project / "out").mkdir(exist_ok=True)
    assert (project / "html" / "mail.html").read_text() == "<p>template</p>"
    assert not (project / ".mailmerge-preview").exists()


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_campaign_name_is_one_plain_folder_name(basic, name: str) -> None:
    c = basic()
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text().replace("name: test", f"name: '{name}'"))
    result = run("preview", str(config))
    assert result.exit_code == 2
    assert f"`name` '{name}' may hold only letters, digits" in result.output


def test_preview_default_folder_is_out_slash_name(basic, tmp_path: Path, monkeypatch) -> None:
    c = basic()
    monkeypatch.chdir(tmp_path)
    assert run("preview", str(c.folder / "campaign.yaml")).exit_code == 0
    assert len(list((tmp_path / "out" / "test").glob("*.eml"))) == 1


def test_send_dry_run_is_preview(basic, tmp_path: Path) -> None:
    c = basic()
    result = run("send", str(c.folder / "campaign.yaml"), "--dry-run", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0
    assert len(list((tmp_path / "o").glob("*.eml"))) == 1


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example_and_is_in_the_readme(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert f"mailmerge {command}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("campaign", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_campaign_dry_runs(campaign: Path, tmp_path: Path) -> None:
    result = run("preview", str(campaign), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "Note:" not in result.output  # CSS inlined once, verified against per-message
    files = sorted(tmp_path.glob("*.eml"))
    assert files
    for path in files:
        msg = parse(path.read_bytes())
        assert not msg.defects
        assert msg["Message-ID"] and msg["Date"] and msg["MIME-Version"] == "1.0"
        assert content(msg, "plain").strip()
        if msg.get_body(("html",)) is not None:
            html = content(msg, "html")
            assert "<style" not in html or "@media" in html
            assert 'src="logo.png"' not in html


def test_shipped_newsletter_has_logo_and_non_ascii_names(tmp_path: Path) -> None:
    assert run("preview", str(ROOT / "campaigns" / "newsletter.yaml"), "-o", str(tmp_path)
               ).exit_code == 0
    msgs = {p.name: parse(p.read_bytes()) for p in tmp_path.glob("*.eml")}
    zoe = msgs["00002-zoe@example.org.eml"]
    assert tree(zoe) == ("multipart/alternative",
                         ["text/plain", ("multipart/related", ["text/html", "image/png"])])
    assert zoe["To"].addresses[0].display_name == "Zoë Ünal"
    assert "You have <strong>1250</strong> points" in content(zoe, "html")
    assert "Member since April 2019." in content(zoe, "html")


def test_shipped_invoices_have_pdfs_and_cc(tmp_path: Path) -> None:
    assert run("preview", str(ROOT / "campaigns" / "invoices.yaml"), "-o", str(tmp_path)
               ).exit_code == 0
    msg = parse((tmp_path / "00003-INV-1002.eml").read_bytes())
    assert tree(msg) == ("multipart/mixed", [("multipart/alternative",
                                              ["text/plain", "text/html"]), "application/pdf"])
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["accounts@example.org",
                                                          "boss@example.org"]
    assert next(msg.iter_attachments()).get_filename() == "INV-1002.pdf"
    carol = parse((tmp_path / "00002-INV-1001.eml").read_bytes())
    assert carol["To"].addresses[0].display_name == "Jones, Jr., Carol"


WHERE_ROWS = [["email", "name", "country", "points"], ["a@x.org", "A", "CN", "5"],
              ["b@x.org", "B", "DE", "50"], ["c@x.org", "C", "CN", "500"]]


def test_where_in_the_campaign_and_on_the_command_line(basic, tmp_path: Path) -> None:
    c = basic("where: \"{{ country == 'CN' }}\"\n", rows=WHERE_ROWS)
    config = str(c.folder / "campaign.yaml")
    result = run("check", config)
    assert result.exit_code == 0
    assert result.output == "3 rows: 2 messages ok, 1 row skipped by `where`.\n"
    result = run("preview", config, "-o", str(tmp_path / "o"), "--where", "points|int > 100")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.eml")) == ["00004-c@x.org.eml"]
    assert "3 rows: 1 message written, 2 rows skipped by `where`." in result.output
    assert "Wrote 1 .eml file, manifest.csv" in result.output  # one file, not "1 files"


def test_where_errors(basic) -> None:
    c = basic("where: \"{{ contry == 'CN' }}\"\n", rows=WHERE_ROWS)
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 1
    assert (f"{c.folder}/campaign.yaml, line 7: `where`: 'contry' is undefined; the sheet has "
            "no column 'contry'") in result.output
    result = run("check", str(c.folder / "campaign.yaml"), "--where", "country ==")
    assert result.exit_code == 2
    assert result.output == (
        "Error: the --where option 'country ==' is not a valid expression: the expression "
        "ends too soon (after an operator, or inside brackets or quotes); complete it, e.g. "
        "country == 'DE' and points|int > 100\n")


def test_init_creates_a_campaign_that_previews(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("init", "demo")
    assert result.exit_code == 0
    assert "Next: mailmerge preview demo/campaign.yaml --open" in result.output
    preview = run("preview", "demo/campaign.yaml")
    assert preview.exit_code == 0, preview.output
    emls = sorted((tmp_path / "out" / "demo").glob("*.eml"))
    assert len(emls) == 3
    msg = parse(emls[1].read_bytes())
    assert msg["To"].addresses[0].display_name == "Jones, Carol"
    assert tree(msg)[1][1][0] == "multipart/related"  # the logo is embedded
    again = run("init", "demo")
    assert again.exit_code == 2
    assert "demo already exists and is not empty; choose a new name" in again.output


def test_init_markdown_creates_a_markdown_campaign_that_previews(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("init", "letter", "--markdown")
    assert result.exit_code == 0
    assert (tmp_path / "letter/templates/mail.md").is_file()
    assert not (tmp_path / "letter/templates/mail.html").exists()
    preview = run("preview", "letter/campaign.yaml")
    assert preview.exit_code == 0, preview.output
    emls = sorted((tmp_path / "out" / "letter").glob("*.eml"))
    msg = parse(emls[0].read_bytes())
    assert tree(msg) == ("multipart/alternative", [
        "text/plain", ("multipart/related", ["text/html", "image/png"])])
    assert content(msg, "plain").startswith("![Our logo](logo.png)\n\n# Hello Zoë Ünal!")
    assert re.search(r"<h1[^>]*>Hello Zoë Ünal!</h1>", content(msg, "html"))


@pytest.mark.parametrize("which", ["campaign", "suppress", "dkim"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_given_as_a_file_is_a_clear_error(basic, which: str,
                                                             kind: str) -> None:
    c = basic("suppress: gone.txt\n" if which == "suppress" else
              "dkim: {domain: acme.example, selector: s1, key_file: dkim.pem}\n"
              if which == "dkim" else "")
    config = c.folder / "campaign.yaml"
    target = {"campaign": c.folder / "fifo.yaml", "suppress": c.folder / "gone.txt",
              "dkim": c.folder / "dkim.pem"}[which]
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    if which == "campaign":
        if kind == "fifo":
            config = target
        else:
            config.rename(c.folder / "real.yaml")
            config.symlink_to("/dev/zero")
    done = subprocess.run([sys.executable, "-m", "mailmerge", "check", str(config)],
                          capture_output=True, text=True, timeout=60)  # a hang fails here
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not a regular file (a FIFO, a device or a folder)" in done.stderr
    assert "Traceback" not in done.stderr


def _mailmerge(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailmerge", *args], capture_output=True,
                          timeout=60, check=False)


def test_preview_print_shows_one_message_and_writes_nothing(basic, tmp_path: Path) -> None:
    c = basic(text="Hello {{ name }}\n", rows=[
        ["email", "name", "cc"], ["a@x.org", "Ann", ""], ["b@x.org", "Bö", "c@x.org"]],
              extra='cc: "{{ cc }}"\nbcc: archive@acme.example\n')
    done = _mailmerge("preview", str(c.folder / "campaign.yaml"), "--row", "3", "--print")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8")
    head, body = out.split("\n\n", 1)
    assert head.splitlines()[:5] == ["Row: 3", "From: Acme <news@acme.example>",
                                     "To: b@x.org", "Cc: c@x.org",
                                     "Bcc: archive@acme.example (envelope only)"]
    assert "Subject: Hi Bö" in head and body == "Hello Bö\n"
    assert done.stderr == b""
    assert not (tmp_path / "out").exists() and not (c.folder / "out").exists()
    first = _mailmerge("preview", str(c.folder / "campaign.yaml"), "--print")
    assert first.stdout.decode().startswith("Row: 2\n")
    assert "Row: 3" not in first.stdout.decode()


def test_preview_print_eml_is_the_exact_message(basic, tmp_path: Path) -> None:
    c = basic(text="Hello {{ name }}\n", rows=[["email", "name"], ["a@x.org", "Ann"],
                                               ["b@x.org", "Bö"]])
    done = _mailmerge("preview", str(c.folder / "campaign.yaml"), "-r", "3", "--print", "--eml")
    assert done.returncode == 0, done.stderr
    msg = parse(done.stdout)
    assert msg["To"] == "b@x.org" and content(msg, "plain") == "Hello Bö\n"
    assert done.stdout.count(b"\r\n") > 5  # the bytes SMTP would carry, CRLF and all
    two = _mailmerge("preview", str(c.folder / "campaign.yaml"), "-r", "2", "-r", "3",
                     "--print", "--eml")
    assert two.returncode == 2 and b"give one --row" in two.stderr


def test_preview_print_reports_a_row_problem_and_a_row_the_sheet_lacks(basic) -> None:
    c = basic(rows=[["email", "name"], ["a@x.org", "Ann"], ["bob@", "Bob"]])
    bad = _mailmerge("preview", str(c.folder / "campaign.yaml"), "--row", "3", "--print")
    assert bad.returncode == 1 and bad.stdout == b""
    assert b"row 3, column 'email'" in bad.stderr
    missing = _mailmerge("preview", str(c.folder / "campaign.yaml"), "--row", "9", "--print")
    assert missing.returncode == 1 and missing.stdout == b""
    assert b"the sheet has no row 9" in missing.stderr


def test_preview_rows_writes_only_those_rows(basic, tmp_path: Path) -> None:
    c = basic(rows=[["email", "name"], *[[f"p{i}@x.org", f"P{i}"] for i in range(6)]])
    result = run("preview", str(c.folder / "campaign.yaml"), "-o", str(tmp_path / "o"),
                 "--row", "5", "--row", "3")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").glob("*.eml")) == [
        "00003-p1@x.org.eml", "00005-p3@x.org.eml"]


def test_a_command_leaves_every_file_whole_though_it_skips_the_collections_at_exit(
        basic, tmp_path: Path) -> None:
    """main() freezes the objects as the process ends, so Python's last collections skip
    them: a preview run as a command, its rows in two workers, still leaves every .eml,
    the manifest and the gallery's parts whole."""
    frozen = subprocess.run(
        [sys.executable, "-c", "import atexit, gc\nimport mailmerge.cli as cli\n"
         "cli.cli = lambda **kw: None\ncli.main()\nbefore = gc.get_freeze_count()\n"
         "atexit._run_exitfuncs()\nprint(before, gc.get_freeze_count() > 0)"],
        capture_output=True, text=True, timeout=60, check=True)
    assert frozen.stdout == "0 True\n"

    c = basic(rows=[["email", "name"], *[[f"p{i}@x.org", f"P{i}"] for i in range(300)]])
    out = tmp_path / "out"
    done = _mailmerge("preview", str(c.folder / "campaign.yaml"), "-o", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    files = sorted(out.glob("*.eml"))
    assert len(files) == 300
    assert all(parse(f.read_bytes())["To"] == f.name.split("-", 1)[1][:-4] for f in files)
    with open(out / "manifest.csv", encoding="utf-8") as handle:
        assert [int(m["row"]) for m in csv.DictReader(handle)] == list(range(2, 302))
    rows = [int(line.removeprefix("mm.part(").split(",", 1)[0])
            for part in (out / "parts").iterdir() for line in part.read_text().splitlines()]
    assert sorted(rows) == list(range(2, 302))


@pytest.mark.parametrize("command", ["check", "preview"])
def test_ctrl_c_exits_130_not_the_code_of_bad_rows(basic, command: str) -> None:
    """click answers Ctrl-C with "Aborted!" and exit code 1, which is the code of rows
    with problems: a script would take an interrupted check for bad data."""
    import signal
    import time

    slow = "<p>{{ name }}</p>{% for i in range(20000) %}{% endfor %}"  # milliseconds a row
    # far more rows than any machine renders before the signal: minutes of work
    c = basic(html=slow, rows=[["email", "name"], *[[f"p{i}@x.org", "P"] for i in range(50000)]])
    process = subprocess.Popen([sys.executable, "-m", "mailmerge", command,
                                str(c.folder / "campaign.yaml"), "-q", "--jobs", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the event: the command has rendered its first rows and forked its render workers,
    # so it is well past its start
    while process.poll() is None and not _children(process.pid):
        time.sleep(0.01)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, (out, err)
    assert "Interrupted." in err and "Aborted!" not in err


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


CAMPAIGN_COMMANDS = [["preview"], ["check"], ["send", "--dry-run"], ["status"], ["drafts"],
                     ["bounces"], ["resolve"]]


@pytest.mark.parametrize("command", [["preview"], ["check"], ["status"]],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("name", ["campaign.yaml", "campaign.yml"])
def test_a_folder_holding_one_campaign_file_stands_for_it(basic, tmp_path: Path,
                                                          command: list[str], name: str) -> None:
    """What `mailmerge init FOLDER` made is run as `mailmerge preview FOLDER`."""
    c = basic(rows=[["email", "name"], ["a@x.org", "A"]])
    if name != "campaign.yaml":
        (c.folder / "campaign.yaml").rename(c.folder / name)
    out = tmp_path / "out"
    extra = ["-o", str(out)] if command == ["preview"] else []
    folder_run = run(*command, str(c.folder), *extra)
    file_run = run(*command, str(c.folder / name), *extra)
    assert (folder_run.exit_code, folder_run.output) == (file_run.exit_code, file_run.output)
    if command == ["status"]:  # it read the campaign: its journal is named after it
        assert f"nothing sent yet (no journal at {c.folder}/test." in folder_run.output
    else:
        assert folder_run.exit_code == 0, folder_run.output


def test_init_then_preview_its_folder(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "letter")).exit_code == 0
    result = run("preview", str(tmp_path / "letter"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "out").glob("*.eml"))


@pytest.mark.parametrize("command", CAMPAIGN_COMMANDS, ids=lambda c: c[0])
def test_a_folder_without_one_obvious_campaign_file_says_what_it_holds(
        tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "newsletter.yaml").write_text("name: a\n")
    (folder / "welcome.yml").write_text("name: b\n")
    (folder / "people.csv").write_text("email\n")
    result = CliRunner().invoke(cli, [*command, str(folder)])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {folder}: the folder holds no campaign.yaml or campaign.yml; give the "
        "campaign file itself: it holds newsletter.yaml, welcome.yml\n")

    (folder / "campaign.yaml").write_text("name: a\n")
    (folder / "campaign.yml").write_text("name: b\n")
    result = CliRunner().invoke(cli, [*command, str(folder)])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {folder}: the folder holds both campaign.yaml and campaign.yml; give the "
        "campaign file itself\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, [*command, str(empty)])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {empty}: the folder holds no campaign.yaml or campaign.yml; give the "
        "campaign file itself, or make one with `mailmerge init FOLDER`\n")


def test_preview_watch_takes_a_folder(basic, tmp_path: Path) -> None:
    c = basic(rows=[["email", "name"], ["a@x.org", "A"]])
    watcher = subprocess.Popen([sys.executable, "-m", "mailmerge", "preview", str(c.folder),
                                "--watch", "-o", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # waits for the server, or for the error
        assert first.startswith("Live preview of the first 20 rows at http://127.0.0.1:"), first
    finally:
        watcher.terminate()
        watcher.communicate(timeout=10)
def test_formulas_not_calculated_and_error_cells_that_a_message_uses_fail_their_rows(
        basic) -> None:
    c = basic("recipients: people.xlsx\nwhere: \"{{ (points or 0) >= 0 }}\"\n",
              html=HTML_TOTAL, rows=[["email", "name"], ["a@x.org", "A"]])
    c.xlsx([["email", "name", "total", "notes", "points"],
            ["a@x.org", "A", 5, "#N/A", 1],  # an error in a column no template uses
            ["b@x.org", "B", "=C2*2", "", 1],  # a formula openpyxl did not calculate
            ["c@x.org", "C", "#DIV/0!", "", 1],
            ["d@x.org", "D", 7, "", "#VALUE!"],  # in the `where:` filter
            ["e@x.org", "E", 8, "", 1]])
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 1, result.output
    sheet = c.folder / "people.xlsx"
    assert result.output == (
        "Problems in 3 of 5 rows:\n"
        f"  {sheet}, row 3, column 'total' (cell C3): the cell holds a formula whose value "
        "the file does not store (the program that wrote it did not calculate it), so the "
        "message would show nothing; open the workbook in Excel or LibreOffice and save it, "
        "so that it stores the values; or type the values in\n"
        f"  {sheet}, row 4, column 'total' (cell C4): the cell holds the error #DIV/0! that "
        "its formula gives; correct the formula or the cells it uses, and save the workbook; "
        "or type the value in\n"
        f"  {sheet}, row 5, column 'points' (cell E5): the cell holds the error #VALUE! that "
        "its formula gives; correct the formula or the cells it uses, and save the workbook; "
        "or type the value in\n"
        "5 rows: 2 messages ok, 3 rows with problems (fix them and run again).\n")


def test_a_csv_cell_holding_an_exported_error_fails_the_row_that_uses_it(basic) -> None:
    c = basic(html=HTML_TOTAL, rows=[["email", "name", "total", "notes"],
                                     ["a@x.org", "A", "5", "#N/A"],
                                     ["b@x.org", "B", "#N/A", ""]])
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 1
    assert result.output == (
        "Problems in 1 of 2 rows:\n"
        f"  {c.folder / 'people.csv'}, row 3, column 'total' (cell C3): the cell holds #N/A, "
        "a spreadsheet's formula error exported as text; correct the formula in the "
        "spreadsheet and export the sheet again; or type the value in\n"
        "2 rows: 1 message ok, 1 row with problems (fix them and run again).\n")


def test_send_says_the_sender_address_is_a_placeholder(basic, smtp_server) -> None:
    c = basic('from: "Your Name <you@example.org>"\n' + SMTP_BLOCK.format(port=smtp_server.port),
              rows=[["email", "name"], ["a@x.org", "A"]])
    result = run("send", str(c.folder / "campaign.yaml"), "--yes")
    assert result.exit_code == 0, result.output
    assert ("Before you send (pre-flight warnings):\n  row 2: an address the message gives "
            "for replies, bounces or unsubscribing (or its List-Id) is a placeholder"
            ) in result.output
    assert "(from: you@example.org); put in your own in the campaign file" in result.output


def test_a_where_option_that_is_wrong_is_said_to_be_the_options_not_the_campaigns(
        basic) -> None:
    c = basic("where: \"{{ points|int > 1 }}\"\n", rows=WHERE_ROWS)
    config = str(c.folder / "campaign.yaml")
    result = run("check", config, "--where", "country = 'Köln'")
    assert result.exit_code == 2
    assert result.output == (
        "Error: the --where option \"country = 'Köln'\" is not a valid expression: a single "
        "= does not compare; write == to compare: country == 'Köln'\n")
    result = run("check", config, "--where", "contry == 'CN'")
    assert result.exit_code == 1
    assert result.output.splitlines()[1] == (
        "  the --where option \"contry == 'CN'\": 'contry' is undefined; the sheet has no "
        "column 'contry' (did you mean 'country'?); its columns are: email, name, country, "
        "points (a column with spaces is row[\"Column Name\"]) [rows 2-4]")
    result = run("check", config, "--where", "country == 'CN' x")
    assert result.output == (
        "Error: the --where option \"country == 'CN' x\" is not a valid expression: something "
        "follows where the expression ends; join conditions with and / or, e.g. country == "
        "'DE' and points|int > 100\n")
    result = run("check", config, "--where", "name|truncate(length=3) ==")
    assert result.output == (  # an = that is a filter's argument is not taken for a comparison
        "Error: the --where option 'name|truncate(length=3) ==' is not a valid expression: "
        "the expression ends too soon (after an operator, or inside brackets or quotes); "
        "complete it, e.g. country == 'DE' and points|int > 100\n")
    result = run("check", config, "--where", "points|integer > 10")
    assert result.output == (
        "Error: the --where option 'points|integer > 10' is not a valid expression: No "
        "filter named 'integer'.; jinja2 has no such filter (did you mean 'int' or 'center'?)\n")
    result = run("check", config, "--where", "country == 'CN'")
    assert result.exit_code == 0
    assert result.output == "3 rows: 2 messages ok, 1 row skipped by `where`.\n"


def test_a_where_key_with_one_equals_sign_says_so(basic) -> None:
    c = basic("where: \"{{ country = 'CN' }}\"\n", rows=WHERE_ROWS)
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {c.folder}/campaign.yaml, line 7: `where` \"country = 'CN'\" is not a valid "
        "expression: a single = does not compare; write == to compare: country == 'CN'\n")


def test_the_same_bad_cell_on_many_rows_is_one_line_naming_the_rows(basic) -> None:
    c = basic("recipients: people.xlsx\n", html=HTML_TOTAL)
    c.xlsx([["email", "name", "total"], ["a@x.org", "A", "#N/A"], ["b@x.org", "B", 2],
            ["c@x.org", "C", "#N/A"]])
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.output.splitlines()[1] == (
        f"  {c.folder / 'people.xlsx'}, column 'total': the cell holds the error #N/A that "
        "its formula gives; correct the formula or the cells it uses, and save the workbook; "
        "or type the value in [rows 2, 4]")  # not the cell of the first row for all
