"""The 13 standards every message must meet, as one checker that lists what is wrong."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

LOCAL_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']?(?![a-z][a-z0-9+.-]*:|//|["'])""", re.I)


def standard_problems(data: bytes, smtputf8: bool = False) -> list[str]:
    """Every standard ``data`` breaks, as readable lines (empty when it meets them all)."""
    problems: list[str] = []
    head, _, _ = data.partition(b"\r\n\r\n")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)

    def one(name: str) -> str | None:
        values = msg.get_all(name) or []
        if len(values) != 1:
            problems.append(f"{len(values)} {name} headers, not one")
            return None
        return str(values[0])

    # 1. one From, no defects; encoded words around the name only
    if one("From") is not None:
        header = msg["From"]
        if header.defects:
            problems.append(f"From has defects: {header.defects}")
        raw = re.search(rb"^From:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.M | re.I)
        for address in header.addresses:
            if raw and address.addr_spec.encode() not in raw.group(1) and not smtputf8:
                problems.append("From: the address is encoded, not only the name")
            if not address.display_name.isascii() and raw and b"=?utf-8?" not in raw.group(1).lower():
                problems.append("From: non-ASCII name not RFC 2047 encoded")
        # 2. the From/Sender rule
        senders = msg.get_all("Sender") or []
        if len(header.addresses) > 1 and len(senders) != 1:
            problems.append("From has several mailboxes but there is no single Sender")
        if senders:
            sender = senders[0].addresses
            if len(sender) != 1:
                problems.append("Sender must be exactly one mailbox")
            elif len(header.addresses) == 1 and (
                    sender[0].addr_spec.lower() == header.addresses[0].addr_spec.lower()):
                problems.append("Sender equals the only From mailbox")
    # 3. one valid Date
    date = one("Date")
    if date is not None:
        try:
            if parsedate_to_datetime(date).tzinfo is None:
                problems.append("Date has no time zone")
        except (TypeError, ValueError):
            problems.append(f"Date {date!r} is not valid")
    # 4. one Message-ID in the sender's domain
    message_id = one("Message-ID")
    if message_id is not None and msg.get_all("From"):
        author = (msg["Sender"] or msg["From"]).addresses[0]
        if not re.fullmatch(rf"<[^<>@\s]+@{re.escape(author.domain)}>", message_id):
            problems.append(f"Message-ID {message_id!r} is not <unique@{author.domain}>")
    # 5. CRLF line ends, no line over 998 octets
    if re.search(rb"(?<!\r)\n|\r(?!\n)", data):
        problems.append("a line does not end in CRLF")
    if any(len(line) > 998 for line in data.split(b"\r\n")):
        problems.append("a line is longer than 998 octets")
    # 6. a 7-bit header block unless SMTPUTF8
    if not smtputf8 and not head.isascii():
        problems.append("the header block is not 7-bit")
    # 7. no Bcc on the wire
    if msg.get_all("Bcc"):
        problems.append("a Bcc header is on the wire")
    for part in msg.walk():
        kind = part.get_content_type()
        # 8. text/plain first, the HTML (or its related part) last
        if kind == "multipart/alternative":
            kinds = [p.get_content_type() for p in part.iter_parts()]
            if kinds[0] != "text/plain" or kinds[-1] not in ("text/html", "multipart/related"):
                problems.append(f"multipart/alternative holds {kinds}")
        # 9. every cid: resolves in the same multipart/related; no orphan inline parts
        if kind == "multipart/related":
            parts = list(part.iter_parts())
            html = parts[0].get_content() if parts else ""
            used = set(re.findall(r"""cid:([^"'\s>]+)""", html))
            have = {str(p["Content-ID"]).strip("<>") for p in parts[1:] if p["Content-ID"]}
            if used - have:
                problems.append(f"cid: without a part: {sorted(used - have)}")
            if have - used:
                problems.append(f"inline parts nothing uses: {sorted(have - used)}")
        # 10. multiparts carry only 7bit, 8bit or binary
        if part.is_multipart():
            cte = str(part.get("Content-Transfer-Encoding", "7bit")).lower()
            if cte not in ("7bit", "8bit", "binary"):
                problems.append(f"{kind} has Content-Transfer-Encoding {cte}")
        # 11. Content-Disposition parses; non-ASCII file names per RFC 2231
        disposition = part.get("Content-Disposition")
        if disposition is not None:
            if disposition.defects:
                problems.append(f"Content-Disposition has defects: {disposition.defects}")
            filename = part.get_filename()
            if filename and not filename.isascii():
                raw = part.get_all("Content-Disposition")[0]
                if "filename*" not in str(raw.fold(policy=email.policy.SMTP)):
                    problems.append(f"file name {filename!r} is not RFC 2231 encoded")
        # 13. no <img src> left pointing at a local path
        if kind == "text/html" and LOCAL_SRC.search(part.get_content()):
            problems.append("an <img src> still points at a local file")
    # 12. MIME-Version
    if msg.get("MIME-Version") != "1.0":
        problems.append("MIME-Version is missing")
    return problems
