"""Building the message for one rendered row: its bytes, written directly. Pure.

Building an ``EmailMessage`` and serialising it costs several milliseconds a message,
mostly in parsing the headers it was just given. Here the headers are formatted once,
the text parts are encoded with ``binascii`` (C) and the file parts (logo, brochure) are
encoded once per campaign (headers by the email package, base64 in one buffer), and the
message is joined from its pieces once. ``tests/reference_message.py``
is the straightforward ``EmailMessage`` build; a test compares the two on many generated
rows (tree, headers and decoded content). What both share is in :mod:`mailmerge.mime`.
"""

from __future__ import annotations

import binascii
import datetime as dt
import secrets
from email.headerregistry import Address
from typing import Any

from .assets import CACHE_BYTES, Part, SizedCache
from .mime import (
    LINE_LIMIT,
    AddressList,
    Built,
    HeaderField,
    Links,
    ListId,
    Text,
    Token,
    encoded_address,
    encoded_words,
    file_part_bytes,
    header_fields,
    mime_tree,
    needs_encoding,
    needs_smtputf8,
    stamp,
    transfer_encoding,
)
from .render import Rendered

__all__ = ["Built", "build_message"]

CRLF = b"\r\n"


def _fold_ascii(name: str, value: str) -> str:
    """An ASCII value folded at single spaces, lines within 78 where the words allow."""
    return "\r\n ".join(_wrap(f"{name}: {value}", 0))


def unstructured(name: str, value: str) -> str:
    if not needs_encoding(value) and all(len(word) < 70 for word in value.split(" ")):
        return _fold_ascii(name, value)
    return f"{name}: " + "\r\n ".join(encoded_words(value, len(name) + 2))


def addresses_header(name: str, addresses: tuple[Address, ...]) -> str:
    """An address header; each address on its own line, names encoded when they must be."""
    lines: list[str] = []
    used = len(name) + 2
    for index, address in enumerate(addresses):
        comma = "," if index < len(addresses) - 1 else ""
        name_text = address.display_name
        if not name_text:
            parts = [address.addr_spec]
        elif not needs_encoding(name_text):
            # folding at a space keeps it, inside a quoted name too (unfolding only
            # removes the CRLF); a name that is folded, or has runs of spaces, is quoted:
            # in a bare phrase readers may collapse them, and GMime keeps the fold's CRLF
            text = f"{address}{comma}"
            if "  " in name_text or used + len(text) > LINE_LIMIT:
                text = f"{_quoted(name_text)} <{address.addr_spec}>{comma}"
            parts = _wrap(text, used)
            lines += parts
            used = 1
            continue
        else:
            parts = encoded_address(address, used, comma)
        parts[-1] += comma
        lines += parts
        used = 1
    return f"{name}: " + "\r\n ".join(lines)


