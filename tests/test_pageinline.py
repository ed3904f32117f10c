"""CSS inlined once for each shape of page, for templates that cannot be inlined once as
source: every message must read as if its own page had been inlined."""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmerge import iter_messages, load_campaign, pageinline
from mailmerge.css import canonical_html, inline_css
from mailmerge.fill import fill_pieces, row_context
from mailmerge.htmlpart import script_link
from mailmerge.notices import Notice
from mailmerge.pageinline import PageInliner
from mailmerge.pagescan import template_text
from mailmerge.render import make_environment

from .conftest import CampaignDir, content, parse
from .test_pagescan import EXAMPLES, resolve, row, template, whole

LAYOUT = """<!DOCTYPE html><html lang="en"><head>{% block head %}{% endblock %}<style>
p { color: #333333; } .note { padding: 2px; } b { color: red; }
a[data-kind="gold"] { font-weight: bold; } .gold { color: #aa8800; } td { width: 100px; }
@media (max-width: 480px) { p { font-size: 18px; } }
</style></head><body>{% block body %}{% endblock %}</body></html>"""


# a statement outside the child's blocks: its page is not written out as one template
# (see flatten), so these pages take the way of shapes this module tests
APART = "{% set apart = 1 %}"


def campaign(cdir: CampaignDir, body: str, rows: list[list[str]],
             layout: str = LAYOUT) -> Path:
    cdir.file("templates/layout.html", layout)
    cdir.file("templates/mail.html", '{% extends "layout.html" %}' + APART + body)
    cdir.csv(rows)
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
    return cdir.folder / "campaign.yaml"


def each_inlined(cdir: CampaignDir, rows: list[list[str]]) -> list[str]:
    """What inlining every row's own page gives, as HTML compared."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(cdir.root / "templates"),
                             autoescape=True)
    template = env.get_template("mail.html")
    return [canonical_html(inline_css(template.render(dict(zip(rows[0], row, strict=True)))))
            for row in rows[1:]]


def run(config: Path, monkeypatch: pytest.MonkeyPatch
        ) -> tuple[list[str], list[Notice], list[str]]:
    """Each message's HTML, the notices, and the pages the page inliner inlined."""
    inlined: list[str] = []

    def counted(html: str, keep: Collection[str] = ()) -> str:
        inlined.append(html)
        return inline_css(html, keep)

    monkeypatch.setattr(pageinline, "inline_css", counted)
    notices: list[Notice] = []
    htmls = []
    for outcome in iter_messages(load_campaign(config), notices=notices):
        assert outcome.built is not None, outcome.errors
        htmls.append(content(parse(outcome.built.data), "html"))
    return htmls, notices, inlined


