"""``mailmerge drafts``: each rendered message in the IMAP Drafts folder, to send by hand.

For small personal merges many people want to glance at each message in their own mail
client and send it from there. Each message is APPENDed with the flags \\Draft and \\Seen
to ``imap.drafts``. Its Message-ID is made from the campaign and the row's recipient key
(``mm-draft.<key>.<content>@domain``), so running again finds the draft a row already
has: an unchanged one is left alone, a changed one is replaced with ``replace`` (the new
draft is stored before the old one is deleted, so a failure never loses one; a server
without UIDPLUS cannot delete one message alone, and replacing is refused there). Bcc is
kept as a header field, which the mail client sends to and removes. Drafts are not
DKIM-signed (the client makes the message anew when it sends it). Nothing is sent, and
no journal is touched.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..campaign import Campaign
from ..errors import ConfigError, MailmergeError, SendError
from ..message import addresses_header
from ..pipeline import Outcome, iter_messages
from ..render import Rendered
from .mailbox import IMAP_ERRORS, Mailbox, decode_folder_name, folder_name

PREFIX = "mm-draft."
_DKIM = re.compile(rb"\ADKIM-Signature:.*?\r\n(?![ \t])", re.S | re.I)


@dataclass
class DraftReport:
    """What ``save_drafts`` did, row by row."""

    stored: list[int] = field(default_factory=list)  # new drafts
    replaced: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)  # already there as they are
    changed: list[int] = field(default_factory=list)  # there, but different: not replaced
    problems: list[Outcome] = field(default_factory=list)
    skipped: int = 0  # left out by `where:` or suppressed


def _digest(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def row_tag(campaign: Campaign, key: str) -> str:
    """The part of a draft's Message-ID that names its campaign and recipient."""
    return PREFIX + _digest(campaign.name, key) + "."


def draft_message_id(campaign: Campaign, rendered: Rendered) -> str:
    """The same message for the same row has the same Message-ID; a changed one another."""
    content = _digest(
        rendered.subject, *map(str, (*rendered.from_, *rendered.to, *rendered.cc,
                                     *rendered.bcc, *rendered.reply_to)),
        str(rendered.sender or ""), *(f"{n}: {v}" for n, v in rendered.headers),
        *rendered.unsubscribe, rendered.list_id or "", rendered.text or "\0",
        rendered.html or "\0",
        *(f"{p.filename}:{hashlib.sha256(p.data).hexdigest()}"
          for p in (*rendered.images, *rendered.attachments)))
    domain = rendered.from_[0].domain or "mailmerge.invalid"
    return f"<{row_tag(campaign, rendered.key)}{content}@{domain}>"


def draft_bytes(data: bytes, rendered: Rendered, smtputf8: bool) -> bytes:
    """The message as a draft: no DKIM signature, and Bcc as a header field."""
    data = _DKIM.sub(b"", data, count=1)
    if rendered.bcc:
        line = addresses_header("Bcc", rendered.bcc) + "\r\n"
        data = line.encode("utf-8" if smtputf8 else "ascii") + data
    return data


