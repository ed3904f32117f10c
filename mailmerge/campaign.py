"""The campaign file: YAML in, a frozen :class:`Campaign` out.

``parse_campaign`` is pure (text in, value out); ``load_campaign`` adds the file I/O and
checks that the files the campaign names exist. Every error names the key and its line.
"""

from __future__ import annotations

import codecs
import difflib
import ipaddress
import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NoReturn, cast, get_args

from .errors import ConfigError
from .localfiles import MIB, read_bytes
from .yamlfile import Reader, load_yaml

# An address field is a template string ("{{ name }} <{{ email }}>") or a list of
# (display-name template, address template) pairs from the structured form.
AddressField = str | tuple[tuple[str, str], ...] | None

# How the connection is secured: not at all (a local relay), STARTTLS, or implicit TLS.
Security = Literal["none", "starttls", "ssl"]
SECURITY_MODES: tuple[Security, ...] = get_args(Security)
# How SMTP logs in: a password, or an OAuth2 token (XOAUTH2) from a command.
Auth = Literal["password", "xoauth2"]
AUTH_MODES: tuple[Auth, ...] = get_args(Auth)

# Headers the builder owns: a campaign may not set them through `headers:`.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID",
        "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
        "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Return-Path", "Received",
        "DKIM-Signature",
    )
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
MAX_HEADER_NAME = 64
MAX_CAMPAIGN_FILE = 1 * MIB


@dataclass(frozen=True)
class Recipients:
    """Where the rows come from."""

    path: Path
    sheet: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Smtp:
    """How to reach the SMTP server. The password is never here: only the variable naming it."""

    host: str = "localhost"
    port: int | None = None
    security: Security = "starttls"
    username: str | None = None
    password_env: str = "MAILMERGE_SMTP_PASSWORD"
    ca_file: Path | None = None
    timeout: float = 30.0
    concurrency: int = 1
    rate: str | None = None
    retries: int = 5
    retry_delay: float = 60.0
    retry_for: float = 1800.0
    auth: Auth = "password"
    token_command: str | None = None

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"ssl": 465, "starttls": 587}.get(self.security, 25)


@dataclass(frozen=True)
class Imap:
    """The mailbox of the sending account: where a copy of each sent message is kept
    (``copy``: IMAP APPEND to ``folder``), and where an accepted message is bound to
    appear (``lookup``), which settles recipients a run left uncertain."""

    host: str
    username: str
    port: int | None = None
    security: Security = "ssl"
    password_env: str = "MAILMERGE_IMAP_PASSWORD"
    folder: str = "Sent"
    ca_file: Path | None = None
    timeout: float = 30.0
    copy: bool = True
    lookup: tuple[str, ...] = ()
    lookup_wait: float = 60.0
    drafts: str = "Drafts"  # where `mailmerge drafts` stores the messages

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security == "ssl" else 143


After = Literal["keep", "delete", "move"]
AFTER_MODES: tuple[After, ...] = get_args(After)


@dataclass(frozen=True)
class Bounces:
    """The mailbox bounces and complaints come back to, and what to do with them."""

    host: str
    username: str
    protocol: Literal["imap", "pop3"] = "imap"
    port: int | None = None
    security: Security = "ssl"
    password_env: str = "MAILMERGE_BOUNCES_PASSWORD"
    folder: str = "INBOX"
    ca_file: Path | None = None
    timeout: float = 30.0
    after: After = "keep"  # what becomes of a report once recorded
    move_to: str = "Processed"
    suppress_to: Path | None = None  # the file bounced and complaining addresses go to
    soft_limit: int = 3  # soft bounces (across runs) after which an address is suppressed

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        if self.protocol == "pop3":
            return 995 if self.security == "ssl" else 110
        return 993 if self.security == "ssl" else 143


@dataclass(frozen=True)
class Dkim:
    """How to sign: the signing domain (d=), the selector (s=) and the private key file."""

    domain: str
    selector: str
    key_file: Path


