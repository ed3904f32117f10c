"""Rendering one row: Jinja2 templates, address fields, CSS, images and attachments.

The :class:`Renderer` is built once per campaign (templates compiled, CSS inlined on the
template source where that is safe, files cached) and then turns each row into a
:class:`Rendered` value, or raises :class:`RowErrors` listing every problem of the row.
"""

from __future__ import annotations

import atexit
import difflib
import glob
import itertools
import math
import os
import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping, MutableMapping
from dataclasses import dataclass
from email.headerregistry import Address
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import (  # type: ignore[attr-defined]  # _escape_inner: escape's C core
    Markup,
    _escape_inner,
    escape,
)

from . import css
from .addresses import (
    HEADER_CONTROL,
    AddressProblem,
    AddressTemplate,
    address_key,
    compile_address_field,
    make_address_environment,
)
from .assets import (
    CACHE_BYTES,
    AssetProblem,
    FileCache,
    Part,
    SizedCache,
    embed_images,
    resolve_attachments,
    resolve_inside,
)
from .campaign import (
    AddressField,
    Campaign,
    placeholder_name,
    placeholder_user,
    where_expression,
)
from .cell_source import URL_UNSAFE, column_of, longest_value, source_value
from .errors import CellError, ConfigError, MailmergeError, RowError, RowErrors, TemplateError
from .fill import fill, fill_pieces, row_context
from .flatten import flatten
from .htmlpart import html_to_text, refuse_script_links, value_outside_quotes
from .markdown_body import fill_autolinks, make_converter
from .notices import Notice
from .pageinline import PageInliner
from .pagescan import Page, PageScanner, template_text
from .placeholders import Placeholders
from .sheet import Row, describe_bad_cell
from .signing import load_signer
from .suppress import load_suppressions
from .xlsxrows import BadCell

CID_DOMAIN = "mailmerge"
MAX_HEADER_CHARS = 1000
# What a template expression may raise besides jinja2's own errors.
_RUNTIME_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError,
                   LookupError, AttributeError, RecursionError)
MAX_VALUE = 10_000_000  # items of a text or list one expression may make by repetition
MAX_POWER_DIGITS = 10_000
T = TypeVar("T")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


class UndefinedName(jinja2.UndefinedError):
    """A template used a name the row does not have (most likely a misspelt column)."""

    def __init__(self, message: str | None, name: str) -> None:
        super().__init__(message)
        self.name = name


class BadCellUsed(jinja2.UndefinedError):
    """A template used a cell that holds no usable value (see sheet.Row.bad)."""

    def __init__(self, message: str | None, column: str, cell: BadCell) -> None:
        super().__init__(message)
        self.column, self.cell = column, cell


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined whose error for a missing top-level name carries that name."""

    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = jinja2.utils.missing,
                 name: str | None = None,
                 exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError) -> None:
        if hint is None and obj is jinja2.utils.missing and name is not None:
            exc = partial(UndefinedName, name=name)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)


class _BadCellValue(_Undefined):
    """A cell with no usable value (see :meth:`Renderer.context`): it fails wherever a
    template uses it, also inside the whole row (``{{ row }}``, ``row.values()``,
    ``row|tojson``), where it would otherwise show as the word "Undefined"."""

    __slots__ = ()
    __repr__ = jinja2.StrictUndefined._fail_with_undefined_error


def _json_default(value: Any) -> Any:
    """``|tojson`` of what JSON has no form for: a bad cell fails as itself."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    raise TypeError(f"{type(value).__name__} values have no JSON form")


@dataclass(frozen=True)
class Suppressed:
    """A row whose recipient is on a suppression list: it is not to be mailed."""

    row: int
    key: str  # the journal key the row would have had


