"""One message for a terminal or a pipe: what a reader sees of it, or its exact bytes."""

from __future__ import annotations

from email.headerregistry import Address

from ..mime import Built


def _addresses(addresses: tuple[Address, ...]) -> str:
    return ", ".join(str(a) for a in addresses)


def message_text(built: Built) -> str:
    """The header fields a mail client shows (decoded), the envelope-only Bcc, the
    attachments, then the text part: for a quick look at one message."""
    rendered = built.rendered
    lines = [f"Row: {rendered.row}"]
    fields = [("From", _addresses(rendered.from_)),
              ("Sender", str(rendered.sender) if rendered.sender else ""),
              ("Reply-To", _addresses(rendered.reply_to)), ("To", _addresses(rendered.to)),
              ("Cc", _addresses(rendered.cc)),
              ("Bcc", _addresses(rendered.bcc) + " (envelope only)" if rendered.bcc else ""),
              ("Subject", rendered.subject), ("Date", built.date),
              *rendered.headers]
    lines += [f"{name}: {value}" for name, value in fields if value]
    if rendered.attachments:
        lines.append("Attachments: " + ", ".join(f"{a.filename} ({len(a.data):,} bytes)"
                                                 for a in rendered.attachments))
    body = rendered.text if rendered.text is not None else "(no text part)\n"
    return "\n".join(lines) + "\n\n" + body + ("" if body.endswith("\n") else "\n")
