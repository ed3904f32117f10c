"""The one place that knows the order: read rows -> render -> build -> hand on.

Library API: :func:`iter_messages` yields one :class:`Outcome` per row; :func:`check_campaign`
is what the ``check`` command calls, and :func:`run_rows` what the dry run
(:mod:`mailmerge.preview`) builds on.
Nothing here prints; progress goes to an optional callback.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from .campaign import Campaign
from .errors import MailmergeError, RowError, RowErrors, SheetError
from .message import build_message
from .mime import Built
from .notices import Notice
from .parallel import map_rows
from .preflight import Finding, Inspector, describe_amounts
from .render import Rendered, Renderer, Suppressed
from .sheet import Row, open_sheet

S = TypeVar("S")
T = TypeVar("T")


# Why a row has no message and no problem: left out by the `where:` filter, or its
# recipient is on a suppression list.
Skip = Literal["where", "suppressed"]


@dataclass(frozen=True)
class Outcome:
    """What became of one row: a built message, or the problems that stopped it."""

    row: int
    built: Built | None = None
    errors: tuple[MailmergeError, ...] = ()
    rendered: Rendered | None = None  # set when the message itself was not built
    skip: Skip | None = None
    key: str | None = None  # known for suppressed rows
    made: bool = False  # a message was made and handed on (check, preview: not kept here)
    warnings: tuple[Finding, ...] = ()  # pre-flight findings (see preflight)

    @property
    def skipped(self) -> bool:
        return self.skip is not None

    @property
    def ok(self) -> bool:
        return self.built is not None or self.made

    def slim(self) -> Outcome:
        """The outcome without its message: what ``check`` and ``preview`` report on."""
        message = self.built.rendered if self.built is not None else self.rendered
        # made field by field: dataclasses.replace, which looks at every field, showed in
        # the profile of a check
        return Outcome(self.row, errors=self.errors, skip=self.skip,
                       key=message.key if message is not None else self.key,
                       made=message is not None, warnings=self.warnings)


@dataclass
class Warned:
    """One pre-flight finding and the rows it applies to, in constant memory: the first
    spans of rows, a few examples, the range of its amount."""

    finding: Finding
    spans: list[list[int]] = field(default_factory=list)  # at most SHOWN_SPANS
    rows: int = 0
    more: bool = False  # rows beyond the spans kept
    examples: list[str] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    last_row: int = 0

    SHOWN_SPANS = 8
    SHOWN_EXAMPLES = 3

    def add(self, row: int, amount: float | None, example: str | None) -> None:
        """Count ``row`` (once, however many times its message has the finding)."""
        if row != self.last_row:
            self.last_row = row
            self.rows += 1
            if self.spans and self.spans[-1][1] == row - 1 and not self.more:
                self.spans[-1][1] = row
            elif len(self.spans) < self.SHOWN_SPANS:
                self.spans.append([row, row])
            else:
                self.more = True
        if amount is not None:
            self.low = amount if self.low is None else min(self.low, amount)
            self.high = amount if self.high is None else max(self.high, amount)
        if (example is not None and example not in self.examples
                and len(self.examples) <= self.SHOWN_EXAMPLES):
            self.examples.append(example)

    def describe(self) -> str:
        """The rows, what was found (with examples and the amount) and how to fix it."""
        rows = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.spans)
        if self.more:
            rows += f", ... ({self.rows} rows)"
        finding = self.finding
        shown = self.examples[:self.SHOWN_EXAMPLES]
        examples = (f" ({', '.join(shown)}"
                    + (", ..." if len(self.examples) > len(shown) else "") + ")"
                    if shown else "")
        amount = (f" ({describe_amounts(finding.kind, self.low, self.high or self.low)})"
                  if self.low is not None else "")
        label = "row" if self.rows == 1 else "rows"
        return f"{label} {rows}: {finding.text}{examples}{amount}; {finding.hint}"


ProblemKind = tuple[object, ...]


def problem_kind(error: MailmergeError) -> ProblemKind:
    """What makes two rows' problems the same problem: all but the row."""
    return (type(error), str(error.path), error.line, error.column, error.message, error.hint)


