"""The ``mailmerge`` command: a thin layer over the library (``mailmerge.pipeline``).

Exit codes: 0 success, 1 problems in the data (some rows), 2 usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import os
import sys
import time
import webbrowser
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .campaign import Campaign, Smtp, load_campaign, with_where
from .delivery import Event, SendOptions, SendPlan, SendReport, journal_path, prepare_send, send_test
from .journal import Journal
from .starter import create_campaign
from .errors import ConfigError, MailmergeError
from .pipeline import Outcome, Report, check_campaign, preview_campaign

EXIT_OK, EXIT_DATA, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

_OUT = click.option("-o", "--out", type=click.Path(file_okay=False),
                    help="Folder for the .eml files. Default: out/<campaign name>/.")
_LIMIT = click.option("-n", "--limit", type=click.IntRange(min=1),
                      help="Only the first N rows.")
_QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress line.")
_WHERE = click.option("-w", "--where", metavar="EXPRESSION",
                      help="Only rows for which this Jinja expression is true, e.g. "
                           "\"country == 'CN' and points|int > 100\" (added to the campaign's "
                           "`where:`).")


def _fail(exc: MailmergeError) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _load(path: str, where: str | None = None) -> Campaign:
    try:
        return with_where(load_campaign(path), where)
    except MailmergeError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


def _ranges(rows: list[int]) -> str:
    spans: list[str] = []
    start = prev = rows[0]
    for row in rows[1:] + [None]:  # type: ignore[list-item]
        if row is not None and row == prev + 1:
            prev = row
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if row is not None:
            start = prev = row
    return ", ".join(spans)


def _print_problems(report: Report, most: int | None = None) -> None:
    """Every problem once (or the first ``most``); the same problem on many rows is one line
    naming the rows."""
    groups: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
    errors: dict[tuple[Any, ...], MailmergeError] = {}
    for outcome in report.problems:
        for error in outcome.errors:
            sig = (type(error), str(error.path), error.line, error.column, error.message,
                   error.hint)
            groups.setdefault(sig, []).append(error.row or outcome.row)
            errors.setdefault(sig, error)
    for index, (sig, rows) in enumerate(groups.items()):
        if most is not None and index == most:
            click.echo(f"  ... and {len(groups) - most} more; `mailmerge check` lists them all")
            break
        error = errors[sig]
        if len(rows) == 1:
            click.echo(f"  {error}")
            continue
        row_saved = error.row
        error.row = None
        click.echo(f"  {error} [rows {_ranges(rows)}]")
        error.row = row_saved


def _progress(quiet: bool) -> Callable[[Outcome], None] | None:
    if quiet or not sys.stderr.isatty():
        return None
    count = 0

    def show(outcome: Outcome) -> None:
        nonlocal count
        count += 1
        if count % 100 == 0:
            click.echo(f"\r  {count} rows ...", nl=False, err=True)

    return show


def _finish(report: Report, verb: str) -> None:
    if sys.stderr.isatty():
        click.echo("\r" + " " * 30 + "\r", nl=False, err=True)
    for notice in report.notices:
        if notice.startswith("warning: "):
            click.echo(f"Warning: {notice[len('warning: '):]}")
        else:
            click.echo(f"Note: {notice}")
    if report.problems:
        click.echo(f"Problems in {report.failed_rows} of {report.rows} rows:")
        _print_problems(report)
    summary = f"{report.rows} rows: {report.messages} messages {verb}"
    if report.skipped:
        summary += f", {report.skipped} rows skipped by `where`"
    if report.suppressed:
        summary += f", {report.suppressed} suppressed"
    if report.problems:
        summary += f", {report.failed_rows} rows with problems (fix them and run again)"
    click.echo(summary + ".")
    sys.exit(EXIT_DATA if report.problems else EXIT_OK)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailmerge-campaign", prog_name="mailmerge")
def cli() -> None:
    """Personalised mail from a spreadsheet: Jinja2 templates, CSV or .xlsx rows, SMTP.

    \b
    Start with a dry run, then check, then send:
      mailmerge preview campaigns/newsletter.yaml     # .eml files in out/newsletter/
      mailmerge check campaigns/newsletter.yaml       # every problem of every row

    Exit codes: 0 success, 1 some rows have problems, 2 the campaign file is wrong.
    """


@cli.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@_WHERE
@_QUIET
def check(campaign: str, where: str | None, quiet: bool) -> None:
    """Render every row without writing or sending, and list every problem.

    Each problem names the file, the row and the column or template line, and
    says what to do. Exit 0 when every row is fine, 1 when some rows have
    problems, 2 when the campaign file itself is wrong.

    \b
    Example:
      mailmerge check campaigns/invoices.yaml
    """
    loaded = _load(campaign, where)
    try:
        report = check_campaign(loaded, progress=_progress(quiet))
    except MailmergeError as exc:
        _fail(exc)
    _finish(report, "ok")


def _preview(campaign: str, out: str | None, limit: int | None, quiet: bool,
             where: str | None = None, open_: bool = False) -> None:
    loaded = _load(campaign, where)
    try:
        report = preview_campaign(loaded, Path(out) if out else None, limit=limit,
                                  progress=_progress(quiet))
    except MailmergeError as exc:
        _fail(exc)
    click.echo(f"Wrote {report.messages} .eml files, manifest.csv and index.html "
               f"to {report.folder}/")
    if open_ and report.folder is not None:
        page = (report.folder / "index.html").resolve().as_uri()
        if not webbrowser.open(page):
            click.echo(f"No web browser was found; open {page} in one.")
    _finish(report, "written")



@cli.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@_OUT
@_LIMIT
@_WHERE
@click.option("--open", "open_", is_flag=True, help="Open index.html in the web browser.")
@_QUIET
def preview(campaign: str, out: str | None, limit: int | None, where: str | None, open_: bool,
            quiet: bool) -> None:
    """Dry run: write every message as an .eml file instead of sending it.

    Each file holds exactly the bytes that would go over SMTP and opens in any
    mail client. Beside them: manifest.csv (one line per message) and
    index.html, which lists the messages and shows each one's HTML. No
    network is used. Rows with problems get no file and are listed; the exit
    code is then 1.

    \b
    Example:
      mailmerge preview campaigns/newsletter.yaml --limit 10 --open
      mailmerge preview campaigns/newsletter.yaml --where "city == 'Zürich'"
    """
    _preview(campaign, out, limit, quiet, where, open_)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
def init(folder: str) -> None:
    """Create a working campaign to start from, in a new folder.

    It holds campaign.yaml, a sheet (people.csv), HTML and text templates and a
    logo; `preview` renders it at once. Existing files are never overwritten.

    \b
    Example:
      mailmerge init demo && mailmerge preview demo/campaign.yaml --open
    """
    try:
        written = create_campaign(Path(folder))
    except MailmergeError as exc:
        _fail(exc)
    for path in written:
        click.echo(f"  created {path}")
    click.echo(f"Next: mailmerge preview {Path(folder) / 'campaign.yaml'} --open")


def _password(smtp: Smtp) -> str | None:
    """The SMTP password: from the environment, else a prompt on a terminal."""
    if not smtp.username or smtp.auth == "xoauth2":
        return None
    value = os.environ.get(smtp.password_env)
    if value:
        return value
    if sys.stdin.isatty():
        return str(click.prompt(f"Password for {smtp.username} at {smtp.host}", hide_input=True,
                                err=True))
    _fail(ConfigError(f"no SMTP password: the environment variable {smtp.password_env} is not "
                      "set", hint=f"export {smtp.password_env}=... (or run on a terminal to be "
                                  "asked)"))
    return None


def _imap_password(campaign: Campaign) -> str | None:
    imap = campaign.imap
    if imap is None:
        return None
    value = os.environ.get(imap.password_env)
    if value:
        return value
    if sys.stdin.isatty():
        return str(click.prompt(f"IMAP password for {imap.username} at {imap.host}",
                                hide_input=True, err=True))
    _fail(ConfigError(f"no IMAP password: the environment variable {imap.password_env} is not "
                      "set", hint=f"export {imap.password_env}=... (or remove `imap:`)"))
    return None


def _describe_plan(plan: SendPlan) -> None:
    campaign, counts = plan.campaign, plan.counts
    smtp = campaign.smtp
    click.echo(f"Campaign {campaign.name}: {plan.to_send} to send"
               f" ({counts['sent']} already sent, {counts['failed']} failed earlier"
               + (f", {plan.skipped} rows skipped by `where` or suppressed" if plan.skipped
                  else "") + ").")
    click.echo(f"  Server: {smtp.host}:{smtp.effective_port} ({smtp.security}"
               + (f", as {smtp.username}" if smtp.username else "") + ")"
               + (f", {smtp.concurrency} connections" if smtp.concurrency > 1 else "")
               + (f", at most {smtp.rate}" if smtp.rate else ""))
    from_ = campaign.from_ if isinstance(campaign.from_, str) else "(structured)"
    click.echo(f"  From: {from_}")
    click.echo(f"  Journal: {plan.journal.path}")
    if plan.uncertain:
        verb = "will be sent again" if plan.options.resend_uncertain else (
            "will NOT be sent again (use --resend-uncertain to resend them)")
        click.echo(f"  {len(plan.uncertain)} recipients are uncertain: a run stopped while "
                   f"their message was with the server; they {verb}:")
        for record in plan.uncertain:
            click.echo(f"    row {record.row}: {record.key}")
    if plan.removed:
        click.echo(f"  {len(plan.removed)} recipients in the journal are no longer in the sheet "
                   "or are left out by `where` (they are left alone): "
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


@cli.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Write .eml files instead of sending "
                                              "(same as `mailmerge preview`).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when not "
                                                "on a terminal).")
@click.option("--to", "test_to", metavar="ADDRESS",
              help="Test send: deliver rendered messages to ADDRESS instead of their "
                   "recipients (never recorded as sent).")
@click.option("--row", type=int, multiple=True, help="With --to: which sheet row(s) to render.")
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
@_LIMIT
@_WHERE
@_QUIET
def send(campaign: str, dry_run: bool, yes: bool, test_to: str | None, row: tuple[int, ...],
         skip_invalid: bool, allow_changes: bool, restart: bool, resend_uncertain: bool,
         out: str | None, limit: int | None, where: str | None, quiet: bool) -> None:
    """Send the campaign over SMTP, resumably.

    Every row is checked first; nothing is sent while a row has problems. Each
    recipient's state is kept in a journal beside the campaign file, so running
    the same command again after a failure, a kill or Ctrl-C resumes: sent
    recipients are skipped, deferred ones retried, new rows sent. A recipient
    whose message was with the server when a run died is *uncertain*: it is
    named and not sent again unless you add --resend-uncertain.

    The password comes from the variable named by `smtp.password_env`
    (default MAILMERGE_SMTP_PASSWORD), or a prompt on a terminal.

    Exit codes: 0 all sent, 1 some failed, deferred or invalid, 2 configuration
    or server set-up error, 130 interrupted (run again to resume).

    \b
    Example:
      mailmerge send campaigns/newsletter.yaml --to me@example.org --row 2
      MAILMERGE_SMTP_PASSWORD=... mailmerge send campaigns/newsletter.yaml
      mailmerge send campaigns/newsletter.yaml --dry-run --out /tmp/check
    """
    if dry_run:
        _preview(campaign, out, limit, quiet, where)
        return
    loaded = _load(campaign, where)
    if test_to:
        _send_test(loaded, test_to, set(row) or None, limit or 1)
        return
    options = SendOptions(limit=limit, skip_invalid=skip_invalid, allow_changes=allow_changes,
                          restart=restart, resend_uncertain=resend_uncertain)
    try:
        plan = prepare_send(loaded, options)
    except MailmergeError as exc:
        _fail(exc)
    with plan:
        if plan.problems:
            click.echo(f"Problems in {len(plan.problems)} rows:")
            _print_problems(Report(rows=0, problems=plan.problems), most=20)
            if plan.blocked:
                click.echo("Nothing was sent. Fix the rows and run again, or send the others "
                           "with --skip-invalid.")
                sys.exit(EXIT_DATA)
        _describe_plan(plan)
        if plan.to_send == 0 and not plan.waiting_copies:
            click.echo("Nothing to send.")
            sys.exit(EXIT_DATA if plan.uncertain or plan.counts["failed"] else EXIT_OK)
        if plan.waiting_copies:
            click.echo(f"  {plan.waiting_copies} copies wait to be saved in the Sent folder.")
        if not yes and plan.to_send:
            if not sys.stdin.isatty():
                _fail(ConfigError("not on a terminal, so no confirmation can be asked",
                                  hint="add --yes to send without asking"))
            if not click.confirm("Send now?", default=False):
                sys.exit(EXIT_DATA)
        password = _password(loaded.smtp)
        imap_password = _imap_password(loaded)
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
    copies = report.sent_copies
    if copies is not None:
        click.echo(f"Copies in the Sent folder: {copies.saved} saved"
                   + (f", {copies.failed} not saved ({copies.last_error}); they are kept and "
                      "saved on the next run" if copies.failed else ""))
    if report.uncertain:
        click.echo("Uncertain (may or may not have been delivered): "
                   + ", ".join(f"row {r.row} {r.key}" for r in report.uncertain[:10])
                   + (" ..." if len(report.uncertain) > 10 else ""))
    if report.stopped is not None:
        click.echo(f"Error: stopped: {report.stopped}", err=True)
        sys.exit(EXIT_CONFIG)
    if report.interrupted:
        click.echo(f"Interrupted. Run the same command again to resume "
                   f"(mailmerge send {campaign.path}).", err=True)
        sys.exit(EXIT_INTERRUPTED)
    waiting = counts.get("deferred", 0) + counts.get("pending", 0)
    if waiting:
        click.echo(f"{waiting} recipients are still waiting (deferred by the server or beyond "
                   f"--limit); run the same command again later to continue.")
    bad = counts.get("failed", 0) or waiting or report.uncertain or report.problems
    sys.exit(EXIT_DATA if bad else EXIT_OK)


def _send_test(campaign: Campaign, address: str, rows: set[int] | None, limit: int) -> None:
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
@click.argument("campaign", type=click.Path(dir_okay=False))
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
    loaded = _load(campaign)
    path = journal_path(loaded)
    if not path.exists():
        _fail(ConfigError(f"no journal yet at {path}", hint="nothing has been sent; "
                                                            "run `mailmerge send` first"))
    with Journal(path) as journal:
        counts = journal.counts()
        click.echo(f"Campaign {loaded.name} ({path}):")
        labels = {"sending": "uncertain"}
        click.echo("  " + ", ".join(f"{labels.get(k, k)} {v}" for k, v in counts.items()))
        for state, title in (("failed", "Failed"), ("sending", "Uncertain"),
                             ("deferred", "Deferred")):
            records = list(journal.records(state))
            if records:
                click.echo(f"{title}:")
                for record in records:
                    click.echo(f"  row {record.row} {record.key}: {record.last_reply or '-'} "
                               f"(attempts {record.attempts})")
        if csv_path:
            if csv_path == "-":
                journal.write_csv(sys.stdout)
            else:
                with open(csv_path, "w", newline="", encoding="utf-8") as handle:
                    count = journal.write_csv(handle)
                click.echo(f"Wrote {count} lines to {csv_path}")


def main() -> None:
    cli(prog_name="mailmerge")
