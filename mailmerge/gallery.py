"""The preview gallery: ``index.html`` that shows every message as a mail client would.

A self-contained page (no server, no network; it works from ``file://``). Its list comes
in chunk files (``list/NNNNN.js``) that the page loads one after another and shows with a
virtual list, so 100,000 messages load incrementally and the page stays responsive. Each
message gets its HTML part (images saved once under ``html/images/``) and its text part
as files the page shows in a sandboxed frame.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import re
from importlib import resources
from pathlib import Path
from typing import IO, Any

CHUNK_SIZE = 1000
_CID_SRC = re.compile(r"""(["'])cid:([^"']+)\1""")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _shown(msg: email.message.EmailMessage, name: str) -> str:
    """A header as a mail client shows it: names unquoted, no encoded words."""
    header = msg.get(name)
    if header is None:
        return ""
    addresses = getattr(header, "addresses", None)
    if addresses is None:
        return str(header)
    return ", ".join(f"{a.display_name} <{a.addr_spec}>" if a.display_name else a.addr_spec
                     for a in addresses)


class Gallery:
    """Streams messages into the gallery files under ``folder``."""

    def __init__(self, folder: Path, title: str) -> None:
        self.folder, self.title = folder, title
        (folder / "html" / "images").mkdir(parents=True, exist_ok=True)
        (folder / "list").mkdir(exist_ok=True)
        self._images: set[str] = set()
        self._chunk: IO[str] | None = None
        self._in_chunk = 0
        self.chunks = 0
        self.total = 0

    def _write_entry(self, entry: dict[str, Any]) -> None:
        if self._chunk is None or self._in_chunk >= CHUNK_SIZE:
            self._close_chunk()
            self._chunk = open(self.folder / "list" / f"{self.chunks:05d}.js", "w",
                               encoding="utf-8")
            self._chunk.write("mm.add([\n")
            self.chunks += 1
            self._in_chunk = 0
        # "</" is escaped so that no value can end the script early
        text = json.dumps(entry, ensure_ascii=False).replace("</", "<\\/")
        self._chunk.write(("," if self._in_chunk else "") + text + "\n")
        self._in_chunk += 1
        self.total += 1

    def _close_chunk(self) -> None:
        if self._chunk is not None:
            self._chunk.write("]);\n")
            self._chunk.close()
            self._chunk = None

    def add_problem(self, row: int, problems: str) -> None:
        self._write_entry({"row": row, "key": "", "error": problems})

    def add_message(self, row: int, key: str, stem: str, data: bytes, eml: str) -> None:
        """Show one message: its headers, HTML and text parts and attachments."""
        msg = email.message_from_bytes(data, policy=email.policy.default)
        images: dict[str, str] = {}
        files = []
        for part in msg.walk():
            cid = part.get("Content-ID")
            if cid and not part.is_multipart():
                cid = cid.strip("<>")
                name = f"{_UNSAFE.sub('_', cid.split('@')[0])}.{part.get_content_subtype()}"
                if name not in self._images:
                    (self.folder / "html" / "images" / name).write_bytes(part.get_content())
                    self._images.add(name)
                images[cid] = f"images/{name}"
            elif part.get_content_disposition() == "attachment":
                files.append([part.get_filename() or "", len(part.get_content())])
        entry: dict[str, Any] = {
            "row": row, "key": key, "eml": eml, "size": len(data), "files": files,
            **{name.lower(): _shown(msg, name) for name in
               ("From", "To", "Cc", "Subject", "Date")},
        }
        html = msg.get_body(("html",))
        if html is not None:
            content = _CID_SRC.sub(lambda m: f"{m.group(1)}{images.get(m.group(2), '')}"
                                   f"{m.group(1)}", html.get_content())
            (self.folder / "html" / f"{stem}.html").write_text(content, encoding="utf-8")
            entry["html"] = f"html/{stem}.html"
        text = msg.get_body(("plain",))
        if text is not None:
            (self.folder / "html" / f"{stem}.txt").write_text(
                text.get_content().replace("\r\n", "\n"), encoding="utf-8")
            entry["text"] = f"html/{stem}.txt"
        self._write_entry(entry)

    def close(self) -> None:
        """Finish the chunks and write index.html, which knows how many there are."""
        self._close_chunk()
        page = resources.files("mailmerge").joinpath("static/gallery.html").read_text("utf-8")
        title = (self.title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        page = (page.replace("__TITLE__", title).replace("__CHUNKS__", str(self.chunks))
                .replace("__TOTAL__", str(self.total)))
        (self.folder / "index.html").write_text(page, encoding="utf-8")
