"""The ``mailmerge`` command: a thin layer over the library (``mailmerge.pipeline``).

Exit codes: 0 success, 1 problems in the data (some rows), 2 usage or configuration error,
130 interrupted. Commands: check, preview, init here; send and status in sending.py.
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..campaign import Campaign, load_campaign
from ..errors import ConfigError, MailmergeError
from ..notices import Notice
from ..pipeline import check_campaign, iter_messages
from .common import (
    _JOBS,
    _LIMIT,
    _OUT,
    _QUIET,
    _WHERE,
    EXIT_DATA,
    EXIT_OK,
    _campaign_file,
    _fail,
    _finish,
    _jobs,
    _load,
    _n,
    _preview,
    _print_problems,
    _progress,
    cli,
    not_with,
    only_with,
)
from .sending import progress_line, send, status

if TYPE_CHECKING:  # the live preview, the import and the spam check load when used
    from ..preview.watch import Rendering

__all__ = ["cli", "main", "progress_line", "send", "status"]

WATCH_ROWS = 20  # the rows a live preview renders unless --limit says otherwise


@cli.command()
@click.argument("campaign", type=click.Path())
@_WHERE
@click.option("--strict", is_flag=True,
              help="Exit 1 on any pre-flight warning too, not only on row problems.")
@click.option("--spam", is_flag=True,
              help="Also score the first rows with SpamAssassin (local rules only, no "
                   "network tests) and list the rules that fired.")
@click.option("--spam-rows", type=click.IntRange(min=1), default=3, show_default=True,
              metavar="N", help="With --spam: how many messages to score.")
@_JOBS
@_QUIET
@only_with("spam_rows", "spam", why="it says how many messages --spam scores")
def check(campaign: str, where: str | None, strict: bool, spam: bool, spam_rows: int,
          jobs: int | None, quiet: bool) -> None:
    """Render every row without writing or sending, and list every problem.

    Each problem names the file, the row and the column or template line, and
    says what to do. Then come the pre-flight warnings: what makes a correct
    message fail in the inbox (Gmail clipping past about 102 KB of HTML, a
    message or image too large, placeholder, plain-http or broken links,
    template syntax left in, an unsubscribe link missing from the body, no lang,
    title or alt text, a text part that says something else than the HTML),
    each with the rows and how to fix it.

    Exit 0 when every row is fine (warnings or not, unless --strict), 1 when
    some rows have problems (or, with --strict, there is a warning or a spam
    score at SpamAssassin's threshold), 2 when the campaign file itself is
    wrong.

    \b
    Example:
      mailmerge check campaigns/invoices.yaml
      mailmerge check campaigns/newsletter.yaml --strict --spam
    """
    loaded = _load(campaign, where)
    try:
        report = check_campaign(loaded, progress=_progress(quiet), jobs=_jobs(jobs))
        lines, spammy = _spam(loaded, spam_rows) if spam else ([], False)
    except MailmergeError as exc:
        _fail(exc)
    _finish(report, "ok", strict=strict, spammy=spammy, more=lines)


def _spam(campaign: Campaign, rows: int) -> tuple[list[str], bool]:
    """SpamAssassin's score of the first ``rows`` messages, as lines; whether one is spam."""
    from ..spamcheck import spam_score

    scored, spammy = 0, False
    lines = ["Spam score (SpamAssassin, local rules, on the exact bytes send would send):"]
    for outcome in iter_messages(campaign):
        if outcome.built is None:
            continue
        result = spam_score(outcome.built.data)
        verdict = "spam" if result.spam else "not spam"
        lines.append(f"  row {outcome.row}: {result.score:.1f} points ({verdict}; "
                     f"{result.required:.1f} is spam)")
        lines += [f"    {rule.points:5.1f} {rule.name:24} {rule.description}"
                  for rule in sorted(result.rules, key=lambda r: -abs(r.points))]
        spammy |= result.spam
        scored += 1
        if scored == rows:
            break
    if not scored:
        lines.append("  no row makes a message to score")
    return lines, spammy


@cli.command()
@click.argument("campaign", type=click.Path())
@_OUT
@_LIMIT
@_WHERE
@click.option("-r", "--row", "rows", type=click.IntRange(min=2), multiple=True, metavar="N",
              help="Only row N, numbered as the spreadsheet shows it (the first recipient is "
                   "row 2). May be given more than once.")
@click.option("--print", "print_", is_flag=True,
              help="Print the message (its header fields and text part) instead of writing "
                   "files: the first row, or each --row.")
@click.option("--eml", is_flag=True, help="With --print: print the exact bytes of the .eml.")
@click.option("--watch", is_flag=True,
              help="Live preview: serve the gallery on 127.0.0.1 and render the first rows "
                   "(--limit, default 20) again whenever the campaign, a template, an image "
                   "or the sheet changes; the open page follows. Ctrl-C stops it.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default="a free one",
              help="With --watch: the port to serve on.")
@click.option("--open", "open_", is_flag=True, help="Open index.html in the web browser.")
@_JOBS
@_QUIET
@only_with("port", "watch", why="only the live preview serves pages")
@not_with("print_", "out", "open_", "limit", "jobs",
          why="--print prints the first row, or each --row, and writes no files")
@only_with("eml", "print_", why="it prints the exact bytes of the message --print shows")
@not_with("watch", "print_", "rows", "jobs",
          why="the live preview renders the first rows (--limit) in one process")
def preview(campaign: str, out: str | None, limit: int | None, where: str | None,
            rows: tuple[int, ...], print_: bool, eml: bool, watch: bool, port: int,
            open_: bool, jobs: int | None, quiet: bool) -> None:
    """Dry run: write every message as an .eml file instead of sending it.

    Each file holds exactly the bytes that would go over SMTP and opens in any
    mail client. Beside them: manifest.csv (one line per message) and
    index.html, which lists the messages and shows each one's HTML. No
    network is used. Rows with problems get no file and are listed; the exit
    code is then 1.

    With --print, one message goes to the terminal (or a pipe) instead, and no
    file is written. With --watch, the gallery is served on 127.0.0.1 and
    follows your edits: save a template and the open page shows the new
    messages, on the message and at the place you were; a template error shows
    in the page until you fix it.

    \b
    Example:
      mailmerge preview campaigns/newsletter.yaml --limit 10 --open
      mailmerge preview campaigns/newsletter.yaml --where "city == 'Zürich'"
      mailmerge preview campaigns/newsletter.yaml --row 3 --print
      mailmerge preview campaigns/newsletter.yaml --row 3 --print --eml > row3.eml
      mailmerge preview campaigns/welcome.yaml --watch --open
    """
    if watch:
        _watch(campaign, out, limit or WATCH_ROWS, where, port, open_)
        return
    if print_:
        if eml and len(rows) > 1:
            raise click.UsageError("--print --eml prints one message: give one --row")
        _print_rows(campaign, where, rows, eml)
        return
    _preview(campaign, out, limit, quiet, where, open_, jobs, rows)


def _watch(campaign: str, out: str | None, limit: int, where: str | None, port: int,
           open_: bool) -> None:
    """Serve and re-render until Ctrl-C; one line per render."""
    from ..preview.watch import LivePreview

    try:
        live = LivePreview(_campaign_file(campaign), Path(out) if out else None, limit=limit,
                           where=where, port=port)
        url, first = live.start()
    except MailmergeError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(ConfigError(f"cannot serve the preview on 127.0.0.1 port {port}: "
                          f"{exc.strerror or exc}", hint="choose another --port, or leave it "
                                                        "out for a free one"))
    click.echo(f"Live preview of the first {limit} rows at {url} (Ctrl-C stops it)")
    more = " (the templates' folders hold more: the rest is not watched)" if live.capped else ""
    click.echo(f"  watching {_n(len(live.files), 'file')}{more}; writing into {live.out}/")

    def said(rendering: Rendering) -> None:
        stamp = time.strftime("%H:%M:%S")
        if rendering.error is not None:
            click.echo(f"{stamp} Error: {rendering.error}")
            return
        report = rendering.report
        assert report is not None
        line = f"{stamp} {_n(report.messages, 'message')} from {_n(report.rows, 'row')}"
        if report.problems:
            line += f"; problems in {report.failed_rows}: {report.problems[0].errors[0]}"
        click.echo(line)

    import webbrowser

    try:
        said(first)
        if open_ and not webbrowser.open(url):
            click.echo(f"No web browser was found; open {url} in one.")
        live.run(said)
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()
    click.echo("Stopped.")


def _print_rows(campaign: str, where: str | None, rows: tuple[int, ...], eml: bool) -> None:
    """Each --row's message (or the first row's) on stdout; its problems on stderr."""
    from ..preview.printed import message_text

    loaded = _load(campaign, where)
    notices: list[Notice] = []
    printed = failed = 0
    try:
        for outcome in iter_messages(loaded, rows=rows or None, notices=notices):
            if outcome.errors:
                failed += 1
                for error in outcome.errors:
                    click.echo(f"Error: {error}", err=True)
            elif outcome.built is not None:
                if printed:
                    click.echo("-" * 72)
                if eml:
                    sys.stdout.buffer.write(outcome.built.data)
                    sys.stdout.flush()
                else:
                    click.echo(message_text(outcome.built), nl=False)
                printed += 1
            elif rows:
                click.echo(f"Row {outcome.row} has no message: "
                           + ("`where` leaves it out" if outcome.skip == "where" else
                              "its recipient is on a suppression list"), err=True)
            if not rows and (printed or failed):
                break
    except MailmergeError as exc:
        _fail(exc)
    for notice in notices:
        click.echo(str(notice), err=True)
    if not printed and not failed and not rows:
        click.echo("No row makes a message (`where` or the suppression lists leave every "
                   "row out).", err=True)
    sys.exit(EXIT_DATA if failed else EXIT_OK)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--markdown", is_flag=True,
              help="Write the body in Markdown (in a default layout), not HTML and text.")
