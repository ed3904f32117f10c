"""Address fields rendered so that sheet data can never change the shape of a header.

A value from the sheet that lands in a display name stays one display name, whatever
commas, quotes or angle brackets it holds: the template is rendered with each ``{{ }}``
output replaced by an opaque token, the template's own structure (commas, ``<>``, quotes)
is parsed, and only then are the values put back. A cell that is the whole item
(``cc: "{{ cc }}"``) may itself be an address list.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.headerregistry import Address
from typing import Any, NamedTuple

import jinja2
from email_validator import EmailNotValidError, validate_email

from .campaign import AddressField
from .fill import fill

_TOKEN = re.compile("\ue000(\\d+)\ue001")
# C0 and C1 controls and Unicode line separators (CR, LF, NEL, U+2028 all end a header
# line somewhere), and the bidirectional overrides that can disguise an address or a
# subject. Tab is allowed.
HEADER_CONTROL = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class AddressProblem(ValueError):
    """An address that is not valid; ``value`` is the offending sheet value, when one is;
    ``hint`` how to fix it, when the mistake is a known one."""

    def __init__(self, message: str, value: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.value = value
        self.hint = hint


@jinja2.pass_context
def _tokenize(context: jinja2.runtime.Context, value: Any) -> str:
    values: list[str] = context["_mm_values"]
    values.append("" if value is None else str(value))
    return f"\ue000{len(values) - 1}\ue001"


def make_address_environment(base: jinja2.Environment) -> jinja2.Environment:
    """A copy of ``base`` whose ``{{ }}`` outputs become tokens (see module docstring)."""
    return base.overlay(finalize=_tokenize, autoescape=False)


@dataclass(frozen=True)
class AddressTemplate:
    """One compiled address field (`to`, `cc` ...)."""

    key: str
    template: jinja2.Template | None = None
    pairs: tuple[tuple[jinja2.Template, jinja2.Template], ...] = ()
    constant: tuple[Address, ...] | None = None  # a field without Jinja, parsed once

    def render(self, context: dict[str, Any]) -> list[Address]:
        """Render and parse the field over a row's context (see :func:`fill.row_context`).
        Raises AddressProblem for a bad address."""
        if self.constant is not None:
            return list(self.constant)
        if self.template is not None:
            values: list[str] = []
            text = fill(self.template, {**context, "_mm_values": values})
            return parse_address_list(text, values)
        result = []
        for name_t, addr_t in self.pairs:
            name = fill(name_t, context).strip()
            addr = fill(addr_t, context).strip()
            if addr:
                result.append(make_address(_check_text(name, name), addr, addr))
        return result


def compile_address_field(key: str, value: AddressField, token_env: jinja2.Environment,
                          plain_env: jinja2.Environment) -> AddressTemplate | None:
    """Compile one address field; None when the campaign does not set it."""
    if value is None:
        return None
    if isinstance(value, str):
        constant = None
        if not any(mark in value for mark in ("{{", "{%", "{#")):
            try:
                constant = tuple(parse_address_list(value))
            except AddressProblem:
                pass  # reported on every row, where the row's problems are listed
        return AddressTemplate(key, template=token_env.from_string(value), constant=constant)
    return AddressTemplate(key, pairs=tuple(
        (plain_env.from_string(name), plain_env.from_string(addr)) for name, addr in value))


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are outside double quotes and angle brackets."""
    if "," not in text:  # one address, as in most fields: nothing to split
        return [text]
    items: list[str] = []
    current: list[str] = []
    quoted, angle, escaped = False, 0, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            angle += 1
        elif not quoted and char == ">" and angle:
            angle -= 1
        elif char == "," and not quoted and not angle:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


MAX_NAME_CHARS = 1000


def _check_text(text: str, source: str | None) -> str:
    if HEADER_CONTROL.search(text):
        raise AddressProblem("holds a line break or control character, which could inject "
                             "header fields", source)
    if len(text) > MAX_NAME_CHARS:
        raise AddressProblem(f"holds {len(text):,} characters; a name or address may have at "
                             f"most {MAX_NAME_CHARS:,}", source)
    return text


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


class _Item(NamedTuple):
    """One item of an address list as its field's own text has it. A value is put into a
    name or address with ``str.format``: the text's tokens are its fields, its braces are
    doubled, and ``*_source`` is the last value it holds (for the error's cell)."""

    cell: int | None  # the item is this value, whole: a list of its own
    name: str | None  # the display name; None for an address alone
    name_source: int | None
    address: str
    address_source: int | None


