"""What every `mailmerge` command shares: the click group, options, messages, exit codes."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..campaign import Campaign, load_campaign, with_where
from ..errors import ConfigError, MailmergeError
from ..parallel import default_jobs
from ..pipeline import Outcome, ProblemKind, ProblemRows, Report, Warned, problem_kind

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_DATA, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

_OUT = click.option("-o", "--out", type=click.Path(file_okay=False),
                    help="Folder for the .eml files. Default: out/<campaign name>/.")
_LIMIT = click.option("-n", "--limit", type=click.IntRange(min=1),
                      help="Only the first N rows.")
_SEND_LIMIT = click.option("-n", "--limit", type=click.IntRange(min=1),
                           help="Send at most N messages in this run (a daily batch); the "
                                "others wait, and the same command sends the next ones.")
_QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress line.")
_JOBS = click.option("-j", "--jobs", type=click.IntRange(min=1),
                     show_default="one per core",
                     help="Worker processes that render the rows (1: all in this one).")
_WHERE = click.option("-w", "--where", metavar="EXPRESSION",
                      help="Only rows for which this Jinja expression is true, e.g. "
                           "\"country == 'CN' and points|int > 100\" (added to the campaign's "
                           "`where:`).")


def _n(count: int, word: str, words: str | None = None) -> str:
    """``count`` and the noun in the number it needs: "1 row", "2 rows", "1 copy"."""
    return f"{count} {word if count == 1 else words or word + 's'}"


def _fail(exc: MailmergeError) -> NoReturn:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _jobs(jobs: int | None) -> int:
    """``--jobs``, or one per core (counted when a command runs, not when it is imported)."""
    return jobs if jobs is not None else default_jobs()


def _secret(variable: str, prompt: str, missing: str, hint: str) -> str:
    """A password: from the environment variable, else a prompt on a terminal."""
    value = os.environ.get(variable)
    if value:
        return value
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, err=True))
    _fail(ConfigError(f"{missing}: the environment variable {variable} is not set", hint=hint))


CAMPAIGN_NAMES = ("campaign.yaml", "campaign.yml")  # what `mailmerge init` makes


def _campaign_file(path: str) -> Path:
    """The campaign file ``path``, or the one campaign file in the folder ``path``.

    Raises ConfigError when the folder holds none or both, naming its YAML files."""
    given = Path(path)
    if not given.is_dir():
        return given
    found = [given / name for name in CAMPAIGN_NAMES if (given / name).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigError("the folder holds both campaign.yaml and campaign.yml", path=given,
                          hint="give the campaign file itself")
    others = sorted(p.name for p in given.iterdir() if p.suffix in (".yaml", ".yml"))
    raise ConfigError("the folder holds no campaign.yaml or campaign.yml", path=given,
                      hint="give the campaign file itself" + (
                          f": it holds {', '.join(others)}" if others else
                          ", or make one with `mailmerge init FOLDER`"))


def _load(path: str, where: str | None = None) -> Campaign:
    try:
        return with_where(load_campaign(_campaign_file(path)), where)
    except MailmergeError as exc:
        _fail(exc)


def _ranges(rows: list[int]) -> str:
    spans: list[str] = []
    start = prev = rows[0]
    ends: list[int | None] = [*rows[1:], None]
    for row in ends:
        if row is not None and row == prev + 1:
            prev = row
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if row is not None:
            start = prev = row
    return ", ".join(spans)


def _print_problems(problems: list[Outcome], most: int | None = None) -> None:
    """Every problem once (or the first ``most``); the same problem on many rows is one line
    naming the rows (the first ones kept, and how many there are: see ProblemRows)."""
    groups: OrderedDict[ProblemKind, list[int]] = OrderedDict()
    errors: dict[ProblemKind, MailmergeError] = {}
    kinds = problems.kinds if isinstance(problems, ProblemRows) else {}
    for outcome in problems:
        for error in outcome.errors:
            sig = problem_kind(error)
            rows = groups.setdefault(sig, [])
            row = error.row or outcome.row
            if not rows or rows[-1] != row:  # the same problem twice in a row is one
                rows.append(row)
            errors.setdefault(sig, error)
    for index, (sig, rows) in enumerate(groups.items()):
        if most is not None and index == most:
            click.echo(f"  ... and {len(groups) - most} more; `mailmerge check` lists them all")
            break
        error = errors[sig]
        total = kinds.get(sig, len(rows))
        if total == 1:
            click.echo(f"  {error}")
            continue
        more = f", ... ({total} rows)" if total > len(rows) else ""
        row_saved = error.row
        error.row = None
        click.echo(f"  {error} [rows {_ranges(rows)}{more}]")
        error.row = row_saved
    if isinstance(problems, ProblemRows) and problems.uncounted and most is None:
        click.echo(f"  ... and {_n(problems.uncounted, 'row')} with other problems (the "
                   f"first {ProblemRows.KINDS_KEPT} problems are listed)")


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


def _print_warnings(warnings: Iterable[Warned]) -> int:
    """The pre-flight warnings, one line per finding with its rows; how many."""
    groups = list(warnings)
    if groups:
        click.echo("Before you send (pre-flight warnings):")
    for group in groups:
        click.echo(f"  {group.describe()}")
    return len(groups)


def _finish(report: Report, verb: str, strict: bool = False, spammy: bool = False,
            more: Iterable[str] = ()) -> None:
    if sys.stderr.isatty():
        click.echo("\r" + " " * 30 + "\r", nl=False, err=True)
    for notice in report.notices:
        click.echo(str(notice))
    if report.problems:
        click.echo(f"Problems in {report.failed_rows} of {_n(report.rows, 'row')}:")
        _print_problems(report.problems)
    warned = _print_warnings(report.warnings.values())
    for line in more:
        click.echo(line)
    summary = f"{_n(report.rows, 'row')}: {_n(report.messages, 'message')} {verb}"
    if report.skipped:
        summary += f", {_n(report.skipped, 'row')} skipped by `where`"
    if report.suppressed:
        summary += f", {report.suppressed} suppressed"
    if report.problems:
        summary += f", {_n(report.failed_rows, 'row')} with problems (fix them and run again)"
    if warned:
        summary += f", {_n(warned, 'warning')}"
    click.echo(summary + ".")
    warned += sum(notice.kind == "warning" for notice in report.notices)
    failed = report.problems or (strict and (warned or spammy))
    sys.exit(EXIT_DATA if failed else EXIT_OK)


# An option that only means something together with another (or that another makes
# meaningless) is refused with a usage error rather than ignored: `send --row 5` that
# quietly sent every row is the mistake this guards against.
_Rule = tuple[str, tuple[str, ...], bool, str]  # option, others, needs one of them?, why


def only_with(option: str, *others: str, why: str) -> Callable[[F], F]:
    """Refuse ``option`` (a parameter name) unless one of ``others`` is given too."""
    return _rule((option, others, True, why))


def not_with(option: str, *others: str, why: str) -> Callable[[F], F]:
    """Refuse ``option`` together with any of ``others``."""
    return _rule((option, others, False, why))


def _rule(rule: _Rule) -> Callable[[F], F]:
    def mark(function: F) -> F:
        rules: list[_Rule] = function.__dict__.setdefault("mailmerge_rules", [])
        rules.append(rule)
        return function
    return mark


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave the parameter ``name`` (not its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.DEFAULT \
        and ctx.params.get(name) not in (None, False, ())


def _flag(ctx: click.Context, name: str) -> str:
    """The option ``name`` as it is typed: its long form."""
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name


def check_rules(ctx: click.Context) -> None:
    """The usage error for the first option given empty, or without (or with) what it
    needs. An empty value is most often a shell variable that is not set: `--to "$ME"`
    must not become a real send, nor `--where "$FILTER"` a send to every row."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(param, click.Option) and any(
                isinstance(v, str) and not v.strip() for v in values):
            raise click.UsageError(f"{_flag(ctx, param.name or '')} is empty: give it a "
                                   "value, or leave the option out (is a shell variable "
                                   "not set?)", ctx)
    for option, others, needs, why in getattr(ctx.command.callback, "mailmerge_rules", ()):
        if not _given(ctx, option):
            continue
        named = " or ".join(_flag(ctx, other) for other in others)
        if needs and not any(_given(ctx, other) for other in others):
            raise click.UsageError(f"{_flag(ctx, option)} goes only with {named}: {why}", ctx)
        clash = [other for other in others if _given(ctx, other)] if not needs else []
        if clash:
            raise click.UsageError(f"{_flag(ctx, option)} does not go with "
                                   f"{_flag(ctx, clash[0])}: {why}", ctx)