class ProblemRows(list[Outcome]):
    """The rows with problems, in bounded memory: the first ROWS_KEPT rows of each problem
    (of the first KINDS_KEPT problems), and how many rows each had. A sheet of a million
    rows that repeat a thousand addresses kept a million outcomes (1.3 GB)."""

    ROWS_KEPT = 10
    KINDS_KEPT = 1000

    def __init__(self) -> None:
        super().__init__()
        self.kinds: dict[ProblemKind, int] = {}  # rows by problem, the first KINDS_KEPT
        self.unlisted = 0  # rows with problems not kept in the list
        self.uncounted = 0  # rows all of whose problems are past the first KINDS_KEPT

    def add(self, outcome: Outcome) -> None:
        keep = counted = False
        for kind in dict.fromkeys(map(problem_kind, outcome.errors)):  # once a row
            rows = self.kinds.get(kind)
            if rows is None:
                if len(self.kinds) >= self.KINDS_KEPT:
                    continue
                rows = 0
            self.kinds[kind] = rows + 1
            counted = True
            keep = keep or rows < self.ROWS_KEPT
        if keep:
            self.append(outcome)
        else:
            self.unlisted += 1
            self.uncounted += not counted


@dataclass
class Report:
    """Counts and problems of a whole run, for the summary and the exit code."""

    rows: int = 0
    messages: int = 0
    skipped: int = 0
    suppressed: int = 0
    # the rows with problems: a ProblemRows (bounded) when ``count`` fills it
    problems: list[Outcome] = field(default_factory=ProblemRows)
    notices: list[Notice] = field(default_factory=list)
    folder: Path | None = None
    # pre-flight findings by what they say, in the order first found
    warnings: dict[tuple[str, str], Warned] = field(default_factory=dict)

    @property
    def failed_rows(self) -> int:
        unlisted = self.problems.unlisted if isinstance(self.problems, ProblemRows) else 0
        return len(self.problems) + unlisted

    def note_warnings(self, outcome: Outcome) -> None:
        """Add the row's pre-flight findings to their groups."""
        for finding in outcome.warnings:
            key = (finding.text, finding.hint)  # strings hash once; an enum hashes each time
            group = self.warnings.get(key)
            if group is None:
                group = self.warnings[key] = Warned(finding)
            group.add(outcome.row, finding.amount, finding.example)

    def count(self, outcome: Outcome) -> None:
        self.rows += 1
        self.note_warnings(outcome)
        if outcome.ok:
            self.messages += 1
        elif outcome.skip == "suppressed":
            self.suppressed += 1
        elif outcome.skipped:
            self.skipped += 1
        elif isinstance(self.problems, ProblemRows):
            self.problems.add(outcome)
        else:
            self.problems.append(outcome)


def _named_key(renderer: Renderer, row: Row) -> str | None:
    """The row's key where the campaign names a key column and the row fills it: known
    even when the row is invalid (an address key is not: the address is what failed)."""
    column = renderer.campaign.recipients.key
    value = row.values.get(column) if column else None
    return str(value) if value not in (None, "") else None


def process_row(renderer: Renderer, row: Row, *, build: bool = True,
                want: Callable[[Rendered], bool] | None = None,
                message_id: Callable[[Rendered], str | None] | None = None,
                inspector: Inspector | None = None) -> Outcome | None:
    """One row through the filter, the renderer and (``build``) the MIME builder; with an
    ``inspector``, its pre-flight findings too.

    None when ``want`` passed over the rendered row.
    """
    try:
        if not renderer.selects(row):
            return Outcome(row.number, skip="where")
        rendered = renderer.render(row)
    except RowErrors as exc:
        return Outcome(row.number, errors=tuple(exc.errors), key=_named_key(renderer, row))
    if isinstance(rendered, Suppressed):
        return Outcome(row.number, skip="suppressed", key=rendered.key)
    if want is not None and not want(rendered):
        return None
    warnings = (inspector.inspect(rendered, renderer.last_page) if inspector is not None
                else ())
    if not build:
        return Outcome(row.number, rendered=rendered, warnings=warnings)
    built = build_message(rendered, message_id=message_id(rendered) if message_id else None)
    if renderer.signer is not None:
        built = replace(built, data=renderer.signer.sign(built.data))
    return Outcome(row.number, built=built, warnings=warnings)


