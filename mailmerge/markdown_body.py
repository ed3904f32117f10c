"""Markdown bodies: cell values kept as data while Jinja renders the Markdown source.

While a Markdown template renders, every ``{{ value }}`` is replaced by a placeholder of
letters and digits (see placeholders; no Markdown rule touches one), so that the
template alone decides the structure. The placeholders are then filled in twice: with
the raw values in the text part (the rendered Markdown source) and with HTML-escaped
values in the HTML that CommonMark made of the source. A cell holding ``*Bob*``,
``<b>Bob</b>`` or ``[click](https://evil.example)`` thus reads literally in both parts. A
value marked ``|safe`` (or made by a macro) is inserted as Markdown.

Two places are not text, where escaping alone would not keep a value data:

- ``<{{ url }}>``: a placeholder between angle brackets reads as a tag named after it, so
  the value would become a tag. Such an autolink is left open when converting and
  decided per row (:func:`fill_autolinks`): a value that makes a URL or an address is a
  link, as CommonMark makes of one; any other shows as text, brackets and all.
- raw HTML in the template: a value may stand in its text or in a quoted attribute
  value; inside a tag anywhere else it could add attributes, so it is refused.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from .assets import AssetProblem
from .htmlpart import value_outside_quotes

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_core import StateCore
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token

    from .placeholders import Placeholders

# An autolink left open: its text, with placeholders, between two NULs (CommonMark turns
# every NUL of the source into U+FFFD, so no other can be in the HTML).
_OPEN_AUTOLINK = re.compile(r"\x00([^\x00]*)\x00")
_ANGLED = re.compile(r"<([^<>\x00-\x20]*)>")


class RawHtmlProblem(AssetProblem):
    """A value in raw HTML where escaping cannot keep it data; says where and what to do
    (a problem of the template, as a missing image is)."""


def make_converter(line_breaks: bool = False, placeholders: Placeholders | None = None
                   ) -> MarkdownIt:
    """CommonMark with tables and strikethrough; HTML written in the template passes.
    ``line_breaks``: a single newline is a line break (as the classic tool's Markdown).
    ``placeholders``: those the source is rendered with (see the module's docstring)."""
    from markdown_it import MarkdownIt  # here: only a Markdown campaign pays for the import

    md = MarkdownIt("commonmark", {"html": True, "breaks": line_breaks})
    md.enable(["table", "strikethrough"])
    if placeholders is not None:
        _guard(md, placeholders)
    return md


def _guard(md: MarkdownIt, placeholders: Placeholders) -> None:
    """Rules that keep the placeholders out of markup (see the module's docstring)."""

    def autolink(state: StateInline, silent: bool) -> bool:
        found = _ANGLED.match(state.src, state.pos, state.posMax)
        if found is None or not placeholders.has_any(found.group(1)):
            return False
        if not silent:
            state.push("open_autolink", "", 0).content = found.group(1)
        state.pos = found.end()
        return True

    def raw_html(state: StateCore) -> None:
        tokens = state.tokens
        for index in range(len(tokens) - 1, -1, -1):
            token = tokens[index]
            if token.type == "html_block" and placeholders.has_any(token.content):
                first = _ANGLED.match(token.content.lstrip(" "))
                if first is not None and placeholders.has_any(first.group(1)):
                    # "<{{ url }}>" first on a line reads as an HTML block: a paragraph
                    # when the value makes a URL
                    tokens[index:index + 1] = _paragraph(token, state)
                else:
                    _refuse_in_tags(token.content, placeholders)
            for child in token.children or ():
                if child.type == "html_inline" and placeholders.has_any(child.content):
                    _refuse_in_tags(child.content, placeholders)

    md.inline.ruler.before("autolink", "open_autolink", autolink)
    md.core.ruler.after("inline", "values_in_raw_html", raw_html)
    md.add_render_rule("open_autolink", lambda _self, tokens, index, _options, _env: (
        f"\x00{tokens[index].content}\x00"))


def _paragraph(block: Token, state: StateCore) -> list[Token]:
    """An HTML block that starts with an autolink, as the paragraph CommonMark makes of
    it when the link's text is a URL."""
    from markdown_it.token import Token

    level, text = block.level, block.content.strip()
    inline = Token("inline", "", 0, map=block.map, level=level + 1, block=True, content=text)
    inline.children = []
    state.md.inline.parse(text, state.md, state.env, inline.children)
    return [Token("paragraph_open", "p", 1, map=block.map, level=level, block=True),
            inline, Token("paragraph_close", "p", -1, level=level, block=True)]


def _refuse_in_tags(markup: str, placeholders: Placeholders) -> None:
    """Raises RawHtmlProblem when a placeholder of ``markup`` stands inside a tag outside
    a quoted attribute value (its name, an attribute's name, an unquoted value)."""
    values = [value.span() for value in placeholders.positions(markup)]
    found = value_outside_quotes(markup, values)
    if found is not None:
        texts, _ = placeholders.split(markup[found.tag_start:found.tag_end])
        raise RawHtmlProblem(
            f"a value stands inside the HTML tag {'{{ … }}'.join(texts)[:80]!r} "
            "outside a quoted attribute value, where a cell could add attributes: "
            'write it in quotes (href="{{ url }}"), or as Markdown')


def fill_autolinks(body: str, placeholders: Placeholders, md: MarkdownIt) -> str:
    """``body`` (the HTML of a Markdown source) with its open autolinks decided by this
    row's values: a link where the text they make is a URL or an e-mail address (as
    CommonMark links one), otherwise that text between angle brackets."""
    if "\x00" not in body:
        return body
    from markdown_it.rules_inline.autolink import AUTOLINK_RE, EMAIL_RE

    def decide(found: re.Match[str]) -> str:
        text = placeholders.raw(found.group(1))
        target = text if AUTOLINK_RE.search(text) else (
            f"mailto:{text}" if EMAIL_RE.search(text) else None)
        if target is None or not md.validateLink(md.normalizeLink(target)):
            return f"&lt;{html.escape(text, quote=False)}&gt;"
        return (f'<a href="{html.escape(md.normalizeLink(target))}">'
                f"{html.escape(md.normalizeLinkText(text), quote=False)}</a>")

    return _OPEN_AUTOLINK.sub(decide, body)
