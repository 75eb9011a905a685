"""protocols.net.slots.FairSlots: first come, first served, no barging, bounded waits."""
from __future__ import annotations

import threading
import time

import pytest

from protocols.net.slots import FairSlots


def _wait_until(cond, limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.001)


def test_a_release_goes_to_the_waiter_not_to_a_newcomer():
    """The barging window of a plain semaphore: released with a waiter queued, the slot is the
    waiter's -- a non-blocking newcomer right after the release does not get it."""
    slots = FairSlots(1)
    assert slots.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(slots.acquire(timeout=5)))
    t.start()
    _wait_until(lambda: slots.waiting == 1)
    slots.release()
    assert not slots.acquire(blocking=False)  # with a Semaphore this could win the race
    t.join(5)
    assert got == [True]
    slots.release()
    assert slots.acquire(blocking=False)  # free and nobody queued: at once
    slots.release()


def test_waiters_are_served_in_arrival_order():
    slots = FairSlots(1)
    assert slots.acquire()
    order: list[int] = []

    def waiter(i: int) -> None:
        assert slots.acquire(timeout=10)
        order.append(i)
        slots.release()

    threads = []
    for i in range(5):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        _wait_until(lambda: slots.waiting == i + 1)  # queued in this order
    slots.release()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_a_timed_out_waiter_leaves_the_queue_and_the_count_is_kept():
    slots = FairSlots(2)
    assert slots.acquire() and slots.acquire()
    assert not slots.acquire(timeout=0.05)
    assert slots.waiting == 0
    slots.release()
    slots.release()
    assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
    assert not slots.acquire(blocking=False)
    slots.release()
    slots.release()
    with pytest.raises(ValueError):
        slots.release()
    with pytest.raises(ValueError):
        FairSlots(0)
