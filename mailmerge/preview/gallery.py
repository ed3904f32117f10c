"""The preview gallery: ``index.html`` that shows every message as a mail client would.

A self-contained page (no server, no network; it works from ``file://``). Its list comes
in chunk files (``list/NNNNN.js``) that the page loads one after another and shows with a
virtual list, so 100,000 messages load incrementally and the page stays responsive. The
messages' HTML and text parts go into files of their own, about a megabyte each
(``parts/NNNNN.js``, named by the row of their first message; each process that writes
messages writes its own), loaded when a message in them is opened and shown in a sandboxed
frame; images are saved once under ``images/``. Two files per message besides the .eml,
as before, tripled the files a dry run creates, and creating a file cost more than
rendering the message.
"""

from __future__ import annotations

import json
import os
import re
from email.headerregistry import Address
from importlib import resources
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..message import Built

CHUNK_SIZE = 1000
PARTS_BYTES = 1 << 20  # a parts file is closed once it holds this much (or PARTS_MESSAGES)
PARTS_MESSAGES = 500
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _names(addresses: tuple[Address, ...]) -> str:
    """Addresses as a mail client shows them: names unquoted, no encoded words."""
    return ", ".join(f"{a.display_name} <{a.addr_spec}>" if a.display_name else a.addr_spec
                     for a in addresses)


def _script_json(value: Any) -> str:
    """JSON that a <script> may hold: "</" is escaped so that no value can end it early."""
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")


# A parts file's line, as GalleryFiles.write makes it: mm.part(row, {"html": ..., "text": ...});
_PART_LINE = re.compile(rb"mm\.part\((\d+), (\{.*\})\);")


def list_json(script: bytes) -> bytes:
    """A list chunk (``list/NNNNN.js``) as a JSON array of its entries, for a page that
    fetches its data rather than running it; a chunk still being written gives the
    entries whole so far."""
    lines = script.split(b"\n")[1:-1]  # after "mm.add([", and not a line still unfinished
    entries = [line.removeprefix(b",") for line in lines if line.startswith((b"{", b",{"))]
    return b"[" + b",\n".join(entries) + b"]"


def parts_json(script: bytes) -> bytes:
    """A parts file (``parts/NNNNN.js``) as a JSON object of each row's parts, as
    :func:`list_json` does for the list."""
    found = (_PART_LINE.fullmatch(line) for line in script.split(b"\n")[:-1])
    return b"{" + b",\n".join(b'"%s": %s' % (m[1], m[2]) for m in found if m) + b"}"


