"""The HTML part's neighbours: the text part derived from it, and links that must not be."""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from .assets import AssetProblem

# The attributes whose value a reader follows as a link or loads (their names end with
# one of _URL_ENDINGS).
_URL_NAMES = frozenset({"href", "src", "action", "formaction", "background", "xlink:href"})
# A tag as an HTML parser reads it (the tokenizer of the HTML standard): "<" and a letter,
# the name, then attributes up to a ">" that is not inside a quoted value. An attribute's
# name runs to a space, "/", ">" or "=" (it may start with "="); its value, after "=" and
# spaces, is quoted only when a quote comes first, and unquoted runs to a space or ">".
# The tag is read from every "<" and letter, even one inside another tag's quoted value,
# a comment or a <style> block: what some reader takes for a tag is looked at.
_TAG_START = re.compile(r"<[a-zA-Z]")
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\f\r />]*+")
# One attribute of those, from where the one before it ends: its name and its value.
_ATTRIBUTE = re.compile(
    r"""[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r /=>]*+)"""
    r"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"([^"]*+)"?|'([^']*+)'?|([^\t\n\f\r >]*+)))?""")
_SCRIPT_SCHEME = re.compile(r"^(javascript|vbscript|livescript):", re.I)
# A script URL's value spells "jav", "vbs" or "liv" first (after an optional quote), each
# letter as itself or as a character reference (which starts with "&"), with control
# characters (raw, or as references) before and between them. So a candidate is: "&", or
# the first letter then "&", or the first two then "&" or the third, controls allowed
# between. This finds every script URL, so the tag scan (0.07 ms for 9 KB of inlined
# newsletter) runs only on the rare page that has a candidate after a URL attribute's
# name (and spaces); the third letter keeps `style="line-height..."` (in most
# newsletters, on every tag) from being one. Case is ignored as the tag scan ignores it.
# Each run possessive (*+): what follows it is never one of its characters, so giving one
# back cannot help, and a cell of "=" and 50,000 spaces took 35 s to try with backtracking.
CANDIDATE = re.compile(r"""=\s*+["']?[\x00-\x20]*+(?:&"""
                        r"""|j[\x00-\x20]*+(?:&|a[\x00-\x20]*+[v&])"""
                        r"""|v[\x00-\x20]*+(?:&|b[\x00-\x20]*+[s&])"""
                        r"""|l[\x00-\x20]*+(?:&|i[\x00-\x20]*+[v&]))""", re.I)


# What the names in _URL_NAMES end with ("formaction", "xlink:href" too).
_URL_ENDINGS = ("href", "src", "action", "background")
_HTML_SPACE = " \t\n\r\f"


def _after_url_name(html: str, start: int) -> bool:
    before = html[max(0, start - 64):start].rstrip(_HTML_SPACE)
    return (not before and start > 64) or before.lower().endswith(_URL_ENDINGS)


def _url_candidate(html: str) -> bool:
    """Whether a candidate value stands after a URL attribute: a `style="line-height..."`
    or `class="link"` is no link, and scanning every attribute of 16 KB for those cost
    more than the rest of the row."""
    return any(_after_url_name(html, match.start()) for match in CANDIDATE.finditer(html))


def candidate_at(html: str, start: int) -> bool:
    """Whether the "=" at ``start`` begins a candidate after a URL attribute's name: a
    candidate holds no other "=", so :func:`_url_candidate` is this for every "="."""
    return CANDIDATE.match(html, start) is not None and _after_url_name(html, start)


def script_link(html: str) -> tuple[str, str, str] | None:
    """The first link attribute whose value is a script URL, as (its name as written, its
    value as written, the scheme), read as the HTML standard's tokenizer reads tags: a
    value ends where its tag says, not where a regular expression over the whole page
    would end it (a cell of `src=` in an alt text must not hide the next tag's href).

    Every attribute is looked at (a repeated one too, which a parser would drop), and the
    value decoded the way a reader decodes a URL: character references, then no control
    characters or spaces (a reader strips them at the ends and drops tabs and line breaks
    within)."""
    for name, double, single, bare in _attributes(html):
        if name.lower() not in _URL_NAMES:
            continue
        raw = double or single or bare
        value = re.sub(r"[\x00-\x20]", "", html_module.unescape(raw))
        scheme = _SCRIPT_SCHEME.match(value)
        if scheme:
            return name, raw, scheme.group(1).lower()
    return None


def _attributes(html: str) -> Iterator[tuple[str, ...]]:
    """The attributes of every tag read from each "<" and letter (see _TAG_START),
    each (name, double-quoted value, single-quoted value, bare value) read once.

    Where one tag's reading reaches a place another's already passed between two
    attributes, the rest of it is the same and is not read again; a tag that starts
    inside another's name ends its name where that one does. So a page of tags that do
    not close (a tag read from every "<" ran to the end: 26 s for 50 KB) is read once."""
    passed: set[int] = set()
    name_end = -1
    for tag in _TAG_START.finditer(html):
        if tag.start() >= name_end:
            name_end = _TAG_NAME.match(html, tag.start()).end()  # type: ignore[union-attr]
        at = name_end
        while at not in passed:
            passed.add(at)
            attribute = _ATTRIBUTE.match(html, at)
            if attribute is None:
                break
            yield attribute.groups("")
            at = attribute.end()


def refuse_script_links(html: str, *, candidate: bool | None = None) -> None:
    """A javascript: URL in the HTML (most likely from a cell) is a row problem.

    ``candidate``: whether the page has a candidate (see CANDIDATE), when the caller has
    found that out piece by piece (see pagescan); looked for here otherwise."""
    if not (_url_candidate(html) if candidate is None else candidate):
        return
    found = script_link(html)
    if found is not None:
        name, raw, scheme = found
        raise AssetProblem(f"the HTML has a {scheme}: link ({name}={raw[:60]!r}); mail must "
                           "not carry scripts, check the cell that fills it")


def html_to_text(html: str) -> str:
    """A plain-text alternative derived from the HTML, links shown as their URLs."""
    from inscriptis import get_text
    from inscriptis.model.config import ParserConfig

    text = get_text(html, ParserConfig(display_links=True))
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# A tag's start as the standard's tokenizer reads it, an end tag too (its attributes, if
# any, as _ATTRIBUTE reads them)
_OPEN_OR_CLOSE_TAG = re.compile(r"</?[a-zA-Z][^\t\n\f\r />]*+")


class ValueInTag(NamedTuple):
    """A value that stands inside a tag outside a quoted attribute value: the value's span
    and the tag's."""

    start: int
    end: int
    tag_start: int
    tag_end: int


def value_outside_quotes(markup: str, values: Sequence[tuple[int, int]]
                         ) -> ValueInTag | None:
    """The first of ``values`` (spans of ``markup``, in order) that stands inside a tag
    where a value could add attributes: the tag's name, an attribute's name, an unquoted
    attribute value. Escaping keeps a value data only in text and in quoted values.
    Each tag is read once, so the scan is linear in ``markup``."""
    first = 0
    at = markup.find("<")
    while at >= 0 and first < len(values):
        if markup.startswith("<!--", at):
            closed = markup.find("-->", at + 4)
            at = markup.find("<", len(markup) if closed < 0 else closed + 3)
            continue
        tag = _OPEN_OR_CLOSE_TAG.match(markup, at)
        if tag is None:
            at = markup.find("<", at + 1)
            continue
        safe: list[tuple[int, int]] = []
        end = tag.end()
        while end < len(markup) and markup[end] != ">":
            attribute = _ATTRIBUTE.match(markup, end)
            if attribute is None or attribute.end() == end:
                end += 1
                continue
            safe.extend(attribute.span(group) for group in (2, 3)  # the quoted values
                        if attribute.group(group) is not None)
            end = attribute.end()
        while first < len(values) and values[first][0] < at:
            first += 1  # in the text before this tag
        for start, stop in values[first:]:
            if start >= end:
                break
            if not any(low <= start and stop <= high for low, high in safe):
                return ValueInTag(start, stop, at, end + 1)
        at = markup.find("<", end)
    return None
