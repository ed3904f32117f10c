"""The resume journal: one SQLite record per recipient, every change durable before use.

States: ``pending`` (known, not yet tried), ``sending`` (handed to the server; if the
process dies now the outcome is unknown: *uncertain*), ``sent``, ``deferred`` (a 4xx or a
lost connection; retried), ``failed`` (5xx, or invalid with --skip-invalid), ``skipped``.
The journal is in WAL mode with synchronous=FULL, and every state change is its own
transaction, so a kill at any moment leaves it consistent.

``settled`` says how a recipient's outcome became known: from the server's ``reply``, by
a ``lookup`` of its Message-ID in the mailbox (an uncertain recipient found there), or
by ``hand`` (``mailmerge resolve``).
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import functools
import inspect
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Self, get_args

from ..errors import JournalError
from ..safecsv import csv_safe

State = Literal["pending", "sending", "sent", "deferred", "failed", "skipped", "bounced",
                "complained"]
STATES: tuple[State, ...] = get_args(State)
# invalid: a row with problems, recorded as failed by --skip-invalid until it is fixed
Settled = Literal["reply", "lookup", "hand", "invalid"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recipients (
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT NOT NULL DEFAULT '',
    message_id TEXT,
    content_hash TEXT,
    envelope TEXT NOT NULL DEFAULT '',
    remaining TEXT NOT NULL DEFAULT '',
    next_attempt REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    seen_run INTEGER NOT NULL DEFAULT 0,
    settled TEXT NOT NULL DEFAULT '',
    return_path TEXT NOT NULL DEFAULT '',
    status_code TEXT NOT NULL DEFAULT '',
    diagnostic TEXT NOT NULL DEFAULT '',
    soft_bounces INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recipients_state ON recipients (state);
CREATE TABLE IF NOT EXISTS reports (
    report_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spool (
    key TEXT PRIMARY KEY,
    message_id TEXT,
    data BLOB NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
"""

# Columns added since the first journals, in the order CREATE TABLE lists them.
_ADDED_COLUMNS = (("settled", "TEXT NOT NULL DEFAULT ''"),
                  ("return_path", "TEXT NOT NULL DEFAULT ''"),
                  ("status_code", "TEXT NOT NULL DEFAULT ''"),
                  ("diagnostic", "TEXT NOT NULL DEFAULT ''"),
                  ("soft_bounces", "INTEGER NOT NULL DEFAULT 0"))


@dataclass(frozen=True)
class Record:
    """One recipient as the journal knows it."""

    key: str
    row: int
    state: State
    attempts: int
    last_reply: str
    message_id: str | None
    content_hash: str | None
    envelope: str
    remaining: str
    next_attempt: float
    created: float
    updated: float
    seen_run: int
    settled: str = ""  # a Settled, or '' while unsettled (and in old journals)
    return_path: str = ""  # the envelope sender its message went out with
    status_code: str = ""  # of the last bounce or complaint reported for it
    diagnostic: str = ""
    soft_bounces: int = 0

    @property
    def remaining_list(self) -> list[str]:
        return [a for a in self.remaining.split(" ") if a]


# The columns of `status --csv`, one line per recipient
CSV_COLUMNS = ("row", "key", "state", "attempts", "last_reply", "message_id", "time",
               "settled", "status_code", "diagnostic", "soft_bounces")

