"""The plan of a sending run: validation first, the journal opened, then the run.

``prepare_send`` opens the journal and checks every row (nothing is sent when a row is
bad, unless ``skip_invalid``); the returned :class:`SendPlan` says what will happen and
``SendPlan.run`` does it (runner.py). ``send_test`` sends rendered rows to one address.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import jinja2
import jinja2.meta
import yaml

from ..addresses import AddressProblem, address_key, make_address
from ..assets import AssetProblem, is_local_src, resolve_attachments
from ..campaign import Campaign
from ..errors import JournalError, MailmergeError, SendError
from ..notices import Notice
from ..parallel import default_jobs
from ..pipeline import Outcome, Report, Warned, duplicate_error, iter_messages
from .journal import Journal, Record, SenderLock, default_journal_path, format_time
from .runner import Event, Runner, SendReport
from .settle import Settled, Verdict, look_up
from .smtp import Delivery, SmtpConnection, Unreachable, token_source


@dataclass(frozen=True)
class SendOptions:
    limit: int | None = None
    skip_invalid: bool = False
    allow_changes: bool = False
    restart: bool = False
    resend_uncertain: bool = False


# Settings that change how, where and to whom messages go, never a message itself.
_DELIVERY_ONLY = frozenset({"smtp", "imap", "bounces", "journal", "where", "suppress"})
# a local file a template links (<img src>, <link href>, url() in CSS, a Markdown image)
_LINKED = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']|url\(\s*["']?|\]\()([^"')\s{}]+)""",
                     re.I)


