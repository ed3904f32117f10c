"""`mailmerge send`, `status` and `resolve`: delivery over SMTP and its journal."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from ..campaign import Campaign, Smtp, with_rows
from ..errors import ConfigError, MailmergeError
from .common import (
    _LIMIT,
    _OUT,
    _QUIET,
    _SEND_LIMIT,
    _WHERE,
    EXIT_CONFIG,
    EXIT_DATA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    _fail,
    _load,
    _n,
    _preview,
    _print_problems,
    _print_warnings,
    _secret,
    cli,
    not_with,
    only_with,
)

if TYPE_CHECKING:  # the sending package is imported by the commands that use it
    from ..sending import (
        BounceReport,
        Event,
        Journal,
        Record,
        SenderLock,
        SendPlan,
        SendReport,
        State,
        Verdict,
    )


def _password(smtp: Smtp) -> str | None:
    """The SMTP password, when the server wants one."""
    if not smtp.username or smtp.auth == "xoauth2":
        return None
    return _secret(smtp.password_env, f"Password for {smtp.username} at {smtp.host}",
                   "no SMTP password", f"export {smtp.password_env}=... (or run on a "
                                       "terminal to be asked)")


def _imap_password(campaign: Campaign) -> str | None:
    """The IMAP password, for a campaign that keeps a copy in Sent."""
    imap = campaign.imap
    if imap is None:
        return None
    return _secret(imap.password_env, f"IMAP password for {imap.username} at {imap.host}",
                   "no IMAP password", f"export {imap.password_env}=... (or remove `imap:`)")


def _describe_plan(plan: SendPlan) -> None:
    campaign, counts = plan.campaign, plan.counts
    smtp = campaign.smtp
    click.echo(f"Campaign {campaign.name}: {plan.to_send} to send"
               f" ({counts['sent']} already sent, {counts['failed']} failed"
               + (" or invalid" if plan.options.skip_invalid else " earlier")
               + (f", {_n(plan.skipped, 'row')} skipped by `where` or suppressed" if plan.skipped
                  else "") + ").")
    click.echo(f"  Server: {smtp.host}:{smtp.effective_port} ({smtp.security}"
               + (f", as {smtp.username}" if smtp.username else "") + ")"
               + (f", {smtp.concurrency} connections" if smtp.concurrency > 1 else "")
               + (f", at most {smtp.rate}" if smtp.rate else ""))
    from_ = campaign.from_ if isinstance(campaign.from_, str) else "(structured)"
    click.echo(f"  From: {from_}")
    click.echo(f"  Journal: {plan.journal.path}")
    if plan.uncertain:
        imap = campaign.imap
        if plan.looks_up and imap is not None:
            verb = (f"will be looked up in {' and '.join(imap.lookup)}: found, they count as "
                    f"sent; not there {imap.lookup_wait:g} s after their message was sent, "
                    "they are sent again")
        elif plan.options.resend_uncertain:
            verb = "will be sent again"
        else:
            verb = ("will NOT be sent again: settle them with `mailmerge resolve` (or add "
                    "--resend-uncertain)")
        one = len(plan.uncertain) == 1
        click.echo(f"  {_n(len(plan.uncertain), 'recipient')} {'is' if one else 'are'} "
                   f"uncertain: a run stopped while {'its' if one else 'their'} message was "
                   f"with the server; {'it' if one else 'they'} {verb}:")
        for record in plan.uncertain:
            click.echo(f"    row {record.row}: {record.key}")
    if plan.removed:
        one = len(plan.removed) == 1
        narrowed = _narrowed(campaign)
        why = (f"outside the rows {' and '.join(narrowed)} chose" if narrowed else f"no longer in the sheet or {'is' if one else 'are'} left out "
                                "by `where`")
        click.echo(f"  {_n(len(plan.removed), 'recipient')} in the journal "
                   f"{'is' if one else 'are'} {why} (left alone): "
                   + ", ".join(r.key for r in plan.removed[:5])
                   + (" ..." if len(plan.removed) > 5 else ""))


def _fancy() -> bool:
    """A live progress bar: on a terminal, unless NO_COLOR asks for plain output."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def progress_line(done: dict[str, int], total: int, elapsed: float, width: int = 24) -> str:
    """``[#####.....] 40/100  12.3/s  ETA 0:05  failed 1  deferred 2``."""
    finished = done["sent"] + done["failed"]
    filled = int(width * finished / total) if total else width
    rate = done["sent"] / elapsed if elapsed > 0 else 0.0
    left = max(total - finished, 0)
    eta = f"{int(left / rate) // 60}:{int(left / rate) % 60:02d}" if rate > 0 else "?"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{total}  {rate:.1f}/s  "
            f"ETA {eta}  failed {done['failed']}  deferred {done['deferred']}")


