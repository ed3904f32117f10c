"""CSS inlined once for each shape a page takes, with its values put in afterwards.

For a template the inliner cannot take as source (it extends or includes others, writes
``|safe`` markup, has loops and structural selectors; see css), and for a Markdown body's
layout. A page's values are swapped for placeholders, so every row whose page takes the
same shape (the same branches, the same number of turns of each loop, the same markup)
gives the same text: it is inlined once, kept, and each row's values are put back in. A
newsletter takes one shape or a few; a page whose markup changes on every row is inlined
on every row, as a message on its own would be.

An HTML template's page comes in pieces (see fill): its own text, the same string
objects on every row, and the values, escaped. A value that holds ``<``, ``>`` or a quote
(only markup can: ``|safe``, a macro, autoescaping turned off) is part of the shape; any
other is a placeholder. So the inlined page is put together from its own pieces and the
row's values as rendered, and looked through as the template's own pages are (pagescan).

The values cannot change what the inliner does, except where it reads them: a shape with
a value in a class, id or style attribute, in one an attribute selector names, in a
``<style>`` block or in a tag outside a quoted attribute value, or one whose values the
inliner moves or drops, is inlined with its values in, on every row. The first rows are
also compared with inlining each page with its values in (css.agrees); a row that
differs makes every later message inlined on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .assets import CACHE_BYTES, Part, SizedCache
from .css import VERIFY_ROWS, agrees, inline_css, needs_inlining, style_blocks, value_in_tag
from .notices import Notice
from .pagescan import MAX_SHAPES, Page, PageScanner, picker
from .placeholders import Placeholders

# the attributes the inliner reads: class and id; style, whose rules it merges with the
# template's; and those that attribute selectors name
_READ = ("class", "id", "style")
_ATTRIBUTE_SELECTOR = re.compile(r"\[\s*(?:[\w-]*\|)?([\w:-]+)")
_MARKUP = re.compile(r"""[<>"']""")


class _Shape(NamedTuple):
    """One shape of an HTML template's page: which pieces are values, and the page
    inlined, as its own text between them (``texts``) and the value each gap takes."""

    values: Callable[[Sequence[str]], tuple[str, ...]]  # the values, from the pieces
    texts: tuple[str, ...] | None  # None: inlined with its values in, on every row
    order: Callable[[Sequence[str]], tuple[str, ...]]  # the values, in the gaps' order
    inlined: bool  # whether it had CSS to inline (else it is the page as rendered)


