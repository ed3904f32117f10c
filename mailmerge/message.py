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
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, make_msgid

from .assets import Part
from .render import Rendered

POLICY = email.policy.SMTP
POLICY_UTF8 = email.policy.SMTPUTF8


@dataclass(frozen=True)
class Built:
    """A finished message: the bytes for the wire and what the envelope needs."""

    rendered: Rendered
    message_id: str
    data: bytes
    envelope_from: str
    envelope_to: tuple[str, ...]
    smtputf8: bool


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


def _body(rendered: Rendered) -> MIMEPart:
    alternatives = []
    if rendered.text is not None:
        alternatives.append(_text_part(rendered.text, "plain"))
    if rendered.html is not None:
        html = _text_part(rendered.html, "html")
        if rendered.images:
            html = _multipart("related", [html] + [_file_part(i, True) for i in rendered.images])
        alternatives.append(html)
    body = alternatives[0] if len(alternatives) == 1 else _multipart("alternative", alternatives)
    if rendered.attachments:
        body = _multipart("mixed", [body] + [_file_part(a, False) for a in rendered.attachments])
    return body


def _needs_utf8(addresses: list[Address]) -> bool:
    return not all(a.username.isascii() for a in addresses)


def build_message(rendered: Rendered, *, message_id: str | None = None,
                  date: dt.datetime | None = None) -> Built:
    """Build the message for ``rendered``; Bcc recipients go only into the envelope."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = rendered.from_
    if rendered.sender is not None:
        msg["Sender"] = rendered.sender
    if rendered.reply_to:
        msg["Reply-To"] = rendered.reply_to
    if rendered.to:
        msg["To"] = rendered.to
    if rendered.cc:
        msg["Cc"] = rendered.cc
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.timezone.utc).astimezone())
    message_id = message_id or new_message_id(rendered)
    msg["Message-ID"] = message_id
    if rendered.unsubscribe:
        msg["List-Unsubscribe"] = f"<{rendered.unsubscribe}>"
        if rendered.unsubscribe.lower().startswith("https:"):
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in rendered.headers:
        if value:
            msg[name] = value
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
                 envelope_to=tuple(rendered.envelope_to), smtputf8=smtputf8)
