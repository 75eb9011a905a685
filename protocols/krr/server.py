"""The model owner's server for double-blind KRR prediction: sessions, admission, logging.

A connection first goes through the front door (:mod:`protocols.net.frontdoor`: TLS and client
identity, hello within a deadline, admission, a session slot or a "busy, retry after" answer),
then the session: the handshake (:mod:`protocols.krr.handshake`), then the served kind's protocol
from :mod:`protocols.krr.registry` (public-model transfer, offline OT set-up, online), under a
whole-session deadline scaled by N and the number of queries.
The server logs one line per session (peer, identity, number of queries, time, bytes) at INFO and
never any data or client-supplied text; the audit log (``audit=``) has one JSON line per session.
A failing session (bad message, wrong version, peer gone, too slow) is closed with a clear error;
the server keeps serving others.

Threat model: see :mod:`protocols.net.frontdoor` (availability, identity) and
:mod:`protocols.krr.gaussian` (the protocol).
"""
from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from protocols.common import CostReport, check_hello
from protocols.krr import linear_he
from protocols.krr.handshake import (CLIENT_MALFORMED, CLIENT_REJECTED, MAX_QUERIES_PER_SESSION, refusal,
                                    server_handshake)
from protocols.krr.params import PROTOCOL_NAME, PROTOCOL_VERSION
from protocols.krr.registry import protocol_for
from protocols.krr.served import Served
from protocols.mpc.authenticated import MacCheckError
from protocols.mpc.party import Party
from protocols.net.frontdoor import AuditLog, Authenticator, FrontDoor, Refused, SessionContext, run_workers
from protocols.net.limits import DEFAULT_LIMITS, Limits, session_seconds
from protocols.net.quota import OwnedLRU
from protocols.net.transport import Channel, listen
from protocols.ot import session as ot_session
from protocols.ot.consistency import ConsistencyError
from secureml.serving.ledger import QueryLedger, session_client_id

log = logging.getLogger("secureml.serve")

#: failed client-malicious checks a client may cause before the server refuses it (`serve --max-aborts`)
DEFAULT_MAX_ABORTS = 3