@dataclass(frozen=True)
class Rendered:
    """Everything one message needs, rendered for one row; no MIME yet."""

    row: int
    key: str
    from_: tuple[Address, ...]
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    subject: str
    text: str | None
    html: str | None
    images: tuple[Part, ...] = ()
    attachments: tuple[Part, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    unsubscribe: tuple[str, ...] = ()
    list_id: str | None = None
    return_path: Address | None = None  # the envelope sender, when not Sender or From

    @property
    def envelope_from(self) -> str:
        return (self.return_path or self.sender or self.from_[0]).addr_spec

    @property
    def envelope_to(self) -> list[str]:
        """Every recipient once (To, Cc and Bcc), in that order."""
        seen: dict[str, str] = {}
        for address in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(address.addr_spec.lower(), address.addr_spec)
        return list(seen.values())


ROW_SECONDS = 10.0  # what rendering one row may take; longer is a row problem
MAX_SLOW_ROWS = 3  # rows over ROW_SECONDS after which the run stops


class TooSlow(BaseException):
    """A row's rendering ran past ROW_SECONDS (raised from SIGALRM). A BaseException, so
    that no ``except Exception`` in Jinja or a filter on the way swallows it."""


class TimeBudget:
    """``with TimeBudget(seconds):`` interrupts the block with TooSlow once it has run
    ``seconds``: a template loop that would run for hours (nested loops over big ranges)
    becomes a row problem.

    It wraps every row, so entering costs next to nothing: a SIGALRM ticks a few times a
    second while blocks are being timed (and stops itself when none is) and checks the
    running block's start. Only where a signal can be set, the main thread of a process,
    as in every mailmerge command and render worker; elsewhere (a library caller's own
    thread) the block runs unbounded.
    """

    started = 0.0  # when the block being timed began; 0 when none is
    limit = 0.0
    ticking = False  # the interval timer runs in this process
    stopped_at_exit = False  # _stop_ticking is registered to run at exit
    _main = threading.main_thread()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.timing = False

    def __enter__(self) -> None:
        cls = TimeBudget
        if cls.started or threading.current_thread() is not cls._main:
            return  # already bounded by an outer budget, or no signals here
        if not cls.ticking:
            signal.signal(signal.SIGALRM, _tick)
            tick = min(1.0, self.seconds / 4)
            signal.setitimer(signal.ITIMER_REAL, tick, tick)
            cls.ticking = True
            if not cls.stopped_at_exit:
                # Python puts the default handlers back as it ends, and by default SIGALRM
                # kills: a tick due then would end the process with it
                atexit.register(_stop_ticking)
                cls.stopped_at_exit = True
        cls.limit = self.seconds
        cls.started = time.monotonic()
        self.timing = True

    def __exit__(self, *exc: object) -> None:
        if self.timing:
            TimeBudget.started = 0.0
            self.timing = False


def _tick(signum: int, frame: object) -> None:
    cls = TimeBudget
    if not cls.started:  # nothing is being timed: stop until the next block
        signal.setitimer(signal.ITIMER_REAL, 0)
        cls.ticking = False
    elif time.monotonic() - cls.started > cls.limit:
        cls.started = 0.0
        raise TooSlow


def _stop_ticking() -> None:
    if TimeBudget.ticking:
        signal.setitimer(signal.ITIMER_REAL, 0)
        TimeBudget.ticking = False


def _not_ticking() -> None:
    TimeBudget.ticking = False  # a forked child has no interval timer
    TimeBudget.started = 0.0


os.register_at_fork(after_in_child=_not_ticking)


class TooBig(jinja2.exceptions.SecurityError):
    """A template expression would make a value too large to be mail (a repetition or a
    power that a cell can drive)."""


def _output_escape(value: Any, /) -> str:
    """What a template's autoescaped ``{{ }}`` output goes through: markupsafe's escape,
    but a plain text comes back as plain escaped text, not wrapped in Markup.

    The compiled template only yields that output or adds it to a buffer, which is joined
    (and marked safe) as a whole, so the wrapper was never looked at; making it (a Python
    call for each of the 30 values of a newsletter) cost a tenth of rendering one."""
    if type(value) is str:
        return _escape_inner(value)
    return escape(value)


class _Template(jinja2.Template):
    @classmethod
    def _from_namespace(cls, environment: jinja2.Environment, namespace: Any,
                        globals: Any) -> Any:
        namespace["escape"] = _output_escape  # the compiled code's own global
        return super()._from_namespace(environment, namespace, globals)


class _Sandbox(SandboxedEnvironment):
    """The sandbox, and besides: no repetition of a text or list past MAX_VALUE items, no
    power past MAX_POWER_DIGITS digits, no lorem ipsum past 100 paragraphs."""

    intercepted_binops = frozenset({"*", "**"})
    template_class = _Template

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A plain dict, not jinja2's ChainMap over the environment's globals: every render
        copies the globals into its context, and a ChainMap is copied key by key in Python
        (a tenth of a row's rendering). The globals are all set before a template loads."""
        return {**self.globals, **(d or {})}

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                        and len(seq) * times > MAX_VALUE):
                    raise TooBig(f"repeating a value of {len(seq):,} items {times:,} times "
                                 f"would make more than {MAX_VALUE:,}")
        elif (operator == "**" and isinstance(left, (int, float)) and isinstance(right, int)
              and abs(left) > 1 and right * math.log10(abs(left)) > MAX_POWER_DIGITS):
            raise TooBig(f"{left} ** {right} would have more than {MAX_POWER_DIGITS:,} digits")
        return super().call_binop(context, operator, left, right)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:
    if n > 100 or max > 1000:
        raise TooBig(f"lipsum({n}) would make more than 100 paragraphs of up to 1,000 words")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


class LinkedOut(jinja2.exceptions.SecurityError):
    """An included or extended template is a symbolic link out of the template folder."""


class _FolderLoader(jinja2.FileSystemLoader):
    """Templates from their folders only: an {% include %} or {% extends %} that is a
    symbolic link out of them is refused, as images and attachments are. The templates
    the campaign file names itself (``named``) may be links."""

    def __init__(self, searchpath: list[str], named: frozenset[str]) -> None:
        super().__init__(searchpath)
        self.named = named

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if template in self.named:
            return source, filename, uptodate
        real = os.path.realpath(filename)
        roots = [os.path.realpath(root) for root in self.searchpath]
        if not any(real == root or real.startswith(root + os.sep) for root in roots):
            raise LinkedOut(f"the template {template!r} is a link to {real}, outside the "
                            "template folder")
        return source, filename, uptodate


def make_environment(search_path: list[Path], named: frozenset[str] = frozenset()
                     ) -> SandboxedEnvironment:
    """The Jinja2 environment: sandboxed, strict about undefined names, HTML autoescaped.
    ``named``: the templates the campaign file names (see _FolderLoader)."""
    env = _Sandbox(
        loader=jinja2.ChoiceLoader([jinja2.DictLoader({}),
                                    _FolderLoader([str(p) for p in search_path], named)]),
        undefined=_Undefined,
        autoescape=jinja2.select_autoescape(("html", "htm", "xml"), default_for_string=False),
        keep_trailing_newline=True,
        # a run renders every row with the templates as it read them: a layout changed
        # part-way through a send does not change the later messages, and a template that
        # extends or includes another does not look at that file again on every row
        auto_reload=False,
    )
    env.globals["lipsum"] = _lipsum
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}
    return env


