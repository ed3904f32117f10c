"""The one place that knows the order: read rows -> render -> build -> hand on.

Library API: :func:`iter_messages` yields one :class:`Outcome` per row; :func:`check_campaign`
and :func:`preview_campaign` are what the ``check`` and ``preview`` commands call.
Nothing here prints; progress goes to an optional callback.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .campaign import Campaign
from .errors import MailmergeError, RowErrors, SheetError
from .message import Built
from .output import EmlFolder
from .render import Rendered, Renderer, Suppressed
from .sheet import open_sheet
from .wire import build_message


@dataclass(frozen=True)
class Outcome:
    """What became of one row: a built message, or the problems that stopped it."""

    row: int
    built: Built | None = None
    errors: tuple[MailmergeError, ...] = ()
    rendered: Rendered | None = None  # set when the message itself was not built
    skip: str | None = None  # "where" (left out by the filter) or "suppressed"
    key: str | None = None  # known for suppressed rows

    @property
    def skipped(self) -> bool:
        return self.skip is not None

    @property
    def ok(self) -> bool:
        return self.built is not None


@dataclass
class Report:
    """Counts and problems of a whole run, for the summary and the exit code."""

    rows: int = 0
    messages: int = 0
    skipped: int = 0
    suppressed: int = 0
    problems: list[Outcome] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    folder: Path | None = None

    @property
    def failed_rows(self) -> int:
        return len(self.problems)


def iter_messages(campaign: Campaign, *, limit: int | None = None,
                  notices: list[str] | None = None,
                  want: Callable[[Rendered], bool] | None = None,
                  message_id: Callable[[Rendered], str | None] | None = None,
                  build: bool = True) -> Iterator[Outcome]:
    """Render and build every row (at most ``limit``), in sheet order.

    ``want`` may pass over rendered rows (no message is built and nothing is yielded);
    ``message_id`` may supply the Message-ID to reuse (a retry keeps its first one).
    ``build=False`` stops at the rendered values (``Outcome.rendered``): enough to validate
    a row, at a fraction of the cost of the MIME message.

    Raises MailmergeError when the campaign cannot run at all (sheet unreadable, template
    syntax); a bad row is an Outcome with errors, and the rows after it go on. A sheet that
    breaks part-way (malformed CSV) ends the iteration with an Outcome carrying that error.
    """
    with open_sheet(campaign.recipients) as sheet:
        renderer = Renderer(campaign, sheet.columns)
        rows = iter(sheet) if limit is None else itertools.islice(sheet, limit)
        seen = 0
        try:
            for row in rows:
                seen += 1
                try:
                    if not renderer.selects(row):
                        yield Outcome(row.number, skip="where")
                        continue
                    rendered = renderer.render(row)
                except Suppressed as exc:
                    yield Outcome(row.number, skip="suppressed", key=exc.key)
                    continue
                except RowErrors as exc:
                    yield Outcome(row.number, errors=tuple(exc.errors))
                    continue
                if want is not None and not want(rendered):
                    continue
                if not build:
                    yield Outcome(row.number, rendered=rendered)
                    continue
                built = build_message(rendered,
                                      message_id=message_id(rendered) if message_id else None)
                if renderer.signer is not None:
                    built = replace(built, data=renderer.signer.sign(built.data))
                yield Outcome(row.number, built=built)
        except SheetError as exc:
            yield Outcome(exc.row or 0, errors=(exc,))
            seen += 1
        finally:
            if notices is not None:
                notices.extend(renderer.notices)
        if not seen:
            raise SheetError("the sheet has a header row but no recipients below it",
                             path=sheet.path, hint="add a row per recipient")


def _run(campaign: Campaign, limit: int | None, each: Callable[[Outcome], None]) -> Report:
    report = Report()
    for outcome in iter_messages(campaign, limit=limit, notices=report.notices):
        report.rows += 1
        if outcome.ok:
            report.messages += 1
        elif outcome.skip == "suppressed":
            report.suppressed += 1
        elif outcome.skipped:
            report.skipped += 1
        else:
            report.problems.append(outcome)
        each(outcome)
    return report


def check_campaign(campaign: Campaign, *, progress: Callable[[Outcome], None] | None = None
                   ) -> Report:
    """Render and build every row without writing or sending; report every problem."""
    return _run(campaign, None, progress or (lambda outcome: None))


def default_output_folder(campaign: Campaign) -> Path:
    return Path("out") / campaign.name


def preview_campaign(campaign: Campaign, out: Path | None = None, *, limit: int | None = None,
                     progress: Callable[[Outcome], None] | None = None) -> Report:
    """Write one .eml per good row (the exact bytes SMTP would carry), a manifest and an index."""
    folder = out or default_output_folder(campaign)
    with EmlFolder(folder, campaign.name) as writer:
        def each(outcome: Outcome) -> None:
            writer.write(outcome)
            if progress:
                progress(outcome)

        report = _run(campaign, limit, each)
    report.folder = folder
    return report
