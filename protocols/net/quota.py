"""Per-client quotas for the server's resumable state: who owns an entry, and how many one may hold.

The server keeps state for a client's *next* session -- OT-session tickets
(:mod:`protocols.ot.session`), lattice public keys and prepared re-randomisations
(:mod:`protocols.krr.linear_he`), kept-alive connections (:mod:`protocols.net.frontdoor`) -- in
bounded least-recently-used stores. Bounded is not enough: one client that opens sessions with a
fresh entry each time (``predict(resume_ot=False)`` does so honestly) pushes every other client's
entry out of the store, and they all pay a first session again. So each entry records the client
that made it (the *owner*), and an owner holds at most ``per_owner`` entries per store: a new one
beyond that evicts the owner's own least recently used entry, never another owner's.

The owner is the identity the server already charges budgets and failed checks to: the query
ledger's key (:func:`secureml.serving.ledger.session_client_id`: the verified certificate or token
name, else the peer's IP address) -- server-side text, never anything the client wrote. The front
door's session handler sets it for the session's thread (:func:`client_scope`); the stores read it
with :func:`current_client`. Entries made outside a served session (in-process calls, tests) have
owner None and no quota (only the store's cap).

Threat model: clients are untrusted for availability. With quota Q and cap C, a client holds at most
Q entries of a store (per worker process), so it can neither evict another client's entry nor grow
the store past Q entries of its own; only C / Q distinct identities together can fill it (on an open
server, addresses: require tokens or certificates where that matters). An entry keeps the owner that
made it when it is stored again under its key (a client presenting another's key id cannot move that
entry into its own quota and then evict it).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, Hashable, Iterator, TypeVar

import numpy as np

__all__ = ["DEFAULT_MAX_PER_CLIENT", "OwnedLRU", "client_scope", "current_client", "entry_bytes"]

#: entries one client may hold in each per-client store (``secureml serve --max-per-client``)
DEFAULT_MAX_PER_CLIENT = 4

_CLIENT: ContextVar[str | None] = ContextVar("secureml_client", default=None)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def current_client() -> str | None:
    """The identity of the session this thread serves (None outside a served session)."""
    return _CLIENT.get()


@contextmanager
def client_scope(client: str | None) -> Iterator[None]:
    """Run a session's protocol steps as ``client`` (the ledger's key): what the stores record
    as the owner of the entries they keep for it."""
    token = _CLIENT.set(client)
    try:
        yield
    finally:
        _CLIENT.reset(token)


class OwnedLRU(Generic[K, V]):
    """Thread-safe LRU map with an entry cap, optional expiry and a per-owner quota.

    ``max_entries``: the cap over all owners (least recently used evicted first). ``ttl_s``: an
    entry older than this (since it was first stored) is dropped when next looked up; None: never.
    ``per_owner``: entries one owner may hold (None or 0: no quota); owner None is never limited.
    ``evicted``: how many entries left by quota (``"quota"``), cap (``"cap"``) and expiry.
    """

    def __init__(self, max_entries: int = 1024, ttl_s: float | None = None, per_owner: int | None = None) -> None:
        if max_entries < 1 or (ttl_s is not None and ttl_s <= 0):
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self.max_entries = int(max_entries)
        self.ttl_s = None if ttl_s is None else float(ttl_s)
        self.per_owner = per_owner
        self._d: OrderedDict[K, V] = OrderedDict()
        self._owner: dict[K, str] = {}
        self._by_owner: dict[str, OrderedDict[K, None]] = {}
        self._born: dict[K, float] = {}
        # re-entrant: subclasses extend put/lookups under the same lock
        self._lock = threading.RLock()
        self.evicted = {"quota": 0, "cap": 0, "expired": 0}

    # ---- hooks
    def _created(self, key: K, value: V) -> float:
        """When the entry was made (monotonic clock); subclasses whose values carry it override."""
        return self._born.get(key, time.monotonic())

    def _on_put(self) -> None:
        """Called after each put, lock held (e.g. a store-wide bound on what entries hold)."""

    # ---- internals (lock held)
    def _drop(self, key: K) -> V | None:
        value = self._d.pop(key, None)
        self._born.pop(key, None)
        owner = self._owner.pop(key, None)
        if owner is not None:
            keys = self._by_owner.get(owner)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._by_owner[owner]
        return value

    def _lookup(self, key: K, touch: bool = True) -> V | None:
        value = self._d.get(key)
        if value is None:
            return None
        if self.ttl_s is not None and time.monotonic() - self._created(key, value) > self.ttl_s:
            self._drop(key)
            self.evicted["expired"] += 1
            return None
        if touch:
            self._d.move_to_end(key)
            owner = self._owner.get(key)
            if owner is not None:
                self._by_owner[owner].move_to_end(key)
        return value

    # ---- public
    def get(self, key: K) -> V | None:
        """The live entry (marked as used), or None."""
        with self._lock:
            return self._lookup(key)

    def touch(self, key: K) -> bool:
        """Whether ``key`` is held (not expired), marked as used."""
        with self._lock:
            return self._lookup(key) is not None

    def put(self, key: K, value: V, owner: str | None = None) -> None:
        """Store ``value`` as the most recently used entry of ``owner``; then evict the owner's
        own least recently used entries beyond its quota, then any beyond the cap. A key already
        held keeps its owner (and its creation time for expiry)."""
        with self._lock:
            if key in self._d:
                owner = self._owner.get(key, owner)
                born = self._born.get(key)
                self._drop(key)
                if born is not None:
                    self._born[key] = born
            self._d[key] = value
            self._born.setdefault(key, time.monotonic())
            if owner is not None:
                self._owner[key] = owner
                mine = self._by_owner.setdefault(owner, OrderedDict())
                mine[key] = None
                while self.per_owner and len(mine) > self.per_owner:
                    self._drop(next(iter(mine)))  # this owner's own oldest, never another's
                    self.evicted["quota"] += 1
            while len(self._d) > self.max_entries:
                self._drop(next(iter(self._d)))
                self.evicted["cap"] += 1
            self._on_put()

    def pop(self, key: K) -> V | None:
        """Remove and return the live entry (None if absent or expired)."""
        with self._lock:
            value = self._lookup(key, touch=False)
            if value is not None:
                self._drop(key)
            return value

    def discard(self, key: K) -> None:
        with self._lock:
            self._drop(key)

    def clear(self) -> None:
        """Forget every entry (a restarted server)."""
        with self._lock:
            self._d.clear()
            self._owner.clear()
            self._by_owner.clear()
            self._born.clear()

    def owner_of(self, key: K) -> str | None:
        with self._lock:
            return self._owner.get(key)

    def owned(self, owner: str) -> int:
        """How many entries ``owner`` holds."""
        with self._lock:
            return len(self._by_owner.get(owner, ()))

    def owners(self) -> dict[str, int]:
        """Entries per owner (owner None not listed)."""
        with self._lock:
            return {o: len(keys) for o, keys in self._by_owner.items()}

    def values(self) -> list[V]:
        """The entries, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._d.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        return len(self._d)


def entry_bytes(value: Any) -> int:
    """Bytes of the arrays and byte strings an entry holds (dicts, lists, tuples, dataclass-like
    objects walked; the Python object overhead, a few hundred bytes, not counted): what
    docs/serving.md states per entry."""
    seen: set[int] = set()

    def walk(v: Any) -> int:
        if id(v) in seen:
            return 0
        seen.add(id(v))
        if isinstance(v, np.ndarray):
            return int(v.nbytes)
        if isinstance(v, (bytes, bytearray)):
            return len(v)
        if isinstance(v, dict):
            return sum(walk(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return sum(walk(x) for x in v)
        slots = getattr(type(v), "__slots__", ())
        fields = getattr(v, "__dict__", None)
        if fields is not None:
            return sum(walk(x) for x in fields.values())
        if slots:
            return sum(walk(getattr(v, s)) for s in slots if hasattr(v, s))
        return 0

    return walk(value)
