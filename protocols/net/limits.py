"""Resource limits for a server that faces untrusted peers: sizes, nesting, deadlines, rates.

A peer can stop a server without sending anything wrong, just by being slow: holding a
connection open, sending one byte a second (each byte used to restart a per-read timeout), or
nesting JSON deep enough to overflow the parser's recursion.  This module holds the numbers and
the small mechanisms that bound each of those:

* :class:`Limits` -- every bound in one place (the CLI sets it from flags).
* :func:`parse_json` -- JSON with a size and nesting-depth bound, checked *before* the recursive
  parser runs, so a reply of 4,000 ``[`` is a one-line :class:`MalformedMessage`, never a
  RecursionError.
* :class:`Deadline` -- an absolute point in time (monotonic clock).  A channel given one
  (:attr:`Channel.deadline`) makes every blocking read and write wait at most until then.
* :func:`read_budget` -- how long one read of ``n`` bytes may take: ``idle`` seconds plus
  ``n / min_rate`` -- a fixed allowance for the peer to start, then a minimum transfer rate.
  Unlike a socket timeout it does *not* restart on each received byte.
* :func:`session_seconds` -- the whole-session deadline, scaled by the model size and the
  number of queries.

Threat model: peers are untrusted for availability.  Every bound here is on time or memory that
one connection can make the server spend; nothing here authenticates (see :mod:`protocols.net.pki`).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.net.errors import FrameTooLarge, MalformedMessage
from protocols.net.quota import DEFAULT_MAX_PER_CLIENT
from secureml.errors import ProtocolError

__all__ = ["Limits", "Deadline", "parse_json", "json_depth", "read_budget", "session_seconds",
           "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one connection may cost the server (seconds, bytes, counts).

    The defaults keep a good client's session unaffected (a QM9-size session is seconds) while an
    idle or trickling connection is dropped within ``handshake_s`` and never holds a session slot.
    """

    #: TLS handshake + first message (the hello) must arrive within this many seconds.
    handshake_s: float = 10.0
    #: one blocking read may wait this long for the peer to *start* sending (it is not restarted
    #: by each byte: see :func:`read_budget`).
    idle_s: float = 60.0
    #: after ``idle_s``, a read must progress at this many bytes per second on average.
    min_rate: float = 64 * 1024
    #: whole session (after the hello): ``session_base_s + session_per_unit_s * N * queries``.
    session_base_s: float = 120.0
    session_per_unit_s: float = 2e-3
    #: largest JSON message and deepest nesting accepted from a peer.
    max_json_bytes: int = 64 * 1024
    max_json_depth: int = 32
    #: connections between accept and their hello (each is a cheap thread, no session state).
    max_pending: int = 512
    #: admitted sessions waiting for a slot; more get an immediate "busy, retry after" answer.
    max_queue: int = 16
    #: how long an admitted session may wait for a slot before it too is answered "busy".
    queue_wait_s: float = 5.0
    #: suggested wait sent to clients with a "busy" answer.
    retry_after_s: float = 1.0
    #: kept-alive connections waiting between sessions (a thread each, no slot); when a session
    #: ends with this many idle, its connection is closed instead (the client reconnects).
    #: An idle one is closed after ``idle_s``.
    max_idle: int = 256
    #: entries one client identity (the ledger's key) may hold in each per-client store -- its
    #: kept-alive connections here, and the protocol's resumable state (OT-session tickets,
    #: lattice keys, prepared re-randomisations; :mod:`protocols.net.quota`); a new one beyond it
    #: evicts (closes) that client's own least recently used one, never another client's.
    #: 0: no per-client bound (only the stores' caps).
    max_per_client: int = DEFAULT_MAX_PER_CLIENT
    #: sessions one client identity (the ledger's key) may have admitted at once -- running plus
    #: queued for a slot; one more waits (no queue place) at most ``queue_wait_s`` for one of
    #: them to end, then is answered "busy, retry after" like a full queue, so one client
    #: opening many connections cannot take every slot and queue place.  0: no bound.
    max_sessions_per_client: int = 2
    #: listen backlog (the kernel's queue of connections not yet accepted).
    backlog: int = 1024
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a negative quota would make the front door close a client's own idle connections at once
        if self.max_per_client < 0:
            raise ValueError(f"max_per_client must be >= 0 (0: no per-client bound), got {self.max_per_client}")
        if self.max_sessions_per_client < 0:
            raise ValueError("max_sessions_per_client must be >= 0 (0: no per-client bound), "
                             f"got {self.max_sessions_per_client}")