class _Command(click.Command):
    """A command whose options are checked against its rules (:func:`only_with`,
    :func:`not_with`) before it runs."""

    def invoke(self, ctx: click.Context) -> Any:
        check_rules(ctx)
        return super().invoke(ctx)


class _Commands(click.Group):
    """The group, with Ctrl-C as exit code 130 on every command. click's own answer
    ("Aborted!", exit code 1) is the code of rows with problems: a script would take an
    interrupted `check` for bad data. (`send` handles Ctrl-C itself and says how to
    resume; this is what the other commands get.)"""

    command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailmerge-campaign", prog_name="mailmerge")
def cli() -> None:
    """Personalised mail from a spreadsheet: Jinja2 templates, CSV or .xlsx rows, SMTP.

    \b
    Start with a dry run, then check, then send:
      mailmerge preview campaigns/newsletter.yaml     # .eml files in out/newsletter/
      mailmerge preview campaigns/welcome.yaml --watch  # a live preview as you edit
      mailmerge check campaigns/newsletter.yaml       # every problem of every row,
                                                      # and what inboxes would punish
      mailmerge send campaigns/newsletter.yaml        # resumable; run again to resume
    Or, for a few personal messages:
      mailmerge drafts letter/campaign.yaml           # into Drafts (needs `imap:`)
    Starting out:
      mailmerge init letter --markdown                # a campaign to start from
      mailmerge import old-folder letter              # from the classic mailmerge
    Afterwards:
      mailmerge status campaigns/newsletter.yaml      # who was sent, failed, bounced
      mailmerge bounces campaigns/newsletter.yaml     # read bounces back, suppress them

    Exit codes: 0 success, 1 some rows have problems, 2 the campaign file is wrong.

    A template's inlined CSS is kept between runs in ~/.cache/mailmerge; set
    MAILMERGE_CACHE_DIR to keep it elsewhere, MAILMERGE_NO_CACHE=1 to keep nothing.
    """


def _preview(campaign: str, out: str | None, limit: int | None, quiet: bool,
             where: str | None = None, open_: bool = False, jobs: int | None = None,
             rows: tuple[int, ...] = ()) -> None:
    from ..preview import preview_campaign  # here: `check` needs no .eml folder

    loaded = _load(campaign, where)
    try:
        report = preview_campaign(loaded, Path(out) if out else None, limit=limit,
                                  progress=_progress(quiet), jobs=_jobs(jobs),
                                  rows=rows or None)
    except MailmergeError as exc:
        _fail(exc)
    click.echo(f"Wrote {_n(report.messages, '.eml file')}, manifest.csv and index.html "
               f"to {report.folder}/")
    if open_ and report.folder is not None:
        import webbrowser

        page = (report.folder / "index.html").resolve().as_uri()
        if not webbrowser.open(page):
            click.echo(f"No web browser was found; open {page} in one.")
    _finish(report, "written")