def _send_events(quiet: bool, total: int) -> Callable[[Event], None]:
    fancy = _fancy()
    started = time.monotonic()
    done = {"sent": 0, "failed": 0, "deferred": 0}

    def show(event: Event) -> None:
        if event.kind in done:
            done[event.kind] += 1
        if quiet:
            return
        if fancy:
            line = progress_line(done, total, time.monotonic() - started)
            click.echo("\r" + click.style(line, fg="red" if done["failed"] else "green") + "  ",
                       nl=False, err=True)
        elif event.kind == "retry-wait":
            click.echo(f"waiting {event.detail}s to retry deferred recipients", err=True)
        else:
            click.echo(f"{event.kind} row {event.row} {event.key}: {event.detail}", err=True)

    return show


EXIT_TERMINATED = 128 + 15  # SIGTERM, as a shell reports a process it ended


class _Terminated(BaseException):
    """SIGTERM, where no run is under way to stop cleanly (the run has its own handler).
    No KeyboardInterrupt: click's prompts would make that an "Aborted!" with exit code 1."""


def _stopped(campaign: str | Path, terminated: bool) -> NoReturn:
    """The line that ends a `send` stopped by Ctrl-C or SIGTERM, and its exit code."""
    click.echo(f"{'Stopped by SIGTERM' if terminated else 'Interrupted'}. Run the same "
               f"command again to resume (mailmerge send {campaign}).", err=True)
    sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def _resumable(command: Callable[..., None]) -> Callable[..., None]:
    """``command``, ended by SIGTERM as by Ctrl-C: with the line that says how to resume
    and exit code 143 (130 for Ctrl-C), whatever it was doing (checking the rows, asking,
    sending). The journal is consistent at every step, so nothing more is needed."""

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        owner = os.getpid()

        def terminate(signum: int, frame: object) -> None:
            if os.getpid() != owner:  # a render worker forked from it ends as by default
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (its pool stops it so)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            raise _Terminated

        if kwargs.get("dry_run") or kwargs.get("test_to") is not None:  # nothing to resume
            command(**kwargs)
            return
        here = threading.current_thread() is threading.main_thread()
        handles = here and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        previous = signal.signal(signal.SIGTERM, terminate) if handles else None
        try:
            command(**kwargs)
        except (KeyboardInterrupt, click.Abort, _Terminated) as exc:  # Abort: Ctrl-C at a prompt
            click.echo("", err=True)
            _stopped(kwargs["campaign"], isinstance(exc, _Terminated))
        finally:
            if handles:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return run


@cli.command()
@click.argument("campaign", type=click.Path())
@click.option("--dry-run", is_flag=True, help="Write .eml files instead of sending "
                                              "(same as `mailmerge preview`).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when not "
                                                "on a terminal).")
@click.option("--to", "test_to", metavar="ADDRESS",
              help="Test send: deliver rendered messages to ADDRESS instead of their "
                   "recipients (never recorded as sent).")
@click.option("-r", "--row", "rows", type=click.IntRange(min=2), multiple=True, metavar="N",
              help="Only row N, numbered as the spreadsheet shows it (the first recipient is "
                   "row 2); may be given more than once. With --to: the rows to test with.")
@click.option("--skip-invalid", is_flag=True,
              help="Send the valid rows even though some rows have problems; the invalid "
                   "ones are recorded as failed.")