def _template_frame(exc: BaseException, filenames: Collection[str]) -> tuple[str, int] | None:
    """The innermost template (of ``filenames``) and line an exception came from, from
    jinja2's rewritten traceback: an error in a layout names the layout, not the
    template that extends it."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return ((exc.filename, exc.lineno) if exc.filename is not None
                and exc.filename in filenames else None)
    found = None
    if isinstance(exc, TooSlow):  # raised past jinja2's handler: map the lines here
        tb = exc.__traceback__
        while tb is not None:
            template = tb.tb_frame.f_globals.get("__jinja_template__")
            if template is not None and template.filename in filenames:
                found = (template.filename, template.get_corresponding_lineno(tb.tb_lineno))
            tb = tb.tb_next
        return found
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in filenames and frame.lineno is not None:
            found = (frame.filename, frame.lineno)
    return found




def _placeholder_logins(campaign: Campaign) -> list[Notice]:
    """A warning for each server host and login name of the campaign that is a
    placeholder left in (smtp.example.org, YOUR_USERNAME_HERE, you@example.org)."""
    found: list[Notice] = []
    servers = [("smtp", campaign.smtp.host, campaign.smtp.username, "SMTP"), *(
        (key, box.host, box.username, "IMAP or POP3")
        for key, box in (("imap", campaign.imap), ("bounces", campaign.bounces)) if box)]
    for key, host, username, kind in servers:
        if placeholder_name(host):
            found.append(Notice.warning(f"`{key}.host` {host} is a placeholder: put in the "
                                        f"{kind} server of your mail provider"
                                        + (" before you send" if key == "smtp" else "")))
        at = (username or "").rpartition("@")
        if username and (placeholder_user(username) or (at[1] and placeholder_name(at[2]))):
            found.append(Notice.warning(f"`{key}.username` {username} is a placeholder: put "
                                        "in your login name at your mail provider before "
                                        "you send"))
    return found


def _own_glob(entry: str) -> bool:
    """Whether an `attachments` entry is a pattern by its own text (outside its values)."""
    own, at = [], 0
    for start, end in css.jinja_spans(entry):
        own.append(entry[at:start])
        at = end
    return glob.has_magic("".join(own) + entry[at:])


def _literal_in_glob(value: Any) -> str:
    """A value filled into an attachment path, with the characters a glob reads as a
    pattern (``*``, ``?``, ``[``) made literal; the path's own text keeps its globs."""
    return glob.escape(str(value))


def _unquoted_values(path: Path) -> list[Notice]:
    """A warning for each ``{{ }}`` of the HTML template at ``path`` that stands inside a tag
    outside a quoted attribute value: autoescaping keeps a value data in text and in
    quoted values only, so a cell there could add attributes (``x onclick=...``)."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []  # said where the template is loaded
    spans = list(css.jinja_spans(source))
    values = [(start, end) for start, end in spans if source.startswith("{{", start)]
    chars = list(source)  # statements and comments blanked, lines kept
    for start, end in spans:
        if not source.startswith("{{", start):
            chars[start:end] = [c if c == "\n" else " " for c in source[start:end]]
    markup = "".join(chars)
    notices: list[Notice] = []
    while values and (found := value_outside_quotes(markup, values)) is not None:
        line = source.count("\n", 0, found.start) + 1
        tag = " ".join(source[found.tag_start:found.tag_end].split())
        notices.append(Notice.warning(
            f"{path}, line {line}: {source[found.start:found.end]} stands inside the tag "
            f"{tag[:80]!r} outside quotes, where a cell could add attributes: write the "
            'value in quotes (href="{{ url }}")'))
        values = [span for span in values if span[0] >= found.tag_end]
    return notices


def _scanned(html: str, resolve: Callable[[str], Part]) -> tuple[str, list[Part]]:
    """A whole page looked through: refused for a script link, its images embedded."""
    refuse_script_links(html)
    return embed_images(html, resolve)


class Renderer:
    """Renders rows of one campaign. Build once; call :meth:`render` per row.

    ``last_page``: how the last row's HTML was looked through, piece by piece (see
    pagescan), or None when it was looked through whole."""

    def __init__(self, campaign: Campaign, columns: tuple[str, ...]) -> None:
        self.campaign = campaign
        self.columns = columns
        self.sheet_path = campaign.recipients.path
        self.notices: list[Notice] = []
        self._slow_rows: list[int] = []  # rows that ran out of time
        self.files = FileCache()
        # by src; the parts are FileCache's own, so this costs no more memory
        self._images: SizedCache[str, Part] = SizedCache(CACHE_BYTES, lambda p: len(p.data))
        key = campaign.recipients.key
        if key is not None and key not in columns:
            raise ConfigError(f"`recipients.key` names column {key!r}, which the sheet does not "
                              f"have", path=campaign.path, line=campaign.line_of("recipients"),
                              hint="its columns are: " + ", ".join(c for c in columns if c))
        named = campaign.templates
        self.env = make_environment(list(dict.fromkeys(t.parent for t in named)),
                                    frozenset(t.name for t in named))
        self.token_env = make_address_environment(self.env)
        self.address_fields: dict[str, AddressTemplate | None] = {
            key: self._compile_address(key, value)
            for key, value in (("from", campaign.from_), ("sender", campaign.sender),
                               ("reply_to", campaign.reply_to), ("to", campaign.to),
                               ("cc", campaign.cc), ("bcc", campaign.bcc),
                               ("return_path", campaign.return_path))
        }
        self.subject = self._compile("subject", campaign.subject)
        self.headers = [(name, self._compile("headers", value))
                        for name, value in campaign.headers]
        # a value in an attachment path is a file name, never a pattern: a cell of "*"
        # would attach every invoice in the folder to one recipient
        attach_env = self.env.overlay(finalize=_literal_in_glob)
        self.attachments = [
            (self._compile("attachments", a, attach_env), True) if _own_glob(a) else
            (self._compile("attachments", a), False) for a in campaign.attachments]
        self.unsubscribe = [self._compile("unsubscribe", u) for u in campaign.unsubscribe]
        if not campaign.unsubscribe and not campaign.transactional:
            self.notices.append(Notice.warning(
                "no `unsubscribe:` link: Gmail and Yahoo junk or refuse bulk mail without "
                "one-click unsubscribe; add one, or set `transactional: true` for invoices, "
                "receipts and other one-to-one mail"))
        self.notices += _placeholder_logins(campaign)
        self.where = self._compile_where("where", campaign.where)
        self.where_option = self._compile_where("--where", campaign.where_option)
        lists = list(campaign.suppress)
        bounced = campaign.bounces.suppress_to if campaign.bounces else None
        if bounced is not None and bounced.exists() and bounced not in lists:
            lists.append(bounced)  # what `mailmerge bounces` found is never mailed again
        self.suppressed = load_suppressions(tuple(lists))
        self.signer = None
        if campaign.dkim is not None:
            self.signer = load_signer(campaign.dkim.domain, campaign.dkim.selector,
                                      campaign.dkim.key_file, campaign.path,
                                      campaign.line_of("dkim"))
        self._dkim_checked = False
        self.text = self._load(campaign.text_template) if campaign.text_template else None
        self.html = self._load(campaign.html_template) if campaign.html_template else None
        self.markdown: jinja2.Template | None = None
        self.layout: jinja2.Template | None = None
        if campaign.markdown_template is not None:
            self._prepare_markdown(campaign.markdown_template, campaign.layout_template)
        self.fast_html: jinja2.Template | None = None
        self._scanners: dict[jinja2.Template, PageScanner] = {}
        self.last_page: Page | None = None
        self.inline_each = False  # the template inlined once, then found to differ on a row
        self._verified = 0
        self.pages: PageInliner | None = None  # inlining once for each shape of page
        for template in (campaign.html_template, campaign.layout_template):
            if template is not None:
                self.notices.extend(_unquoted_values(template))
        if self.html is not None:
            self._prepare_css()

    # --- set-up -----------------------------------------------------------------------------

    def _syntax_error(self, key: str, exc: jinja2.TemplateSyntaxError) -> TemplateError:
        return TemplateError(f"`{key}` is not a valid template: {exc.message}",
                             path=self.campaign.path, line=self.campaign.line_of(key),
                             hint=syntax_hint(exc.message or "", self.env))

    def _compile(self, key: str, source: str, env: jinja2.Environment | None = None
                 ) -> jinja2.Template:
        try:
            return (env or self.env).from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise self._syntax_error(key, exc) from exc

    def _compile_address(self, key: str, value: AddressField) -> AddressTemplate | None:
        try:
            return compile_address_field(key, value, self.token_env, self.env)
        except jinja2.TemplateSyntaxError as exc:
            raise self._syntax_error(key, exc) from exc

    def _compile_where(self, key: str, text: str | None) -> Callable[..., Any] | None:
        """The `where:` filter or the --where option (``key``), compiled; None when not set."""
        if not text:
            return None
        expression = where_expression(text)
        try:
            return self.env.compile_expression(expression, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            what, hint = explain_expression(expression, exc.message or "", self.env)
            if key == "--where":
                raise TemplateError(f"the --where option {expression!r} is not a valid "
                                    f"expression: {what}", hint=hint) from exc
            raise TemplateError(f"`where` {expression!r} is not a valid expression: {what}",
                                path=self.campaign.path, line=self.campaign.line_of("where"),
                                hint=hint) from exc

    def selects(self, row: Row) -> bool:
        """Whether the `where:` filter and the --where option keep this row. Raises RowErrors
        when one fails."""
        if (self.where is None and self.where_option is None) or row.problem is not None:
            return True
        context = self.context(row)
        for key, where in (("where", self.where), ("--where", self.where_option)):
            if where is None:
                continue
            try:
                with TimeBudget(ROW_SECONDS):
                    if not where(**context):
                        return False
            except (*_RUNTIME_ERRORS, TooSlow) as exc:
                raise RowErrors(row.number, [self._template_error(row, exc, key)]) from None
        return True

    def _load(self, path: Path, env: jinja2.Environment | None = None) -> jinja2.Template:
        try:
            return (env or self.env).get_template(path.name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}",
                                path=exc.filename or path, line=exc.lineno,
                                hint=syntax_hint(exc.message or "", env or self.env)) from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {exc.name!r} not found", path=path,
                                hint="{% include %} and {% extends %} paths are relative to "
                                     "the template's folder") from exc
        except UnicodeDecodeError as exc:
            raise TemplateError("the template is not UTF-8 text", path=path,
                                hint="save it as UTF-8") from exc
        except OSError as exc:  # unreadable (its permissions), or a folder it includes
            raise TemplateError(f"cannot read the template: {exc.strerror or exc}",
                                path=exc.filename or path,
                                hint="make it a file you may read") from exc

    def _prepare_css(self) -> None:
        assert self.html is not None and self.html.filename is not None
        source = Path(self.html.filename).read_text(encoding="utf-8")
        others = css.uses_other_templates(source)
        if not others and not css.needs_inlining(source):
            return
        if others:  # a layout the page only fills: as one file
            flat = flatten(self.env, source)
            if flat is not None and css.needs_inlining(flat) and \
                    not css.uses_other_templates(flat):
                source = flat
        prepared = css.inline_template_once(source)
        if prepared.source is not None:
            try:
                self.fast_html = self._made_template(
                    "\x00inlined/" + Path(self.html.filename).name, prepared.source, self.env)
                return
            except jinja2.TemplateSyntaxError:  # not expected: the page is made as before
                pass
        self.pages = PageInliner(self.notices, self._image)  # inlined once for each shape

    def _made_template(self, name: str, source: str, env: jinja2.Environment
                       ) -> jinja2.Template:
        """A template made here rather than read from a folder: kept in the environment's
        own DictLoader (see make_environment), so that it can extend and include as the
        campaign's templates do. The name starts with NUL: no file can take it."""
        loader = self.env.loader
        assert isinstance(loader, jinja2.ChoiceLoader)
        dict_loader = loader.loaders[0]
        assert isinstance(dict_loader, jinja2.DictLoader)
        dict_loader.mapping[name] = source  # type: ignore[index]
        return env.get_template(name)

    def _prepare_markdown(self, markdown: Path, layout: Path | None) -> None:
        """The Markdown template and its layout, rendered with cell values as placeholders
        (see markdown_body), and the CommonMark converter."""
        self.placeholders = Placeholders()
        # a cache of its own: templates compiled for self.env must not be shared with it
        self.md_env = self.env.overlay(autoescape=True, cache_size=50,
                                       finalize=self.placeholders.finalize())
        self.md_pages = PageInliner(self.notices, self._image)
        self.markdown = self._load(markdown, self.md_env)
        self.layout = (self._load(layout, self.md_env) if layout is not None else
                       self._made_template("\x00layout/default.html", _default_layout(),
                                           self.md_env))
        self.converter = make_converter(self.campaign.line_breaks, self.placeholders)
        # the HTML of each source: with the values as placeholders, most rows share one
        self._md_html: SizedCache[str, str] = SizedCache(CACHE_BYTES // 8,
                                                         lambda html: 2 * len(html))

    # --- per row ----------------------------------------------------------------------------

    def context(self, row: Row) -> dict[str, Any]:
        """What the row's templates render over (see :func:`fill.row_context`). A cell that
        holds no usable value is undefined there: a template that uses it fails (and
        ``|default`` and ``is defined`` see it as missing)."""
        if row.bad:
            return row_context(self.env.globals, {**row.values, **{
                column: _BadCellValue(describe_bad_cell(cell)[0], name=column,
                                   exc=partial(BadCellUsed, column=column,  # type: ignore[arg-type]
                                               cell=cell))
                for column, cell in row.bad.items()}})
        return row_context(self.env.globals, row.values)

    def render(self, row: Row) -> Rendered | Suppressed:
        """Render one row, or say that its recipient is suppressed. Raises RowErrors with
        every problem found in it; a row that takes more than ROW_SECONDS is one."""
        if row.problem is not None:
            raise RowErrors(row.number, [row.problem])
        doing = ["subject"]  # the field being rendered, for a row that runs out of time
        try:
            with TimeBudget(ROW_SECONDS):
                return self._render(row, doing)
        except TooSlow as exc:
            error = self._template_error(row, exc, doing[0])
            self._slow_rows.append(row.number)
            if len(self._slow_rows) >= MAX_SLOW_ROWS:  # the template, not a row: stop here
                *first, last = self._slow_rows
                raise TemplateError(
                    f"rows {', '.join(map(str, first))} and {last} each took more than "
                    f"{ROW_SECONDS:g} s to render (a loop over a huge range, or loops inside "
                    "loops)", path=error.path, line=error.line,
                    hint="make the loops smaller; at this pace the sheet would take "
                         "hours") from None
            raise RowErrors(row.number, [error]) from None

    def _render(self, row: Row, doing: list[str]) -> Rendered | Suppressed:
        errors: list[MailmergeError] = []
        failed: set[str] = set()  # the keys whose errors are in ``errors``
        ctx = self.context(row)
        key_column = self.campaign.recipients.key
        if row.bad and key_column is not None and key_column in row.bad:  # the journal's key
            errors.append(self._cell_error(row, key_column, row.bad[key_column]))
        self.last_page = None

        def attempt(key: str, work: Callable[[], T], default: T) -> T:
            doing[0] = key
            try:
                return work()
            except (AddressProblem, AssetProblem, *_RUNTIME_ERRORS) as exc:
                failed.add(key)
                errors.append(self._error(row, key, exc))
            return default

        unsubscribe: tuple[str, ...] = tuple(attempt(
            "unsubscribe", lambda: self._render_unsubscribe(ctx, row), []))
        ctx["unsubscribe_url"] = next((u for u in unsubscribe if u.lower().startswith("http")),
                                      unsubscribe[0] if unsubscribe else "")
        addresses: dict[str, tuple[Address, ...]] = {  # the fields not set stay empty
            key: () if tpl is None else tuple(attempt(key, partial(tpl.render, ctx), []))
            for key, tpl in self.address_fields.items()}
        subject = attempt("subject", lambda: self._header_value(self.subject, ctx), "")
        if not subject and "subject" not in failed:
            errors.append(self._located(row, "the subject is empty", "subject",
                                        hint="give every message a subject"))
        headers = tuple((name, attempt("headers", partial(self._header_value, tpl, ctx), ""))
                        for name, tpl in self.headers)
        html: str | None = None
        images: list[Part] = []
        source: str | None = None  # a Markdown body's source, which is its text part
        no_html: tuple[str | None, list[Part]] = (None, [])
        if self.html is not None:
            html, images = attempt("html", partial(self._render_html, ctx, row), no_html)
        elif self.markdown is not None:
            self.placeholders.reset()
            body = attempt("markdown", partial(self._render_markdown, ctx), None)
            if body is not None:
                source = self.placeholders.raw(body[0])
                html, images = attempt("layout", partial(self._render_layout, ctx, subject,
                                                         body[1], row), no_html)
        if self.text is not None:
            text = attempt("text", partial(fill, self.text, ctx), None)
        elif self.markdown is not None:
            text = source
        else:
            text = attempt("text", lambda: html_to_text(html) if html else None, None)
        files: list[Path] = []
        for tpl, pattern in self.attachments:
            files += attempt("attachments", partial(self._render_attachment, tpl, pattern, ctx),
                             [])
        attachments: list[Part] = attempt("attachments", partial(self._read_attachments, files),
                                          []) if files else []

        if self.suppressed and not errors:
            kept = self._suppress(addresses, row)
            if isinstance(kept, Suppressed):
                return kept
            addresses = kept
        from_, sender = addresses["from"], addresses["sender"]
        if not errors:
            problem = self._check_addresses(addresses)
            if problem:
                errors.append(self._located(row, problem[1], problem[0], hint=problem[2]))
        if errors:
            raise RowErrors(row.number, errors)
        if self.signer is not None and not self._dkim_checked:
            self._dkim_checked = True
            author = (sender or from_)[0].domain.lower()
            if author != self.signer.domain and not author.endswith("." + self.signer.domain):
                self.notices.append(Notice.warning(
                    f"mail from {author} is signed for {self.signer.domain}: DMARC "
                    "needs the DKIM domain to match the From domain; sign with the From "
                    "domain (`dkim.domain`)"))
        if sender and len(from_) == 1 and sender[0].addr_spec.lower() == from_[0].addr_spec.lower():
            sender = ()
        recipients = addresses["to"] or addresses["cc"] or addresses["bcc"]
        key = str(row.values[key_column]) if key_column else address_key(recipients[0].addr_spec)
        return Rendered(
            row=row.number, key=key, from_=from_, sender=sender[0] if sender else None,
            reply_to=addresses["reply_to"], to=addresses["to"], cc=addresses["cc"],
            bcc=addresses["bcc"], subject=subject, text=text, html=html, images=tuple(images),
            return_path=addresses["return_path"][0] if addresses["return_path"] else None,
            attachments=tuple(attachments), headers=headers, unsubscribe=unsubscribe,
            list_id=self.campaign.list_id)

    def _suppress(self, addresses: dict[str, tuple[Address, ...]], row: Row
                  ) -> dict[str, tuple[Address, ...]] | Suppressed:
        """Leave suppressed addresses out of Cc and Bcc; a suppressed To skips the row."""
        def allowed(address: Address) -> bool:
            return address_key(address.addr_spec) not in self.suppressed

        kept = {**addresses, **{key: tuple(filter(allowed, addresses[key])) for key in ("cc", "bcc")}}
        recipients = kept["to"] + kept["cc"] + kept["bcc"]
        if not all(allowed(a) for a in kept["to"]) or not recipients:
            column = self.campaign.recipients.key
            first = (addresses["to"] + addresses["cc"] + addresses["bcc"])
            return Suppressed(row.number, str(row.values[column]) if column else
                              (address_key(first[0].addr_spec) if first else
                               f"row {row.number}"))
        return kept

    def _check_addresses(self, addresses: dict[str, tuple[Address, ...]]
                         ) -> tuple[str, str, str] | None:
        """The From/Sender rule of RFC 5322 3.6.2 and a recipient to send to."""
        from_, sender = addresses["from"], addresses["sender"]
        if not from_:
            return ("from", "`from` rendered empty", "every message needs a From address")
        if len(sender) > 1:
            return ("sender", "`sender` must be exactly one address", "remove the others")
        if len(addresses["return_path"]) > 1:
            return ("return_path", "`return_path` must be exactly one address",
                    "it is the envelope sender (MAIL FROM) bounces go to")
        if len(from_) > 1 and not sender:
            return ("from", "`from` holds several addresses, so RFC 5322 requires a Sender",
                    "add `sender:` with the one address that actually sends")
        if not (addresses["to"] or addresses["cc"] or addresses["bcc"]):
            return ("to", "the message has no recipient: `to`, `cc` and `bcc` are all empty",
                    "fill in the address cell, or remove the row")
        return None

    def _header_value(self, template: jinja2.Template, ctx: dict[str, Any]) -> str:
        value = fill(template, ctx).strip()
        if HEADER_CONTROL.search(value):
            raise AddressProblem("holds a line break or control character, which could inject "
                                 "header fields", source_value(ctx, value))
        if len(value) > MAX_HEADER_CHARS:
            raise AddressProblem(f"is {len(value):,} characters long; a header may hold at "
                                 f"most {MAX_HEADER_CHARS:,}", longest_value(ctx, value))
        return value

    def _render_unsubscribe(self, ctx: dict[str, Any], row: Row) -> list[str]:
        links = []
        for template in self.unsubscribe:
            url = self._header_value(template, ctx)
            if not url:
                continue
            if not re.match(r"^(https?|mailto):", url, re.I):
                raise AddressProblem(f"the unsubscribe link {url[:80]!r} must start with "
                                     "https://, http:// or mailto:", source_value(ctx, url))
            if URL_UNSAFE.search(url):
                raise AddressProblem(f"the unsubscribe link {url[:80]!r} holds spaces, quotes, "
                                     "commas or angle brackets; use {{ value|urlencode }}",
                                     source_value(ctx, url))
            links.append(url)
        return links

    def _render_html(self, ctx: dict[str, Any], row: Row) -> tuple[str | None, list[Part]]:
        assert self.html is not None
        if self.fast_html is not None and not self.inline_each:
            try:
                pieces = fill_pieces(self.fast_html, ctx)
            except _RUNTIME_ERRORS:
                self.html.render(ctx)  # the same error, with the real template line
                raise
            if self._verified < css.VERIFY_ROWS:
                self._verify("".join(pieces), ctx, row)
                if self.inline_each:
                    return _scanned(css.inline_css(self.html.render(ctx)), self._image)
            return self._scan_pieces(self.fast_html, pieces)
        if self.inline_each:
            html = self.html.render(ctx)
            return _scanned(css.inline_css(html) if css.needs_inlining(html) else html,
                            self._image)
        pieces = fill_pieces(self.html, ctx)
        if self.pages is not None:
            if not self.pages.learned:  # after a first render has loaded its includes
                self.pages.learn(template_text(self.env, self.html))
            page = self.pages.page(pieces, row.number)
            if isinstance(page, str):
                return _scanned(page, self._image)
            self.last_page = page
            return self._page(page)
        return self._scan_pieces(self.html, pieces)

    def _scan_pieces(self, template: jinja2.Template, pieces: list[str]
                     ) -> tuple[str, list[Part]]:
        """The page of a template's pieces, its images embedded, looked through by what the
        row changed (see pagescan) or whole."""
        scanner = self._scanners.get(template)
        if scanner is None:  # made after a first render has loaded its includes
            scanner = self._scanners[template] = PageScanner(
                template_text(self.env, template), self._image)
        page = self.last_page = scanner.make(pieces)
        if page is None:
            return _scanned("".join(pieces), self._image)
        return self._page(page)

    @staticmethod
    def _page(page: Page) -> tuple[str, list[Part]]:
        """A page looked through in pieces: refused for a script link that the
        prefilter's candidate turns out to be."""
        if page.unembedded is not None:
            refuse_script_links(page.unembedded, candidate=True)
        return page.html, page.images

    def _render_markdown(self, ctx: dict[str, Any]) -> tuple[str, str]:
        """The Markdown source and the HTML CommonMark makes of it, both with placeholders."""
        assert self.markdown is not None
        source = fill(self.markdown, ctx)
        html = self._md_html.get(source)
        if html is None:  # the same source on the rows of one shape: converted once
            html = self._md_html.put(source, self.converter.render(source))
        return source, fill_autolinks(html, self.placeholders, self.converter)

    def _render_layout(self, ctx: dict[str, Any], subject: str, body: str, row: Row
                       ) -> tuple[str | None, list[Part]]:
        """The layout around the body, its CSS inlined, then the values filled in."""
        assert self.layout is not None
        page = fill(self.layout, {**ctx, "content": Markup(body), "subject": subject})
        return _scanned(self.md_pages.html(page, self.placeholders, row.number), self._image)

    def _verify(self, fast: str, ctx: Mapping[str, Any], row: Row) -> None:
        """Compare once-per-campaign inlining with per-message inlining on a real row."""
        assert self.html is not None
        self._verified += 1
        if not css.agrees(fast, self.html.render(ctx)):
            self.inline_each = True
            self.notices.append(Notice.note(f"CSS is inlined in every message, not once: on row "
                                            f"{row.number} inlining the template once gave "
                                            "different HTML"))

    def _image(self, src: str) -> Part:
        part = self._images.get(src)  # the same logo on every row: resolved once
        if part is None:
            body = self.campaign.html_template or self.campaign.markdown_template
            assert body is not None
            folder = body.parent
            path = resolve_inside(folder, src, "image", allowed=(self.campaign.folder,))
            part = self._images.put(src, self.files.part(path, cid_domain=CID_DOMAIN))
        return part

    def _render_attachment(self, template: jinja2.Template, pattern: bool,
                           ctx: dict[str, Any]) -> list[Path]:
        """The files of one `attachments` entry: a path, or a glob where the entry's own
        text holds one (its values are names even then, see _literal_in_glob)."""
        value = fill(template, ctx).strip()
        if not value:
            return []
        try:
            if not pattern:
                return [resolve_inside(self.campaign.folder, value, "attachment")]
            return resolve_attachments(self.campaign.folder, value)
        except AssetProblem as exc:
            raise AssetProblem(str(exc)) from None

    def _read_attachments(self, paths: list[Path]) -> list[Part]:
        """The files, once their sizes (read from the folder, not the files) are within
        `max_attachment_size`: a 2 GB file is refused before it is read."""
        limit = self.campaign.max_attachment_size
        sizes = [path.stat().st_size for path in paths]
        if sum(sizes) > limit:
            largest = max(zip(sizes, paths, strict=True))
            raise AssetProblem(f"the attachments of this message hold {sum(sizes):,} bytes "
                               f"(the largest, {largest[1].name}, {largest[0]:,}); at most "
                               f"{limit:,} may go in one message (`max_attachment_size`)")
        return [self.files.part(path) for path in paths]

    # --- errors -----------------------------------------------------------------------------

    def _error(self, row: Row, key: str, exc: Exception) -> MailmergeError:
        """The row error for what ``key`` raised, located in the sheet, a template or the
        campaign file."""
        if isinstance(exc, AddressProblem):
            return self._address_error(row, key, exc)
        if isinstance(exc, AssetProblem):
            template = {"html": self.html, "layout": self.markdown,
                        "markdown": self.markdown}.get(key)
            if template is not None and template.filename:
                return RowError(str(exc), path=template.filename, row=row.number)
            return self._located(row, str(exc), key, hint=None)
        return self._template_error(row, exc, key)

    def _located(self, row: Row, message: str, key: str, hint: str | None) -> RowError:
        return RowError(f"`{key}`: {message}" if not message.startswith("`") else message,
                        path=self.campaign.path, line=self.campaign.line_of(key),
                        row=row.number, hint=hint)

    def _address_error(self, row: Row, key: str, exc: AddressProblem) -> RowError:
        column = column_of(row, exc.value) if exc.value is not None else None
        if column is not None:
            return RowError(f"`{key}`: {exc}", path=self.sheet_path, row=row.number,
                            column=column, hint=exc.hint or "correct the cell in the sheet")
        return RowError(f"`{key}`: {exc}", path=self.campaign.path,
                        line=self.campaign.line_of(key), row=row.number,
                        hint=exc.hint or "correct the campaign file or the sheet")

    def _template_names(self) -> list[str]:
        """The files in the folders of the campaign's templates (the first thousand)."""
        loader = self.env.loader
        assert isinstance(loader, jinja2.ChoiceLoader)
        folders = loader.loaders[1]
        assert isinstance(folders, jinja2.FileSystemLoader)
        names: list[str] = []
        for folder in folders.searchpath:
            try:
                names += [p.name for p in itertools.islice(Path(folder).iterdir(), 1000)
                          if p.is_file()]
            except OSError:
                continue
        return names

    def _loaded_files(self) -> set[str]:
        """The files of the templates loaded so far: those named, what they extend and
        include."""
        envs = [self.env, *([self.md_env] if self.markdown is not None else [])]
        return {t.filename for env in envs for t in (env.cache or {}).values()
                if isinstance(t, jinja2.Template) and t.filename}

    def _cell_error(self, row: Row, column: str, cell: BadCell) -> CellError:
        what, how = describe_bad_cell(cell)
        return CellError(what, path=self.sheet_path, row=row.number, column=column,
                         cell=cell.reference, hint=how)

    def _template_error(self, row: Row, exc: BaseException, key: str) -> MailmergeError:
        if isinstance(exc, BadCellUsed):
            return self._cell_error(row, exc.column, exc.cell)
        message = getattr(exc, "message", None) or str(exc)
        hint = None
        if isinstance(exc, UndefinedName):
            hint = (f"the sheet has no column {exc.name!r}"
                    f"{_nearest(exc.name, [c for c in self.columns if c])}; its columns are: "
                    + ", ".join(c for c in self.columns if c)
                    + ' (a column with spaces is row["Column Name"])')
        elif isinstance(exc, jinja2.UndefinedError) and (
                missing := _MISSING_KEY.fullmatch(message)) is not None:  # row["frist name"]
            near = _nearest(missing.group(1), [c for c in self.columns if c])
            hint = f"no such key{near}" if near else None  # the row's columns are near
        elif isinstance(exc, TypeError) and _numbers_as_text(row):
            hint = ("CSV cells are text: convert numbers with |int or |float, e.g. "
                    "{% if points|int > 1000 %}")
            message = f"{type(exc).__name__}: {message}"
        elif isinstance(exc, jinja2.TemplateNotFound):  # its message is the name alone
            message = (f"the template {exc.name!r} it includes or extends is not a file "
                       f"there{_nearest(str(exc.name), self._template_names())}")
            hint = "{% include %} and {% extends %} name a file in the template's folder"
        elif isinstance(exc, LinkedOut):
            hint = "keep the templates that are included or extended inside their folder"
        elif isinstance(exc, TooBig):
            hint = "a cell or a template asks for more than a message can hold"
        elif isinstance(exc, TooSlow):
            message = (f"rendering this row took more than {ROW_SECONDS:g} s (a loop over a "
                       "huge range, or loops inside loops)")
            hint = "make the loops smaller: each row must render within that time"
        elif isinstance(exc, RecursionError):
            message = "RecursionError: the template calls or includes itself without end"
            hint = "give the macro or {% include %} a condition that ends it"
        elif isinstance(exc, jinja2.exceptions.SecurityError):
            hint = "templates may not reach Python internals"
        else:
            message = f"{type(exc).__name__}: {message}" if not isinstance(
                exc, jinja2.TemplateError) else message
        if key == "--where":  # not in the campaign file
            return TemplateError(f"the --where option {self.campaign.where_option!r}: "
                                 f"{message}", row=row.number, hint=hint)
        template = {"html": self.html, "text": self.text, "markdown": self.markdown,
                    "layout": self.layout}.get(key)
        if template is not None and template.filename:
            where = _template_frame(exc, {template.filename, *self._loaded_files()})
            return TemplateError(message, path=where[0] if where else template.filename,
                                 line=where[1] if where else None, row=row.number, hint=hint)
        return TemplateError(f"`{key}`: {message}", path=self.campaign.path,
                             line=self.campaign.line_of(key), row=row.number, hint=hint)


