"""Looking through a page piece by piece gives what looking through it whole gives.

Templates are built from hostile pieces (stray brackets and quotes, tags cut where a value
stands, images, titles, script-link beginnings, `if`s and loops), rendered for several
rows of hostile values through one scanner, and every page it makes is compared with the
whole-page scans: the HTML with images embedded, the images, whether the script-link
prefilter has a candidate (and what the script-link scan finds), and the tags the
pre-flight checks judge.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mailmerge.assets import AssetProblem, Part, embed_images
from mailmerge.fill import fill_pieces, row_context
from mailmerge.htmlpart import _url_candidate, script_link
from mailmerge.pagescan import (
    TEMPLATE_MARK,
    PageScanner,
    TagMatch,
    tag_matches,
    template_text,
)
from mailmerge.render import make_environment

from .conftest import scanned_alone

EXAMPLES = int(os.environ.get("MAILMERGE_PROPERTY_EXAMPLES", 300))
IMAGES = {"logo.png", "a b.png", "img"}


def resolve(src: str) -> Part:
    """A part for the names in IMAGES and every name that starts with "ok"."""
    if src not in IMAGES and not src.startswith("ok"):
        raise AssetProblem(f"the image {src!r} does not exist")
    return Part(src.encode(), "image", "png", src,
                f"{hashlib.sha256(src.encode()).hexdigest()[:8]}@cid.example")


def whole(html: str) -> tuple[str | None, list[Part] | str, bool, object, list[TagMatch],
                              bool]:
    """The whole-page scans: embedded HTML and images (or the image error), whether the
    prefilter has a candidate, the script link found, the tags of the embedded HTML,
    whether Jinja syntax is left in it."""
    try:
        embedded, images = embed_images(html, resolve)
    except AssetProblem as exc:
        return None, str(exc), _url_candidate(html), script_link(html), [], False
    return (embedded, images, _url_candidate(html), script_link(html),
            list(tag_matches(embedded)), TEMPLATE_MARK.search(embedded) is not None)


OWN = ["<p>", "</p>", '<a href="', '">', "<a href=", ">", '<img src="logo.png" alt="',
       '<img alt="x" src="', "<IMG SRC='logo.png'>", "<img src='a b.png'>", "<title>",
       "</title>", '<html lang="en">', "<html>", "=", '"', "'", "<", " ", "href=", "src=",
       "javascript:", '="jav', "&", "<!--", "-->", "<im", "<i", 'g src="logo.png">', "text",
       '<p style="line-height: 1.5" class="link">', "x" * 70, " " * 70, "<area href=",
       '<a title="', "\n", "<img", "g", "/>", "<a", "<title>Hi</title>", " " * 30,
       "<img src='ok>", "'>", "{{ '{' }}", "{{ '%' }}", "{{ '{{' }}", "<title>x"]
VALUES = ["{{ a }}", "{{ b }}", "{{ c|safe }}", "{{ a }}{{ b }}"]


@st.composite
def template(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            parts.append(draw(st.sampled_from(OWN)))
        elif kind < 8:
            parts.append(draw(st.sampled_from(VALUES)))
        elif depth < 2 and kind == 8:
            parts.append("{% if flag %}" + draw(template(depth + 1)) + "{% endif %}")
        elif depth < 2:
            parts.append("{% for x in items %}" + draw(template(depth + 1)) + "{{ x }}"
                         "{% endfor %}")
    return "".join(parts)


value = st.lists(st.sampled_from(
    ["javascript:", "JaVa", "src=", "=", "&#106;", "&", " ", "\t", "logo.png", "img", "mg",
     "g", "<", ">", '"', "'", "x", "jav", "a", "title", "href=", "li", "v", "<a href=",
     "l&#105;v", "x" * 70, "href", "{", "%", "{{"]), max_size=4).map("".join)
row = st.fixed_dictionaries({"a": value, "b": value, "c": value, "flag": st.booleans(),
                             "items": st.lists(value, max_size=3)})


def scan_rows(source: str, rows: list[dict[str, object]]) -> int:
    """Render every row through one scanner; compare each page made with the whole
    scans. Returns how many pages were made piece by piece."""
    env = make_environment([Path(".")])
    env.loader.loaders[0].mapping["t.html"] = source  # type: ignore[attr-defined]
    compiled = env.get_template("t.html")
    scanner = PageScanner(template_text(env, compiled), resolve)
    made = 0
    for values in rows:
        pieces = fill_pieces(compiled, row_context(env.globals, values))
        html = "".join(pieces)
        expected = whole(html)
        page = scanner.make(list(pieces))
        if page is None:
            continue
        made += 1
        embedded, images, candidate, link, tags, marked = expected
        assert embedded is not None, "a page whose image fails must be scanned whole"
        assert page.html == embedded
        assert page.images == images
        assert (page.unembedded is not None) == candidate
        if page.unembedded is not None:
            assert page.unembedded == html
            assert script_link(page.unembedded) == link
        assert list(page.tags()) == tags
        assert page.template_mark() == marked
    return made


@settings(max_examples=EXAMPLES * 3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@example('<a title="{{ a }}">x</a><a href="{{ b }}">y</a>',
         [{"a": "src=", "b": "javascript:x", "c": "", "flag": True, "items": []}])
@example("<i{{ a }} src='logo.png'>",
         [{"a": "x", "b": "", "c": "", "flag": True, "items": []},
          {"a": "mg", "b": "", "c": "", "flag": True, "items": []}])
@example("<title>{{ a }}</title><html>",
         [{"a": "", "b": "", "c": "", "flag": True, "items": []},
          {"a": "Hi", "b": "", "c": "", "flag": True, "items": []}])
@example("{{ a }}" + " " * 70 + '<a href="{{ b }}">',
         [{"a": "", "b": "https://x", "c": "", "flag": True, "items": []},
          {"a": "x", "b": "javascript:x", "c": "", "flag": True, "items": []}])
@example('<a href{{ a }}="jav">',
         [{"a": "", "b": "", "c": "", "flag": True, "items": []},
          {"a": " ", "b": "", "c": "", "flag": True, "items": []}])
@example("{{ a }}" + " " * 30 + '="jav',  # a value decides what stands 64 characters back
         [{"a": "x", "b": "", "c": "", "flag": True, "items": []},
          {"a": "href", "b": "", "c": "", "flag": True, "items": []}])
@example("<img src='ok>{{ a }}'>",  # a quoted src that runs past ">" over a value
         [{"a": "x", "b": "", "c": "", "flag": True, "items": []},
          {"a": "y", "b": "", "c": "", "flag": True, "items": []}])
@example("<p>{{ '{' }}{{ a }}{{ b }}{{ '%' }}</p>",  # Jinja syntax once both values are empty
         [{"a": "x", "b": "", "c": "", "flag": True, "items": []},
          {"a": "", "b": "", "c": "", "flag": True, "items": []}])
@example("<p>{{ c|safe }}{{ '{{' }}",  # a value's "{" before a mark of the template's own
         [{"a": "", "b": "", "c": "{", "flag": True, "items": []},
          {"a": "", "b": "", "c": "", "flag": True, "items": []}])
@example("<p>{{ '{' }}{{ a }}</p>",  # a mark the first row's value completes
         [{"a": "%", "b": "", "c": "", "flag": True, "items": []},
          {"a": "x", "b": "", "c": "", "flag": True, "items": []}])
@example("<title>{{ a }}{{ '{' }}<a href='{{ b }}'><title>{{ b }}",
         [{"a": "x", "b": "", "c": "", "flag": True, "items": []},
          {"a": "", "b": "y", "c": "", "flag": True, "items": []}])
@given(template(), st.lists(row, min_size=1, max_size=5))
def test_piece_by_piece_is_the_whole_scan(source: str, rows: list[dict[str, object]]) -> None:
    made = scan_rows(source, rows)
    event(f"pages made piece by piece: {min(made, 1)}")


NEWSLETTER = ('<!DOCTYPE html><html lang="en"><head><title>{{ a }}</title></head><body>'
              '<img src="logo.png" alt="Acme"><h1>Hello {{ a }}</h1>'
              '{% if flag %}<p class="c1">Gold</p>{% endif %}'
              '{% for x in items %}<li>{{ x }}</li>{% endfor %}'
              '<a href="https://acme.example/u/{{ b }}">Unsubscribe</a></body></html>')


def test_a_newsletter_is_made_piece_by_piece_row_after_row() -> None:
    rows = [{"a": f"Zoë {i}", "b": f"t{i}", "c": "", "flag": i % 2 == 0,
             "items": ["x"] * (i % 3)} for i in range(12)]
    assert scan_rows(NEWSLETTER, rows) == 12


def test_a_row_of_markup_does_not_stop_the_rows_after_it() -> None:
    """A row whose values hold markup is scanned whole, and the shape is looked through
    on a later row: an image in the markup must not make every row after it slow."""
    rows = [{"a": "", "b": "", "c": c, "flag": True, "items": []}
            for c in ('<img src="logo.png">', "", "x", "y")]
    assert scan_rows("<p>{{ c|safe }}</p><a href='{{ b }}'>y</a>", rows) == 3


@pytest.mark.parametrize(("source", "values", "why"), [
    ('<img src="{{ a }}">', {"a": "logo.png"}, "a value in an image tag"),
    ("<p>{{ c|safe }}</p>", {"c": "<b>x</b>"}, "markup marked safe"),
    ('<img src="missing.png">', {}, "an image that cannot be read"),
    ("<img src='ok>'>", {}, "a quoted src past its tag's end"),
    ("<img src='ok>'><img src='logo.png'>", {}, "a quoted src past its tag's end, first"),
])
def test_what_is_scanned_whole(source: str, values: dict[str, object], why: str) -> None:
    row = {"a": "", "b": "", "c": "", "flag": True, "items": [], **values}
    assert scan_rows(source, [row]) == 0, why


# Pages of tags that do not close: each scan over them was quadratic (a 50 KB page of
# unclosed "<img" took 6 s, the script-link scan 26 s; these took minutes so), and is
# linear now (well under a second).
_UNCLOSED = ["<img " * 40_000, "<img " * 40_000 + ">", "<a " * 60_000, "<IMG src=x " * 20_000,
             "<img alt='<img' " * 15_000]


def test_unclosed_tags_are_scanned_in_linear_time() -> None:
    """In a process of its own, stopped after 30 s (the old scans took minutes): a regular
    expression holds the interpreter while it runs, so a thread could not be waited for."""
    code = ("from tests.test_pagescan import _UNCLOSED, resolve;"
            "from mailmerge.assets import embed_images, img_srcs;"
            "from mailmerge.pagescan import tag_matches;"
            "from mailmerge.htmlpart import script_link;"
            "[(embed_images(p, resolve), list(tag_matches(p))) for p in _UNCLOSED];"
            "assert not any(script_link(p) for p in _UNCLOSED);"
            "assert script_link(_UNCLOSED[0] + '<a href=javascript:x>') is not None;"
            "assert not any(list(img_srcs(p)) for p in _UNCLOSED);"
            "from tests.test_pagescan import made_page;"
            "made_page('{{ a }}' + _UNCLOSED[0] + '{{ b }}' + _UNCLOSED[2]);"
            "print('scanned')")
    done = scanned_alone(code)
    assert done.stdout == "scanned\n", done.stderr


def made_page(source: str) -> None:
    """The page the scanner makes of ``source`` (one row), without the whole scans."""
    env = make_environment([Path(".")])
    env.loader.loaders[0].mapping["t.html"] = source  # type: ignore[attr-defined]
    compiled = env.get_template("t.html")
    values = {"a": "x", "b": "", "c": "", "flag": True, "items": []}
    PageScanner(template_text(env, compiled), resolve).make(
        list(fill_pieces(compiled, row_context(env.globals, values))))


def test_an_image_in_a_tag_that_holds_img_in_a_value_is_embedded_once() -> None:
    html, images = embed_images("<img alt='<img' src='logo.png'><img src=\"a b.png\">", resolve)
    assert [part.filename for part in images] == ["logo.png", "a b.png"]
    assert html == (f"<img alt='<img' src='cid:{images[0].cid}'>"
                    f"<img src=\"cid:{images[1].cid}\">")
