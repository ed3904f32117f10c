"""Looking through a rendered HTML page by what its row changed.

A template yields its page in pieces: its own text, the same string object on every row,
and the values it fills in. Three scans look through every page: for local images to
embed, for a script-link candidate (htmlpart's prefilter), for the tags the pre-flight
checks judge. Here they look at the template's own text once for each shape a page
takes (which of the template's pieces its `if`s and loops yield) and, per row, only where
a value stands.

Each answer is the whole-page scan's. A scan is split only where the whole-page scan
cannot carry a match across: at a ">" of the template's own for tags and images, at
each "=" for the prefilter, whose candidates hold no other "=" and look 64 characters
back. A row whose values hold "<", ">" or a quote (only markup marked safe can:
autoescaping writes them as references) is scanned whole, and so is every row of a shape
this cannot follow: an image tag that a value stands in, an image whose quoted src runs
past its tag's ">" or over two pieces, an image that cannot be read.
"""

from __future__ import annotations

import re
import types
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from operator import itemgetter
from typing import NamedTuple

import jinja2

from .assets import AssetProblem, Part, embedded, img_srcs
from .htmlpart import CANDIDATE, candidate_at

MAX_SHAPES = 64  # shapes kept per template; a template with more is scanned row by row

# The tags the pre-flight checks judge, without re.I (which makes the scan twice as slow)
TAG = re.compile(r"<(?=[aAiIhHtT])([aA]|[iI][mM][gG]|[hH][tT][mM][lL]|[tT][iI][tT][lL][eE]|"
                 r"[aA][rR][eE][aA])\b([^>]*)>")
# Jinja syntax left in a page (the pre-flight checks warn of it); a regular expression
# finds it 3 times faster than two finds
TEMPLATE_MARK = re.compile(r"\{[{%]")
# Where one may start, each: TEMPLATE_MARK's matches do not overlap, so a mark a value
# starts ("{" + "{{") would hide the template's own mark right after it
_MARK_START = re.compile(r"\{(?=[{%])")
_UNSAFE = re.compile(r"""[<>"']""")
# Everything a prefilter candidate may read after its "=" (any non-ASCII character too:
# its case is ignored over all of Unicode); the first other character ends its reading.
# (A class over all of Unicode would take 2 ms to compile, at every start.)
_CANDIDATE_READS = re.compile(r"""=(?:[\s\x00-\x20"'&jvlabsiJVLABSI]|[^\x00-\x7f])*""")
_IMG_OPEN = re.compile(r"<img", re.I)
_IMG_START = re.compile(r"<(?:i(?:mg?)?)?\Z", re.I)  # what a value after it could make <img of


class TagMatch(NamedTuple):
    """One match of :data:`TAG`: its name and attributes as written, its text, and for a
    <title> what follows it up to the next "<" (at most 200 characters; "" for others)."""

    name: str
    attributes: str
    text: str
    after: str


def tag_matches(html: str) -> Iterator[TagMatch]:
    """The matches of :data:`TAG` in a whole page. (Up to its last ">": a match ends at
    one, and from each "<a" after it TAG would scan to the end, quadratic in their
    number.)"""
    for match in TAG.finditer(html, 0, html.rfind(">") + 1):
        name = match.group(1)
        yield TagMatch(name, match.group(2), match.group(0),
                       _after_text(html, match.end()) if name.lower() == "title" else "")


def _after_text(html: str, end: int) -> str:
    return html[end:end + 200].split("<", 1)[0]


class _OwnTag(NamedTuple):
    """A match in the template's own text, made once (a <title>'s ``after`` is worked
    out per page, from where it ends: piece, offset)."""

    match: TagMatch
    title: bool
    piece: int
    offset: int


class _ValueStretch(NamedTuple):
    """Text between two ">" that a value stands in after its "<": looked through per row,
    from (piece, offset) to (piece, offset)."""

    first: int
    start: int
    last: int
    end: int