def init(folder: str, markdown: bool) -> None:
    """Create a working campaign to start from, in a new folder.

    It holds campaign.yaml, a sheet (people.csv), HTML and text templates (or
    one Markdown template, with --markdown) and a logo; `preview` renders it at
    once. Existing files are never overwritten.

    \b
    Example:
      mailmerge init demo && mailmerge preview demo/campaign.yaml --open
      mailmerge init letter --markdown && mailmerge preview letter/campaign.yaml --watch
    """
    from ..scaffold import create_campaign

    try:
        written = create_campaign(Path(folder), markdown=markdown)
    except MailmergeError as exc:
        _fail(exc)
    for path in written:
        click.echo(f"  created {path}")
    click.echo(f"Next: mailmerge preview {Path(folder) / 'campaign.yaml'} "
               + ("--watch --open" if markdown else "--open"))


@cli.command("import")
@click.argument("classic_folder", type=click.Path(file_okay=False, exists=True))
@click.argument("new_folder", type=click.Path(file_okay=False))
@click.option("--template", type=click.Path(dir_okay=False),
              help="The classic template (default: CLASSIC_FOLDER/mailmerge_template.txt).")
@click.option("--database", type=click.Path(dir_okay=False),
              help="The classic database (default: CLASSIC_FOLDER/mailmerge_database.csv).")
