"""Files a message carries: embedded images and attachments, kept inside their folders.

Paths may come from sheet cells, which are untrusted: every path is resolved (following
symlinks) and must stay inside the folder it is allowed in; only regular files count.
"""

from __future__ import annotations

import glob
import hashlib
import html
import mimetypes
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

MAX_GLOB_MATCHES = 100
CACHE_BYTES = 64 * 1024**2  # file contents kept for the rows after
# An image's quoted src, as the regular expression (<img\b[^>]*?\bsrc\s*=\s*)(["'])(.*?)\2
# (re.I, re.S) finds it; that expression scans from every "<img" to the next ">", so a page
# of unclosed "<img" took seconds (quadratic). img_srcs finds the same in linear time.
_IMG_OPEN = re.compile(r"<img\b", re.I)
_SRC_NAME = re.compile(r"\bsrc", re.I)
_SRC_EQUALS = re.compile(r"""src\s*=\s*(["'])""", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class AssetProblem(ValueError):
    """A file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Part:
    """A file to put in a message: an attachment, or an inline image when ``cid`` is set."""

    data: bytes
    maintype: str
    subtype: str
    filename: str
    cid: str | None = None


def guess_type(filename: str) -> tuple[str, str]:
    mime, _ = mimetypes.guess_type(filename, strict=False)
    maintype, _, subtype = (mime or "application/octet-stream").partition("/")
    return maintype, subtype


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedCache(Generic[K, V]):
    """A least-recently-used cache bounded by the bytes its values hold (``size`` of each),
    not by their number: 32 logos or 3 brochures. The newest entry is always kept."""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self.budget, self._size = budget, size
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.held = 0

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V) -> V:
        old = self._items.pop(key, None)
        if old is not None:
            self.held -= old[1]
        size = self._size(value)
        self._items[key] = (value, size)
        self.held += size
        while self.held > self.budget and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self.held -= dropped
        return value


class FileCache:
    """File contents, read once per campaign while they fit in CACHE_BYTES: the same logo
    or brochure on every row is read once; a different file per row is read per row, and
    memory stays flat."""

    def __init__(self) -> None:
        self._parts: SizedCache[tuple[Path, bool], Part] = SizedCache(
            CACHE_BYTES, lambda part: len(part.data))

    def part(self, path: Path, cid_domain: str | None = None) -> Part:
        cached = self._parts.get((path, cid_domain is None))
        if cached is not None:
            return cached
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AssetProblem(f"cannot read {path}: {exc.strerror}") from exc
        maintype, subtype = guess_type(path.name)
        cid = None
        if cid_domain is not None:
            cid = f"{hashlib.sha256(data).hexdigest()[:24]}@{cid_domain}"
        return self._parts.put((path, cid_domain is None), Part(data, maintype, subtype,
                                                               path.name, cid))


def resolve_inside(root: Path, relative: str, what: str,
                   allowed: tuple[Path, ...] = ()) -> Path:
    """``root / relative`` as a real regular file inside ``root`` (or one of ``allowed``).

    Raises AssetProblem when it escapes them, is missing, or is not a regular file.
    """
    if "\x00" in relative:
        raise AssetProblem(f"the {what} path holds a NUL character")
    try:
        target = (root / relative).resolve()
    except (RuntimeError, OSError) as exc:  # a loop of symbolic links
        raise AssetProblem(f"the {what} path {relative!r} cannot be followed: "
                           f"{exc.args[0] if exc.args else exc}") from None
    roots = (root, *allowed)
    if not any(target.is_relative_to(r.resolve()) for r in roots):
        raise AssetProblem(f"the {what} path {relative!r} points outside "
                           f"{' and '.join(str(r) for r in roots)}; "
                           f"only files inside {'that folder' if len(roots) == 1 else 'those'} "
                           f"may be used")
    if not target.exists():
        raise AssetProblem(f"the {what} {relative!r} does not exist (looked for {target})")
    if any(ord(c) < 32 or c == "\x7f" for c in target.name):
        raise AssetProblem(f"the {what} {relative!r} has a line break or another control "
                           "character in its file name, which no header can carry; rename it")
    if not target.is_file():
        raise AssetProblem(f"the {what} {relative!r} is not a regular file")
    return target


def resolve_attachments(root: Path, pattern: str) -> list[Path]:
    """The files an attachment entry names: one path, or a glob. Raises AssetProblem."""
    if not glob.has_magic(pattern):
        return [resolve_inside(root, pattern, "attachment")]
    if Path(pattern).is_absolute():
        raise AssetProblem(f"the attachment pattern {pattern!r} is absolute; write it "
                           f"relative to {root}")
    matches = []
    for index, found in enumerate(glob.iglob(pattern, root_dir=root)):
        if index >= MAX_GLOB_MATCHES:
            raise AssetProblem(f"the attachment pattern {pattern!r} matches more than "
                               f"{MAX_GLOB_MATCHES} files; make it narrower")
        matches.append(found)
    if not matches:
        raise AssetProblem(f"the attachment pattern {pattern!r} matches no file in {root}")
    return [resolve_inside(root, found, "attachment") for found in sorted(matches)]


class ImgSrc(NamedTuple):
    """An image's quoted src in a page: ``text`` is ``prefix + quote + src + quote`` and
    stands at ``start``; ``prefix`` runs from "<img" to just before the quote."""

    start: int
    prefix: str
    quote: str
    src: str

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.quote}{self.src}{self.quote}"

    @property
    def end(self) -> int:
        return self.start + len(self.prefix) + len(self.src) + 2


def img_srcs(html: str) -> Iterator[ImgSrc]:
    """Each ``<img ... src="...">`` of ``html``, in order, without overlaps, in time linear
    in its length: an "<img" is read up to the next ">" or "<img", whichever is first (the
    src a later "<img" reads, a tag around it reads the same), and each search is kept."""
    opens = [m.start() for m in _IMG_OPEN.finditer(html)]
    gt = -1  # the last ">" found
    missing: dict[str, int] = {}  # a quote not found after this position: none after any later
    done = 0  # where the last src ended: no match starts before
    for index, start in enumerate(opens):
        if start < done:
            continue
        if gt < start:
            gt = html.find(">", start)
            gt = len(html) if gt < 0 else gt
        bound = min(gt, opens[index + 1] if index + 1 < len(opens) else len(html))
        for name in _SRC_NAME.finditer(html, start, bound):
            equals = _SRC_EQUALS.match(html, name.start(), gt)
            if equals is None:
                continue
            quote, value = equals.group(1), equals.end()
            close = -1 if missing.get(quote, len(html) + 1) <= value else \
                html.find(quote, value)
            if close < 0:
                missing[quote] = min(missing.get(quote, value), value)
                continue
            yield ImgSrc(start, html[start:equals.end() - 1], quote, html[value:close])
            done = close + 1
            break


def is_local_src(src: str) -> bool:
    return bool(src) and not _SCHEME.match(src) and not src.startswith(("//", "#"))


def embed_images(document: str, resolve: Callable[[str], Part]) -> tuple[str, list[Part]]:
    """Rewrite local ``<img src>`` to ``cid:`` and return the image parts, each once.

    ``resolve(src) -> Part`` finds the file for a local src; it raises AssetProblem.
    """
    parts: dict[str, Part] = {}
    made, done = [], 0
    for found in img_srcs(document):
        made += [document[done:found.start], embedded(found, resolve, parts)]
        done = found.end
    return "".join(made) + document[done:], list(parts.values())


def embedded(found: ImgSrc, resolve: Callable[[str], Part], parts: dict[str, Part]) -> str:
    """What an image's src (see :func:`img_srcs`) becomes: ``cid:`` when it names a local
    file (whose part is added to ``parts`` by cid), or itself."""
    src = urllib.parse.unquote(html.unescape(found.src).strip())
    if not is_local_src(src):
        return found.text
    part = resolve(src)
    parts.setdefault(part.cid or "", part)
    return f"{found.prefix}{found.quote}cid:{part.cid}{found.quote}"