def test_a_template_that_extends_a_layout_is_inlined_once_for_each_shape(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    body = ('{% block body %}{% if vip == "yes" %}<p class="note">For members</p>{% endif %}'
            '<p>Hello {{ name }}, <a href="https://acme.example/?u={{ name|urlencode }}">'
            'yours</a></p>{% for i in range(n|int) %}<p>{{ i }}</p>{% endfor %}{% endblock %}')
    rows = [["email", "name", "vip", "n"], *[[f"p{i}@x.org", f"O'Neil & Zoë {i}",
                                              "yes" if i % 2 else "no", str(i % 2)]
                                             for i in range(8)]]
    config = campaign(cdir, body, rows)
    htmls, notices, inlined = run(config, monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert len(inlined) == 2  # two shapes: a member's page and another's
    assert re.search(r'<p class="note" style="[^"]*padding:2px[^"]*">For members</p>', htmls[1])
    assert "O&#39;Neil &amp; Zoë 1" in htmls[1]  # escaped as Jinja escapes it
    assert not notices


def test_markup_a_cell_gives_through_safe_is_styled_by_the_template(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``|safe`` value is part of its page's shape, not a placeholder; so is one written
    where autoescaping is off, which must not be escaped when it is put in."""
    body = ("{% block body %}<p>{{ bio|safe }}</p>"
            "{% autoescape false %}<div>{{ raw }}</div>{% endautoescape %}{% endblock %}")
    rows = [["email", "bio", "raw"], ["a@x.org", "a <b>bold</b> move", "<b>raw</b>"],
            ["b@x.org", "plain", "<b>raw</b>"], ["c@x.org", "plain", "<b>raw</b>"]]
    htmls, notices, inlined = run(campaign(cdir, body, rows), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert '<b style="color:red">bold</b>' in htmls[0]
    assert '<div><b style="color:red">raw</b></div>' in htmls[2]
    assert len(inlined) == 2 and not notices


CONTEXT_LAYOUT = LAYOUT.replace("b { color: red; }", "b { color: red; } .box b { color: #aa0000; }")


def counted_in_place(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The markup pageinline styles in place, as it does."""
    styled: list[str] = []
    real = pageinline.inline_in_place

    def counted(prefix: str, tags: tuple[str, ...], markup: str,
                keep: Collection[str] = ()) -> str | None:
        styled.append(markup)
        return real(prefix, tags, markup, keep)

    monkeypatch.setattr(pageinline, "inline_in_place", counted)
    return styled


def test_markup_that_differs_on_every_row_is_styled_where_it_stands(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``|safe`` value new on every row does not make a shape of its own: the page is
    inlined once, and the value's markup on its own, as inside the elements around it
    (a rule for ``.box b`` styles it in the box and not outside)."""
    body = ('{% block body %}<div class="box"><p>{{ bio|safe }}</p></div>'
            '<p>{{ name }}: {{ bio|safe }}</p>{% endblock %}')
    rows = [["email", "name", "bio"], *[[f"p{i}@x.org", f"Zoë {i}", f"Hi <b>{i}</b> &amp; "
                                         f"<a href='f{i}.pdf' class=\"gold\">file</a>"]
                                        for i in range(6)]]
    styled = counted_in_place(monkeypatch)
    htmls, notices, inlined = run(campaign(cdir, body, rows, CONTEXT_LAYOUT), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert len(inlined) == 1 and not notices  # one shape, whatever the markup
    assert len(styled) == 2 * 6  # each value where it stands
    assert ('<div class="box"><p style="color:#333">Hi <b style="color:#a00">5</b> &amp; '
            '<a href="f5.pdf" class="gold" style="color:#a80">file</a></p></div>'
            '<p style="color:#333">Zoë 5: Hi <b style="color:red">5</b>') in htmls[5]


def test_markup_of_the_same_tags_is_styled_once_for_each_place(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Markup whose texts differ but whose tags are the same on every row is styled once
    where it stands; the texts go back in as they were, but for those the parser would
    read otherwise (an entity, blanks it may drop, a ``>``) or that hold a double quote,
    which stay in the markup."""
    body = ('{% block body %}<div class="box"><p>{{ bio|safe }}</p></div>'
            '<p>{{ bio|safe }}</p>{% endblock %}')
    names = [f'Zoë "{i}"' if i == 3 else f"Zoë {i}" for i in range(6)]
    rows = [["email", "bio"], *[[f"p{i}@x.org", f"<b>{names[i]}</b> wins, 3 > 2<br>"
                                 f" <i>O'Neil\t{i}</i>{' &amp; co' if i == 5 else ''}"]
                                for i in range(6)]]
    styled = counted_in_place(monkeypatch)
    htmls, notices, inlined = run(campaign(cdir, body, rows, CONTEXT_LAYOUT), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert len(inlined) == 1 and not notices
    assert len(styled) == 2 + 2 + 2  # each place once, again for "&amp;", and for '"'
    assert '<b style="color:red">Zoë "3"</b>' in htmls[3]
    assert ('<div class="box"><p style="color:#333"><b style="color:#a00">Zoë 4</b> wins, '
            "3 &gt; 2<br> <i>O'Neil\t4</i></p></div>") in htmls[4]


@pytest.mark.parametrize("bio, shapes", [
    ("<div>a block the paragraph cannot hold</div>", 1 + 4),  # tried in place first
    ("<p>a paragraph in a paragraph</p>", 1 + 4), ("a</p><p>b", 1 + 4), ("<b>left open", 4),
    ("<style>b { color: blue }</style><b>x</b>", 4)])
def test_markup_the_parser_would_not_keep_where_it_stands_is_inlined_with_the_page(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch, bio: str, shapes: int) -> None:
    """Markup that closes an element around it, leaves one open or brings CSS of its own
    changes the page beyond itself: its page is inlined with it in, as before. Markup
    that is plainly so is part of the shape at once."""
    body = ('{% block body %}<div class="box"><p>{{ bio|safe }}</p></div><p><b>outside</b>'
            '</p>{% endblock %}')
    rows = [["email", "bio"], *[[f"p{i}@x.org", f"{bio} {i}"] for i in range(4)]]
    htmls, notices, inlined = run(campaign(cdir, body, rows, CONTEXT_LAYOUT), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert len(inlined) == shapes and not notices


def test_markup_on_a_page_without_css_stays_as_written(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = re.sub(r"<style>.*</style>", "", LAYOUT, flags=re.S)
    body = "{% block body %}<p>{{ bio|safe }}</p>{% endblock %}"
    rows = [["email", "bio"], *[[f"p{i}@x.org", f"{i} < 9 & <b>bold</b>"] for i in range(3)]]
    htmls, notices, inlined = run(campaign(cdir, body, rows, layout), monkeypatch)
    assert "<p>2 < 9 & <b>bold</b></p>" in htmls[2] and not inlined and not notices


def test_markup_is_part_of_the_shape_where_selectors_read_its_siblings(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule such as ``b:first-child`` or ``b + i`` styles markup by what stands next to
    it in the page; such a page's markup is part of its shape."""
    layout = CONTEXT_LAYOUT.replace(".box b {", "p b:first-child {")
    body = "{% block body %}<p>{{ bio|safe }}</p>{% endblock %}"
    rows = [["email", "bio"], *[[f"p{i}@x.org", f"<b>{i}</b> <b>two</b>"] for i in range(3)]]
    styled = counted_in_place(monkeypatch)
    htmls, notices, inlined = run(campaign(cdir, body, rows, layout), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert len(inlined) == 3 and not styled


@pytest.mark.parametrize("body, said", [
    ('{% block body %}<p class="{{ kind }}">x</p>{% endblock %}',
     "a class attribute is computed by Jinja"),
    ('{% block body %}<p><a data-KIND="{{ kind }}">x</a></p>{% endblock %}',
     "a data-kind attribute is computed by Jinja"),
    ('{% block body %}<p style="margin: {{ kind }}">x</p>{% endblock %}',
     "a style attribute is computed by Jinja"),
    ('{% block head %}<style>.gold { border: {{ kind }} }</style>{% endblock %}'
     '{% block body %}<p class="gold">x</p>{% endblock %}', "a <style> block holds a value"),
    ('{% block body %}<p {{ kind }}>x</p>{% endblock %}',
     "a {{ value }} stands inside a tag, outside an attribute value"),
    ('{% block body %}<table><tr><td width="{{ kind }}">x</td></tr></table>{% endblock %}',
     "the inliner moved or dropped a value"),  # it writes width="100" over it
])
def test_a_value_the_inliner_reads_is_inlined_with_the_page(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch, body: str, said: str) -> None:
    """Where a selector reads a value, or the inliner writes it, the page is inlined with
    its values in. The row that differs comes after those compared on the first rows."""
    rows = [["email", "kind"], *[[f"p{i}@x.org", "std"] for i in range(4)],
            ["gold@x.org", "gold"]]
    htmls, notices, inlined = run(campaign(cdir, body, rows), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    # each message with its values; the last case, its shape with placeholders first
    assert len(inlined) == len(rows) - 1 + ("dropped" in said)
    assert [n.text for n in notices if "shape" in n.text] == [
        f"CSS is inlined in every message whose page takes the shape of row 2's, not "
        f"once: there {said}"]


def test_a_page_that_inlines_otherwise_is_found_on_the_first_rows(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text in <head> makes the parser start the body there, and a placeholder is text
    where a blank value is not: the first row shows it, and every message after it is
    inlined on its own."""
    body = "{% block head %}{{ pre }}{% endblock %}{% block body %}<p>x</p>{% endblock %}"
    rows = [["email", "pre"], ["a@x.org", " "], ["b@x.org", "y"], ["c@x.org", " "]]
    htmls, notices, inlined = run(campaign(cdir, body, rows), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert [n.text for n in notices] == [
        "CSS is inlined in every message, not once: on row 2 inlining the page before "
        "filling in the values gave different HTML"]
    assert len(inlined) == 1 + 3  # the shape, then each message


def test_a_cell_cannot_forge_a_placeholder(cdir: CampaignDir,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's values go back by a pattern no cell can know; a cell that looks like one
    is text, and a ``|safe`` one is markup of its own page."""
    body = "{% block body %}<p>{{ name }}</p><p>{{ bio|safe }}</p>{% endblock %}"
    forged = [f"mm{'0' * 12}v0z", "mm0v0z"]
    rows = [["email", "name", "bio"], ["a@x.org", "Ann", forged[0]], ["b@x.org", forged[1], "x"]]
    htmls, _, _ = run(campaign(cdir, body, rows), monkeypatch)
    assert f">{forged[0]}</p>" in htmls[0] and ">Ann</p>" in htmls[0]
    assert f">{forged[1]}</p>" in htmls[1]



def test_a_page_made_of_a_layout_reads_as_the_same_page_in_one_file(
        cdir: CampaignDir, tmp_path: Path) -> None:
    """The page of a layout is looked through in pieces, as one file's is: the same
    messages, images embedded, and the same pre-flight findings row by row."""
    body = ('<div><img src="logo.png"><h1>Hi {{ name }}</h1>{% if n|int %}<a href="{{ url }}">'
            'go</a>{% endif %}<a href="https://acme.example/x">{{ name }}</a></div>')
    cdir.file("templates/logo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    rows = [["email", "name", "n", "url"],
            ["a@x.org", "Ann", "1", "javascript:alert(1)"],
            ["b@x.org", "Bo", "0", "https://acme.example/y"],
            ["c@x.org", "Cy {", "1", "%7B%7B"], ["d@x.org", "Di", "1", "https://a.example/"]]
    layout = LAYOUT.replace(' lang="en"', "")
    one_file = layout.replace("{% block head %}{% endblock %}", "").replace(
        "{% block body %}{% endblock %}", body)
    found = []
    for mail in ('{% extends "layout.html" %}{% block body %}' + body + "{% endblock %}",
                 one_file):
        cdir.file("templates/layout.html", layout)
        cdir.file("templates/mail.html", mail)
        cdir.csv(rows)
        cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
                  "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
        outcomes = list(iter_messages(load_campaign(cdir.folder / "campaign.yaml"),
                                      inspect=True))
        found.append([(o.row, sorted(map(str, o.warnings)), [str(e) for e in o.errors],
                       canonical_html(content(parse(o.built.data), "html")) if o.built else None)
                      for o in outcomes])
    assert found[0] == found[1]
    assert found[0][1][3] is not None and 'src="cid:' in found[0][1][3]
    assert any(found[0][1][1]) and found[0][0][3] is None  # warnings; a refused link


def test_a_layout_changed_part_way_through_a_run_does_not_change_its_later_messages(
        cdir: CampaignDir) -> None:
    """A run renders every row with the templates as it first read them (one campaign,
    one look), and does not look at a layout's file again on every row."""
    config = campaign(cdir, "{% block body %}<p>{{ name }}</p>{% endblock %}",
                      [["email", "name"], *[[f"p{i}@x.org", f"P{i}"] for i in range(3)]])
    layout = cdir.root / "templates" / "layout.html"
    htmls = []
    for outcome in iter_messages(load_campaign(config)):
        assert outcome.built is not None
        htmls.append(content(parse(outcome.built.data), "html"))
        layout.write_text(LAYOUT.replace("<body>", "<body>CHANGED"), encoding="utf-8")
        later = layout.stat().st_mtime + 10 * len(htmls)
        os.utime(layout, (later, later))
    assert len(htmls) == 3 and not any("CHANGED" in html for html in htmls)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template(), st.lists(row, min_size=1, max_size=5))
def test_a_page_put_together_from_its_shape_is_the_page_and_its_whole_scan(
        source: str, rows: list[dict[str, object]]) -> None:
    """Without CSS to inline, the page a shape and a row's values make is the page as
    rendered, byte for byte, and looking through it in pieces finds what the whole-page
    scans find: images, script links, tags, Jinja syntax left in it."""
    env = make_environment([Path(".")])
    env.loader.loaders[0].mapping["t.html"] = source  # type: ignore[attr-defined]
    compiled = env.get_template("t.html")
    inliner = PageInliner([], resolve)
    inliner.learn(template_text(env, compiled))
    for number, values in enumerate(rows, 2):
        pieces = fill_pieces(compiled, row_context(env.globals, values))
        html = "".join(pieces)
        embedded, images, candidate, link, tags, marked = whole(html)
        page = inliner.page(list(pieces), number)
        if isinstance(page, str):
            assert page == html
            continue
        assert embedded is not None, "a page whose image fails must be scanned whole"
        assert page.html == embedded
        assert page.images == images
        assert (page.unembedded is not None) == candidate
        if page.unembedded is not None:
            assert page.unembedded == html and script_link(html) == link
        assert list(page.tags()) == tags
        assert page.template_mark() == marked
    assert inliner._verified == 0  # nothing was inlined, so nothing needed comparing


def test_a_part_first_included_on_a_later_row_is_styled_and_filled_in(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """The templates' own text is learnt after the first row; a part that row did not
    include is loaded later, and its text must still be inlined as the page's own."""
    cdir.file("templates/vip.html", '<p class="note">For {{ name }} only</p>')
    body = ('{% block body %}<p>Hi {{ name }}</p>{% if vip == "y" %}{% include "vip.html" %}'
            "{% endif %}{% endblock %}")
    rows = [["email", "name", "vip"], ["a@x.org", "Ann", "n"], ["b@x.org", "Bo", "y"],
            ["c@x.org", "Cy", "y"], ["d@x.org", "Di", "n"], ["e@x.org", "Ed", "y"]]
    htmls, notices, inlined = run(campaign(cdir, body, rows), monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert re.search(r'<p class="note" style="[^"]*padding:2px[^"]*">For Ed only</p>', htmls[4])
    assert len(inlined) == 2 and not notices
