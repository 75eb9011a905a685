"""The server's front door: accept, authenticate, admit, queue or refuse -- before any protocol work.

A connection goes through these steps (each bounded in time and memory by :class:`Limits`):

  1. accept.  More than ``max_pending`` connections still in steps 2-4 are closed at once (the
     client's :func:`protocols.net.dial.dial` retries with backoff); the listen backlog is
     ``limits.backlog`` so a burst is queued by the kernel, not refused.
  2. TLS, if configured.  The first byte is peeked: a plaintext client gets a clear framed
     answer ("this server requires TLS") instead of a reset; a TLS client on a plaintext server is
     logged as such.  With a client CA the handshake requires a client certificate (mutual TLS).
  3. hello: the first message, at most ``max_json_bytes`` and ``max_json_depth`` deep, must
     arrive within ``handshake_s`` of the accept (a *deadline*: trickling bytes do not extend it;
     a watchdog shuts the socket when it passes, so even a stalled TLS handshake is cut).
  4. identity (:class:`Authenticator`): the client certificate's subject, or a bearer token from
     the hello (only its SHA-256 is stored on the server).  Unauthenticated clients are refused
     here, before any OT.  Then ``precheck(hello)`` (the protocol's own hello check: version,
     query count) may refuse.
  5. a session slot: at most ``concurrency`` sessions run at once; up to ``max_queue`` sessions
     wait at most ``queue_wait_s`` for one; others get an immediate
     ``{"ok": false, "busy": true, "retry_after": s}``.  Holding the slot, the ``admit(ctx)``
     hook (per-client query budgets and rates, which it charges) may refuse; the slot is then
     released.  Admission after the slot: a session answered "busy" is never charged.
     Before the queue, a per-client bound: at most ``limits.max_sessions_per_client`` sessions
     of one client identity (the ledger's key) admitted at once, running or queued; one more
     waits at most ``queue_wait_s`` for one of them to end, holding no queue place or slot,
     then gets the same "busy, retry after" answer (one client with many connections cannot
     take every slot and queue place; other clients are admitted as before).
  6. the session runs under a whole-session deadline (``precheck`` returns its length) and the
     per-read minimum transfer rate of :mod:`protocols.net.limits`.
  7. one audit record (:class:`AuditLog`): time, identity, model hash, queries, cost, outcome.
  8. keep-alive: when the hello asked for it (``"keep_alive": true``), the session ended well and
     the server keeps connections (``keep_alive``, default on), the connection waits, holding no
     slot, at most ``limits.idle_s`` for the client's next hello, which then goes through steps
     3-7 again exactly as on a new connection (identity, precheck, ``admit`` -- per-client
     budgets and rates charged per session --, a slot or "busy", a session deadline, its own
     audit record). A refused, failed or aborted session closes the connection, as does a
     malformed or late next hello; at most ``limits.max_idle`` connections wait at once, at most
     ``limits.max_per_client`` of one client identity (one more closes that client's own oldest
     idle connection, never another client's: one client cannot take every idle place). One
     session at a time per connection: the next hello is read only after the last session ended.

So idle and slow connections cost one blocked thread each for at most ``handshake_s`` seconds
(kept-alive ones between sessions: ``idle_s``, at most ``max_idle`` of them) and never hold a
session slot.  ``workers > 1`` (:func:`run_workers`) forks processes that accept
on one shared listening socket, so sessions use every core.

Each admitted session runs in :func:`protocols.net.quota.client_scope` of its client identity
(the query ledger's key), so the stores of resumable state the protocol keeps for the client's next
session (OT tickets, lattice keys and re-randomisations) count it against that client's quota.

Threat model: clients are untrusted for availability and identity (a client may be anyone who
reaches the port unless an :class:`Authenticator` is configured).  One identity holds at most
``limits.max_sessions_per_client`` sessions admitted at once (running or queued), so many
connections of one client leave the other queue places -- and, with ``concurrency`` above the
bound, a slot -- to other clients; the bound is per identity, so clients sharing an address on an
open server share it and a client with many identities gets one each.  Logs and audit records hold
only server-side facts (peer address, the identity the server verified, counts, times, the
exception class of a failure), never client-supplied text or anything derived from a query.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from protocols.net.limits import DEFAULT_LIMITS, Deadline, Limits
from protocols.net.quota import client_scope
from protocols.net.slots import FairSlots
from protocols.net.transport import Channel, ProtocolTimeout, TCPChannel, frame
from secureml.errors import ProtocolError
from secureml.serving.ledger import QueryLedger, QueryRefused, session_client_id

__all__ = ["SessionContext", "Refused", "Authenticator", "AuditLog", "FrontDoor", "run_workers",
           "load_tokens", "hash_token", "TLS_FIRST_BYTE"]

log = logging.getLogger("secureml.serve")

#: a TLS connection starts with a handshake record (content type 22)
TLS_FIRST_BYTE = 0x16


class Refused(ProtocolError):
    """A session refused before it started; ``code`` is what the audit log records and
    ``public`` what the client is told (both server-chosen text)."""

    def __init__(self, public: str, code: str = "refused", retry_after: float | None = None) -> None:
        super().__init__(public)
        self.public = public
        self.code = code
        self.retry_after = retry_after


@dataclass
class SessionContext:
    """What the server knows about a session when it admits it (passed to ``admit``)."""

    peer: str
    #: verified identity: "cert:<subject CN>", "token:<name>", or None on an open server
    client_id: str | None = None
    n_queries: int = 0
    session_s: float | None = None
    accepted_at: float = field(default_factory=time.time)
    #: filled by the session handler for the audit record (numbers only)
    cost: dict[str, Any] = field(default_factory=dict)
    #: the client asked to keep the connection for its next session and this server does
    #: (the handler says so in the hello's answer)
    keep_alive: bool = False


def hash_token(token: str) -> str:
    """What the server stores for a bearer token: its SHA-256 (hex)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_tokens(path: str | Path) -> dict[str, str]:
    """Read a tokens file: one ``NAME SHA256HEX`` per line (``#`` comments); {hash: name}."""
    out: dict[str, str] = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) != 64 or any(c not in "0123456789abcdef" for c in parts[1]):
            raise ProtocolError(f"{path}:{i}: want 'NAME SHA256HEX' (made by `secureml keys token`)")
        out[parts[1]] = parts[0]
    if not out:
        raise ProtocolError(f"{path}: no tokens")
    return out