class AbortCounter:
    """Failed checks per client: a client-malicious session that fails a check (a MAC check, the
    Laplacian protocol's chain check, an OT-extension consistency check) ends, and counts against
    its client. Why: whether a deviating client's session aborts can depend on the model (the
    unbound Laplacian protocol's one-bit selective failure, ``laplacian_chain = "unbound"``,
    docs/malicious.md; a failed KOS check tells one guessed bit of Delta), so the server bounds how
    many such bits one client can collect; with the bound chain it is denial-of-service protection.
    Clients are keyed as the query ledger keys them (verified identity, else IP address:
    ``session_client_id``). Counts live in this process (with ``workers > 1`` each worker counts
    its own; a restart forgets them) unless ``store`` is a query ledger
    (:class:`secureml.serving.ledger.QueryLedger`: ``record_abort`` / ``aborts``), whose file every
    worker shares and which survives restarts (`serve --budget/--rate --ledger`).
    ``limit`` None: count but never refuse. Thread-safe.

    A session in progress counts as a possible abort (:meth:`session`): checked at admission
    only, a client could open ``concurrency`` (x workers) deviating sessions at once, all admitted
    before the first one failed, and collect that many bits past its limit (review finding,
    docs/malicious.md). So a client with k failed checks may run at most limit - k sessions at
    once (an honest client with none: ``limit`` at once). With a ``store`` the sessions in
    progress are counted in its file too (``begin_session`` / ``end_session``), so the bound is
    ``limit`` across every worker process; :func:`serve` gives ``workers > 1`` a store of its own
    (a temporary ledger file) when none is set. (Before: in-progress sessions were counted per
    process, and a client could reach limit + workers - 1 failed checks.) A ledger file shared by
    serve instances in other pid namespaces (containers, hosts) keeps their rows until they end
    there or expire (``FOREIGN_TTL_S``): their pids cannot be checked here (review of protocol 32).
    A failure the store cannot record (SQLite busy past its timeout, a full disk) is counted in
    this process instead, on top of the store's count: the bound fails closed (it held for the
    store's count only before, so each unrecorded failure was one more bit)."""

    def __init__(self, limit: int | None = DEFAULT_MAX_ABORTS, store: Any = None) -> None:
        self.limit = limit
        self.store = store
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._running_lock = threading.Lock()

    def count(self, client: str) -> int:
        if self.store is not None:
            return int(self.store.aborts(client)) + self._local(client)
        return self._local(client)

    def _local(self, client: str) -> int:
        with self._lock:
            return self._counts.get(client, 0)

    def record(self, client: str) -> int:
        """Count one failed check of ``client``; the new total."""
        if self.store is not None:
            try:
                return int(self.store.record_abort(client)) + self._local(client)
            except Exception as exc:  # noqa: BLE001 -- any store failure: count it here, not nowhere
                log.error("the abort ledger could not record a failed check (%s): counted in this process",
                          type(exc).__name__)
        with self._lock:
            self._counts[client] = self._counts.get(client, 0) + 1
        return self.count(client) if self.store is not None else self._local(client)

    def check(self, client: str) -> None:
        """:class:`Refused` (code ``aborts``, final) once ``client`` has used up its aborts, (code
        ``busy``) while its failed checks plus its sessions in progress reach the limit -- what
        :meth:`session` would answer, asked at admission *before* a query ledger charges the
        session's answers (review finding: a busy answer came after the charge, and every retry
        was charged again). Read-only: :meth:`session` decides atomically (a session of the same
        client that starts in between can still make it busy after the charge)."""
        if self.limit is None:
            return
        failed = self.count(client)
        if failed >= self.limit:
            raise self._used_up()
        if self.store is not None and hasattr(self.store, "running"):
            running = int(self.store.running(client))
        else:
            with self._running_lock:
                running = self._running.get(client, 0)
        if failed + running >= self.limit:
            raise self._busy()

    def _used_up(self) -> Refused:
        return Refused(f"refused: this client failed {self.limit} protocol checks", code="aborts")

    @staticmethod
    def _busy() -> Refused:
        # "busy", not final: an honest client (several processes behind one address) retries on its
        # own once a session of its ends
        return Refused("busy: this client's sessions in progress could use up its remaining failed "
                       "checks; retry when one ends", code="busy", retry_after=2.0)

    @contextmanager
    def session(self, client: str) -> Iterator[None]:
        """Run one session of ``client`` as a possible abort: :class:`Refused` (code ``aborts``,
        final) when its failed checks reach the limit, (code ``busy``, retried by the client) when
        they plus its sessions in progress do. Record a failure
        (:meth:`record`) inside the block, so that the session is never uncounted in between."""
        if self.store is not None and hasattr(self.store, "begin_session"):
            # failures the store could not record (``record``) use up part of the limit here
            local = self._local(client)
            if self.limit is not None and local >= self.limit:
                raise self._used_up()
            verdict = self.store.begin_session(client, None if self.limit is None else self.limit - local)
            if verdict == "aborts":
                raise self._used_up()
            if verdict == "busy":
                raise self._busy()
            try:
                yield
            finally:
                self.store.end_session(client)
            return
        with self._running_lock:
            running = self._running.get(client, 0)
            if self.limit is not None:
                failed = self.count(client)
                if failed >= self.limit:
                    raise self._used_up()
                if failed + running >= self.limit:
                    raise self._busy()
            self._running[client] = running + 1
        try:
            yield
        finally:
            with self._running_lock:
                self._running[client] -= 1
                if not self._running[client]:
                    del self._running[client]

def client_stores() -> dict[str, OwnedLRU]:
    """This process's stores of per-client resumable state, by name (docs/serving.md lists their
    caps and bytes per entry); :func:`serve` sets their per-client quota (``limits.max_per_client``).
    The front door's kept-alive connections have the same quota (:mod:`protocols.net.frontdoor`)."""
    return {"ot-tickets": ot_session.SERVER_TICKETS, "lattice-keys": linear_he.KEYS,
            "lattice-next": linear_he.NEXT}


def set_client_quota(per_client: int) -> None:
    """Each client identity holds at most ``per_client`` entries of each store of
    :func:`client_stores` (0: no quota; entries made outside a served session are never limited)."""
    if per_client < 0:
        raise ValueError("per_client must be >= 0 (0: no quota)")
    for store in client_stores().values():
        store.per_owner = int(per_client) or None