@dataclass(frozen=True)
class Campaign:
    """Everything one campaign file says, with paths resolved against its folder."""

    path: Path
    name: str
    from_: AddressField
    subject: str
    recipients: Recipients
    html_template: Path | None = None
    text_template: Path | None = None
    markdown_template: Path | None = None  # the body as Markdown, instead of html_template
    layout_template: Path | None = None  # the HTML around a Markdown body (None: the default)
    line_breaks: bool = False  # in Markdown, a single newline is a line break
    to: AddressField = "{{ email }}"
    sender: AddressField = None
    reply_to: AddressField = None
    cc: AddressField = None
    bcc: AddressField = None
    attachments: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    unsubscribe: tuple[str, ...] = ()
    list_id: str | None = None
    transactional: bool = False
    max_attachment_size: int = 25_000_000  # bytes, all of one message's attachments
    suppress: tuple[Path, ...] = ()
    dkim: Dkim | None = None
    imap: Imap | None = None
    bounces: Bounces | None = None
    return_path: str | None = None  # templated envelope sender (MAIL FROM), e.g. VERP
    smtp: Smtp = field(default_factory=Smtp)
    journal: Path | None = None
    where: str | None = None
    rows: frozenset[int] = frozenset()  # only these sheet rows (`--row`); empty: every row
    where_option: str | None = None  # --where of the command line: its errors blame it
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def templates(self) -> list[Path]:
        """The template files the campaign file names (HTML, text, Markdown, layout)."""
        return [t for t in (self.html_template, self.text_template, self.markdown_template,
                            self.layout_template) if t is not None]

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key)


_TOP_KEYS = {
    "name", "from", "sender", "reply_to", "to", "cc", "bcc", "subject", "templates",
    "recipients", "attachments", "headers", "unsubscribe", "smtp", "journal", "where",
    "list_id", "transactional", "suppress", "dkim", "imap", "max_attachment_size",
    "bounces", "return_path",
}
_TEMPLATE_KEYS = {"html", "text", "markdown", "layout", "line_breaks"}
_RECIPIENT_KEYS = {"path", "sheet", "encoding", "delimiter", "key"}
_SMTP_KEYS = {
    "host", "port", "security", "username", "password_env", "ca_file", "timeout",
    "concurrency", "rate", "retries", "retry_delay", "retry_for", "auth", "token_command",
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(second|sec|s|minute|min|m|hour|h)\s*$", re.I)
_PER = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "h": 3600}


def parse_rate(text: str | None) -> float | None:
    """Seconds between messages for a rate such as ``20/second`` or ``600/minute``."""
    if not text:
        return None
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r} is not like 20/second, 600/minute or 10000/hour")
    return _PER[match.group(2).lower()] / float(match.group(1))



# Resolves a path written in the campaign file against the campaign's folder.
Local = Callable[[str], Path]


def _missing(reader: Reader, key: str) -> NoReturn:
    raise reader.error(None, f"missing required key `{key}`",
                       f"add `{key}:` to the campaign file")


def _address_field(reader: Reader, key: str, default: AddressField = None) -> AddressField:
    value = reader.get(key, (str, dict, list))
    if value is None:
        return default
    if isinstance(value, str):
        return value
    items = value if isinstance(value, list) else [value]
    pairs = []
    for item in items:
        if not isinstance(item, dict) or "address" not in item or not set(item) <= {"name", "address"}:
            raise reader.error(key, f"`{key}` entries must be text or {{name: ..., address: ...}}",
                               'write e.g. `to: {name: "{{ name }}", address: "{{ email }}"}`')
        pairs.append((str(item.get("name") or ""), str(item["address"])))
    return tuple(pairs)


def _paths(top: Reader, key: str) -> list[str]:
    value = top.get(key, (str, list), default=[])
    paths = [value] if isinstance(value, str) else value
    if not all(isinstance(p, str) and p.strip() for p in paths):
        raise top.error(key, f"`{key}` must be a file name or a list of them")
    return paths


