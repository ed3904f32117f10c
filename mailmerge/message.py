"""Building the MIME message for one rendered row. Pure: values in, bytes out.

Tree, each level only when needed::

    multipart/mixed
      multipart/alternative
        text/plain
        multipart/related
          text/html
          image ...
      attachment ...
"""

from __future__ import annotations

import datetime as dt
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import quoprimime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, make_msgid
from typing import TypeVar

from .assets import Part
from .render import Rendered

P = TypeVar("P")

# Header values we encode ourselves (see _encoded_words) are written as they are.
POLICY = email.policy.SMTP.clone(refold_source="none")
POLICY_UTF8 = email.policy.SMTPUTF8.clone(refold_source="none")
_WORD_LIMIT = 75  # RFC 2047: an encoded word is at most 75 characters
_LINE_LIMIT = 78


def _encoded_words(text: str, first_line_used: int) -> list[str]:
    """``text`` as RFC 2047 Q-encoded words, one per line, every space inside a word.

    The email package folds long non-ASCII headers at a space *between* two encoded
    words, where RFC 2047 6.2 says readers drop it: names and subjects lost a space
    (found by the property tests). Here a space always stays inside the encoded text.
    """
    words: list[str] = []
    current = ""
    budget = min(_WORD_LIMIT, _LINE_LIMIT - first_line_used)

    def encoded(chunk: str) -> str:
        return quoprimime.header_encode(chunk.encode("utf-8"), charset="utf-8")

    for piece in re.split(r"(?<= )", text):
        if len(encoded(current + piece)) <= budget:
            current += piece
            continue
        for char in piece:  # start a new word; split inside a long word if it must
            if current and len(encoded(current + char)) > budget:
                words.append(encoded(current))
                current, budget = "", _WORD_LIMIT
            current += char
    if current or not words:
        words.append(encoded(current))
    return words


def encoded_address(address: Address, used: int, comma: str) -> list[str]:
    """Lines of ``Name <addr>`` with a non-ASCII name as encoded words; the angle address
    joins the last line when it fits (with ``comma`` still to come), else a line of its own.
    """
    parts = _encoded_words(address.display_name, used)
    angle = f"<{address.addr_spec}>"
    if len(parts[-1]) + 1 + len(angle) + len(comma) + 1 <= _LINE_LIMIT:
        parts[-1] += " " + angle
    else:
        parts.append(angle)
    return parts


def _set_unstructured(msg: EmailMessage, name: str, value: str) -> None:
    if value.isascii():
        msg[name] = value
    else:
        msg.set_raw(name, "\n ".join(_encoded_words(value, len(name) + 2)))


def _set_addresses(msg: EmailMessage, name: str, addresses: tuple[Address, ...]) -> None:
    """An address header, non-ASCII names encoded with :func:`_encoded_words`."""
    if all(a.display_name.isascii() for a in addresses):
        msg[name] = addresses
        return
    lines: list[str] = []
    used = len(name) + 2
    for index, address in enumerate(addresses):
        comma = "," if index < len(addresses) - 1 else ""
        if not address.display_name:
            parts = [address.addr_spec]
        elif address.display_name.isascii():
            parts = [str(Address(display_name=address.display_name, addr_spec=address.addr_spec))]
        else:
            parts = encoded_address(address, used, comma)
        parts[-1] += comma
        lines += parts
        used = 1
    msg.set_raw(name, "\n ".join(lines))


@dataclass(frozen=True)
class Built:
    """A finished message: the bytes for the wire and what the envelope needs."""

    rendered: Rendered
    message_id: str
    data: bytes
    envelope_from: str
    envelope_to: tuple[str, ...]
    smtputf8: bool
    date: str = ""


def new_message_id(rendered: Rendered) -> str:
    """A fresh Message-ID in the sender's domain."""
    domain = (rendered.sender or rendered.from_[0]).domain
    return make_msgid(domain=domain)


