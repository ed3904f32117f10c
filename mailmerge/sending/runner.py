"""One sending run: worker threads that own an SMTP connection each, and the main thread
that feeds them jobs, writes every result to the journal and retries deferred recipients.

The journal is written from the main thread, except what a worker records itself
through a group commit (journal.GroupCommits): `sending` just before its transaction or
its text (see _mark_sending), and `sent` as soon as the server's 250 is back (see
_mark_sent), so that a kill between the two finds the message uncertain only for as long
as that reply took and its record's sync to disk; and the Sent-folder copies
(sentcopy.py).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import itertools
import os
import queue
import signal
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..campaign import Campaign, parse_rate
from ..errors import SendError
from ..message import Built
from ..pipeline import Outcome, iter_messages
from ..render import Rendered
from .journal import GroupCommits, Journal, Record, State
from .pacing import RateLimiter, backoff
from .sentcopy import Saver, SaveReport
from .settle import Settled
from .smtp import Delivery, Envelope, Reply, SmtpConnection, Unreachable, token_source

MAX_CONNECT_FAILURES = 5
# how often a wait for retries looks whether Ctrl-C asked the run to stop
_WAKE = 0.1


# What happened: a recipient's outcome, or a wait before retrying the deferred ones
# (``detail`` then holds the seconds).
# found / not-found: an uncertain recipient looked up in the mailbox (settle.py).
# uncertain: the text went out and no final reply came (the recipient stays `sending`).
EventKind = Literal["sent", "deferred", "failed", "retry-wait", "found", "not-found",
                    "uncertain"]


@dataclass(frozen=True)
class Event:
    """Something that happened to one recipient (for progress displays and logs)."""

    kind: EventKind
    row: int
    key: str
    detail: str = ""


@dataclass
class SendReport:
    """What a run did; ``counts`` are the journal's totals afterwards."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    interrupted: bool = False  # by Ctrl-C or SIGTERM: stopped cleanly, to be resumed
    terminated: bool = False  # ... and it was SIGTERM (a scheduler, `kill`, a shutdown)
    counts: dict[State, int] = field(default_factory=dict)
    waiting: int = 0  # pending or deferred, of the recipients in this run's sheet
    uncertain: list[Record] = field(default_factory=list)
    problems: list[Outcome] = field(default_factory=list)
    stopped: SendError | None = None
    sent_copies: SaveReport | None = None  # with `imap:`: copies saved in the Sent folder
    settled: Settled | None = None  # uncertain recipients settled by a lookup first


_JOURNALS: dict[int, Journal] = {}


def _journal_here(path: Path) -> Journal:
    """This process's own connection to the journal (a connection must not cross a fork)."""
    journal = _JOURNALS.get(os.getpid())
    if journal is None:
        journal = _JOURNALS[os.getpid()] = Journal(path)
    return journal


def _content_hash(built: Built) -> str:
    r = built.rendered
    digest = hashlib.sha256()
    for piece in (r.subject, r.text or "", r.html or "", *(a.filename for a in r.attachments)):
        digest.update(piece.encode("utf-8", "surrogatepass") + b"\0")
    for part in r.attachments:
        digest.update(part.data)
    return digest.hexdigest()[:32]


@dataclass
class _Job:
    key: str
    row: int
    built: Built
    recipients: list[str]
    attempts: int
    marked: bool = False  # `sending` is in the journal
    primed: bool = False  # its MAIL/RCPT/DATA went out early, with the message before it


def _envelope(job: _Job) -> Envelope:
    return job.built.envelope_from, job.recipients, job.built.data, job.built.smtputf8


def _verdict(job: _Job, delivery: Delivery
             ) -> Literal["sent", "deferred", "failed", "uncertain"]:
    """What the server's replies make of a job: uncertain when its text went out and no
    final reply came; deferred while a recipient may still be retried; sent when
    accepted, unless the row's own (To) address was refused, which fails the row even
    though its Cc or Bcc copies went out."""
    if delivery.unknown:
        return "uncertain"
    if delivery.deferred:
        return "deferred"
    if not delivery.accepted or _refused_to(job, delivery):
        return "failed"
    return "sent"