def _only(rows: Iterator[Row], numbers: Collection[int], path: Path) -> Iterator[Row]:
    """The rows numbered ``numbers``, read no further than the last of them; a number the
    sheet does not have (past its end, blank, or the header) is an error."""
    wanted, found = frozenset(numbers), set()
    last = max(wanted)
    for row in rows:
        if row.number > last:
            break
        if row.number in wanted:
            found.add(row.number)
            yield row
    missing = sorted(wanted - found)
    if missing:
        raise SheetError(f"the sheet has no row {', '.join(map(str, missing))} (past its end, "
                         "blank, or the header row)", path=path,
                         hint="rows are numbered as a spreadsheet shows them: the first "
                              "recipient is row 2")


def _map_sheet(campaign: Campaign, work: Callable[[Renderer, Row], T], *, limit: int | None,
               jobs: int, notices: list[Notice], always_fork: bool = False,
               rows: Collection[int] | None = None) -> Iterator[T | Outcome]:
    """``work(renderer, row)`` for every row (or the rows numbered ``rows``; at most
    ``limit``), in sheet order, on ``jobs`` processes (see :mod:`.parallel`); the renderer's
    notices go to ``notices``, each once.

    A sheet that breaks part-way (malformed CSV) ends with an Outcome carrying that error.
    """
    with open_sheet(campaign.recipients) as sheet:
        notices.extend(sheet.notices)
        renderer = Renderer(campaign, sheet.columns)
        rows = rows or campaign.rows
        stream = iter(sheet) if not rows else _only(iter(sheet), rows, sheet.path)
        if limit is not None:
            stream = itertools.islice(stream, limit)

        def drain() -> list[Notice]:
            found = list(renderer.notices)
            renderer.notices.clear()  # a worker starts with none: each is reported once
            return found

        notices.extend(drain())
        seen = 0
        try:
            for result in map_rows(stream, partial(work, renderer), jobs=jobs,
                                   always_fork=always_fork, notices=drain,
                                   on_notice=notices.append):
                seen += 1
                yield result
        except SheetError as exc:
            seen += 1
            yield Outcome(exc.row or 0, errors=(exc,))
        finally:
            notices.extend(drain())
        if not seen:
            raise SheetError("the sheet has a header row but no recipients below it",
                             path=sheet.path, hint="add a row per recipient")


def iter_messages(campaign: Campaign, *, limit: int | None = None,
                  notices: list[Notice] | None = None,
                  want: Callable[[Rendered], bool] | None = None,
                  message_id: Callable[[Rendered], str | None] | None = None,
                  build: bool = True, jobs: int = 1, always_fork: bool = False,
                  rows: Collection[int] | None = None, inspect: bool = False
                  ) -> Iterator[Outcome]:
    """Render and build every row (or the rows numbered ``rows``, as a spreadsheet numbers
    them; at most ``limit``), in sheet order.

    ``inspect`` adds each message's pre-flight findings (:mod:`.preflight`) to its Outcome.
    ``want`` may pass over rendered rows (no message is built and nothing is yielded);
    ``message_id`` may supply the Message-ID to reuse (a retry keeps its first one).
    ``build=False`` stops at the rendered values (``Outcome.rendered``): enough to validate
    a row, at a fraction of the cost of the MIME message. With ``jobs`` (or
    ``always_fork``) the rows are rendered in worker processes (see :mod:`.parallel`):
    ``want`` and ``message_id`` then run there, and must open what they read themselves.

    Raises MailmergeError when the campaign cannot run at all (sheet unreadable, template
    syntax); a bad row is an Outcome with errors, and the rows after it go on. A sheet that
    breaks part-way (malformed CSV) ends the iteration with an Outcome carrying that error.
    """
    inspector = _inspector(campaign) if inspect else None

    def work(renderer: Renderer, row: Row) -> Outcome | None:
        return process_row(renderer, row, build=build, want=want, message_id=message_id,
                           inspector=inspector)

    for outcome in _map_sheet(campaign, work, limit=limit, jobs=jobs, always_fork=always_fork,
                              notices=notices if notices is not None else [], rows=rows):
        if outcome is not None:
            yield outcome


