"""Kill `mailmerge send` at random moments against a real server, resume, and count.

    python bench/kill_resume.py --port 2525 --rows 2000 --kills 20 \
        [--imap-port 1143 --imap-user USER]   # password in $MAILMERGE_IMAP_PASSWORD

Generates a campaign under bench/work/, sends it to HOST:PORT (plain SMTP), SIGKILLs the
sender at random moments, resumes each time, then prints the journal's counts and, with
--imap, what the mailbox received per recipient: nobody may be missing, and nobody may
have more than one copy unless the tool named them uncertain.
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

WORK = Path(__file__).resolve().parent / "work" / "kill_resume"


def make_campaign(rows: int, host: str, port: int) -> Path:
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
smtp: {{host: "{host}", port: {port}, security: none, retry_delay: 1, retry_for: 120}}
""")
    return WORK / "campaign.yaml"


def journal(campaign: Path) -> dict[str, int]:
    db = sqlite3.connect(campaign.parent / "killresume.journal.sqlite")
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM recipients GROUP BY state"))
    finally:
        db.close()


def sent_count(campaign: Path) -> int:
    path = campaign.parent / "killresume.journal.sqlite"
    if not path.exists():
        return 0
    return journal(campaign).get("sent", 0)


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
    parser.add_argument("--imap-port", type=int)
    parser.add_argument("--imap-user")
    args = parser.parse_args()
    if not re.match(r"^(127\.\d+\.\d+\.\d+|localhost|::1)$", args.host):
        parser.error("only loopback hosts: this sends real mail")
    rng = random.Random(args.seed)
    campaign = make_campaign(args.rows, args.host, args.port)
    command = [sys.executable, "-m", "mailmerge", "send", str(campaign), "--yes", "-q"]
    uncertain: set[str] = set()
    kills = 0
    started = time.monotonic()
    for _ in range(args.kills):
        before = sent_count(campaign)
        if before >= args.rows - 10:
            break
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        time.sleep(0.6 + rng.random() * 2.0)  # validation takes about half a second
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate()
        uncertain |= named_uncertain(output)
        kills += 1
    final = subprocess.run(command, capture_output=True, text=True)
    uncertain |= named_uncertain(final.stdout)
    counts = journal(campaign)
    print(f"rows {args.rows}, kills {kills}, final exit {final.returncode}, "
          f"{time.monotonic() - started:.1f} s")
    print("journal:", counts)
    print(f"uncertain named by the tool: {len(uncertain)}")
    if args.imap_port:
        time.sleep(3)  # delivery happens after the SMTP reply
        received = imap_counts(args.host, args.imap_port, args.imap_user,
                               os.environ["MAILMERGE_IMAP_PASSWORD"])
        wanted = [f"kr{i:05d}@example.test" for i in range(args.rows)]
        missing = [a for a in wanted if received[a] == 0 and a not in uncertain]
        duplicates = [a for a in wanted if received[a] > 1]
        unexplained = [a for a in duplicates if a not in uncertain]
        arrived = sum(1 for a in uncertain if received[a])
        print(f"mailbox: {sum(received[a] for a in wanted)} messages for {len(wanted)} "
              f"recipients; missing {len(missing)}; duplicated {len(duplicates)} "
              f"(not named uncertain: {len(unexplained)}); of the uncertain, {arrived} "
              f"arrived and {len(uncertain) - arrived} did not")
        return 1 if missing or unexplained else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
