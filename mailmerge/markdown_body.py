"""Markdown bodies: cell values kept as data while Jinja renders the Markdown source.

While a Markdown template renders, every ``{{ value }}`` is replaced by a placeholder of
letters and digits (see placeholders; no Markdown rule touches one), so that the
template alone decides the structure. The placeholders are then filled in twice: with
the raw values in the text part (the rendered Markdown source) and with HTML-escaped
values in the HTML that CommonMark made of the source. A cell holding ``*Bob*``,
``<b>Bob</b>`` or ``[click](https://evil.example)`` thus reads literally in both parts. A
value marked ``|safe`` (or made by a macro) is inserted as Markdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt


def make_converter(line_breaks: bool = False) -> MarkdownIt:
    """CommonMark with tables and strikethrough; HTML written in the template passes.
    ``line_breaks``: a single newline is a line break (as the classic tool's Markdown)."""
    from markdown_it import MarkdownIt  # here: only a Markdown campaign pays for the import

    md = MarkdownIt("commonmark", {"html": True, "breaks": line_breaks})
    md.enable(["table", "strikethrough"])
    return md
