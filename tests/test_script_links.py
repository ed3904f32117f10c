"""The script-link check against an HTML parser that follows the HTML standard.

Whatever link attribute that parser finds with a javascript:, vbscript: or livescript:
URL, the check must refuse; on pages where every value a cell fills is quoted by the
template, it must refuse nothing else either.
"""

from __future__ import annotations

import os
import re

import markupsafe
from hypothesis import example, given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from mailmerge.assets import AssetProblem
from mailmerge.htmlpart import refuse_script_links

EXAMPLES = int(os.environ.get("MAILMERGE_PROPERTY_EXAMPLES", 300))
URL_NAMES = {"href", "src", "action", "formaction", "background", "xlink:href"}
SCRIPT = re.compile(r"(javascript|vbscript|livescript):", re.I | re.A)


def parser_finds_a_script_link(html: str) -> bool:
    """Whether a reader that parses as the standard says, and resolves URLs as the URL
    standard says (C0 controls and spaces stripped at the ends, tabs and line breaks
    dropped), would follow a script URL from some element."""
    for node in LexborHTMLParser(html).root.traverse(include_text=False):
        for name, value in node.attributes.items():
            if name.lower() in URL_NAMES and value is not None:
                url = re.sub(r"[\t\n\r]", "", value.strip("".join(map(chr, range(33)))))
                if SCRIPT.match(url):
                    return True
    return False


def refused(html: str) -> bool:
    try:
        refuse_script_links(html)
    except AssetProblem:
        return True
    return False


# what a hostile cell may hold: pieces of script URLs, of attributes and of markup
CELL_PIECES = ["javascript:", "JavaScript:", "vbscript:", "livescript:", "alert(1)", "//",
               "src=", "href=", " href=", "href =", "=", " ", "\t", "\n", "&#106;", "&#x6A;",
               "&#9;", "&colon;", "&amp;", "&", "j", "a", "v", "x", '"', "'", ">", "<",
               "<a href=", "<!--", "-->", "https://acme.example/", "/", "line-height"]
cell = st.lists(st.sampled_from(CELL_PIECES), max_size=6).map("".join)
# the check drops every control character from a value, where a reader drops only tabs
# and line breaks (and reads NUL as U+FFFD): it may refuse more than a reader follows
controlled_cell = st.lists(st.sampled_from([*CELL_PIECES, "\x00", "\x01", "\x1f"]),
                           max_size=6).map("".join)
name = st.sampled_from(["href", "HREF", "src", "title", "alt", "class", "style", "action",
                        "formaction", "background", "xlink:href", "data-href"])
tag = st.sampled_from(["a", "img", "p", "div", "span", "form", "button", "area"])


@st.composite
def quoted_page(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A page whose template quotes every attribute value, with escaped cells in them."""
    parts, cells = [], []
    for _ in range(draw(st.integers(1, 4))):
        names = draw(st.lists(name, min_size=1, max_size=3, unique_by=str.lower))
        attributes = []
        for attribute in names:
            quote = draw(st.sampled_from(['"', "'"]))
            before = draw(st.sampled_from(["", "https://acme.example/?q=", "x "]))
            value = draw(cell)
            cells.append(value)
            attributes.append(f"{attribute}={quote}{before}{markupsafe.escape(value)}{quote}")
        element = draw(tag)
        parts.append(f"<{element} {' '.join(attributes)}>{markupsafe.escape(draw(cell))}"
                     f"</{element}>")
    return "<!DOCTYPE html><html><body>" + "".join(parts) + "</body></html>", cells


@settings(max_examples=EXAMPLES * 3, deadline=None)
@example(('<p title="src=">x</p><a href="javascript:alert(1)">y</a>', []))
@example(('<p title="javascript:alert(1)//src=">x</p><a href="javascript:alert(1)//src=">y</a>',
          []))
@given(quoted_page())
def test_with_every_cell_quoted_the_check_refuses_exactly_what_a_parser_follows(
        page: tuple[str, list[str]]) -> None:
    html, _ = page
    assert refused(html) == parser_finds_a_script_link(html), html


# what a template may hold besides: bare values, comments, style blocks, stray quotes and
# brackets, markup from a cell marked safe
piece = st.one_of(
    st.sampled_from(['<a href="', '<a href=', "<a title='", '<img alt="', '<p title=x"y ',
                     '">', "'>", '"', "'", ">", "<", " ", "<!-- ", " -->", "<style>", "</style>",
                     "<textarea>", "</textarea>", "<svg><a xlink:href='", "</a></svg>",
                     "<form><button formaction=", "</p title=\"", "<td background=",
                     "<a/href=", "<a href=\"x\" href=", "<A HREF = ", "=", "\n"]),
    controlled_cell)


@settings(max_examples=EXAMPLES * 3, deadline=None)
@example(['<img alt="', "src=", '">', '<a href="javascript:x">'])
@example(['<!-- <a title=" -->', '<a href="javascript:x">', '"'])
@example(["<style>", '<a title="</style>', '<a href="javascript:x">', '"'])
@example(['<a title="x>y" href=', "javascript:x", ">"])
@given(st.lists(piece, max_size=12))
def test_the_check_refuses_every_script_link_a_parser_follows(pieces: list[str]) -> None:
    html = "".join(pieces)
    if parser_finds_a_script_link(html):
        assert refused(html), html