class Journal:
    """The journal file of one campaign. Use as a context manager. Its methods raise
    JournalError for any trouble with the file (see :func:`_guarded`)."""

    def __init__(self, path: Path, shared: bool = False, read_only: bool = False) -> None:
        """``shared``: used from several threads, which take turns (see GroupCommits).
        ``read_only``: only read (``status``), which works on a read-only file or folder."""
        self.path = path
        self._clock = time.time
        if path.is_dir():
            raise JournalError(f"the journal {path} is a folder, not a file",
                               hint="name a file for `journal:`, e.g. newsletter.journal.sqlite "
                                    "(it is made on the first send)")
        try:
            if read_only:
                self.db = _open_read_only(path)
            else:
                self.db = sqlite3.connect(path, isolation_level=None, timeout=30,
                                          check_same_thread=not shared)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(_SCHEMA)
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(recipients)")}
                for column, kind in _ADDED_COLUMNS:  # a journal begun by an earlier version
                    if column not in columns:
                        self.db.execute(f"ALTER TABLE recipients ADD COLUMN {column} {kind}")
            # a damaged file is found here, before anything is sent on what it says; the
            # check reads every page (about 30 ms per 100,000 recipients)
            problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                found = " ".join(problem.replace("*** in database main ***", "").split())
                raise sqlite3.DatabaseError(f"database disk image is malformed: {found}")
        except sqlite3.Error as exc:
            if hasattr(self, "db"):
                self.db.close()
            raise journal_error(exc, path, "opened") from exc
        self.db.row_factory = _record_factory

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta ---------------------------------------------------------------------------------

    def meta(self, name: str) -> str | None:
        cur = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,))
        cur.row_factory = None
        found = cur.fetchone()
        return found[0] if found else None

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) "
                        "DO UPDATE SET value = excluded.value", (name, value))

    def delivered(self) -> int:
        """Recipients who were sent something: sent (bounced or complained since), uncertain,
        or with copies of the message accepted (recorded by :meth:`note_delivery`)."""
        cur = self.db.execute("SELECT COUNT(*) FROM recipients WHERE state IN ('sent', "
                              "'sending', 'bounced', 'complained')")
        cur.row_factory = None
        count: int = cur.fetchone()[0]
        return count + int(self.meta("partly delivered") or 0)

    def note_delivery(self) -> None:
        """A message went to some of its recipients, not to its row's own (a Cc copy)."""
        self.set_meta("partly delivered", str(int(self.meta("partly delivered") or 0) + 1))

    def begin_run(self) -> int:
        run = int(self.meta("runs") or 0) + 1
        self.set_meta("runs", str(run))
        return run

    # --- records ------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        found: Record | None = self.db.execute("SELECT * FROM recipients WHERE key = ?",
                                               (key,)).fetchone()
        return found

    def see(self, key: str, row: int, run: int) -> Record | None:
        """Note that ``key`` is in the sheet at ``row`` in this run; returns the record as it
        was before (None when new). Call inside :meth:`batch` for speed."""
        before = self.get(key)
        now = self._clock()
        if before is None:
            self.db.execute("INSERT INTO recipients (key, row, state, created, updated, seen_run)"
                            " VALUES (?, ?, 'pending', ?, ?, ?)", (key, row, now, now, run))
        else:
            self.db.execute("UPDATE recipients SET row = ?, seen_run = ? WHERE key = ?",
                            (row, run, key))
        return before

    def fold_keys(self, fold: Callable[[str], str]) -> int:
        """Give every record the key ``fold`` makes of it, once per journal: a journal begun
        before address keys ignored case has ``Zoe@Example.org`` where the sheet's row now
        gives ``zoe@example.org``, and would send it again. A folded key that another
        record has already (the same mailbox twice in an old sheet) is left as it was."""
        if self.meta("keys") == "folded":
            return 0
        cur = self.db.execute("SELECT key FROM recipients")
        cur.row_factory = None
        renamed = 0
        with self.batch():
            for (key,) in cur.fetchall():
                folded = fold(key)
                if folded != key and self.get(folded) is None:
                    self.db.execute("UPDATE recipients SET key = ? WHERE key = ?", (folded, key))
                    self.db.execute("UPDATE spool SET key = ? WHERE key = ?", (folded, key))
                    renamed += 1
            self.set_meta("keys", "folded")
        return renamed

    def commit_open(self) -> None:
        """Commit a transaction that an interrupt (Ctrl-C between two statements) left open."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def batch(self, keep_on_error: bool = False) -> _Batch:
        """One transaction; ``keep_on_error`` commits what was written before an exception
        (each write is whole on its own) instead of rolling it back."""
        return _Batch(self.db, self.path, keep_on_error)

    def judge_invalid_again(self, invalid: set[str], run: int) -> None:
        """Rows recorded as invalid in an earlier run and not invalid in ``run`` (the keys
        in ``invalid`` are): one now in the sheet and valid is to be sent; one under its
        row number (`row N`, no key was known) or gone from the sheet is forgotten."""
        # (an earlier version recorded them unsettled, under `row N`)
        for record in list(self.db.execute(
                "SELECT * FROM recipients WHERE settled = 'invalid' OR (settled = '' AND "
                "state = 'failed' AND attempts = 0 AND last_reply LIKE 'invalid: %')")):
            if record.key in invalid:
                continue
            if record.attempts:  # tried before it turned invalid: retried as deferred
                self.mark(record.key, "deferred", record.last_reply)
            elif record.seen_run == run:  # a valid row has the key now (`row N`: none has)
                self.mark(record.key, "pending", "")
            else:
                self.db.execute("DELETE FROM recipients WHERE key = ?", (record.key,))

    def mark_sending(self, key: str, message_id: str, content_hash: str, envelope: list[str],
                     remaining: list[str], return_path: str = "") -> None:
        """Durably record that the message is about to be handed to the server."""
        self.db.execute(
            "UPDATE recipients SET state = 'sending', attempts = attempts + 1, message_id = ?, "
            "content_hash = ?, envelope = ?, remaining = ?, updated = ?, return_path = ? "
            "WHERE key = ?",
            (message_id, content_hash, " ".join(envelope), " ".join(remaining), self._clock(),
             return_path, key))

    def mark(self, key: str, state: State, reply: str, remaining: list[str] | None = None,
             next_attempt: float = 0.0, settled: Settled | None = None) -> None:
        """Record ``state``; a final one (sent, failed) says how it became known."""
        assert state in STATES
        how = settled or ""
        if remaining is None:
            self.db.execute("UPDATE recipients SET state = ?, last_reply = ?, next_attempt = ?, "
                            "updated = ?, settled = ? WHERE key = ?",
                            (state, reply, next_attempt, self._clock(), how, key))
        else:
            self.db.execute("UPDATE recipients SET state = ?, last_reply = ?, remaining = ?, "
                            "next_attempt = ?, updated = ?, settled = ? WHERE key = ?",
                            (state, reply, " ".join(remaining), next_attempt, self._clock(),
                             how, key))

    def mark_sent(self, key: str, reply: str, copy: tuple[str, bytes] | None = None) -> None:
        """Record the server's acceptance; ``copy`` (Message-ID, bytes) waits in the spool
        for the Sent folder, recorded in the same step."""
        with self.batch():
            self.mark(key, "sent", reply, remaining=[], settled="reply")
            if copy is not None:
                self.db.execute("INSERT OR REPLACE INTO spool (key, message_id, data) "
                                "VALUES (?, ?, ?)", (key, *copy))

    # --- reports that came back (bounces, complaints) -----------------------------------------

    def report_seen(self, report_id: str) -> bool:
        cur = self.db.execute("SELECT 1 FROM reports WHERE report_id = ?", (report_id,))
        cur.row_factory = None
        return cur.fetchone() is not None

    def record_report(self, report_id: str, kind: str, key: str | None) -> None:
        """Remember a report as handled; call in the batch that records what it says."""
        self.db.execute("INSERT OR IGNORE INTO reports (report_id, kind, key, recorded) "
                        "VALUES (?, ?, ?, ?)", (report_id, kind, key, self._clock()))

    def note_bounce(self, key: str, state: State | None, status: str, diagnostic: str,
                    soft: bool = False) -> int:
        """Record a bounce or complaint for ``key``: its status and diagnostic, one more
        soft bounce if ``soft``, and ``state`` (bounced, complained) unless None. Returns
        the soft bounces counted so far."""
        self.db.execute("UPDATE recipients SET status_code = ?, diagnostic = ?, "
                        "soft_bounces = soft_bounces + ?, updated = ? WHERE key = ?",
                        (status, diagnostic, 1 if soft else 0, self._clock(), key))
        if state is not None:
            self.db.execute("UPDATE recipients SET state = ?, last_reply = ? WHERE key = ?",
                            (state, f"{status} {diagnostic}".strip(), key))
        record = self.get(key)
        return record.soft_bounces if record is not None else 0

    def soft_bounced(self) -> int:
        """Recipients with soft bounces that are not (yet) bounced."""
        cur = self.db.execute("SELECT COUNT(*) FROM recipients WHERE soft_bounces > 0 AND "
                              "state NOT IN ('bounced', 'complained')")
        cur.row_factory = None
        count: int = cur.fetchone()[0]
        return count

    def spooled(self, key: str) -> tuple[str | None, bytes] | None:
        cur = self.db.execute("SELECT message_id, data FROM spool WHERE key = ?", (key,))
        cur.row_factory = None
        found = cur.fetchone()
        return (found[0], bytes(found[1])) if found else None

    def spool_keys(self) -> list[str]:
        cur = self.db.execute("SELECT key FROM spool ORDER BY rowid")
        cur.row_factory = None
        return [row[0] for row in cur.fetchall()]

    def unspool(self, key: str) -> None:
        self.db.execute("DELETE FROM spool WHERE key = ?", (key,))

    def spool_error(self, key: str, error: str) -> None:
        self.db.execute("UPDATE spool SET error = ? WHERE key = ?", (error, key))

    def records(self, state: State | None = None) -> Iterator[Record]:
        if state is None:
            yield from self.db.execute("SELECT * FROM recipients ORDER BY row")
        else:
            yield from self.db.execute("SELECT * FROM recipients WHERE state = ? ORDER BY row",
                                       (state,))

    def counts(self, run: int | None = None) -> dict[State, int]:
        """Recipients per state; with ``run``, only those in the sheet during that run."""
        cur = (self.db.execute("SELECT state, COUNT(*) FROM recipients GROUP BY state")
               if run is None else
               self.db.execute("SELECT state, COUNT(*) FROM recipients WHERE seen_run = ? "
                               "GROUP BY state", (run,)))
        cur.row_factory = None
        found = dict(cur.fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def removed(self, run: int) -> list[Record]:
        """Records not seen in the sheet during ``run``."""
        return list(self.db.execute("SELECT * FROM recipients WHERE seen_run < ? ORDER BY row",
                                    (run,)))

    def next_due(self, run: int) -> float | None:
        """When the first deferred recipient seen in the sheet during ``run`` is due."""
        cur = self.db.execute("SELECT MIN(next_attempt) FROM recipients WHERE state = "
                              "'deferred' AND seen_run = ?", (run,))
        cur.row_factory = None
        due: float | None = cur.fetchone()[0]
        return due

    def write_csv(self, handle: IO[str]) -> int:
        """One line per recipient under the header line (:data:`CSV_COLUMNS`); how many."""
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        count = 0
        for record in self.records():
            writer.writerow([csv_safe(v) for v in (
                record.row, record.key, record.state, record.attempts, record.last_reply,
                record.message_id or "", format_time(record.updated), record.settled,
                record.status_code, record.diagnostic, record.soft_bounces)])
            count += 1
        return count


def _guarded(cls: type[Journal]) -> type[Journal]:
    """Every public method of the journal raises JournalError, never sqlite3.Error: a full
    disk, a read-only file or a damaged page is one line that says what to do, wherever
    it is met (SQLite rolls back the transaction it was in, so the journal stays whole)."""
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(method):
            continue
        if inspect.isgeneratorfunction(method):
            def wrapper(self: Journal, *args: Any, _method: Any = method,
                        **kwargs: Any) -> Any:
                try:
                    yield from _method(self, *args, **kwargs)
                except sqlite3.Error as exc:
                    raise journal_error(exc, self.path) from exc
        else:
            def wrapper(self: Journal, *args: Any, _method: Any = method,
                        **kwargs: Any) -> Any:
                try:
                    return _method(self, *args, **kwargs)
                except sqlite3.Error as exc:
                    raise journal_error(exc, self.path) from exc
        setattr(cls, name, functools.wraps(method)(wrapper))
    return cls


def journal_error(exc: sqlite3.Error, path: Path, doing: str = "used") -> JournalError:
    """What went wrong with the journal file, and what to do about it."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if name == "SQLITE_FULL" or "disk is full" in text:
        return JournalError("the journal cannot be written: the disk is full", path=path,
                            hint="free some space and run the same command again; what "
                                 "the journal holds is intact")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return JournalError("the journal cannot be written: the file or its folder is "
                            "read-only", path=path,
                            hint="make both writable (SQLite keeps -wal and -shm files "
                                 "beside it), then run the same command again")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text \
            or "not a database" in text:
        return JournalError(
            f"the journal is damaged ({text})", path=path,
            hint="restore it from a backup if you have one; `send --restart` begins a new "
                 "journal and keeps the damaged one beside it, but sends everyone again")
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        return JournalError(f"the journal cannot be {doing}: {text} (a disk error, a full "
                            "disk or a folder that is not writable)", path=path,
                            hint="check the disk and the folder, then run the same command "
                                 "again")
    return JournalError(f"the journal cannot be {doing}: {text}", path=path)


