"""What both message builders share: the MIME tree, the header fields, encoded words.

:mod:`mailmerge.message` writes the bytes that are sent; ``tests/reference_message.py``
builds the same message with ``EmailMessage`` and the tests compare the two. Both take
the list of header fields, the body's structure, the SMTPUTF8 rule and the RFC 2047
encoding from here.

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

import base64
import datetime as dt
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email import quoprimime
from email.headerregistry import Address
from email.utils import format_datetime, make_msgid
from typing import Literal, TypeVar

from .assets import Part
from .render import Rendered

P = TypeVar("P")

WORD_LIMIT = 75  # RFC 2047: an encoded word is at most 75 characters
LINE_LIMIT = 78

TransferEncoding = Literal["7bit", "quoted-printable"]


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

    @classmethod
    def of(cls, rendered: Rendered, message_id: str, data: bytes, date: str,
           smtputf8: bool) -> Built:
        """The message ``data`` of ``rendered``, with its envelope."""
        return cls(rendered=rendered, message_id=message_id, data=data,
                   envelope_from=rendered.envelope_from,
                   envelope_to=tuple(rendered.envelope_to), smtputf8=smtputf8, date=date)


def new_message_id(rendered: Rendered) -> str:
    """A fresh Message-ID in the sender's domain."""
    domain = (rendered.sender or rendered.from_[0]).domain
    return make_msgid(domain=domain)


def stamp(rendered: Rendered, message_id: str | None, date: dt.datetime | None
          ) -> tuple[str, str]:
    """The Date and Message-ID fields' values: the ones given, else now and a new one."""
    date_text = format_datetime(date or dt.datetime.now(dt.UTC).astimezone())
    return date_text, message_id or new_message_id(rendered)


def needs_smtputf8(rendered: Rendered) -> bool:
    """Whether an address's local part is not ASCII: the message then needs SMTPUTF8
    (RFC 6531) and goes out with UTF-8 headers."""
    everyone = [*rendered.from_, *rendered.to, *rendered.cc, *rendered.bcc, *rendered.reply_to]
    everyone += [a for a in (rendered.sender, rendered.return_path) if a is not None]
    return not all(a.username.isascii() for a in everyone)


# --- header fields --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AddressList:
    """An address field (From, To ...): names encoded when they are not ASCII."""

    name: str
    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class Text:
    """An unstructured field (Subject, the campaign's own headers)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Links:
    """``<link>, <link>`` (List-Unsubscribe)."""

    name: str
    links: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListId:
    """``phrase <id>`` (RFC 2919): only the phrase may be encoded."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Token:
    """A value that is ASCII and short by construction (Date, Message-ID, MIME-Version)."""

    name: str
    value: str


HeaderField = AddressList | Text | Links | ListId | Token