def run_rows(campaign: Campaign, *, limit: int | None, jobs: int, build: bool,
         store: Callable[[Outcome], S], record: Callable[[S], None],
         progress: Callable[[Outcome], None] | None, unique: bool = False,
         rows: Collection[int] | None = None, inspect: bool = False) -> Report:
    """Every row through :func:`process_row` and ``store`` on ``jobs`` processes; then, in
    sheet order and in this process, ``record`` and ``progress``. ``unique``: a row whose
    recipient key an earlier row has is a problem (as ``send`` finds it)."""
    report = Report()
    seen = SeenKeys() if unique else None

    inspector = _inspector(campaign) if inspect else None

    def work(renderer: Renderer, row: Row) -> tuple[Outcome, S]:
        outcome = process_row(renderer, row, build=build, inspector=inspector)
        assert outcome is not None
        return outcome.slim(), store(outcome)

    for result in _map_sheet(campaign, work, limit=limit, jobs=jobs, notices=report.notices,
                             rows=rows):
        outcome, stored = (result, store(result)) if isinstance(result, Outcome) else result
        if seen is not None and outcome.made and outcome.key is not None:
            first = seen.add(outcome.key, outcome.row)
            if first is not None:
                outcome = replace(outcome, made=False,
                                  errors=(duplicate_error(campaign, outcome.key, outcome.row,
                                                          first),))
        report.count(outcome)
        record(stored)
        if progress is not None:
            progress(outcome)
    return report


def check_campaign(campaign: Campaign, *, progress: Callable[[Outcome], None] | None = None,
                   jobs: int = 1) -> Report:
    """Render every row without building, writing or sending; report every problem, and
    the pre-flight warnings (``Report.warnings``).

    ``jobs`` processes share the rows (see :mod:`mailmerge.parallel`).
    """
    return run_rows(campaign, limit=None, jobs=jobs, build=False, store=lambda outcome: None,
                    record=lambda stored: None, progress=progress, unique=True, inspect=True)


def _inspector(campaign: Campaign) -> Inspector:
    """The campaign's inspector; a worker process works on a copy of its own."""
    return Inspector(html_template=campaign.html_template is not None,
                     text_template=campaign.text_template is not None)


def duplicate_error(campaign: Campaign, key: str, row: int, first: int) -> RowError:
    """The problem of a row whose recipient an earlier row has already."""
    return RowError(f"recipient key {key!r} is also on row {first}",
                    path=campaign.recipients.path, row=row, column=campaign.recipients.key,
                    hint="each recipient must appear once; remove the duplicate row"
                         + ("" if campaign.recipients.key else
                            " (addresses are compared without regard to case; name a "
                            "unique column with `recipients: {key: ...}` to tell them apart)"))


class SeenKeys:
    """The recipient keys of a pass, and the row of each: 64-bit fingerprints in an open
    addressing table of 12 bytes a slot, filled up to 80 % (triangular probing keeps the
    probes few at that load), so 100,000 rows take 1.5 MB where a set of the keys
    themselves took about 15.

    The fingerprint is the string's own hash (SipHash, 64 bits, keyed per process: the
    table lives in one process and one pass); two keys share one by chance about once in
    10^9 passes of 100,000 rows. A cryptographic digest cost 8 us a row in the process
    that also hands the rows out."""

    LOAD = 0.8

    def __init__(self) -> None:
        self._prints = array("Q", [0]) * 1024  # made at its size: no zeroed bytes copied in
        self._rows = array("I", [0]) * 1024
        self._count = 0

    def add(self, key: str, row: int) -> int | None:
        """Note ``key`` on ``row``; the row it was on before, if it was."""
        found = (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) or 1
        prints = self._prints
        slot = _probe(prints, found)
        if prints[slot]:
            return self._rows[slot]
        prints[slot], self._rows[slot] = found, row
        self._count += 1
        if self._count > self.LOAD * len(prints):
            self._grow()
        return None

    def _grow(self) -> None:
        prints, rows = self._prints, self._rows
        self._prints = array("Q", [0]) * (2 * len(prints))
        self._rows = array("I", [0]) * (2 * len(rows))
        for found, row in zip(prints, rows, strict=True):
            if found:
                slot = _probe(self._prints, found)
                self._prints[slot], self._rows[slot] = found, row


def _probe(prints: array[int], found: int) -> int:
    """The slot that holds ``found``, or the empty one where it goes."""
    mask = len(prints) - 1
    slot, step = found & mask, 0
    while prints[slot] and prints[slot] != found:
        step += 1
        slot = (slot + step) & mask  # triangular: visits every slot of a 2^n table
    return slot