def _security(reader: Reader, section: str, default: Security) -> Security:
    """The `security:` key of `smtp:` or `imap:`."""
    security = reader.get("security", str, default=default)
    if security not in SECURITY_MODES:
        raise reader.error("security", f"`{section}.security` must be one of "
                                       f"{', '.join(SECURITY_MODES)}, not {security!r}")
    return cast(Security, security)


def _endpoint(reader: Reader, section: str, host: str, port: int | None,
              timeout: float) -> None:
    """Host, port and timeout of `smtp:` or `imap:` that a connection can use at all."""
    if not host.strip() or any(c.isspace() or ord(c) < 32 for c in host):
        raise reader.error("host", f"`{section}.host` {host!r} is not a host name",
                           "write e.g. `host: mail.acme.example`")
    if port is not None and not 1 <= port <= 65535:
        raise reader.error("port", f"`{section}.port` must be from 1 to 65535, not {port}")
    if not 0 < timeout <= 3600:  # also refuses nan
        raise reader.error("timeout", f"`{section}.timeout` must be more than 0 and at most "
                                      f"3600 seconds, not {timeout!r}")


def _no_clear_login(reader: Reader, section: str, host: str, security: Security) -> None:
    """A mailbox login goes encrypted, but to a server on this machine."""
    if security == "none" and not _loopback(host):
        raise reader.error("security", f"`{section}.security: none` would send the login to "
                                       f"{host} unencrypted",
                           "use `security: ssl` or `starttls`; `none` is only for a server on "
                           "this machine (localhost, 127.0.0.1, ::1)")


_PLACEHOLDER_SUFFIXES = (".test", ".invalid", ".localhost", ".example.com", ".example.org",
                         ".example.net")
_PLACEHOLDER = re.compile(r"example\.[a-z]{2,}(\.[a-z]{2})?")


# Names the classic tool's sample files and most tutorials put where the user's own go
_SAMPLE_NAMES = ("mydomain.com", "yourdomain.com", "bobdomain.com")
_SAMPLE_USER = re.compile(r"(?i)your[_ ]?\w*[_ ]?here|changeme|username")


def placeholder_user(name: str) -> bool:
    """Whether a login name is a sample's placeholder left in (YOUR_USERNAME_HERE)."""
    return _SAMPLE_USER.fullmatch(name.strip()) is not None


def placeholder_name(host: str) -> bool:
    """Whether ``host`` is a name reserved for examples and tests (RFC 2606, RFC 6761:
    example.com, .org and .net and their subdomains, .test, .invalid, .localhost) or
    looks like one (example.de). The .example top-level domain is left out: it is what
    examples, the shipped campaigns among them, write for a fictional company
    (acme.example), and no one takes it for their own."""
    host = host.lower().rstrip(".")
    return (host.endswith(_PLACEHOLDER_SUFFIXES) or _PLACEHOLDER.fullmatch(host) is not None
            or host.endswith(_SAMPLE_NAMES))


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine, as written (no name is looked up here)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _imap(top: Reader, local: Local) -> Imap | None:
    reader = top.sub("imap")
    if reader is None:
        return None
    reader.check_keys({"host", "port", "security", "username", "password_env", "folder",
                       "ca_file", "timeout", "copy", "lookup", "lookup_wait", "drafts"})
    security = _security(reader, "imap", "ssl")
    ca_file = reader.get("ca_file", str)
    lookup = reader.get("lookup", (str, list), default=[])
    folders = [lookup] if isinstance(lookup, str) else lookup
    if not all(isinstance(f, str) and f.strip() for f in folders):
        raise reader.error("lookup", "`imap.lookup` must be a folder name or a list of them",
                           'e.g. `lookup: Sent`, `lookup: "[Gmail]/Sent Mail"` or '
                           "`lookup: [INBOX, Archive]`")
    lookup_wait = reader.get("lookup_wait", float, default=60.0)
    if not 0 <= lookup_wait <= 3600:
        raise reader.error("lookup_wait", "`imap.lookup_wait` must be from 0 to 3600 seconds")
    imap = Imap(host=reader.get("host", str, required=True),
                username=reader.get("username", str, required=True),
                port=reader.get("port", int), security=security,
                password_env=reader.get("password_env", str, default="MAILMERGE_IMAP_PASSWORD"),
                folder=reader.get("folder", str, default="Sent"),
                ca_file=local(ca_file) if ca_file else None,
                timeout=reader.get("timeout", float, default=30.0),
                copy=reader.get("copy", bool, default=True),
                lookup=tuple(f.strip() for f in folders),
                lookup_wait=lookup_wait,
                drafts=reader.get("drafts", str, default="Drafts").strip() or "Drafts")
    _endpoint(reader, "imap", imap.host, imap.port, imap.timeout)
    _no_clear_login(reader, "imap", imap.host, imap.security)
    if not imap.copy and not imap.lookup and "drafts" not in reader.data:
        raise reader.error(None, "`imap:` with `copy: false` and no `lookup:` does nothing",
                           "add `lookup:` (the folder where sent mail appears) or `drafts:` "
                           "(for `mailmerge drafts`), or remove `imap:`")
    return imap


