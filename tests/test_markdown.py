"""Markdown bodies: CommonMark HTML in the layout, the source as the text part, cells as data."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmerge import ConfigError, iter_messages, load_campaign
from mailmerge import render as render_module
from mailmerge.campaign import parse_campaign
from mailmerge.markdown_body import make_converter

from .conftest import CampaignDir, content, parse, tree

LOGO = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def markdown_campaign(cdir: CampaignDir, body: str, rows: list[list[str]] | None = None,
                      templates: str = "{markdown: ../templates/body.md}", extra: str = ""
                      ) -> CampaignDir:
    cdir.file("templates/body.md", body)
    cdir.csv(rows or [["email", "name"], ["zoe@example.org", "Zoë"]])
    cdir.yaml(f'name: md\nfrom: "Acme <news@acme.example>"\nsubject: "Hi {{{{ name }}}}"\n'
              f"recipients: people.csv\ntransactional: true\ntemplates: {templates}\n{extra}")
    return cdir


class _Page(HTMLParser):
    """The elements (with their attributes) and the visible text of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple[tuple[str, str | None], ...]]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(attrs)))
        self._skip += tag in ("style", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def test_markdown_becomes_html_in_the_default_layout_and_the_source_is_the_text(
        cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, """\
        # Hello {{ name }}

        Your **points**: {{ 40 + 2 }}. Read [the news](https://acme.example/news).

        | item | price |
        |------|------:|
        | tea  | 3.50  |

        ~~old~~ new, and an emoji: 🎉
        """)
    (built, msg), = c.messages()
    assert tree(msg) == ("multipart/alternative", ["text/plain", "text/html"])
    text = content(msg, "plain")
    assert text.startswith("# Hello Zoë\n\nYour **points**: 42.")
    assert "~~old~~ new, and an emoji: 🎉" in text
    html = content(msg, "html")
    assert '<html lang="en">' in html and "<title>Hi Zoë</title>" in html
    assert re.search(r'<h1 style="[^"]*font-size:26px[^"]*">Hello Zoë</h1>', html)
    assert re.search(r'<a href="https://acme.example/news" style="color:#1d4ed8">the news</a>',
                     html)
    assert re.search(r'<td style="[^"]*border:1px solid #d1d5db[^"]*"[^>]*>tea</td>', html)
    assert "<s>old</s> new, and an emoji: 🎉" in html
    assert "<style>" in html and "@media" in html  # only the media query stays a block


HOSTILE = ["<b>Bob</b>", "[click](https://evil.example)", "*Bob*", "# Heading",
           "<img src=x onerror=alert(1)>", "`code`", "a | b", "&amp; &lt;",
           "![x](https://evil.example/t.png)", "<https://evil.example>", "line\n\n* item"]


@pytest.mark.parametrize("cell", HOSTILE)
def test_a_cell_is_data_not_markup_in_both_parts(cdir: CampaignDir, cell: str) -> None:
    c = markdown_campaign(cdir, "Dear {{ cell }},\n\n**{{ cell }}** | [x]({{ cell }})\n\n"
                                "| a |\n|---|\n| {{ cell }} |\n",
                          rows=[["email", "name", "cell"], ["zoe@example.org", "Zoë", cell]])
    (built, msg), = c.messages()
    assert content(msg, "plain") == (f"Dear {cell},\n\n**{cell}** | [x]({cell})\n\n"
                                     f"| a |\n|---|\n| {cell} |\n")
    page = _Page(content(msg, "html"))
    assert cell in "".join(page.text)
    tags = [t for t, _ in page.tags]
    assert "b" not in tags and "img" not in tags and "h1" not in tags and "code" not in tags
    assert not any("evil" in (v or "") for _, attrs in page.tags for k, v in attrs
                   if k in ("src", "onerror")) and not any(k == "onerror" for _, a in page.tags
                                                           for k, _v in a)


def _structure(html: str) -> list[tuple[str, tuple[tuple[str, str | None], ...]]]:
    return [(t, tuple((k, v) for k, v in a if k != "href")) for t, a in _Page(html).tags]


@settings(max_examples=int(os.environ.get("MAILMERGE_PROPERTY_EXAMPLES", "60")),
          deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cell=st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(
    list("*_`[]()<>!#|~&\\-+=.:;\"'\n ")), max_size=40))