_guarded(Journal)


class _Batch:
    """One transaction around many writes (one sync to disk); inside another, it is part
    of that one."""

    def __init__(self, db: sqlite3.Connection, path: Path, keep_on_error: bool = False) -> None:
        self.db, self.path = db, path
        self.keep_on_error = keep_on_error
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise journal_error(exc, self.path) from exc
            self.outer = True

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.outer:
            try:
                self.db.execute("COMMIT" if exc_type is None or self.keep_on_error
                                else "ROLLBACK")
            except sqlite3.Error as error:
                if self.db.in_transaction:  # a COMMIT that failed leaves it open
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise journal_error(error, self.path) from error


class GroupCommits:
    """The SMTP workers' own records (`sending` before a message goes, `sent` as soon as
    its 250 is back), committed together (group commit).

    Each caller returns only once its own record is on disk; callers that arrive while a
    commit is under way have theirs written by the next one, in one transaction. With
    eight connections this replaced eight syncs (and their waits for SQLite's write lock)
    by one or two.
    """

    def __init__(self, path: Path, write_lock: threading.Lock) -> None:
        """``write_lock`` is held by every writer of this process around its transaction:
        waiting on it wakes at once, where SQLite's own busy wait sleeps up to 25 ms."""
        self.journal = Journal(path, shared=True)  # used under self._commit only
        self._write_lock = write_lock
        self._mutex = threading.Lock()
        self._commit = threading.Lock()
        self._pending: list[tuple[Callable[[Journal], None], list[Any]]] = []

    def mark_sending(self, key: str, message_id: str, content_hash: str, envelope: list[str],
                     remaining: list[str], return_path: str = "") -> None:
        """As :meth:`Journal.mark_sending`, durable when this returns."""
        self._write(lambda journal: journal.mark_sending(key, message_id, content_hash,
                                                         envelope, remaining, return_path))

    def mark_sent(self, key: str, reply: str, copy: tuple[str, bytes] | None) -> None:
        """As :meth:`Journal.mark_sent`, durable when this returns."""
        self._write(lambda journal: journal.mark_sent(key, reply, copy))

    def _write(self, write: Callable[[Journal], None]) -> None:
        done: list[Any] = [threading.Event(), None]
        with self._mutex:
            self._pending.append((write, done))
        with self._commit:
            if not done[0].is_set():
                with self._mutex:
                    batch, self._pending = self._pending, []
                try:
                    with self._write_lock, self.journal.batch():
                        for each, _ in batch:
                            each(self.journal)
                except BaseException as exc:
                    for _, other in batch:
                        other[1] = exc
                    raise
                finally:
                    for _, other in batch:
                        other[0].set()
        if done[1] is not None:
            raise done[1]

    def close(self) -> None:
        self.journal.close()