def _bounces(top: Reader, local: Local, name: str) -> Bounces | None:
    reader = top.sub("bounces")
    if reader is None:
        return None
    reader.check_keys({"protocol", "host", "port", "security", "username", "password_env",
                       "folder", "ca_file", "timeout", "after", "move_to", "suppress_to",
                       "soft_limit"})
    protocol = reader.get("protocol", str, default="imap")
    if protocol not in ("imap", "pop3"):
        raise reader.error("protocol", f"`bounces.protocol` must be imap or pop3, not "
                                       f"{protocol!r}")
    after = reader.get("after", str, default="keep")
    if after not in AFTER_MODES:
        raise reader.error("after", f"`bounces.after` must be keep, delete or move, not "
                                    f"{after!r}",
                           "`move` moves each recorded report to `move_to` (IMAP only)")
    if after == "move" and protocol == "pop3":
        raise reader.error("after", "POP3 has no folders to move a report to",
                           "use `after: delete` or `keep` with POP3, or read over IMAP")
    soft_limit = reader.get("soft_limit", int, default=3)
    if not 1 <= soft_limit <= 100:
        raise reader.error("soft_limit", "`bounces.soft_limit` must be from 1 to 100")
    ca_file = reader.get("ca_file", str)
    suppress_to = reader.get("suppress_to", str, default=f"{name}.bounced.txt")
    bounces = Bounces(
        host=reader.get("host", str, required=True),
        username=reader.get("username", str, required=True),
        protocol=cast(Literal["imap", "pop3"], protocol),
        port=reader.get("port", int), security=_security(reader, "bounces", "ssl"),
        password_env=reader.get("password_env", str, default="MAILMERGE_BOUNCES_PASSWORD"),
        folder=reader.get("folder", str, default="INBOX"),
        ca_file=local(ca_file) if ca_file else None,
        timeout=reader.get("timeout", float, default=30.0),
        after=cast(After, after), move_to=reader.get("move_to", str, default="Processed"),
        suppress_to=local(suppress_to), soft_limit=soft_limit)
    _endpoint(reader, "bounces", bounces.host, bounces.port, bounces.timeout)
    _no_clear_login(reader, "bounces", bounces.host, bounces.security)
    return bounces


def _return_path(top: Reader) -> str | None:
    value: str | None = top.get("return_path", str)
    if value is not None and not value.strip():
        raise top.error("return_path", "`return_path` is empty",
                        'write e.g. `return_path: "bounces+{{ token }}@acme.example"`, or '
                        "remove it to use the From (or Sender) address")
    return value


