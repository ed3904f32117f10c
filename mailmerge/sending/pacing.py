"""Pacing a sending run: a rate limit shared by every connection, and retry backoff."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces messages exactly ``interval`` seconds apart on average, across threads.

    Slots are handed out from a running schedule, so the rate holds over any span of
    time instead of being rounded to whole seconds.
    """

    def __init__(self, interval: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval, self.clock, self.sleep = interval, clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)

    def take_if_due(self) -> bool:
        """Take the next slot if it is due now; never waits."""
        if not self.interval:
            return True
        with self._lock:
            now = self.clock()
            if self._next > now:
                return False
            self._next = now + self.interval
            return True

    def slow_down(self) -> None:
        """After a 421 or a dropped connection: leave a gap before the next message."""
        with self._lock:
            self._next = max(self._next, self.clock()) + max(self.interval or 0, 1.0)


def backoff(attempt: int, first: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: about first, 2*first, 4*first ..."""
    base = first * 2.0 ** max(attempt - 1, 0)
    return base / 2 + rand() * base / 2
