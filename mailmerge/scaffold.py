"""``mailmerge init``: a small working campaign to start from."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from .errors import ConfigError

_FILES = ("campaign.yaml", "people.csv", "templates/mail.html", "templates/mail.txt",
          "templates/logo.png")
_MARKDOWN_FILES = ("campaign.yaml", "people.csv", "templates/mail.md", "templates/logo.png")


def create_campaign(folder: Path, markdown: bool = False) -> list[Path]:
    """Write a starter campaign into ``folder`` (new or empty). Never overwrites a file.
    ``markdown``: its body is Markdown in the default layout, not HTML and text."""
    name = re.sub(r"[^\w.-]+", "-", folder.resolve().name).strip("-.") or "campaign"
    if folder.is_symlink() and not folder.exists():
        raise ConfigError(f"{folder} is a link to a folder that does not exist",
                          hint="choose a new name; init never follows or replaces a link")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not empty",
                          hint="choose a new name; init never overwrites files")
    source = resources.files("mailmerge").joinpath(
        "static/init-markdown" if markdown else "static/init")
    written = []
    for relative in _MARKDOWN_FILES if markdown else _FILES:
        data = source.joinpath(relative).read_bytes()
        if relative == "campaign.yaml":
            data = data.decode("utf-8").replace("__NAME__", name).encode("utf-8")
        target = folder / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as handle:  # never over an existing file
                handle.write(data)
        except OSError as exc:
            raise ConfigError(f"cannot write {target}: {exc.strerror or exc}",
                              hint="choose a folder you may write in") from exc
        written.append(target)
    return written
