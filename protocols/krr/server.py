"""The model owner's server for double-blind KRR prediction: sessions, threads, logging.

A session: the handshake (:mod:`protocols.krr.handshake`), then the served kind's protocol from
:mod:`protocols.krr.registry` (public-model transfer, offline OT set-up, online).
The server logs one line per session (peer, number of queries, time, bytes) and never any data.
A failing session (bad message, wrong version, peer gone) is closed with a clear error; the
server keeps serving others.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import traceback
from typing import Callable

from protocols.common import CostReport
from protocols.krr.handshake import CLIENT_MALFORMED, CLIENT_REJECTED, refusal, server_handshake
from protocols.krr.registry import protocol_for
from protocols.krr.served import Served
from protocols.mpc.party import Party
from protocols.net.transport import Channel, TCPChannel, listen
from secureml.errors import SecureMLError

log = logging.getLogger("secureml.serve")

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


def serve_one(model: Served, ch: Channel, peer: str = "local", *, party: Party | None = None
              ) -> CostReport:
    """Run one session as the model owner on an open channel; returns its cost.

    ``party``: this side's :class:`Party` on ``ch`` (role 0), e.g. with its own correlation
    provider or, in tests only, a seeded one (reproducible transcripts); default a fresh one.
    """
    t0 = time.perf_counter()
    k, answer = server_handshake(ch, model.public)
    proto = protocol_for(model.public.kind)
    proto.server_after_ready(ch, model, answer)
    party = Party(ch, role=0) if party is None else party
    info = proto.server_setup(party, model, k)
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    proto.server_online(party, model, k, info)
    t1 = time.perf_counter()
    cost = CostReport.from_channel("ot-krr", ch, t0, t_off, t1, off_bytes, {"n_queries": k, "peer": peer})
    log.info(  # a normal session: INFO (failures below are warnings)
        "session peer=%s queries=%d wall=%.2fs sent=%.1fMB received=%.1fMB rounds=%d",
        peer, k, cost.wall_s, cost.bytes_sent / 1e6, cost.bytes_received / 1e6, cost.rounds,
    )
    return cost


def serve(model: Served, host: str = "127.0.0.1", port: int = 7000, *,
          ssl_context: ssl.SSLContext | None = None, max_sessions: int | None = None,
          concurrency: int = 2, session_timeout: float = 300.0,
          on_ready: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> None:
    """Serve sessions until ``stop`` is set or ``max_sessions`` have been handled.

    Sessions run in threads, at most ``concurrency`` at once (others wait in the accept queue).
    """
    srv = listen(host, port)
    srv.settimeout(0.5)
    actual = srv.getsockname()[1]
    refused = refusal(model.public)
    if refused:
        print(f"secureml: WARNING: {refused}; every session will be refused", flush=True)
    print(f"secureml: serving {model.public.kind} (N={model.public.n_train}, d={model.public.n_features}, "
          f"security={model.public.security}) on {host}:{actual}", flush=True)
    if on_ready:
        on_ready(actual)
    slots = threading.Semaphore(concurrency)
    threads: list[threading.Thread] = []
    handled = 0
    try:
        while not (stop and stop.is_set()) and (max_sessions is None or handled < max_sessions):
            try:
                conn, addr = srv.accept()
            except (socket.timeout, TimeoutError):
                continue
            handled += 1
            slots.acquire()
            t = threading.Thread(target=_session_thread, daemon=True,
                                 args=(model, conn, f"{addr[0]}:{addr[1]}", ssl_context, session_timeout, slots))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    finally:
        srv.close()


def _session_thread(model: Served, conn: socket.socket, peer: str, ssl_context: ssl.SSLContext | None,
                    timeout: float, slots: threading.Semaphore) -> None:
    try:
        if ssl_context is not None:
            conn.settimeout(timeout)
            conn = ssl_context.wrap_socket(conn, server_side=True)
        ch = TCPChannel(conn, timeout=timeout)
        try:
            serve_one(model, ch, peer)
        finally:
            ch.close()
    except (SecureMLError, OSError, ssl.SSLError) as exc:
        log.warning("session peer=%s failed: %s", peer, log_safe(exc))
    except Exception as exc:  # a bug in one session must not stop the server
        # the code path (file, line, source) but not the message, which may hold client data
        log.error("session peer=%s crashed: %s\n%s", peer, type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)))
    finally:
        slots.release()