DEFAULT_LIMITS = Limits()


class Deadline:
    """An absolute deadline on the monotonic clock (``None`` seconds: never)."""

    __slots__ = ("at", "what")

    def __init__(self, seconds: float | None, what: str = "session") -> None:
        self.at = None if seconds is None else time.monotonic() + float(seconds)
        self.what = what

    def remaining(self) -> float | None:
        """Seconds left (>= 0), or None for no deadline."""
        if self.at is None:
            return None
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def __repr__(self) -> str:
        return f"Deadline({self.what}, remaining={self.remaining()})"


def read_budget(n_bytes: int, idle_s: float | None, min_rate: float | None) -> float | None:
    """Seconds one read of ``n_bytes`` may take in total: ``idle_s + n_bytes / min_rate``.

    ``idle_s=None`` means no per-read bound (only a session deadline, if any, applies).
    """
    if idle_s is None:
        return None
    if not min_rate:
        return float(idle_s)
    return float(idle_s) + n_bytes / float(min_rate)


def session_seconds(n_train: int, n_queries: int, limits: Limits = DEFAULT_LIMITS) -> float:
    """Whole-session deadline: ``base + per_unit * N * queries`` seconds.

    The per-unit figure is ~7x the measured cost (the Gaussian OT protocol at N = 16,384 takes
    ~5 s for one query on loopback: docs/double-blind.md), leaving room for slow links and load.
    """
    return limits.session_base_s + limits.session_per_unit_s * max(1, n_train) * max(1, n_queries)


# strings (with escapes) are removed before bracket counting: a "[" inside a string is no nesting
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(data: bytes) -> int:
    """Maximum bracket nesting of a JSON text (strings ignored); vectorised, O(len) memory."""
    stripped = _JSON_STRING.sub(b'""', data)
    if not stripped:
        return 0
    steps = _OPEN[np.frombuffer(stripped, dtype=np.uint8)].astype(np.int32)
    if not steps.any():
        return 0
    return int(np.cumsum(steps).max())


def parse_json(data: bytes, max_bytes: int = DEFAULT_LIMITS.max_json_bytes,
               max_depth: int = DEFAULT_LIMITS.max_json_depth) -> Any:
    """Parse one JSON message from a peer within size and nesting bounds.

    Raises :class:`protocols.net.transport.MalformedMessage` (a ProtocolError) for anything that
    is not small, shallow, valid UTF-8 JSON; never RecursionError or a numpy/JSON exception.
    Non-finite numbers (``NaN``, ``Infinity``) are refused too: no message of ours carries them.
    """
    if len(data) > max_bytes:
        raise FrameTooLarge(f"JSON message of {len(data)} bytes exceeds {max_bytes}")
    # the count of opening brackets bounds the nesting from above (brackets inside strings only
    # add to it): small messages, every hello and ready, pass without the vectorised scan (~20 us)
    if data.count(b"[") + data.count(b"{") > max_depth:
        depth = json_depth(data)
        if depth > max_depth:
            raise MalformedMessage(f"JSON nested {depth} levels deep; limit is {max_depth}")

    def _no_constants(name: str) -> Any:
        raise ValueError(f"non-finite number {name}")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # the parser's message may quote peer bytes: keep it out of logs and errors
        raise MalformedMessage("peer sent invalid JSON") from None


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class DeadlineExceeded(ProtocolError):
    """Raised by code that checks a :class:`Deadline` outside a channel read."""
