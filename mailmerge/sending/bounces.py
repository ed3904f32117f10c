"""Reading bounces and complaints back: each report matched to a recipient of this
campaign, recorded in its journal, and the address suppressed.

A report is matched by the address it was delivered to (the ``return_path`` a message
went out with: VERP), else by the Message-ID of the message it returns, else (only when
the campaign has no ``return_path``) by the recipient it names. A report that matches
nothing of this campaign is another campaign's, and is left where it is. A recipient a
report names must be one the matched message went to: otherwise the report is skipped
as claiming someone this campaign never mailed.

Every report is remembered by its Message-ID (or digest), in the same transaction as
what it says, so reading the mailbox again counts nothing twice; the suppression file is
written (and synced) first, so a crash between the two leaves the address suppressed
and the report to be read again, which then changes nothing. Only recorded reports are
deleted or moved, and only where the server can remove one message alone. A report not
understood stays, remembered by where it lies (its mark), and is not fetched again.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..addresses import address_key
from ..campaign import Campaign
from ..errors import SendError
from ..reports import Finding, Report, read_report
from ..suppress import load_suppressions
from .journal import Journal, Record, State
from .mailbox import IMAP_ERRORS, MAX_MESSAGE_BYTES, Item, ReportBox, open_reports


@dataclass
class BounceReport:
    """What one reading of the mailbox found."""

    read: int = 0
    hard: int = 0  # recipients bounced for good (now suppressed)
    soft: int = 0  # soft bounces counted
    soft_suppressed: int = 0  # recipients suppressed after `soft_limit` soft bounces
    complaints: int = 0
    autoreplies: int = 0
    already: int = 0  # reports recorded by an earlier reading
    others: int = 0  # reports of another campaign, or of none: left alone
    unknown: int = 0  # not understood: left alone
    unknown_before: int = 0  # of those, found so on an earlier reading: not fetched again
    skipped: int = 0  # understood but not believed (a recipient never mailed): left alone
    removed: int = 0  # deleted or moved, per `after`
    kept_here: bool = False  # the server cannot remove one message alone: recorded ones stay
    lines: list[str] = field(default_factory=list)  # one per report left alone, and why


class _Index:
    """The journal's recipients by return path, Message-ID and address."""

    def __init__(self, journal: Journal) -> None:
        self.by_return_path: dict[str, str] = {}
        self.by_message_id: dict[str, str] = {}
        self.by_address: dict[str, str] = {}
        self.records: dict[str, Record] = {}
        for record in journal.records():
            self.records[record.key] = record
            if record.return_path:
                self.by_return_path.setdefault(address_key(record.return_path), record.key)
            if record.message_id:
                self.by_message_id[record.message_id] = record.key
            for address in record.envelope.split():
                self.by_address.setdefault(address_key(address), record.key)
        # a return path that several records share (no VERP) tells no one apart
        uses = Counter(address_key(r.return_path) for r in self.records.values()
                       if r.return_path)
        for address, count in uses.items():
            if count > 1:
                del self.by_return_path[address]

    def envelope(self, key: str) -> set[str]:
        record = self.records.get(key)
        return {address_key(a) for a in record.envelope.split()} if record else set()

    def primary(self, key: str) -> str:
        """The row's own address: the first of its envelope (its To)."""
        record = self.records.get(key)
        addresses = record.envelope.split() if record else []
        return address_key(addresses[0]) if addresses else ""


def read_bounces(campaign: Campaign, journal: Journal, password: str | None,
                 progress: Callable[[BounceReport], None] | None = None) -> BounceReport:
    """Read every report in the `bounces:` mailbox into ``journal``. Raises SendError when
    the mailbox cannot be read (the journal then holds what was recorded before)."""
    settings = campaign.bounces
    assert settings is not None
    where = f"{settings.protocol.upper()} {settings.host}:{settings.effective_port}"
    index = _Index(journal)
    suppressed = _Suppressions(settings.suppress_to, campaign.name)
    result = BounceReport()
    try:
        box = open_reports(settings, password)
    except IMAP_ERRORS as exc:
        raise SendError(f"cannot read the bounces mailbox at {where}: {exc}",
                        hint=f"check `bounces:` and the password in ${settings.password_env}"
                        ) from exc
    try:
        move_to = settings.move_to if settings.after == "move" else None
        for item in box.listing():
            result.read += 1
            recorded = _read_one(box, item, campaign, journal, index, suppressed, result)
            if recorded and settings.after != "keep":
                if box.remove(item, move_to):
                    result.removed += 1
                else:
                    result.kept_here = True
            if progress is not None:
                progress(result)
    except IMAP_ERRORS as exc:
        raise SendError(f"reading the bounces mailbox at {where} failed: {exc}",
                        hint="run `mailmerge bounces` again: what was recorded stays, and "
                             "nothing is counted twice") from exc
    finally:
        try:
            box.close()
        except IMAP_ERRORS:
            pass
    return result