def fingerprint(campaign: Campaign) -> str:
    """A hash of what the messages are made from: the campaign file's settings except
    those of delivery alone (`smtp`, `imap`, ...; its comments and layout neither), the
    templates with what they include, import or extend, the local files they link (CSS,
    images) and the attachments the campaign file names. The sheet is data, not counted."""
    digest = hashlib.sha256()
    settings = yaml.safe_load(campaign.path.read_text(encoding="utf-8")) or {}
    kept = {k: v for k, v in settings.items() if k not in _DELIVERY_ONLY}
    digest.update(json.dumps(kept, sort_keys=True, default=str).encode("utf-8") + b"\0")
    for path in sorted(_message_files(campaign)):
        digest.update(f"{_relative(path, campaign.folder)}\0".encode("utf-8", "surrogatepass"))
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_fingerprint(campaign: Campaign) -> str:
    """How journals begun by earlier versions fingerprinted the campaign (compared once,
    then replaced by :func:`fingerprint`)."""
    digest = hashlib.sha256()
    for path in (campaign.path, *campaign.templates):
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _message_files(campaign: Campaign) -> set[Path]:
    """The local files the messages are made from (see :func:`fingerprint`)."""
    named = [t.resolve() for t in campaign.templates]
    folders = list(dict.fromkeys(t.parent for t in named))
    found: set[Path] = set()
    todo = [(path, True) for path in named]  # (file, is a template)
    while todo:
        path, template = todo.pop()
        if path in found or not path.is_file():
            continue
        found.add(path)
        if not template and path.suffix.lower() != ".css":
            continue  # an image: nothing in it links further
        text = path.read_text(encoding="utf-8", errors="replace")
        for link in _LINKED.findall(text):  # a stylesheet, an image ...
            if is_local_src(link):
                todo.extend(((base / link).resolve(), False)
                            for base in (path.parent, campaign.folder))
        names = _referenced(text) if template else []
        if names is None:  # a name only known when rendering: the folders' every file
            found |= {p for folder in folders for p in folder.rglob("*")
                      if p.is_file() and not _data(campaign, p)
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
            continue
        todo.extend(((folder / name).resolve(), True) for name in names for folder in folders)
    for pattern in campaign.attachments:
        if "{" not in pattern:  # a templated one is the sheet's data
            try:
                found.update(p.resolve() for p in resolve_attachments(campaign.folder, pattern))
            except AssetProblem:
                pass  # the rows' check reports it
    return found


def _data(campaign: Campaign, path: Path) -> bool:
    """A file beside the templates that is no part of a message: the campaign file, the
    sheet, a suppression list, the journal (and its -wal, lock, kept copies), a preview."""
    journal = str(journal_path(campaign).resolve())
    others = {p.resolve() for p in (campaign.path, campaign.recipients.path, *campaign.suppress)}
    return path in others or str(path).startswith(journal) or path.suffix == ".eml"


def _referenced(source: str) -> list[str] | None:
    """The templates ``source`` includes, imports or extends; None when a name is an
    expression (or the source does not parse: the rows' check reports that)."""
    try:
        names = list(jinja2.meta.find_referenced_templates(jinja2.Environment().parse(source)))
    except jinja2.TemplateError:
        return None
    return None if None in names else [name for name in names if name is not None]


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.name


def journal_path(campaign: Campaign) -> Path:
    return campaign.journal or default_journal_path(campaign.path, campaign.name)


class SendPlan:
    """A validated campaign with its journal open: what will be sent, and the means to."""

    def __init__(self, campaign: Campaign, journal: Journal, run: int, options: SendOptions,
                 problems: list[Outcome], uncertain: list[Record], removed: list[Record],
                 lock: SenderLock) -> None:
        self.campaign, self.journal, self.run_number, self.lock = campaign, journal, run, lock
        self.options, self.problems = options, problems
        self.uncertain, self.removed = uncertain, removed
        self.counts = journal.counts()
        self.in_sheet = journal.counts(run)  # of the recipients in the sheet (and `where`)
        self.skipped = 0  # rows left out by the `where:` filter or suppressed
        self.warnings: list[Warned] = []  # pre-flight findings, grouped (see preflight)
        self.notices: list[Notice] = []  # campaign-wide findings (a placeholder SMTP host)
        # copies for the Sent folder that an earlier run could not save
        self.waiting_copies = (len(journal.spool_keys())
                               if campaign.imap and campaign.imap.copy else 0)

    @property
    def looks_up(self) -> bool:
        """Uncertain recipients are settled by a lookup in the mailbox before sending."""
        return bool(self.uncertain and self.campaign.imap and self.campaign.imap.lookup)

    @property
    def needs_imap(self) -> bool:
        """The run may log in to the mailbox: to keep copies, or to look recipients up
        (those uncertain now, or those the run itself leaves uncertain)."""
        imap = self.campaign.imap
        return imap is not None and (imap.copy or bool(imap.lookup))

    @property
    def to_send(self) -> int:
        """Messages this run sends at most (uncertain ones that a lookup finds are not)."""
        count = self.in_sheet["pending"] + self.in_sheet["deferred"]
        if self.options.resend_uncertain or self.looks_up:
            count += self.in_sheet["sending"]
        return min(count, self.options.limit) if self.options.limit else count

    @property
    def blocked(self) -> bool:
        """Rows are invalid and the user did not ask to send the rest."""
        return bool(self.problems) and not self.options.skip_invalid

    def close(self) -> None:
        """Close the journal and let another sender have it."""
        self.journal.close()
        self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, password: str | None, *, events: Callable[[Event], None] | None = None,
            clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep,
            imap_password: str | None = None) -> SendReport:
        """Settle uncertain recipients where the mailbox can tell (see settle.py), then send
        what the plan says. Raises SendError when the campaign must stop."""
        if self.blocked:
            raise MailmergeError("rows have problems; nothing was sent",
                                 hint="fix them, or send the rest with --skip-invalid")
        tell = events or (lambda event: None)
        imap = self.campaign.imap

        def settle(records: list[Record]) -> Settled | None:
            """Look ``records`` up, where the mailbox can tell (see settle.py)."""
            if not records or imap is None or not imap.lookup:
                return None

            def seen(record: Record, verdict: Verdict) -> None:
                tell(Event("found" if verdict == "sent" else "not-found", record.row,
                           record.key, record.message_id or ""))

            return look_up(self.journal, imap, imap_password, records, clock=clock,
                           sleep=sleep, seen=seen)

        settled = settle(self.uncertain)
        runner = Runner(self.campaign, self.journal, self.run_number,
                        limit=self.options.limit, resend_uncertain=self.options.resend_uncertain,
                        password=password, events=tell, clock=clock, sleep=sleep,
                        imap_password=imap_password)
        report = runner.run()
        if not report.interrupted and report.stopped is None:
            # left uncertain by this run (no reply after the text): look them up now too
            try:
                later = settle(list(self.journal.records("sending")))
            except SendError as exc:  # the summary still tells what was sent
                later, report.stopped = None, exc
            if later is not None:
                settled = settled or Settled()
                settled.sent += later.sent
                settled.resend += later.resend
        report.settled = settled
        report.counts = self.journal.counts()
        left = self.journal.counts(self.run_number)
        report.waiting = left["pending"] + left["deferred"]
        report.uncertain = list(self.journal.records("sending"))
        report.problems = self.problems
        return report


