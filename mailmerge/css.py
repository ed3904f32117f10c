"""CSS inlining, done once per campaign on the template source when that is safe.

Inlining a 16 KB newsletter costs milliseconds; doing it once on the template instead
of once per message gives the same result only when Jinja syntax survives it and no
selector depends on what Jinja produces. So: Jinja syntax is swapped for inert
placeholders, the source is inlined, the syntax is put back; templates where that could
differ fall back to inlining every rendered message. The renderer (``Renderer._verify``)
compares the two ways on the first rows and switches to the per-message way when they
disagree.

Both results, the template inlined once and whether the two ways agree on a row, depend on
their inputs and on the inliner alone; they are kept between runs (see diskmemo), so a
campaign checked, previewed and sent does not import the inliner again for them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NamedTuple, TypeVar

from .diskmemo import DiskMemo, default_folder, key_of

T = TypeVar("T")

# The tags and blocks below are found with a start, then its end searched from there (see
# _style_spans, jinja_spans): a lazy `.*?` over the page is retried at every start and
# takes time growing with the square of a page of many unclosed starts.
_JINJA_OPEN = re.compile(r"\{[{%#]")
_JINJA_CLOSE = {"{{": "}}", "{%": "%}", "{#": "#}"}
_STYLE_OPEN = re.compile(r"<style\b", re.I)
_STYLE_CLOSE = re.compile(r"</style\s*>", re.I)
_STRUCTURAL = re.compile(r":(nth-|first-|last-|only-|empty)|[+~]", re.I)
_REFERENCES = re.compile(r"\{%-?\s*(extends|include|import|from)\b")
_DOCTYPE = re.compile(r"^\s*(<!doctype[^>]*>)", re.I)
# Rows on which inlining a template or a page once is compared with inlining the message.
VERIFY_ROWS = 3


class _Deferred(ModuleType):
    """Stands for a module until something uses it, then hands over to the real one.

    premailer imports ``requests`` only to fetch linked style sheets, which
    ``allow_network=False`` never does; this takes its place in ``sys.modules`` while
    premailer is imported. Another thread importing ``requests`` in that moment gets this
    too, so any attribute looked up here (``get``, ``__path__`` for a submodule) imports
    the real module and answers from it, instead of failing.
    """

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _premailer() -> ModuleType:
    """premailer, imported (only when a campaign has HTML) without the HTTP library it
    imports to fetch linked style sheets (see ``_Deferred``): that library and its own
    were half of premailer's import, 35 ms of every start-up."""
    if "premailer" in sys.modules:
        return sys.modules["premailer"]
    stand_in = None
    if "requests" not in sys.modules:
        stand_in = sys.modules["requests"] = _Deferred("requests")
    try:
        import premailer
    finally:
        if stand_in is not None and sys.modules.get("requests") is stand_in:
            del sys.modules["requests"]  # whoever imports it later gets the real one
    module: ModuleType = premailer
    return module


_RULES_KEPT = 32  # style blocks whose rules are kept; a campaign has one or two


def _fetch_nothing(url: str) -> None:
    """cssutils' fetcher: nothing is fetched (cssutils then leaves the import empty)."""
    return None


