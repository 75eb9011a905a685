"""Per-client query budgets and rate limits that hold across sessions and server restarts.

The double-blind server cannot see queries, so it cannot tell a fresh query from a repeated one:
the only lever against attacks that need many answers (averaging fresh output noise, weight
extraction with F + 1 queries, membership inference over a pool, the kink search) is *how many*
answers a client gets. The ledger counts them per client identity (a TLS client-certificate
fingerprint or a token, as the server establishes it; never anything derived from a query) in a
SQLite file, so a budget survives a restart and is shared by every session and server thread
that opens the same file.

Two limits, both optional:
  * ``budget``: lifetime answers per client;
  * ``rate``: answers per minute, as a token bucket holding at most one minute's worth (a burst of
    ``rate`` answers, then ``rate / 60`` per second).
A session asking for n answers is admitted whole or refused whole, and is charged *before* the
protocol runs: a client that aborts mid-session has still spent its answers (it may already hold
them). Refusals raise :class:`QueryRefused` with one clear line for the client.

Interface (what a server needs): ``ledger.admit(client_id, n)`` -- check and charge atomically;
``check`` and ``charge`` apart; ``usage(client_id)``; ``record_abort`` / ``aborts``: the count of
a client's sessions that failed a protocol check (``serve --max-aborts``, protocols.krr.server),
kept in the same file so that it holds across worker processes and restarts;
``begin_session`` / ``end_session``: a client's sessions in progress, counted in the same file so
that failed checks plus sessions in progress stay within the limit across all worker processes
(``running``: their number, read-only, for the check at admission).
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from secureml.errors import SecureMLError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    used INTEGER NOT NULL DEFAULT 0,       -- answers charged, lifetime
    tokens REAL NOT NULL,                  -- rate-limit bucket
    updated REAL NOT NULL                  -- wall-clock time of the bucket's last update
);
CREATE TABLE IF NOT EXISTS aborts (
    client_id TEXT PRIMARY KEY,
    failed INTEGER NOT NULL DEFAULT 0      -- sessions that failed a protocol check (serve --max-aborts)
);
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT NOT NULL,
    ns TEXT NOT NULL,                      -- the server process's pid namespace (_NAMESPACE)
    pid INTEGER NOT NULL,                  -- the server process running them (rows of dead ones are dropped)
    n INTEGER NOT NULL,                    -- sessions in progress there
    started REAL NOT NULL,                 -- clock at the row's latest begin (other namespaces' rows expire)
    PRIMARY KEY (client_id, ns, pid)
);
"""
#: age (seconds since its latest begin) after which a row of sessions in progress written in another
#: pid namespace -- another container or host sharing the ledger file, whose pids cannot be checked
#: here -- is taken for a dead instance's and dropped; until then it counts (fail closed)
FOREIGN_TTL_S = 24 * 3600.0


def _namespace() -> str:
    """Where a pid means the same process: this boot (boot id) and pid namespace. Forked workers share
    it; a container (own pid namespace) or another host (own boot id) does not."""
    parts = []
    for f in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(f) if f.endswith("/ns/pid") else Path(f).read_text().strip())
        except OSError:
            parts.append(socket.gethostname())
    return "|".join(parts)


_NAMESPACE = _namespace()