def picker(indices: tuple[int, ...]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """``lambda pieces: tuple(pieces[i] for i in indices)``, in C."""
    if len(indices) > 1:
        return itemgetter(*indices)
    if indices:
        index = indices[0]
        return lambda pieces: (pieces[index],)
    return lambda pieces: ()


class _Shape(NamedTuple):  # not a dataclass: making one costs 2 ms of every start
    size: int  # how many pieces
    own: tuple[str, ...]  # the template's own pieces, in order
    pick_own: Callable[[Sequence[str]], tuple[str, ...]]
    dynamic: tuple[int, ...]  # the pieces that are values
    pick_values: Callable[[Sequence[str]], tuple[str, ...]]
    substitutions: tuple[tuple[int, str], ...]  # pieces with their images embedded
    images: tuple[Part, ...]
    candidate: bool  # the template's own text has a prefilter candidate
    checks: tuple[tuple[int, int], ...]  # "=" of its own a value may decide: (piece, offset)
    tags: tuple[_OwnTag | _ValueStretch, ...]
    marked: bool  # its own text has TEMPLATE_MARK
    bridges: tuple[tuple[int, ...], ...]  # runs of values between "{" and "{" or "%"

    def fits(self, pieces: list[str]) -> bool:
        """Whether these pieces have this shape: the template's own text where it has it
        (a value that equals it there reads the same)."""
        return len(pieces) == self.size and self.pick_own(pieces) == self.own


class Page:
    """A page made from pieces: its HTML with images embedded, and the HTML as rendered
    when the prefilter found a candidate in that (to be scanned for script links whole,
    see htmlpart)."""

    __slots__ = ("html", "pieces", "shape", "unembedded", "values")

    def __init__(self, html: str, pieces: list[str], shape: _Shape, unembedded: str | None,
                 values: str) -> None:
        self.html, self.pieces, self.shape = html, pieces, shape
        self.unembedded, self.values = unembedded, values

    @property
    def images(self) -> list[Part]:
        return list(self.shape.images)

    def tags(self) -> Iterator[TagMatch]:
        """``tag_matches(self.html)``."""
        pieces, html = self.pieces, self.html
        for step in self.shape.tags:
            if isinstance(step, _OwnTag):
                yield step.match if not step.title else step.match._replace(
                    after=_after_text(html, self._offset(step.piece) + step.offset))
                continue
            text = "".join(pieces[step.first:step.last + 1])
            stop = len(text) - len(pieces[step.last]) + step.end
            for match in TAG.finditer(text, step.start, stop):
                name = match.group(1)
                yield TagMatch(name, match.group(2), match.group(0), "" if name.lower() != "title"
                               else _after_text(html, self._offset(step.first) + match.end()))

    def template_mark(self) -> bool:
        """``TEMPLATE_MARK.search(self.html)`` is not None."""
        shape = self.shape
        if shape.marked:
            return True
        if "{" in self.values or "%" in self.values:  # a value may be part of one
            return TEMPLATE_MARK.search(self.html) is not None
        return any(not any(self.pieces[i] for i in run) for run in shape.bridges)

    def _offset(self, piece: int) -> int:
        """Where a piece starts in the page."""
        return sum(map(len, self.pieces[:piece]))


def _constants(code: types.CodeType, into: dict[int, str]) -> None:
    for const in code.co_consts:
        if type(const) is str and const:
            into[id(const)] = const
        elif isinstance(const, types.CodeType):
            _constants(const, into)


def template_text(environment: jinja2.Environment, template: jinja2.Template
                  ) -> dict[int, str]:
    """The text a template (and every template loaded with it: includes, layouts) yields
    as is, by identity: the strings its compiled code holds."""
    found: dict[int, str] = {}
    templates = [template, *(t for t in (environment.cache or {}).values()
                             if isinstance(t, jinja2.Template))]
    for each in templates:
        _constants(each.root_render_func.__code__, found)
        for block in each.blocks.values():
            _constants(block.__code__, found)
    return found


class _Layout:
    """Positions in one page: pieces' starts, the values' stretches."""

    def __init__(self, pieces: list[str], dynamic: tuple[int, ...]) -> None:
        self.html = "".join(pieces)
        self.starts = [0, *accumulate(map(len, pieces))]
        self.slots = [(self.starts[i], self.starts[i + 1]) for i in dynamic]

    def inside(self, position: int) -> bool:
        """Whether the character at ``position`` is a value's."""
        return any(first <= position < last for first, last in self.slots)

    def touches(self, start: int, end: int) -> bool:
        """Whether a value stands in ``html[start:end + 1]``, or at its edges."""
        return any(first <= end and last >= start for first, last in self.slots)

    def last_value_before(self, position: int) -> int | None:
        """Where the last value at or before ``position`` ends; None when there is none."""
        ends = [last for first, last in self.slots if first <= position]
        return max(ends) if ends else None

    def at(self, position: int) -> tuple[int, int]:
        """A position of the template's own text as (piece, offset)."""
        piece = bisect_right(self.starts, position) - 1
        return piece, position - self.starts[piece]


class PageScanner:
    """The shapes of one template's pages, each looked through once. Build once per
    template, with its own text by identity (:func:`template_text`); :meth:`make` per
    row."""

    def __init__(self, own: dict[int, str], resolve: Callable[[str], Part]) -> None:
        self._own = own
        self._resolve = resolve
        self._shapes: dict[tuple[str | None, ...], _Shape | None] = {}
        # the same shapes by their number of pieces: most sizes have one or two, and
        # telling them apart by their own pieces is quicker than working out the key
        self._by_size: dict[int, list[_Shape]] = {}

    def make(self, pieces: list[str]) -> Page | None:
        """The page of these pieces, or None when it must be scanned whole. Raises nothing:
        a page whose images cannot be embedded is None, and the whole scan says why."""
        for shape in self._by_size.get(len(pieces), ()):
            if shape.fits(pieces):
                break
        else:
            found = self._shape(pieces)
            if found is None:
                return None
            shape = found
        values = "".join(shape.pick_values(pieces))
        if _UNSAFE.search(values):
            return None
        candidate = shape.candidate
        made: str | None = None  # the page as rendered, before its images are embedded
        if candidate or shape.checks or "=" in values:
            made = "".join(pieces)
            candidate = candidate or self._candidate(made, pieces, shape)
        for piece, text in shape.substitutions:
            pieces[piece] = text
        html = made if made is not None and not shape.substitutions else "".join(pieces)
        return Page(html, pieces, shape, made if candidate else None, values)

    def _shape(self, pieces: list[str]) -> _Shape | None:
        """The shape of these pieces, looked through now if it is new (with the values of
        this row, when they hold nothing that would make it theirs)."""
        key = tuple(map(self._own.get, map(id, pieces)))
        if key in self._shapes:
            return self._shapes[key]
        dynamic = tuple(i for i, own in enumerate(key) if own is None)
        if any(_UNSAFE.search(pieces[i]) for i in dynamic):
            return None
        shape = self._analyse(pieces, dynamic)
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
            self._by_size.clear()
        self._shapes[key] = shape
        if shape is not None:
            self._by_size.setdefault(shape.size, []).append(shape)
        return shape

    @staticmethod
    def _candidate(html: str, pieces: list[str], shape: _Shape) -> bool:
        starts = [0, *accumulate(map(len, pieces))]
        if any(candidate_at(html, starts[piece] + offset) for piece, offset in shape.checks):
            return True
        for piece in shape.dynamic:
            value = pieces[piece]
            at = value.find("=")
            while at >= 0:
                if candidate_at(html, starts[piece] + at):
                    return True
                at = value.find("=", at + 1)
        return False

    def _analyse(self, pieces: list[str], dynamic: tuple[int, ...]) -> _Shape | None:
        page = _Layout(pieces, dynamic)
        made = self._embed(page, pieces)
        if made is None:
            return None
        substitutions, images = made
        candidate, checks = _prefilter(page)
        out = list(pieces)
        for piece, text in substitutions:
            out[piece] = text
        values = set(dynamic)
        pick_own = picker(tuple(i for i in range(len(pieces)) if i not in values))
        layout = _Layout(out, dynamic)
        return _Shape(len(pieces), pick_own(pieces), pick_own, dynamic,
                      picker(dynamic), substitutions, images, candidate, checks,
                      _tags(layout), *_marks(layout, out, dynamic))

    def _embed(self, page: _Layout, pieces: list[str]
               ) -> tuple[tuple[tuple[int, str], ...], tuple[Part, ...]] | None:
        """The pieces that embedding images changes, and the images; None when a value
        could change what is embedded, or an image cannot be."""
        html = page.html
        for first, _ in page.slots:  # a value right after "<", "<i" or "<im"
            opened = html.rfind("<", max(0, first - 3), first)
            if opened >= 0 and _IMG_START.match(html, opened, first):
                return None
        closed = -1
        for match in _IMG_OPEN.finditer(html):
            if closed < match.start():  # the ">" of the one before may close this one too
                closed = html.find(">", match.start())
                closed = len(html) if closed < 0 else closed
            if page.touches(match.start(), closed):
                return None
        changes: dict[int, list[tuple[int, int, str]]] = {}
        parts: dict[str, Part] = {}
        closed = -1  # the first ">" at or after the image looked at
        for image in img_srcs(html):
            start, end = image.start, image.end
            if closed < start:
                closed = html.find(">", start)
                closed = len(html) if closed < 0 else closed
            piece, offset = page.at(start)
            if end > closed + 1 or \
                    end > page.starts[piece + 1]:
                return None  # past its tag's ">", or over two pieces
            try:
                text = embedded(image, self._resolve, parts)
            except AssetProblem:
                return None
            if text != image.text:
                changes.setdefault(piece, []).append((offset, offset + end - start, text))
        substitutions = []
        for piece, edits in changes.items():
            made, done = [], 0
            for start, end, replacement in edits:
                made += [pieces[piece][done:start], replacement]
                done = end
            substitutions.append((piece, "".join(made) + pieces[piece][done:]))
        return tuple(substitutions), tuple(parts.values())


def _prefilter(page: _Layout) -> tuple[bool, tuple[tuple[int, int], ...]]:
    """Whether the template's own text has a candidate whatever the values are, and the
    "=" of its own whose verdict a value may decide (its reading or its 64 characters
    back reach a value)."""
    html, checks = page.html, []
    at = html.find("=")
    while at >= 0:
        if not page.inside(at):  # an "=" of the template's own
            reads = _CANDIDATE_READS.match(html, at)
            assert reads is not None
            read_by_value = page.touches(at, reads.end())
            if read_by_value or CANDIDATE.match(html, at):
                last = page.last_value_before(at)
                if read_by_value or (last is not None and at - last < 65):
                    checks.append(page.at(at))
                elif candidate_at(html, at):
                    return True, ()
        at = html.find("=", at + 1)
    return False, tuple(checks)


def _tags(page: _Layout) -> tuple[_OwnTag | _ValueStretch, ...]:
    """TAG's matches in the template's own text, and the stretches a value stands in,
    split at each ">" (a match ends at the first ">" after its "<")."""
    html = page.html
    steps: list[_OwnTag | _ValueStretch] = []
    begin = 0
    while begin < len(html):
        closed = html.find(">", begin)
        if closed < 0:
            break  # no match without a ">"
        opened = html.find("<", begin, closed)
        if opened >= 0:
            if page.touches(opened + 1, closed):
                steps.append(_ValueStretch(*page.at(opened), *_after(page, closed)))
            else:
                steps.extend(_OwnTag(TagMatch(match.group(1), match.group(2), match.group(0),
                                              ""),
                                     match.group(1).lower() == "title",
                                     *_after(page, match.end() - 1))
                             for match in TAG.finditer(html, opened, closed + 1))
        begin = closed + 1
    return tuple(steps)


def _after(page: _Layout, position: int) -> tuple[int, int]:
    """Just after a character of the template's own, as (piece, offset)."""
    piece, offset = page.at(position)
    return piece, offset + 1


def _marks(page: _Layout, pieces: list[str], dynamic: tuple[int, ...]
           ) -> tuple[bool, tuple[tuple[int, ...], ...]]:
    """Whether the template's own text has TEMPLATE_MARK whatever the values are, and the
    runs of values that make one when they are all empty: a "{" of its own before them
    and a "{" or "%" after. (A mark that a value is part of holds a "{" or "%" of it.)"""
    html = page.html
    if any(not page.touches(match.start() + 1, match.start() + 1)
           for match in _MARK_START.finditer(html)):
        return True, ()
    runs: list[list[int]] = []
    for index in dynamic:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    bridges = tuple(tuple(run) for run in runs
                    if run[0] > 0 and run[-1] + 1 < len(pieces)
                    and pieces[run[0] - 1].endswith("{")
                    and pieces[run[-1] + 1].startswith(("{", "%")))
    return False, bridges