@click.option("--allow-changes", is_flag=True,
              help="Resume although the campaign file or templates changed.")
@click.option("--restart", is_flag=True,
              help="Begin a new journal (the old one is kept beside it): everyone is sent "
                   "again.")
@click.option("--resend-uncertain", is_flag=True,
              help="Also resend recipients whose message was with the server when a run died.")
@_OUT
@_SEND_LIMIT
@_WHERE
@_QUIET
@only_with("out", "dry_run", why="only a dry run writes .eml files")
@not_with("test_to", "dry_run", "skip_invalid", "allow_changes", "restart", "resend_uncertain",
          why="a test send (--to) goes to one address and leaves the journal alone")
@not_with("dry_run", "skip_invalid", "allow_changes", "restart", "resend_uncertain",
          why="a dry run sends nothing and leaves the journal alone")
@_resumable
def send(campaign: str, dry_run: bool, yes: bool, test_to: str | None, rows: tuple[int, ...],
         skip_invalid: bool, allow_changes: bool, restart: bool, resend_uncertain: bool,
         out: str | None, limit: int | None, where: str | None, quiet: bool) -> None:
    """Send the campaign over SMTP, resumably.

    Every row is checked first; nothing is sent while a row has problems. Each
    recipient's state is kept in a journal beside the campaign file, so running
    the same command again after a failure, a kill or Ctrl-C resumes: sent
    recipients are skipped, deferred ones retried, new rows sent. A recipient
    whose message was with the server when a run died is *uncertain*: with
    `imap: {lookup: FOLDER}` it is looked up there by Message-ID first (found:
    sent; absent: sent again); otherwise it is named, with the `mailmerge
    resolve` command that settles it, and not sent again unless you add
    --resend-uncertain.

    The password comes from the variable named by `smtp.password_env`
    (default MAILMERGE_SMTP_PASSWORD), or a prompt on a terminal.

    --row, --where and --limit narrow what this run sends: the rows they leave
    out are neither sent nor recorded, and a later run without them sends them.

    Exit codes: 0 every recipient settled, 1 some failed in this run, are
    deferred, uncertain or invalid, 2 configuration or server set-up error, 130
    interrupted by Ctrl-C, 143 stopped by SIGTERM (both: run again to resume).

    \b
    Example:
      mailmerge send campaigns/newsletter.yaml --to me@example.org --row 2
      MAILMERGE_SMTP_PASSWORD=... mailmerge send campaigns/newsletter.yaml
      mailmerge send campaigns/newsletter.yaml --row 7     # row 7 only
      mailmerge send campaigns/newsletter.yaml --limit 400 # a daily batch
      mailmerge send campaigns/newsletter.yaml --dry-run --out /tmp/check
    """
    from ..sending import SendOptions, prepare_send
    if dry_run:
        _preview(campaign, out, limit, quiet, where, rows=rows)
        return
    loaded = _load(campaign, where)
    if test_to is not None:
        _send_test(loaded, test_to, set(rows) or None, limit or 1)
        return
    loaded = with_rows(loaded, rows)
    options = SendOptions(limit=limit, skip_invalid=skip_invalid, allow_changes=allow_changes,
                          restart=restart, resend_uncertain=resend_uncertain)
    try:
        plan = prepare_send(loaded, options)
    except MailmergeError as exc:
        _fail(exc)
    with plan:
        if plan.problems:
            click.echo(f"Problems in {_n(len(plan.problems), 'row')}:")
            _print_problems(plan.problems, most=20)
            if plan.blocked:
                click.echo("Nothing was sent. Fix the rows and run again, or send the others "
                           "with --skip-invalid.")
                sys.exit(EXIT_DATA)
        _describe_plan(plan)
        if plan.to_send:
            for notice in plan.notices:
                click.echo(str(notice))
            _print_warnings(plan.warnings)
        if plan.to_send == 0 and not plan.waiting_copies:
            click.echo("Nothing to send.")
            if plan.uncertain:
                _how_to_settle(loaded, plan.uncertain)
            sys.exit(EXIT_DATA if plan.uncertain or plan.problems else EXIT_OK)
        if plan.waiting_copies:
            click.echo(f"  {_n(plan.waiting_copies, 'copy', 'copies')} "
                       f"wait{'s' if plan.waiting_copies == 1 else ''} to be saved in the Sent "
                       "folder.")
        if not yes and plan.to_send:
            if not sys.stdin.isatty():
                _fail(ConfigError("not on a terminal, so no confirmation can be asked",
                                  hint="add --yes to send without asking"))
            if not click.confirm("Send now?", default=False):
                click.echo("Nothing was sent.")
                sys.exit(EXIT_DATA)
        password = _password(loaded.smtp)
        imap_password = _imap_password(loaded) if plan.needs_imap else None
        try:
            sent = plan.run(password, events=_send_events(quiet, plan.to_send),
                            imap_password=imap_password)
        except MailmergeError as exc:
            _fail(exc)
    if _fancy() and not quiet:
        click.echo("", err=True)
    _send_summary(sent, loaded)