_LONE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_EXAMPLE = "e.g. country == 'DE' and points|int > 100"


def explain_expression(expression: str, message: str,
                       env: jinja2.Environment) -> tuple[str, str]:
    """What is wrong with a `where` expression that does not compile (jinja2's
    ``message`` says it for a template, not for one expression), and how to fix it."""
    outside = _QUOTED.sub(lambda m: " " * len(m.group()), expression)
    equals = _LONE_EQUALS.search(outside)  # (a filter's argument may be name=value)
    if equals is not None and (message == "chunk after expression" or "got '='" in message):
        fixed = expression[:equals.start()] + "==" + expression[equals.end():]
        return "a single = does not compare", f"write == to compare: {fixed}"
    if message == "chunk after expression":
        return ("something follows where the expression ends",
                f"join conditions with and / or, {_EXAMPLE}")
    if "end of template" in message.lower():
        return ("the expression ends too soon (after an operator, or inside brackets or "
                "quotes)", f"complete it, {_EXAMPLE}")
    hint = syntax_hint(message, env)
    return message, (hint if hint != _NO_HINT else
                     f"write a condition on the sheet's columns, {_EXAMPLE}")


_BALANCE = "every {{ needs its }} and every {% its %}"
_NO_HINT = "see the template syntax of jinja2"
_CLOSE = "every {% if %} needs its {% endif %} and every {% for %} its {% endfor %}"
_SIDE_BY_SIDE = ("expected token 'end of print statement', got",
                 "expected token 'end of statement block', got")