def test_no_cell_text_makes_markup_the_template_did_not_hold(cdir: CampaignDir,
                                                             cell: str) -> None:
    template = ("## {{ cell }}\n\nHi *{{ cell }}*, see [{{ cell }}](https://acme.example/"
                "{{ cell|urlencode }}).\n\n- {{ cell }}\n- two\n\n| a | b |\n|---|---|\n"
                "| {{ cell }} | x |\n")
    campaign = markdown_campaign(cdir, template, rows=[["email", "name", "cell"],
                                                       ["z@example.org", "Z", "x"]])
    (_, plain), = campaign.messages()
    markdown_campaign(cdir, template, rows=[["email", "name", "cell"], ["z@example.org", "Z", cell]])
    outcomes = cdir.outcomes()
    if outcomes[0].built is None:  # e.g. a value that is only spaces is still a message
        pytest.fail(str(outcomes[0].errors))
    from .conftest import parse
    msg = parse(outcomes[0].built.data)
    assert _structure(content(msg, "html")) == _structure(content(plain, "html"))
    written = content(msg, "plain")
    assert written == template.replace("{{ cell|urlencode }}", _urlencoded(cell)).replace(
        "{{ cell }}", cell.replace("\r\n", "\n").replace("\r", "\n"))


def _urlencoded(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="/")


def test_safe_inserts_a_trusted_cell_as_markdown(cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, "{{ intro|safe }}\n\n{{ name }}\n",
                          rows=[["email", "name", "intro"],
                                ["zoe@example.org", "*Zoë*", "**Welcome** back"]])
    (built, msg), = c.messages()
    html = content(msg, "html")
    assert re.search(r"<strong[^>]*>Welcome</strong> back", html)
    assert "<p style=\"margin:0 0 16px 0\">*Zoë*</p>" in html


def test_a_macro_writes_markdown(cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, "{% macro bold(x) %}**{{ x }}**{% endmacro %}{{ bold(name) }}\n",
                          rows=[["email", "name"], ["zoe@example.org", "*Zoë*"]])
    (built, msg), = c.messages()
    assert re.search(r"<strong[^>]*>\*Zoë\*</strong>", content(msg, "html"))
    assert content(msg, "plain") == "***Zoë***\n"


def test_a_layout_places_the_body_and_its_css_styles_the_body(cdir: CampaignDir) -> None:
    cdir.file("templates/layout.html", """\
        <!DOCTYPE html><html lang="de"><head><title>{{ subject }}</title>
        <style>h2 { color: #c00; } .foot { font-size: 12px; }</style></head>
        <body>{{ content }}<p class="foot">Für {{ name }}</p></body></html>""")
    cdir.file("templates/logo.png", LOGO)
    c = markdown_campaign(cdir, "## News for {{ name }}\n\n![Acme logo](logo.png)\n",
                          templates="{markdown: ../templates/body.md, "
                                    "layout: ../templates/layout.html}",
                          rows=[["email", "name"], ["zoe@example.org", "Zoë"],
                                ["bob@example.org", "<Bob>"]])
    messages = c.messages()
    for (_built, msg), name in zip(messages, ["Zoë", "&lt;Bob&gt;"], strict=True):
        assert tree(msg) == ("multipart/alternative", [
            "text/plain", ("multipart/related", ["text/html", "image/png"])])
        html = content(msg, "html")
        assert f'<h2 style="color:#c00">News for {name}</h2>' in html
        assert f'<p class="foot" style="font-size:12px">Für {name}</p>' in html
        assert '<html lang="de">' in html
        assert re.search(r'<img src="cid:[^"]+" alt="Acme logo">', html)
    assert "![Acme logo](logo.png)" in content(messages[0][1], "plain")


def test_a_value_inside_the_layouts_style_block_is_inlined_row_by_row(
        cdir: CampaignDir) -> None:
    cdir.file("templates/layout.html", "<html><head><style>p {color: {{ colour }};}</style>"
                                       "</head><body>{{ content }}</body></html>")
    c = markdown_campaign(cdir, "Hi {{ name }}\n",
                          templates="{markdown: ../templates/body.md, "
                                    "layout: ../templates/layout.html}",
                          rows=[["email", "name", "colour"], ["a@example.org", "A", "red"],
                                ["b@example.org", "B", "blue"]])
    htmls = [content(msg, "html") for _, msg in c.messages()]
    assert '<p style="color:red">Hi A</p>' in htmls[0]
    assert '<p style="color:blue">Hi B</p>' in htmls[1]


