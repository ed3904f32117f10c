"""CSS inlined once for each shape a page takes, with its values put in afterwards.

For a template the inliner cannot take as source (it extends or includes others, writes
``|safe`` markup, has loops and structural selectors; see css), and for a Markdown body's
layout. A page's values are swapped for placeholders, so every row whose page takes the
same shape (the same branches, the same number of turns of each loop, the same markup)
gives the same text: it is inlined once, kept, and each row's values are put back in. A
newsletter takes one shape or a few.

An HTML template's page comes in pieces (see fill): its own text, the same string
objects on every row, and the values, escaped. A value that holds ``<``, ``>`` or a quote
(only markup can: ``|safe``, a macro, autoescaping turned off) is styled where it stands:
a placeholder in the shape too, then inlined on its own inside the start tags of the
elements around it (css.inline_in_place), when the style sheet's selectors read nothing
but an element and what it is inside, and the markup closes what it opens. Otherwise, or
when the parser would not keep it whole there, it is part of the shape. Any other value
is a placeholder. So the inlined page is put together from its own pieces and the row's
values as rendered, and looked through as the template's own pages are (pagescan).

The values cannot change what the inliner does, except where it reads them: a shape with
a value in a class, id or style attribute, in one an attribute selector names, in a
``<style>`` block or in a tag outside a quoted attribute value, or one whose values the
inliner moves or drops, is inlined with its values in, on every row. The first rows are
also compared with inlining each page with its values in (css.agrees); a row that
differs makes every later message inlined on its own.
"""

from __future__ import annotations

import html as html_escape
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .assets import CACHE_BYTES, Part, SizedCache
from .css import (
    VERIFY_ROWS,
    TagReader,
    agrees,
    inline_css,
    inline_in_place,
    needs_inlining,
    style_blocks,
)
from .notices import Notice
from .pagescan import MAX_SHAPES, Page, PageScanner, picker
from .placeholders import Placeholders

# the attributes the inliner reads: class and id; style, whose rules it merges with the
# template's; and those that attribute selectors name
_READ = ("class", "id", "style")
_ATTRIBUTE_SELECTOR = re.compile(r"\[\s*(?:[\w-]*\|)?([\w:-]+)")
_MARKUP = re.compile(r"""[<>"']""")
# selectors that read more than an element and what it is inside: its siblings, its place
# among them, what it holds; a page whose CSS has none styles a value's markup alone
_READS_AROUND = re.compile(r":(nth-|first-|last-|only-|empty|has|contains)|[+~]", re.I)
# markup that changes the page's CSS or head, or the parse around it: part of the shape
_NOT_IN_PLACE = re.compile(r"<\s*/?\s*(style|link|html|head|body|meta|base|title|script)\b"
                           r"|<[!?]", re.I)
_RAW_TEXT = {"script", "style", "textarea", "title", "xmp", "plaintext", "iframe", "noembed",
             "noframes", "noscript", "template"}
_TAG = re.compile(r"<(/?)([A-Za-z][\w:-]*)")
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
         "source", "track", "wbr"}