def _read_one(box: ReportBox, item: Item, campaign: Campaign, journal: Journal,
              index: _Index, suppressed: _Suppressions, result: BounceReport) -> bool:
    """Fetch and record one message, unless it was found not understood before (by its
    lasting mark) or is too large to be a report; True when it may go."""
    if item.mark and journal.report_seen(item.mark):
        result.unknown += 1
        result.unknown_before += 1
        return False
    if item.size > MAX_MESSAGE_BYTES:
        result.unknown += 1
        result.lines.append(f"not read: message {item.number} has {item.size} bytes, more "
                            f"than the {MAX_MESSAGE_BYTES // (1024 * 1024)} MB a report may "
                            "have")
        return False
    report = read_report(box.fetch(item))
    recorded = _handle(report, campaign, journal, index, suppressed, result)
    if report.kind == "unknown" and item.mark and not recorded:
        with journal.batch():  # remembered where it lies: the next reading skips it
            journal.record_report(item.mark, "unknown", None)
    return recorded


def _handle(report: Report, campaign: Campaign, journal: Journal, index: _Index,
            suppressed: _Suppressions, result: BounceReport) -> bool:
    """Record one report; True when it is recorded (now or before), and so may go."""
    if journal.report_seen(report.report_id):
        result.already += 1
        return True
    if report.kind == "unknown":
        result.unknown += 1
        result.lines.append(f"not understood: {report.why} ({report.report_id})")
        return False
    key = _match(report, index, verp=campaign.return_path is not None)
    if key is None:
        result.others += 1
        return False
    if report.kind == "autoreply":
        with journal.batch():
            journal.record_report(report.report_id, "autoreply", key)
        result.autoreplies += 1
        return True
    envelope, primary = index.envelope(key), index.primary(key)
    named = [_as_sent(f, envelope) for f in report.findings]
    findings = [f for f in named if address_key(f.address) in envelope]
    strangers = [f.address for f in named if f not in findings]
    if not findings:
        result.skipped += 1
        result.lines.append(f"skipped: the report names {', '.join(strangers) or 'no one'}, "
                            f"whom the message it answers (row "
                            f"{index.records[key].row}) did not go to ({report.report_id})")
        return False
    settings = campaign.bounces
    assert settings is not None
    # per finding: is it the row's own address, a soft bounce, the row's new state, and
    # is the address suppressed
    plan: list[tuple[Finding, bool, bool, State | None, bool]] = []
    for finding in findings:
        own = address_key(finding.address) == primary
        if report.kind == "complaint":
            plan.append((finding, own, False, "complained" if own else None, True))
        elif finding.severity == "hard":
            plan.append((finding, own, False, "bounced" if own else None, True))
        else:
            limit = own and index.records[key].soft_bounces + 1 >= settings.soft_limit
            plan.append((finding, own, True, "bounced" if limit else None, limit))
    for finding, _own, _soft, _state, suppress in plan:  # first the file: it never misses one
        if suppress:
            suppressed.add(finding, report.kind)
    with journal.batch():
        for finding, own, soft, state, suppress in plan:
            if own:
                count = journal.note_bounce(key, state, finding.status, finding.diagnostic,
                                            soft=soft)
                index.records[key] = replace(index.records[key], soft_bounces=count)
            if report.kind == "complaint":
                result.complaints += 1
            elif soft:
                result.soft += 1
                result.soft_suppressed += int(suppress)
            else:
                result.hard += 1
        journal.record_report(report.report_id, report.kind, key)
    return True


def _as_sent(finding: Finding, envelope: set[str]) -> Finding:
    """The finding under the address the message went to: a report of a forwarded
    address names it as Final-Recipient, and the address mailed as Original-Recipient."""
    if (address_key(finding.address) not in envelope and finding.original
            and address_key(finding.original) in envelope):
        return replace(finding, address=finding.original)
    return finding


def _match(report: Report, index: _Index, verp: bool) -> str | None:
    """The key of the recipient a report is about, or None (another campaign's)."""
    for address in report.delivered_to:
        key = index.by_return_path.get(address_key(address))
        if key is not None:
            return key
    for message_id in report.message_ids:
        key = index.by_message_id.get(message_id)
        if key is not None:
            return key
    if verp:  # with VERP a real report names its row by address: a name alone is forgeable
        return None
    for finding in report.findings:
        for address in (finding.address, finding.original):
            key = index.by_address.get(address_key(address)) if address else None
            if key is not None:
                return key
    return None


class _Suppressions:
    """The file bounced and complaining addresses are appended to, each once."""

    def __init__(self, path: Path | None, campaign: str) -> None:
        self.path, self.campaign = path, campaign
        self.known: set[str] = set()
        if path is not None and path.exists():
            self.known = set(load_suppressions([path]))

    def add(self, finding: Finding, kind: str) -> None:
        key = address_key(finding.address)
        if self.path is None or key in self.known:
            return
        why = "complaint" if kind == "complaint" else (
            f"{finding.severity} bounce {finding.status}".strip())
        line = (f"{finding.address}  # {why}, {dt.date.today().isoformat()}, "
                f"campaign {self.campaign}\n")
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as handle:
            if new:
                handle.write("# Addresses that bounced or complained, written by "
                             "`mailmerge bounces`; list this file under `suppress:`\n")
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.known.add(key)
