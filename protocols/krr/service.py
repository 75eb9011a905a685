"""Model owner's server and query owner's client for double-blind KRR prediction.

Session (one TCP connection, one or more queries):
  1. client -> server: hello {protocol, version, n_queries}
  2. server -> client: {ok, params} (the :class:`PublicParams`) or {ok: false, error}
  3. client -> server: {ready: true} once its queries encode within the public bounds,
     or {abort: reason} (nothing private has been exchanged yet)
  4. offline: base OTs for both OT-extension directions
  5. online: the model's protocol (:mod:`protocols.krr.gaussian`)
The server logs one line per session (peer, number of queries, time, bytes) and never any data.
A failing session (bad message, wrong version, peer gone) is closed with a clear error; the
server keeps serving others.
"""
from __future__ import annotations

import logging
import math
import socket
import ssl
import threading
import time
from typing import Any, Callable

import numpy as np

from protocols.common import CostReport, KernelModelParams, peak_rss_mb
from protocols.krr import gaussian
from protocols.krr.params import PROTOCOL_NAME, PROTOCOL_VERSION, PublicParams, feature_bounds
from protocols.party import Party
from protocols.transport import Channel, TCPChannel, connect, listen
from secureml.errors import ModelError, ProtocolError, SecureMLError

log = logging.getLogger("secureml.serve")

MAX_QUERIES_PER_SESSION = 256


class ServedModel:
    """What the server holds: the secret arrays and the public parameters derived from them."""

    def __init__(self, params: KernelModelParams, representation: dict[str, Any] | None = None,
                 property_name: str = "", frac_bits: int | None = None, weight_frac_bits: int = 16) -> None:
        if params.kernel != "gaussian":
            raise ModelError(
                f"the OT protocol serves Gaussian-kernel KRR; this model uses {params.kernel!r}"
            )
        self.params = params
        lo, hi = feature_bounds(params.X_train)
        _, wbits = gaussian.encode_weights(params.dual_coef, weight_frac_bits)
        if frac_bits is None:
            frac_bits = auto_frac_bits(params.n_features, hi - lo)
        self.public = PublicParams(
            kind="krr-gaussian", n_train=params.n_train, n_features=params.n_features,
            frac_bits=frac_bits, feature_lo=lo, feature_hi=hi, sigma=float(params.sigma),
            weight_bits=wbits, weight_frac_bits=weight_frac_bits,
            representation=dict(representation or {}), property_name=property_name,
        )
        self.public.validate()

    @classmethod
    def from_file(cls, path: str, **kw: Any) -> "ServedModel":
        from secureml.models.pipeline import MolecularModel

        mm = MolecularModel.load(path)
        return cls.from_molecular_model(mm, **kw)

    @classmethod
    def from_molecular_model(cls, mm: Any, **kw: Any) -> "ServedModel":
        est = mm.estimator
        if not hasattr(est, "dual_coef_"):
            raise ModelError(f"{type(est).__name__} is not an exact KRR model")
        return cls(KernelModelParams.from_estimator(est), representation=mm.representation.get_params(),
                   property_name=getattr(mm, "property_name", ""), **kw)


def auto_frac_bits(n_features: int, span: float, max_ring_bits: int = 60) -> int:
    """Largest precision <= 16 bits whose squared distances fit a ring of ``max_ring_bits``."""
    for f in range(16, 7, -1):
        x_bits = max(1, math.ceil(math.log2(span * (1 << f))))
        if math.ceil(math.log2(n_features)) + 2 * x_bits + 1 <= max_ring_bits:
            return f
    return 8


def serve_one(model: ServedModel, ch: Channel, peer: str = "local") -> CostReport:
    """Run one session as the model owner on an open channel; returns its cost."""
    t0 = time.perf_counter()
    hello = ch.recv_json(max_bytes=4096)
    try:
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_NAME:
            raise ProtocolError("not a secureml-krr client")
        if hello.get("version") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version mismatch: client speaks {hello.get('version')}, server {PROTOCOL_VERSION}"
            )
        k = hello.get("n_queries")
        if not isinstance(k, int) or not 1 <= k <= MAX_QUERIES_PER_SESSION:
            raise ProtocolError(f"n_queries must be an integer in 1..{MAX_QUERIES_PER_SESSION}")
    except ProtocolError as exc:
        ch.send_json({"ok": False, "error": str(exc)})
        raise
    ch.send_json({"ok": True, "params": model.public.to_dict()})
    answer = ch.recv_json(max_bytes=4096)
    if not isinstance(answer, dict) or not answer.get("ready"):
        reason = answer.get("abort") if isinstance(answer, dict) else None
        raise ProtocolError(f"client aborted: {reason or 'malformed reply'}")
    party = Party(ch, role=0)
    party.setup_ot()
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    gaussian.server_online(party, model.params, model.public, k)
    t1 = time.perf_counter()
    cost = CostReport(
        engine="ot-krr", wall_s=t1 - t0, offline_s=t_off - t0, online_s=t1 - t_off,
        bytes_sent=ch.bytes_sent, bytes_received=ch.bytes_received, rounds=ch.rounds,
        offline_bytes=off_bytes, peak_rss_mb=peak_rss_mb(), extra={"n_queries": k, "peer": peer},
    )
    log.warning(
        "session peer=%s queries=%d wall=%.2fs sent=%.1fMB received=%.1fMB rounds=%d",
        peer, k, cost.wall_s, cost.bytes_sent / 1e6, cost.bytes_received / 1e6, cost.rounds,
    )
    return cost