def prepare_send(campaign: Campaign, options: SendOptions = SendOptions()) -> SendPlan:
    """Take the campaign's journal (one sender at a time: JournalError names the one that
    has it), open or start it, and check every row. Nothing goes over the network."""
    path = journal_path(campaign)
    lock = SenderLock(path)
    lock.acquire()
    try:
        return _prepare(campaign, options, path, lock)
    except BaseException:
        lock.release()
        raise


def _prepare(campaign: Campaign, options: SendOptions, path: Path,
             lock: SenderLock) -> SendPlan:
    if options.restart and path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{path}{suffix}")
            if old.exists():
                old.rename(f"{path}.{stamp}{suffix}")
    journal = Journal(path)
    try:
        _check_version(campaign, journal, options)
        if campaign.recipients.key is None:  # keyed by address: one mailbox, one key
            journal.fold_keys(address_key)
        if journal.meta("began") is None:
            journal.set_meta("began", format_time(time.time()))
        run = journal.begin_run()
        skipped: list[int] = []
        warnings = Report()
        problems = _validate(campaign, journal, run, options, skipped, warnings)
        uncertain = list(journal.records("sending"))
        removed = journal.removed(run)
    except BaseException:
        journal.close()
        raise
    plan = SendPlan(campaign, journal, run, options, problems, uncertain, removed, lock)
    plan.skipped = len(skipped)
    plan.warnings = list(warnings.warnings.values())
    plan.notices = list(dict.fromkeys(warnings.notices))  # each said once
    return plan


def _check_version(campaign: Campaign, journal: Journal, options: SendOptions) -> None:
    """Refuse to send a changed campaign on where recipients got the earlier version
    (unless ``allow_changes``); until someone was sent something, a change is no change.
    Raises JournalError."""
    current = fingerprint(campaign)
    known = journal.meta("version")
    if known is None and journal.meta("fingerprint") is not None:  # an earlier version's
        known = (current if journal.meta("fingerprint") == _file_fingerprint(campaign)
                 else "changed")
    got = journal.delivered()
    if known is not None and known != current and got and not options.allow_changes:
        began = journal.meta("began")
        raise JournalError(
            "the campaign file or the files its messages are made from changed since this "
            "journal began" + (f" ({began})" if began else ""), path=journal.path,
            hint=f"{got} recipient{'s' if got != 1 else ''} got the earlier version; re-run "
                 "with --allow-changes to send the rest the new one, or --restart to begin "
                 "a new journal (the old one is kept)")
    journal.set_meta("version", current)