def _send_summary(report: SendReport, campaign: Campaign) -> None:
    counts = report.counts
    rows = [("sent", report.sent, counts.get("sent", 0)),
            ("failed", report.failed, counts.get("failed", 0)),
            ("deferred", report.deferred, counts.get("deferred", 0)),
            ("not yet sent", None, counts.get("pending", 0)),
            ("uncertain", None, len(report.uncertain))]
    click.echo(f"{'':14}{'this run':>10}{'in all':>10}")
    for label, this_run, total in rows:
        click.echo(f"{label:14}{'' if this_run is None else this_run:>10}{total:>10}")
    narrowed = _narrowed(campaign)
    if narrowed:
        click.echo(f"Only the rows {' and '.join(narrowed)} chose were sent; the others are "
                   f"not recorded (\"in all\" counts none of them), and `mailmerge send "
                   f"{campaign.path}` without {' and '.join(narrowed)} sends them.")
    settled = report.settled
    if settled is not None and (settled.sent or settled.resend):
        click.echo(f"Uncertain recipients looked up: {len(settled.sent)} found (sent), "
                   f"{len(settled.resend)} not found (to be sent again).")
    copies = report.sent_copies
    if copies is not None:
        click.echo(f"Copies in the Sent folder: {copies.saved} saved"
                   + (f", {copies.failed} not saved ({copies.last_error}); they are kept and "
                      "saved on the next run" if copies.failed else ""))
    if report.uncertain:
        click.echo("Uncertain (may or may not have been delivered): "
                   + ", ".join(f"row {r.row} {r.key}" for r in report.uncertain[:10])
                   + (" ..." if len(report.uncertain) > 10 else ""))
        _how_to_settle(campaign, report.uncertain)
    if report.stopped is not None:
        click.echo(f"Error: stopped: {report.stopped}", err=True)
        sys.exit(EXIT_CONFIG)
    if report.interrupted:
        _stopped(campaign.path, report.terminated)
    waiting = report.waiting  # of the sheet's: one removed from it is left alone
    if waiting:
        click.echo(f"{_n(waiting, 'recipient')} {'is' if waiting == 1 else 'are'} still "
                   "waiting (deferred by the server or beyond --limit); run the same command "
                   "again later to continue.")
    # this run's failures: one from an earlier run does not fail every later send
    bad = report.failed or waiting or report.uncertain or report.problems
    sys.exit(EXIT_DATA if bad else EXIT_OK)


def _narrowed(campaign: Campaign) -> list[str]:
    """The options that narrowed this run to some rows, as typed."""
    return [option for option, given in (("--row", campaign.rows),
                                         ("--where", campaign.where_option)) if given]


