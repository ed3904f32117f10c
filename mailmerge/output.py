"""The dry-run folder: one .eml per message, ``manifest.csv`` and a browsable ``index.html``.

Everything is streamed: rows are appended as they come, so memory does not grow with
the campaign. A folder is only ever cleared when mailmerge wrote it (a marker file says so).
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import ConfigError
from .gallery import Gallery

if TYPE_CHECKING:
    from .pipeline import Outcome

MARKER = ".mailmerge-preview"
MANIFEST_FIELDS = ("row", "key", "envelope_to", "subject", "file", "size", "attachments",
                   "message_id")
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")

def csv_safe(value: object) -> object:
    """Keep a spreadsheet from running a cell as a formula when it opens this CSV."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:80] or "message"


class EmlFolder:
    """Writes outcomes into a folder as .eml files plus manifest and gallery."""

    def __init__(self, folder: Path, title: str) -> None:
        self.folder = folder
        self.title = title
        self._manifest_file: IO[str] | None = None
        self._gallery: Gallery | None = None

    def __enter__(self) -> EmlFolder:
        self._prepare()
        self._manifest_file = open(self.folder / "manifest.csv", "w", newline="",
                                   encoding="utf-8")
        self._manifest = csv.DictWriter(self._manifest_file, MANIFEST_FIELDS)
        self._manifest.writeheader()
        self._gallery = Gallery(self.folder, self.title)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._gallery is not None:
            self._gallery.close()
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
            for owned in ("html", "list"):
                shutil.rmtree(folder / owned, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("written by mailmerge preview; cleared on the next run\n")

    def write(self, outcome: Outcome) -> Path | None:
        """Write one outcome: a good one as .eml and gallery entry, a bad one as a problem."""
        assert self._gallery is not None
        if outcome.skipped:
            return None
        if outcome.built is None:
            self._gallery.add_problem(outcome.row, "\n".join(str(e) for e in outcome.errors))
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
        self._gallery.add_message(stem, built, path.name)
        return path