class _Drafts:
    """The drafts folder over one IMAP session."""

    def __init__(self, campaign: Campaign, password: str | None) -> None:
        assert campaign.imap is not None
        self.settings = campaign.imap
        self.folder = campaign.imap.drafts
        self.mailbox = Mailbox(campaign.imap, password)

    def open(self) -> dict[str, list[tuple[bytes, str]]]:
        """Select the folder; the drafts this tool stored, by row tag: (UID, Message-ID)."""
        imap = self.mailbox.session()
        status, _ = imap.select(folder_name(self.folder))
        if status != "OK":
            raise ConfigError(
                f"the IMAP folder {self.folder!r} does not exist at {self.settings.host}",
                hint="set `imap.drafts` to one of its folders: " + ", ".join(self._folders())
                     + " (Gmail: \"[Gmail]/Drafts\"; Microsoft 365: Drafts)")
        found: dict[str, list[tuple[bytes, str]]] = {}
        mailbox = self.mailbox
        for uid, message_id in mailbox.message_ids(mailbox.search_message_id(PREFIX)):
            tag = message_id.strip("<>").split("@")[0].rsplit(".", 1)[0] + "."
            found.setdefault(tag, []).append((uid, message_id))
        return found

    def _folders(self) -> list[str]:
        status, data = self.mailbox.session().list()
        names = []
        for line in data if status == "OK" else []:
            if isinstance(line, bytes):
                match = re.search(rb'"(?:[^"\\]|\\.)*"\s+(?:"((?:[^"\\]|\\.)*)"|(\S+))$', line)
                if match:
                    names.append(decode_folder_name(
                        (match.group(1) or match.group(2)).decode("ascii", "replace")))
        return sorted(names) or ["(none listed)"]

    def store(self, data: bytes) -> None:
        status, reply = self.mailbox.session().append(
            folder_name(self.folder), r"(\Draft \Seen)",
            imaplib.Time2Internaldate(time.time()), data)
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND refused: {reply!r}")

    def can_replace(self) -> bool:
        """Whether an old draft can be deleted alone: UID EXPUNGE (RFC 4315, UIDPLUS). A
        plain EXPUNGE would also remove every other message marked deleted in the folder,
        the user's own drafts among them."""
        return self.mailbox.capable("UIDPLUS")

    def delete(self, uids: list[bytes]) -> None:
        """Delete these messages, and only them (see :meth:`can_replace`)."""
        imap = self.mailbox.session()
        status, reply = imap.uid("STORE", b",".join(uids).decode(), "+FLAGS.SILENT",
                                 r"(\Deleted)")
        if status != "OK":
            raise imaplib.IMAP4.error(f"the old draft could not be deleted: {reply!r}")
        self.mailbox.expunge_uids(uids)

    def close(self) -> None:
        self.mailbox.close()


def save_drafts(campaign: Campaign, password: str | None, *, limit: int | None = None,
                rows: Collection[int] | None = None, replace: bool = False,
                progress: Callable[[Outcome], None] | None = None) -> DraftReport:
    """Store each good row's message as a draft (see the module's docstring). Raises
    ConfigError without `imap:` or when the folder does not exist, SendError when the
    server fails part-way (the drafts stored so far stay)."""
    if campaign.imap is None:
        raise ConfigError("drafts go to an IMAP mailbox, and the campaign has no `imap:`",
                          path=campaign.path, hint="add `imap: {host: ..., username: ...}` "
                                                   "(and `drafts:` if the folder is not "
                                                   "called Drafts)")
    report = DraftReport()
    drafts = _Drafts(campaign, password)
    try:
        existing = drafts.open()
        for outcome in iter_messages(campaign, limit=limit, rows=rows,
                                     message_id=lambda r: draft_message_id(campaign, r)):
            if progress is not None:
                progress(outcome)
            if outcome.skipped:
                report.skipped += 1
                continue
            if outcome.built is None:
                report.problems.append(outcome)
                continue
            built = outcome.built
            there = existing.get(row_tag(campaign, built.rendered.key), [])
            if any(message_id == built.message_id for _, message_id in there):
                report.unchanged.append(outcome.row)
                continue
            if there and not replace:
                report.changed.append(outcome.row)
                continue
            if there and not drafts.can_replace():
                raise SendError(
                    f"the IMAP server at {campaign.imap.host} cannot delete one message "
                    "alone (it lacks UIDPLUS), so the old draft of row "
                    f"{outcome.row} is not replaced: a plain EXPUNGE would also remove "
                    "every other message marked deleted in "
                    f"{campaign.imap.drafts!r}",
                    hint="delete the old drafts of the changed rows in your mail client "
                         "and run again without --replace (the drafts stored so far stay)")
            drafts.store(draft_bytes(built.data, built.rendered, built.smtputf8))
            if there:
                drafts.delete([uid for uid, _ in there])
                report.replaced.append(outcome.row)
            else:
                report.stored.append(outcome.row)
    except MailmergeError:
        raise
    except IMAP_ERRORS as exc:
        raise SendError(f"the IMAP server at {campaign.imap.host} failed: {exc}",
                        hint="the drafts stored so far stay; run again to store the rest "
                             "(none is stored twice)") from exc
    finally:
        drafts.close()
    return report