def _quoted(name: str) -> str:
    """An RFC 5322 quoted-string."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrap(text: str, used: int) -> list[str]:
    """``text`` cut at single spaces into lines of at most 78 (after ``used``) where it can."""
    words = text.split(" ")
    lines = [words[0]]
    budget = LINE_LIMIT - used
    for word in words[1:]:
        if word and lines[-1] and len(lines[-1]) + 1 + len(word) > budget:
            lines.append(word)
            budget = LINE_LIMIT - 1
        else:
            lines[-1] += " " + word
    return lines


def _text_part(text: str, subtype: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    if not body.endswith("\n"):
        body += "\n"
    cte = transfer_encoding(text)
    head = (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("ascii")
    if cte == "7bit":
        return head + body.encode("ascii").replace(b"\n", CRLF)
    return head + quoted_printable(body.encode("utf-8"))


# Lines as quoted-printable (CRLF at the end), by the line: a template's lines repeat on
# every row, and only those that hold a value differ. Cleared when it holds _QP_BYTES.
_QP_LINES: dict[bytes, bytes] = {}
_QP_BYTES = 8 * 1024 * 1024
_QP_LONGEST = 16 * 1024  # a longer line is encoded, not kept
_qp_held = 0


def quoted_printable(data: bytes) -> bytes:
    """Text that ends with a line break as quoted-printable with CRLF line ends: what
    binascii.b2a_qp(data, istext=True) makes, line by line (it encodes each line on its own
    when no line ends in CR), each distinct line once. Encoding the 16 KB HTML of a
    newsletter whole was a quarter of building its message."""
    global _qp_held
    if not data.endswith(b"\n") or b"\r" in data:  # not as _text_part gives it: whole
        return binascii.b2a_qp(data, istext=True).replace(b"\n", CRLF)
    lines = data.split(b"\n")
    del lines[-1]  # the empty text after the last line break
    encoded = []
    for line in lines:
        found = _QP_LINES.get(line)
        if found is None:
            found = binascii.b2a_qp(line + b"\n", istext=True).replace(b"\n", CRLF)
            if len(line) <= _QP_LONGEST:
                if _qp_held > _QP_BYTES:
                    _QP_LINES.clear()
                    _qp_held = 0
                _QP_LINES[line] = found
                _qp_held += len(line) + len(found)
        encoded.append(found)
    return b"".join(encoded)


# A message is assembled as a list of pieces and joined once: a 25 MB attachment is then
# copied into the message once, not once per level of multipart around it.
Pieces = list[bytes | bytearray]

# The encoded file parts, once per file and campaign while they fit.
_FILE_PARTS: SizedCache[tuple[Part, bool], bytearray] = SizedCache(CACHE_BYTES, len)


def _file_pieces(part: Part, inline: bool) -> Pieces:
    encoded = _FILE_PARTS.get((part, inline))
    if encoded is None:
        encoded = _FILE_PARTS.put((part, inline), file_part_bytes(part, inline))
    return [encoded]


def _text_pieces(text: str, subtype: str) -> Pieces:
    return [_text_part(text, subtype)]


def _multipart(subtype: str, parts: list[Pieces]) -> Pieces:
    while True:
        boundary = f"=_mm_{secrets.token_hex(12)}".encode()
        if not any(boundary in piece for part in parts for piece in part):
            break
    # the CRLF before each delimiter belongs to the delimiter, not to the part (RFC 2046)
    pieces: Pieces = [b"Content-Type: multipart/" + subtype.encode() + b';\r\n boundary="'
                      + boundary + b'"\r\n\r\n--' + boundary + b"\r\n"]
    for index, part in enumerate(parts):
        if index:
            pieces.append(b"\r\n--" + boundary + b"\r\n")
        pieces += part
    pieces.append(b"\r\n--" + boundary + b"--\r\n")
    return pieces


def _body(rendered: Rendered) -> Pieces:
    return mime_tree(rendered, _text_pieces, _file_pieces, _multipart)


def build_message(rendered: Rendered, *, message_id: str | None = None,
                  date: dt.datetime | None = None) -> Built:
    """The message for ``rendered`` as bytes; Bcc recipients go only into the envelope."""
    date_text, message_id = stamp(rendered, message_id, date)
    smtputf8 = needs_smtputf8(rendered)
    lines = [_cached_line(field) for field in header_fields(rendered, date_text, message_id)]
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8" if smtputf8 else "ascii")
    data = b"".join([head, *_body(rendered)])
    return Built.of(rendered, message_id, data, date_text, smtputf8)


# Header lines already written, for the fields that repeat from row to row (From,
# Reply-To, List-Id, the campaign's own headers). An address field is known by its
# Address objects' identities, which are the same objects on every row when the field is
# constant; the entry holds them, so that no other object can take their identity.
_LINES: dict[tuple[Any, ...], tuple[object, str]] = {}
_MOST_LINES = 256


def _cached_line(field: HeaderField) -> str:
    match field:
        case Token(name, value):
            return f"{name}: {value}"
        case AddressList(name, addresses):
            key: tuple[Any, ...] = (name, *map(id, addresses))
        case _:
            key = (field,)
    found = _LINES.get(key)
    if found is not None:
        return found[1]
    line = _header_line(field)
    if len(_LINES) >= _MOST_LINES:
        _LINES.clear()
    _LINES[key] = (field, line)
    return line


def _header_line(field: HeaderField) -> str:
    """One header field, folded, with CRLF between its lines and none at its end."""
    match field:
        case AddressList(name, addresses):
            return addresses_header(name, addresses)
        case Text(name, text):
            return unstructured(name, text)
        case Links(name, links):
            return addresses_list(name, [f"<{link}>" for link in links])
        case ListId(name, value):
            return _list_id(name, value)
        case Token(name, value):
            return f"{name}: {value}"


def _list_id(name: str, value: str) -> str:
    """`phrase <id>`: only the phrase may be encoded."""
    if not needs_encoding(value):
        return _fold_ascii(name, value)
    phrase, _, rest = value.rpartition("<")
    words = encoded_words(phrase.strip(), len(name) + 2)
    return f"{name}: " + "\r\n ".join(words) + "\r\n <" + rest


def addresses_list(name: str, items: list[str]) -> str:
    """A comma-separated header of <...> items, one per line after the first."""
    return f"{name}: " + ",\r\n ".join(items)
