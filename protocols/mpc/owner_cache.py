"""Query-independent server preparations (NTT forms of a model's matrix or weights) kept with the
object they were made for: the served model. Keyed by the owner's identity and dropped with it
(weak reference), so a long-running server that swaps models does not keep old preparations."""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class OwnerCache(Generic[T]):
    """One prepared value per live owner object."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, T]] = {}
        self._lock = threading.Lock()

    def __contains__(self, owner_id: int) -> bool:
        """Whether a value is kept for the owner whose ``id()`` this is (tests: dropped with it)."""
        with self._lock:
            return owner_id in self._entries

    def get(self, owner: Any, make: Callable[[], T], fits: Callable[[T], bool] = lambda _: True) -> T:
        """The value kept for ``owner`` if ``fits`` accepts it, else ``make()`` (kept for next time).
        ``owner=None`` or an owner that cannot be weakly referenced: made each time, never kept."""
        if owner is None:
            return make()
        key = id(owner)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0]() is owner and fits(hit[1]):
                return hit[1]
        value = make()  # outside the lock: preparing a large matrix takes seconds
        try:
            ref = weakref.ref(owner, lambda _, k=key: self._entries.pop(k, None))
        except TypeError:
            return value
        with self._lock:
            self._entries[key] = (ref, value)
        return value
