"""Scans over a whole page or template take time in proportion to its size.

Each linear scan is compared with the regular expression it replaced (kept here as the
reference) on many random strings built of the pieces that matter, and run on inputs
crafted for the old expression (a lazy `.*?` or a greedy run retried at every start,
which took time growing with the square of the size) in a process of its own, stopped
after a generous time: a regular expression holds the interpreter while it runs.
"""

from __future__ import annotations

import os
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailmerge import css
from mailmerge.pageinline import split_tags

from .conftest import scanned_alone

EXAMPLES = int(os.environ.get("MAILMERGE_PROPERTY_EXAMPLES", 300))

# the expressions the scans replaced
OLD_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)
OLD_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
OLD_ATTR_BEFORE = re.compile(r"""([\w:-]+)\s*=\s*(["'])[^"']*$""")

PIECES = ["<style", "<STYLE", "<\u017ftyle", "<style>", "<stylex>", "</style", "</style>",
          "</style \n>", "</STYLE>", "</style x>", "</styles>", "<", ">", "{{", "}}", "{%",
          "%}", "{#", "#}", "{", "}", "%", "#", "a", "B", "1", "_", ":", "-", " ", "\n",
          "\t", "\x1c", "\u00a0", "\u3000", "é", "²", "٣", "=", '"', "'", "class", "id"]
texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=EXAMPLES, deadline=None)
@given(texts)
@example("<style a>b</style ><style>{{ c }}</STYLE\t><style>")
@example("<style>{{ a }} {% b %}}} {# c")
def test_the_style_blocks_are_those_the_old_expression_found(text: str) -> None:
    assert css.style_blocks(text) == OLD_STYLE_BLOCK.findall(text)
    assert css.needs_inlining(text) == bool(OLD_STYLE_BLOCK.search(text))


@settings(max_examples=EXAMPLES, deadline=None)
@given(texts)
@example("{{ a }}{% b {# c #} %}{{ {{ d }}{#")
def test_the_jinja_spans_are_those_the_old_expression_found(text: str) -> None:
    assert list(css.jinja_spans(text)) == [m.span() for m in OLD_JINJA.finditer(text)]


def old_value_in_tag(before: str, read: tuple[str, ...]) -> str | None:
    start = before.rfind("<")
    if start <= before.rfind(">"):
        return None
    attr = OLD_ATTR_BEFORE.search(before, start)
    if attr is None:
        return "a {{ value }} stands inside a tag, outside an attribute value"
    if attr.group(1).lower() in read:
        return f"a {attr.group(1).lower()} attribute is computed by Jinja"
    return None


def old_protect_jinja(source: str) -> tuple[str, list[str]] | str:
    """The protection as it was: the pieces joined again at every Jinja tag."""
    originals: list[str] = []
    pieces: list[str] = []
    last = 0
    for match in OLD_JINJA.finditer(source):
        pieces.append(source[last:match.start()])
        text = match.group(0)
        context = "".join(pieces)
        index = len(originals)
        originals.append(text)
        if text.startswith("{{"):
            problem = old_value_in_tag(context, ("class", "id"))
            if problem is not None:
                return problem
            pieces.append(f"mmjv{index}x")
        else:
            if context.rfind("<") > context.rfind(">"):
                return "a {% %} statement stands inside a tag"
            lowered = context.lower()
            if lowered.rfind("<title") > lowered.rfind("</title"):
                pieces.append(f"mmjv{index}x")
            else:
                pieces.append(f"<!--mmjs{index}-->")
        last = match.end()
    pieces.append(source[last:])
    return "".join(pieces), originals


@settings(max_examples=EXAMPLES, deadline=None)
@given(texts, st.lists(st.integers(0, 400), max_size=8))
@example('<a b:c-d_é² = "x', [16])
@example("<a class='x\" id=\"", [3, 12, 17, 17])
@example('<a title="{{ x }} {{ y }}"> <b class="{{ z }}', [10, 18, 40])
def test_a_tag_reader_says_what_value_in_tag_said_of_each_place(text: str,
                                                                 ends: list[int]) -> None:
    read = ("class", "id", "b")
    reader = css.TagReader(text)
    for end in sorted({min(end, len(text)) for end in ends}):
        assert reader.value_at(end, read) == old_value_in_tag(text[:end], read), end
    assert css.value_in_tag(text) == old_value_in_tag(text, ("class", "id"))


TEMPLATE_PIECES = [*PIECES, "{{ a }}", "{% if b %}", "{% endif %}", "<title>", "</title>",
                   "<TITLE x>", "</title >", "<p class=", '<a title="', "<img alt='", "{# c #}",
                   "<!--", "-->"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=30).map("".join))