class QueryRefused(SecureMLError):
    """A client asked for more answers than its budget or rate limit allows."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryLedger:
    """SQLite-backed per-client budget and rate limit (see module docstring).

    ``path`` ":memory:" keeps the ledger in this process only (tests); ``clock`` is injectable
    so rate limits can be tested without sleeping.
    """

    def __init__(self, path: str | Path, budget: int | None = None, rate: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if budget is not None and budget < 0:
            raise SecureMLError("query budget must be >= 0")
        if rate is not None and not rate > 0:
            raise SecureMLError("rate limit must be > 0 queries per minute")
        self.path, self.budget, self.rate, self.clock = str(path), budget, rate, clock
        self._lock = threading.Lock()
        self._memory = sqlite3.connect(":memory:", check_same_thread=False) if self.path == ":memory:" else None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            db.executescript(_SCHEMA)
        finally:
            if db is not self._memory:
                db.close()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call, under this object's lock (threads); closed after it unless
        the ledger lives in memory."""
        with self._lock:
            db = self._connect()
            try:
                yield db
            finally:
                if db is not self._memory:
                    db.close()

    def _connect(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        # one short-lived connection per call: safe across threads and processes; 30 s busy wait
        return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)

    @property
    def capacity(self) -> float:
        return float(self.rate) if self.rate else math.inf

    def _state(self, db: sqlite3.Connection, client_id: str, now: float) -> tuple[int, float]:
        row = db.execute("SELECT used, tokens, updated FROM clients WHERE client_id = ?", (client_id,)).fetchone()
        if row is None:
            return 0, self.capacity
        used, tokens, updated = row
        if self.rate:
            tokens = min(self.capacity, tokens + max(0.0, now - updated) * self.rate / 60.0)
        return int(used), float(tokens)

    def _decide(self, used: int, tokens: float, n: int) -> str | None:
        if n < 1:
            return "a session must ask for at least one answer"
        if self.budget is not None and used + n > self.budget:
            left = max(0, self.budget - used)
            return (f"query budget exhausted: this client has used {used} of {self.budget} answers "
                    f"and asked for {n} ({left} left)")
        if self.rate:
            if n > self.capacity:
                return f"rate limit: at most {self.rate:g} answers per minute, and this session asks for {n}"
            if tokens + 1e-9 < n:
                wait = (n - tokens) * 60.0 / self.rate
                return f"rate limit: {self.rate:g} answers per minute; retry in {math.ceil(wait)} s"
        return None

    def check(self, client_id: str, n: int) -> str | None:
        """The refusal message for a session of n answers, or None if it would be admitted."""
        with self._db() as db:
            return self._decide(*self._state(db, client_id, self.clock()), n)

    def charge(self, client_id: str, n: int) -> None:
        """Charge n answers without checking (e.g. answers served outside :meth:`admit`)."""
        self._apply(client_id, n, check=False)

    def admit(self, client_id: str, n: int) -> int | None:
        """Check and charge atomically; raises :class:`QueryRefused`. Returns the budget left."""
        return self._apply(client_id, n, check=True)

    def _apply(self, client_id: str, n: int, check: bool) -> int | None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes too
            now = self.clock()
            used, tokens = self._state(db, client_id, now)
            refusal = self._decide(used, tokens, n) if check else None
            if refusal is not None:
                db.execute("ROLLBACK")
                wait = (n - tokens) * 60.0 / self.rate if self.rate and "retry in" in refusal else None
                raise QueryRefused(refusal, retry_after=wait)
            tokens = tokens - n if self.rate else 0.0
            db.execute(
                "INSERT INTO clients (client_id, used, tokens, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(client_id) DO UPDATE SET used = excluded.used, tokens = excluded.tokens, "
                "updated = excluded.updated", (client_id, used + n, tokens, now))
            db.execute("COMMIT")
        return None if self.budget is None else self.budget - used - n

    def record_abort(self, client_id: str) -> int:
        """Count one failed protocol check against ``client_id``; returns its new total."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO aborts (client_id, failed) VALUES (?, 1) ON CONFLICT(client_id) "
                       "DO UPDATE SET failed = failed + 1", (client_id,))
            n = int(db.execute("SELECT failed FROM aborts WHERE client_id = ?", (client_id,)).fetchone()[0])
            db.execute("COMMIT")
            return n

    def aborts(self, client_id: str) -> int:
        """Failed protocol checks counted against ``client_id`` so far."""
        with self._db() as db:
            row = db.execute("SELECT failed FROM aborts WHERE client_id = ?", (client_id,)).fetchone()
            return 0 if row is None else int(row[0])

    def _live_rows(self, db: sqlite3.Connection, client_id: str, drop: bool) -> int:
        """Sessions of ``client_id`` in progress: rows of our pid namespace whose process is alive,
        and rows of another namespace younger than FOREIGN_TTL_S (their pids cannot be checked
        here: review finding, a live session elsewhere read as dead). ``drop``: delete the others."""
        rows = db.execute("SELECT ns, pid, n, started FROM sessions WHERE client_id = ?", (client_id,)).fetchall()
        now, running = self.clock(), 0
        for ns, pid, n, started in rows:
            live = _alive(int(pid)) if ns == _NAMESPACE else now - float(started) <= FOREIGN_TTL_S
            if live:
                running += int(n)
            elif drop:
                db.execute("DELETE FROM sessions WHERE client_id = ? AND ns = ? AND pid = ?", (client_id, ns, pid))
        return running

    def begin_session(self, client_id: str, limit: int | None) -> str | None:
        """Admit one more session of ``client_id`` as a possible abort, atomically across processes:
        None (admitted and counted as in progress, in this process's row), ``"aborts"`` (its failed
        checks reached ``limit``) or ``"busy"`` (failed checks plus sessions in progress would).
        Rows of server processes that no longer exist are dropped first (a worker that died
        mid-session must not hold a client's slots for ever); rows written in another pid namespace
        (a container or host sharing the file) count until FOREIGN_TTL_S after their latest begin."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            running = self._live_rows(db, client_id, drop=True)
            row = db.execute("SELECT failed FROM aborts WHERE client_id = ?", (client_id,)).fetchone()
            failed = 0 if row is None else int(row[0])
            verdict = None
            if limit is not None and failed >= limit:
                verdict = "aborts"
            elif limit is not None and failed + running >= limit:
                verdict = "busy"
            else:
                db.execute("INSERT INTO sessions (client_id, ns, pid, n, started) VALUES (?, ?, ?, 1, ?) "
                           "ON CONFLICT(client_id, ns, pid) DO UPDATE SET n = n + 1, started = excluded.started",
                           (client_id, _NAMESPACE, os.getpid(), self.clock()))
            db.execute("COMMIT")
            return verdict

    def running(self, client_id: str) -> int:
        """Sessions of ``client_id`` in progress (read-only: the rows :meth:`begin_session` counts;
        it drops the others)."""
        with self._db() as db:
            return self._live_rows(db, client_id, drop=False)

    def end_session(self, client_id: str) -> None:
        """The session :meth:`begin_session` admitted in this process has ended."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE sessions SET n = n - 1 WHERE client_id = ? AND ns = ? AND pid = ?",
                       (client_id, _NAMESPACE, os.getpid()))
            db.execute("DELETE FROM sessions WHERE n <= 0")
            db.execute("COMMIT")

    def usage(self, client_id: str) -> dict[str, float | int | None]:
        with self._db() as db:
            used, tokens = self._state(db, client_id, self.clock())
        return {"used": used, "budget": self.budget,
                "left": None if self.budget is None else max(0, self.budget - used),
                "rate_tokens": None if not self.rate else tokens}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without signalling). A reused pid reads as
    alive: its stale row then keeps that client "busy" until the process ends -- a refusal the
    client retries, never a session beyond the limit."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def session_client_id(ctx: object) -> str:
    """The ledger key of a session: its verified identity (certificate or token), else -- on an
    open server -- its IP address (weak: clients behind one NAT share a budget, and a client with
    many addresses gets many; require tokens or certificates where budgets matter)."""
    cid = getattr(ctx, "client_id", None)
    if cid:
        return str(cid)
    peer = str(getattr(ctx, "peer", "unknown"))
    return "ip:" + peer.rsplit(":", 1)[0]