def _validate(campaign: Campaign, journal: Journal, run: int, options: SendOptions,
              skipped: list[int], warnings: Report) -> list[Outcome]:
    """Render and build every row; note every good key in the journal (one transaction),
    and the pre-flight findings in ``warnings``."""
    problems: list[Outcome] = []
    with journal.batch():
        for outcome in iter_messages(campaign, build=False, jobs=default_jobs(), inspect=True,
                                     notices=warnings.notices):
            warnings.note_warnings(outcome)
            if outcome.skip == "suppressed" and outcome.key is not None:
                record = journal.see(outcome.key, outcome.row, run)
                if record is None or record.state in ("pending", "deferred"):
                    journal.mark(outcome.key, "skipped", "suppressed: on a suppression list")
                skipped.append(outcome.row)
                continue
            if outcome.skipped:
                skipped.append(outcome.row)
                continue
            if outcome.rendered is None:
                problems.append(outcome)
                continue
            rendered = outcome.rendered
            before = journal.see(rendered.key, rendered.row, run)
            if before is not None and before.seen_run == run:
                problems.append(Outcome(rendered.row, errors=(duplicate_error(
                    campaign, rendered.key, rendered.row, before.row),)))
        if options.skip_invalid:
            _record_invalid(journal, run, problems)
        elif not problems:
            journal.judge_invalid_again(set(), run)
    return problems


def _record_invalid(journal: Journal, run: int, problems: list[Outcome]) -> None:
    """Record the invalid rows as failed, under their key where it is known (a key
    column), else as `row N`; those of earlier runs that are valid now (fixed) are sent,
    and those gone are forgotten: no failure outlives its row's fix."""
    invalid: set[str] = set()
    for outcome in problems:
        key = outcome.key or f"row {outcome.row}"
        before = journal.get(key)
        if before is not None and before.seen_run == run:  # another row's key: a duplicate
            key = f"row {outcome.row}"
            before = journal.get(key)
        journal.see(key, outcome.row, run)
        if (before is not None and before.state not in ("pending", "deferred")
                and before.settled != "invalid"):
            continue  # sent, uncertain, failed by the server ...: that stays what it was
        journal.mark(key, "failed", "invalid: " + "; ".join(
            e.message for e in outcome.errors), settled="invalid")
        invalid.add(key)
    journal.judge_invalid_again(invalid, run)


def send_test(campaign: Campaign, address: str, password: str | None, *,
              rows: set[int] | None = None, limit: int = 1) -> list[tuple[int, Delivery]]:
    """Send rendered messages to ``address`` instead of their recipients; no journal.

    Picks the given sheet ``rows`` (default: the first ``limit`` good rows).
    Raises SendError when the server cannot be used, RowErrors-style problems as MailmergeError.
    """
    try:
        target = make_address("", address.strip(), None).addr_spec
    except AddressProblem as exc:
        raise MailmergeError(f"--to {exc}", hint="give one email address") from None
    connection = SmtpConnection(campaign.smtp, password, token_source(campaign.smtp))
    results: list[tuple[int, Delivery]] = []
    try:
        for outcome in iter_messages(campaign):
            if rows is not None and outcome.row not in rows:
                continue
            if outcome.skipped:
                continue
            if outcome.built is None:
                if rows is not None:
                    raise outcome.errors[0]
                continue
            built = outcome.built
            results.append((outcome.row, connection.send(
                built.envelope_from, [target], built.data,
                built.smtputf8 or not target.isascii())))
            if rows is None and len(results) >= limit:
                break
            if rows is not None and len(results) >= len(rows):
                break
    except OSError as exc:  # no session: the same one Error line as `send` gives
        smtp = campaign.smtp
        where = f"{smtp.host}:{smtp.effective_port}"
        raise SendError(str(exc) if where in str(exc) else f"no session with {where}: {exc}",
                        hint=exc.hint if isinstance(exc, Unreachable) else
                        "check `smtp.host`, `smtp.port` and `smtp.security`") from exc
    finally:
        connection.close()
    return results