def _cte(text: str) -> str:
    """7bit for short ASCII lines, else quoted-printable (never base64: spam filters frown)."""
    if text.isascii() and all(len(line) <= 78 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


def _text_part(text: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(text, subtype=subtype, charset="utf-8", cte=_cte(text))
    return part


def _file_part(file: Part, inline: bool) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    if inline:
        part.set_content(file.data, file.maintype, file.subtype, disposition="inline",
                         filename=file.filename, cid=f"<{file.cid}>")
    else:
        part.set_content(file.data, file.maintype, file.subtype, disposition="attachment",
                         filename=file.filename)
    return part


def _multipart(subtype: str, parts: list[MIMEPart]) -> MIMEPart:
    container = MIMEPart(policy=POLICY)
    container["Content-Type"] = f"multipart/{subtype}"
    for part in parts:
        container.attach(part)
    return container


def mime_tree(rendered: Rendered, text_part: Callable[[str, str], P],
              file_part: Callable[[Part, bool], P], multipart: Callable[[str, list[P]], P]) -> P:
    """The body's MIME structure, for both builders: text then HTML as alternatives, the
    HTML with its images in multipart/related, all in multipart/mixed with attachments.
    ``file_part(part, inline)`` makes an image (inline) or an attachment."""
    alternatives = []
    if rendered.text is not None:
        alternatives.append(text_part(rendered.text, "plain"))
    if rendered.html is not None:
        html = text_part(rendered.html, "html")
        if rendered.images:
            html = multipart("related", [html] + [file_part(i, True) for i in rendered.images])
        alternatives.append(html)
    body = alternatives[0] if len(alternatives) == 1 else multipart("alternative", alternatives)
    if rendered.attachments:
        body = multipart("mixed", [body] + [file_part(a, False) for a in rendered.attachments])
    return body


def _body(rendered: Rendered) -> MIMEPart:
    return mime_tree(rendered, _text_part, _file_part, _multipart)


def _needs_utf8(addresses: list[Address]) -> bool:
    return not all(a.username.isascii() for a in addresses)


def build_reference(rendered: Rendered, *, message_id: str | None = None,
                    date: dt.datetime | None = None) -> Built:
    """The straightforward ``EmailMessage`` build, which the fast path (wire.py) is
    compared with in the tests. Bcc recipients go only into the envelope."""
    msg = EmailMessage(policy=POLICY)
    _set_addresses(msg, "From", rendered.from_)
    if rendered.sender is not None:
        _set_addresses(msg, "Sender", (rendered.sender,))
    if rendered.reply_to:
        _set_addresses(msg, "Reply-To", rendered.reply_to)
    if rendered.to:
        _set_addresses(msg, "To", rendered.to)
    if rendered.cc:
        _set_addresses(msg, "Cc", rendered.cc)
    _set_unstructured(msg, "Subject", rendered.subject)
    date_text = format_datetime(date or dt.datetime.now(dt.timezone.utc).astimezone())
    msg["Date"] = date_text
    message_id = message_id or new_message_id(rendered)
    msg["Message-ID"] = message_id
    if rendered.unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(f"<{link}>" for link in rendered.unsubscribe)
        if any(link.lower().startswith("https:") for link in rendered.unsubscribe):
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    if rendered.list_id:
        msg["List-Id"] = rendered.list_id
    for name, value in rendered.headers:
        if value:
            _set_unstructured(msg, name, value)
    msg["MIME-Version"] = "1.0"
    body = _body(rendered)
    for name, value in body.items():
        msg[name] = value
    msg.set_payload(body.get_payload())
    everyone = [*rendered.from_, *rendered.to, *rendered.cc, *rendered.bcc, *rendered.reply_to]
    if rendered.sender:
        everyone.append(rendered.sender)
    smtputf8 = _needs_utf8(everyone)
    data = msg.as_bytes(policy=POLICY_UTF8 if smtputf8 else POLICY)
    return Built(rendered=rendered, message_id=message_id, data=data,
                 envelope_from=rendered.envelope_from,
                 envelope_to=tuple(rendered.envelope_to), smtputf8=smtputf8, date=date_text)