def _refused_to(job: _Job, delivery: Delivery) -> list[str]:
    to = {a.addr_spec.lower() for a in job.built.rendered.to}
    return [address for address in delivery.refused if address.lower() in to]


def _deferred_due(record: Record, now: float) -> bool:
    """A deferred recipient whose retry is due at ``now``."""
    return record.state == "deferred" and record.next_attempt <= now


@dataclass
class _Result:
    job: _Job
    delivery: Delivery | None = None
    error: SendError | None = None
    handled: bool = False
    recorded: bool = False  # `sent` is in the journal already (written by the worker)
    crashed: bool = False  # the error was not the server's answer (see Runner._attempt)
    unsent: bool = False  # no session was had and the job was not marked: left as it was
    text_sent: bool = False  # ... and the message text had begun to go out


class Runner:
    """One run of a plan: feeds jobs to workers and writes their results to the journal."""

    def __init__(self, campaign: Campaign, journal: Journal, run: int, *, limit: int | None,
                 resend_uncertain: bool, password: str | None,
                 events: Callable[[Event], None], clock: Callable[[], float],
                 sleep: Callable[[float], None], imap_password: str | None = None) -> None:
        """``run`` is this run's number in the journal (records seen in the sheet during
        it are the ones to send); ``limit`` caps the recipients started (a retry of one
        started in this run is no new one)."""
        self.campaign, self.journal, self.run_number = campaign, journal, run
        self.limit, self.resend_uncertain = limit, resend_uncertain
        self.smtp = campaign.smtp
        self.password, self.events, self.clock, self.sleep = password, events, clock, sleep
        self.limiter = RateLimiter(parse_rate(self.smtp.rate), sleep=sleep)
        self.tokens = token_source(self.smtp)
        imap = campaign.imap
        self.saver = (Saver(imap, imap_password, journal.path)
                      if imap is not None and imap.copy else None)
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=self.smtp.concurrency * 2)
        self.results: queue.Queue[_Result] = queue.Queue()
        self.report = SendReport()
        self.in_flight = 0
        self.tried: set[str] = set()  # keys this run has started a message for
        self.connect_failures = 0
        self.connected = threading.Event()  # a session of this run has been opened
        self.stop = threading.Event()
        self.write_lock = threading.Lock()  # around every journal transaction of this run
        self.marks = GroupCommits(journal.path, self.write_lock)
        self.workers: list[threading.Thread] = []
        self._ready: collections.deque[_Result] = collections.deque()
        self._saved: list[str] = []  # sent keys whose copies wait for their commit

    # --- workers ----------------------------------------------------------------------------

    def _mark_sending(self, job: _Job) -> None:
        """Record `sending` at the last moment (a job still queued when the process dies is
        not uncertain), through a group commit the workers share: before the job's first
        command goes out, or, for a job whose commands went out early, before its text."""
        self.marks.mark_sending(job.key, job.built.message_id, _content_hash(job.built),
                                list(job.built.envelope_to), job.recipients,
                                job.built.envelope_from)
        job.marked = True

    def _mark_sent(self, job: _Job, delivery: Delivery) -> None:
        """Record the server's acceptance at once, with the copy for the Sent folder: a
        record waiting for the main thread's next transaction would leave the message
        uncertain if the process died meanwhile."""
        copy = (job.built.message_id, job.built.data) if self.saver is not None else None
        self.marks.mark_sent(job.key, delivery.summary(), copy)

    def _attempt(self, job: _Job, connection: SmtpConnection,
                 following: Callable[[], Envelope | None]) -> _Result:
        """Send one job; whatever happens, a result for the main thread. An error that is
        not the server's answer ends the run: the job is left uncertain if its text went
        out, else it goes back to pending."""
        sending = False  # connection.text_sent speaks of this job only once it is True
        try:
            if not job.primed:
                self.limiter.wait()
                try:
                    connection.connect()
                except (SendError, OSError) as exc:
                    return self._not_connected(job, exc, connection)
                self.connected.set()
                self._mark_sending(job)
            try:
                sending = True
                delivery = connection.send(
                    *_envelope(job), following,
                    functools.partial(self._mark_sending, job) if job.primed else None)
                result = _Result(job, delivery=delivery)
                if _verdict(job, delivery) == "sent":
                    self._mark_sent(job, delivery)
                    result.recorded = True
            except SendError as exc:
                result = _Result(job, error=exc)
            except OSError as exc:  # the session was lost, and no new one could be had
                result = self._not_connected(job, exc, connection)
            if not job.marked:  # ended before its text went out: the attempt still counts
                self._mark_sending(job)
            return result
        except Exception as exc:  # noqa: BLE001 - reported, and the run ends cleanly
            connection.drop()
            error = SendError(f"sending stopped on an unexpected error: "
                              f"{type(exc).__name__}: {exc}",
                              hint="run send again to resume; if it happens again, it is a "
                                   "bug or a server mailmerge does not understand")
            return _Result(job, error=error, crashed=True,
                           text_sent=sending and connection.text_sent)

    def _not_connected(self, job: _Job, exc: SendError | OSError,
                       connection: SmtpConnection) -> _Result:
        """No session for ``job``: nothing of it was sent. Before any session of this run
        worked, a refused connection, an unknown host or a failed TLS is the settings,
        not a passing fault: the run stops at once and says so once. Later (a server
        restarting, a connection limit), it is deferred and retried (MAX_CONNECT_FAILURES)."""
        connection.drop()
        if isinstance(exc, SendError):
            return _Result(job, error=exc, unsent=not job.marked)
        if isinstance(exc, Unreachable) and not self.connected.is_set():
            return _Result(job, error=SendError(str(exc), hint=exc.hint + "; nothing was sent, "
                                                "run send again once it is right"),
                           unsent=not job.marked)
        where = f"{self.smtp.host}:{self.smtp.effective_port}"
        text = str(exc) if where in str(exc) else f"no session with {where}: {exc}"
        return _Result(job, delivery=Delivery(
            deferred={a: Reply(0, text) for a in job.recipients},
            reconnect=True, unreachable=True))

    def _worker(self) -> None:
        connection = SmtpConnection(self.smtp, self.password, self.tokens)
        taken: list[_Job | None] = []  # taken from the queue early, to go out next

        def following() -> Envelope | None:
            """The next job, if one is ready now, to pipeline with the message going out."""
            if self.stop.is_set():
                return None
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return None
            taken.append(job)
            if job is None or not self.limiter.take_if_due():
                return None
            job.primed = True
            return _envelope(job)

        try:
            while True:
                job = taken.pop() if taken else self.jobs.get()
                if job is None:
                    return
                if self.stop.is_set():  # hand it back unsent; keep draining to the sentinel
                    if job.primed:  # its text never goes: it cannot be delivered
                        connection.drop()
                    self.results.put(_Result(job, delivery=None))
                    continue
                self.results.put(self._attempt(job, connection, following))
        finally:
            connection.close()

    # --- main thread ------------------------------------------------------------------------

    def run(self) -> SendReport:
        # The first pass renders in a worker process (this thread then only feeds the
        # connections and writes the journal); it forks now, before any thread starts.
        first = self._jobs(lambda record: True, fork=self.limit is None)
        primed = next(first, None)
        workers = self.workers = [
            threading.Thread(target=self._worker, daemon=True, name=f"smtp-{i}")
            for i in range(self.smtp.concurrency)]
        for worker in workers:
            worker.start()
        if self.saver is not None:
            self.saver.start(self.journal.spool_keys())
        deadline = self.clock() + self.smtp.retry_for
        try:
            try:
                with self._ctrl_c_stops():
                    self._send(first, primed, deadline, workers)
            except KeyboardInterrupt:
                abandon = self.report.interrupted  # a second Ctrl-C (see _ctrl_c_stops)
                self.report.interrupted = True
                self.stop.set()
                if not abandon:
                    try:
                        self._finish(workers)
                    except KeyboardInterrupt:
                        pass  # a second Ctrl-C abandons what is in flight: uncertain in the journal
        finally:
            self.stop.set()
            first.close()  # ends the render process, if it still runs
            self.journal.commit_open()
            if self.saver is not None:
                self.report.sent_copies = self.saver.finish()
            if not any(worker.is_alive() for worker in workers):
                self.marks.close()
        return self.report

    def _send(self, first: Generator[_Job, None, None], primed: _Job | None, deadline: float,
              workers: list[threading.Thread]) -> None:
        """The passes through the sheet, the retries, then the workers' last results."""
        self._pass(itertools.chain([primed] if primed else [], first))
        first.close()
        while not self._stopping():
            while self.in_flight:  # their deferrals decide when to retry
                self._pull(None)
                self._handle_ready()
            due = self._next_due()
            if due is None or due > deadline:
                break
            wait = due - self.clock()
            if wait > 0:
                self.events(Event("retry-wait", 0, "", f"{wait:.0f}"))
                self._drain(until=self.clock() + wait)
            if not self._pass(self._jobs(functools.partial(_deferred_due, now=self.clock()))):
                break  # nothing it could retry after all: never go round without sending
        self._finish(workers)

    def _next_due(self) -> float | None:
        """When the next deferred recipient this run may retry is due: one in this run's
        sheet (not removed, not left out by `where`), and within --limit (a recipient this
        run has tried counts once, however often it is retried)."""
        if self.limit is not None and len(self.tried) >= self.limit:
            records = (self.journal.get(key) for key in self.tried)
            return min((r.next_attempt for r in records
                        if r is not None and r.state == "deferred"), default=None)
        return self.journal.next_due(self.run_number)

    @contextlib.contextmanager
    def _ctrl_c_stops(self) -> Iterator[None]:
        """The first Ctrl-C or SIGTERM asks the run to stop: what the workers hold is
        finished and recorded, the rest waits for the next run. A second one raises
        KeyboardInterrupt, which abandons what is in flight (uncertain in the journal).

        A KeyboardInterrupt raised wherever this thread happened to be could leave a
        queue's lock held (a `with` is not atomic against it); finishing then waited on
        that lock for ever. Only the main thread can set a handler; elsewhere, Ctrl-C
        stays a KeyboardInterrupt. A signal the process ignores (Ctrl-C in a job a script
        started in the background) goes on being ignored."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def interrupted(signum: int, frame: object) -> None:
            if self.report.interrupted:
                raise KeyboardInterrupt
            self.report.interrupted = True
            self.report.terminated = signum == signal.SIGTERM
            self.stop.set()

        previous = {number: signal.signal(number, interrupted)
                    for number in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(number) is not signal.SIG_IGN}  # e.g. `send &`
        try:
            yield
        finally:
            for number, handler in previous.items():
                if handler is None:  # set outside Python: Python's own default
                    handler = (signal.default_int_handler if number == signal.SIGINT
                               else signal.SIG_DFL)
                signal.signal(number, handler)

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.report.stopped is not None

    def _put(self, job: _Job | None) -> None:
        """Queue a job (or a worker's stop sentinel), handling results while the queue is full."""
        while True:
            try:
                self.jobs.put(job, timeout=0.05)
                return
            except queue.Full:
                self._drain()
                if not any(worker.is_alive() for worker in self.workers):
                    raise SendError("every sending thread stopped unexpectedly (a bug: the "
                                    "error is printed above)",
                                    hint="run send again to resume; the journal is intact"
                                    ) from None

    def _finish(self, workers: list[threading.Thread]) -> None:
        """Let the workers finish what they hold, then stop them; handle every result.

        Counts nothing: an interrupt may have come between queueing a job and counting it.
        """
        for _ in workers:
            self._put(None)
        while (any(worker.is_alive() for worker in workers) or not self.results.empty()
               or self._ready):
            self._pull(0.05)
            self._handle_ready()

    def _drain(self, until: float | None = None) -> None:
        """Handle results that are ready; with ``until``, wait for them up to that time."""
        while True:
            timeout = None if until is None else until - self.clock()
            if until is not None and timeout is not None and timeout <= 0:
                return
            if until is not None and not self.in_flight:
                while not self.stop.is_set() and (left := until - self.clock()) > 0:
                    self.sleep(min(left, _WAKE))  # a Ctrl-C ends the wait (see _ctrl_c_stops)
                return
            if not self._pull(timeout if until is not None else 0):
                return
            self._handle_ready()

    def _pass(self, jobs: Iterator[_Job]) -> int:
        """Go through the sheet once, sending the jobs of :meth:`_jobs`; how many started."""
        started = 0
        for job in jobs:
            if self._stopping():  # the rest is not rendered: its render process may be gone
                break
            self.tried.add(job.key)
            started += 1
            self._put(job)
            self.in_flight += 1
            self._drain()
            if self._stopping():
                break
        return started

    def _jobs(self, select: Callable[[Record], bool], fork: bool = False
              ) -> Generator[_Job, None, None]:
        """The jobs of one pass through the sheet: what ``select`` picks among the unsent.

        ``fork``: render and build in a worker process, which passes over what the journal
        says is done (reading it through its own connection); this thread checks again.
        """
        limit, resend = self.limit, self.resend_uncertain
        records: dict[str, Record] = {}

        path, run = self.journal.path, self.run_number

        def due(record: Record | None) -> bool:
            """Seen in this run's sheet, not yet sent, and picked by ``select``."""
            return (record is not None and record.seen_run == run
                    and (record.state in ("pending", "deferred")
                         or (resend and record.state == "sending")) and select(record))

        def pick(journal: Journal, rendered: Rendered) -> bool:
            """Read its record once; keep it, if due, for ``message_id`` and the job."""
            record = journal.get(rendered.key)
            if not due(record):
                return False
            assert record is not None
            records[rendered.key] = record
            return True

        def want(rendered: Rendered) -> bool:
            return ((limit is None or len(self.tried) < limit or rendered.key in self.tried)
                    and pick(self.journal, rendered))

        def message_id(rendered: Rendered) -> str | None:
            return records[rendered.key].message_id

        # in the render process, with its own connection and its own copy of `records`
        def unsent_there(rendered: Rendered) -> bool:
            return pick(_journal_here(path), rendered)

        def message_id_there(rendered: Rendered) -> str | None:
            return records.pop(rendered.key).message_id

        outcomes = (iter_messages(self.campaign, want=unsent_there, message_id=message_id_there,
                                  always_fork=True) if fork else
                    iter_messages(self.campaign, want=want, message_id=message_id))
        for outcome in outcomes:
            if self._stopping():
                return
            if outcome.built is None:
                continue
            if fork and not want(outcome.built.rendered):
                continue
            record = records.pop(outcome.built.rendered.key)
            recipients = record.remaining_list if record.state == "deferred" else []
            yield _Job(record.key, record.row, outcome.built,
                       recipients or list(outcome.built.envelope_to), record.attempts + 1)

    def _pull(self, timeout: float | None) -> bool:
        """Move one result from the workers into ``_ready`` (0: only one already there;
        None: wait for it). A result is never held only by a local variable, where a Ctrl-C
        could lose it: it waits in ``_ready`` until handled, whatever interrupts."""
        try:
            if timeout == 0:
                self._ready.append(self.results.get_nowait())
            else:
                self._ready.append(self.results.get(timeout=timeout))
            return True
        except queue.Empty:
            return False

    def _handle_ready(self) -> None:
        """Handle every result that is ready, in one journal transaction: one sync to disk
        for many recipients, and no record waits for it longer."""
        # A Ctrl-C part-way keeps what was handled (each result is whole on its own) and
        # leaves the rest in _ready. One that came as the transaction began left it open:
        # what it holds is kept here.
        with self.write_lock:
            self.journal.commit_open()
            with self.journal.batch(keep_on_error=True):
                while self._ready or self._pull(0):
                    self._handle(self._ready[0])
                    self._ready.popleft()
        if self.saver is not None:
            for key in self._saved:  # the Saver reads the copy from the journal: now there
                self.saver.save(key)
            self._saved.clear()

    def _handle(self, result: _Result) -> None:
        if result.handled:  # a Ctrl-C came after it was handled, before it left _ready
            return
        result.handled = True
        self.in_flight -= 1
        job = result.job
        if result.error is not None:
            if result.text_sent or result.unsent:  # uncertain (`sending`), or untouched
                pass
            elif result.crashed:  # nothing of it went out
                self.journal.mark(job.key, "pending", f"not sent: {result.error.message}",
                                  remaining=job.recipients)
            else:
                self.journal.mark(job.key, "deferred", f"not sent: {result.error.message}",
                                  remaining=job.recipients)
            if self.report.stopped is None:
                self.report.stopped = result.error
            self.stop.set()
            return
        delivery = result.delivery
        if delivery is None:  # the worker stopped before sending it: its state is unchanged
            return
        if delivery.reconnect:
            self.limiter.slow_down()
        self.connect_failures = self.connect_failures + 1 if delivery.unreachable else 0
        summary = delivery.summary()
        verdict = _verdict(job, delivery)
        if delivery.accepted and verdict != "sent":  # copies went: the version is out
            self.journal.note_delivery()
        if verdict == "uncertain":  # stays `sending`: settled by a lookup or by hand
            self.journal.mark(job.key, "sending", summary,
                              remaining=[*delivery.unknown, *delivery.deferred])
            self.events(Event("uncertain", job.row, job.key, summary))
        elif verdict == "deferred":
            remaining = list(delivery.deferred)
            if job.attempts > self.smtp.retries:
                self.journal.mark(job.key, "failed", f"gave up after {job.attempts} attempts: "
                                  f"{summary}", remaining=remaining, settled="reply")
                self.report.failed += 1
                self.events(Event("failed", job.row, job.key, summary))
            else:
                due = self.clock() + backoff(job.attempts, self.smtp.retry_delay)
                self.journal.mark(job.key, "deferred", summary, remaining=remaining,
                                  next_attempt=due)
                self.report.deferred += 1
                self.events(Event("deferred", job.row, job.key, summary))
        elif verdict == "sent":
            assert result.recorded  # by the worker, as soon as the reply came (_mark_sent)
            if self.saver is not None:
                self._saved.append(job.key)
            self.report.sent += 1
            self.events(Event("sent", job.row, job.key, summary))
        else:
            if delivery.accepted:  # the To address refused, its Cc or Bcc copies accepted
                summary += (f" (not delivered to {', '.join(_refused_to(job, delivery))}; "
                            f"copies accepted for {', '.join(delivery.accepted)})")
            self.journal.mark(job.key, "failed", summary, remaining=[], settled="reply")
            self.report.failed += 1
            self.events(Event("failed", job.row, job.key, summary))
        if self.connect_failures >= MAX_CONNECT_FAILURES and self.report.stopped is None:
            reply = next(iter(delivery.deferred.values()))
            self.report.stopped = SendError(
                f"gave up after {self.connect_failures} failed connections in a row ({reply.text})",
                hint="check `smtp.host`, `smtp.port` and `smtp.security`, then run send "
                     "again to resume")
            self.stop.set()


