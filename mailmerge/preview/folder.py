"""The dry-run folder: one .eml per message, ``manifest.csv`` and a browsable ``index.html``
(with its list, parts and images, see :mod:`.gallery`).

Everything is streamed: rows are appended as they come, so memory does not grow with
the campaign. A folder is only ever cleared when mailmerge wrote it (a marker file says so).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from ..errors import ConfigError
from ..pipeline import Outcome
from ..safecsv import csv_safe
from .gallery import Gallery, GalleryFiles

MARKER = ".mailmerge-preview"
WATCH_FILE = "watch.json"  # the live preview's state, which its page polls (see watch.py)
MANIFEST_FIELDS = ("row", "key", "envelope_from", "envelope_to", "subject", "file", "size",
                   "attachments", "message_id")
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)

# What a preview writes into its folder, and nothing else may be there when it clears it.
_OURS_TOP = re.compile(r"\d{5,}-[A-Za-z0-9@._+-]*\.eml|manifest\.csv|index\.html|list|parts|"
                       r"images|html|\.?watch\.json(\.part)?|" + re.escape(MARKER))
_OURS_CHUNK = re.compile(r"\d{5,}\.js")
# html/: where earlier versions wrote each message's parts, and the images
_OURS_HTML = re.compile(r"\d{5,}-[A-Za-z0-9@._+-]*\.(html|txt)|images")


def _not_ours(folder: Path) -> str | None:
    """The first entry in a preview folder that a preview does not write, if any."""
    for pattern, where in ((_OURS_TOP, folder), (_OURS_HTML, folder / "html"),
                           (_OURS_CHUNK, folder / "list"), (_OURS_CHUNK, folder / "parts")):
        if not where.is_dir() and where != folder:
            continue
        for entry in where.iterdir():
            if not pattern.fullmatch(entry.name) or (entry.is_symlink()):
                return str(entry.relative_to(folder))
    for images in (folder / "images", folder / "html" / "images"):
        if images.is_dir():
            for entry in images.iterdir():
                if entry.is_dir() or entry.is_symlink():
                    return str(entry.relative_to(folder))
    return None


def _safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:80] or "message"


@dataclass(frozen=True)
class Stored:
    """One row as stored: a message's manifest row and gallery entry, or its problems."""

    row: int
    manifest: dict[str, Any] | None = None
    entry: dict[str, Any] | None = None
    problem: str | None = None


class MessageFiles:
    """Writes each message's own files (the .eml, the gallery's parts); safe in a worker
    process. What it returns is recorded, in sheet order, by :meth:`EmlFolder.record`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._gallery = GalleryFiles(folder)

    def store(self, outcome: Outcome) -> Stored | None:
        """Write one message's files; an OSError becomes a ConfigError, which a worker
        process hands to the parent as it is (see parallel.py)."""
        try:
            return self._store(outcome)
        except OSError as exc:
            raise ConfigError(f"cannot write the dry run into {self.folder}: "
                              f"{exc.strerror or exc}",
                              hint="choose another --out: a folder you may write in, on a "
                                   "disk with room") from exc

    def _store(self, outcome: Outcome) -> Stored | None:
        if outcome.skipped:
            return None
        if outcome.built is None:
            return Stored(outcome.row, problem="\n".join(str(e) for e in outcome.errors))
        built = outcome.built
        rendered = built.rendered
        name = f"{rendered.row:05d}-{_safe_name(rendered.key)}.eml"
        # a path as text, and the file through its descriptor: making Path objects and
        # buffered file objects showed in the profile
        handle = os.open(os.path.join(self.folder, name), _CREATE, 0o666)
        try:
            written = os.write(handle, built.data)
            while written < len(built.data):  # a write may take only part of it
                written += os.write(handle, memoryview(built.data)[written:])
        finally:
            os.close(handle)
        attachments = [a.filename for a in rendered.attachments]
        manifest = {name: csv_safe(value) for name, value in {
            "row": rendered.row, "key": rendered.key,
            "envelope_from": built.envelope_from,
            "envelope_to": " ".join(built.envelope_to), "subject": rendered.subject,
            "file": name, "size": len(built.data), "attachments": "; ".join(attachments),
            "message_id": built.message_id,
        }.items()}
        return Stored(rendered.row, manifest, self._gallery.write(built, name))

    def close(self) -> None:
        """Close what is still open (in a worker process, its ending does)."""
        self._gallery.close()


class EmlFolder:
    """Writes outcomes into a folder as .eml files plus manifest and gallery."""

    def __init__(self, folder: Path, title: str, live: bool = False) -> None:
        self.folder = folder
        self.title = title
        self.live = live  # the gallery polls watch.json and reloads itself
        self._manifest_file: IO[str] | None = None
        self._gallery: Gallery | None = None

    def __enter__(self) -> Self:
        self._prepare()
        self._manifest_file = open(self.folder / "manifest.csv", "w", newline="",
                                   encoding="utf-8")
        self._manifest = csv.DictWriter(self._manifest_file, MANIFEST_FIELDS)
        self._manifest.writeheader()
        self._gallery = Gallery(self.folder, self.title, live=self.live)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._gallery is not None:
            self._gallery.close()
        if self._manifest_file is not None:
            self._manifest_file.close()

    def _prepare(self) -> None:
        # resolved first: `out/..` must not become the folder above once `out` exists
        folder = self.folder = Path(os.path.realpath(self.folder))
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"the output folder {folder} is a file",
                                  hint="choose another --out")
            if any(folder.iterdir()) and not (folder / MARKER).exists():
                raise ConfigError(f"the output folder {folder} is not empty and was not "
                                  "written by mailmerge", hint="choose another --out, or "
                                  "empty that folder; mailmerge only clears folders it made")
            stranger = _not_ours(folder)
            if stranger is not None:
                raise ConfigError(f"the output folder {folder} holds {stranger}, which "
                                  "mailmerge preview did not write; nothing was deleted",
                                  hint="choose another --out, or move that out of the folder "
                                  "(a preview only ever clears a folder of its own files)")
            for old in folder.glob("*.eml"):
                old.unlink()
            for owned in ("html", "list", "parts", "images"):
                shutil.rmtree(folder / owned, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("written by mailmerge preview; cleared on the next run\n")

    def files(self) -> MessageFiles:
        """What writes each message's own files, here or in a worker process."""
        return MessageFiles(self.folder)

    def record(self, stored: Stored | None) -> None:
        """Add one stored row to the manifest and the gallery (in sheet order)."""
        assert self._gallery is not None
        if stored is None:
            return
        if stored.problem is not None:
            self._gallery.add_problem(stored.row, stored.problem)
            return
        assert stored.manifest is not None and stored.entry is not None
        self._manifest.writerow(stored.manifest)
        self._gallery.add_entry(stored.entry)