class PageInliner:
    """Inlines the pages of one template's rows; ``notices`` is where a change of way is
    said, ``resolve`` finds an image's part (for the pages looked through in pieces)."""

    def __init__(self, notices: list[Notice], resolve: Callable[[str], Part]) -> None:
        self.notices = notices
        self.resolve = resolve
        self.each = False  # every message inlined on its own, since a row differed
        self._verified = 0
        self._said = False  # whether a shape inlined with its values in was noted
        # Markdown pages by their text with placeholders: (inlined, or None; the length)
        self._pages: SizedCache[str, tuple[str | None, int]] = SizedCache(
            CACHE_BYTES // 8, lambda kept: len(kept[0] or "") + kept[1])
        # HTML shapes, by their pieces' own text (None for a value)
        self._marks = Placeholders()  # for the values of an HTML page's shape
        self._own: dict[int, str] | None = None  # the templates' own pieces, by identity
        self._styles: frozenset[str] = frozenset()  # the style blocks in that text
        self._shapes: dict[tuple[str | None, ...], _Shape] = {}
        # the values' pieces, by the same key
        self._values: dict[tuple[str | None, ...], Callable[[Sequence[str]], tuple[str, ...]]] = {}
        self._texts: dict[int, str] = {}  # the inlined shapes' own pieces, by identity
        self.scanner = PageScanner(self._texts, resolve)

    # --- an HTML template's page, in pieces --------------------------------------------------

    @property
    def learned(self) -> bool:
        return self._own is not None

    def learn(self, own: dict[int, str]) -> None:
        """The templates' own text, by identity (pagescan.template_text), once they are
        loaded: after the first render, which loads what they extend and include. Their
        style blocks' rules may be kept between runs (see css.inline_css)."""
        self._own = own
        self._styles = frozenset(block for text in own.values() for block in style_blocks(text))

    def page(self, pieces: list[str], row: int) -> Page | str:
        """The page of a row's pieces with its CSS inlined: looked through in pieces (a
        Page), or a whole page to look through (a str)."""
        own = self._own
        assert own is not None, "learn() first"
        if self.each:
            return _whole("".join(pieces))
        key = tuple(map(own.get, map(id, pieces)))
        pick = self._values.get(key)
        if pick is None:
            pick = self._values[key] = picker(tuple(i for i, text in enumerate(key)
                                                    if text is None))
        if _MARKUP.search("".join(pick(pieces))):  # markup is part of the shape
            key = tuple(piece if text is None and _MARKUP.search(piece) else text
                        for piece, text in zip(pieces, key, strict=True))
        shape = self._shapes.get(key) or self._shape(key, pieces, row)
        if shape.texts is None:
            return _whole("".join(pieces))
        out: list[str] = [""] * (2 * len(shape.texts) - 1)
        out[0::2] = shape.texts
        out[1::2] = shape.order(shape.values(pieces))
        if shape.inlined and self._verified < VERIFY_ROWS:
            self._verified += 1
            if not self._agrees("".join(out), "".join(pieces), row):
                return _whole("".join(pieces))
        made = self.scanner.make(out)
        return made if made is not None else "".join(out)

    def _shape(self, key: tuple[str | None, ...], pieces: list[str], row: int) -> _Shape:
        if len(self._shapes) >= MAX_SHAPES:  # a template of ever new shapes: start over
            self._shapes.clear()
            self._values.clear()
            self._texts = {}
            self.scanner = PageScanner(self._texts, self.resolve)
        dynamic = tuple(i for i, text in enumerate(key) if text is None)
        page = list(pieces)
        for number, index in enumerate(dynamic):
            page[index] = self._marks.mark(number)
        marked = "".join(page)
        inlined = self._inline(marked, self._marks, row)
        texts: tuple[str, ...] | None = None
        order: tuple[int, ...] = ()
        if inlined is not None:
            texts, order = self._marks.split(inlined)
            self._texts.update((id(text), text) for text in texts if text)
        shape = self._shapes[key] = _Shape(picker(dynamic), texts, picker(order),
                                           inlined is not marked)
        return shape

    # --- a Markdown body's page, as text with placeholders ---------------------------------

    def html(self, page: str, placeholders: Placeholders, row: int) -> str:
        """The message's HTML: ``page`` (rendered with ``placeholders``) with its CSS
        inlined and its values in."""
        if self.each:
            return _whole(placeholders.escaped(page))
        kept = self._pages.get(page)
        if kept is None:
            kept = self._pages.put(page, (self._inline(page, placeholders, row), len(page)))
        if kept[0] is None:
            return _whole(placeholders.escaped(page))
        html = placeholders.escaped(kept[0])
        if self._verified < VERIFY_ROWS and kept[0] is not page:
            self._verified += 1
            filled = placeholders.escaped(page)
            if not self._agrees(html, filled, row):
                return inline_css(filled)
        return html

    # --- both -------------------------------------------------------------------------------

    def _agrees(self, html: str, filled: str, row: int) -> bool:
        """Whether ``html`` is what inlining ``filled`` gives; if not, every message from
        here on is inlined on its own."""
        if agrees(html, filled):
            return True
        self.each = True
        self.notices.append(Notice.note(
            f"CSS is inlined in every message, not once: on row {row} inlining the page "
            "before filling in the values gave different HTML"))
        return False

    def _inline(self, page: str, placeholders: Placeholders, row: int) -> str | None:
        """``page`` inlined with its placeholders, or None where they could change what
        the inliner does. A page without a ``<style>`` block is its own."""
        if not needs_inlining(page):
            return page
        why = _unsafe(page, placeholders)
        inlined = inline_css(page, keep=self._styles) if why is None else None
        if inlined is not None and _found(inlined, placeholders) != _found(page, placeholders):
            why, inlined = "the inliner moved or dropped a value", None
        if why is not None and not self._said:
            self._said = True
            self.notices.append(Notice.note(
                f"CSS is inlined in every message whose page takes the shape of row "
                f"{row}'s, not once: there {why}"))
        return inlined


def _whole(html: str) -> str:
    """A page inlined with its values in (the way of a message on its own)."""
    return inline_css(html) if needs_inlining(html) else html


def _found(text: str, placeholders: Placeholders) -> list[str]:
    return sorted(match.group(0) for match in placeholders.positions(text))


def _unsafe(page: str, placeholders: Placeholders) -> str | None:
    """Why a value of ``page`` could change what the inliner does, or None."""
    blocks = style_blocks(page)
    if any(placeholders.has_any(block) for block in blocks):
        return "a <style> block holds a value"
    read = _READ + tuple(name.lower() for block in blocks
                         for name in _ATTRIBUTE_SELECTOR.findall(block))
    for match in placeholders.positions(page):
        why = value_in_tag(page[:match.start()], read)
        if why is not None:
            return why.replace("{{ }} expression", "value")
    return None