def _how_to_settle(campaign: Campaign, uncertain: list[Record],
                   say: Callable[[str], None] = click.echo) -> None:
    """The exact commands that settle the uncertain recipients."""
    rows = ",".join(str(r.row) for r in uncertain[:20]) + ("" if len(uncertain) <= 20 else
                                                             ",...")
    command = f"mailmerge resolve {campaign.path}"
    say(f"Settle them: `{command} --sent {rows}` for those who got the message, "
               f"`{command} --resend {rows}` for those who did not"
               + ("" if campaign.imap and campaign.imap.lookup else
                  "; with `imap: {lookup: FOLDER}` (a Sent or archive folder) send looks "
                  "them up itself") + ".")


def _send_test(campaign: Campaign, address: str, rows: set[int] | None, limit: int) -> None:
    from ..sending import send_test
    password = _password(campaign.smtp)
    try:
        results = send_test(campaign, address, password, rows=rows, limit=limit)
    except MailmergeError as exc:
        _fail(exc)
    ok = True
    for number, delivery in results:
        if delivery.accepted:
            click.echo(f"row {number}: sent to {address} (test; not recorded)")
        else:
            ok = False
            click.echo(f"row {number}: not sent: {delivery.summary()}")
    if not results:
        click.echo("No row to send.")
    sys.exit(EXIT_OK if ok and results else EXIT_DATA)


@cli.command()
@click.argument("campaign", type=click.Path())
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="Also write one line per recipient to this CSV file ('-' for stdout).")
def status(campaign: str, csv_path: str | None) -> None:
    """Show how far sending got: counts per state, failed and uncertain recipients.

    Reads the journal only; nothing is sent and the sheet is not read.

    \b
    Example:
      mailmerge status campaigns/newsletter.yaml
      mailmerge status campaigns/newsletter.yaml --csv report.csv
    """
    from ..sending import journal_path
    loaded = _load(campaign)
    path = journal_path(loaded)
    if csv_path and csv_path != "-":
        _refuse_own_file(loaded, Path(csv_path), path)
    # with the CSV on stdout, the summary goes to stderr: stdout is the CSV alone
    say = _echo_to(err=csv_path == "-")
    if not path.exists():
        say(f"Campaign {loaded.name}: nothing sent yet (no journal at {path}); "
            f"`mailmerge send {loaded.path}` begins it.")
        if csv_path:
            _write_status_csv(None, csv_path, say)
        sys.exit(EXIT_OK)
    try:
        _show_status(loaded, path, csv_path, say)
    except MailmergeError as exc:
        _fail(exc)


def _refuse_own_file(campaign: Campaign, target: Path, journal: Path) -> None:
    """The one Error line when ``target`` is a file the campaign is made of (the campaign
    file, its sheet, a template, a suppression list, the journal): --csv would replace it."""
    own = [campaign.path, campaign.recipients.path, journal, *campaign.suppress,
           *campaign.templates]
    resolved = target.resolve()
    if any(resolved == path.resolve() for path in own):
        _fail(ConfigError(f"--csv {target} is a file of the campaign itself, which the report "
                          "would replace", hint="give --csv a new file, e.g. report.csv"))


def _echo_to(err: bool) -> Callable[[str], None]:
    """click.echo to stdout, or to stderr when stdout carries data."""
    def say(line: str) -> None:
        click.echo(line, err=err)
    return say


def _show_status(loaded: Campaign, path: Path, csv_path: str | None,
                 say: Callable[[str], None]) -> None:
    from ..sending import Journal
    with Journal(path, read_only=True) as journal:
        counts = journal.counts()
        say(f"Campaign {loaded.name} ({path}):")
        labels = {"sending": "uncertain"}
        say("  " + ", ".join(f"{labels.get(k, k)} {v}" for k, v in counts.items())
            + f", soft-bounced {journal.soft_bounced()}")
        sections: tuple[tuple[State, str], ...] = (
            ("failed", "Failed"), ("sending", "Uncertain"), ("deferred", "Deferred"),
            ("bounced", "Bounced"), ("complained", "Complained"))
        for state, title in sections:
            records = list(journal.records(state))
            if records:
                say(f"{title}:")
                for record in records:
                    say(f"  row {record.row} {record.key}: {record.last_reply or '-'} "
                        f"(attempts {record.attempts})")
                if state == "sending":
                    _how_to_settle(loaded, records, say)
        if csv_path:
            _write_status_csv(journal, csv_path, say)


