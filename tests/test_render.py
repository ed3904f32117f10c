"""Rendering: addresses from untrusted cells, escaping, template errors, CSS, attachments."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmerge import TemplateError, iter_messages, load_campaign
from mailmerge.addresses import AddressProblem, parse_address_list
from mailmerge.css import canonical_html, inline_css, inline_template_once
from mailmerge.notices import Notice

from .conftest import CampaignDir, content, parse

# --- addresses ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", [
    'Carol, "CJ"', "Jones, Jr.", "<evil@attacker.example>", 'a"b, c <d@e.org>', "Zoë 🎉",
    "שלום עולם", "x@y.org, z@w.org",
])
def test_a_cell_in_a_display_name_stays_one_display_name(basic, cell: str) -> None:
    c = basic('to: "{{ name }} <{{ email }}>"\n', rows=[["email", "name"], ["a@x.org", cell]])
    (built, msg), = c.messages()
    addresses = msg["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in addresses] == [(cell, "a@x.org")]
    assert built.envelope_to == ("a@x.org",)


def test_a_cell_that_is_the_whole_item_may_hold_a_list(basic) -> None:
    c = basic('cc: "{{ cc }}"\n', rows=[["email", "name", "cc"],
                                        ["a@x.org", "A", '"Doe, J" <j@x.org>; x, k@x.org']])
    assert c.errors() == [
        f"{c.folder}/people.csv, row 2, column 'cc': `cc`: '\"Doe, J\" <j@x.org>; x' is not a "
        "valid email address (There can't be anything after the email address.); correct the "
        "cell in the sheet"]
    c = basic('cc: "{{ cc }}"\n', rows=[["email", "name", "cc"],
                                        ["a@x.org", "A", '"Doe, J" <j@x.org>, k@x.org']])
    (built, msg), = c.messages()
    assert [(a.display_name, a.addr_spec) for a in msg["Cc"].addresses] == [
        ("Doe, J", "j@x.org"), ("", "k@x.org")]


@pytest.mark.parametrize("cell, reason", [
    ("bob@", "There must be something after the @-sign."),
    ("a@@b.org", "The part after the @-sign contains invalid characters: '@'."),
    ("not an address", "An email address must have an @-sign."),
    ("a" * 2000 + "@x.org", "holds 2,006 characters; a name or address may have at most 1,000"),
])
def test_bad_addresses_name_the_cell(basic, cell: str, reason: str) -> None:
    c = basic(rows=[["email", "name"], [cell, "A"]])
    (message,) = c.errors()
    assert message.startswith(f"{c.folder}/people.csv, row 2, column 'email': `to`: ")
    assert reason in message
    assert message.endswith("; correct the cell in the sheet")


@pytest.mark.parametrize("column", ["name", "email"])
def test_line_breaks_in_address_cells_are_refused(basic, column: str) -> None:
    row = {"email": "a@x.org", "name": "A"}
    row[column] += "\r\nBcc: victim@x.org"
    c = basic('to: "{{ name }} <{{ email }}>"\nsubject: Hello\n',
              rows=[["email", "name"], [row["email"], row["name"]]])
    assert c.errors() == [
        f"{c.folder}/people.csv, row 2, column '{column}': `to`: holds a line break or control "
        "character, which could inject header fields; correct the cell in the sheet"]


@pytest.mark.parametrize("field", ["subject", "headers"])
def test_line_breaks_in_header_cells_are_refused(basic, field: str) -> None:
    extra = ("headers: {X-Note: '{{ name }}'}\nsubject: Hi\n" if field == "headers"
             else "subject: '{{ name }}'\n")
    c = basic(extra, rows=[["email", "name"], ["a@x.org", "Hi\nBcc: v@x.org"]])
    assert c.errors() == [
        f"{c.folder}/people.csv, row 2, column 'name': `{field}`: holds a line break or control "
        "character, which could inject header fields; correct the cell in the sheet"]


def test_structured_address_form(basic) -> None:
    c = basic('to: [{name: "{{ name }}", address: "{{ email }}"}, {address: boss@acme.example}]\n',
              rows=[["email", "name"], ["a@x.org", "Doe, <Jane>"]])
    (built, msg), = c.messages()
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Doe, <Jane>", "a@x.org"), ("", "boss@acme.example")]


def test_parse_address_list_of_plain_text() -> None:
    assert [str(a) for a in parse_address_list('"Doe, J" <j@x.org>, k@x.org,,')] == [
        '"Doe, J" <j@x.org>', "k@x.org"]
    with pytest.raises(AddressProblem):
        parse_address_list("j@x.org <k@x.org")


def test_a_row_with_no_recipient(basic) -> None:
    c = basic(rows=[["email", "name"], ["", "A"]])
    assert c.errors() == [
        f"{c.folder}/campaign.yaml, row 2: `to`: the message has no recipient: `to`, `cc` and "
        "`bcc` are all empty; fill in the address cell, or remove the row"]


# --- templates ---------------------------------------------------------------------------

def test_html_is_autoescaped_and_text_is_not(basic) -> None:
    cell = '<script>alert(1)</script> "quoted" & <a href="javascript:x">'
    c = basic(html='<p title="{{ name }}">{{ name }}</p>', text="{{ name }}\n",
              rows=[["email", "name"], ["a@x.org", cell]])
    (built, msg), = c.messages()
    html = content(msg, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt; &#34;quoted&#34;' in html
    assert content(msg, "plain") == cell + "\n"


def test_undefined_name_names_the_template_line_and_the_columns(basic) -> None:
    c = basic(html="<p>\n{{ name }}\n{{ nmae }}</p>")
    root = c.root
    assert c.errors() == [
        f"{root}/templates/mail.html, line 3, row 2: 'nmae' is undefined; the sheet has no column "
        "'nmae' (did you mean 'name'?); its columns are: email, name (a column with spaces is "
        'row["Column Name"])']


def test_a_number_kept_as_text_gets_the_conversion_hint(basic) -> None:
    c = basic(text="{% if points > 1000 %}gold{% endif %}\n",
              rows=[["email", "name", "points"], ["a@x.org", "A", "1200"]])
    (message,) = c.errors()
    assert message.startswith(f"{c.root}/templates/mail.txt, line 1, row 2: TypeError: ")
    assert message.endswith("; CSV cells are text: convert numbers with |int or |float, e.g. "
                            "{% if points|int > 1000 %}")


def test_a_type_error_without_numbers_as_text_gets_no_conversion_hint(basic) -> None:
    c = basic(text="{{ name - 1 }}\n", rows=[["email", "name"], ["a@x.org", "Ann"]])
    (message,) = c.errors()
    assert message.startswith(f"{c.root}/templates/mail.txt, line 1, row 2: TypeError: ")
    assert "CSV cells are text" not in message


def test_a_missing_attribute_is_not_taken_for_a_missing_column(basic) -> None:
    c = basic(text="{{ row.nmae }}\n")
    (message,) = c.errors()
    assert "has no attribute 'nmae'" in message and "the sheet has no column" not in message


def test_errors_in_a_row_are_all_listed(basic) -> None:
    c = basic('subject: "{{ subjcet }}"\n', text="{{ x }}\n", rows=[["email", "name"], ["bob@", "A"]])
    errors = c.errors()
    assert len(errors) == 3
    assert "column 'email': `to`" in errors[0]
    assert "line 7, row 2: `subject`: 'subjcet' is undefined" in errors[1]
    assert "mail.txt, line 1, row 2: 'x' is undefined" in errors[2]


def test_template_syntax_error_stops_the_campaign(basic) -> None:
    c = basic(html="<p>\n{% if name %}\n</p>")
    with pytest.raises(TemplateError) as info:
        list(iter_messages(load_campaign(c.folder / "campaign.yaml")))
    assert str(info.value) == (
        f"{c.root}/templates/mail.html, line 2: template syntax error: Unexpected end of "
        "template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The "
        "innermost block that needs to be closed is 'if'.; every {% if %} needs its {% endif %} "
        "and every {% for %} its {% endfor %}")


def test_templates_cannot_reach_python_internals(basic) -> None:
    c = basic(text="{{ ''.__class__.__mro__[1].__subclasses__() }}\n", html=None)
    (message,) = c.errors()
    assert "access to attribute '__class__' of 'str' object is unsafe" in message
    assert message.endswith("templates may not reach Python internals")


def test_columns_with_spaces_via_row(basic) -> None:
    c = basic("subject: Hi\n", text='{{ row["First Name"] }} {{ points > 1000 }}\n', html=None)
    c.xlsx([["email", "First Name", "points"], ["a@x.org", "Zoë", 1001]])
    c.yaml((c.folder / "campaign.yaml").read_text().replace("people.csv", "people.xlsx"))
    (built, msg), = c.messages()
    assert content(msg, "plain") == "Zoë True\n"


def test_include_and_extends_work(cdir: CampaignDir) -> None:
    cdir.file("templates/base.html", "<html><head><style>p {color: red}</style></head>"
                                     "<body>{% block body %}{% endblock %}</body></html>")
    cdir.file("templates/footer.html", "<p>Bye {{ name }}</p>")
    cdir.file("templates/mail.html", '{% extends "base.html" %}{% block body %}<p>Hi {{ name }}'
                                     '</p>{% include "footer.html" %}{% endblock %}')
    cdir.csv([["email", "name"], ["a@x.org", "Zoë"]])
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              "templates: {html: ../templates/mail.html}\n")
    (built, msg), = cdir.messages()
    html = content(msg, "html")
    assert '<p style="color:red">Hi Zoë</p><p style="color:red">Bye Zoë</p>' in html


# --- CSS ---------------------------------------------------------------------------------

NEWSLETTER = """<!DOCTYPE html><html><head><style>
.box { padding: 4px; } a { color: blue; } td.x { border: 1px solid #000; }
@media (max-width: 480px) { .box { padding: 0; } }
</style></head><body>
<div class="box">{% if points > 100 %}<p>Gold {{ name }}</p>{% else %}<p>Plain</p>{% endif %}</div>
<a href="https://acme.example/?u={{ token }}&amp;v=1">link</a>
<table>{% for i in range(3) %}<tr><td class="x">{{ i }} {{ name }}</td></tr>{% endfor %}</table>
{# a comment with <b> tags #}<p>{{ "<b>" }} {{ 3 > 2 }}</p>
</body></html>"""


def test_inlining_once_equals_inlining_every_message() -> None:
    import jinja2

    prepared = inline_template_once(NEWSLETTER)
    assert prepared.source is not None, prepared.reason
    assert "{{ token }}" in prepared.source  # not percent-encoded
    env = jinja2.Environment(autoescape=True)
    for row in ({"points": 500, "name": "Zoë <3", "token": "a b"},
                {"points": 5, "name": "O'Neil & Co", "token": "x%y"}):
        once = env.from_string(prepared.source).render(row)
        each = inline_css(env.from_string(NEWSLETTER).render(row))
        assert canonical_html(once) == canonical_html(each)


@pytest.mark.parametrize("template, reason", [
    ('<style>p {color: {{ c }}}</style><p>x</p>', "a <style> block contains Jinja syntax"),
    ('<style>.a {color: red}</style><p class="{{ c }}">x</p>', "a class attribute is computed"),
    ('<style>p {color: red}</style><p {{ attrs }}>x</p>', "stands inside a tag"),
    ('<style>p {color: red}</style><p {% if a %}id="x"{% endif %}>x</p>', "inside a tag"),
    ('<style>tr:nth-child(2) td {color: red}</style>{% for r in rows %}<tr><td>x</td></tr>'
     '{% endfor %}', "structural selectors"),
    ('<style>p {color: red}</style>{% include "x.html" %}', "extends or includes"),
    ('<style>p {color: red}</style><p>{{ html|safe }}</p>', "unescaped HTML"),
])
def test_inlining_once_is_refused_where_it_could_differ(template: str, reason: str) -> None:
    prepared = inline_template_once(template)
    assert prepared.source is None
    assert reason in (prepared.reason or "")


def test_fallback_to_inlining_every_message_still_styles(basic) -> None:
    c = basic(html='<html><head><style>.vip {color: red}</style></head><body>'
                   '<p class="{{ kind }}">{{ name }}</p></body></html>',
              rows=[["email", "name", "kind"], ["a@x.org", "A", "vip"], ["b@x.org", "B", "std"]])
    (_, first), (_, second) = c.messages()
    assert '<p class="vip" style="color:red">A</p>' in content(first, "html")
    assert '<p class="std">B</p>' in content(second, "html")


# --- attachments -------------------------------------------------------------------------

def attach_campaign(cdir: CampaignDir, cells: list[str], entry: str = "{{ file }}"
                    ) -> CampaignDir:
    cdir.file("templates/mail.txt", "x\n")
    cdir.csv([["email", "file"], *[[f"p{i}@x.org", cell] for i, cell in enumerate(cells)]])
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              f"templates: {{text: ../templates/mail.txt}}\nattachments: ['{entry}']\n")
    return cdir


def test_attachment_paths_stay_inside_the_campaign_folder(cdir: CampaignDir) -> None:
    cdir.file("secret.txt", "secret")
    cdir.file("campaign/docs/a.pdf", b"%PDF")
    os.symlink(cdir.root / "secret.txt", cdir.folder / "docs" / "link.pdf")
    (cdir.folder / "docs" / "dir.pdf").mkdir()
    c = attach_campaign(cdir, ["../secret.txt", str(cdir.root / "secret.txt"), "docs/link.pdf",
                               "docs/dir.pdf", "docs/missing.pdf", "/dev/null", "docs/a.pdf", ""])
    folder = c.folder
    outcomes = c.outcomes()
    messages = [[str(e) for e in o.errors] for o in outcomes]
    where = f"{folder}/campaign.yaml, line 6"
    assert messages[0] == [f"{where}, row 2: `attachments`: the attachment path '../secret.txt' "
                           f"points outside {folder}; only files inside that folder may be used"]
    assert "points outside" in messages[1][0]
    assert "points outside" in messages[2][0]
    assert messages[3] == [f"{where}, row 5: `attachments`: the attachment 'docs/dir.pdf' is not "
                           "a regular file"]
    assert messages[4] == [f"{where}, row 6: `attachments`: the attachment 'docs/missing.pdf' does "
                           f"not exist (looked for {folder}/docs/missing.pdf)"]
    assert "points outside" in messages[5][0]
    assert outcomes[6].ok and outcomes[6].built.rendered.attachments[0].filename == "a.pdf"
    assert outcomes[7].ok and outcomes[7].built.rendered.attachments == ()


def test_attachment_globs(cdir: CampaignDir) -> None:
    for name in ("b.pdf", "a.pdf", "c.txt"):
        cdir.file(f"campaign/docs/{name}", b"x")
    for i in range(101):
        cdir.file(f"campaign/many/{i}.pdf", b"x")
    cdir.file("outside.pdf", b"x")
    # the pattern is the entry's own text; the cells fill in names
    c = attach_campaign(cdir, ["docs", "nothing", "many", "..", "d*"], "{{ file }}/*.pdf")
    outcomes = c.outcomes()
    assert [a.filename for a in outcomes[0].built.rendered.attachments] == ["a.pdf", "b.pdf"]
    assert "matches no file" in str(outcomes[1].errors[0])
    assert "matches more than 100 files; make it narrower" in str(outcomes[2].errors[0])
    assert "points outside" in str(outcomes[3].errors[0])
    assert "matches no file" in str(outcomes[4].errors[0])  # "d*" is a name, not a pattern
    # a cell that holds a pattern names a file of that name: never several files
    c = attach_campaign(cdir, ["docs/*.pdf", "docs/[ab].pdf"])
    assert all("does not exist" in str(o.errors[0]) for o in c.outcomes())


def test_attachments_over_the_cap_are_refused_before_they_are_read(cdir: CampaignDir) -> None:
    cdir.file("campaign/big.bin", b"\0" * 1_500_000)
    cdir.file("campaign/small.pdf", b"%PDF" * 100)
    c = attach_campaign(cdir, ["big.bin", "small.pdf"])
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text() + "max_attachment_size: 1MB\n")
    big, small = c.outcomes()
    assert [str(e) for e in big.errors] == [
        f"{c.folder}/campaign.yaml, line 6, row 2: `attachments`: the attachments of this "
        "message hold 1,500,000 bytes (the largest, big.bin, 1,500,000); at most 1,000,000 may "
        "go in one message (`max_attachment_size`)"]
    assert small.ok
    config.write_text(config.read_text().replace("max_attachment_size: 1MB\n", ""))
    assert all(o.ok for o in c.outcomes())  # the default, 25 MB, takes both


@pytest.mark.parametrize("written, size", [("10MB", 10_000_000), ("512 KiB", 524_288),
                                           ("2048", 2048), ("1.5 mb", 1_500_000)])
def test_max_attachment_size_takes_units(cdir: CampaignDir, written: str, size: int) -> None:
    c = attach_campaign(cdir, [""])
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text() + f"max_attachment_size: '{written}'\n")
    assert load_campaign(config).max_attachment_size == size


@pytest.mark.parametrize("text, cell, message", [
    ("{{ 'a' * 10**10 }}", "1", "repeating a value of 1 items 10,000,000,000 times would make "
                                "more than 10,000,000"),
    ("{{ '-' * (width|int) }}", "99999999999", "repeating a value of 1 items 99,999,999,999 "
                                               "times would make more than 10,000,000"),
    ("{{ [0] * (width|int) }}", "20000000", "repeating a value of 1 items 20,000,000 times"),
    ("{{ lipsum(100000000) }}", "1", "lipsum(100000000) would make more than 100 paragraphs"),
    ("{{ 9 ** (9 ** 9) }}", "1", "9 ** 387420489 would have more than 10,000 digits"),
])
def test_a_template_cannot_make_a_value_too_large_for_mail(basic, text: str, cell: str,
                                                           message: str) -> None:
    c = basic(text=text + "\n", html=None, rows=[["email", "name", "width"],
                                                 ["a@x.org", "A", cell]])
    (error,) = c.errors()
    assert error.startswith(f"{c.root}/templates/mail.txt, line 1, row 2: {message}")
    assert error.endswith("; a cell or a template asks for more than a message can hold")


def test_a_template_that_calls_itself_without_end_is_a_row_problem(basic) -> None:
    c = basic(text="{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}\n", html=None)
    (error,) = c.errors()
    assert "RecursionError: the template calls or includes itself without end" in error
    assert error.endswith("; give the macro or {% include %} a condition that ends it")


NESTED = ("{{ name }}\n{% for i in range(n|int) %}\n{% for j in range(n|int) %}{% endfor %}"
          "{% endfor %}done\n")


def test_a_row_that_renders_too_long_is_a_row_problem_and_the_others_go_on(
        basic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailmerge.render.ROW_SECONDS", 0.3)
    c = basic(text=NESTED, html=None, rows=[["email", "name", "n"], ["a@x.org", "A", "100000"],
                                            ["b@x.org", "B", "3"]])
    slow, fast = c.outcomes()
    assert [str(e) for e in slow.errors] == [
        f"{c.root}/templates/mail.txt, line 3, row 2: rendering this row took more than 0.3 s "
        "(a loop over a huge range, or loops inside loops); make the loops smaller: each row "
        "must render within that time"]
    assert fast.ok and fast.built is not None and b"done" in fast.built.data


def test_a_template_too_slow_for_every_row_stops_the_run(basic,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailmerge.render.ROW_SECONDS", 0.2)
    rows = [["email", "name", "n"], *[[f"p{i}@x.org", "P", "100000"] for i in range(50)]]
    c = basic(text=NESTED, html=None, rows=rows)
    seen = []
    with pytest.raises(TemplateError) as info:
        seen.extend(iter_messages(load_campaign(c.folder / "campaign.yaml")))
    assert len(seen) == 2  # the third slow row ends it, not the fiftieth
    assert str(info.value) == (
        f"{c.root}/templates/mail.txt, line 3: rows 2, 3 and 4 each took more than 0.2 s to "
        "render (a loop over a huge range, or loops inside loops); make the loops smaller; at "
        "this pace the sheet would take hours")


def test_a_where_filter_that_runs_too_long_is_a_row_problem(
        basic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailmerge.render.ROW_SECONDS", 0.3)
    c = basic("where: '((range(99999)|list) * 99)|map(\"string\")|join|length > 0'\n")
    (error,) = c.errors()
    assert "`where`: rendering this row took more than 0.3 s" in error


def test_a_where_filter_cannot_raise_a_huge_power(basic) -> None:
    c = basic("where: '9 ** (9 ** 9) > 1'\n")
    (error,) = c.errors()
    assert "9 ** 387420489 would have more than 10,000 digits" in error


def test_ordinary_repetition_and_powers_still_work(basic) -> None:
    c = basic(text="{{ '=' * 20 }} {{ 2 ** 10 }} {{ [1, 2] * 3 }}\n", html=None)
    (_built, msg), = c.messages()
    assert content(msg, "plain") == "==================== 1024 [1, 2, 1, 2, 1, 2]\n"


def test_an_include_that_links_out_of_the_template_folder_is_refused(basic) -> None:
    c = basic(text="{% include 'footer.txt' %}\n", html=None)
    (c.root / "secret.txt").write_text("the secret\n")
    (c.root / "templates" / "footer.txt").symlink_to(c.root / "secret.txt")
    (error,) = c.errors()
    assert (f"the template 'footer.txt' is a link to {c.root / 'secret.txt'}, outside the "
            "template folder") in error
    (c.root / "templates" / "footer.txt").unlink()
    (c.root / "templates" / "footer.txt").write_text("a footer\n")
    (_built, msg), = c.messages()
    assert content(msg, "plain") == "a footer\n\n"


def test_the_template_the_campaign_names_may_itself_be_a_link(basic) -> None:
    c = basic(text=None, html=None)
    (c.root / "elsewhere").mkdir()
    (c.root / "elsewhere" / "mail.txt").write_text("Hello {{ name }}\n")
    (c.root / "templates" / "mail.txt").symlink_to(c.root / "elsewhere" / "mail.txt")
    config = c.folder / "campaign.yaml"
    config.write_text(config.read_text().replace("templates:\n", "templates:\n  text: "
                                                 "../templates/mail.txt\n"))
    (_built, msg), = c.messages()
    assert content(msg, "plain").startswith("Hello ")


def test_a_media_rule_keeps_important_so_it_can_override_inlined_styles() -> None:
    html = inline_css("<html><head><style>.c { padding: 32px; } @media (max-width: 620px) "
                      "{ .c { padding: 20px !important; } }</style></head>"
                      '<body><div class="c">x</div></body></html>')
    assert '<div class="c" style="padding:32px">' in html
    assert re.search(r"@media \(max-width: 620px\) \{\s*\.c \{\s*padding: 20px !important", html)


STYLES = ("<style>p { color: red } .c { padding: 32px; margin: 0 !important } a:hover "
          "{ color: blue } @media (max-width: 620px) { .c { padding: 20px !important } }"
          "</style>", "<style>p { color: green } #x { font-weight: bold }</style>")


def test_inlining_css_fetches_nothing_an_import_names(basic) -> None:
    """cssutils fetched the sheet of every @import while parsing a <style> block, with no
    time-out: a check or preview made a request (and one that never answered hung it)
    for a rule that premailer leaves out of what it writes anyway."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    asked: list[bytes] = []
    done = threading.Event()

    def serve() -> None:  # answers at once, so that a fetch is counted, not hung on
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                asked.append(conn.recv(1000))
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/css\r\n\r\n"
                              b"p { color: green }")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        style = (f"<style>@import url(http://127.0.0.1:{port}/fonts.css); "
                 "p { color: red }</style>")
        page = f"<html><head>{style}</head><body><p>x</p></body></html>"
        assert '<p style="color:red">x</p>' in inline_css(page)
        c = basic(html=f"<html><head>{style}</head><body><p>Hi {{{{ name }}}}</p></body></html>",
                  rows=[["email", "name"], ["a@x.org", "Ann"], ["b@x.org", "Bo"]])
        htmls = [content(msg, "html") for _, msg in c.messages()]
        assert '<p style="color:red">Hi Ann</p>' in htmls[0]
        assert all("@import" not in html for html in htmls)
    finally:
        done.set()
        thread.join()
        server.close()
    assert asked == []


def test_the_rules_of_a_style_block_worked_out_once_inline_as_premailer_does() -> None:
    """inline_css keeps each style block's rules for the next document: the same blocks
    over other bodies, in the other order, and again, inline as a plain premailer does."""
    import logging

    import premailer

    bodies = ['<p class="c">a</p><a href="https://x.example">l</a>',
              '<div class="c" id="x"><p>b</p></div>', "<p style='color: black'>c</p>"]
    for round_ in range(2):
        for styles in (STYLES, STYLES[::-1], STYLES[:1]):
            for body in bodies:
                page = f"<html><head>{''.join(styles)}</head><body>{body}</body></html>"
                plain = premailer.Premailer(
                    page, keep_style_tags=False, remove_classes=False,
                    disable_validation=True, strip_important=False,
                    disable_link_rewrites=True, allow_network=False,
                    cssutils_logging_level=logging.CRITICAL).transform(pretty_print=False)
                assert inline_css(page) == plain, (round_, styles, body)
    assert "color:red" in inline_css(f"<html><head>{STYLES[0]}</head><body><p>x</p></body>"
                                     "</html>")


def test_macros_imported_from_another_template_and_the_globals_work(cdir: CampaignDir) -> None:
    cdir.file("templates/macros.html", '{% macro hello(who) %}<b>Hi {{ who }}</b>{% endmacro %}')
    cdir.file("templates/mail.html", '{% import "macros.html" as m %}{% from "macros.html" '
                                     "import hello %}<p>{{ m.hello(name) }} {{ hello('x') }} "
                                     "{% for i in range(2) %}{{ i }}{% endfor %} "
                                     "{{ lipsum(1, html=False)[:5] }}</p>")
    cdir.csv([["email", "name"], ["a@x.org", "Zoë"], ["b@x.org", "Bo"]])
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
    htmls = [content(msg, "html") for _, msg in cdir.messages()]
    assert "<p><b>Hi Zoë</b> <b>Hi x</b> 01 " in htmls[0]
    assert "<p><b>Hi Bo</b> <b>Hi x</b> 01 " in htmls[1]


ESCAPING = """{% macro box(x) %}<i>{{ x }}</i>{% endmacro -%}
{{ text }}|{{ number }}|{{ safe }}|{{ text|safe }}|{{ text ~ number }}|{{ box(text) }}
{% set block %}<b>{{ text }}</b>{% endset %}{{ block }}|{{ block|length }}
{% filter upper %}{{ text }}{% endfilter %}|{{ [text, 2]|join(", ") }}|{{ none_value }}
{% for item in items %}{{ item }}{{ loop.index }}{% endfor %}|{{ text|e }}|{{ text|forceescape }}"""


def test_autoescaped_output_is_what_jinja2_itself_makes(tmp_path) -> None:
    """The renderer's own escape of {{ }} output (a plain text, not Markup) changes nothing
    that a template can see: the same template, rendered by a plain jinja2 sandbox."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment
    from markupsafe import Markup

    from mailmerge.render import make_environment

    (tmp_path / "t.html").write_text(ESCAPING, encoding="utf-8")
    values = {"text": "<a href=\"x\">Tom & 'Jerry'</a>", "number": 42,
              "safe": Markup("<em>ok</em>"), "none_value": None,
              "items": ["<x>", 3, Markup("<y>")]}
    ours = make_environment([tmp_path]).get_template("t.html").render(values)
    plain = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(tmp_path)),
                                 autoescape=True).get_template("t.html").render(values)
    assert ours == plain
    assert "&lt;a href=&#34;x&#34;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;|42|<em>ok</em>" in ours
    assert "<i>&lt;a href" in ours and "<b>&lt;a href" in ours  # not escaped twice


def test_templates_of_a_row_share_one_context_as_if_each_had_its_own(tmp_path) -> None:
    """fill() renders over the row's context without copying it: it renders what render()
    does, a template's own {% set %} stays its own, a column may hide a global, and an
    error still names the template's line."""
    import traceback

    import jinja2

    from mailmerge.fill import fill, row_context
    from mailmerge.render import make_environment

    env = make_environment([tmp_path])
    setter = env.from_string("{% set name = 'set here' %}{% set range = 3 %}{{ name }}"
                             "{{ range }}")
    reader = env.from_string("{{ name }}|{{ row.name }}|{{ lipsum is defined }}|"
                             "{{ range(2)|list if range is callable else range }}")
    values = {"name": "<Ann>", "range": "a column"}
    ctx = row_context(env.globals, values)
    before = dict(ctx)
    for template in (setter, reader, setter, reader):
        assert fill(template, ctx) == template.render({**values, "row": values})
    assert ctx == before  # nothing a template set reached the shared context
    assert fill(reader, ctx) == "<Ann>|<Ann>|True|a column"
    assert fill(reader, row_context(env.globals, {"name": "x"})) == "x|x|True|[0, 1]"

    broken = env.from_string("line one\n{{ missing.attribute }}")
    with pytest.raises(jinja2.UndefinedError) as raised:
        fill(broken, ctx)
    assert any(entry.lineno == 2 and entry.filename == "<template>"
               for entry in traceback.extract_tb(raised.value.__traceback__))


def test_contexts_made_from_the_first_carry_nothing_from_one_render_to_the_next(
        tmp_path) -> None:
    """fill() makes each render's jinja2 Context from what the template's first one held:
    a layout's blocks and super(), {% set %} and its exports, an {% autoescape %} block,
    and the autoescape setting by file name all render as render() renders them, over and
    over; a jinja2 whose contexts are of another class makes its own."""
    from jinja2.runtime import Context

    from mailmerge import fill as fill_module
    from mailmerge.fill import fill, row_context
    from mailmerge.render import make_environment

    (tmp_path / "layout.html").write_text(
        "<title>{% block title %}Base{% endblock %}</title>{% set shown = name %}"
        "<p>{% block body %}{{ shown }}{% endblock %}</p>")
    (tmp_path / "page.html").write_text(
        '{% extends "layout.html" %}{% block title %}{{ super() }}: {{ name }}{% endblock %}'
        "{% block body %}{% set inner = name ~ '!' %}{{ inner }}{% autoescape false %}"
        "{{ name }}{% endautoescape %}{{ name }}{% endblock %}")
    (tmp_path / "plain.txt").write_text("{{ name }}{% set name = 'mine' %}{{ name }}")
    env = make_environment([tmp_path])
    page, plain = env.get_template("page.html"), env.get_template("plain.txt")
    for name in ("<Ann>", "Bob & co", "<Ann>"):
        values = {"name": name}
        ctx = row_context(env.globals, values)
        for template in (page, plain, page):
            assert fill(template, ctx) == template.render({**values, "row": values})
        assert ctx == row_context(env.globals, values)
    assert fill(page, row_context(env.globals, {"name": "<b>"})) == (
        "<title>Base: &lt;b&gt;</title><p>&lt;b&gt;!<b>&lt;b&gt;</p>")
    assert fill(plain, row_context(env.globals, {"name": "<b>"})) == "<b>mine"
    for template in (page, plain):  # what a render may change is its own
        make, ctx = fill_module._makers[id(template)][1], row_context(env.globals, {})
        first, second = make(template, ctx), make(template, ctx)
        jinjas = template.new_context(ctx, shared=True)
        for made in (first, second):
            assert {**vars(made), "eval_ctx": vars(made.eval_ctx)} == {
                **vars(jinjas), "eval_ctx": vars(jinjas.eval_ctx)}
        for mutable in ("vars", "exported_vars", "blocks", "eval_ctx"):
            assert getattr(first, mutable) is not getattr(second, mutable), mutable
        assert all(first.blocks[name] is not second.blocks[name] for name in first.blocks)

    class Counted(Context):
        made = 0

        def __init__(self, *args: object, **kwargs: object) -> None:
            Counted.made += 1
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    other = make_environment([tmp_path])
    other.context_class = Counted
    template = other.get_template("page.html")
    for name in ("x", "y"):
        values = {"name": name}
        assert fill(template, row_context(other.globals, values)) == template.render(
            {**values, "row": values})
    assert Counted.made == 5  # the first context, then each of four renders: its own
    assert fill_module._makers  # the makers of the templates above, kept while they live


def in_fresh_python(script: str) -> str:
    """What ``script`` prints, run by a new interpreter (for what a process does as it
    starts or ends)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_row_timer_is_stopped_when_the_process_ends() -> None:
    """Python puts SIGALRM's default (which kills) back as it ends: a tick due then ended a
    `send` that had checked a small sheet in its own process with exit code -14."""
    printed = in_fresh_python(
        "import atexit, signal\nfrom mailmerge.render import TimeBudget\n"
        "with TimeBudget(0.4):\n    pass\n"
        "armed = signal.getitimer(signal.ITIMER_REAL)[1] > 0\n"
        "atexit._run_exitfuncs()\n"
        "print(armed, signal.getitimer(signal.ITIMER_REAL))\n")
    assert printed.strip() == "True (0.0, 0.0)"


def test_css_is_inlined_without_loading_an_http_library() -> None:
    """premailer imports one to fetch linked style sheets, which mailmerge never lets it
    do; a stand-in takes its place while premailer is imported, and only then."""
    printed = in_fresh_python(
        "import sys\nfrom mailmerge.css import inline_css\n"
        "html = inline_css('<html><head><style>p {color: red}</style></head>"
        "<body><p>x</p></body></html>')\n"
        "print('color:red' in html.replace(' ', ''), 'requests' in sys.modules,"
        " 'urllib3' in sys.modules)\n"
        "import requests\nprint(callable(requests.get))\n")
    assert printed.split() == ["True", "False", "False", "True"]


def test_a_thread_importing_the_http_library_while_premailer_is_imported_gets_it_whole(
        ) -> None:
    """The stand-in is in ``sys.modules`` for the length of premailer's import: another
    thread that imports ``requests`` then gets the stand-in, which must work as the real
    module (a library user's thread, not mailmerge's). The import waits, as premailer's own
    module is looked up, until the thread holds the stand-in, so the moment is certain."""
    printed = in_fresh_python(
        "import sys, threading\n"
        "seen, holding = [], threading.Event()\n"
        "def use():\n"
        "    import requests\n"
        "    seen.append(type(requests).__name__)\n"
        "    holding.set()\n"
        "    import requests.exceptions\n"
        "    seen.append((callable(requests.get), requests.exceptions.HTTPError.__name__))\n"
        "thread = threading.Thread(target=use)\n"
        "class During:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'premailer.premailer' and not thread.is_alive():\n"
        "            thread.start()\n"
        "            holding.wait(30)\n"
        "        return None\n"
        "sys.meta_path.insert(0, During())\n"
        "from mailmerge.css import inline_css\n"
        "html = inline_css('<html><head><style>p {color: red}</style></head>"
        "<body><p>x</p></body></html>')\n"
        "thread.join(30)\n"
        "print(seen, 'color:red' in html.replace(' ', ''), type(sys.modules['requests']))\n")
    assert printed.strip() == "['_Deferred', (True, 'HTTPError')] True <class 'module'>"


# --- what is kept between runs ---------------------------------------------------------

RUN_AND_SHOW = (
    "import sys\nfrom pathlib import Path\nfrom mailmerge import iter_messages, load_campaign\n"
    "notices = []\n"
    "for outcome in iter_messages(load_campaign(Path(sys.argv[1])), notices=notices):\n"
    "    assert outcome.built is not None, outcome.errors\n"
    "    print(outcome.built.data.split(b'\\r\\n\\r\\n', 1)[1].decode())\n"
    "print('inliner imported:', 'premailer' in sys.modules)\n"
    "print(*notices, sep='\\n')\n")


def run_in_fresh_python(config: Path, kept: Path | None) -> tuple[str, bool]:
    """The bodies a new process builds for ``config``, and whether it imported the
    inliner; with ``kept``, the folder of what runs keep, else none kept."""
    import subprocess
    import sys

    env = {**os.environ, "MAILMERGE_CACHE_DIR": str(kept)} if kept else {
        **os.environ, "MAILMERGE_NO_CACHE": "1"}
    done = subprocess.run([sys.executable, "-c", RUN_AND_SHOW, str(config)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    body, _, tail = done.stdout.partition("inliner imported: ")
    # the MIME boundaries and Message-IDs are new on every run
    body = re.sub(r"=_[0-9A-Za-z._=-]+|<[^<>@\s]+@[^<>\s]+>", "*", body)
    return body + tail.partition("\n")[2], tail.startswith("True")


def test_a_template_inlined_once_is_not_inlined_again_by_the_next_run(
        basic: Callable[..., CampaignDir], tmp_path: Path) -> None:
    html = NEWSLETTER.replace("{{ token }}", "{{ name|urlencode }}").replace(
        "points > 100", "points|int > 100")
    c = basic(html=html,
              rows=[["email", "name", "points"], *[[f"p{i}@x.org", f"P{i}", 10 ** i]
                                                   for i in range(5)]])
    config, kept = c.folder / "campaign.yaml", tmp_path / "kept"
    first, imported_first = run_in_fresh_python(config, kept)
    second, imported_second = run_in_fresh_python(config, kept)
    alone, imported_alone = run_in_fresh_python(config, None)
    assert (imported_first, imported_second, imported_alone) == (True, False, True)
    assert first == second == alone  # the same messages, byte for byte
    assert "padding:4px" in first and "Gold P3" in first
    # a changed template is inlined anew
    c.file("templates/mail.html", html.replace("padding: 4px", "padding: 6px"))
    changed, imported = run_in_fresh_python(config, kept)
    assert imported and "padding:6px" in changed and "padding:4px" not in changed
    assert "inlined in every message" not in changed  # inlined once, not caught by the rows


def test_rows_that_inline_otherwise_are_found_on_every_run(
        basic: Callable[..., CampaignDir], tmp_path: Path) -> None:
    """Whether inlining once gives a row's HTML is kept by that row's pages: other rows
    are compared anew, and a row found to differ differs again from what is kept."""
    from mailmerge import css
    from mailmerge.diskmemo import DiskMemo

    template = ('<html><head><style>p {padding: 1px}</style></head><body>'
                '<p style="color: {{ c }}">{{ name }}</p></body></html>')
    same = [["email", "name", "c"], *[[f"p{i}@x.org", f"Ann Secret{i}", "red"]
                                      for i in range(3)]]
    differs = [same[0], ["p0@x.org", "Ann Secret0", "red; padding: 9px"], *same[2:]]
    kept = tmp_path / "kept"
    for rows, notice in ((same, False), (differs, True), (differs, True)):
        css._memo = DiskMemo(kept)
        try:
            c = basic(html=template, rows=rows)
            notices: list[Notice] = []
            html = [content(parse(o.built.data), "html") for o in
                    iter_messages(load_campaign(c.folder / "campaign.yaml"), notices=notices)]
        finally:
            css._memo = None
        said = any("inlined in every message" in str(n) for n in notices)
        assert said == notice, notices
        assert ('style="padding:9px; color:red"' in html[0]) == notice, html[0]
    entries = [p.read_text(encoding="utf-8") for p in kept.glob("*.json")]
    # the template; rows 1 to 3; the other row 1 (and the style block's rules, unless an
    # earlier test in this process had worked them out already)
    assert len([e for e in entries if not str(json.loads(e)["value"]).startswith("[")]) == 5
    assert not any("Secret" in entry or "9px" in entry for entry in entries)  # no row's data


@pytest.mark.parametrize("where", ["layout", "include", "markdown layout"])
def test_an_error_in_a_layout_or_an_include_names_that_file_and_line(
        cdir: CampaignDir, where: str) -> None:
    """The innermost template the error came from, not the one the campaign names (which
    would say line 1, where it extends or includes the other)."""
    broken = "<p>\n\n{{ 1 / zero|int }}</p>"
    if where == "markdown layout":
        cdir.file("templates/layout.html", "<html><body>{{ content }}" + broken + "</body></html>")
        cdir.file("templates/body.md", "Hi {{ name }}\n")
        templates = "{markdown: ../templates/body.md, layout: ../templates/layout.html}"
    else:
        cdir.file("templates/other.html", "<html><body>{% block body %}{% endblock %}" + broken
                  + "</body></html>" if where == "layout" else broken)
        cdir.file("templates/mail.html", '{% extends "other.html" %}{% block body %}<p>Hi'
                  '</p>{% endblock %}' if where == "layout" else
                  '<p>Hi</p>{% include "other.html" %}')
        templates = "{html: ../templates/mail.html}"
    cdir.csv([["email", "name", "zero"], ["a@x.org", "A", "0"]])
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              f"transactional: true\ntemplates: {templates}\n")
    outcome, = iter_messages(load_campaign(cdir.folder / "campaign.yaml"))
    error, = outcome.errors
    expected = "layout.html" if where == "markdown layout" else "other.html"
    assert (Path(str(error.path)).name, error.line) == (expected, 3), str(error)
    assert "division by zero" in str(error)


COUNT_PARSES = RUN_AND_SHOW.replace(
    "notices = []\n",
    "notices = []\nimport cssutils\nparsed = []\nparse = cssutils.CSSParser.parseString\n"
    "def counted(self, *args, **kwargs):\n    parsed.append(1)\n"
    "    return parse(self, *args, **kwargs)\n"
    "cssutils.CSSParser.parseString = counted\n") + "print('style blocks parsed:', len(parsed))\n"


def test_the_rules_of_a_style_block_are_kept_between_runs(
        cdir: CampaignDir, tmp_path: Path) -> None:
    """A layout's page is inlined on every run, but its style block is parsed once: the
    next run finds premailer's rules kept (parsing them was most of a first inlining),
    and writes the same bytes, @media and :hover rules included."""
    import subprocess
    import sys

    cdir.file("templates/base.html", "<html><head><style>p {color: red} a:hover {color: blue}"
                                     " @media (max-width: 480px) { p {color: green} }</style>"
                                     "</head><body>{% block body %}{% endblock %}</body></html>")
    # a statement outside its blocks: the page is not written out as one template (see
    # flatten), so it is inlined in every run
    cdir.file("templates/mail.html", '{% extends "base.html" %}{% set apart = 1 %}{% block '
                                     'body %}<p>Hi {{ name }}</p>{% endblock %}')
    cdir.csv([["email", "name"], ["a@x.org", "Ann"], ["b@x.org", "Bo"]])
    config = cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
                       "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
    runs = []
    for keep in (True, True, False):
        env = ({**os.environ, "MAILMERGE_CACHE_DIR": str(tmp_path / "kept")} if keep else
               {**os.environ, "MAILMERGE_NO_CACHE": "1"})
        done = subprocess.run([sys.executable, "-c", COUNT_PARSES, str(config)],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        body, _, parsed = done.stdout.rpartition("style blocks parsed: ")
        runs.append((re.sub(r"=_[0-9A-Za-z._=-]+|<[^<>@\s]+@[^<>\s]+>", "*", body),
                     int(parsed)))
    assert [parsed for _, parsed in runs] == [1, 0, 1]
    assert runs[0][0] == runs[1][0] == runs[2][0]
    assert "!important" in runs[0][0] and "a:hover {color:blue !important}" in runs[0][0]


@pytest.mark.parametrize("template, cell, effect", [
    ("<html><head><style>p {color: red} .x {font-family: {{ c }}}</style></head><body>"
     '<p class="x">x</p></body></html>', "Secret1", "font-family:Secret1"),
    ('{% extends "base.html" %}{% block body %}{{ c|safe }}<p>x</p>{% endblock %}',
     "<style>p {margin: 0} .Secret2 {padding: 1px}</style>", "margin:0"),
])
def test_a_style_block_a_row_wrote_into_is_never_kept(
        cdir: CampaignDir, tmp_path: Path, template: str, cell: str, effect: str) -> None:
    """Only a template's own style blocks have their rules kept: one that holds a cell's
    value, or that a cell's markup brought, is inlined but never written down."""
    from mailmerge import css
    from mailmerge.diskmemo import DiskMemo

    cdir.file("templates/base.html", "<html><head><style>p {color: red}</style></head>"
                                     "<body>{% block body %}{% endblock %}</body></html>")
    cdir.file("templates/mail.html", template)
    cdir.csv([["email", "c"], ["a@x.org", cell], ["b@x.org", cell]])
    config = cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
                       "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
    kept = tmp_path / "kept"
    css._memo = DiskMemo(kept)
    try:
        htmls = [content(parse(o.built.data), "html")
                 for o in iter_messages(load_campaign(config))]
    finally:
        css._memo = None
    assert len(htmls) == 2 and all(effect in html for html in htmls)  # the cell's CSS is used
    entries = [p.read_text(encoding="utf-8") for p in kept.glob("*.json")]
    assert not any("Secret" in entry for entry in entries)


@pytest.mark.parametrize(("html", "hint"), [
    ("<p>{{ name }</p>", "unexpected '}'; every {{ needs its }} and every {% its %}"),
    ("<p>{{ first name }}</p>", "expected token 'end of print statement', got 'name'; two "
     'names stand side by side: a column whose name has a space is row["first name"], and '
     "texts are joined with ~"),
    ("<p>{{ name|uper }}</p>", "No filter named 'uper'.; jinja2 has no such filter (did you "
     "mean 'upper'?)"),
    ("<p>{% iff name %}x{% endif %}</p>", "Encountered unknown tag 'iff'.; no such tag (did "
     "you mean 'if'?)"),
    ("<p>x{% endfor %}</p>", "Encountered unknown tag 'endfor'.; no open block ends here: "
     "remove it, or open the block; every {% if %} needs its {% endif %} and every {% for %} "
     "its {% endfor %}"),
    ("<p>{{ row['first name' }}</p>", "unexpected '}', expected ']'; close the brackets "
     "that the expression opens before its }}"),
    ('<p>{{ "Hi }}</p>', "unexpected char '\"' at 6; a text in the expression needs its "
     "quotes on both sides"),
    ("<p>{{ name ! }}</p>", "unexpected char '!' at 11; ! has no meaning in an expression "
     "there"),
])
def test_a_syntax_error_says_what_to_fix_and_balance_only_when_it_is_the_cause(
        basic, html: str, hint: str) -> None:
    c = basic(html=html)
    with pytest.raises(TemplateError) as info:
        c.outcomes()
    assert str(info.value) == (f"{c.root}/templates/mail.html, line 1: template syntax "
                               f"error: {hint}")


def test_a_syntax_error_in_a_campaign_field_gets_the_same_hints(basic) -> None:
    c = basic('subject: "Hi {{ frist name }}"\n')
    with pytest.raises(TemplateError) as info:
        c.outcomes()
    assert str(info.value) == (
        f"{c.folder}/campaign.yaml, line 6: `subject` is not a valid template: expected "
        "token 'end of print statement', got 'name'; two names stand side by side: a column "
        'whose name has a space is row["first name"], and texts are joined with ~')


@pytest.mark.parametrize("field", ["subject", "to", "attachments"])
def test_a_misspelt_column_in_a_campaign_field_suggests_the_nearest(basic, field: str) -> None:
    value = {"subject": '"Hi {{ frist_name }}"', "to": '"{{ emial }}"',
             "attachments": '"files/{{ invoce }}.pdf"'}[field]
    extra = "" if field == "subject" else 'subject: "Hi"\n'
    c = basic(f"{extra}{field}: {value}\n", html="<p>{{ first_name }}</p>",
              rows=[["email", "first_name", "invoice"], ["a@x.org", "A", "7"]])
    error, = c.errors()
    wrong = {"subject": "frist_name", "to": "emial", "attachments": "invoce"}[field]
    right = {"subject": "first_name", "to": "email", "attachments": "invoice"}[field]
    assert (f"`{field}`: '{wrong}' is undefined; the sheet has no column '{wrong}' (did you "
            f"mean '{right}'?); its columns are: email, first_name, invoice") in error


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to"])
@pytest.mark.parametrize(("cell", "problem", "fixed"), [
    ("b@x.org; c@y.org", "'b@x.org; c@y.org' is not a valid email address (The part after "
     "the @-sign contains invalid characters: ';', '@', SPACE.)", "b@x.org, c@y.org"),
    ("Bob <b@x.org>; Carol <c@y.org>", "'Bob <b@x.org>; Carol' would be the display name of "
     "c@y.org, though it holds an address", "Bob <b@x.org>, Carol <c@y.org>"),
])
def test_addresses_separated_by_semicolons_get_a_hint_to_use_commas(
        basic, field: str, cell: str, problem: str, fixed: str) -> None:
    c = basic(f'subject: "Hi"\n{field}: "{{{{ list }}}}"\n'
              + ("" if field == "to" else 'to: "{{ email }}"\n'),
              rows=[["email", "name", "list"], ["a@x.org", "A", cell]])
    assert c.errors() == [
        f"{c.folder / 'people.csv'}, row 2, column 'list': `{field}`: {problem}; separate "
        f"addresses with commas, not semicolons: {fixed}"]


def test_a_semicolon_list_in_the_campaign_file_gets_the_hint_too(basic) -> None:
    c = basic('cc: "x@acme.example;y@acme.example"\n')
    assert c.errors() == [
        f"{c.folder / 'campaign.yaml'}, line 7, row 2: `cc`: 'x@acme.example;y@acme.example' "
        "is not a valid email address (The part after the @-sign contains invalid "
        "characters: ';', '@'.); separate addresses with commas, not semicolons: "
        "x@acme.example, y@acme.example"]


def test_a_misspelt_column_in_row_brackets_suggests_the_nearest(basic) -> None:
    c = basic('subject: "Hi"\n', html='<p>{{ row["frist name"] }}</p>',
              rows=[["email", "first name"], ["a@x.org", "A"]])
    assert c.errors() == [
        f"{c.root}/templates/mail.html, line 1, row 2: 'dict object' has no attribute "
        "'frist name'; no such key (did you mean 'first name'?)"]


def test_a_bad_cell_in_the_key_column_fails_its_row_though_no_template_uses_it(basic) -> None:
    c = basic("recipients: {path: people.xlsx, key: id}\n")
    c.xlsx([["email", "name", "id"], ["a@x.org", "A", 1], ["b@x.org", "B", "#REF!"]])
    assert c.errors() == [
        f"{c.folder / 'people.xlsx'}, row 3, column 'id' (cell C3): the cell holds the error "
        "#REF! that its formula gives; correct the formula or the cells it uses, and save the "
        "workbook; or type the value in"]
