"""The message bytes written directly: the fast path of :func:`build_message`.

Building an ``EmailMessage`` and serialising it costs several milliseconds a message,
mostly in parsing the headers it was just given. Here the headers are formatted once,
the text parts are encoded with ``binascii`` (C) and the file parts (logo, brochure) are
encoded once per campaign by the email package itself. ``message.build_reference`` is
the straightforward ``EmailMessage`` build; a test compares the two on many generated
rows (tree, headers and decoded content).
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import secrets
from email.headerregistry import Address
from email.utils import format_datetime

from .assets import Part
from .message import (
    _LINE_LIMIT,
    POLICY,
    Built,
    _cte,
    _encoded_words,
    _file_part,
    _needs_utf8,
    encoded_address,
    mime_tree,
    new_message_id,
)
from .render import Rendered

CRLF = b"\r\n"


def _fold_ascii(name: str, value: str) -> str:
    """An ASCII value folded at single spaces, lines within 78 where the words allow."""
    return "\r\n ".join(_wrap(f"{name}: {value}", 0))


def unstructured(name: str, value: str) -> str:
    if value.isascii() and all(len(word) < 70 for word in value.split(" ")):
        return _fold_ascii(name, value)
    return f"{name}: " + "\r\n ".join(_encoded_words(value, len(name) + 2))


def addresses_header(name: str, addresses: tuple[Address, ...]) -> str:
    """An address header; each address on its own line, names encoded when they must be."""
    lines: list[str] = []
    used = len(name) + 2
    for index, address in enumerate(addresses):
        comma = "," if index < len(addresses) - 1 else ""
        name_text = address.display_name
        if not name_text:
            parts = [address.addr_spec]
        elif name_text.isascii():
            # folding at a space keeps it, inside a quoted name too (unfolding only
            # removes the CRLF)
            parts = _wrap(f"{address}{comma}", used)
            lines += parts
            used = 1
            continue
        else:
            parts = encoded_address(address, used, comma)
        parts[-1] += comma
        lines += parts
        used = 1
    return f"{name}: " + "\r\n ".join(lines)


def _wrap(text: str, used: int) -> list[str]:
    """``text`` cut at single spaces into lines of at most 78 (after ``used``) where it can."""
    words = text.split(" ")
    lines = [words[0]]
    budget = _LINE_LIMIT - used
    for word in words[1:]:
        if word and lines[-1] and len(lines[-1]) + 1 + len(word) > budget:
            lines.append(word)
            budget = _LINE_LIMIT - 1
        else:
            lines[-1] += " " + word
    return lines


def _text_part(text: str, subtype: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    cte = _cte(text)
    if cte == "7bit":
        encoded = body.encode("ascii")
    else:
        encoded = binascii.b2a_qp(body.encode("utf-8"), istext=True)
    head = (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n")
    return head.encode("ascii") + encoded.replace(b"\n", CRLF)


@functools.lru_cache(maxsize=64)
def _file_bytes(part: Part, inline: bool) -> bytes:
    """A file part as the email package writes it, once per file and campaign."""
    return _file_part(part, inline).as_bytes(policy=POLICY)


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    while True:
        boundary = f"=_mm_{secrets.token_hex(12)}"
        if not any(boundary.encode() in part for part in parts):
            break
    head = f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n\r\n'
    # the CRLF before each delimiter belongs to the delimiter, not to the part (RFC 2046)
    between = f"\r\n--{boundary}\r\n".encode()
    return (head.encode() + f"--{boundary}\r\n".encode() + between.join(parts)
            + f"\r\n--{boundary}--\r\n".encode())


def _body(rendered: Rendered) -> bytes:
    return mime_tree(rendered, _text_part, _file_bytes, _multipart)


def build_message(rendered: Rendered, *, message_id: str | None = None,
                  date: dt.datetime | None = None) -> Built:
    """The message for ``rendered`` as bytes; Bcc recipients go only into the envelope."""
    headers = [addresses_header("From", rendered.from_)]
    if rendered.sender is not None:
        headers.append(addresses_header("Sender", (rendered.sender,)))
    if rendered.reply_to:
        headers.append(addresses_header("Reply-To", rendered.reply_to))
    if rendered.to:
        headers.append(addresses_header("To", rendered.to))
    if rendered.cc:
        headers.append(addresses_header("Cc", rendered.cc))
    headers.append(unstructured("Subject", rendered.subject))
    date_text = format_datetime(date or dt.datetime.now(dt.timezone.utc).astimezone())
    headers.append(f"Date: {date_text}")
    message_id = message_id or new_message_id(rendered)
    headers.append(f"Message-ID: {message_id}")
    if rendered.unsubscribe:
        headers.append(addresses_list("List-Unsubscribe",
                                      [f"<{link}>" for link in rendered.unsubscribe]))
        if any(link.lower().startswith("https:") for link in rendered.unsubscribe):
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")  # RFC 8058
    if rendered.list_id:
        headers.append(_list_id(rendered.list_id))
    for name, value in rendered.headers:
        if value:
            headers.append(unstructured(name, value))
    headers.append("MIME-Version: 1.0")
    everyone = [*rendered.from_, *rendered.to, *rendered.cc, *rendered.bcc, *rendered.reply_to]
    if rendered.sender:
        everyone.append(rendered.sender)
    smtputf8 = _needs_utf8(everyone)
    head = ("\r\n".join(headers) + "\r\n").encode("utf-8" if smtputf8 else "ascii")
    data = head + _body(rendered)
    return Built(rendered=rendered, message_id=message_id, data=data,
                 envelope_from=rendered.envelope_from,
                 envelope_to=tuple(rendered.envelope_to), smtputf8=smtputf8, date=date_text)


def _list_id(value: str) -> str:
    """`phrase <id>`: only the phrase may be encoded."""
    if value.isascii():
        return _fold_ascii("List-Id", value)
    phrase, _, rest = value.rpartition("<")
    words = _encoded_words(phrase.strip(), len("List-Id: "))
    return "List-Id: " + "\r\n ".join(words) + "\r\n <" + rest


def addresses_list(name: str, items: list[str]) -> str:
    """A comma-separated header of <...> items, one per line after the first."""
    return f"{name}: " + ",\r\n ".join(items)