def _write_status_csv(journal: Journal | None, csv_path: str,
                      say: Callable[[str], None]) -> None:
    """The journal's lines as CSV into ``csv_path`` ('-': stdout); no journal: the header
    line alone, so that a script reads an empty report rather than an error."""
    import csv

    from ..sending import CSV_COLUMNS

    def write(handle: TextIO) -> int:
        if journal is not None:
            return journal.write_csv(handle)
        csv.writer(handle).writerow(CSV_COLUMNS)
        return 0

    if csv_path == "-":
        write(sys.stdout)
        return
    try:
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            count = write(handle)
    except OSError as exc:
        _fail(ConfigError(f"cannot write {csv_path}: {exc.strerror or exc}",
                          hint="give --csv a file in a folder you may write in"))
    say(f"Wrote {_n(count, 'line')} to {csv_path}")


@cli.command()
@click.argument("campaign", type=click.Path())
@_LIMIT
@_WHERE
@click.option("-r", "--row", "rows", type=click.IntRange(min=2), multiple=True, metavar="N",
              help="Only row N (as the spreadsheet numbers it). May be given more than once.")
@click.option("--replace", is_flag=True,
              help="Replace a draft this command stored before whose message has changed "
                   "(by default it is left alone and named).")
def drafts(campaign: str, limit: int | None, where: str | None, rows: tuple[int, ...],
           replace: bool) -> None:
    """Store each message as a draft in your mailbox, to review and send from there.

    Renders the rows as `preview` does and APPENDs each message, flagged as a
    draft, to the IMAP folder `imap.drafts` (default Drafts; Gmail's is
    "[Gmail]/Drafts"). Nothing is sent and the send journal is not touched.
    Running it again stores no second draft for a row whose draft is still
    there (found by its Message-ID); a changed message is stored instead of
    the old draft only with --replace. Bcc stays in the draft for your mail
    client to send to.

    The password comes from the variable named by `imap.password_env` (default
    MAILMERGE_IMAP_PASSWORD), or a prompt on a terminal.

    Exit codes: 0 stored (or already there), 1 some rows have problems or
    changed drafts were left alone, 2 configuration error or the mailbox
    cannot be used.

    \b
    Example:
      mailmerge drafts campaigns/welcome.yaml --limit 5
      mailmerge drafts campaigns/welcome.yaml --replace
    """
    from ..sending import save_drafts
    loaded = _load(campaign, where)
    if loaded.imap is None:
        _fail(ConfigError("drafts go to an IMAP mailbox, and the campaign has no `imap:`",
                          path=loaded.path, hint="add `imap: {host: ..., username: ...}` "
                                                 "(and `drafts:` if the folder is not called "
                                                 "Drafts)"))
    password = _imap_password(loaded)
    try:
        report = save_drafts(loaded, password, limit=limit, rows=rows or None,
                             replace=replace)
    except MailmergeError as exc:
        _fail(exc)
    folder = loaded.imap.drafts
    if report.problems:
        click.echo(f"Problems in {_n(len(report.problems), 'row')} (no draft stored):")
        _print_problems(report.problems)
    parts = [f"{_n(len(report.stored), 'draft')} stored"]
    if report.replaced:
        parts.append(f"{len(report.replaced)} replaced")
    if report.unchanged:
        parts.append(f"{len(report.unchanged)} already there")
    if report.skipped:
        parts.append(f"{_n(report.skipped, 'row')} skipped by `where` or suppressed")
    click.echo(f"In {folder!r} at {loaded.imap.host}: " + ", ".join(parts) + ".")
    if report.changed:
        click.echo(f"{_n(len(report.changed), 'draft')} of rows "
                   + ", ".join(map(str, report.changed[:20]))
                   + (" ..." if len(report.changed) > 20 else "")
                   + " changed since stored and were left as they were; run again with "
                     "--replace to replace them.")
    sys.exit(EXIT_DATA if report.problems or report.changed else EXIT_OK)