def _template(text: str, tokens: bool) -> tuple[str, int | None]:
    escaped = text.replace("{", "{{").replace("}", "}}")
    if not tokens:
        return escaped, None
    found = _TOKEN.findall(text)
    return _TOKEN.sub(r"{\1}", escaped), int(found[-1]) if found else None


@functools.lru_cache(maxsize=256)
def _plan(text: str, tokens: bool) -> tuple[_Item, ...]:
    """The items of a field's text (the same on most rows: worked out once). ``tokens``:
    the text marks values (see module docstring); else every character is its own."""
    items = []
    for raw_item in _split_top_level(text):
        item = raw_item.strip()
        if not item:
            continue
        whole = _TOKEN.fullmatch(item) if tokens else None
        if whole:
            items.append(_Item(int(whole.group(1)), None, None, "", None))
        elif item.endswith(">") and "<" in item:
            cut = item.rindex("<")
            items.append(_Item(None, *_template(_unquote(item[:cut]), tokens),
                               *_template(item[cut + 1:-1], tokens)))
        else:
            items.append(_Item(None, None, None, *_template(item, tokens)))
    return tuple(items)


def parse_address_list(text: str, values: list[str] | None = None) -> list[Address]:
    """Parse an address list. Raises AddressProblem.

    ``values``: what the tokens of a rendered field stand for (see module docstring);
    None for text without tokens (a cell's own list, a field without Jinja), where the
    characters that make a token are the text's own."""
    given = values or ()
    result: list[Address] = []
    for item in _plan(text, values is not None):
        if item.cell is not None:  # the cell is the whole item: it may be a list itself
            value = given[item.cell]
            _check_text(value, value)
            try:
                result.extend(parse_address_list(value))
            except AddressProblem as exc:
                raise AddressProblem(str(exc), value, exc.hint) from None
            continue
        address = item.address.format(*given).strip()
        source = given[item.address_source] if item.address_source is not None else None
        if item.name is not None:
            name = item.name.format(*given)
            name_source = given[item.name_source] if item.name_source is not None else None
            _check_text(name, name_source)
            if ";" in name and "@" in name:  # "Bob <b@x.org>; Carol <c@y.org>"
                raise AddressProblem(f"{name[:80]!r} would be the display name of {address}, "
                                     "though it holds an address", name_source or source,
                                     _semicolons(f"{name} <{address}>"))
            # the name as the sheet has it (a no-break space stays one); only the ASCII
            # spaces around it, which a template's "{{ first }} {{ last }}" leaves, go
            result.append(make_address(name.strip(" \t"), address, source))
        elif address:
            result.append(make_address("", address, source))
    return result


# An ASCII dot-atom local part: for these, email_validator's verdict depends on the domain
# alone, which recurs from row to row; it is validated once (0.2 ms a call, per row before).
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str | None:
    """The normalised ASCII form of a valid domain, None when it is not valid."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=True,
                              test_environment=True).ascii_domain
    except EmailNotValidError:
        return None


def make_address(name: str, addr: str, source: str | None) -> Address:
    """Validate ``addr`` (syntax only, no DNS) and build an Address with an ASCII domain."""
    _check_text(addr, source)
    local, at, domain = addr.rpartition("@")
    if at and len(local) <= 64 and len(addr) <= 254 and _PLAIN_LOCAL.fullmatch(local):
        ascii_domain = _ascii_domain(domain)
        if ascii_domain is not None and len(local) + 1 + len(ascii_domain) <= 254:
            return Address(display_name=name, username=local, domain=ascii_domain)
    try:
        # test_environment admits the reserved .test domain (test and staging set-ups);
        # .local, localhost, .invalid and the like stay refused: no mail reaches them.
        valid = validate_email(addr, check_deliverability=False, allow_smtputf8=True,
                               test_environment=True)
    except EmailNotValidError as exc:
        shown = addr if len(addr) <= 80 else addr[:77] + "..."
        raise AddressProblem(f"{shown!r} is not a valid email address ({exc})", source,
                             _semicolons(addr)) from None
    return Address(display_name=name, username=valid.local_part, domain=valid.ascii_domain)


def _semicolons(text: str) -> str | None:
    """The hint for addresses separated by semicolons, as Outlook writes a list."""
    if ";" not in text or "@" not in text.partition(";")[2]:
        return None
    fixed = ", ".join(part.strip() for part in text.split(";") if part.strip())
    shown = fixed if len(fixed) <= 80 else fixed[:77] + "..."
    return f"separate addresses with commas, not semicolons: {shown}"


def address_key(address: str) -> str:
    """The form in which two addresses of one mailbox compare equal: the domain in ASCII,
    and, as at every large provider, the local part without regard to case."""
    local, _, domain = address.strip().rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        pass
    return f"{local}@{domain}".lower()