@functools.cache
def _inliner() -> type:
    """premailer's Premailer, working out the rules of a style block once.

    premailer parses a block's CSS once (its own cache) but formats every rule's
    properties again on every document: two thirds of inlining a newsletter, and the same
    block comes on every message that is inlined on its own. The rules depend only on the
    block, its place among the blocks and the options, which inline_css never varies.
    """
    class Inliner(_premailer().Premailer):  # type: ignore[misc]
        rules: ClassVar[dict[tuple[str, int], tuple[list[Any], list[Any]]]] = {}
        keep: Collection[str] = ()  # the blocks (a template's own text) kept between runs
        only: _Elements | None = None  # only the rules that may style these elements

        def _parse_css_string(self, css_body: str, validate: bool = True) -> Any:
            # cssutils fetches the sheet an @import names as it parses (a request with no
            # time-out, in every check and preview: an unanswered one hung the run), and
            # premailer leaves @import rules out of what it writes anyway: fetch nothing
            import cssutils

            parser = cssutils.CSSParser(fetcher=_fetch_nothing, validate=validate)
            return parser.parseString(css_body)

        def _parse_style_rules(self, css_body: str, ruleset_index: int
                               ) -> tuple[list[Any], list[Any]]:
            key = (css_body, ruleset_index)
            found = self.rules.get(key)
            if found is None:
                if len(self.rules) >= _RULES_KEPT:
                    self.rules.clear()
                found = self.rules[key] = _rules_kept(
                    css_body, ruleset_index, css_body in self.keep,
                    lambda: super(Inliner, self)._parse_style_rules(css_body, ruleset_index),
                    lambda rule: super(Inliner, self)._css_rules_to_string([rule]))
            if self.only is not None:
                return [rule for rule in found[0] if _may_style(rule[1], self.only)], []
            return list(found[0]), list(found[1])  # the lists, not their items, are changed

        def _css_rules_to_string(self, rules: list[Any]) -> str:
            # premailer writes one line for each rule left in the style block
            write = super()._css_rules_to_string
            return "\n".join(rule if isinstance(rule, _Written) else write([rule])
                             for rule in rules)

    return Inliner


class _Elements(NamedTuple):
    """The names, classes and ids of some elements."""

    tags: frozenset[str]
    classes: frozenset[str]
    ids: frozenset[str]


_COMBINATOR = re.compile(r"[\s>+~]+")
_PLAIN_COMPOUND = re.compile(r"(\*|[A-Za-z][\w-]*)?((?:[.#][\w-]+)*)")


@functools.lru_cache(maxsize=1024)
def _subject(selector: str) -> _Elements | None:
    """What an element must be for ``selector`` to style it (the tag, classes and ids of
    its last compound), or None when that is more than a plain compound says."""
    last = _COMBINATOR.split(selector.strip())[-1]
    match = _PLAIN_COMPOUND.fullmatch(last)
    if match is None or not last:
        return None
    tag, rest = match.groups()
    names = re.findall(r"([.#])([\w-]+)", rest)
    return _Elements(frozenset({tag.lower()} if tag and tag != "*" else ()),
                     frozenset(name for kind, name in names if kind == "."),
                     frozenset(name for kind, name in names if kind == "#"))


def _may_style(selector: str, elements: _Elements) -> bool:
    """Whether ``selector`` may style one of ``elements`` (yes, when it cannot be told)."""
    subject = _subject(selector)
    return subject is None or (subject.tags <= elements.tags
                               and subject.classes <= elements.classes
                               and subject.ids <= elements.ids)


class _Written(str):
    """A rule left in the style block (an @media rule), as premailer writes it there."""


def _rules_kept(css_body: str, index: int, keep: bool,
                parse: Callable[[], tuple[list[Any], list[Any]]],
                write: Callable[[Any], str]) -> tuple[list[Any], list[Any]]:
    """premailer's rules of a style block, kept between runs when ``keep`` (a block of a
    template's own text; a block a row wrote into is never kept): the parse of a
    newsletter's block with cssutils was 35-50 ms of a template's first inlining, against
    3 ms for inlining it again. An @media rule is kept as premailer writes it, which is
    all that is done with it. Kept or not, the rules take the same form, so the bytes do
    not depend on the cache."""
    def work() -> str:
        rules, leftover = parse()
        return json.dumps([[list(specificity), selector, bulk]
                           for specificity, selector, bulk in rules] +
                          [[None, rule[0], rule[1]] if isinstance(rule, tuple)
                           else [None, None, write(rule)] for rule in leftover])

    kept = json.loads(_remembered("rules", (css_body, str(index)), str, work) if keep
                      else work())
    return ([(tuple(specificity), selector, bulk) for specificity, selector, bulk in kept
             if specificity is not None],
            [(selector, bulk) if selector is not None else _Written(bulk)
             for specificity, selector, bulk in kept if specificity is None])


def _make_inliner(html: Any, keep: Collection[str]) -> Any:
    inliner = _inliner()(
        html,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        strip_important=False,  # a @media rule overrides inlined styles only with it
        disable_link_rewrites=True,
        allow_network=False,
        cssutils_logging_level=logging.CRITICAL,
    )
    inliner.keep = keep
    return inliner


