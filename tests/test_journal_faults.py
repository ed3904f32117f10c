"""A journal that is damaged, read-only or on a full disk: one Error line, exit 2, nothing
sent on what it says, and whatever it holds still right once the fault is gone."""

from __future__ import annotations

import contextlib
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SMTP_BLOCK, CampaignDir
from .smtpserver import Server

PEOPLE = [["email", "name"], *[[f"p{i}@example.org", f"Person {i}"] for i in range(40)]]


@pytest.fixture
def server():
    server = Server()
    yield server
    server.stop()


def mailmerge(c: CampaignDir, *args: str, file_limit: int | None = None
              ) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process; ``file_limit`` caps the size of any file it writes
    (RLIMIT_FSIZE), which SQLite meets as a disk that cannot take more."""
    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "mailmerge", args[0],
                           str(c.folder / "campaign.yaml"), *args[1:]],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def states(c: CampaignDir) -> dict[str, str]:
    db = sqlite3.connect(c.folder / "test.journal.sqlite")
    try:
        return dict(db.execute("SELECT key, state FROM recipients").fetchall())
    except sqlite3.OperationalError:  # the disk was full before the table was made
        return {}
    finally:
        db.close()


def sent_journal(basic, server: Server) -> CampaignDir:
    c = basic(SMTP_BLOCK.format(port=server.port), rows=PEOPLE[:6])
    done = mailmerge(c, "send", "--yes", "-q")
    assert done.returncode == 0, done.stderr
    return c


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "header":
        data[:64] = b"garbage!" * 8
    elif how == "page":
        data[4096:8192] = b"\xde\xad" * 2048
    else:  # truncated
        del data[5000:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["header", "page", "truncated"])
@pytest.mark.parametrize("command", [("status",), ("resolve",), ("send", "--yes")])
def test_a_damaged_journal_is_one_error_line_and_nothing_is_sent(basic, server, how: str,
                                                                  command: tuple[str, ...]
                                                                  ) -> None:
    c = sent_journal(basic, server)
    journal = c.folder / "test.journal.sqlite"
    damage(journal, how)
    before = len(server.handler.received)
    done = mailmerge(c, *command)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error_line(done)
    assert line.startswith(f"Error: {journal}: the journal is damaged (")
    assert line.endswith("); restore it from a backup if you have one; `send --restart` begins "
                         "a new journal and keeps the damaged one beside it, but sends "
                         "everyone again")
    assert len(server.handler.received) == before


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """Make files and folders unwritable even for root (chattr +i), or skip the test."""
    done: list[Path] = []
    try:
        for path in paths:
            if shutil.which("chattr") is None or subprocess.run(
                    ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("cannot make a file immutable here (chattr +i)")
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_journal_can_be_read_by_status_but_not_sent_on(basic, server) -> None:
    c = sent_journal(basic, server)
    (c.folder / "people.csv").write_text("email,name\n" + "".join(
        f"p{i}@example.org,Person {i}\n" for i in range(8)))  # three more to send
    journal = c.folder / "test.journal.sqlite"
    before = len(server.handler.received)
    with immutable(journal, c.folder):
        status = mailmerge(c, "status")
        assert status.returncode == 0, status.stderr
        assert "sent 5" in status.stdout
        done = mailmerge(c, "send", "--yes", "-q")
    assert done.returncode == 2
    assert "Error: " in one_error_line(done)
    assert len(server.handler.received) == before  # nothing went without its record
    again = mailmerge(c, "send", "--yes", "-q")
    assert again.returncode == 0, again.stderr
    assert sorted(server.handler.by_recipient().values()) == [1] * 8


@pytest.mark.parametrize("room", [24_000, 60_000, 120_000])
def test_a_journal_that_cannot_grow_stops_the_run_and_loses_nobody(basic, server,
                                                                     room: int) -> None:
    c = basic(SMTP_BLOCK.format(port=server.port), rows=PEOPLE)
    done = mailmerge(c, "send", "--yes", "-q", file_limit=room)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error_line(done)
    assert "the journal cannot be" in line and "disk" in line, line
    # what the journal says is what the server got: nobody sent without a record, or
    # recorded without being sent
    recorded = states(c) if (c.folder / "test.journal.sqlite").exists() else {}
    got = set(server.handler.by_recipient())
    sent = {k for k, s in recorded.items() if s == "sent"}
    uncertain = {k for k, s in recorded.items() if s == "sending"}
    # nobody recorded as sent without being sent; nobody sent without a record: a 250
    # whose `sent` mark could not be written leaves that recipient uncertain, never pending
    assert sent <= got <= sent | uncertain
    again = mailmerge(c, "send", "--yes", "-q")
    assert again.returncode == (1 if uncertain else 0), again.stderr
    if uncertain:  # settled as a user would, from what the server's log says
        settle = mailmerge(c, "resolve", "--sent", ",".join(sorted(uncertain & got)))
        assert settle.returncode == 0, settle.stdout + settle.stderr
    assert sorted(server.handler.by_recipient().values()) == [1] * 40
