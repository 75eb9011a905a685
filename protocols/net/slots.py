"""Session slots handed out strictly in arrival order.

The front door (:mod:`protocols.net.frontdoor`) runs at most ``concurrency`` sessions at once and
lets admitted sessions wait a bounded time for a slot. A plain ``threading.Semaphore`` lets a
newcomer *barge*: between a release and the wake-up of the thread that waited longest, any new
arrival that finds the count above zero takes the slot. On a server whose default admits two
sessions per client at ``concurrency`` 2, one client that opens its next session the moment the
last one ends could then win that race again and again while another client's queued session
waits out ``queue_wait_s`` and is answered "busy". :class:`FairSlots` closes the window: a release
hands the slot directly to the longest waiter (it never becomes free while someone waits), and a
newcomer takes a free slot only when nobody is queued.
"""
from __future__ import annotations

import threading
from collections import deque

__all__ = ["FairSlots"]


class FairSlots:
    """At most ``n`` holders at once; waiters served first come, first served (no barging).

    :meth:`acquire` and :meth:`release` mirror ``threading.BoundedSemaphore`` (``release`` beyond
    ``n`` raises ``ValueError``)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("need at least one slot")
        self._n = int(n)
        self._free = int(n)
        self._lock = threading.Lock()
        self._waiters: deque[threading.Event] = deque()

    @property
    def waiting(self) -> int:
        """Threads queued for a slot now."""
        with self._lock:
            return len(self._waiters)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot: at once if one is free and nobody waits, else after the earlier waiters
        (at most ``timeout`` seconds; ``blocking=False``: not at all). True if taken."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            if not blocking:
                return False
            ticket = threading.Event()
            self._waiters.append(ticket)
        ticket.wait(timeout)
        with self._lock:
            if ticket.is_set():  # handed over, possibly just as the wait timed out: ours
                return True
            self._waiters.remove(ticket)  # still queued (release pops before it sets)
            return False

    def release(self) -> None:
        """Give a slot back: to the longest waiter if any, else to the free count."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
                return
            if self._free >= self._n:
                raise ValueError("FairSlots released too many times")
            self._free += 1
