"""Rows over worker processes: the same per-row work on every core, results in sheet order.

The parent reads the sheet (one reader, so sheet errors and row numbers stay where they
are) and hands rows out in blocks, round robin; each worker renders with its own copy of
the renderer the parent built (inherited by ``fork``: templates are compiled once) and
sends back small, picklable results. Blocks are collected in the order they were handed
out, so results come back in sheet order without a reordering buffer, and at most
``IN_FLIGHT`` blocks per worker are outstanding, so memory does not grow with the sheet.

The first block is worked in this process before the workers are forked, so they
inherit what it settled for the whole campaign. Where ``fork`` is not available, ``jobs``
is 1, or the rows fit in one block, all the work runs in this process.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from .errors import MailmergeError
from .sheet import Row

R = TypeVar("R")
N = TypeVar("N")  # what the work noticed (see map_rows)
BLOCK = 64
IN_FLIGHT = 3
_POLL = 0.5  # seconds between checks that the workers are still alive
# What a worker sends back for a block: its results, a MailmergeError, or a bug's traceback.
WorkerReply = Literal["ok", "error", "crash"]


def _can_fork() -> bool:
    """Whether workers can be forked: multiprocessing offers "fork" exactly where os has
    it. Asked of os, so that multiprocessing is imported only when a pool starts."""
    return hasattr(os, "fork")


def default_jobs() -> int:
    """One worker per core this process may use (at most 8), 1 where fork is missing."""
    if not _can_fork():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def map_rows(rows: Iterable[Row], work: Callable[[Row], R], *, jobs: int,
             notices: Callable[[], list[N]] | None = None,
             on_notice: Callable[[N], None] | None = None,
             always_fork: bool = False) -> Iterator[R]:
    """``work(row)`` for every row, in order, on ``jobs`` processes.

    ``notices()`` returns (and clears) what the work noticed in a worker, for ``on_notice``
    in the parent. An exception in a worker that is not a MailmergeError is a bug: it is
    raised here with the worker's traceback. An exception from ``rows`` (a sheet that breaks
    part-way) is raised after every earlier row's result was yielded. ``always_fork`` uses
    a worker process even for one job (the caller's own thread has other work).

    Fork before starting threads: a lock another thread holds at that moment stays held
    in the worker.
    """
    if (jobs <= 1 and not always_fork) or not _can_fork():
        for row in rows:
            yield work(row)
        return
    stream = iter(rows)
    if not always_fork:
        # The first block is worked here: a sheet of one block would go to one worker
        # anyway (the fork and the pipes are spared), and the workers forked after it
        # inherit what its rows settled once for the campaign (whether the CSS can be
        # inlined once, the files it read), instead of each settling it on rows of its own.
        head: list[Row] = []
        try:
            head.extend(itertools.islice(stream, BLOCK + 1))
        except BaseException:  # a sheet that breaks in its first block: raised after it
            for row in head:
                yield work(row)
            raise
        for row in head[:BLOCK]:
            yield work(row)
        if len(head) <= BLOCK:
            return
        if notices is not None:  # what the first block noticed, before the workers copy it
            for notice in notices():
                if on_notice is not None:
                    on_notice(notice)
        stream = itertools.chain(head[BLOCK:], stream)
    yield from _Pool(work, jobs, notices, on_notice).run(stream)


class WorkerFailed(MailmergeError):
    """A worker process ended without finishing its rows: a bug, or it was killed."""


def _serve(work: Callable[[Row], Any], inbox: Any, outbox: Any,
           notices: Callable[[], list[Any]] | None, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    while True:
        try:
            block = inbox.get(timeout=_POLL)
        except queue.Empty:
            if os.getppid() != parent:  # the parent was killed: nobody wants the rest
                os._exit(0)
            continue
        if block is None:
            break
        try:
            results = []
            for row in block:
                if os.getppid() != parent:
                    os._exit(0)
                results.append(work(row))
            outbox.put(("ok", results, notices() if notices else []))
        except MailmergeError as exc:
            outbox.put(("error", exc, []))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
            outbox.put(("crash", traceback.format_exc(), []))
    outbox.close()
    outbox.join_thread()


class _Pool:
    def __init__(self, work: Callable[[Row], Any], jobs: int,
                 notices: Callable[[], list[Any]] | None,
                 on_notice: Callable[[Any], None] | None) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.inboxes = [context.Queue() for _ in range(jobs)]
        self.outboxes = [context.Queue() for _ in range(jobs)]
        self.on_notice = on_notice
        self.workers = [context.Process(target=_serve, args=(work, inbox, outbox, notices,
                                                              os.getpid()),
                                        daemon=True, name=f"mailmerge-worker-{index}")
                        for index, (inbox, outbox) in enumerate(zip(self.inboxes,
                                                                    self.outboxes, strict=True))]

    def run(self, rows: Iterator[Row]) -> Iterator[Any]:
        for worker in self.workers:
            worker.start()
        jobs = len(self.workers)
        sent = received = 0
        failure: BaseException | None = None
        finished = False
        try:
            while True:
                while failure is None and sent - received < IN_FLIGHT * jobs:
                    block: list[Row] = []
                    try:
                        for row in rows:
                            block.append(row)
                            if len(block) == BLOCK:
                                break
                    except BaseException as exc:  # noqa: BLE001 - raised after earlier rows
                        failure = exc
                    if not block:
                        break
                    self.inboxes[sent % jobs].put(block)
                    sent += 1
                    if len(block) < BLOCK:
                        break
                if received == sent:
                    break
                yield from self._collect(received % jobs)
                received += 1
            finished = True
            if failure is not None:
                raise failure
        finally:
            self._stop(graceful=finished)

    def _collect(self, index: int) -> list[Any]:
        while True:
            try:
                kind: WorkerReply
                kind, payload, notices = self.outboxes[index].get(timeout=_POLL)
                break
            except queue.Empty:
                if not self.workers[index].is_alive():
                    raise WorkerFailed(f"worker process {index + 1} ended early (exit code "
                                       f"{self.workers[index].exitcode})",
                                       hint="run again with --jobs 1 to see the cause") from None
        for notice in notices:
            if self.on_notice is not None:
                self.on_notice(notice)
        if kind == "error":
            raise payload
        if kind == "crash":
            raise RuntimeError(f"a worker process failed:\n{payload}")
        return list(payload)

    def _stop(self, graceful: bool) -> None:
        """Let idle workers end; stopped early (Ctrl-C, an error), end them at once."""
        for inbox in self.inboxes:
            inbox.put(None)
        for worker in self.workers:
            worker.join(timeout=5 if graceful else 0.05)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        for box in self.inboxes + self.outboxes:
            box.close()
            box.cancel_join_thread()
