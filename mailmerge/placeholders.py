"""Values kept out of a page while Jinja renders it: a placeholder stands for each.

A template rendered with :meth:`Placeholders.finalize` gives text in which every
``{{ value }}`` is a placeholder of letters and digits, so the text depends only on the
template's own structure (its branches, its loops, markup marked ``|safe``). The values
are put back afterwards, raw or HTML-escaped. Markdown bodies use this so that a cell is
never read as Markdown; pageinline, so that one inlining of CSS serves every row whose
page has the same shape.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import jinja2
from markupsafe import Markup, escape


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
            return self.mark(len(self.values) - 1)
        return finalize

    def mark(self, number: int) -> str:
        """The placeholder of the value numbered ``number``."""
        return f"{self._prefix}{number}z"

    def split(self, text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """``text`` as the text between its placeholders and their numbers, in order."""
        split = self._pattern.split(text)
        return tuple(split[0::2]), tuple(map(int, split[1::2]))

    def has_any(self, text: str) -> bool:
        return self._pattern.search(text) is not None

    def positions(self, text: str) -> list[re.Match[str]]:
        """Where the placeholders stand in ``text``."""
        return list(self._pattern.finditer(text))

    def raw(self, text: str) -> str:
        """``text`` with the values as they are (the text part)."""
        return self._pattern.sub(lambda m: self.values[int(m.group(1))], text)

    def escaped(self, text: str) -> str:
        """``text`` with the values HTML-escaped (the HTML part)."""
        return self._pattern.sub(lambda m: str(escape(self.values[int(m.group(1))])), text)
