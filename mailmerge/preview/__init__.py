"""The dry run: every message as an .eml file in a folder, with a gallery to browse them."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from ..campaign import Campaign
from ..errors import ConfigError
from ..pipeline import Outcome, Report, run_rows
from .folder import EmlFolder

__all__ = ["default_output_folder", "preview_campaign"]


def default_output_folder(campaign: Campaign) -> Path:
    return Path("out") / campaign.name


def preview_campaign(campaign: Campaign, out: Path | None = None, *, limit: int | None = None,
                     progress: Callable[[Outcome], None] | None = None,
                     jobs: int = 1, rows: Collection[int] | None = None,
                     live: bool = False) -> Report:
    """Write one .eml per good row (the exact bytes SMTP would carry), a manifest and an index.

    ``rows``: only the rows with these numbers (as a spreadsheet numbers them). ``live``:
    the gallery follows the live preview (:mod:`.watch`).
    ``jobs`` processes render, build and write the messages; this one keeps the manifest and
    the index in sheet order. ``progress`` gets each row's outcome without its message.
    """
    folder = out or default_output_folder(campaign)
    try:
        with EmlFolder(folder, campaign.name, live=live) as writer:
            files = writer.files()
            try:
                report = run_rows(campaign, limit=limit, jobs=jobs, build=True,
                                  store=files.store, record=writer.record,
                                  progress=progress, rows=rows)
            finally:
                files.close()
    except OSError as exc:
        raise ConfigError(f"cannot write the dry run into {folder}: {exc.strerror or exc}",
                          hint="choose another --out: a folder you may write in, on a disk "
                               "with room") from exc
    report.folder = folder
    return report