# messages the server itself words, with nothing from the client in them: the only ones it logs
_SAFE_MESSAGES = {CLIENT_REJECTED, CLIENT_MALFORMED}


def log_safe(exc: BaseException) -> str:
    """What the server may log about a failed session: the error's class (e.g. ``ConsistencyError``,
    ``PeerDisconnected``), never its message -- messages can quote the client's bytes (a malformed
    reply, a rejected query's reason, a newline that forges a log line) -- except the server's own
    fixed wording of a client's abort."""
    msg = str(exc)
    return f"{type(exc).__name__}: {msg}" if msg in _SAFE_MESSAGES or msg.startswith("refused: ") \
        else type(exc).__name__


def serve_one(model: Served, ch: Channel, peer: str = "local", *, party: Party | None = None,
              hello: dict[str, Any] | None = None, ctx: SessionContext | None = None) -> CostReport:
    """Run one session as the model owner on an open channel; returns its cost.

    ``party``: this side's :class:`Party` on ``ch`` (role 0), e.g. with its own correlation
    provider or, in tests only, a seeded one (reproducible transcripts); default a fresh one.
    ``hello``: the client's hello when the front door has already read it; ``ctx``: the front
    door's session context (its ``cost`` receives this session's figures for the audit log).
    """
    t0 = time.perf_counter()
    proto = protocol_for(model.public.kind)
    early: dict[str, Any] = {}
    k, answer = server_handshake(ch, model.public, hello,
                                 after_params=lambda h: early.update(proto.server_after_hello(model, h)),
                                 keep_alive=ctx is not None and ctx.keep_alive)
    proto.server_after_ready(ch, model, answer)
    party = proto.server_party(ch, model) if party is None else party
    info = {**proto.server_setup(party, model, k), **early}
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    proto.server_online(party, model, k, info)
    t1 = time.perf_counter()
    cost = CostReport.from_channel("ot-krr", ch, t0, t_off, t1, off_bytes, {"n_queries": k, "peer": peer})
    client = ctx.client_id if ctx is not None else None
    log.info(
        "session peer=%s client=%s queries=%d wall=%.2fs sent=%.1fMB received=%.1fMB rounds=%d",
        peer, client, k, cost.wall_s, cost.bytes_sent / 1e6, cost.bytes_received / 1e6, cost.rounds,
    )
    if ctx is not None:
        ctx.cost.update(wall_s=round(cost.wall_s, 4), offline_s=round(cost.offline_s, 4),
                        online_s=round(cost.online_s, 4), bytes_sent=cost.bytes_sent,
                        bytes_received=cost.bytes_received, rounds=cost.rounds)
    after = info.pop("after_reply", None)
    if after is not None:  # work for the client's next session (a compact model's OT pool refill)
        after()
    return cost


