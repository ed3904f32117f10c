"""The hostile-input corpus: each case ends in one clear error or a correctly escaped message.

Every case runs `mailmerge preview` and `mailmerge send` (against a real SMTP server): no
traceback, no file outside the output folder, and no send at all while any row is bad.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailmerge import MailmergeError
from mailmerge import sheet as sheet_module
from mailmerge.cli import cli

from .conftest import SMTP_BLOCK, CampaignDir, content, parse, write_xlsx

HTML = '<html><body><p>Hi {{ name }}</p><a href="https://acme.example/{{ token }}">x</a></body></html>'
TEXT = "Hi {{ name }}\n"


@dataclass
class Case:
    id: str
    cells: dict[str, Any] = field(default_factory=dict)     # row values over the defaults
    yaml: str = ""                                          # extra campaign lines
    html: str = HTML
    text: str | None = TEXT
    setup: Callable[[CampaignDir], None] | None = None      # writes files, replaces the sheet
    error: str | None = None                                # expected message (regex)
    exit: int = 1
    check: Callable[[list[Any]], None] | None = None        # on the parsed messages


def cases() -> list[Case]:
    out: list[Case] = []
    for char, label in (("\r", "CR"), ("\n", "LF"), ("\x00", "NUL")):
        bad = f"Zoë{char}Bcc: victim@evil.example"
        control = "NUL byte" if char == "\x00" else "line break or control character"
        out += [
            Case(f"name-{label}", cells={"name": bad}, yaml='to: "{{ name }} <{{ email }}>"\n',
                 error=control),
            Case(f"subject-{label}", cells={"topic": bad}, yaml='subject: "{{ topic }}"\n',
                 error=control),
            Case(f"reply_to-{label}", cells={"reply": f"r@x.org{char}Bcc: v@evil.example"},
                 yaml='reply_to: "{{ reply }}"\n', error=control),
            Case(f"header-{label}", cells={"topic": bad}, yaml="headers: {X-Note: '{{ topic }}'}\n",
                 error=control),
        ]
    out += [
        Case("cc-LF", cells={"cc": "a@x.org\nBcc: v@evil.example"}, yaml='cc: "{{ cc }}"\n',
             error="line break"),
        Case("unsubscribe-CRLF", cells={"token": "abc\r\nBcc: v@evil.example"},
             yaml='unsubscribe: "https://acme.example/u/{{ token }}"\n', error="line break"),
        Case("from-CR", cells={"topic": "Acme\rBcc: v@evil.example"},
             yaml='from: "{{ topic }} <news@acme.example>"\n', error="line break"),
        # addresses that are not addresses
        Case("addr-no-domain", cells={"email": "bob@"}, error="'bob@' is not a valid email address"),
        Case("addr-two-ats", cells={"email": "a@@b.org"}, error="'a@@b.org' is not a valid"),
        Case("addr-quoted-comma", cells={"email": '"a,b"@x.org'},
             error=r"not a valid email address \(Quoting the part before the @-sign"),
        Case("addr-two-in-brackets", cells={"email": "a@x.org, b@x.org"},
             yaml='to: "{{ name }} <{{ email }}>"\n', error="not a valid email address"),
        Case("addr-two-as-list", cells={"email": "a@x.org, b@x.org"},
             check=lambda msgs: _assert_to(msgs, [("", "a@x.org"), ("", "b@x.org")])),
        Case("addr-2000-local", cells={"email": "a" * 2000 + "@x.org"},
             error="holds 2,006 characters"),
        Case("addr-angle-in-name", cells={"name": "Evil <evil@attacker.example>"},
             yaml='to: "{{ name }} <{{ email }}>"\n',
             check=lambda msgs: _assert_to(msgs, [("Evil <evil@attacker.example>", "zoe@x.org")])),
        # display names that are fine and must stay one name
        Case("name-commas-quotes", cells={"name": 'Jones, "CJ", Jr.'},
             yaml='to: "{{ name }} <{{ email }}>"\n',
             check=lambda msgs: _assert_to(msgs, [('Jones, "CJ", Jr.', "zoe@x.org")])),
        Case("name-emoji", cells={"name": "Zoë 🎉🦄"}, yaml='to: "{{ name }} <{{ email }}>"\n',
             check=lambda msgs: _assert_to(msgs, [("Zoë 🎉🦄", "zoe@x.org")])),
        Case("name-bidi-override", cells={"name": "\u202eZoë gpj.exe"},
             yaml='to: "{{ name }} <{{ email }}>"\n', error="control character"),
        Case("name-rtl", cells={"name": "שלום עולם"}, yaml='to: "{{ name }} <{{ email }}>"\n',
             check=lambda msgs: _assert_to(msgs, [("שלום עולם", "zoe@x.org")])),
        Case("name-arabic", cells={"name": "أميرة حداد"}, yaml='to: "{{ name }} <{{ email }}>"\n',
             check=lambda msgs: _assert_to(msgs, [("أميرة حداد", "zoe@x.org")])),
        # attachments from cells
        Case("attach-dotdot", cells={"file": "../../../etc/passwd"}, yaml=_ATTACH,
             error="points outside"),
        Case("attach-absolute", cells={"file": "/etc/passwd"}, yaml=_ATTACH, error="points outside"),
        Case("attach-symlink-out", cells={"file": "link.pdf"}, yaml=_ATTACH,
             setup=lambda c: os.symlink("/etc/hostname", c.folder / "link.pdf"),
             error="points outside"),
        Case("attach-device", cells={"file": "zero.pdf"}, yaml=_ATTACH,
             setup=lambda c: os.symlink("/dev/zero", c.folder / "zero.pdf"),
             error="points outside"),
        Case("attach-directory", cells={"file": "docs"}, yaml=_ATTACH,
             setup=lambda c: (c.folder / "docs").mkdir(), error="is not a regular file"),
        # a cell is a file name, never a pattern: "*" would attach every file there
        Case("attach-glob-from-a-cell", cells={"file": "many/*"}, yaml=_ATTACH,
             setup=_many_files, error=r"the attachment 'many/\*' does not exist"),
        Case("attach-glob-thousands", cells={"file": "many"}, yaml="attachments: ['{{ file }}/*']\n",
             setup=_many_files, error="matches more than 100 files"),
        # HTML from cells
        Case("html-script", cells={"name": "<script>alert(1)</script>"},
             check=lambda msgs: _assert_html(msgs, "&lt;script&gt;alert(1)&lt;/script&gt;",
                                             "<script>alert(1)</script>")),
        Case("html-attr-break", cells={"token": '" onmouseover="alert(1)'},
             check=lambda msgs: _assert_html(msgs, "&#34; onmouseover=&#34;alert(1)", None)),
        Case("html-javascript-link", cells={"link": "javascript:alert(1)"},
             html='<a href="{{ link }}">x</a>', error="the HTML has a javascript: link"),
        Case("html-javascript-obfuscated", cells={"link": " java\tscript:alert(1)"},
             html='<a href="{{ link }}">x</a>', error="the HTML has a javascript: link"),
        Case("html-javascript-after-styles", cells={"link": "javascript:alert(1)"},
             html=('<p style="line-height: 1.5" class="link">' * 50
                   + '<A HREF   \n  =  "{{ link }}">x</a>'),
             error="the HTML has a javascript: link"),
        Case("html-javascript-far-from-its-name", cells={"link": "javascript:alert(1)"},
             html='<a href' + " " * 100 + '="{{ link }}">x</a>',
             error="the HTML has a javascript: link"),
        Case("html-javascript-letter-as-reference", cells={"link": "j&#97;vascript:alert(1)"},
             html='<a href="{{ link|safe }}">x</a>', error="the HTML has a javascript: link"),
        Case("html-livescript-letters-as-references", cells={"link": "l&#105;&#x76;escript:x"},
             html='<p style="line-height: 1">x</p><a href={{ link|safe }}>x</a>',
             error="the HTML has a livescript: link"),
        Case("html-javascript-in-formaction", cells={"link": "vbscript:x"},
             html='<form><button formaction={{ link }}>x</button></form>',
             error="the HTML has a vbscript: link"),
        # a cell that reads like an attribute inside another value must not make the link
        # after it look like part of that value
        Case("html-javascript-behind-src-in-a-title", cells={"alt": "src=",
                                                             "link": "javascript:alert(1)"},
             html='<p title="{{ alt }}">x</p><a href="{{ link }}">y</a>',
             error="the HTML has a javascript: link"),
        Case("html-javascript-hiding-itself", cells={"link": "javascript:alert(1)//src="},
             html='<p title="{{ link }}">x</p><a href="{{ link }}">y</a>',
             error="the HTML has a javascript: link"),
        Case("html-javascript-after-a-quote-in-a-bare-value", cells={"link": "javascript:x"},
             html='<a title=x"y href="{{ link }}">y</a>"',
             error="the HTML has a javascript: link"),
        # the private-use characters the address parser marks values with, in a cell that
        # is a whole address list: read as text, not as a mark
        Case("address-mark-lookalike", cells={"cc": "\ue0000\ue001"}, yaml='cc: "{{ cc }}"\n',
             error="is not a valid email address"),
        Case("address-mark-lookalike-in-a-list", cells={"cc": "Zoë \ue0005\ue001 <z@x.org>"},
             yaml='cc: "{{ cc }}"\n',
             check=lambda msgs: _assert_header(msgs, "Cc", "Zoë \ue0005\ue001 <z@x.org>")),
        Case("jinja-in-cell", cells={"name": "{{ 7*7 }}{% for x in range(9**9) %}"},
             check=lambda msgs: _assert_html(msgs, "{{ 7*7 }}{% for x in range(9**9) %}", "49")),
        Case("sandbox", text="{{ ''.__class__.__mro__[1].__subclasses__() }}",
             error="access to attribute '__class__' of 'str' object is unsafe"),
        # spreadsheets
        Case("xlsx-formula-cached", setup=lambda c: _xlsx_formula(c, "HYPERLINK(\"http://evil\",\"Zoë\")", "Zoë"),
             check=lambda msgs: _assert_html(msgs, "Hi Zoë", "HYPERLINK")),
        Case("xlsx-dde-formula", setup=lambda c: _xlsx_formula(c, "cmd|' /C calc'!A0", "0"),
             check=lambda msgs: _assert_html(msgs, "Hi 0", "calc")),
        Case("csv-formula-text", cells={"name": "=cmd|' /C calc'!A0"},
             yaml='subject: "{{ name }}"\n', check=_assert_formula_kept_as_text),
        Case("xlsx-truncated", setup=_truncated_xlsx, error="not a readable Excel .xlsx workbook"),
        Case("xlsx-zip-bomb", setup=_zip_bomb, error="it may be a zip bomb"),
        Case("csv-unbalanced-quotes", setup=lambda c: _raw_csv(c, b'email,name,token\nzoe@x.org,"Zo\n'),
             error="malformed CSV: unexpected end of data"),
        Case("csv-mixed-line-ends", setup=lambda c: _raw_csv(
            c, b"email,name,token\r\nzoe@x.org,A,t\rbob@x.org,B,t\nli@x.org,C,t\r\n"),
             check=lambda msgs: len(msgs) == 3 or pytest.fail("3 messages expected")),
        Case("csv-nul-byte", setup=lambda c: _raw_csv(c, b"email,name,token\nzoe@x.org,Z\x00e,t\n"),
             error="the cell holds a NUL byte"),
        Case("csv-binary-garbage", setup=lambda c: _raw_csv(c, bytes(range(256)) * 40),
             error="not valid UTF-8 text"),
        Case("cell-10MB-body", cells={"name": "x" * 10_000_000}, text=None, yaml="subject: Hi\n",
             check=lambda msgs: len(content(msgs[0], "html")) > 10_000_000
             or pytest.fail("body lost")),
        Case("cell-10MB-subject", cells={"topic": "y" * 10_000_000}, yaml='subject: "{{ topic }}"\n',
             error="a header may hold at most 1,000"),
        Case("columns-10000", setup=_wide_sheet, check=lambda msgs: len(msgs) == 1
             or pytest.fail("one message expected")),
        Case("header-only", setup=lambda c: _raw_csv(c, b"email,name,token\n"),
             error="the sheet has a header row but no recipients below it"),
        Case("empty-file", setup=lambda c: _raw_csv(c, b""), error="the sheet is empty"),
        # campaign files
        Case("yaml-alias-bomb", yaml=_ALIAS_BOMB, exit=2, error="YAML aliases"),
        Case("yaml-python-object", yaml="headers: {X-A: !!python/object/apply:os.system [touch /tmp/pwned]}\n",
             exit=2, error="could not determine a constructor"),
        Case("yaml-duplicate-key", yaml='subject: "one"\nsubject: "two"\n', exit=2,
             error="duplicate key 'subject'"),
        Case("yaml-password", yaml="password: hunter2\n", exit=2,
             error="`password` is not allowed; passwords never go in the campaign file"),
        Case("key-path-traversal", cells={"id": "../../../../tmp/evil"},
             yaml="recipients: {path: people.csv, key: id}\n",
             check=lambda msgs: len(msgs) == 1 or pytest.fail("one message expected")),
    ]
    return out


_ATTACH = "attachments: ['{{ file }}']\n"
_ALIAS_BOMB = """\
x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
"""
DEFAULT_ROW = {"email": "zoe@x.org", "name": "Zoë", "token": "t1", "topic": "News", "reply": "",
               "cc": "", "file": "", "link": "https://acme.example", "id": "k1"}


def _assert_to(msgs: list[Any], expected: list[tuple[str, str]]) -> None:
    (msg,) = msgs
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == expected
    assert len(msg.get_all("To")) == 1 and msg.get_all("Bcc") is None


def _assert_html(msgs: list[Any], present: str, absent: str | None) -> None:
    html = content(msgs[0], "html")
    assert present in html, html[:500]
    if absent is not None:
        assert absent not in html


def _assert_header(msgs: list[Any], name: str, value: str) -> None:
    assert str(msgs[0][name]) == value, msgs[0][name]


def _assert_formula_kept_as_text(msgs: list[Any]) -> None:
    assert msgs[0]["Subject"] == "=cmd|' /C calc'!A0"


def _many_files(c: CampaignDir) -> None:
    (c.folder / "many").mkdir()
    for i in range(1500):
        (c.folder / "many" / f"{i}.pdf").write_bytes(b"x")


def _raw_csv(c: CampaignDir, data: bytes) -> None:
    (c.folder / "people.csv").write_bytes(data)


def _xlsx_formula(c: CampaignDir, formula: str, cached: str) -> None:
    """A workbook whose name cell is a formula with a saved value, as Excel writes it."""
    path = write_xlsx(c.folder / "people.xlsx", [["email", "name", "token"],
                                                 ["zoe@x.org", "=" + formula, "t"]])
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    sheet, count = re.subn(r'<c r="B2"[^>]*><f>(.*?)</f><v\s*/?>(</v>)?</c>',
                           lambda m: f'<c r="B2" t="str"><f>{m.group(1)}</f><v>{cached}</v></c>',
                           sheet)
    assert count == 1, sheet
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    _use_sheet(c, "people.xlsx")


def _truncated_xlsx(c: CampaignDir) -> None:
    good = write_xlsx(c.folder / "good.xlsx", [["email", "name", "token"], ["zoe@x.org", "Z", "t"]])
    (c.folder / "people.xlsx").write_bytes(good.read_bytes()[:1500])
    _use_sheet(c, "people.xlsx")


def _zip_bomb(c: CampaignDir) -> None:
    with zipfile.ZipFile(c.folder / "people.xlsx", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * 20_000_000)
    _use_sheet(c, "people.xlsx")


def _wide_sheet(c: CampaignDir) -> None:
    header = ["email", "name", "token"] + [f"c{i}" for i in range(10_000)]
    c.csv([header, ["zoe@x.org", "Z", "t"] + ["v"] * 10_000])


def _use_sheet(c: CampaignDir, name: str) -> None:
    path = c.folder / "campaign.yaml"
    path.write_text(path.read_text().replace("recipients: people.csv", f"recipients: {name}"))


CASES = cases()


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40


def build(basic, case: Case, port: int) -> CampaignDir:
    row = {**DEFAULT_ROW, **case.cells}
    c = basic(case.yaml + SMTP_BLOCK.format(port=port), html=case.html, text=case.text,
              rows=[list(row), list(row.values())])
    if case.setup:
        case.setup(c)
    return c


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, basic, smtp_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sheet_module, "MAX_XLSX_EXPANDED", 10_000_000)
    c = build(basic, case, smtp_server.port)
    out = tmp_path / "out"
    before = files_under(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["preview", str(c.folder / "campaign.yaml"), "-o", str(out)],
                           catch_exceptions=False)
    assert "Traceback" not in result.output
    created = {p for p in files_under(tmp_path) - before if not p.is_relative_to(out)}
    assert created <= {c.folder / "people.csv"} | set(c.folder.glob("*.xlsx")), created
    if case.error is not None:
        assert result.exit_code == case.exit, result.output
        assert re.search(case.error, result.output), result.output
        assert not list(out.glob("*.eml")) if out.exists() else True
    else:
        assert result.exit_code == 0, result.output
        emls = sorted(out.glob("*.eml"))
        assert all(p.parent == out for p in out.rglob("*.eml"))
        msgs = [parse(p.read_bytes()) for p in emls]
        assert all(not m.defects for m in msgs)
        assert case.check is not None
        case.check(msgs)
    sent = runner.invoke(cli, ["send", str(c.folder / "campaign.yaml"), "--yes", "-q"],
                         catch_exceptions=False)
    assert "Traceback" not in sent.output
    if case.error is not None:
        assert smtp_server.handler.received == []  # never a partial send
        assert sent.exit_code == case.exit
    else:
        assert sent.exit_code == 0, sent.output
        assert len(smtp_server.handler.received) == len(msgs)



def _mailmerge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailmerge", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("encoding, message", [
    ("rot13", "unknown encoding 'rot13'"), ("hex", "unknown encoding 'hex'"),
    ("base64", "unknown encoding 'base64'"), ("zlib", "unknown encoding 'zlib'"),
    ("idna", "'idna' is not an encoding a sheet is saved in"),
])
def test_an_encoding_no_sheet_is_saved_in_is_one_error(basic, encoding: str,
                                                       message: str) -> None:
    c = basic()
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text().replace(
        "recipients: people.csv", f"recipients: {{path: people.csv, encoding: {encoding}}}"))
    done = _mailmerge("check", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr


def test_yaml_nested_thousands_deep_is_one_error(tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text("name: t\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    done = _mailmerge("check", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"Error: {config}: the YAML is nested too deeply" in done.stderr


def test_an_attachment_name_with_a_line_break_is_a_row_problem(basic) -> None:
    c = basic("attachments: ['{{ file }}']\n",
              rows=[["email", "name", "file"], ["a@x.org", "A", "a\nb.pdf"]])
    (c.folder / "a\nb.pdf").write_bytes(b"%PDF")
    done = _mailmerge("preview", str(c.folder / "campaign.yaml"), "-o", str(c.root / "out"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "has a line break or another control character in its file name" in done.stdout


@pytest.mark.parametrize("out", ["/proc/mailmerge-test", "/dev/full/x"])
def test_an_output_folder_that_cannot_be_written_is_one_error(basic, out: str) -> None:
    c = basic()
    done = _mailmerge("preview", str(c.folder / "campaign.yaml"), "-o", out)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"Error: cannot write the dry run into {out}: " in done.stderr


def test_status_csv_to_an_unwritable_path_is_one_error(basic, smtp_server) -> None:
    c = basic(SMTP_BLOCK.format(port=smtp_server.port))
    assert _mailmerge("send", str(c.folder / "campaign.yaml"), "--yes", "-q").returncode == 0
    done = _mailmerge("status", str(c.folder / "campaign.yaml"), "--csv", "/proc/x/report.csv")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "Error: cannot write /proc/x/report.csv: " in done.stderr


def test_an_encrypted_workbook_is_named_as_such(basic) -> None:
    c = basic()
    # an OLE container whose directory lists an EncryptedPackage stream, as Excel writes a
    # workbook saved with a password; an old .xls has the same container without it
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    entry = "EncryptedPackage".encode("utf-16-le").ljust(64, b"\0") + bytes(64)
    (c.folder / "people.xlsx").write_bytes(header + bytes(512) + entry)
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text().replace("people.csv", "people.xlsx"))
    done = _mailmerge("check", str(config))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (f"Error: {c.folder / 'people.xlsx'}: the workbook is encrypted (saved with a "
            "password); open it in a spreadsheet program and save it again without a "
            "password, as .xlsx or .csv") in done.stderr


def test_a_loop_of_links_among_attachments_is_a_row_problem(basic) -> None:
    c = basic("attachments: ['{{ file }}']\n",
              rows=[["email", "name", "file"], ["a@x.org", "A", "loop1"]])
    (c.folder / "loop1").symlink_to("loop2")
    (c.folder / "loop2").symlink_to("loop1")
    done = _mailmerge("check", str(c.folder / "campaign.yaml"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "the attachment path 'loop1' cannot be followed: Symlink loop" in done.stdout


def test_init_onto_a_dangling_link_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "demo").symlink_to(tmp_path / "nowhere")
    done = _mailmerge("init", str(tmp_path / "demo"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "is a link to a folder that does not exist" in done.stderr
    assert not (tmp_path / "nowhere").exists()


# `check --spam` reads what a program called spamassassin prints: odd output is one error
_VERDICT = "X-Spam-Status: No, score=0.3 required=5.0 tests=NONE autolearn=no\n"


@pytest.mark.parametrize("stdout, status, message", [
    (b"", 0, "SpamAssassin gave no verdict"),
    (b"\x00\xff\xfegarbage \x1b[31m\n", 0, "SpamAssassin gave no verdict"),
    (b"X-Spam-Status: No, score=abc required=5.0\n\n", 0,
     "SpamAssassin's verdict has no score= number: X-Spam-Status: 'No, score=abc"),
    (b"X-Spam-Status: No, score=. required=5.0\n\n", 0,
     "SpamAssassin's verdict has no score= number"),
    (b"X-Spam-Status: Yes, score=9.9\n\n", 1, "SpamAssassin's verdict has no required= number"),
    (_VERDICT.encode() + b"\n", 7, "SpamAssassin gave no verdict (exit status 7): it broke"),
])
def test_odd_spamassassin_output_is_one_error(basic, tmp_path: Path, monkeypatch,
                                              stdout: bytes, status: int, message: str) -> None:
    c = basic()
    _fake_spamassassin(tmp_path, monkeypatch, stdout, status)
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml"), "--spam"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert message in result.output


def test_a_score_without_rules_and_odd_bytes_in_the_report_still_score(
        basic, tmp_path: Path, monkeypatch) -> None:
    c = basic()
    report = (_VERDICT + "\nContent analysis details:   (0.3 points, 5.0 required)\n\n"
              " pts rule name              description\n"
              "---- ---------------------- ------------------\n"
              " 0.3 ODD_RULE               \xff\x1b[2Jcleared\n\n").encode("latin-1")
    _fake_spamassassin(tmp_path, monkeypatch, report, 0)
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml"), "--spam"])
    assert result.exit_code == 0, result.output
    assert "row 2: 0.3 points (not spam; 5.0 is spam)" in result.output
    assert "ODD_RULE" in result.output
    from mailmerge.spamcheck import spam_score
    rule, = spam_score(b"Subject: x\r\n\r\nx\r\n").rules
    assert (rule.name, rule.description) == ("ODD_RULE", "\ufffd?[2Jcleared")  # no escape


def _fake_spamassassin(tmp_path: Path, monkeypatch, stdout: bytes, status: int) -> None:
    """A program called spamassassin, first on PATH, that prints ``stdout`` and exits
    with ``status`` (saying "it broke" on stderr when that is not 0 or 1)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "out").write_bytes(stdout)
    program = folder / "spamassassin"
    program.write_text(f"#!{sys.executable}\nimport sys\nsys.stdin.buffer.read()\n"
                       f"sys.stdout.buffer.write(open({str(folder / 'out')!r}, 'rb').read())\n"
                       f"sys.stderr.write('it broke\\n' if {status} > 1 else '')\n"
                       f"sys.exit({status})\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_cell_of_an_equals_sign_and_many_spaces_is_checked_at_once(basic) -> None:
    """The script-link prefilter backtracked over the spaces after an "=": 35 s for 50,000
    of them, in every check, preview and send; this cell took minutes."""
    c = basic(html=HTML, rows=[["email", "name", "token"],
                               ["a@x.org", "A", "=" + " " * 60_000 + "x"]])
    done = subprocess.run([sys.executable, "-m", "mailmerge", "check",
                           str(c.folder / "campaign.yaml")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def _spamassassin_printing(tmp_path: Path, monkeypatch, code: str) -> None:
    """A program called spamassassin, first on PATH, that reads its input and runs
    ``code`` (with sys imported)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "spamassassin"
    program.write_text(f"#!{sys.executable}\nimport sys\nsys.stdin.buffer.read()\n{code}\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_spamassassins_output_is_kept_up_to_a_limit(basic, tmp_path: Path,
                                                    monkeypatch) -> None:
    """Its output was read whole: 1.5 GB printed before a verdict took 2.97 GB."""
    c = basic()
    _spamassassin_printing(tmp_path, monkeypatch,
                           "for _ in range(48): sys.stdout.buffer.write(b'x' * 2**20)\n"
                           f"sys.stdout.write({_VERDICT!r})")
    info, peak = _spam_error_and_peak()
    assert peak < 8 * 2**20, peak  # 48 MB were printed
    assert str(info.value).startswith(
        "SpamAssassin gave no verdict in the first 1 MB of its output, which went on")
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml"), "--spam"])
    assert result.exit_code == 2 and "in the first 1 MB of its output" in result.output


def test_a_spamassassin_score_with_a_decimal_comma_is_read(tmp_path: Path,
                                                           monkeypatch) -> None:
    """`score=1,5` (a locale with a decimal comma) was read as 1.0."""
    from mailmerge.spamcheck import spam_score
    report = ("X-Spam-Status: No, score=1,5 required=5,0 tests=ODD_RULE autolearn=no\n\n"
              "Content analysis details:   (1,5 points, 5,0 required)\n\n"
              " pts rule name              description\n"
              "---- ---------------------- ------------------\n"
              " 1,5 ODD_RULE               odd\n\n")
    _spamassassin_printing(tmp_path, monkeypatch, f"sys.stdout.write({report!r})")
    score = spam_score(b"Subject: x\r\n\r\nx\r\n")
    assert (score.score, score.required) == (1.5, 5.0)
    assert [(r.name, r.points) for r in score.rules] == [("ODD_RULE", 1.5)]


def test_the_rules_after_a_long_message_are_still_read(tmp_path: Path, monkeypatch) -> None:
    """SpamAssassin's report follows the message it echoes, which may be megabytes: the
    end of its output is kept as well as its start."""
    from mailmerge.spamcheck import spam_score
    report = ("\nContent analysis details:   (0.3 points, 5.0 required)\n\n"
              " pts rule name              description\n"
              "---- ---------------------- ------------------\n"
              " 0.3 ODD_RULE               odd\n\n")
    _spamassassin_printing(tmp_path, monkeypatch,
                           f"sys.stdout.write({_VERDICT!r} + '\\n')\n"
                           "for _ in range(3): sys.stdout.buffer.write(b'x' * 2**20 + b'\\n')\n"
                           f"sys.stdout.write({report!r})")
    score = spam_score(b"Subject: x\r\n\r\nx\r\n")
    assert (score.score, [r.name for r in score.rules]) == (0.3, ["ODD_RULE"])


def test_a_run_keeps_the_first_rows_of_each_problem_and_counts_the_rest(basic) -> None:
    """Every duplicate row was kept to the end of the run: 1.2 million rows sharing 1,000
    addresses took 1.3 GB. Now the first rows of each problem are kept, and counted all."""
    from mailmerge import load_campaign
    from mailmerge.pipeline import check_campaign
    rows = [["email", "name"]] + [[f"p{i % 7}@example.org", "A"] for i in range(3000)]
    c = basic(rows=rows)
    report = check_campaign(load_campaign(c.folder / "campaign.yaml"))
    assert report.failed_rows == 2993
    assert len(report.problems) == 7 * 10  # the first 10 rows of each of the 7 problems
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 1
    assert "Problems in 2993 of 3000 rows:" in result.output, result.output
    assert ("recipient key 'p0@example.org' is also on row 2; each recipient must appear "
            "once; remove the duplicate row (addresses are compared without regard to case; "
            "name a unique column with `recipients: {key: ...}` to tell them apart) "
            "[rows 9, 16, 23, 30, 37, 44, 51, 58, 65, 72, ... (428 rows)]") in result.output


@pytest.mark.parametrize("error", ["Err:502", "Err:504", "#ERROR!"])
def test_check_refuses_libreoffice_and_google_sheets_errors_in_csv(basic, error: str) -> None:
    """LibreOffice's Err:502 and Google Sheets' #ERROR!, exported into a CSV cell, went out
    as text and check said ok."""
    c = basic(rows=[["email", "name"], ["a@x.org", error]])
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 1, result.output
    assert (f"row 2, column 'name' (cell B2): the cell holds {error}, a spreadsheet's "
            "formula error exported as text") in result.output
    assert "[rows" not in result.output  # used by the subject and the body: one row, once


def test_rows_of_problems_past_those_kept_are_counted_and_said(monkeypatch, capsys) -> None:
    """Past the first problems kept, rows are still counted, and the listing says so."""
    from mailmerge.cli.common import _print_problems
    from mailmerge.errors import RowError
    from mailmerge.pipeline import Outcome, ProblemRows, Report
    monkeypatch.setattr(ProblemRows, "KINDS_KEPT", 2)
    monkeypatch.setattr(ProblemRows, "ROWS_KEPT", 2)
    report = Report()
    for row in range(2, 12):
        report.count(Outcome(row, errors=(RowError(f"problem {row % 4}", row=row),)))
    assert (report.failed_rows, len(report.problems)) == (10, 4)
    _print_problems(report.problems)
    assert capsys.readouterr().out == (
        "  problem 2 [rows 2, 6, ... (3 rows)]\n"
        "  problem 3 [rows 3, 7, ... (3 rows)]\n"
        "  ... and 4 rows with other problems (the first 2 problems are listed)\n")


def test_spamassassins_errors_are_kept_up_to_a_limit_with_their_last_line(
        tmp_path: Path, monkeypatch) -> None:
    """Its standard error was read whole too; its last line is what the error shows."""
    _spamassassin_printing(tmp_path, monkeypatch,
                           "for _ in range(8): sys.stderr.buffer.write(b'x' * 2**20)\n"
                           "sys.stderr.write('\\nthe real reason\\n'); sys.exit(3)")
    info, peak = _spam_error_and_peak()
    assert str(info.value).startswith(
        "SpamAssassin gave no verdict (exit status 3): the real reason"), str(info.value)
    assert peak < 4 * 2**20, peak


def _spam_error_and_peak() -> tuple[pytest.ExceptionInfo[MailmergeError], int]:
    """The error spam_score raises on a one-line message, and the memory it peaked at."""
    import tracemalloc

    from mailmerge.spamcheck import spam_score
    tracemalloc.start()
    try:
        with pytest.raises(MailmergeError) as info:
            spam_score(b"Subject: x\r\n\r\nx\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info, peak