def _dkim(top: Reader, local: Local) -> Dkim | None:
    reader = top.sub("dkim")
    if reader is None:
        return None
    reader.check_keys({"domain", "selector", "key_file"})
    domain = reader.get("domain", str, required=True)
    selector = reader.get("selector", str, required=True)
    for key, value in (("domain", domain), ("selector", selector)):
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*",
                            value):
            raise reader.error(key, f"`dkim.{key}` {value!r} is not a DNS name")
    return Dkim(domain.lower(), selector, local(reader.get("key_file", str, required=True)))


# text codecs that encode names or escapes, not files
_NOT_FILE_ENCODINGS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape",
                                 "undefined"})
DEFAULT_MAX_ATTACHMENTS = 25_000_000  # 25 MB, the limit of the large providers
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*", re.I)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
          "gib": 2**30}


def _size(top: Reader, key: str, default: int) -> int:
    """A size in bytes, written as a number of bytes or with a unit: `10MB`, `512 KiB`."""
    value = top.get(key, (int, str), default=default)
    match = _SIZE.fullmatch(str(value))
    if isinstance(value, bool) or match is None:
        raise top.error(key, f"`{key}` {value!r} is not a size", "write e.g. `10MB` or `512KiB`")
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if size < 1:
        raise top.error(key, f"`{key}` must be at least one byte")
    return size


def _unsubscribe(top: Reader) -> tuple[str, ...]:
    value = top.get("unsubscribe", (str, list), default=[])
    links = [value] if isinstance(value, str) else value
    if not all(isinstance(link, str) and link.strip() for link in links) or len(links) > 2:
        raise top.error("unsubscribe", "`unsubscribe` must be a link, or a list of an https "
                                       "link and a mailto: link",
                        'write e.g. `unsubscribe: ["https://acme.example/u/{{ token }}", '
                        '"mailto:unsubscribe@acme.example?subject={{ token }}"]`')
    return tuple(links)


def _list_id(top: Reader) -> str | None:
    value = top.get("list_id", str)
    if value is None:
        return None
    match = re.fullmatch(r"\s*(?:(.*?)\s*<([^<>\s]+)>|([^<>\s]+))\s*", value)
    list_id = match and (match.group(2) or match.group(3))
    if not list_id or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+",
                                       list_id):
        raise top.error("list_id", f"`list_id` {value!r} is not like "
                                   "\"Acme News <news.acme.example>\" (RFC 2919)",
                        "use a dotted name under a domain you own")
    assert match is not None
    phrase = (match.group(1) or "").strip()
    return f"{phrase} <{list_id}>" if phrase else f"<{list_id}>"


def parse_campaign(text: str, path: Path) -> Campaign:
    """Parse campaign YAML ``text`` read from ``path``. Raises ConfigError naming key and line."""
    data = load_yaml(text, path)
    top = Reader(data, path, "", None)
    top.check_keys(_TOP_KEYS)
    folder = path.parent

    def local(relative: str) -> Path:
        return Path(os.path.normpath(folder / relative))

    name = top.get("name", str, required=True)
    if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
        raise top.error("name", f"`name` {name!r} may hold only letters, digits, '.', '_' and "
                                "'-', and may not start with '.'",
                        "it names the output folder and the journal")
    templates = _templates(top)
    # in this order, so that of several mistakes the same one is reported first
    recipients, attachments, headers, smtp = (_recipients(top, local), _attachments(top),
                                              _headers(top), _smtp(top, local))
    return Campaign(
        path=path,
        name=name,
        from_=_address_field(top, "from") or _missing(top, "from"),
        sender=_address_field(top, "sender"),
        reply_to=_address_field(top, "reply_to"),
        to=_address_field(top, "to", default="{{ email }}"),
        cc=_address_field(top, "cc"),
        bcc=_address_field(top, "bcc"),
        subject=top.get("subject", str, required=True),
        html_template=local(templates.html) if templates.html else None,
        text_template=local(templates.text) if templates.text else None,
        markdown_template=local(templates.markdown) if templates.markdown else None,
        layout_template=local(templates.layout) if templates.layout else None,
        line_breaks=templates.line_breaks,
        recipients=recipients,
        attachments=attachments,
        headers=headers,
        unsubscribe=_unsubscribe(top),
        list_id=_list_id(top),
        transactional=top.get("transactional", bool, default=False),
        max_attachment_size=_size(top, "max_attachment_size", DEFAULT_MAX_ATTACHMENTS),
        suppress=tuple(local(p) for p in _paths(top, "suppress")),
        dkim=_dkim(top, local),
        imap=_imap(top, local),
        bounces=_bounces(top, local, name),
        return_path=_return_path(top),
        smtp=smtp,
        journal=local(journal) if (journal := top.get("journal", str)) else None,
        where=top.get("where", str),
        lines=dict(data.lines),
    )