_TAG_END = re.compile(r"""[>"']""")  # what a tag's scan stops at, outside quoted values
# a text the parser and the writer may not leave as written; and '"', so that no text put
# back could end an attribute value, wherever the parser had put its placeholder
_NOT_AS_WRITTEN = re.compile(r'[&<>"\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_MARKED = object()  # a key's place for a value whose markup is styled in place


class _Place(NamedTuple):
    """Where a value's markup stands in a shape: the page up to there (its <html>, its
    <style> blocks, its <body> and the start tags around the place) and those elements'
    names, from html down."""

    prefix: str
    tags: tuple[str, ...]


class _Shape(NamedTuple):
    """One shape of an HTML template's page: which pieces are values, and the page
    inlined, as its own text between them (``texts``) and the value each gap takes."""

    values: Callable[[Sequence[str]], tuple[str, ...]]  # the values, from the pieces
    texts: tuple[str, ...] | None  # None: inlined with its values in, on every row
    order: Callable[[Sequence[str]], tuple[str, ...]]  # the values, in the gaps' order
    inlined: bool  # whether it had CSS to inline (else it is the page as rendered)
    places: tuple[tuple[int, _Place], ...] = ()  # gaps whose markup is styled in place


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
        self._in_place = False  # whether a value's markup can be styled where it stands
        # a value's markup styled in place, by its place and its tags (its texts as
        # placeholders): the styled text between them and their order, or None; its size
        self._text_marks = Placeholders()
        self._styled: SizedCache[tuple[_Place, str], tuple[
            tuple[tuple[str, ...], tuple[int, ...]] | None, int]] = SizedCache(
            CACHE_BYTES // 16, lambda kept: 2 * kept[1])
        self._shapes: dict[tuple[object, ...], _Shape] = {}
        # the values' pieces and where they are, by the key of their own text (None: a value)
        self._values: dict[tuple[str | None, ...],
                           tuple[Callable[[Sequence[str]], tuple[str, ...]], tuple[int, ...]]] = {}
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
        self._in_place = not any(map(_READS_AROUND.search, self._styles))

    def page(self, pieces: list[str], row: int) -> Page | str:
        """The page of a row's pieces with its CSS inlined: looked through in pieces (a
        Page), or a whole page to look through (a str)."""
        own = self._own
        assert own is not None, "learn() first"
        if self.each:
            return _whole("".join(pieces))
        key = tuple(map(own.get, map(id, pieces)))
        found = self._values.get(key)
        if found is None:
            dynamic = tuple(i for i, text in enumerate(key) if text is None)
            found = self._values[key] = (picker(dynamic), dynamic)
        pick, dynamic = found
        markup = [i for i in dynamic if _MARKUP.search(pieces[i])] \
            if _MARKUP.search("".join(pick(pieces))) else []
        # markup styled where it stands; else (the parser would not keep it whole there)
        # part of the shape
        shape = self._shape_of(_with(key, pieces, markup, self._markup_key), pieces, row)
        out = self._filled(shape, pieces)
        if out is None and markup:
            shape = self._shape_of(_with(key, pieces, markup, _itself), pieces, row)
            out = self._filled(shape, pieces)
        if out is None:
            return _whole("".join(pieces))
        if shape.inlined and self._verified < VERIFY_ROWS:
            self._verified += 1
            if not self._agrees("".join(out), "".join(pieces), row):
                return _whole("".join(pieces))
        made = self.scanner.make(out)
        return made if made is not None else "".join(out)

    def _shape_of(self, key: tuple[object, ...], pieces: list[str], row: int) -> _Shape:
        return self._shapes.get(key) or self._shape(key, pieces, row)

    def _filled(self, shape: _Shape, pieces: list[str]) -> list[str] | None:
        """The inlined page of ``shape`` with the row's values in, as pieces; None when
        the shape is inlined with its values in, or markup cannot be styled in place."""
        if shape.texts is None:
            return None
        out = _between(shape.texts, shape.order(shape.values(pieces)))
        for gap, place in shape.places:
            styled = self._styled_in_place(place, out[2 * gap + 1])
            if styled is None:
                return None
            out[2 * gap + 1] = styled
        return out

    def _markup_key(self, value: str) -> object:
        """What a value with markup is in a shape's key: a place for it (``_MARKED``),
        when it can be styled where it stands, or itself."""
        if self._in_place and "<" in value and not _NOT_IN_PLACE.search(value) and \
                _balanced(value):
            return _MARKED
        return value

    def _styled_in_place(self, place: _Place, markup: str) -> str | None:
        """``markup`` styled as where ``place`` is. Its texts between tags stand aside as
        placeholders, like a page's values: markup of the same tags (``<b>{{ name }}</b>``
        on every row) is styled once, and each row's texts go back in. Only texts the
        parser and the writer leave as they are (no entity, no ``>``, no control
        character; not only blanks, which the parser keeps or drops by what is around)
        and that hold no double quote."""
        parts = split_tags(markup)
        texts = parts[0::2]
        plain = [i for i, text in enumerate(texts)
                 if text and not text.isspace() and not _NOT_AS_WRITTEN.search(text)]
        marked = list(parts)
        for number, index in enumerate(plain):
            marked[2 * index] = self._text_marks.mark(number)
        shape = "".join(marked)
        kept = self._styled.get((place, shape))
        if kept is None:
            styled = inline_in_place(place.prefix, place.tags, shape, self._styles)
            split = self._text_marks.split(styled) if styled is not None else None
            if split is not None and sorted(split[1]) != list(range(len(plain))):
                split = None  # the inliner moved or dropped a text
            kept = self._styled.put((place, shape), (split, len(shape)))
        if kept[0] is None:
            return None
        between, order = kept[0]
        return "".join(_between(between, [texts[plain[number]] for number in order]))

    def _shape(self, key: tuple[object, ...], pieces: list[str], row: int) -> _Shape:
        if len(self._shapes) >= MAX_SHAPES:  # a template of ever new shapes: start over
            self._shapes.clear()
            self._values.clear()
            self._texts = {}
            self.scanner = PageScanner(self._texts, self.resolve)
        dynamic = tuple(i for i, text in enumerate(key) if text is None or text is _MARKED)
        page = list(pieces)
        for number, index in enumerate(dynamic):
            page[index] = self._marks.mark(number)
        marked = "".join(page)
        inlined = self._inline(marked, self._marks, row)
        texts: tuple[str, ...] | None = None
        order: tuple[int, ...] = ()
        places: tuple[tuple[int, _Place], ...] = ()
        if inlined is not None:
            texts, order = self._marks.split(inlined)
            in_place = {number for number, index in enumerate(dynamic) if key[index] is _MARKED}
            if in_place and inlined is not marked:  # (a page without CSS stays as it is)
                found = _places(marked, [self._marks.mark(n) for n in sorted(in_place)])
                if found is None or len(set(order)) != len(order):
                    texts = None  # a place the parse does not say, or a value written twice
                else:
                    by_number = dict(zip(sorted(in_place), found, strict=True))
                    places = tuple((gap, by_number[number]) for gap, number in enumerate(order)
                                   if number in by_number)
            if texts is not None:
                self._texts.update((id(text), text) for text in texts if text)
        shape = self._shapes[key] = _Shape(picker(dynamic), texts, picker(order),
                                           inlined is not marked, places)
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


def _between(texts: Sequence[str], values: Sequence[str]) -> list[str]:
    """``values`` put between ``texts`` (one fewer of them), as pieces."""
    out: list[str] = [""] * (2 * len(texts) - 1)
    out[0::2] = texts
    out[1::2] = values
    return out


def _with(key: tuple[str | None, ...], pieces: list[str], indices: list[int],
          place: Callable[[str], object]) -> tuple[object, ...]:
    """``key`` with what ``place`` makes of the pieces at ``indices`` in their places."""
    if not indices:
        return key
    marked: list[object] = list(key)
    for index in indices:
        marked[index] = place(pieces[index])
    return tuple(marked)


def split_tags(markup: str) -> list[str]:
    """``markup`` as text, tag, text, ..., text: a tag is a "<" up to the first ">" outside
    its quoted values (what `re.split(r"(<(?:[^>"']|"[^"]*"|'[^']*')*>)")` gives), found in
    linear time: where a tag's scan stands outside quotes at a ">" or quote, it goes on
    the same for every tag that gets there, so that is worked out once."""
    stops = [m.start() for m in _TAG_END.finditer(markup)]
    known: dict[int, int] = {}  # a stop reached outside quotes: the tag's ">", or -1
    parts, done = [], 0
    start = markup.find("<")
    while start >= 0:
        end = _tag_end(markup, start + 1, stops, known)
        if end < 0:
            start = markup.find("<", start + 1)
            continue
        parts += [markup[done:start], markup[start:end + 1]]
        done = end + 1
        start = markup.find("<", done)
    return [*parts, markup[done:]]


def _tag_end(markup: str, at: int, stops: list[int], known: dict[int, int]) -> int:
    """Where the tag whose scan stands outside quotes at ``at`` ends (its ">"), or -1."""
    passed, end = [], -1
    while (index := bisect_left(stops, at)) < len(stops):
        stop = stops[index]
        if stop in known:
            end = known[stop]
            break
        passed.append(stop)
        if markup[stop] == ">":
            end = stop
            break
        at = markup.find(markup[stop], stop + 1) + 1  # past the closing quote
        if at == 0:
            break
    known.update(dict.fromkeys(passed, end))
    return end


def _itself(piece: str) -> str:
    return piece


def _balanced(markup: str) -> bool:
    """Whether ``markup`` closes every element it opens and no other (a part of a page
    split around a value does not: it is part of its page's shape)."""
    depth: dict[str, int] = {}
    for close, name in _TAG.findall(markup):
        name = name.lower()
        if name not in _VOID:
            depth[name] = depth.get(name, 0) + (-1 if close else 1)
    return not any(depth.values())


def _places(page: str, marks: list[str]) -> list[_Place] | None:
    """Where each of ``marks`` (placeholders of values with markup) stands in ``page``,
    as the inliner's parser reads it; None when one is not in the text of an element of
    the body that holds markup, or the page links a style sheet."""
    from lxml import etree

    root = etree.fromstring(page.strip(), etree.HTMLParser())
    if root is None or root.tag != "html":
        return None
    styles = []
    parents: dict[str, Any] = {}
    for element in root.iter():
        if not isinstance(element.tag, str):  # a comment or processing instruction
            element_text = ""
        else:
            element_text = element.text or ""
            if element.tag == "style":
                styles.append(etree.tostring(element, method="html", encoding="unicode",
                                             with_tail=False))
            elif element.tag == "link":
                return None
        for mark in marks:
            if mark in element_text:
                parents[mark] = element
            elif mark in (element.tail or ""):
                parents[mark] = element.getparent()
    head = f"<html{_attributes(root)}><head>{''.join(styles)}</head>"
    found = []
    for mark in marks:
        parent = parents.get(mark)
        if parent is None or parent.tag in _RAW_TEXT:
            return None
        chain = [*reversed(list(parent.iterancestors())), parent]
        if len(chain) < 2 or chain[1].tag != "body":
            return None
        tags = tuple(element.tag for element in chain)
        found.append(_Place(head + "".join(f"<{element.tag}{_attributes(element)}>"
                                           for element in chain[1:]), tags))
    return found


def _attributes(element: object) -> str:
    attributes = getattr(element, "attrib", {})
    return "".join(f' {name}="{html_escape.escape(value)}"' for name, value in attributes.items())


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
    tags = TagReader(page)  # not page[:start] at every value: linear in the page
    for match in placeholders.positions(page):
        why = tags.value_at(match.start(), read)
        if why is not None:
            return why.replace("{{ }} expression", "value")
    return None