@click.option("--config", type=click.Path(dir_okay=False),
              help="The classic server configuration (default: "
                   "CLASSIC_FOLDER/mailmerge_server.conf).")
def import_(classic_folder: str, new_folder: str, template: str | None,
            database: str | None, config: str | None) -> None:
    """Turn a classic mailmerge campaign into a campaign folder.

    Reads mailmerge_template.txt (its TO, FROM, CC, BCC, REPLY-TO, SUBJECT and
    ATTACHMENT lines and its text, HTML, Markdown or multipart body),
    mailmerge_database.csv and mailmerge_server.conf, and writes
    NEW_FOLDER/campaign.yaml with the templates, the sheet and the attachments
    beside it. What cannot carry over (a file outside the folder, a missing
    subject, a password) is listed with what to do; then the new campaign is
    checked. Existing files are never overwritten.

    Exit codes: 0 imported and every row renders, 1 imported but there is
    something to do or a row has problems, 2 the classic files cannot be read.

    \b
    Example:
      mailmerge import ~/old-merge letters && mailmerge preview letters/campaign.yaml
    """
    from ..classic import import_classic

    try:
        imported = import_classic(Path(classic_folder), Path(new_folder),
                                  template=Path(template) if template else None,
                                  database=Path(database) if database else None,
                                  config=Path(config) if config else None)
    except MailmergeError as exc:
        _fail(exc)
    for path in imported.written:
        click.echo(f"  created {path}")
    for note in imported.notes:
        click.echo(f"Note: {note}")
    for item in imported.todo:
        click.echo(f"To do: {item}")
    config_path = Path(new_folder) / "campaign.yaml"
    try:
        report = check_campaign(load_campaign(config_path))
    except MailmergeError as exc:
        click.echo(f"Not yet ready: {exc}")
        sys.exit(EXIT_DATA)
    for notice in report.notices:
        click.echo(str(notice))
    if report.problems:
        click.echo(f"Problems in {report.failed_rows} of {_n(report.rows, 'row')}:")
        _print_problems(report.problems, most=10)
    click.echo(f"Checked: {_n(report.rows, 'row')}, {_n(report.messages, 'message')} ok. "
               f"Next: mailmerge preview {config_path} --open")
    sys.exit(EXIT_DATA if imported.todo or report.problems else EXIT_OK)


def main() -> None:
    # Run last of the exit hooks: Python's collections as it ends walk every object the
    # imports made (jinja2, premailer, the email package), 30-50 ms of every command, an
    # eighth of checking the shipped newsletter. Frozen, they go with the process. Only
    # objects in reference cycles miss their __del__ then, which Python never promises at
    # exit anyway; every file mailmerge writes is closed by `with`, not by collection.
    atexit.register(gc.freeze)
    try:
        cli(prog_name="mailmerge")
    except OSError as exc:
        if exc.errno not in _OUTPUT_FULL:
            raise  # a bug: its traceback says where
        _output_failed(exc)
    try:
        sys.stdout.flush()  # what is still buffered, here rather than at exit, unreported
    except OSError as exc:
        _output_failed(exc)


# What writing to standard output meets when it goes to a full disk or a dead device
_OUTPUT_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _output_failed(exc: OSError) -> None:
    """One Error line (on stderr) for output that could not be written, exit code 2."""
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more goes to the full one
        click.echo(f"Error: cannot write the output: {exc.strerror or exc}; make room on the "
                   "disk it goes to, or send it elsewhere", err=True)
    finally:
        os._exit(2)
