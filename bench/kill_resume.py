"""Kill `mailmerge send` at random moments against a real server, resume, and count.

    python bench/kill_resume.py --port 2525 --rows 2000 --kills 20 --concurrency 4 \
        [--imap-port 1143 --imap-user USER [--lookup | --resend-last]]
        # the IMAP password in $MAILMERGE_IMAP_PASSWORD

Generates a campaign under bench/work/, sends it to HOST:PORT (plain SMTP), SIGKILLs the
sender at random moments, resumes each time, and prints how many recipients each kill
left uncertain, the journal's counts and, with --imap-port, what the mailbox received
per recipient: nobody may be missing, and nobody may have more than one copy unless the
tool named them uncertain and was told to resend them.

--lookup Bcc's every message to an archive address delivered into the same mailbox and
sets `imap: {copy: false, lookup: INBOX}`: each resume settles the uncertain from that
evidence, so the end must be 0 lost, 0 duplicates, nobody uncertain, exit 0, and the
journal (`status --csv`) must agree with the mailbox recipient by recipient.
--resend-last (without --lookup) adds --resend-uncertain to the last run: duplicates are
then allowed only among the recipients the tool named uncertain.
"""

from __future__ import annotations

import argparse
import collections
import csv
import email
import email.policy
import imaplib
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORK = Path(__file__).resolve().parent / "work" / "kill_resume"


ARCHIVE = "archive@example.test"


def make_campaign(rows: int, host: str, port: int, concurrency: int = 1,
                  lookup: tuple[int, str] | None = None) -> Path:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "mail.txt").write_text("Hello {{ name }}, this is message {{ n }}.\n")
    with open(WORK / "people.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "n"])
        for i in range(rows):
            writer.writerow([f"kr{i:05d}@example.test", f"Person {i}", i])
    (WORK / "campaign.yaml").write_text(f"""\
name: killresume
from: "Bench <bench@example.test>"
subject: "Kill/resume {{{{ n }}}}"
recipients: people.csv
templates: {{text: mail.txt}}
smtp: {{host: "{host}", port: {port}, security: none, retry_delay: 1, retry_for: 120,
       concurrency: {concurrency}}}
""")
    if lookup is not None:
        imap_port, user = lookup
        with open(WORK / "campaign.yaml", "a") as handle:
            handle.write(f"bcc: {ARCHIVE}\n"
                         f"imap: {{host: \"{host}\", port: {imap_port}, security: none, "
                         f"username: {user}, copy: false, lookup: INBOX, lookup_wait: 5}}\n")
    return WORK / "campaign.yaml"


def _query(campaign: Path, sql: str) -> dict[Any, Any]:
    """Two columns of the journal as a mapping; empty before the first run made it."""
    path = campaign.parent / "killresume.journal.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return dict(db.execute(sql))
    finally:
        db.close()


def journal(campaign: Path) -> dict[str, int]:
    return _query(campaign, "SELECT state, COUNT(*) FROM recipients GROUP BY state")


def journal_states(campaign: Path) -> dict[str, str]:
    return _query(campaign, "SELECT key, state FROM recipients")


def sent_count(campaign: Path) -> int:
    return journal(campaign).get("sent", 0)


def uncertain_now(campaign: Path) -> set[str]:
    return {key for key, state in journal_states(campaign).items() if state == "sending"}


def named_uncertain(output: str) -> set[str]:
    return set(re.findall(r"^    row \d+: (\S+)$", output, re.M))


def imap_counts(host: str, port: int, user: str, password: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    with imaplib.IMAP4(host, port) as imap:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        for num in data[0].split():
            _, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (X-ORIGINAL-TO)])")
            header = email.message_from_bytes(parts[0][1], policy=email.policy.default)
            if header["X-Original-To"]:
                counts[str(header["X-Original-To"]).strip()] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--gap", type=float, default=2.0,
                        help="a kill comes 0.6 s plus up to this many seconds after a start")
    parser.add_argument("--imap-port", type=int)
    parser.add_argument("--imap-user")
    parser.add_argument("--lookup", action="store_true")
    parser.add_argument("--resend-last", action="store_true")
    args = parser.parse_args()
    if args.lookup and not (args.imap_port and args.imap_user):
        parser.error("--lookup needs --imap-port and --imap-user")
    if not re.match(r"^(127\.\d+\.\d+\.\d+|localhost|::1)$", args.host):
        parser.error("only loopback hosts: this sends real mail")
    rng = random.Random(args.seed)
    campaign = make_campaign(args.rows, args.host, args.port, args.concurrency,
                             (args.imap_port, args.imap_user) if args.lookup else None)
    command = [sys.executable, "-m", "mailmerge", "send", str(campaign), "--yes", "-q"]
    uncertain: set[str] = set()
    per_kill: list[int] = []
    kills = 0
    started = time.monotonic()
    for _ in range(args.kills):
        before = sent_count(campaign)
        if before >= args.rows - 10:
            break
        earlier = uncertain_now(campaign)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        time.sleep(0.6 + rng.random() * args.gap)  # validation takes about half a second
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate()
        uncertain |= named_uncertain(output)
        per_kill.append(len(uncertain_now(campaign) - earlier))  # what this kill made uncertain
        kills += 1
    final = subprocess.run(command + (["--resend-uncertain"] if args.resend_last else []),
                           capture_output=True, text=True)
    uncertain |= named_uncertain(final.stdout)
    counts = journal(campaign)
    print(f"rows {args.rows}, concurrency {args.concurrency}, kills {kills}, final exit "
          f"{final.returncode}, {time.monotonic() - started:.1f} s")
    print(f"made uncertain by each kill: {per_kill} (at most {max(per_kill, default=0)}, "
          f"{sum(per_kill)} in all; bound: {args.concurrency} per kill)")
    print("journal:", counts)
    print(f"uncertain named by the tool: {len(uncertain)}")
    if args.imap_port:
        # delivery happens after the SMTP reply: count until the mailbox stops growing
        received: collections.Counter[str] = collections.Counter()
        for _ in range(30):
            time.sleep(2)
            now = imap_counts(args.host, args.imap_port, args.imap_user,
                              os.environ["MAILMERGE_IMAP_PASSWORD"])
            if now == received:
                break
            received = now
        wanted = [f"kr{i:05d}@example.test" for i in range(args.rows)]
        lost = [a for a in wanted if received[a] == 0]
        missing = [a for a in lost if a not in uncertain]
        duplicates = [a for a in wanted if received[a] > 1]
        unexplained = [a for a in duplicates if a not in uncertain or not args.resend_last]
        arrived = sum(1 for a in uncertain if received[a])
        states = journal_states(campaign)
        disagree = [a for a in wanted if (states.get(a) == "sent") != (received[a] == 1)]
        print(f"mailbox: {sum(received[a] for a in wanted)} messages for {len(wanted)} "
              f"recipients; lost {len(lost)} (not named uncertain: {len(missing)}); "
              f"duplicated {len(duplicates)} (not explained: {len(unexplained)}); of the "
              f"uncertain, {arrived} arrived and {len(uncertain) - arrived} did not; "
              f"journal and mailbox disagree on {len(disagree)} recipients"
              + (f" (e.g. {disagree[:3]})" if disagree else ""))
        if args.lookup:
            return 1 if (lost or duplicates or disagree or counts.get("sending")
                         or final.returncode) else 0
        return 1 if missing or unexplained else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
