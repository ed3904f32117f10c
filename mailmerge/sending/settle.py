"""Settling uncertain recipients: a run died while their message was with the server.

An SMTP transaction is all or nothing across its recipients, so a copy of the message in
a folder where accepted mail is bound to appear (the account's Sent folder at Gmail or
Microsoft 365, or an archive mailbox a relay Bcc's) proves that it was accepted. Each
uncertain recipient's Message-ID (kept in the journal, and reused by a resend) is looked
up there: found, it is ``sent``; still absent ``lookup_wait`` seconds after the message
was handed to the server, it is sent again with the same Message-ID. Where there is no
such folder, the user settles them by hand (``mailmerge resolve``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..campaign import Imap
from ..errors import ConfigError, JournalError, SendError
from .journal import Journal, Record
from .mailbox import IMAP_ERRORS, Mailbox

POLL = 2.0  # seconds between two looks at the folders while a copy may still arrive
Verdict = Literal["sent", "resend"]


@dataclass
class Settled:
    """What a lookup or a resolve did: recipients now sent, and those to be sent again."""

    sent: list[Record] = field(default_factory=list)
    resend: list[Record] = field(default_factory=list)


def look_up(journal: Journal, imap: Imap, password: str | None,
            records: Iterable[Record] | None = None, *,
            clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep,
            seen: Callable[[Record, Verdict], None] | None = None) -> Settled:
    """Settle uncertain ``records`` (default: all) by their Message-IDs in ``imap.lookup``.

    Raises SendError, leaving every record as it was, when the mailbox cannot be read
    (login refused, server unreachable, a folder missing): nothing is resent on a guess.
    """
    assert imap.lookup, "look_up needs `imap.lookup`"
    waiting = {r.message_id: r for r in (journal.records("sending") if records is None
                                         else records) if r.message_id}
    settled = Settled()
    mailbox = Mailbox(imap, password)
    try:
        while waiting:
            for folder in imap.lookup:
                for message_id in mailbox.find(folder, list(waiting)):
                    record = waiting.pop(message_id)
                    journal.mark(record.key, "sent", f"found in {folder} by its Message-ID "
                                 "(accepted before the run stopped)", remaining=[],
                                 settled="lookup")
                    settled.sent.append(record)
                    if seen is not None:
                        seen(record, "sent")
            now = clock()
            for message_id, record in list(waiting.items()):
                if now >= record.updated + imap.lookup_wait:
                    del waiting[message_id]
                    # deferred, due now: resent to the same recipients, same Message-ID
                    journal.mark(record.key, "deferred", f"not found in {' or '.join(imap.lookup)}"
                                 f" {imap.lookup_wait:g} s after it was sent: to be sent "
                                 "again with the same Message-ID")
                    settled.resend.append(record)
                    if seen is not None:
                        seen(record, "resend")
            if waiting:
                due = min(r.updated for r in waiting.values()) + imap.lookup_wait
                sleep(max(0.0, min(POLL, due - now)))
    except IMAP_ERRORS as exc:
        raise SendError(f"could not look up the uncertain recipients in the mailbox of "
                        f"{imap.username} at {imap.host}:{imap.effective_port}: "
                        f"{_reason(exc)}",
                        hint="check `imap:` (its host, port and security) and its password, "
                             "as the reason says; until the lookup works they "
                             "stay uncertain (nothing is resent on a guess), or settle "
                             "them by hand with `mailmerge resolve`") from exc
    finally:
        mailbox.close()
    return settled


def choose(journal: Journal, verdicts: Mapping[Verdict, Iterable[str]]
           ) -> dict[str, tuple[Record, Verdict]]:
    """Each uncertain recipient the names pick, with its verdict: by sheet row number or
    key, or ``all`` (every uncertain recipient no other verdict names). Pure reading.

    Raises JournalError when a name matches no uncertain recipient, ConfigError when one
    recipient gets both verdicts or ``all`` is given to both.
    """
    uncertain = list(journal.records("sending"))
    alls = [verdict for verdict, given in verdicts.items() if "all" in given]
    if len(alls) > 1:
        raise ConfigError("`all` cannot be both --sent and --resend",
                          hint="give `all` to one of them, and name the others by row")
    chosen: dict[str, tuple[Record, Verdict]] = {}
    for verdict, given in verdicts.items():
        for name in given:
            if name == "all":
                continue
            for record in _matching(journal, uncertain, name):
                if chosen.get(record.key, (record, verdict))[1] != verdict:
                    raise ConfigError(f"row {record.row} ({record.key}) cannot be both "
                                      "--sent and --resend", hint="name each recipient once")
                chosen[record.key] = (record, verdict)
    for verdict in alls:
        for record in uncertain:
            chosen.setdefault(record.key, (record, verdict))
    return chosen


def _matching(journal: Journal, uncertain: list[Record], name: str) -> list[Record]:
    """The uncertain recipients ``name`` picks. Raises JournalError when none."""
    matches = [r for r in uncertain
               if r.key == name or (name.isdigit() and r.row == int(name))]
    if not matches:
        known = journal.get(name) or next(
            (r for r in journal.records() if name.isdigit() and r.row == int(name)), None)
        state = f" (it is {known.state})" if known is not None else ""
        raise JournalError(f"{name!r} is not an uncertain recipient{state}",
                           path=journal.path,
                           hint="name uncertain recipients by sheet row or key; "
                                "`mailmerge resolve` lists them")
    return matches


def settle_by_hand(journal: Journal, chosen: Mapping[str, tuple[Record, Verdict]]
                   ) -> Settled:
    """Record the verdicts :func:`choose` made, all in one transaction: ``sent`` (they
    got the message) or ``resend`` (the next send sends it again, same Message-ID)."""
    settled = Settled()
    with journal.batch():
        for record, verdict in chosen.values():
            if verdict == "sent":
                journal.mark(record.key, "sent", "settled by hand: delivered", remaining=[],
                             settled="hand")
                settled.sent.append(record)
            else:
                journal.mark(record.key, "deferred", "settled by hand: to be sent again with "
                             "the same Message-ID")
                settled.resend.append(record)
    return settled


def names(text: str) -> list[str]:
    """Row numbers and keys as written on the command line: ``4,17 21`` or ``all``."""
    return [part for part in re.split(r"[,\s]+", text) if part]


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return re.sub(r"\s+", " ", text.removeprefix("b'").removesuffix("'")).strip() or (
        type(exc).__name__)
