"""Results of pure, costly functions kept on disk between runs (the CSS inliner's).

A campaign is checked, previewed and sent from the same templates, each time in a new
process, and each run used to import the CSS inliner and inline the same template again:
a tenth of checking 10,000 rows. What is kept here is the result of a function of its
inputs alone, under a key that is the hash of those inputs and of the code that computes
it, so a hit is the very answer the function would give; nothing is kept that a key does
not cover.

The folder is ``$MAILMERGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mailmerge``, else
``~/.cache/mailmerge``; ``MAILMERGE_NO_CACHE=1`` turns it off. A file that cannot be read
or written (a read-only home, a damaged entry) is a miss, never an error: the result is
then worked out as if nothing were kept. Entries are JSON files readable by their owner
only, in a folder no one else may write in (what is found there goes into messages); the
least recently used go once there are more than ``MAX_ENTRIES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 256  # a few hundred small files; the oldest half goes past it
_ENTRY = re.compile(r"[0-9a-f]{64}\.json")


def default_folder() -> Path | None:
    """Where entries are kept, from the environment; None when keeping is turned off."""
    if os.environ.get("MAILMERGE_NO_CACHE", "").lower() not in ("", "0", "false", "no"):
        return None
    explicit = os.environ.get("MAILMERGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA")
    if base:
        return Path(base) / "mailmerge"
    try:
        return Path.home() / ".cache" / "mailmerge"
    except RuntimeError:  # no home to find
        return None


def key_of(*parts: str) -> str:
    """The key of a result: a hash of everything it depends on, in order."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))  # ("ab", "c") is not ("a", "bc")
        digest.update(data)
    return digest.hexdigest()


def _private(folder: Path) -> bool:
    """Whether only its owner, who runs this, can write in ``folder``: what is found there
    goes into messages. One not made yet is made so."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    getuid = getattr(os, "getuid", None)  # not on Windows
    if getuid is not None and info.st_uid != getuid():
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class DiskMemo:
    """Values by key in one folder (``None``: nothing is kept). A folder that others may
    write in (a shared one named by MAILMERGE_CACHE_DIR) is not used: nothing is kept."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder if folder is not None and _private(folder) else None

    def result(self, parts: tuple[str, ...], kind: type[T], work: Callable[[], T]) -> T:
        """``work()``, or what it gave before for the same ``parts``: everything its result
        depends on. A kept value that is not a ``kind`` is worked out again."""
        if self.folder is None:
            return work()
        key = key_of(*parts)
        found = self.get(key)
        if isinstance(found, kind):
            return found
        value = work()
        self.put(key, value)
        return value

    def get(self, key: str) -> Any:
        """The value kept under ``key``, or None."""
        if self.folder is None:
            return None
        path = self.folder / f"{key}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None  # not an entry of ours, or one copied under another name
        try:
            os.utime(path)  # used: among the last to go when the folder is trimmed
        except OSError:
            pass
        return entry.get("value")

    def put(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON data) under ``key``; silently nothing when that fails."""
        if self.folder is None:
            return
        path = self.folder / f"{key}.json"
        partial = self.folder / f".{key}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # O_EXCL: never through a link or into a file someone else made there
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"key": key, "value": value}, handle)
            os.replace(partial, path)  # whole or not at all, for a reader at the same time
            self._trim()
        except (OSError, ValueError):
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass

    def _trim(self) -> None:
        """Only entries of ours go, by their names: the folder may be one a user named."""
        assert self.folder is not None
        entries = []
        with os.scandir(self.folder) as found:
            for entry in found:
                if _ENTRY.fullmatch(entry.name):
                    try:
                        if entry.is_file(follow_symlinks=False):
                            entries.append((entry.stat().st_mtime_ns, entry.path))
                    except FileNotFoundError:  # trimmed by another run just now
                        continue
        if len(entries) > MAX_ENTRIES:
            for _, path in sorted(entries)[:len(entries) - MAX_ENTRIES // 2]:
                try:
                    os.unlink(path)
                except OSError:
                    pass
