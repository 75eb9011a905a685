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

from protocols.common import CostReport, KernelModelParams, check_hello, send_hello
from protocols.krr import expsum, gaussian, laplacian
from protocols.krr.params import (LAPLACIAN_MAX_X_BITS, PROTOCOL_NAME, PROTOCOL_VERSION, PublicParams,
                                  feature_bounds)
from protocols.mpc.party import Party
from protocols.net.transport import Channel, TCPChannel, connect, listen
from secureml.errors import ModelError, ProtocolError, SecureMLError

log = logging.getLogger("secureml.serve")

MAX_QUERIES_PER_SESSION = 256
# kernel of an exact KRR model -> protocol kind (and module) that serves it
EXACT_PROTOCOLS = {"gaussian": "krr-gaussian", "laplacian": "krr-laplacian"}
_EXACT_MODULES = {"krr-gaussian": gaussian, "krr-laplacian": laplacian}
# OT extension of the exact protocols: SoftSpoken with k = 4 (32 bits per OT instead of IKNP's 128;
# a third less traffic for the Laplacian kernel's 23 million element COTs at N = 16,384)
EXACT_SOFTSPOKEN_K = 4


class ServedModel:
    """What the server holds: the secret arrays and the public parameters derived from them.

    Exact Gaussian KRR: ``ServedModel(KernelModelParams(...))``. Compact random-feature models:
    :meth:`linear` (or :meth:`from_molecular_model`, which picks the right kind).
    """

    linear_weights: np.ndarray | None = None
    linear_offset: float = 0.0
    public_blob: bytes = b""

    def __init__(self, params: KernelModelParams, representation: dict[str, Any] | None = None,
                 property_name: str = "", frac_bits: int | None = None, weight_frac_bits: int = 16,
                 element_energies: dict[int, float] | None = None) -> None:
        if params.kernel not in EXACT_PROTOCOLS:
            raise ModelError(
                f"the OT protocol serves Gaussian- and Laplacian-kernel KRR; this model uses {params.kernel!r}"
            )
        self.params = params
        lo, hi = feature_bounds(params.X_train)
        _, wbits = expsum.encode_weights(params.dual_coef, weight_frac_bits)
        if params.kernel == "laplacian":
            # entries of at most LAPLACIAN_MAX_X_BITS bits; finer grids are rounded (error budget:
            # docs/double-blind.md) -- train on the 2^-F grid to be exact
            cap = laplacian_frac_bits(hi - lo)
            frac_bits = cap if frac_bits is None else min(frac_bits, cap)
        elif frac_bits is None:
            frac_bits = auto_frac_bits(params.n_features, hi - lo)
        self.public = PublicParams(
            kind=EXACT_PROTOCOLS[params.kernel], n_train=params.n_train, n_features=params.n_features,
            frac_bits=frac_bits, feature_lo=lo, feature_hi=hi, sigma=float(params.sigma),
            weight_bits=wbits, weight_frac_bits=weight_frac_bits,
            representation=dict(representation or {}), property_name=property_name,
            element_energies={str(int(z)): float(e) for z, e in (element_energies or {}).items()},
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
        if hasattr(est, "dual_coef_"):
            rep = mm.representation.get_params()
            if kw.get("frac_bits") is None and rep.get("grid_bits") is not None:
                # the model's features already sit on a 2^-grid_bits grid: encode them exactly
                kw["frac_bits"] = int(rep["grid_bits"])
            return cls(KernelModelParams.from_estimator(est), representation=rep,
                       property_name=getattr(mm, "property_name", ""),
                       element_energies=getattr(mm, "element_energies_", None), **kw)
        return cls.linear(mm, **{k: v for k, v in kw.items() if k == "calibration"})

    @classmethod
    def linear(cls, mm: Any, calibration: Any = None) -> "ServedModel":
        """Serve a compact random-feature model; ``calibration`` molecules set the public bounds
        (default: the embedded data set, which is public)."""
        import hashlib

        from protocols.krr import linear as lin

        w, offset, public = lin.linear_parts(mm)
        if calibration is None:
            from secureml.data import load_embedded

            calibration = load_embedded().subset(np.arange(0, 3921, 8))
        phi = lin.client_features(public, calibration)
        pred = phi @ w
        plan = lin.plan(phi, w, float(np.max(np.abs(pred))) if pred.size else 1.0,
                        bound=lin.feature_bound(public, phi))
        self = cls.__new__(cls)
        self.params = None
        self.linear_weights, self.linear_offset = w, offset
        self.public_blob = lin.model_bytes(public)
        self.public = PublicParams(
            kind="linear", n_train=int(getattr(mm, "provenance", {}).get("n_train", 1) or 1),
            n_features=int(w.shape[0]), representation=dict(mm.representation.get_params()),
            property_name=getattr(mm, "property_name", ""),
            public_model_sha256=hashlib.sha256(self.public_blob).hexdigest(),
            public_model_bytes=len(self.public_blob),
            element_energies={str(int(z)): float(e) for z, e in (getattr(mm, "element_energies_", None) or {}).items()},
            **plan,
        )
        self.public.validate()
        self.linear_out_bits = lin.output_bits(pred + offset, self.public)  # public ring width
        return self


def laplacian_frac_bits(span: float, max_x_bits: int = LAPLACIAN_MAX_X_BITS) -> int:
    """Finest 2^-F grid (F <= 16) whose encoded entries fit ``max_x_bits`` bits."""
    for f in range(16, -1, -1):
        if math.ceil(math.log2(span * (1 << f))) <= max_x_bits:
            return f
    return 0


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
        k = check_hello(hello, PROTOCOL_NAME, PROTOCOL_VERSION, MAX_QUERIES_PER_SESSION)
    except ProtocolError as exc:
        ch.send_json({"ok": False, "error": str(exc)})
        raise
    ch.send_json({"ok": True, "params": model.public.to_dict()})
    answer = ch.recv_json(max_bytes=4096)
    if not isinstance(answer, dict) or not answer.get("ready"):
        reason = answer.get("abort") if isinstance(answer, dict) else None
        raise ProtocolError(f"client aborted: {reason or 'malformed reply'}")
    if model.public.kind == "linear" and answer.get("need_public_model"):
        # sent once per client (it caches it by hash); public, so it is no secret-bearing traffic
        ch.send(model.public_blob)
    party = Party(ch, role=0)
    lin_info: dict[str, Any] = {}
    if model.public.kind == "linear":
        from protocols.krr import linear

        # one OT direction (server sends), SoftSpoken, resumable; the extension moves offline
        lin_info = linear.server_setup(party, model, k)
    else:
        party.setup_ot(softspoken_k=EXACT_SOFTSPOKEN_K)
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    if model.public.kind == "linear":
        from protocols.krr import linear

        linear.server_online(party, model.linear_weights, model.linear_offset, model.public, k,
                             lin_info["out_bits"])
    else:
        _EXACT_MODULES[model.public.kind].server_online(party, model.params, model.public, k)
    t1 = time.perf_counter()
    cost = CostReport.from_channel("ot-krr", ch, t0, t_off, t1, off_bytes, {"n_queries": k, "peer": peer})
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


# public feature maps already loaded in this process, by hash (the client keeps them warm)
_LOADED_PUBLIC_MODELS: dict[str, Any] = {}


def _public_model_cache(sha: str):
    import os
    from pathlib import Path

    root = Path(os.environ.get("SECUREML_CACHE", Path.home() / ".cache" / "secureml")) / "public-models"
    return root / f"{sha}.npz"


def molecules_featurizer(dataset: Any) -> Callable[[PublicParams, Any], np.ndarray]:
    """``featurize`` for :func:`predict_features` that turns molecules into what the model needs."""

    def featurize(pp: PublicParams, public_model: Any) -> np.ndarray:
        if pp.kind == "linear":
            from protocols.krr.linear import client_features

            return client_features(public_model, dataset)
        from secureml.representations import representation_from_params

        return representation_from_params(pp.representation).transform(dataset)

    featurize.n_queries = len(dataset)
    featurize.dataset = dataset  # the client also derives its element counts from it
    return featurize


def element_counts(pp: PublicParams, dataset: Any) -> np.ndarray:
    """The query molecules' counts of the model's baseline elements (client side, never sent)."""
    from secureml.models.baseline import composition

    return composition(dataset, pp.baseline_elements)


def predict_features(ch: Channel, Q: np.ndarray | None = None,
                     featurize: Callable[[PublicParams, Any], np.ndarray] | None = None,
                     counts: np.ndarray | None = None,
                     ) -> tuple[np.ndarray, CostReport, PublicParams]:
    """Query owner's side of one session on an open channel.

    Give either the model inputs ``Q`` (k, d) -- representations for exact KRR, features phi for
    compact models -- or ``featurize(params, public_model) -> Q`` (called after the handshake,
    when the public settings, and for compact models the public feature map, are known).
    A model with a dressed-atom baseline also needs the queries' element ``counts`` (k, elements
    in ascending Z); :func:`molecules_featurizer` supplies them from its molecules.
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
    pp = PublicParams.from_dict(send_hello(ch, PROTOCOL_NAME, PROTOCOL_VERSION, n_q))
    public_model, need_model, cache = None, False, None
    if pp.kind == "linear":
        cache = _public_model_cache(pp.public_model_sha256)
        need_model = not cache.exists()
    try:
        if pp.kind == "linear" and Q is None:
            if need_model:
                ch.send_json({"ready": True, "need_public_model": True})
                blob = ch.recv(max_bytes=max(pp.public_model_bytes, 1) + 64)
                import hashlib

                if hashlib.sha256(blob).hexdigest() != pp.public_model_sha256:
                    raise ProtocolError("public model does not match its advertised hash")
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(blob)
            from protocols.krr.linear import model_from_bytes

            public_model = _LOADED_PUBLIC_MODELS.get(pp.public_model_sha256)
            if public_model is None:  # kept loaded, like the plaintext model it stands for
                public_model = model_from_bytes(cache.read_bytes())
                _LOADED_PUBLIC_MODELS[pp.public_model_sha256] = public_model
        if Q is None:
            Q = np.atleast_2d(featurize(pp, public_model))
        if Q.shape != (n_q, pp.n_features):
            raise ModelError(f"queries have shape {Q.shape}, the model expects ({n_q}, {pp.n_features})")
        baseline = None
        if pp.element_energies:  # the client adds sum_Z n_Z e_Z to the protocol's output
            if counts is None and getattr(featurize, "dataset", None) is not None:
                counts = element_counts(pp, featurize.dataset)
            if counts is None:
                raise ModelError("this model adds a dressed-atom baseline: give the queries' element counts "
                                 f"for Z = {pp.baseline_elements} (or use molecules_featurizer)")
            baseline = pp.baseline_energy(counts)
            if baseline.shape != (n_q,):
                raise ModelError(f"element counts for {baseline.shape[0]} queries, expected {n_q}")
        pp.encode_features(Q, "query")  # checks NaN and bounds before anything private moves
    except SecureMLError as exc:
        if not (pp.kind == "linear" and need_model and public_model is not None):
            ch.send_json({"abort": str(exc)})
        raise
    if not (pp.kind == "linear" and need_model and public_model is not None):
        ch.send_json({"ready": True, "need_public_model": False})
    party = Party(ch, role=1)
    lin_info: dict[str, Any] = {}
    if pp.kind == "linear":
        from protocols.krr import linear

        lin_info = linear.client_setup(party, pp, n_q, _peer_name(ch))
    else:
        party.setup_ot(softspoken_k=EXACT_SOFTSPOKEN_K)
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    if pp.kind == "linear":
        from protocols.krr import linear

        preds = linear.client_online(party, pp, Q, lin_info["out_bits"])
    else:
        preds = _EXACT_MODULES[pp.kind].client_online(party, pp, Q)
    if baseline is not None:
        preds = preds + baseline
    t1 = time.perf_counter()
    cost = CostReport.from_channel("ot-krr", ch, t0, t_off, t1, off_bytes, {"n_queries": n_q, **lin_info})
    return preds, cost, pp


def _peer_name(ch: Channel) -> str:
    """The server's address, naming the OT-session ticket the client keeps for it."""
    try:
        host, port = ch.sock.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError, TypeError, ValueError):
        return "local"  # in-process channels (tests): one name; an unknown ticket just falls back