def serve(model: Served, host: str = "127.0.0.1", port: int = 7000, *,
          ssl_context: ssl.SSLContext | None = None, max_sessions: int | None = None,
          concurrency: int = 2, session_timeout: float | None = None,
          on_ready: Callable[[int], None] | None = None, stop: threading.Event | None = None,
          limits: Limits = DEFAULT_LIMITS, auth: Authenticator | None = None,
          admit: Callable[[SessionContext], Any] | None = None, audit: AuditLog | None = None,
          workers: int = 1, aborts: AbortCounter | None = None, keep_alive: bool = True) -> None:
    """Serve sessions until ``stop`` is set or ``max_sessions`` admitted sessions have finished.

    Each worker process (``workers``; forked after the model is loaded, sharing the listening
    socket) runs at most ``concurrency`` sessions at once; idle and slow connections never take a
    slot (:mod:`protocols.net.frontdoor`).  ``auth``: client certificates (with an
    ``ssl_context`` that requires them) and/or tokens.  ``admit(ctx)``: called with the verified
    ``ctx.client_id`` and ``ctx.n_queries`` before a session starts; return False or raise
    :class:`protocols.net.frontdoor.Refused` to refuse it (per-client query budgets).
    ``session_timeout``: per-read idle limit in seconds (default ``limits.idle_s``).
    With ``workers > 1``, ``max_sessions`` and ``stop`` apply to each worker.
    ``aborts``: the per-client count of failed checks (default :class:`AbortCounter` with
    :data:`DEFAULT_MAX_ABORTS`); a client that reached its limit is refused before any protocol work.
    ``keep_alive``: serve a client's next session on the connection of its last one when its hello
    asks (idle at most ``limits.idle_s``, holding no slot; every session admitted, counted and
    audited as on a new connection: :mod:`protocols.net.frontdoor`, step 8).
    ``limits.max_per_client``: entries one client identity may hold in each store of resumable
    state (:func:`client_stores`) and kept-alive connections (``secureml serve --max-per-client``).
    """
    aborts = AbortCounter() if aborts is None else aborts
    # one client cannot evict another's resumable state (tickets, keys, re-randomisations)
    set_client_quota(limits.max_per_client)
    if session_timeout is not None:
        from dataclasses import replace

        limits = replace(limits, idle_s=float(session_timeout))
    srv = listen(host, port, backlog=limits.backlog)
    actual = srv.getsockname()[1]
    refused = refusal(model.public)
    if refused:
        print(f"secureml: WARNING: {refused}; every session will be refused", flush=True)
    print(f"secureml: serving {model.public.kind} (N={model.public.n_train}, d={model.public.n_features}, "
          f"security={model.public.security}) on {host}:{actual}", flush=True)
    if (model.public.kind == "krr-laplacian" and model.public.security == "client-malicious"
            and model.public.laplacian_chain == "unbound"):
        print("secureml: client-malicious Laplacian protocol: whether a deviating client's session aborts can "
              "tell it one bit about the training data (--laplacian-chain unbound, docs/malicious.md); a client is refused after "
              f"{aborts.limit if aborts.limit is not None else 'unlimited'} failed checks (--max-aborts, counted "
              "across all workers); compact models (secureml train --recipe local-sorf) have no such bit", flush=True)
    elif model.public.kind == "krr-laplacian" and model.public.security == "client-malicious":
        print("secureml: client-malicious Laplacian protocol, bound chain: every value a client feeds the comparisons "
              "is committed and checked, so whether a session aborts depends on the client's own messages only "
              "(docs/malicious.md)", flush=True)
    if on_ready:
        on_ready(actual)

    def precheck(hello: dict[str, Any]) -> tuple[int, float]:
        k = check_hello(hello, PROTOCOL_NAME, PROTOCOL_VERSION, MAX_QUERIES_PER_SESSION)
        return k, session_seconds(model.public.n_train, k, limits)

    def handler(ch: Channel, hello: dict[str, Any], ctx: SessionContext) -> None:
        client = session_client_id(ctx)
        with aborts.session(client):  # before the handshake's first byte: a refusal is the reply
            try:
                serve_one(model, ch, ctx.peer, hello=hello, ctx=ctx)
            except (MacCheckError, ConsistencyError) as exc:
                n = aborts.record(client)
                # server-side facts only: the check's class, the verified identity (or address), the count
                log.warning("session peer=%s client=%s failed a protocol check (%s): abort %d of %s allowed",
                            ctx.peer, ctx.client_id, type(exc).__name__, n,
                            aborts.limit if aborts.limit is not None else "unlimited")
                raise

    def admit_all(ctx: SessionContext) -> Any:
        # used-up or busy before the ledger (``admit``) charges: a busy session is retried, not paid
        aborts.check(session_client_id(ctx))
        return True if admit is None else admit(ctx)

    def run(_: int = 0) -> None:
        door = FrontDoor(handler, precheck, limits=limits, ssl_context=ssl_context, auth=auth,
                         admit=admit_all, concurrency=concurrency, audit=audit, keep_alive=keep_alive)
        door.serve_forever(srv, stop, max_sessions)

    tmp = None
    if workers > 1 and aborts.store is None:
        # the workers are processes: count failed checks and sessions in progress in one file they
        # all open, so that a client's bound is --max-aborts, not one limit per worker
        tmp = tempfile.TemporaryDirectory(prefix="secureml-aborts-")
        aborts.store = QueryLedger(f"{tmp.name}/aborts.sqlite")
    try:
        if workers > 1:
            run_workers(workers, run)
        else:
            run()
    finally:
        srv.close()
        if tmp is not None:
            tmp.cleanup()