@example('<title>{% if a %}x{% endif %}</title><p title="{{ a }}">{% if b %}')
@example('<p class="{{ a }}">')
def test_jinja_is_protected_as_before(source: str) -> None:
    assert css.protect_jinja(source) == old_protect_jinja(source)


CRAFTED = ["<style>" * 40_000, "<style " * 100_000, "<style>" + "</style " * 60_000,
           "{{" * 40_000, "{%" * 40_000, "<p>" + "{#" * 40_000,
           "<p>{{ a }}</p>" * 20_000, "<title>" + "{% if a %}{% endif %}" * 20_000,
           '<p title="' + "{{ a }} " * 20_000 + '">']


def test_crafted_pages_are_scanned_in_linear_time() -> None:
    """In a process of its own, stopped after 30 s (the old scans took minutes)."""
    code = ("from tests.test_linear_scans import CRAFTED;"
            "from mailmerge import css;"
            "assert not any(css.needs_inlining(p) or css.style_blocks(p) for p in CRAFTED);"
            "assert css.style_blocks(CRAFTED[0] + '</style>') == ['<style>' * 39_999];"
            "assert all(css.inline_template_once(p + ' ' + p).source for p in CRAFTED[3:]);"
            "assert css.value_in_tag('<' + 'a' * 100_000) is not None;"
            "assert css.value_in_tag('<a ' + 'b' * 100_000 + '=\"') is None;"
            "print('scanned')")
    done = scanned_alone(code)
    assert done.stdout == "scanned\n", done.stderr


OLD_TAG_OR_TEXT = re.compile(r"""(<(?:[^>"']|"[^"]*"|'[^']*')*>)""")
MARKUP_PIECES = ["<", ">", '"', "'", "<b>", "</b>", '<a href="x>y">', "a", " ", "\n", "<<",
                 "=", "é"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(MARKUP_PIECES), max_size=40).map("".join))
@example("<a \"<b>\" '")
@example("<a '\"' <b \"'\"> \" <c>")
def test_markup_is_split_into_tags_as_the_old_expression_split_it(markup: str) -> None:
    assert split_tags(markup) == OLD_TAG_OR_TEXT.split(markup)


def test_crafted_markup_is_split_in_linear_time() -> None:
    """Unclosed tags and quotes, which each start of the old expression read to the end."""
    code = ("from mailmerge.pageinline import split_tags;"
            "pieces = ['<' * 60_000, '<a \"' * 30_000, \"<a '\" * 30_000, '<a \"<' * 30_000,"
            "          '<a \"\\'' * 30_000 + '>'];"
            "assert [len(split_tags(p)) for p in pieces] == [1, 1, 1, 1, 3];"
            "print('split')")
    done = scanned_alone(code)
    assert done.stdout == "split\n", done.stderr


OLD_TAGS_AND_STYLE = re.compile(r"<(style|script|head)\b.*?</\1\s*>|<[^>]+>", re.I | re.S)
SHOWN_PIECES = ["<", ">", "<>", "style", "STYLE", "script", "head", "heading", "/", " ", "a",
                "</style>", "</head >", "</SCRIPT\t>", "</style x>", "\n", "é", "&amp;"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(SHOWN_PIECES), max_size=40).map("".join))
@example("<style>x</style><script>y<head>z</head></script>w<>v<a")
def test_the_shown_text_is_what_the_old_expression_left(html: str) -> None:
    from mailmerge.preflight import shown_text

    assert shown_text(html) == OLD_TAGS_AND_STYLE.sub(" ", html)


def test_the_text_a_page_shows_is_found_in_linear_time() -> None:
    """The pre-flight check reads the text every page shows; the old expression took
    minutes on a page of unclosed starts. In a process of its own, stopped after 30 s."""
    code = ("from mailmerge.preflight import shown_text;"
            "assert shown_text('<style>' * 60_000) == ' ' * 60_000;"
            "assert all(shown_text(p) == p for p in ('<' * 200_000, '<head x' * 40_000));"
            "print('scanned')")
    done = scanned_alone(code)
    assert done.stdout == "scanned\n", done.stderr


def test_a_classic_attachment_name_of_unclosed_braces_is_written_in_linear_time() -> None:
    """The import split an ATTACHMENT name at its Jinja with a lazy expression. In a
    process of its own, stopped after 30 s."""
    code = ("from mailmerge.classic import _join_literals;"
            "name = '{{' * 60_000;"
            "assert _join_literals(name, str.upper, str.lower) == name;"
            "print('scanned')")
    done = scanned_alone(code)
    assert done.stdout == "scanned\n", done.stderr
