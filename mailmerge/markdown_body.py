"""Markdown bodies: cell values kept as data while Jinja renders the Markdown source.

While a Markdown template renders, every ``{{ value }}`` is replaced by a placeholder of
letters and digits (which no Markdown rule touches), so that the template alone decides
the structure. The placeholders are then filled in twice: with the raw values in the
text part (the rendered Markdown source) and with HTML-escaped values in the HTML that
CommonMark made of the source. A cell holding ``*Bob*``, ``<b>Bob</b>`` or
``[click](https://evil.example)`` thus reads literally in both parts. A value marked
``|safe`` (or made by a macro) is inserted as Markdown.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from markdown_it import MarkdownIt


class Placeholders:
    """The values one render replaced by placeholders. Reset before each render."""

    def __init__(self) -> None:
        nonce = secrets.token_hex(6)  # a cell cannot guess it, so it cannot forge one
        self._prefix = f"mm{nonce}v"
        self._pattern = re.compile(rf"mm{nonce}v(\d+)z")
        self.values: list[str] = []

    def reset(self) -> None:
        self.values = []

    def finalize(self) -> Callable[..., Any]:
        """A Jinja ``finalize`` that swaps a value for a placeholder. It takes the context,
        so that Jinja does not evaluate constant expressions with it at compile time."""
        @jinja2.pass_context
        def finalize(context: jinja2.runtime.Context, value: Any) -> Any:
            if isinstance(value, (Markup, jinja2.Undefined)):
                return value  # |safe, a macro's output; an undefined name raises later
            self.values.append(str(value))
            return f"{self._prefix}{len(self.values) - 1}z"
        return finalize

    def has_any(self, text: str) -> bool:
        return self._pattern.search(text) is not None

    def raw(self, text: str) -> str:
        """``text`` with the values as they are (the text part)."""
        return self._pattern.sub(lambda m: self.values[int(m.group(1))], text)

    def escaped(self, text: str) -> str:
        """``text`` with the values HTML-escaped (the HTML part)."""
        return self._pattern.sub(lambda m: str(escape(self.values[int(m.group(1))])), text)


def make_converter(line_breaks: bool = False) -> MarkdownIt:
    """CommonMark with tables and strikethrough; HTML written in the template passes.
    ``line_breaks``: a single newline is a line break (as the classic tool's Markdown)."""
    from markdown_it import MarkdownIt  # here: only a Markdown campaign pays for the import

    md = MarkdownIt("commonmark", {"html": True, "breaks": line_breaks})
    md.enable(["table", "strikethrough"])
    return md
