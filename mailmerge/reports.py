"""What a message that came back says: a bounce, a complaint, an auto-reply, or nothing
understood. Pure: bytes in, a :class:`Report` out; matching it to a campaign's
recipients is the caller's (:mod:`mailmerge.sending.bounces`).

Understood, in this order:

- delivery status notifications (RFC 3464, ``multipart/report;
  report-type=delivery-status``): each recipient with ``Action: failed`` and a 5.x.x
  status is a hard bounce; ``Action: delayed``, or failed with a 4.x.x status, is soft;
- complaint reports from feedback loops (ARF, RFC 5965, ``report-type=feedback-report``);
- plain-text bounces of MTAs that send no DSN, best-effort: qmail ("Hi. This is the
  qmail-send program"), Exim ("This message was created automatically by mail delivery
  software" ... "The following address(es) failed"), and the generic "Undelivered Mail
  Returned to Sender" / "Mail delivery failed" with a status code in the text; before
  auto-replies, for Exim's say ``Auto-Submitted: auto-replied``;
- auto-replies (RFC 3834 ``Auto-Submitted``, the ``X-Autoreply`` family, and the usual
  vacation subjects): not bounces.

Nothing here raises on hostile input: broken MIME, a huge or truncated message, missing
fields all give a Report of kind ``unknown`` that says why; and nothing takes more than
linear time in it (no pattern rescans a long word, no total is summed anew per part).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Literal

ReportKind = Literal["bounce", "complaint", "autoreply", "unknown"]
Severity = Literal["hard", "soft"]

# an RFC 3463 status code, never three numbers of an IP address or a version number
_STATUS = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)")
# Neither pattern may backtrack over a long word: a local part holds no "@", and an
# address starts where a word does (else each of a 70 KB word's letters starts a scan).
_ANGLE_ID = re.compile(r"<[^<>\s@]+@[^<>\s]+>")
_ADDRESS = re.compile(r"(?<![^\s<>\"'():;,])[^\s<>\"'():;,@]+@[^\s<>\"'():;,]+\."
                      r"[^\s<>\"'():;,]+")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|vacation|"
    r"abwesenheit|abwesend|r[ée]ponse automatique|absence|fuera de la oficina|"
    r"risposta automatica|autosvar|automatisch antwoord|away from)", re.I)
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply")


@dataclass(frozen=True)
class Finding:
    """One recipient a report speaks of."""

    address: str  # the final recipient, as the report gives it
    severity: Severity | None  # a bounce's; None for a complaint
    status: str = ""  # RFC 3463 status code, e.g. 5.1.1
    diagnostic: str = ""  # the remote server's words, one line
    original: str = ""  # Original-Recipient, when given


@dataclass(frozen=True)
class Report:
    """What one message that came back says."""

    kind: ReportKind
    report_id: str  # its Message-ID, or a digest of its bytes: read twice, counted once
    delivered_to: tuple[str, ...] = ()  # where it was sent: a VERP address names the row
    message_ids: tuple[str, ...] = ()  # Message-IDs of the original message it carries
    findings: tuple[Finding, ...] = ()
    why: str = ""  # for ``unknown``: what was not understood


def read_report(data: bytes) -> Report:
    """The report in ``data`` (a whole message, or its beginning: a report's fields come
    before the returned message, so a large one need not be read whole)."""
    report_id = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        message = message_from_bytes(data, policy=compat32)
        found = _own_id(message)
        if found:
            report_id = found
        return _classify(message, report_id)
    except Exception as exc:  # noqa: BLE001 - hostile input: say what, never a traceback
        return Report("unknown", report_id, why=f"cannot be parsed ({type(exc).__name__})")


def _classify(message: Message, report_id: str) -> Report:
    delivered = _delivered_to(message)
    content_type = message.get_content_type()
    report_type = str(message.get_param("report-type", "") or "").lower()
    if content_type == "multipart/report" and report_type == "delivery-status":
        return _dsn(message, report_id, delivered)
    if content_type == "multipart/report" and report_type == "feedback-report":
        return _arf(message, report_id, delivered)
    if content_type == "multipart/report":
        return Report("unknown", report_id, delivered,
                      why=f"a report of type {report_type or 'none'!r}")
    plain = _plain_bounce(message, report_id, delivered)  # first: Exim's bounces say
    if plain is not None:                                   # Auto-Submitted: auto-replied
        return plain
    if _is_autoreply(message):
        return Report("autoreply", report_id, delivered, _reply_ids(message))
    return Report("unknown", report_id, delivered, _reply_ids(message),
                  why="neither a delivery report, a complaint nor an auto-reply")


# --- DSN (RFC 3464) --------------------------------------------------------------------------

def _dsn(message: Message, report_id: str, delivered: tuple[str, ...]) -> Report:
    status_part = _first_part(message, ("message/delivery-status",
                                        "message/global-delivery-status"))
    if status_part is None:
        return Report("unknown", report_id, delivered,
                      why="a delivery report without its message/delivery-status part")
    findings = []
    for fields in _field_groups(status_part)[1:]:  # the first group is per message
        action = fields.get("action", "").strip().lower()
        status = _status(fields.get("status", ""))
        address = _typed_address(fields.get("final-recipient", "")) or _typed_address(
            fields.get("original-recipient", ""))
        if not address or action not in ("failed", "delayed"):
            continue  # delivered, relayed, expanded: no bounce
        hard = action == "failed" and status.startswith("5")
        findings.append(Finding(
            address=address, severity="hard" if hard else "soft",
            status=status or ("5.0.0" if action == "failed" else "4.0.0"),
            diagnostic=_one_line(fields.get("diagnostic-code", "")),
            original=_typed_address(fields.get("original-recipient", ""))))
    if not findings:
        return Report("unknown", report_id, delivered, _returned_ids(message),
                      why="a delivery report that names no failed or delayed recipient")
    return Report("bounce", report_id, delivered, _returned_ids(message), tuple(findings))


def _field_groups(part: Message) -> list[dict[str, str]]:
    """The header blocks of a message/delivery-status part, names in lower case. The
    email package parses them into sub-messages; a malformed part arrives as text."""
    payload = part.get_payload()
    blocks: list[Message] = []
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
    else:
        raw = part.get_payload(decode=True)
        text = raw if isinstance(raw, bytes) else b""
        for chunk in re.split(rb"\r?\n\s*\r?\n", text.strip()):
            blocks.append(BytesHeaderParser(policy=compat32).parsebytes(chunk + b"\n"))
    return [{name.lower(): _one_line(str(value)) for name, value in block.items()}
            for block in blocks]


def _status(text: str) -> str:
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else ""


def _typed_address(value: str) -> str:
    """``rfc822; zoe@example.org`` -> ``zoe@example.org``."""
    _, _, address = value.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address if "@" in address else ""


# --- ARF (RFC 5965) --------------------------------------------------------------------------

def _arf(message: Message, report_id: str, delivered: tuple[str, ...]) -> Report:
    part = _first_part(message, ("message/feedback-report",))
    if part is None:
        return Report("unknown", report_id, delivered,
                      why="a complaint report without its message/feedback-report part")
    groups = _field_groups(part)
    fields = groups[0] if groups else {}
    addresses = [_typed_address("x;" + a) or a for a in
                 re.split(r"[,\s]+", fields.get("original-rcpt-to", "")) if "@" in a]
    original = _returned_message(message)
    if not addresses and original is not None:
        addresses = [a for _, a in getaddresses(original.get_all("To", [])) if "@" in a]
    findings = tuple(Finding(address=a, severity=None, status=fields.get("feedback-type", ""),
                             diagnostic="complaint: " + (fields.get("feedback-type") or
                                                         "abuse"))
                     for a in addresses)
    return Report("complaint", report_id, delivered, _returned_ids(message), findings,
                  why="" if findings else "a complaint that names no recipient")


# --- auto-replies (RFC 3834) -----------------------------------------------------------------

def _is_autoreply(message: Message) -> bool:
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if any(message.get(name) is not None for name in _AUTO_HEADERS):
        return True
    if str(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(_one_line(str(message.get("Subject", "")))))


def _reply_ids(message: Message) -> tuple[str, ...]:
    """The Message-IDs a reply answers (In-Reply-To, References)."""
    text = " ".join(str(message.get(name, "")) for name in ("In-Reply-To", "References"))
    return tuple(dict.fromkeys(_ANGLE_ID.findall(text)))


# --- plain-text bounces ----------------------------------------------------------------------

_QMAIL = "This is the qmail-send program"
_EXIM = "This message was created automatically by mail delivery software"
_GENERIC_SUBJECT = re.compile(r"(undeliver|delivery (status notification|failure|failed)|"
                              r"mail delivery failed|returned mail|failure notice|"
                              r"delivery has failed)", re.I)


def _plain_bounce(message: Message, report_id: str, delivered: tuple[str, ...]
                  ) -> Report | None:
    sender = str(message.get("From", "")).lower()
    subject = _one_line(str(message.get("Subject", "")))
    from_daemon = "mailer-daemon" in sender or "postmaster" in sender
    if not (from_daemon or _GENERIC_SUBJECT.search(subject)):
        return None
    text = _text_of(message)
    ids = tuple(dict.fromkeys(_ANGLE_ID.findall(
        " ".join(re.findall(r"(?im)^message-id:\s*(<[^>]+>)", text)))))
    if _QMAIL in text:
        head, _, _ = text.partition("--- Below this line is a copy of the message.")
        found = re.findall(r"(?m)^<([^<>\s@]+@[^<>\s]+)>:\s*\n((?:(?!<).*\n?)*)", head)
        findings = [_plain_finding(address, reason) for address, reason in found]
    elif _EXIM in text:
        temporary = re.search(r"has not yet been delivered|temporary|delayed", text, re.I)
        failed = text.partition("address(es) failed:")[2] or text.partition(
            "address(es) deferred:")[2]
        head = re.split(r"\n-{3,}|\n\s*\n\s*\n|Reporting-MTA|------ This is a copy", failed)[0]
        findings = [_plain_finding(address, head, soft=bool(temporary))
                    for address in dict.fromkeys(_ADDRESS.findall(head))]
    else:
        status = _status(text)
        if not status:
            return None
        # the first address the text names that is neither the daemon nor us
        addresses = [a for a in dict.fromkeys(_ADDRESS.findall(text))
                     if a.lower() not in sender and a not in delivered][:1]
        findings = [_plain_finding(a, text) for a in addresses]
    findings = [f for f in findings if f.address]
    if not findings:
        return None
    return Report("bounce", report_id, delivered, ids, tuple(findings))


def _plain_finding(address: str, reason: str, soft: bool = False) -> Finding:
    status = _status(reason)
    if not status:
        status = "4.0.0" if soft else "5.0.0"
    hard = status.startswith("5") and not soft
    return Finding(address=address.strip("<>.,;:"), severity="hard" if hard else "soft",
                   status=status, diagnostic=_one_line(reason)[:300])


def _text_of(message: Message) -> str:
    """The text parts of a message, decoded, up to 256 KB."""
    texts: list[str] = []
    size = 0  # kept as it grows: summed anew at each part, 30,000 parts took seconds
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    texts.append(payload.decode(charset, "replace"))
                except LookupError:
                    texts.append(payload.decode("utf-8", "replace"))
                size += len(texts[-1])
        if size > 256 * 1024:
            break
    return "\n".join(texts).replace("\r\n", "\n")


# --- common ----------------------------------------------------------------------------------

def _first_part(message: Message, types: tuple[str, ...]) -> Message | None:
    for part in message.walk():
        if part.get_content_type() in types:
            return part
    return None


def _returned_message(message: Message) -> Message | None:
    """The original message a report returns: whole (message/rfc822) or its headers."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            return HeaderParser(policy=compat32).parsestr(text)
    return None


def _returned_ids(message: Message) -> tuple[str, ...]:
    original = _returned_message(message)
    ids = []
    if original is not None:
        ids += _ANGLE_ID.findall(str(original.get("Message-ID", "")))
    ids += _reply_ids(message)
    return tuple(dict.fromkeys(ids))


def _own_id(message: Message) -> str:
    found = _ANGLE_ID.findall(str(message.get("Message-ID", "")))
    return found[0] if found else ""


def _delivered_to(message: Message) -> tuple[str, ...]:
    """The addresses this report was delivered to, most telling first: the envelope
    recipient that the receiving server recorded, then the To field."""
    found: list[str] = []
    for name in ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To"):
        for _, address in getaddresses([str(v) for v in message.get_all(name, [])]):
            if "@" in address:
                found.append(address.strip())
    return tuple(dict.fromkeys(found))


def _one_line(text: str) -> str:
    return " ".join(text.split())