def test_a_layout_that_inlines_otherwise_once_filled_in_is_inlined_row_by_row(
        cdir: CampaignDir) -> None:
    """A value in a style attribute that repeats an inlined property: the layout inlined
    before filling in differs from the filled-in page inlined, which the first row shows;
    from then on every page is inlined as filled in."""
    from mailmerge.notices import Notice

    cdir.file("templates/layout.html", '<html><head><style>p {padding: 1px}</style></head>'
                                       '<body><p style="color: {{ c }}">{{ content }}</p>'
                                       '</body></html>')
    c = markdown_campaign(cdir, "Hi {{ name }}\n",
                          templates="{markdown: ../templates/body.md, "
                                    "layout: ../templates/layout.html}",
                          rows=[["email", "name", "c"], ["a@example.org", "A", "red; padding: 9px"],
                                ["b@example.org", "B", "blue"]])
    notices: list[Notice] = []
    htmls = [content(parse(o.built.data), "html") for o in
             iter_messages(load_campaign(c.folder / "campaign.yaml"), notices=notices)]
    assert any("a style attribute is computed" in str(n) for n in notices), notices
    assert 'style="padding:9px; color:red"' in htmls[0]
    assert 'style="padding:1px; color:blue"' in htmls[1]


def test_a_text_template_replaces_the_markdown_source_as_the_text_part(
        cdir: CampaignDir) -> None:
    cdir.file("templates/body.txt", "Plain {{ name }}\n")
    c = markdown_campaign(cdir, "**Rich** {{ name }}\n",
                          templates="{markdown: ../templates/body.md, "
                                    "text: ../templates/body.txt}")
    (built, msg), = c.messages()
    assert content(msg, "plain") == "Plain Zoë\n"
    assert re.search(r"<strong[^>]*>Rich</strong> Zoë", content(msg, "html"))


def test_line_breaks_make_a_newline_a_break(cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, "Hi {{ name }},\nyour number is 17.\n",
                          templates="{markdown: ../templates/body.md, line_breaks: true}")
    (built, msg), = c.messages()
    assert "Hi Zoë,<br>\nyour number is 17." in content(msg, "html")
    c = markdown_campaign(cdir, "Hi {{ name }},\nyour number is 17.\n")
    (built, msg), = c.messages()
    assert "Hi Zoë,\nyour number is 17." in content(msg, "html")