@dataclass(frozen=True)
class _Templates:
    html: str | None
    text: str | None
    markdown: str | None
    layout: str | None
    line_breaks: bool


def _templates(top: Reader) -> _Templates:
    """The template paths as written: HTML or Markdown, text, or both."""
    templates = top.sub("templates")
    if templates is None:
        raise top.error(None, "missing required key `templates`",
                        "add `templates: {html: ..., text: ...}` (at least one of them), "
                        "or `templates: {markdown: ...}`")
    templates.check_keys(_TEMPLATE_KEYS)
    found = _Templates(templates.get("html", str), templates.get("text", str),
                       templates.get("markdown", str), templates.get("layout", str),
                       templates.get("line_breaks", bool, default=False))
    if found.html and found.markdown:
        raise top.error("templates", "`templates` has both `html:` and `markdown:`",
                        "a Markdown body becomes the HTML part: keep one of them, and put "
                        "the HTML around the Markdown in `layout:`")
    if found.layout and not found.markdown:
        raise top.error("templates", "`templates.layout` places a Markdown body, but there "
                                     "is no `markdown:`",
                        "add `markdown: body.md`, or drop `layout:` and use `html:`")
    if found.line_breaks and not found.markdown:
        raise top.error("templates", "`templates.line_breaks` applies to a Markdown body, "
                                     "and there is no `markdown:`", "drop it")
    if not (found.html or found.text or found.markdown):
        raise top.error("templates", "`templates` needs `html:`, `markdown:` or `text:`",
                        "HTML or Markdown with a text part, or text alone")
    return found


def _recipients(top: Reader, local: Local) -> Recipients:
    raw = top.get("recipients", (str, dict), required=True)
    if isinstance(raw, str):
        return Recipients(path=local(raw))
    rec = Reader(raw, top.path, "recipients.", top.data.lines.get("recipients"))
    rec.check_keys(_RECIPIENT_KEYS)
    delimiter = rec.get("delimiter", str)
    if delimiter is not None:
        delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise rec.error("delimiter", f"`recipients.delimiter` must be one character, "
                                         f"not {delimiter!r}", 'use ",", ";" or "tab"')
    encoding = rec.get("encoding", str)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
            "".encode(encoding)  # LookupError for a codec that is not a text encoding
        except LookupError:
            raise rec.error("encoding", f"unknown encoding {encoding!r}",
                            "use a name such as utf-8, latin-1, cp1252 or gbk") from None
        if codecs.lookup(encoding).name in _NOT_FILE_ENCODINGS:
            raise rec.error("encoding", f"{encoding!r} is not an encoding a sheet is saved in",
                            "use a name such as utf-8, latin-1, cp1252 or gbk")
    return Recipients(path=local(rec.get("path", str, required=True)),
                      sheet=rec.get("sheet", str), encoding=encoding, delimiter=delimiter,
                      key=rec.get("key", str))