def inline_css(html: str, keep: Collection[str] = ()) -> str:
    """Inline the <style> rules of a whole HTML document (kept: @media and other at-rules).
    ``keep``: style blocks that are a template's own text, whose rules are kept between
    runs; no other block's are."""
    result: str = _make_inliner(html, keep).transform(pretty_print=False)
    doctype = _DOCTYPE.match(html)
    if doctype and not _DOCTYPE.match(result):
        result = doctype.group(1) + "\n" + result
    return result


_BEGIN_TEXT, _END_TEXT = "mmfragment", "mmfragmentend"  # the comments around the markup
_BEGIN, _END = f"<!--{_BEGIN_TEXT}-->", f"<!--{_END_TEXT}-->"


def inline_in_place(prefix: str, tags: tuple[str, ...], markup: str,
                    keep: Collection[str] = ()) -> str | None:
    """``markup`` with CSS inlined as where a page puts it: ``prefix`` opens the page to
    that place (its <html>, a <head> with its <style> blocks, its <body>, then the start
    tags of the elements around the place); ``tags`` are those elements' names, from html
    down. None when the parser would not keep the markup whole in that place (it closes
    an element around it, or leaves one of its own open); the caller then inlines the
    page with the markup in. Only for style sheets whose selectors read nothing but an
    element and what it is inside (no siblings, positions, :has or :contains): the markup
    is then styled as in the page, and nothing outside it as it would be otherwise."""
    from lxml import etree

    # joined, not added: a Markup value would escape what is added to it
    document = "".join((prefix, _BEGIN, markup, _END)).strip()  # as premailer parses it
    root = etree.fromstring(document, etree.HTMLParser())
    if root is None:
        return None
    begin = end = None
    for comment in root.iter(etree.Comment):
        if comment.text == _BEGIN_TEXT:
            begin = comment
        elif comment.text == _END_TEXT:
            end = comment
    if begin is None or end is None or begin.getparent() is not end.getparent():
        return None
    parent = begin.getparent()
    if parent is None or [*reversed([e.tag for e in parent.iterancestors()]), parent.tag] != list(tags):
        return None
    names: set[str] = set()
    classes: set[str] = set()
    ids: set[str] = set()
    node = begin.getnext()
    while node is not None and node is not end:
        for element in node.iter(tag=etree.Element):  # the markup's elements, not comments
            names.add(element.tag)
            classes.update((element.get("class") or "").split())
            ids.add(element.get("id") or "")
        node = node.getnext()
    inliner = _make_inliner(root, keep)
    # the rules that cannot style the markup are left out: what they do to the elements
    # around it is not kept (running a newsletter's fifty rules over each small document
    # was most of its time)
    inliner.only = _Elements(frozenset(names), frozenset(classes), frozenset(ids))
    inliner.transform(pretty_print=False)
    text = etree.tostring(root, method="html", pretty_print=False,
                          encoding="utf-8").decode("utf-8")  # as premailer writes it
    start, stop = text.find(_BEGIN), text.rfind(_END)
    if start == -1 or stop < start:
        return None
    return text[start + len(_BEGIN):stop]


def _style_spans(html: str) -> Iterator[tuple[int, int]]:
    """Where the contents of the `<style ...>...</style >` blocks are, in linear time: an
    end not found from one start is not found from any later one."""
    at = 0
    while (start := _STYLE_OPEN.search(html, at)) is not None:
        inside = html.find(">", start.end()) + 1
        end = _STYLE_CLOSE.search(html, inside) if inside else None
        if end is None:
            return
        yield inside, end.start()
        at = end.end()


def jinja_spans(source: str) -> Iterator[tuple[int, int]]:
    """Where the ``{{ }}``, ``{% %}`` and ``{# #}`` are, in linear time: a kind whose end
    is not found from one start is not looked for again."""
    at, unclosed = 0, set()
    while (start := _JINJA_OPEN.search(source, at)) is not None:
        kind = start.group()
        end = -1 if kind in unclosed else source.find(_JINJA_CLOSE[kind], start.end())
        if end < 0:
            unclosed.add(kind)
            at = start.start() + 1
            continue
        yield start.start(), end + 2
        at = end + 2


def needs_inlining(html: str) -> bool:
    return next(_style_spans(html), None) is not None