class Authenticator:
    """Who is this client?  A verified client certificate and/or a bearer token.

    ``tokens``: {sha256 hex: name}.  ``cert_auth``: the TLS context verifies client certificates
    (set up by :func:`protocols.net.pki.server_context` with a client CA); the subject's common
    name is the identity.  Either method suffices; with neither configured every client is
    anonymous and admitted (an open server).
    """

    def __init__(self, tokens: dict[str, str] | None = None, cert_auth: bool = False) -> None:
        self.tokens = dict(tokens or {})
        self.cert_auth = cert_auth

    @property
    def required(self) -> bool:
        return bool(self.tokens) or self.cert_auth

    def identify(self, sock: socket.socket, hello: dict[str, Any]) -> str | None:
        """The client's identity; :class:`Refused` ("unauthenticated") when one is required."""
        if self.cert_auth and isinstance(sock, ssl.SSLSocket):
            cert = sock.getpeercert()
            if cert:  # verified against the client CA by the handshake itself
                for rdn in cert.get("subject", ()):
                    for key, value in rdn:
                        if key == "commonName":
                            return f"cert:{value}"
        token = hello.get("token")
        if self.tokens and isinstance(token, str) and 8 <= len(token) <= 256:
            digest = hash_token(token)
            for known, name in self.tokens.items():
                if hmac.compare_digest(known, digest):
                    return f"token:{name}"
        if self.required:
            raise Refused("unauthenticated: this server needs a client certificate or token",
                          code="unauthenticated")
        return None