def header_fields(rendered: Rendered, date: str, message_id: str) -> list[HeaderField]:
    """Every header field of the message, in order. Bcc is never one: it goes only into
    the envelope."""
    fields: list[HeaderField] = [AddressList("From", rendered.from_)]
    if rendered.sender is not None:
        fields.append(AddressList("Sender", (rendered.sender,)))
    if rendered.reply_to:
        fields.append(AddressList("Reply-To", rendered.reply_to))
    if rendered.to:
        fields.append(AddressList("To", rendered.to))
    if rendered.cc:
        fields.append(AddressList("Cc", rendered.cc))
    fields += [Text("Subject", rendered.subject), Token("Date", date),
               Token("Message-ID", message_id)]
    if rendered.unsubscribe:
        fields.append(Links("List-Unsubscribe", rendered.unsubscribe))
        if any(link.lower().startswith("https:") for link in rendered.unsubscribe):
            fields.append(Token("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))  # RFC 8058
    if rendered.list_id:
        fields.append(ListId("List-Id", rendered.list_id))
    fields += [Text(name, value) for name, value in rendered.headers if value]
    fields.append(Token("MIME-Version", "1.0"))
    return fields


# --- encoding -------------------------------------------------------------------------------

# Text a reader would take for an RFC 2047 encoded word: written raw, it would be decoded.
# As loose as the loosest reader (Python's legacy decoder allows "?" in the encoded text).
LOOKS_ENCODED = re.compile(r"=\?[^?]*\?[bBqQ]\?.*?\?=", re.S)


def encoded_words(text: str, first_line_used: int) -> list[str]:
    """``text`` as RFC 2047 encoded words, one per line, that every reader reads back as
    ``text``.

    - A value that fits in one word is one word: B (base64) when that is shorter, as it is
      for most non-Latin scripts, else Q. B words are never chained: GMime drops text
      after a padded base64 word that another follows.
    - Otherwise Q words, cut only after a space (the space stays inside the earlier
      word: RFC 2047 6.2 lets readers drop white space between words, and Python's
      parser and others then join the two words) wherever the next word fits whole in
      a fresh encoded word; only a word longer than one encoded word is cut between
      characters (never inside a character's UTF-8 bytes).
    """
    budget = min(WORD_LIMIT, LINE_LIMIT - first_line_used)
    data = text.encode("utf-8")
    single_b = f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="
    single_q = _q_word(text)
    if len(single_q) <= budget and len(single_q) <= len(single_b):
        return [single_q]
    if len(single_b) <= budget:
        return [single_b]
    words: list[str] = []
    current = ""
    for piece in re.split(r"(?<= )", text):
        if not piece:
            continue
        if len(_q_word(current + piece)) <= budget:
            current += piece
            continue
        if current and len(_q_word(piece)) <= WORD_LIMIT:  # the word fits whole: next line
            words.append(_q_word(current))
            current, budget = piece, WORD_LIMIT
            continue
        for char in piece:  # a word longer than one encoded word: cut between characters
            if current and len(_q_word(current + char)) > budget:
                words.append(_q_word(current))
                current, budget = "", WORD_LIMIT
            current += char
    if current or not words:
        words.append(_q_word(current))
    return words


def _q_word(chunk: str) -> str:
    return quoprimime.header_encode(chunk.encode("utf-8"), charset="utf-8")


def needs_encoding(text: str) -> bool:
    """Whether a header text must go out as encoded words: not ASCII, or ASCII that a
    reader would decode as if it were encoded words (RFC 2047 5 and 6.1)."""
    return not text.isascii() or LOOKS_ENCODED.search(text) is not None


def encoded_address(address: Address, used: int, comma: str) -> list[str]:
    """Lines of ``Name <addr>`` with a non-ASCII name as encoded words; the angle address
    joins the last line when it fits (with ``comma`` still to come), else a line of its own.
    """
    parts = encoded_words(address.display_name, used)
    angle = f"<{address.addr_spec}>"
    before = used if len(parts) == 1 else 1  # the field name, or a continuation's space
    if before + len(parts[-1]) + 1 + len(angle) + len(comma) <= LINE_LIMIT:
        parts[-1] += " " + angle
    else:
        parts.append(angle)
    return parts


def transfer_encoding(text: str) -> TransferEncoding:
    """7bit for short ASCII lines, else quoted-printable (never base64: spam filters frown)."""
    if text.isascii() and all(len(line) <= 78 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


def file_part_bytes(file: Part, inline: bool) -> bytearray:
    """An image (``inline``, with its Content-ID) or an attachment, as bytes. Written
    here, not by the email package (which the reference builder in the tests uses): that
    holds about six copies of a file while it encodes it (this holds the file and the
    result), writes a file name that looks like an encoded word raw (every reader then
    decodes it), and gives a UTF-8 text attachment no charset (RFC 2046 then reads it as
    US-ASCII)."""
    kind = f"{file.maintype}/{file.subtype}"
    if file.maintype == "text" and _is_utf8(file.data):
        kind += "; charset=utf-8"
    lines = [f"Content-Type: {kind}", "Content-Transfer-Encoding: base64",
             *_disposition("inline" if inline else "attachment", file.filename)]
    if inline:
        lines.append(f"Content-ID: <{file.cid}>")
    return base64_lines(file.data, ("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_PLAIN_NAME = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII but `"` and `\`
_ATTR_SAFE = "!#$&+-.^_`|~"  # RFC 2231 attribute-char besides letters and digits
MAX_SECTIONS = 9  # RFC 2231 continuations: Ruby's mail orders *10 before *2


def _disposition(kind: str, filename: str) -> list[str]:
    """Content-Disposition lines with the file name: quoted when it is plain ASCII, else
    RFC 2231 (``filename*=utf-8''...``, in at most MAX_SECTIONS sections), each on a line
    of its own within 78 characters where the name allows."""
    head = f"Content-Disposition: {kind};"
    plain = f'filename="{filename}"'
    if _PLAIN_NAME.fullmatch(filename) and not LOOKS_ENCODED.search(filename):
        if len(head) + 1 + len(plain) <= LINE_LIMIT:
            return [f"{head} {plain}"]
        return [head, f" {plain}"]
    value = "utf-8''" + urllib.parse.quote(filename.encode("utf-8"), safe=_ATTR_SAFE)
    if len(" filename*=") + len(value) <= LINE_LIMIT:
        return [head, f" filename*={value}"]
    size = max(LINE_LIMIT - len(" filename*0*=;"), -(-len(value) // MAX_SECTIONS) + 2)
    sections: list[str] = []
    rest = value
    while rest:
        cut = min(size, len(rest))
        if "%" in rest[max(cut - 2, 0):cut]:  # not inside a %XX
            cut = rest.rindex("%", 0, cut)
        sections.append(rest[:cut])
        rest = rest[cut:]
    last = len(sections) - 1
    return [head] + [f" filename*{i}*={section}{';' if i < last else ''}"
                     for i, section in enumerate(sections)]


def base64_lines(data: bytes, head: bytes = b"") -> bytearray:
    """``head`` and then ``data`` in base64, 76 characters a line, each ended by CRLF (RFC
    2045 6.8), written into one buffer of the final size, a slice at a time."""
    encoded = 4 * ((len(data) + 2) // 3)
    out = bytearray(len(head) + encoded + 2 * ((encoded + 75) // 76))
    out[:len(head)] = head
    at = len(head)
    view = memoryview(data)
    step = 57 * 1024  # 1,024 lines: 57 bytes make one line of 76 characters
    for start in range(0, len(data), step):
        lines = base64.encodebytes(view[start:start + step]).replace(b"\n", b"\r\n")
        out[at:at + len(lines)] = lines
        at += len(lines)
    return out


# --- structure ------------------------------------------------------------------------------

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