def style_blocks(html: str) -> list[str]:
    """The contents of the `<style>` blocks."""
    return [html[start:end] for start, end in _style_spans(html)]


def uses_other_templates(source: str) -> bool:
    return bool(_REFERENCES.search(source))


def value_in_tag(before: str, read: tuple[str, ...] = ("class", "id")) -> str | None:
    """Why a value standing right after ``before`` (the page or source up to it) may change
    what the inliner does, or None: in text it cannot; inside a tag it must stand in a
    quoted attribute value that selectors do not read (``read``)."""
    return TagReader(before).value_at(len(before), read)


class TagReader:
    """:func:`value_in_tag` for values standing at increasing places of one text, in time
    linear in its length: what was read before a place is kept, not read again."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._done = 0  # read up to here
        self._lt = self._gt = self._quote = -1  # the last "<", ">" and quote read
        self._name: tuple[tuple[int, int], str | None] = ((-1, -1), None)

    def value_at(self, end: int, read: tuple[str, ...] = ("class", "id")) -> str | None:
        """:func:`value_in_tag` of ``text[:end]``; ``end`` no less than the last one."""
        text, done = self.text, self._done
        self._lt = max(self._lt, text.rfind("<", done, end))
        self._gt = max(self._gt, text.rfind(">", done, end))
        self._quote = max(self._quote, text.rfind('"', done, end), text.rfind("'", done, end))
        self._done = end
        if self._lt <= self._gt:
            return None
        key = (self._lt, self._quote)  # a tag's values in the same quotes: read once
        if self._name[0] != key:
            self._name = (key, _open_attribute(text, self._lt, self._quote))
        name = self._name[1]
        if name is None:
            return "a {{ value }} stands inside a tag, outside an attribute value"
        if name.lower() in read:
            return f"a {name.lower()} attribute is computed by Jinja"
        return None


def _open_attribute(text: str, start: int, quote: int) -> str | None:
    """The name of the attribute whose value the ``quote`` at ``quote`` (the last one, after
    ``start``) opens (``name="``), or None; read backwards from that quote."""
    if quote < start:
        return None
    at = _back_over(text, quote - 1, start, str.isspace)
    if at < start or text[at] != "=":
        return None
    end = _back_over(text, at - 1, start, str.isspace)
    at = _back_over(text, end, start, lambda c: c.isalnum() or c in "_:-")
    return text[at + 1:end + 1] or None


def _back_over(text: str, at: int, start: int, kind: Callable[[str], bool]) -> int:
    """The index before the run of ``kind`` characters that ends at ``at`` (not before
    ``start``)."""
    while at >= start and kind(text[at]):
        at -= 1
    return at


@dataclass(frozen=True)
class Prepared:
    """The outcome of trying to inline a template once: source to compile, or why not."""

    source: str | None
    reason: str | None = None


class _Context:
    """What a template protected so far ends in, kept as its pieces are added (joining them
    at every Jinja tag took time growing with the square of their number): the text since
    its last ">", whose "<" opens the tag it ends inside, and whether it ends in a
    <title>. Neither "<title" nor "</title" can stand across two pieces."""

    def __init__(self) -> None:
        self.tag = ""
        self.in_title = False

    def add(self, piece: str) -> None:
        closed = piece.rfind(">")
        self.tag = piece[closed + 1:] if closed >= 0 else self.tag + piece
        lowered = piece.lower()
        opened, ended = lowered.rfind("<title"), lowered.rfind("</title")
        if opened >= 0 or ended >= 0:
            self.in_title = opened > ended


def protect_jinja(source: str) -> tuple[str, list[str]] | str:
    """The template source with its Jinja syntax stood aside as placeholders the inliner
    leaves alone, and what each stands for; or why it cannot be."""
    originals: list[str] = []
    pieces: list[str] = []
    last = 0
    context = _Context()
    for start, end in jinja_spans(source):
        context.add(source[last:start])
        pieces.append(source[last:start])
        text = source[start:end]
        index = len(originals)
        originals.append(text)
        if text.startswith("{{"):
            problem = value_in_tag(context.tag)
            if problem is not None:
                return problem
            pieces.append(f"mmjv{index}x")
        else:
            if "<" in context.tag:
                return "a {% %} statement stands inside a tag"
            if context.in_title:
                pieces.append(f"mmjv{index}x")  # <title> holds text only, not a comment
            else:
                pieces.append(f"<!--mmjs{index}-->")
        context.add(pieces[-1])
        last = end
    pieces.append(source[last:])
    return "".join(pieces), originals


@functools.lru_cache(maxsize=8)
def inline_template_once(source: str) -> Prepared:
    """Inline CSS on a Jinja template source, protecting its syntax; see module docstring.

    Kept for the process: validation and sending each prepare a renderer for the same
    template, and the inlining is the dearest part of that."""
    if "{% raw" in source or "{%- raw" in source:
        return Prepared(None, "the template uses {% raw %}")
    if re.search(r"\|\s*safe\b|autoescape\s+false", source):
        return Prepared(None, "the template outputs unescaped HTML (|safe), which may need styles")
    if uses_other_templates(source):
        return Prepared(None, "the template extends or includes other templates")
    for block in style_blocks(source):
        if next(jinja_spans(block), None) is not None:
            return Prepared(None, "a <style> block contains Jinja syntax")
        if _STRUCTURAL.search(block) and "{%" in source:
            return Prepared(None, "the CSS uses structural selectors (:nth-child, +, ~ ...) "
                                  "and the template has loops or conditions")
    made = protect_jinja(source)
    if isinstance(made, str):
        return Prepared(None, made)
    protected, originals = made
    inlined = _inline_kept(protected)

    def restore(match: re.Match[str]) -> str:
        return originals[int(match.group(1) or match.group(2))]

    restored, count = re.subn(r"mmjv(\d+)x|<!--mmjs(\d+)-->", restore, inlined)
    if count != len(originals):
        return Prepared(None, "inlining moved or dropped some Jinja syntax")
    return Prepared(restored)


# What the inliner's results depend on besides their inputs: the packages that parse,
# match and write (their installed files), and this module, which sets the options.
_ENGINE_PACKAGES = ("premailer", "cssutils", "cssselect", "lxml")
_memo: DiskMemo | None = None  # made from the environment on first use


def engine_fingerprint(packages: tuple[str, ...] = _ENGINE_PACKAGES) -> str | None:
    """The installed code behind the inliner's results, without importing it (0.3 ms):
    each package's file by path, size and time, and this module's own text. None when a
    file cannot be looked at (a package in a zip): nothing is kept then."""
    try:
        parts = [Path(__file__).read_text(encoding="utf-8")]
        for name in packages:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None else None
            if origin is None:
                parts.append(f"{name}: missing")
                continue
            info = os.stat(origin)
            parts.append(f"{name}: {origin} {info.st_size} {info.st_mtime_ns}")
    except (OSError, ImportError, ValueError):
        return None
    return key_of(*parts)


@functools.cache
def _engine() -> str | None:
    return engine_fingerprint()


def _remembered(kind: str, inputs: tuple[str, ...], result: type[T],
                work: Callable[[], T]) -> T:
    """``work()``, kept between runs under its inputs and the inliner's fingerprint."""
    global _memo
    engine = _engine()
    if engine is None:
        return work()
    if _memo is None:
        _memo = DiskMemo(default_folder())
    return _memo.result((kind, engine, *inputs), result, work)


def _inline_kept(html: str) -> str:
    """:func:`inline_css` of a template (no row's data), kept between runs."""
    return _remembered("inline", (html,), str,
                       lambda: inline_css(html, keep=frozenset(style_blocks(html))))


def agrees(fast: str, rendered: str) -> bool:
    """Whether ``fast`` (a row rendered from the template inlined once) is, as HTML, what
    inlining ``rendered`` (the same row from the template as written) gives. Kept between
    runs by a hash of both pages: the same rows of the same templates give the same
    answer, and only the hash of a row's page is written down."""
    return _remembered("agrees", (fast, rendered), bool, lambda: canonical_html(fast) ==
                       canonical_html(inline_css(rendered)))


def canonical_html(html: str) -> str:
    """A normal form for comparing two HTML documents (entity spelling, attribute quotes)."""
    import lxml.html

    document = lxml.html.document_fromstring(html)
    text: str = lxml.html.tostring(document, encoding="unicode", method="html")
    return text