class AuditLog:
    """Structured audit trail: one JSON object per line, appended with a single write.

    Every field is server-side: time, pid, peer address, verified identity, model hash, number of
    queries, cost figures, outcome and (for failures) the exception class.  Safe across worker
    processes (O_APPEND writes of one short line each).
    """

    def __init__(self, path: str | Path | None, model_sha256: str = "") -> None:
        self.path = None if path is None else Path(path)
        self.model_sha256 = model_sha256
        self._fd: int | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def record(self, ctx: SessionContext, outcome: str, reason: str | None = None) -> dict[str, Any]:
        rec = {
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "pid": os.getpid(),
            "peer": ctx.peer,
            "client": ctx.client_id,
            "model_sha256": self.model_sha256,
            "queries": int(ctx.n_queries),
            "outcome": outcome,
            "reason": reason,
            **{k: v for k, v in ctx.cost.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        }
        if self._fd is not None:
            os.write(self._fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())
        return rec

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Watchdog:
    """Shuts down sockets whose deadline passed: the backstop for any blocking call (a stalled
    TLS handshake, a sendall to a peer that stopped reading) that a timeout alone would not cut."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: dict[int, tuple[socket.socket, Deadline]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="frontdoor-watchdog")
        self._thread.start()

    def watch(self, sock: socket.socket, deadline: Deadline) -> None:
        with self._lock:
            self._socks[id(sock)] = (sock, deadline)

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.pop(id(sock), None)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                expired = [(k, s) for k, (s, d) in self._socks.items() if d.expired]
                for k, _ in expired:
                    del self._socks[k]
            for _, s in expired:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()


Handler = Callable[[Channel, dict, SessionContext], None]
Precheck = Callable[[dict], tuple[int, float]]


class FrontDoor:
    """Accept loop + admission for one listening socket (see the module docstring for the steps).

    ``precheck(hello) -> (n_queries, session_seconds)`` validates the protocol's hello and raises
    a ProtocolError whose text the client is sent; ``handler(ch, hello, ctx)`` runs an admitted
    session (it sends the hello's answer itself) and may fill ``ctx.cost``.
    """

    def __init__(self, handler: Handler, precheck: Precheck, *, limits: Limits = DEFAULT_LIMITS,
                 ssl_context: ssl.SSLContext | None = None, auth: Authenticator | None = None,
                 admit: Callable[[SessionContext], Any] | None = None, concurrency: int = 2,
                 audit: AuditLog | None = None, keep_alive: bool = True) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.handler, self.precheck, self.limits = handler, precheck, limits
        self.ssl_context, self.auth, self.admit = ssl_context, auth or Authenticator(), admit
        self.audit = audit or AuditLog(None)
        self.concurrency = concurrency
        # handed out in arrival order: a plain semaphore let a client's next session barge past one
        # queued before it (protocols.net.slots)
        self._slots = FairSlots(concurrency)
        self._lock = threading.Lock()
        self._pending = 0
        self._waiting = 0
        self._mean_s = 1.0
        self.sessions = 0  # admitted sessions finished (ok or failed)
        self.stats = {"accepted": 0, "shed": 0, "busy": 0, "refused": 0, "ok": 0, "failed": 0,
                      "idle_closed": 0, "idle_evicted": 0, "client_busy": 0}
        #: serve a client's next session on the connection of its last one when its hello asks
        self.keep_alive = keep_alive
        self._idle = 0  # kept-alive connections waiting for their next hello
        self._idle_channels: set[TCPChannel] = set()
        # each client's kept-alive connections waiting, least recently kept first: at most
        # ``limits.max_per_client`` each (one client cannot take every idle place)
        self._idle_by_client: dict[str, dict[TCPChannel, socket.socket]] = {}
        # each client's sessions past the per-client check (queued for a slot or running): at
        # most ``limits.max_sessions_per_client``; an entry is removed when its count reaches 0
        self._sessions_by_client: dict[str, int] = {}
        self._client_freed = threading.Condition(self._lock)  # notified when a count drops
        self._stopping = False
        self._max_sessions: int | None = None
        self._watchdog: _Watchdog | None = None
        self._done = threading.Condition(self._lock)

    # ------------------------------------------------------------------ loop
    def serve_forever(self, srv: socket.socket, stop: threading.Event | None = None,
                      max_sessions: int | None = None) -> None:
        """Accept until ``stop`` is set or ``max_sessions`` admitted sessions have finished."""
        self._watchdog = _Watchdog()
        self._max_sessions = max_sessions
        srv.settimeout(0.25)
        threads: list[threading.Thread] = []
        try:
            while not (stop is not None and stop.is_set()):
                if max_sessions is not None and self.sessions >= max_sessions:
                    break
                try:
                    conn, addr = srv.accept()
                except (socket.timeout, TimeoutError):
                    continue
                except OSError:
                    if stop is not None and stop.is_set():
                        break
                    time.sleep(0.05)  # EMFILE and friends: back off, keep serving
                    continue
                self.stats["accepted"] += 1
                with self._lock:
                    over = self._pending >= self.limits.max_pending
                    if not over:
                        self._pending += 1
                if over:  # shed load at the door: cheapest possible answer
                    self.stats["shed"] += 1
                    _close(conn)
                    continue
                t = threading.Thread(target=self._connection, args=(conn, f"{addr[0]}:{addr[1]}"),
                                     daemon=True, name="session")
                t.start()
                threads = [x for x in threads if x.is_alive()]
                threads.append(t)
            self._close_idle()
            for t in threads:  # let running sessions finish (they are bounded by deadlines)
                t.join(timeout=5.0 if max_sessions is None else None)
        finally:
            self._close_idle()
            self._watchdog.stop()

    def _close_idle(self) -> None:
        """Stop keeping connections: close the idle ones now (their clients start their next
        session on a new connection, to a server that may be gone); sessions in progress end
        their connection when they finish."""
        with self._lock:
            self._stopping = True
            idle = list(self._idle_channels)
        for ch in idle:
            try:
                ch.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------ one connection
    def _connection(self, conn: socket.socket, peer: str) -> None:
        """Steps 2-7 for one connection, then, while the client asks for it (``keep_alive`` in
        its hello) and its sessions end well, the next session on the same connection: wait for
        its hello at most ``limits.idle_s`` (idle, holding no slot), then steps 3-7 again."""
        handshake = Deadline(self.limits.handshake_s, "handshake")
        assert self._watchdog is not None
        self._watchdog.watch(conn, handshake)
        sock: socket.socket = conn
        ch: TCPChannel | None = None
        pending = True  # counted in _pending until its first session takes a slot or ends
        try:
            try:
                tls = self._tls(conn, peer, handshake)
            except Refused as exc:
                self._refused(None, SessionContext(peer=peer), exc)
                return
            except (ProtocolError, OSError, ssl.SSLError) as exc:
                self._dropped(SessionContext(peer=peer), exc, False)
                return
            if tls is None:
                return
            sock = tls
            self._watchdog.watch(sock, handshake)
            # writes pipelined on plain TCP (a writer thread drains a queue: an OT extension's pieces
            # go out without a round trip each -- the Laplacian at N = 16,384 in 34 rounds instead of
            # 120), not on TLS, whose socket must not be written from a second thread
            ch = TCPChannel(sock, timeout=self.limits.idle_s, background_writes=None)
            ch.min_rate = self.limits.min_rate
            ch.deadline = handshake
            hello: Any = None  # the first session reads its own hello under the handshake deadline
            while True:
                keep, admitted, client = self._session(ch, sock, peer, hello, pending)
                pending = pending and not admitted
                if not keep:
                    return
                hello = self._next_hello(ch, sock, client)
                if hello is None:
                    return
        finally:
            self._watchdog.forget(conn)
            if sock is not conn:
                self._watchdog.forget(sock)
            if ch is not None:
                ch.close()
            else:
                _close(sock)
            if pending:
                with self._lock:
                    self._pending -= 1

    def _session(self, ch: TCPChannel, sock: socket.socket, peer: str, hello: Any,
                 pending: bool) -> tuple[bool, bool, str]:
        """Steps 3-7 for one session; ``hello`` None: read it here. Returns (keep the connection
        for another session, a slot was taken -- also when ``admit`` then refused: the connection
        has left the pending count --, the session's client key as the ledger keys it). Every
        failure is answered or logged here. The handler runs in :func:`client_scope` of that key:
        the stores of the client's resumable state count what it keeps against it."""
        ctx = SessionContext(peer=peer)
        admitted = took_slot = False
        held: str | None = None  # the client key counted in _sessions_by_client, released below
        try:
            if hello is None:
                hello = ch.recv_json(max_bytes=self.limits.max_json_bytes, max_depth=self.limits.max_json_depth)
            if not isinstance(hello, dict):
                raise Refused("the first message must be a JSON object (hello)", code="bad-hello")
            ctx.client_id = self.auth.identify(sock, hello)
            try:
                ctx.n_queries, ctx.session_s = self.precheck(hello)
            except Refused:
                raise
            except ProtocolError as exc:
                raise Refused(str(exc), code="bad-hello") from None
            # the client asked to keep the connection for its next session; the handler tells it
            # whether it will be kept (the hello's answer)
            ctx.keep_alive = self.keep_alive and hello.get("keep_alive") is True
            # a queued session may wait its bounded time for a slot past the handshake deadline
            # (and, before that, as long again for its own client's earlier sessions to end)
            assert self._watchdog is not None
            self._watchdog.watch(sock, Deadline(2 * self.limits.queue_wait_s + 2.0, "queue"))
            # one client's sessions (running + queued) are bounded before the queue: many
            # connections of one identity must not take every slot and queue place
            held = self._hold_client(session_client_id(ctx))
            # the slot first, then ``admit``: admit charges the client's budget and rate, and a
            # session answered "busy" (retried by the client) must not be charged for each try
            # (review finding: it was, when admit ran before the queue)
            self._acquire_slot(pending)
            took_slot = True
            try:
                if self.admit is not None and self.admit(ctx) is False:
                    raise Refused("not admitted", code="not-admitted")
            except BaseException:
                self._slots.release()
                raise
            admitted = True
            session = Deadline(ctx.session_s, "session")
            self._watchdog.watch(sock, session)
            ch.deadline = session
            ch.timeout = self.limits.idle_s
            t_start = time.monotonic()
            try:
                with client_scope(session_client_id(ctx)):
                    self.handler(ch, hello, ctx)
            finally:
                self._slots.release()
                with self._lock:  # moving average of session time: what "retry after" suggests
                    self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - t_start)
                    # the client's count with its slot: its next session may follow at once
                    self._release_client_locked(held)
                    held = None
            self.stats["ok"] += 1
            self.audit.record(ctx, "ok")
            log.debug("session ok peer=%s client=%s queries=%d wall=%.2fs", peer, ctx.client_id,
                      ctx.n_queries, float(ctx.cost.get("wall_s", 0.0)))
            return ctx.keep_alive and not ch.closed, took_slot, session_client_id(ctx)
        except Refused as exc:
            self._refused(ch, ctx, exc)
        except (ProtocolError, OSError, ssl.SSLError) as exc:
            self._dropped(ctx, exc, admitted)
        except Exception as exc:  # a bug in one session must not stop the server
            self.stats["failed"] += 1
            self.audit.record(ctx, "crashed", type(exc).__name__)
            # the code path (files, lines) but not the message, which may quote client bytes
            log.error("session crashed peer=%s: %s\n%s", peer, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
        finally:
            with self._lock:
                if held is not None:  # every exit: ok, refused, failed, timed out, crashed
                    self._release_client_locked(held)
                if admitted:
                    self.sessions += 1
        return False, took_slot, session_client_id(ctx)

    def _next_hello(self, ch: TCPChannel, sock: socket.socket, client: str) -> Any:
        """A kept-alive connection between sessions: the next hello, or None when the client
        closed it, it stayed idle ``limits.idle_s``, or the server is stopping (then closed).
        Idle connections hold no session slot; at most ``limits.max_idle`` are kept (a thread
        each), the others are closed when their session ends; at most ``limits.max_per_client``
        of one ``client`` (the ledger's key): keeping one more closes that client's own least
        recently kept idle connection (its next session reconnects), never another client's."""
        evict: list[socket.socket] = []
        with self._lock:
            full = self._idle >= self.limits.max_idle
            stopping = self._stopping or (self._max_sessions is not None and self.sessions >= self._max_sessions)
            if full or stopping:
                return None
            self._idle += 1
            self._idle_channels.add(ch)
            mine = self._idle_by_client.setdefault(client, {})
            mine[ch] = sock
            quota = self.limits.max_per_client
            while quota and len(mine) > quota:
                old = next(iter(mine))  # dicts keep insertion order: the least recently kept
                evict.append(mine.pop(old))
                self.stats["idle_evicted"] += 1
        for s_old in evict:  # its thread sees the connection end, counts it idle_closed and leaves
            try:
                s_old.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            idle = Deadline(self.limits.idle_s, "idle")
            assert self._watchdog is not None
            self._watchdog.watch(sock, idle)
            ch.deadline = idle
            ch.timeout = self.limits.idle_s
            # the next session is counted from its hello (both ends re-base at this boundary)
            ch.begin_session()
            return ch.recv_json(max_bytes=self.limits.max_json_bytes, max_depth=self.limits.max_json_depth)
        except (ProtocolError, OSError, ssl.SSLError):
            # closed by the client, idle too long, shut by stop(), or a malformed frame: no session
            # began, so there is nothing to answer or audit
            self.stats["idle_closed"] += 1
            return None
        finally:
            with self._lock:
                self._idle -= 1
                self._idle_channels.discard(ch)
                mine = self._idle_by_client.get(client)
                if mine is not None:
                    mine.pop(ch, None)
                    if not mine:
                        del self._idle_by_client[client]

    def _refused(self, ch: TCPChannel | None, ctx: SessionContext, exc: Refused) -> None:
        key = "busy" if exc.code == "busy" else "refused"
        self.stats[key] += 1
        reply: dict[str, Any] = {"ok": False, "error": exc.public, "code": exc.code}
        if exc.retry_after is not None:
            reply["retry_after"] = exc.retry_after
        if exc.code == "busy":  # only load is retried automatically; a refusal is final
            reply["busy"] = True
        if ch is not None and not ch.closed:
            try:
                ch.timeout = 2.0
                ch.send_json(reply)
            except ProtocolError:
                pass
        self.audit.record(ctx, exc.code)
        log.info("session refused peer=%s client=%s code=%s", ctx.peer, ctx.client_id, exc.code)

    def _dropped(self, ctx: SessionContext, exc: BaseException, admitted: bool) -> None:
        self.stats["failed"] += 1
        reason = "timeout" if isinstance(exc, ProtocolTimeout) else type(exc).__name__
        self.audit.record(ctx, "failed" if admitted else "dropped", reason)
        # the class only: messages may quote what the peer sent
        log.log(logging.WARNING if admitted else logging.INFO,
                "session %s peer=%s client=%s reason=%s", "failed" if admitted else "dropped",
                ctx.peer, ctx.client_id, reason)

    def _hold_client(self, client: str) -> str:
        """Count one more session of ``client`` (running or queued). When it has
        ``limits.max_sessions_per_client`` already, wait at most ``limits.queue_wait_s`` for one
        of them to end -- holding no queue place or slot: a sequential client's next hello may
        arrive while the server still finishes its last session -- then Refused "busy", the
        answer a full queue gives (the client retries after the suggested wait).  A waiting
        session holds a thread and its connection: a new connection's first session is still
        counted in ``max_pending``; a kept-alive one's was admitted before.  Returns the key."""
        bound = self.limits.max_sessions_per_client
        until = time.monotonic() + self.limits.queue_wait_s
        over = False
        with self._lock:
            while bound and self._sessions_by_client.get(client, 0) >= bound:
                left = until - time.monotonic()
                if left <= 0:
                    over = True
                    self.stats["client_busy"] += 1
                    break
                self._client_freed.wait(left)
            else:
                self._sessions_by_client[client] = self._sessions_by_client.get(client, 0) + 1
        if over:
            raise Refused("server busy, retry later", code="busy", retry_after=self._retry_after())
        return client

    def _release_client_locked(self, client: str) -> None:
        """Undo one :meth:`_hold_client` (the caller holds ``self._lock``)."""
        n = self._sessions_by_client.get(client, 0) - 1
        if n > 0:
            self._sessions_by_client[client] = n
        else:
            self._sessions_by_client.pop(client, None)
        self._client_freed.notify_all()

    def _acquire_slot(self, pending: bool = True) -> None:
        """Take a session slot: at once, or after a bounded wait in a bounded queue, or Refused.
        ``pending``: the connection is counted in ``_pending`` (its first session), which taking
        the slot ends."""
        if self._slots.acquire(blocking=False):  # free and nobody queued: FairSlots serves waiters first
            if pending:
                self._leave_pending()
            return
        with self._lock:
            if self._waiting >= self.limits.max_queue:
                full = True
            else:
                full = False
                self._waiting += 1
        if full:
            raise Refused("server busy, retry later", code="busy", retry_after=self._retry_after())
        try:
            got = self._slots.acquire(timeout=self.limits.queue_wait_s)
        finally:
            with self._lock:
                self._waiting -= 1
        if not got:
            raise Refused("server busy, retry later", code="busy", retry_after=self._retry_after())
        if pending:
            self._leave_pending()

    def _retry_after(self) -> float:
        """Suggested wait: the time to work off the queue at the recent session rate
        (at least ``limits.retry_after_s``, at most 30 s)."""
        with self._lock:
            backlog = (self._waiting + self.concurrency) / self.concurrency
            return round(min(30.0, max(self.limits.retry_after_s, self._mean_s * backlog)), 2)

    def _leave_pending(self) -> None:
        with self._lock:
            self._pending -= 1

    def _tls(self, conn: socket.socket, peer: str, deadline: Deadline) -> socket.socket | None:
        """Step 2: detect a protocol mismatch by the first byte, then the TLS handshake."""
        conn.settimeout(max(0.01, deadline.remaining() or 0.01))
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (socket.timeout, TimeoutError):
            raise ProtocolTimeout("no data before the handshake deadline") from None
        if not first:
            raise ProtocolError("peer closed before sending anything")
        is_tls = first[0] == TLS_FIRST_BYTE
        if self.ssl_context is None:
            if is_tls:
                log.info("session dropped peer=%s reason=client-speaks-TLS-to-a-plaintext-server", peer)
                raise ProtocolError("client speaks TLS, server plaintext")
            return conn
        if not is_tls:
            msg = json.dumps({"ok": False, "code": "tls-required",
                              "error": "this server requires TLS: connect with TLS (secureml predict --ca CA.pem)"})
            try:
                conn.sendall(frame(msg.encode()))
                # read what the client sent so closing does not reset the connection before it
                # has read our answer
                conn.settimeout(0.5)
                conn.recv(65536)
            except OSError:
                pass
            raise Refused("plaintext client on a TLS server", code="tls-required")
        try:
            return self.ssl_context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            text = str(exc).upper()
            if "DID NOT RETURN A CERTIFICATE" in text or "CERTIFICATE_REQUIRED" in text:
                code = "no-client-certificate"
            elif "CERTIFICATE VERIFY FAILED" in text:
                code = "bad-client-certificate"
            else:  # e.g. the client rejected our certificate (alert), or a broken handshake
                code = "tls-handshake"
            raise Refused(f"TLS handshake failed ({code})", code=code) from None


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def run_workers(n_workers: int, target: Callable[[int], None]) -> None:
    """Run ``target(worker_index)`` in ``n_workers`` forked processes and wait for them.

    Forked (not spawned) so that each worker shares the parent's listening socket and loaded
    model pages copy-on-write; call it before starting any thread.  Ctrl-C or SIGTERM stops all.
    A worker that dies is reported; the others keep serving.
    """
    import signal

    pids: list[int] = []
    for i in range(n_workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                target(i)
            except KeyboardInterrupt:
                pass
            except BaseException:  # noqa: BLE001 - report and exit the worker only
                log.exception("worker %d crashed", i)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        pids.append(pid)

    def _stop(*_: Any) -> None:
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = signal.signal(signal.SIGTERM, lambda *a: (_stop(), os._exit(0)))
    try:
        for p in pids:
            try:
                os.waitpid(p, 0)
            except ChildProcessError:
                pass
    except KeyboardInterrupt:
        _stop()
    finally:
        signal.signal(signal.SIGTERM, old)


def admit_hook(ledger: QueryLedger) -> Callable[["SessionContext"], bool]:
    """An ``admit(ctx)`` that charges ``ctx.n_queries`` answers to the session's client in
    ``ledger`` (per-client budgets and rate limits, docs/defenses.md), or refuses the session with
    the ledger's one-line reason; a budget refusal is final (not retried like "busy")."""

    def admit(ctx: SessionContext) -> bool:
        try:
            ledger.admit(session_client_id(ctx), int(ctx.n_queries))
        except QueryRefused as exc:
            raise Refused(str(exc), code="budget", retry_after=exc.retry_after) from None
        return True

    return admit