def serve(model: ServedModel, host: str = "127.0.0.1", port: int = 7000, *,
          ssl_context: ssl.SSLContext | None = None, max_sessions: int | None = None,
          concurrency: int = 2, session_timeout: float = 300.0,
          on_ready: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> None:
    """Serve sessions until ``stop`` is set or ``max_sessions`` have been handled.

    Sessions run in threads, at most ``concurrency`` at once (others wait in the accept queue).
    """
    srv = listen(host, port)
    srv.settimeout(0.5)
    actual = srv.getsockname()[1]
    print(f"secureml: serving {model.public.kind} (N={model.public.n_train}, d={model.public.n_features}) "
          f"on {host}:{actual}", flush=True)
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


def _session_thread(model, conn, peer, ssl_context, timeout, slots) -> None:
    try:
        if ssl_context is not None:
            conn.settimeout(timeout)
            conn = ssl_context.wrap_socket(conn, server_side=True)
        ch = TCPChannel(conn, timeout=timeout)
        try:
            serve_one(model, ch, peer)
        finally:
            ch.close()
    except SecureMLError as exc:
        log.warning("session peer=%s failed: %s", peer, exc)
    except (OSError, ssl.SSLError) as exc:
        log.warning("session peer=%s failed: %s", peer, exc)
    except Exception:  # a bug in one session must not stop the server
        log.exception("session peer=%s crashed", peer)
    finally:
        slots.release()


def predict_features(ch: Channel, Q: np.ndarray | None = None,
                     featurize: Callable[[PublicParams], np.ndarray] | None = None
                     ) -> tuple[np.ndarray, CostReport, PublicParams]:
    """Query owner's side of one session on an open channel.

    Give either the representations ``Q`` (k, d) or ``featurize(params) -> Q`` (called after the
    handshake, when the public representation settings are known).
    """
    t0 = time.perf_counter()
    if Q is not None:
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        k = Q.shape[0]
    else:
        k = None
    if featurize is None and Q is None:
        raise ValueError("give Q or featurize")
    n_q = k if k is not None else getattr(featurize, "n_queries", None)
    if not isinstance(n_q, int):
        raise ValueError("featurize must carry n_queries")
    ch.send_json({"protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION, "n_queries": n_q})
    reply = ch.recv_json(max_bytes=1 << 20)
    if not isinstance(reply, dict) or not reply.get("ok"):
        err = reply.get("error") if isinstance(reply, dict) else "malformed reply"
        raise ProtocolError(f"server refused: {err}")
    pp = PublicParams.from_dict(reply.get("params"))
    try:
        if Q is None:
            Q = np.atleast_2d(featurize(pp))
        if Q.shape != (n_q, pp.n_features):
            raise ModelError(f"queries have shape {Q.shape}, the model expects ({n_q}, {pp.n_features})")
        pp.encode_features(Q, "query")  # checks NaN and bounds before anything private moves
    except SecureMLError as exc:
        ch.send_json({"abort": str(exc)})
        raise
    ch.send_json({"ready": True})
    party = Party(ch, role=1)
    party.setup_ot()
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    preds = gaussian.client_online(party, pp, Q)
    t1 = time.perf_counter()
    cost = CostReport(
        engine="ot-krr", wall_s=t1 - t0, offline_s=t_off - t0, online_s=t1 - t_off,
        bytes_sent=ch.bytes_sent, bytes_received=ch.bytes_received, rounds=ch.rounds,
        offline_bytes=off_bytes, peak_rss_mb=peak_rss_mb(), extra={"n_queries": n_q},
    )
    return preds, cost, pp


def parse_address(address: str, default_port: int = 7000) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    try:
        return host, int(port)
    except ValueError:
        raise SecureMLError(f"bad server address {address!r} (want HOST:PORT)") from None


def predict(server: str | Channel, Q: np.ndarray | None = None, *, featurize=None,
            ssl_context: ssl.SSLContext | None = None, timeout: float = 300.0
            ) -> tuple[np.ndarray, CostReport]:
    """Predict the queries ``Q`` (k, d) with the model served at ``server`` ("host:port" or a Channel)."""
    if isinstance(server, Channel):
        preds, cost, _ = predict_features(server, Q, featurize)
        return preds, cost
    host, port = parse_address(server)
    ch = connect(host, port, ssl_context=ssl_context, channel_timeout=timeout)
    try:
        preds, cost, _ = predict_features(ch, Q, featurize)
    finally:
        ch.close()
    return preds, cost