class GalleryFiles:
    """Writes each message's images and parts for the gallery and makes its list entry;
    safe in a worker process (each writes parts files of its own)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._images: set[str] = set()
        self._parts: IO[bytes] | None = None
        self._parts_name = ""
        self._parts_size = self._in_parts = 0
        self._owner = 0  # the process that opened the parts file

    def write(self, built: Built, eml: str) -> dict[str, Any]:
        """Write one message's images (once each) and parts, and return its list entry.

        Everything comes from the rendered values, which are what the message encodes;
        parsing each .eml back took more time than making it.
        """
        rendered = built.rendered
        images: dict[str, str] = {}
        for part in rendered.images:
            assert part.cid is not None
            name = f"{_UNSAFE.sub('_', part.cid.split('@')[0])}.{part.subtype}"
            if name not in self._images:
                # written whole under another name first: two workers may write it at once
                target = self.folder / "images" / name
                partial = target.with_name(f".{name}.{os.getpid()}")
                partial.write_bytes(part.data)
                os.replace(partial, target)
                self._images.add(name)
            images[part.cid] = f"images/{name}"
        entry: dict[str, Any] = {
            "row": rendered.row, "key": rendered.key, "eml": eml, "size": len(built.data),
            "files": [[a.filename, len(a.data)] for a in rendered.attachments],
            "from": _names(rendered.from_), "to": _names(rendered.to),
            "cc": _names(rendered.cc), "bcc": _names(rendered.bcc),
            "subject": rendered.subject, "date": built.date,
        }
        # {"html": ..., "text": ...} as JSON, made by hand: the parts file is a script of its
        # own (src=), so "</script>" in a string cannot end it, and json.dumps of the dict
        # with the "</" escaped the list needs took twice as long; ASCII (non-ASCII letters
        # as \u escapes) encodes faster, and the line is then encoded as it is
        parts: list[str] = []
        if rendered.html is not None:
            content = rendered.html
            for cid, image in images.items():  # one C-speed replace per image, not a scan
                for quote in ('"', "'"):       # of 16 KB by a regular expression
                    content = content.replace(f"{quote}cid:{cid}{quote}",
                                              f"{quote}{image}{quote}")
            parts.append(f'"html": {encode_basestring_ascii(content)}')
            entry["html"] = 1
        if rendered.text is not None:
            parts.append(f'"text": {encode_basestring_ascii(rendered.text)}')
            entry["text"] = 1
        line = f"mm.part({rendered.row}, {{{', '.join(parts)}}});\n".encode()
        if self._parts is not None and self._owner != os.getpid():
            self._parts = None  # forked with the file open: the parent's to write and close
        if (self._parts is None or self._parts_size >= PARTS_BYTES
                or self._in_parts >= PARTS_MESSAGES):
            self.close()
            self._owner = os.getpid()
            self._parts_name = f"{rendered.row:05d}"
            # unbuffered: a worker process ends without closing it, and each message's
            # line is whole on disk before the parent lists the message
            self._parts = open(os.path.join(self.folder, "parts", f"{self._parts_name}.js"),  # noqa: SIM115
                               "wb", buffering=0)
            self._parts_size = self._in_parts = 0
        self._parts.write(line)
        self._parts_size += len(line)
        self._in_parts += 1
        entry["part"] = self._parts_name
        return entry

    def close(self) -> None:
        """Close the parts file being written (a worker's is closed as it ends)."""
        if self._parts is not None:
            self._parts.close()
            self._parts = None


class Gallery:
    """Streams the list of messages (entries) into the gallery under ``folder``."""

    def __init__(self, folder: Path, title: str, live: bool = False) -> None:
        self.folder, self.title, self.live = folder, title, live
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "list").mkdir(exist_ok=True)
        (folder / "parts").mkdir(exist_ok=True)
        self._chunk: IO[str] | None = None
        self._in_chunk = 0
        self.chunks = 0
        self.total = 0

    def _write_entry(self, entry: dict[str, Any]) -> None:
        if self._chunk is None or self._in_chunk >= CHUNK_SIZE:
            self._close_chunk()
            # open across calls, one chunk file at a time; closed by _close_chunk
            self._chunk = open(self.folder / "list" / f"{self.chunks:05d}.js", "w",  # noqa: SIM115
                               encoding="utf-8")
            self._chunk.write("mm.add([\n")
            self.chunks += 1
            self._in_chunk = 0
        self._chunk.write(("," if self._in_chunk else "") + _script_json(entry) + "\n")
        self._in_chunk += 1
        self.total += 1

    def _close_chunk(self) -> None:
        if self._chunk is not None:
            self._chunk.write("]);\n")
            self._chunk.close()
            self._chunk = None

    def add_problem(self, row: int, problems: str) -> None:
        self._write_entry({"row": row, "key": "", "error": problems})

    def add_entry(self, entry: dict[str, Any]) -> None:
        """Show one message, its entry made by :meth:`GalleryFiles.write`."""
        self._write_entry(entry)

    def close(self) -> None:
        """Finish the chunks and write index.html, which knows how many there are."""
        self._close_chunk()
        page = resources.files("mailmerge").joinpath("static/gallery.html").read_text("utf-8")
        title = (self.title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        page = (page.replace("__TITLE__", title).replace("__CHUNKS__", str(self.chunks))
                .replace("__TOTAL__", str(self.total))
                .replace("__WATCH__", "true" if self.live else "false"))
        (self.folder / "index.html").write_text(page, encoding="utf-8")