def test_attachments_go_with_a_markdown_body(cdir: CampaignDir) -> None:
    cdir.file("campaign/files/report.pdf", b"%PDF-1.4 report")
    c = markdown_campaign(cdir, "See the report, {{ name }}.\n",
                          extra='attachments: ["files/report.pdf"]\n')
    (built, msg), = c.messages()
    assert tree(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", "text/html"]), "application/pdf"])
    attachment, = msg.iter_attachments()
    assert attachment.get_filename() == "report.pdf"


def test_a_cell_that_makes_a_script_link_is_a_row_problem(cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, "[home]({{ url }})\n", rows=[
        ["email", "name", "url"], ["a@example.org", "A", "javascript:alert(1)"],
        ["b@example.org", "B", "https://acme.example/"]])
    errors = c.errors()
    assert len(errors) == 1 and "javascript: link" in errors[0] and "row 2" in errors[0]
    assert errors[0].startswith(f"{c.root}/templates/body.md")


def test_a_markdown_template_error_names_the_markdown_file_and_line(cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, "# Hi\n\n{{ nmae }}\n")
    assert c.errors() == [
        f"{c.root}/templates/body.md, line 3, row 2: 'nmae' is undefined; the sheet has no "
        "column 'nmae' (did you mean 'name'?); its columns are: email, name (a column with "
        "spaces is "
        "row[\"Column Name\"])"]


def test_a_layout_error_names_the_layout(cdir: CampaignDir) -> None:
    cdir.file("templates/layout.html", "<html><body>\n{{ content }}\n{{ missing }}</body></html>")
    c = markdown_campaign(cdir, "Hi\n", templates="{markdown: ../templates/body.md, "
                                                  "layout: ../templates/layout.html}")
    error, = c.errors()
    assert error.startswith(f"{c.root}/templates/layout.html, line 3, row 2: 'missing' is "
                            "undefined")


@pytest.mark.parametrize(("templates", "message"), [
    ("{html: a.html, markdown: b.md}", "`templates` has both `html:` and `markdown:`"),
    ("{html: a.html, layout: l.html}", "`templates.layout` places a Markdown body, but there "
                                       "is no `markdown:`"),
    ("{text: a.txt, line_breaks: true}", "`templates.line_breaks` applies to a Markdown body"),
    ("{markdown: b.md, line_breaks: 'yes'}", "`templates.line_breaks` must be true or false"),
])
def test_template_keys_that_do_not_go_together(tmp_path, templates: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    text = (f"name: x\nfrom: a@example.org\nsubject: s\nrecipients: p.csv\n"
            f"templates: {templates}\n")
    with pytest.raises(ConfigError) as caught:
        parse_campaign(text, path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_markdown_file_is_named(cdir: CampaignDir) -> None:
    c = markdown_campaign(cdir, "x")
    (c.root / "templates/body.md").unlink()
    with pytest.raises(ConfigError, match=r"`templates` names .*body\.md, which does not exist"):
        load_campaign(c.folder / "campaign.yaml")


def test_rows_of_one_shape_are_converted_from_markdown_once(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """With its values as placeholders, a body's source is the same on every row of one
    shape: CommonMark converts it once, and each row still reads its own values."""
    converted: list[str] = []

    def counting(line_breaks: bool = False, placeholders: Any = None) -> Any:
        converter = make_converter(line_breaks, placeholders)
        real = converter.render

        def render(source: str) -> str:
            converted.append(source)
            return real(source)

        converter.render = render  # type: ignore[method-assign]
        return converter

    monkeypatch.setattr(render_module, "make_converter", counting)
    c = markdown_campaign(cdir, "# Hi {{ name }}\n\n{% if vip == 'y' %}*Gold* {% endif %}"
                                "member **{{ name }}**\n",
                          rows=[["email", "name", "vip"],
                                *[[f"p{i}@x.org", f"*P{i}*", "y" if i % 2 else "n"]
                                  for i in range(6)]])
    htmls = [content(msg, "html") for _, msg in c.messages()]
    assert len(converted) == 2
    assert all(f"<strong>*P{i}*</strong>" in html for i, html in enumerate(htmls))
    assert ["<em>Gold</em>" in html for html in htmls] == [i % 2 == 1 for i in range(6)]


# Every Markdown construct a value can stand in: where its text shows in the HTML (the
# page's visible text, or an element's attribute)
CONSTRUCTS = {
    "autolink": ("See <{{ c }}> now.", "text"),
    "autolink alone on its line": ("<{{ c }}>\nand more", "text"),
    "raw html attribute": ('<span title="{{ c }}">x</span>', ("span", "title")),
    "html block": ("<div>\n{{ c }}\n</div>", "text"),
    "link destination": ("[x]({{ c }})", ("a", "href")),
    "link destination in brackets": ("[x](<{{ c }}>)", ("a", "href")),
    "link title": ('[x](https://acme.example/ "{{ c }}")', ("a", "title")),
    "reference": ("[x][r]\n\n[r]: {{ c }}", ("a", "href")),
    "image alt": ("![{{ c }}](https://acme.example/i.png)", ("img", "alt")),
    "code span": ("`{{ c }}`", "text"),
    "fenced code": ("```\n{{ c }}\n```", "text"),
    "heading": ("# {{ c }}", "text"),
    "table": ("| a |\n|---|\n| {{ c }} |", "text"),
    "emphasis": ("*{{ c }}*", "text"),
    "entity reference": ("&amp; {{ c }}", "text"),
    "backslash escape": ("\\{{ c }}", "text"),
    "line start": ("{{ c }}", "text"),
    "block quote": ("> {{ c }}", "text"),
    "list item": ("- {{ c }}", "text"),
}
CELLS = ["<https://evil.example>", "<b>bold</b>", "# h", "> q", "- l", "1. n", "&amp;",
         "\\*x\\*", "*e*", "`c`", "[l](https://evil.example)", "![i](https://evil.example/t.png)",
         "a\"b'c<d>", "| p |", "<!-- c -->", "<div>x</div>", "<mm0v0z>"]


def _body(cdir: CampaignDir, template: str, cell: str) -> tuple[str, str]:
    c = markdown_campaign(cdir, template + "\n", rows=[["email", "name", "c"],
                                                      ["zoe@example.org", "Zoë", cell]])
    (_, msg), = c.messages()
    html = content(msg, "html")
    return content(msg, "plain"), html[html.index("<body"):]


@pytest.mark.parametrize("construct", CONSTRUCTS)
@pytest.mark.parametrize("cell", CELLS)
def test_a_cell_is_text_in_every_construct(cdir: CampaignDir, construct: str,
                                           cell: str) -> None:
    template, where = CONSTRUCTS[construct]
    plain, html = _body(cdir, template, cell)
    assert plain == template.replace("{{ c }}", cell) + "\n"
    _, reference = _body(cdir, template, "plain")
    assert _names(html) == _names(reference)
    page = _Page(html)
    if where == "text":
        assert cell in "".join(page.text)
    else:
        tag, attribute = where
        assert (attribute, cell) in next(attrs for name, attrs in page.tags if name == tag)


def _names(html: str) -> list[tuple[str, tuple[str, ...]]]:
    """The elements of a page and the names of their attributes."""
    return [(tag, tuple(name for name, _ in attrs)) for tag, attrs in _Page(html).tags]


@pytest.mark.parametrize("construct", ["autolink", "autolink alone on its line",
                                       "link destination", "link destination in brackets",
                                       "reference"])
@pytest.mark.parametrize("cell, href", [
    ("https://acme.example/a?b=1&c=2", "https://acme.example/a?b=1&c=2"),
    ("mailto:zoe@example.org", "mailto:zoe@example.org")])
def test_a_url_cell_makes_a_working_link(cdir: CampaignDir, construct: str, cell: str,
                                         href: str) -> None:
    _, html = _body(cdir, CONSTRUCTS[construct][0], cell)
    links = [dict(attrs) for name, attrs in _Page(html).tags if name == "a"]
    assert [link["href"] for link in links] == [href]


def test_an_address_between_angle_brackets_is_a_mailto_link(cdir: CampaignDir) -> None:
    _, html = _body(cdir, "Write to <{{ c }}>.", "help@acme.example")
    assert re.search(r'<a href="mailto:help@acme.example"[^>]*>help@acme.example</a>', html)


def test_a_script_url_between_angle_brackets_is_text(cdir: CampaignDir) -> None:
    _, html = _body(cdir, "See <{{ c }}>.", "javascript:alert(1)")
    assert "&lt;javascript:alert(1)&gt;" in html and "<a " not in html


@pytest.mark.parametrize("template", ["<a href={{ c }}>x</a>", "<span {{ c }}>x</span>",
                                      "<{{ c }} class=x>y</{{ c }}>",
                                      "<div class=x title={{ c }}>\ny\n</div>",
                                      '<a title="x>y" href={{ c }}>z</a>'])
def test_a_value_in_a_tag_outside_quotes_is_a_problem_of_the_template(
        cdir: CampaignDir, template: str) -> None:
    c = markdown_campaign(cdir, template + "\n", rows=[
        ["email", "name", "c"], ["zoe@example.org", "Zoë", "x onmouseover=alert(1)"]])
    error, = c.errors()
    assert error.startswith(f"{c.root}/templates/body.md, row 2: a value stands inside the "
                            "HTML tag '<")
    assert error.endswith("outside a quoted attribute value, where a cell could add "
                          'attributes: write it in quotes (href="{{ url }}"), or as Markdown')


@pytest.mark.parametrize("template", ["<!-- {{ c }} -->x", "<a title='{{ c }}' href=\"/\">z</a>",
                                      '<div title="a>b">\n{{ c }}\n</div>'])
def test_a_value_in_raw_text_comments_and_quoted_values_stays_data(cdir: CampaignDir,
                                                                   template: str) -> None:
    _, html = _body(cdir, template, "x onmouseover=alert(1) <b>")
    assert "<b>" not in html and not any(name == "onmouseover" for _, attrs in
                                         _Page(html).tags for name, _ in attrs)
