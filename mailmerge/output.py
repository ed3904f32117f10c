"""The dry-run folder: one .eml per message, ``manifest.csv`` and a browsable ``index.html``.

Everything is streamed: rows are appended as they come, so memory does not grow with
the campaign. A folder is only ever cleared when mailmerge wrote it (a marker file says so).
"""

from __future__ import annotations

import csv
import email
import email.policy
import html
import re
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .pipeline import Outcome

MARKER = ".mailmerge-preview"
MANIFEST_FIELDS = ("row", "key", "envelope_to", "subject", "file", "size", "attachments",
                   "message_id")
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_CID_SRC = re.compile(r"""(["'])cid:([^"']+)\1""")

_INDEX_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; display: flex; height: 100vh; }}
#list {{ width: 42%; overflow: auto; border-right: 1px solid #ccc; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }}
tr.bad td {{ background: #fee; }}
iframe {{ flex: 1; border: 0; height: 100%; }}
h1 {{ font-size: 16px; margin: 8px; }}
</style></head>
<body><div id="list"><h1>{title}</h1><table>
<tr><th>Row</th><th>Recipient</th><th>Subject</th><th>Size</th><th>Attachments</th></tr>
"""
_INDEX_TAIL = """</table></div>
<iframe name="view" sandbox="allow-popups" title="message"></iframe>
</body></html>
"""


def csv_safe(value: object) -> object:
    """Keep a spreadsheet from running a cell as a formula when it opens this CSV."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:80] or "message"


class EmlFolder:
    """Writes outcomes into a folder as .eml files plus manifest and index."""

    def __init__(self, folder: Path, title: str) -> None:
        self.folder = folder
        self.title = title
        self._manifest_file: IO[str] | None = None
        self._index: IO[str] | None = None
        self._images: set[str] = set()

    def __enter__(self) -> EmlFolder:
        self._prepare()
        self._manifest_file = open(self.folder / "manifest.csv", "w", newline="",
                                   encoding="utf-8")
        self._manifest = csv.DictWriter(self._manifest_file, MANIFEST_FIELDS)
        self._manifest.writeheader()
        self._index = open(self.folder / "index.html", "w", encoding="utf-8")
        self._index.write(_INDEX_HEAD.format(title=html.escape(self.title)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._index is not None:
            self._index.write(_INDEX_TAIL)
            self._index.close()
        if self._manifest_file is not None:
            self._manifest_file.close()

    def _prepare(self) -> None:
        folder = self.folder
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"the output folder {folder} is a file",
                                  hint="choose another --out")
            if any(folder.iterdir()) and not (folder / MARKER).exists():
                raise ConfigError(f"the output folder {folder} is not empty and was not "
                                  "written by mailmerge", hint="choose another --out, or "
                                  "empty that folder; mailmerge only clears folders it made")
            for old in folder.glob("*.eml"):
                old.unlink()
            shutil.rmtree(folder / "html", ignore_errors=True)
        (folder / "html" / "images").mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("written by mailmerge preview; cleared on the next run\n")

    def write(self, outcome: Outcome) -> Path | None:
        """Write one outcome: a good one as .eml + preview page, a bad one as an index line."""
        assert self._index is not None
        if outcome.skipped:
            return None
        if outcome.built is None:
            problems = "<br>".join(html.escape(str(e)) for e in outcome.errors)
            self._index.write(f'<tr class="bad"><td>{outcome.row}</td>'
                              f'<td colspan="4">{problems}</td></tr>\n')
            return None
        built = outcome.built
        rendered = built.rendered
        stem = f"{rendered.row:05d}-{_safe_name(rendered.key)}"
        path = self.folder / f"{stem}.eml"
        path.write_bytes(built.data)
        attachments = [a.filename for a in rendered.attachments]
        self._manifest.writerow({name: csv_safe(value) for name, value in {
            "row": rendered.row, "key": rendered.key,
            "envelope_to": " ".join(built.envelope_to), "subject": rendered.subject,
            "file": path.name, "size": len(built.data), "attachments": "; ".join(attachments),
            "message_id": built.message_id,
        }.items()})
        page = self._write_page(stem, built.data)
        self._index.write(
            f'<tr><td>{rendered.row}</td>'
            f'<td><a href="html/{page}" target="view">{html.escape(rendered.key)}</a></td>'
            f'<td>{html.escape(rendered.subject)}</td><td>{len(built.data):,}</td>'
            f'<td>{html.escape(", ".join(attachments))}</td></tr>\n')
        return path

    def _write_page(self, stem: str, data: bytes) -> str:
        """A page that shows the message as a mail client would, parsed from its own bytes."""
        msg = email.message_from_bytes(data, policy=email.policy.default)
        images = {}
        for part in msg.walk():
            cid = part.get("Content-ID")
            if cid:
                cid = cid.strip("<>")
                name = f"{_safe_name(cid.split('@')[0])}.{part.get_content_subtype()}"
                if name not in self._images:
                    (self.folder / "html" / "images" / name).write_bytes(part.get_content())
                    self._images.add(name)
                images[cid] = f"images/{name}"
        heads = "".join(f"<b>{html.escape(k)}:</b> {html.escape(str(v))}<br>"
                        for k, v in msg.items() if k in ("From", "To", "Cc", "Subject", "Date"))
        body = msg.get_body(("html", "plain"))
        content = body.get_content() if body is not None else ""
        if body is not None and body.get_content_subtype() == "html":
            content = _CID_SRC.sub(lambda m: f"{m.group(1)}{images.get(m.group(2), '')}"
                                   f"{m.group(1)}", content)
        else:
            content = f"<pre>{html.escape(content)}</pre>"
        page = f"{stem}.html"
        (self.folder / "html" / page).write_text(
            f'<div style="font:13px sans-serif;background:#f4f4f4;padding:8px">{heads}</div>'
            + content, encoding="utf-8")
        return page
