"""The ``mailmerge`` command: a thin layer over the library (``mailmerge.pipeline``).

Exit codes: 0 success, 1 problems in the data (some rows), 2 usage or configuration error.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .campaign import Campaign, load_campaign
from .errors import ConfigError, MailmergeError, SheetError, TemplateError
from .pipeline import Outcome, Report, check_campaign, preview_campaign

EXIT_OK, EXIT_DATA, EXIT_CONFIG = 0, 1, 2


def _fail(exc: MailmergeError) -> None:
    click.echo(f"Error: {exc}", err=True)
    code = EXIT_CONFIG if isinstance(exc, (ConfigError, TemplateError)) else EXIT_DATA
    if isinstance(exc, SheetError) and exc.row is None:
        code = EXIT_DATA
    sys.exit(code)


def _load(path: str) -> Campaign:
    try:
        return load_campaign(path)
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


def _print_problems(report: Report) -> None:
    """Every problem once; the same problem on many rows is one line naming the rows."""
    groups: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
    errors: dict[tuple[Any, ...], MailmergeError] = {}
    for outcome in report.problems:
        for error in outcome.errors:
            sig = (type(error), str(error.path), error.line, error.column, error.message,
                   error.hint)
            groups.setdefault(sig, []).append(error.row or outcome.row)
            errors.setdefault(sig, error)
    for sig, rows in groups.items():
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
        click.echo(f"Note: {notice}")
    if report.problems:
        click.echo(f"Problems in {report.failed_rows} of {report.rows} rows:")
        _print_problems(report)
    summary = f"{report.rows} rows: {report.messages} messages {verb}"
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
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
def check(campaign: str, quiet: bool) -> None:
    """Render every row without writing or sending, and list every problem.

    Each problem names the file, the row and the column or template line, and
    says what to do. Exit 0 when every row is fine, 1 when some rows have
    problems, 2 when the campaign file itself is wrong.

    \b
    Example:
      mailmerge check campaigns/invoices.yaml
    """
    loaded = _load(campaign)
    try:
        report = check_campaign(loaded, progress=_progress(quiet))
    except MailmergeError as exc:
        _fail(exc)
    _finish(report, "ok")


def _preview(campaign: str, out: str | None, limit: int | None, quiet: bool) -> None:
    loaded = _load(campaign)
    try:
        report = preview_campaign(loaded, Path(out) if out else None, limit=limit,
                                  progress=_progress(quiet))
    except MailmergeError as exc:
        _fail(exc)
    click.echo(f"Wrote {report.messages} .eml files, manifest.csv and index.html "
               f"to {report.folder}/")
    _finish(report, "written")


_OUT = click.option("-o", "--out", type=click.Path(file_okay=False),
                    help="Folder for the .eml files. Default: out/<campaign name>/.")
_LIMIT = click.option("-n", "--limit", type=click.IntRange(min=1),
                      help="Only the first N rows.")
_QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress line.")


@cli.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@_OUT
@_LIMIT
@_QUIET
def preview(campaign: str, out: str | None, limit: int | None, quiet: bool) -> None:
    """Dry run: write every message as an .eml file instead of sending it.

    Each file holds exactly the bytes that would go over SMTP and opens in any
    mail client. Beside them: manifest.csv (one line per message) and
    index.html, which lists the messages and shows each one's HTML. No
    network is used. Rows with problems get no file and are listed; the exit
    code is then 1.

    \b
    Example:
      mailmerge preview campaigns/newsletter.yaml --limit 10
      open out/newsletter/index.html
    """
    _preview(campaign, out, limit, quiet)


@cli.command()
@click.argument("campaign", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Write .eml files instead of sending "
                                              "(same as `mailmerge preview`).")
@_OUT
@_LIMIT
@_QUIET
def send(campaign: str, dry_run: bool, out: str | None, limit: int | None, quiet: bool) -> None:
    """Send the campaign (with --dry-run: write .eml files, like `preview`).

    \b
    Example:
      mailmerge send campaigns/newsletter.yaml --dry-run --out /tmp/check
    """
    if not dry_run:
        _fail(ConfigError("sending over SMTP is not available in this version yet",
                          hint="use --dry-run (or `mailmerge preview`) to write .eml files"))
    _preview(campaign, out, limit, quiet)


def main() -> None:
    cli(prog_name="mailmerge")