@cli.command()
@click.argument("campaign", type=click.Path())
def bounces(campaign: str) -> None:
    """Read bounces and complaints from the `bounces:` mailbox into the journal.

    Each delivery report (DSN) or complaint (ARF) is matched to a recipient of
    this campaign: by the address it came back to (`return_path:`, VERP), by the
    Message-ID of the message it returns, or by the recipient it names. A hard
    bounce or a complaint suppresses the address at once (it is added to
    `bounces.suppress_to`, which `send` never mails); soft bounces do so after
    `soft_limit` of them. Auto-replies are not bounces. Reports of other
    campaigns and anything not understood stay in the mailbox; recorded reports
    are kept, deleted or moved as `after:` says. Reading again counts nothing
    twice.

    The password comes from the variable named by `bounces.password_env`
    (default MAILMERGE_BOUNCES_PASSWORD), or a prompt on a terminal.

    Exit codes: 0 read, 2 configuration error or the mailbox cannot be read.

    \b
    Example:
      mailmerge bounces campaigns/newsletter.yaml
      mailmerge status campaigns/newsletter.yaml
    """
    from ..sending import read_bounces
    loaded = _load(campaign)
    settings = loaded.bounces
    if settings is None:
        _fail(ConfigError("the campaign has no `bounces:` mailbox to read", path=loaded.path,
                          hint="add `bounces: {host: ..., username: ...}` (see README, "
                               "\"mailmerge bounces\")"))
    path = _existing_journal(loaded)
    password = _secret(settings.password_env,
                       f"{settings.protocol.upper()} password for {settings.username} at "
                       f"{settings.host}", "no password for the bounces mailbox",
                       f"export {settings.password_env}=...")
    with _held_journal(path) as journal:
        try:
            found = read_bounces(loaded, journal, password)
        except MailmergeError as exc:
            _fail(exc)
    _bounce_summary(found, settings.after, settings.suppress_to)


def _bounce_summary(found: BounceReport, after: str, suppress_to: Path | None) -> None:
    click.echo(f"Read {_n(found.read, 'message')}: {_n(found.hard, 'hard bounce')}, "
               f"{found.soft} soft ({found.soft_suppressed} now suppressed), "
               f"{_n(found.complaints, 'complaint')}, "
               f"{_n(found.autoreplies, 'auto-reply', 'auto-replies')}; "
               f"{found.already} read before.")
    left = found.others + found.unknown + found.skipped
    if left:
        before = (f" ({found.unknown_before} of them on an earlier reading)"
                  if found.unknown_before else "")
        click.echo(f"Left in the mailbox: {found.others} of other campaigns, "
                   f"{found.unknown} not understood{before}, {found.skipped} not believed.")
        for line in found.lines[:20]:
            click.echo(f"  {line}")
        if len(found.lines) > 20:
            click.echo(f"  ... and {len(found.lines) - 20} more")
    if after != "keep":
        click.echo(f"{found.removed} recorded reports {'deleted' if after == 'delete' else 'moved'}.")
    if found.kept_here:
        click.echo("Recorded reports stay in the mailbox: the server has neither MOVE nor "
                   "UIDPLUS, and a plain EXPUNGE would also remove the other messages marked "
                   "deleted in the folder.")
    if suppress_to is not None and (found.hard or found.complaints or found.soft_suppressed):
        click.echo(f"Suppressed addresses are in {suppress_to}.")


@cli.command()
@click.argument("campaign", type=click.Path())
@click.option("--sent", "sent", metavar="ROWS", multiple=True,
              help="These uncertain recipients got the message: record them as sent. Sheet "
                   "row numbers or keys, comma-separated, or `all`.")
@click.option("--resend", metavar="ROWS", multiple=True,
              help="These did not: the next `send` sends them again, with the same "
                   "Message-ID.")
@click.option("--lookup", is_flag=True,
              help="Look them up now in the `imap: lookup:` folders (found: sent; not found "
                   "within `lookup_wait`: to be sent again).")