def _attachments(top: Reader) -> tuple[str, ...]:
    attachments = top.get("attachments", (list, str), default=[])
    if isinstance(attachments, str):
        attachments = [attachments]
    for item in attachments:
        if not isinstance(item, str):
            raise top.error("attachments", f"each entry of `attachments` must be a text path, "
                                           f"not {item!r}")
        if not item.strip():
            raise top.error("attachments", "`attachments` has an empty entry, which names no "
                                           "file", "remove it (an entry such as \"{{ file }}\" "
                                                   "whose cell is empty attaches nothing)")
    return tuple(attachments)


def _headers(top: Reader) -> tuple[tuple[str, str], ...]:
    headers = top.sub("headers")
    if headers is None:
        return ()
    items: list[tuple[str, str]] = []
    for key in headers.data:
        name = str(key)
        if not _HEADER_NAME.match(name):
            raise headers.error(key, f"{name!r} is not a valid header name",
                                "use printable ASCII letters, digits and '-'")
        if len(name) > MAX_HEADER_NAME:  # "Name: " and a word must fit on the first line
            raise headers.error(key, f"the header name {name[:40]!r}... is {len(name):,} "
                                     f"characters long; at most {MAX_HEADER_NAME}",
                                "use a short name such as X-Campaign")
        if name.lower() in RESERVED_HEADERS:
            raise headers.error(key, f"header {name!r} is set by mailmerge itself",
                                "use the campaign key for it (from, to, subject, "
                                "unsubscribe ...) instead of `headers:`")
        items.append((name, headers.get(key, str, default="")))
    return tuple(items)


def _smtp(top: Reader, local: Local) -> Smtp:
    reader = top.sub("smtp")
    if reader is None:
        return Smtp()
    reader.check_keys(_SMTP_KEYS)
    security = _security(reader, "smtp", "starttls")
    ca_file = reader.get("ca_file", str)
    smtp = Smtp(
        host=reader.get("host", str, default="localhost"),
        port=reader.get("port", int),
        security=security,
        username=reader.get("username", str),
        password_env=reader.get("password_env", str, default="MAILMERGE_SMTP_PASSWORD"),
        ca_file=local(ca_file) if ca_file else None,
        timeout=reader.get("timeout", float, default=30.0),
        concurrency=reader.get("concurrency", int, default=1),
        rate=reader.get("rate", str),
        retries=reader.get("retries", int, default=5),
        retry_delay=reader.get("retry_delay", float, default=60.0),
        retry_for=reader.get("retry_for", float, default=1800.0),
        auth=cast(Auth, reader.get("auth", str, default="password")),
        token_command=reader.get("token_command", str),
    )
    _endpoint(reader, "smtp", smtp.host, smtp.port, smtp.timeout)
    if smtp.security == "none" and smtp.username and not _loopback(smtp.host):
        raise reader.error("security", f"`smtp.security: none` with `username` would send the "
                                       f"login to {smtp.host} unencrypted",
                           "use `security: starttls` or `ssl`; `none` with a login is only "
                           "for a relay on this machine (localhost, 127.0.0.1, ::1)")
    if smtp.auth not in AUTH_MODES:
        raise reader.error("auth", f"`smtp.auth` must be password or xoauth2, not "
                                   f"{smtp.auth!r}")
    if smtp.auth == "xoauth2" and not (smtp.username and smtp.token_command):
        raise reader.error("auth", "`smtp.auth: xoauth2` needs `username` and `token_command`",
                           'e.g. token_command: "gcloud auth print-access-token"')
    if smtp.concurrency < 1 or smtp.concurrency > 32:
        raise reader.error("concurrency", "`smtp.concurrency` must be from 1 to 32")
    if smtp.retries < 0:
        raise reader.error("retries", "`smtp.retries` must be 0 or more")
    try:
        parse_rate(smtp.rate)
    except ValueError as exc:
        raise reader.error("rate", str(exc), "write e.g. `rate: 20/second`") from None
    return smtp