def syntax_hint(message: str, env: jinja2.Environment) -> str:
    """How to fix the syntax error jinja2 describes in ``message``: the balance of the
    {{ }} and {% %} pairs only when that is what it found."""
    tag = re.fullmatch(r"Encountered unknown tag '(\w+)'\.(.*)", message, re.S)
    named = re.fullmatch(r"No (filter|test) named '([^']*)'\.?", message)
    if tag is not None and "looking for" in tag.group(2):
        return f"the blocks close in the wrong order: {_CLOSE}, the inner one first"
    if tag is not None and tag.group(1).startswith("end"):
        return f"no open block ends here: remove it, or open the block; {_CLOSE}"
    if tag is not None:
        return "no such tag" + _nearest(tag.group(1), _TAGS)
    if named is not None:
        known = env.filters if named.group(1) == "filter" else env.tests
        return f"jinja2 has no such {named.group(1)}" + _nearest(named.group(2), list(known))
    if "looking for the following tags" in message:
        return _CLOSE
    if "end of template" in message.lower() or message == "unexpected '}'":
        return _BALANCE
    if message.startswith(_SIDE_BY_SIDE):
        return ("two names stand side by side: a column whose name has a space is "
                'row["first name"], and texts are joined with ~')
    if message.startswith("unexpected '}', expected"):
        return "close the brackets that the expression opens before its }}"
    char = re.match(r"unexpected char '(.)'", message)
    if char is not None and char.group(1) in "'\"":
        return "a text in the expression needs its quotes on both sides"
    if char is not None:
        return f"{char.group(1)} has no meaning in an expression there"
    return _NO_HINT