class SenderLock:
    """One sender per journal: an exclusive lock on ``<journal>.lock``.

    The kernel releases a flock when its holder dies, so a killed sender leaves nothing
    stuck; processes forked from the holder (the render workers) drop their copy of it
    at once, so they cannot keep it after the holder is gone. The file says who holds
    the lock and since when. Readers (``status``) do not take it.
    """

    def __init__(self, journal_path: Path) -> None:
        self.journal_path = journal_path
        self.path = Path(f"{journal_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock. Raises JournalError naming the holder when another has it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot create the lock file {self.path}: {exc.strerror}",
                               path=self.journal_path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JournalError(f"another `mailmerge send` is working on this campaign's "
                               f"journal ({holder})", path=self.journal_path,
                               hint="wait until it ends, or stop it; one journal has one "
                                    "sender at a time (`mailmerge status` reads it "
                                    "meanwhile)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{format_time(time.time())}\n".encode())
        self._fd = fd
        _HELD.add(self)

    def _forget(self) -> None:
        """In a forked child: close this process's copy without unlocking the holder's."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        _HELD.discard(self)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        if self._fd is None:  # not taken yet
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# The locks this process holds; one fork hook closes them all in a child (a hook a lock
# would pile up in a process that sends many campaigns).
_HELD: weakref.WeakSet[SenderLock] = weakref.WeakSet()


def _forget_held_locks() -> None:
    for lock in list(_HELD):
        lock._forget()
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_held_locks)


def _holder(fd: int) -> str:
    """Who holds a sender lock, as its file says; the holder writes that just after it has
    taken the lock, so an empty file is read again for a moment."""
    for _ in range(50):
        text = os.pread(fd, 500, 0).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "another process"


def _open_read_only(path: Path) -> sqlite3.Connection:
    """The journal opened for reading only. In a folder that cannot be written SQLite
    cannot make the shared-memory file a WAL reader needs; nobody can be writing the
    journal there either, so it is then read as an immutable file."""
    if not path.is_file():
        raise sqlite3.OperationalError("unable to open database file")
    uri = path.absolute().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def _record_factory(cursor: sqlite3.Cursor, row: tuple) -> Record:  # type: ignore[type-arg]
    return Record(*row)


def format_time(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).astimezone().isoformat(
        timespec="seconds")


def default_journal_path(campaign_path: Path, name: str) -> Path:
    return campaign_path.parent / f"{name}.journal.sqlite"