def resolve(campaign: str, sent: tuple[str, ...], resend: tuple[str, ...],
            lookup: bool) -> None:
    """Settle uncertain recipients: a run died while their message was with the server.

    Without options it lists them. Where you can tell (the recipient answered, the
    message is in your Sent folder or an archive), say so with --sent or --resend;
    with `imap: {lookup: FOLDER}` in the campaign, --lookup finds them by Message-ID
    (and every `send` does so by itself). Every name is checked before anything
    is recorded; `all` names every one the other option does not. Nothing is
    sent here.

    Exit codes: 0 none is left uncertain, 1 some still are, 2 configuration error.

    \b
    Example:
      mailmerge resolve campaigns/newsletter.yaml
      mailmerge resolve campaigns/newsletter.yaml --sent 4,17 --resend 23
      mailmerge resolve campaigns/newsletter.yaml --lookup
    """
    from ..sending import choose, journal_path, look_up, names, settle_by_hand
    loaded = _load(campaign)
    if not (sent or resend or lookup) and not journal_path(loaded).exists():
        click.echo("No recipient is uncertain: nothing was sent yet.")
        sys.exit(EXIT_OK)
    path = _existing_journal(loaded)
    imap = loaded.imap
    if lookup and (imap is None or not imap.lookup):
        _fail(ConfigError("--lookup needs `imap:` with `lookup:` (the folder where sent mail "
                          "appears) in the campaign file", path=loaded.path,
                          line=loaded.line_of("imap")))
    given: dict[Verdict, list[str]] = {"sent": names(",".join(sent)),
                                       "resend": names(",".join(resend))}
    for option, values, named in (("--sent", sent, given["sent"]),
                                  ("--resend", resend, given["resend"])):
        if values and not named:  # `--sent ,`: not the same as leaving it out
            raise click.UsageError(f"{option} names no recipient: give row numbers or keys, "
                                   "comma-separated, or `all`")
    with _held_journal(path) as journal:
        try:  # every name checked before anything is recorded, then all in one step
            done = settle_by_hand(journal, choose(journal, given))
            for settled, what in ((done.sent, "sent"), (done.resend, "to be sent again")):
                if settled:
                    click.echo(f"{len(settled)} recorded as {what}: "
                               + ", ".join(f"row {r.row} {r.key}" for r in settled[:10])
                               + (" ..." if len(settled) > 10 else ""))
            if lookup and imap is not None:
                found = look_up(journal, imap, _imap_password(loaded))
                click.echo(f"Looked up: {len(found.sent)} found (now sent), "
                           f"{len(found.resend)} not found (the next send sends them again).")
            uncertain = list(journal.records("sending"))
        except MailmergeError as exc:
            _fail(exc)
    if not uncertain:
        click.echo("No recipient is uncertain.")
        sys.exit(EXIT_OK)
    click.echo(f"{len(uncertain)} uncertain (may or may not have been delivered):")
    for record in uncertain:
        click.echo(f"  row {record.row} {record.key}: Message-ID {record.message_id}")
    _how_to_settle(loaded, uncertain)
    sys.exit(EXIT_DATA)


def _existing_journal(campaign: Campaign) -> Path:
    """The campaign's journal file, or the one Error line that says none was begun yet."""
    from ..sending import journal_path
    path = journal_path(campaign)
    if not path.exists():
        _fail(ConfigError(f"no journal yet at {path}", hint="nothing has been sent; "
                                                            "run `mailmerge send` first"))
    return path


@contextlib.contextmanager
def _held_journal(path: Path) -> Iterator[Journal]:
    """The journal, opened under its sender lock, or the one Error line that says why not."""
    from ..sending import Journal
    with _taken(path):
        try:
            journal = Journal(path)
        except MailmergeError as exc:
            _fail(exc)
        with journal:
            yield journal


def _taken(journal: Path) -> SenderLock:
    """The journal's sender lock, or the one Error line that names who has it."""
    from ..sending import SenderLock
    lock = SenderLock(journal)
    try:
        lock.acquire()
    except MailmergeError as exc:
        _fail(exc)
    return lock