def where_expression(text: str) -> str:
    """The Jinja expression of a `where:` filter; ``{{ ... }}`` around it is optional."""
    text = text.strip()
    match = re.fullmatch(r"\{\{(.*)\}\}", text, re.S)
    return (match.group(1) if match else text).strip()


def with_where(campaign: Campaign, extra: str | None) -> Campaign:
    """The campaign with ``extra`` (the --where option) as a filter besides its `where:`;
    kept apart, so that a mistake in it is said to be the option's."""
    if not extra:
        return campaign
    parts = [where_expression(w) for w in (campaign.where_option, extra) if w]
    return replace(campaign, where_option=" and ".join(f"({p})" for p in parts)
                   if len(parts) > 1 else parts[0])


def with_rows(campaign: Campaign, rows: Iterable[int]) -> Campaign:
    """The campaign narrowed to the sheet rows numbered ``rows`` (from the command line's
    ``--row``); no rows leaves it as it is."""
    wanted = frozenset(rows)
    return replace(campaign, rows=wanted) if wanted else campaign


def load_campaign(path: str | Path) -> Campaign:
    """Read and parse the campaign file, and check that the files it names exist."""
    path = Path(path)
    try:
        text = read_bytes(path, MAX_CAMPAIGN_FILE).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("campaign file not found", path=path,
                          hint="check the path, or create one with a text editor") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"campaign file is not UTF-8 text ({exc.reason})", path=path,
                          hint="save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read campaign file: {exc.strerror}", path=path) from exc
    campaign = parse_campaign(text, path)
    for key, target, kinds in (("templates", campaign.html_template, _TEMPLATE_FILES),
                               ("templates", campaign.text_template, _TEMPLATE_FILES),
                               ("templates", campaign.markdown_template, _TEMPLATE_FILES),
                               ("templates", campaign.layout_template, _TEMPLATE_FILES),
                               ("recipients", campaign.recipients.path, _SHEET_FILES),
                               ("smtp.ca_file", campaign.smtp.ca_file, (".pem", ".crt"))):
        if target is not None and not target.is_file():
            raise _not_a_file(campaign, key, target, kinds)
    return campaign


_TEMPLATE_FILES = (".html", ".htm", ".txt", ".md", ".markdown")
_SHEET_FILES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm")
_LOOKED_AT = 1000  # names of a folder looked through for a suggestion


def _not_a_file(campaign: Campaign, key: str, target: Path,
                kinds: tuple[str, ...]) -> ConfigError:
    """Why a path the campaign names is not a file to read: a folder, a FIFO or device,
    or nothing there (with the nearest names that are there)."""
    if target.is_dir():
        inside = _names(target, kinds)
        what, hint = "is a folder, not a file", (
            "name a file in it, e.g. " + ", ".join(f"{target.name}/{n}" for n in inside[:3])
            if inside else "name the file itself, not its folder")
    elif target.exists():
        what, hint = "is not a regular file (a FIFO or a device)", "name a file saved on disk"
    else:
        close = difflib.get_close_matches(target.name, _names(target.parent, ()), n=3)
        what = "does not exist"
        hint = (f"did you mean {' or '.join(close)}? " if close else "") + \
            "paths are relative to the campaign file's folder"
    return ConfigError(f"`{key}` names {target}, which {what}", path=campaign.path,
                       line=campaign.line_of(key.partition(".")[0]), hint=hint)


def _names(folder: Path, kinds: tuple[str, ...]) -> list[str]:
    """The names of the files in ``folder`` (those ending in one of ``kinds``, when given),
    sorted; none when it cannot be read."""
    try:
        entries = list(itertools.islice(folder.iterdir(), _LOOKED_AT))
    except OSError:
        return []
    return sorted(entry.name for entry in entries
                  if (not kinds or entry.suffix.lower() in kinds) and entry.is_file())