def parse_address(address: str, default_port: int = 7000) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    try:
        return host, int(port)
    except ValueError:
        raise SecureMLError(f"bad server address {address!r} (want HOST:PORT)") from None


def predict(server: str | Channel, Q: np.ndarray | None = None, *, featurize=None,
            counts: np.ndarray | None = None, ssl_context: ssl.SSLContext | None = None, timeout: float = 300.0
            ) -> tuple[np.ndarray, CostReport]:
    """Predict the queries ``Q`` (k, d) with the model served at ``server`` ("host:port" or a Channel)."""
    if isinstance(server, Channel):
        preds, cost, _ = predict_features(server, Q, featurize, counts)
        return preds, cost
    host, port = parse_address(server)
    ch = connect(host, port, ssl_context=ssl_context, channel_timeout=timeout)
    try:
        preds, cost, _ = predict_features(ch, Q, featurize, counts)
    finally:
        ch.close()
    return preds, cost


def _serve_process(params: KernelModelParams, frac_bits: int | None, q: Any) -> None:
    serve(ServedModel(params, frac_bits=frac_bits), "127.0.0.1", 0, max_sessions=1, on_ready=q.put)


def run_local(model: KernelModelParams, queries: np.ndarray, frac_bits: int | None = None,
              timeout: float = 3600.0) -> tuple[np.ndarray, CostReport, CostReport]:
    """Both sides as two real processes on TCP loopback: (predictions, client cost, server cost),
    the same convention as the baseline engines.

    The server process reports only through its log line, so the returned server cost mirrors the
    client's (same bytes, swapped directions).
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve_process, args=(model, frac_bits, q), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=120)
        preds, cost = predict(f"127.0.0.1:{port}", queries, timeout=timeout)
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
    server = CostReport(engine=cost.engine, wall_s=cost.wall_s, offline_s=cost.offline_s,
                        online_s=cost.online_s, bytes_sent=cost.bytes_received,
                        bytes_received=cost.bytes_sent, rounds=cost.rounds)
    return preds, cost, server
