"""The reference builder: the straightforward ``EmailMessage`` build of a rendered row.

The message that is sent is written directly (``mailmerge.message``); ``test_message_reference.py``
compares the two on many generated rows (tree, headers and decoded content). Both take
the header fields, the body's structure and the encoded words from ``mailmerge.mime``;
the file parts here are the email package's own.
"""

from __future__ import annotations

import datetime as dt
import email.policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart

from mailmerge.assets import Part
from mailmerge.mime import (
    AddressList,
    Built,
    HeaderField,
    Links,
    ListId,
    Text,
    Token,
    encoded_address,
    encoded_words,
    header_fields,
    mime_tree,
    needs_smtputf8,
    stamp,
    transfer_encoding,
)
from mailmerge.render import Rendered

# Header values encoded by mailmerge.mime (see encoded_words) are written as they are.
POLICY = email.policy.SMTP.clone(refold_source="none")
POLICY_UTF8 = email.policy.SMTPUTF8.clone(refold_source="none")


def build_reference(rendered: Rendered, *, message_id: str | None = None,
                    date: dt.datetime | None = None) -> Built:
    """The message for ``rendered`` through ``EmailMessage``; Bcc only in the envelope."""
    date_text, message_id = stamp(rendered, message_id, date)
    msg = EmailMessage(policy=POLICY)
    for field in header_fields(rendered, date_text, message_id):
        _set(msg, field)
    body = mime_tree(rendered, _text_part, file_part, _multipart)
    for name, value in body.items():
        msg[name] = value
    msg.set_payload(body.get_payload())
    smtputf8 = needs_smtputf8(rendered)
    data = msg.as_bytes(policy=POLICY_UTF8 if smtputf8 else POLICY)
    return Built.of(rendered, message_id, data, date_text, smtputf8)


def _set(msg: EmailMessage, field: HeaderField) -> None:
    match field:
        case AddressList(name, addresses):
            _set_addresses(msg, name, addresses)
        case Text(name, text):
            _set_unstructured(msg, name, text)
        case Links(name, links):
            msg[name] = ", ".join(f"<{link}>" for link in links)
        case ListId(name, value) | Token(name, value):
            msg[name] = value


def _set_unstructured(msg: EmailMessage, name: str, value: str) -> None:
    if value.isascii():
        msg[name] = value
    else:
        msg.set_raw(name, "\n ".join(encoded_words(value, len(name) + 2)))


def _set_addresses(msg: EmailMessage, name: str, addresses: tuple[Address, ...]) -> None:
    """An address header, non-ASCII names encoded with :func:`encoded_words`."""
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


def file_part(file: Part, inline: bool) -> MIMEPart:
    """An image (``inline``, with its Content-ID) or an attachment, as the email package
    writes it."""
    part = MIMEPart(policy=POLICY)
    if inline:
        part.set_content(file.data, file.maintype, file.subtype, disposition="inline",
                         filename=file.filename, cid=f"<{file.cid}>")
    else:
        part.set_content(file.data, file.maintype, file.subtype, disposition="attachment",
                         filename=file.filename)
    return part


def _text_part(text: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(text, subtype=subtype, charset="utf-8", cte=transfer_encoding(text))
    return part


def _multipart(subtype: str, parts: list[MIMEPart]) -> MIMEPart:
    container = MIMEPart(policy=POLICY)
    container["Content-Type"] = f"multipart/{subtype}"
    for part in parts:
        container.attach(part)
    return container