_TAGS = ["if", "elif", "else", "for", "set", "macro", "call", "filter", "block", "extends",
         "include", "import", "from", "raw", "with", "autoescape", "break", "continue"]


_MISSING_KEY = re.compile(r"'dict object' has no attribute '(.+)'", re.S)


def _nearest(name: str, names: list[str]) -> str:
    """" (did you mean 'first_name'?)" for the names most like ``name`` (regardless of
    case; one that begins the other first), or nothing."""
    folded = {candidate.casefold(): candidate for candidate in names}
    key = name.casefold()
    close = [folded[c] for c in difflib.get_close_matches(key, folded, n=3)]
    close.sort(key=lambda c: not (key.startswith(c.casefold()) or c.casefold().startswith(key)))
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _default_layout() -> str:
    """The HTML around a Markdown body when the campaign names no `layout:`; read only
    for such a campaign, not at every start (importlib.resources with it)."""
    from importlib import resources

    return (resources.files("mailmerge") / "static/layout/layout.html").read_text("utf-8")


def _numbers_as_text(row: Row) -> bool:
    """Whether a cell holds a number as text (as every CSV cell does): comparing or adding
    it to a number is then the likely TypeError."""
    return any(isinstance(value, str) and _NUMBER.fullmatch(value.strip())
               for value in row.values.values())
