"""The query owner's client for double-blind KRR prediction.

Session: the handshake (:mod:`protocols.krr.handshake`), then the served kind's protocol from
:mod:`protocols.krr.registry` (public-model transfer, featurisation, offline OT set-up, online).
Queries are checked against the public bounds before anything private moves; on failure the
client sends the fixed code {abort: "query-rejected"} (never the reason: it names the molecule) and
the server closes the session; the reason stays in this process's exception.
"""
from __future__ import annotations

import contextlib
import select
import ssl
import threading
import time
from typing import Any

import numpy as np

from protocols.common import CostReport
from protocols.krr.cache import PUBLIC_MODELS, PublicModelCache
from protocols.krr.featurize import Featurizer, element_counts
from protocols.krr import linear_he
from protocols.krr.handshake import (MAX_QUERIES_PER_SESSION, client_abort, client_hello, client_hello_message,
                                    client_ready, params_digest)
from protocols.krr.params import PublicParams
from protocols.krr.registry import protocol_for
from protocols.mpc.party import Party
from protocols.mpc.randomness import SecureRandom
from protocols.net.dial import connect_tls, open_session
from protocols.net.limits import Deadline, parse_json
from protocols.net.transport import Channel, TCPChannel
from secureml.errors import ModelError, ProtocolError, SecureMLError


def predict_features(ch: Channel, Q: np.ndarray | None = None, featurize: Featurizer | None = None,
                     counts: np.ndarray | None = None, *, resume_ot: bool = True,
                     cache: PublicModelCache = PUBLIC_MODELS, party: Party | None = None,
                     params: dict | None = None, params_sha256: str | None = None,
                     announced_seed: bytes | None = None) -> tuple[np.ndarray, CostReport, PublicParams]:
    """Query owner's side of one session on an open channel.

    Give either the model inputs ``Q`` (k, d) -- representations for exact KRR, features phi for
    compact models -- or a :class:`Featurizer` (called after the handshake, when the public
    settings, and for compact models the public feature map, are known).
    A model with a dressed-atom baseline also needs the queries' element ``counts`` (k, elements
    in ascending Z); a featurizer built from molecules supplies them.
    ``resume_ot=False``: unlinkable sessions (compact models present no OT-session ticket).
    ``party``: this side's :class:`Party` on ``ch`` (role 1), e.g. with its own correlation provider
    or, in tests only, a seeded one; default a fresh one.
    ``params``: the server's public parameters when the hello was already exchanged
    (:func:`protocols.net.dial.open_session`) or, with ``params_sha256`` (their digest, sent in
    the ready message for the server to check), cached from an earlier session while the hello and
    this session's first messages travel together (:class:`_EarlyChannel`); default: say hello on
    ``ch`` here. ``announced_seed``: the lattice seed the hello carried
    (:func:`protocols.krr.linear_he.hello_seed`).
    """
    t0 = time.perf_counter()
    if Q is not None:
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        n_q = Q.shape[0]
    elif featurize is None:
        raise ValueError("give Q or featurize")
    elif not isinstance(featurize, Featurizer):
        raise ValueError("featurize must be a Featurizer (it names the number of queries)")
    else:
        n_q = featurize.n_queries
    if params is None:
        pp = client_hello(ch, n_q)
    elif params_sha256 is not None:  # cached parameters (early data): parsed once per dict, read only
        pp = _cached(params)[1]
    else:
        pp = PublicParams.from_dict(params)
    proto = protocol_for(pp.kind)
    ready_sent = False
    try:
        if Q is None:
            public_model, ready_sent = proto.client_public_model(ch, pp, cache)
            Q = np.atleast_2d(featurize(pp, public_model))
        if Q.shape != (n_q, pp.n_features):
            raise ModelError(f"queries have shape {Q.shape}, the model expects ({n_q}, {pp.n_features})")
        baseline = None
        if pp.element_energies:  # the client adds sum_Z n_Z e_Z to the protocol's output
            if counts is None and featurize is not None and featurize.dataset is not None:
                counts = element_counts(pp, featurize.dataset)
            if counts is None:
                raise ModelError("this model adds a dressed-atom baseline: give the queries' element counts "
                                 f"for Z = {pp.baseline_elements} (or use molecules_featurizer)")
            baseline = pp.baseline_energy(counts)
            if baseline.shape != (n_q,):
                raise ModelError(f"element counts for {baseline.shape[0]} queries, expected {n_q}")
        encoded = pp.encode_features(Q, "query")  # checks NaN and bounds before anything private moves
    except SecureMLError as exc:
        if not ready_sent:
            client_abort(ch)
        raise
    if not ready_sent:
        client_ready(ch, need_public_model=False, params_sha256=params_sha256)
    if party is None:
        party = _LatticeParty(ch) if pp.lattice_linear else Party(ch, role=1)
    info = proto.client_setup(party, pp, n_q, _peer_name(ch), resume=resume_ot)
    if pp.lattice_linear:
        info["encoded"] = encoded  # phi' (checked above): encoded once per session
        if announced_seed is not None:
            info["announced_seed"] = announced_seed
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    preds = proto.client_online(party, pp, Q, info)
    if baseline is not None:
        preds = preds + baseline
    t1 = time.perf_counter()
    after = info.pop("after_reply", None)
    peak = info.pop("_peak_rss_mb", None)  # read by the protocol while it waited for the server
    cost = CostReport.from_channel("ot-krr", ch, t0, t_off, t1, off_bytes,
                                   {"n_queries": n_q, "security": pp.security, **info}, peak_mb=peak)
    if after is not None:
        # the prediction is in hand (cost above ends here): work for the next session on this
        # connection (a compact model's OT pool refill), reported apart
        b = ch.bytes_sent + ch.bytes_received
        spent = after()
        cost.extra["after_reply_s"] = spent
        cost.extra["after_reply_bytes"] = ch.bytes_sent + ch.bytes_received - b
    return preds, cost, pp


class _LatticeParty(linear_he.LatticeParty):
    """The client's party on the lattice path (:class:`protocols.krr.linear_he.LatticeParty`,
    role 1): the channel and, for a mask made inside the session, private randomness -- no OT
    provider is built (that path has no OT), and the randomness is a fresh :class:`SecureRandom`
    (new OS key) made for this session on first use, never shared between sessions; a session
    whose mask was made after the previous reply draws none."""

    def __init__(self, ch: Channel) -> None:
        super().__init__(ch, role=1)


class _EarlyChannel:
    """A fresh TCP channel that sends the hello at once and holds the session's later sends until
    its first read: then everything buffered goes out in one flight, and the hello's answer is read
    and checked before the read asked for. The session's own code runs unchanged on it (two rounds
    fewer); the server answers the hello, and does what the hello allows, while this side computes
    its features (the hello's round trip overlaps them)."""

    def __init__(self, ch: Channel, hello: dict[str, Any], params: dict[str, Any], digest: str) -> None:
        self._ch, self._params, self._digest = ch, params, digest
        self._buf: list[tuple[str, Any]] | None = []
        self._checked = False  # the hello's answer read and checked
        #: the server's answer said it keeps this connection for the next session
        self.kept_alive = False
        ch.send_json(hello)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ch, name)

    def _out(self, kind: str, obj: Any) -> None:
        if self._buf is None:  # (after a flush) in order: everything held went out before
            getattr(self._ch, kind)(obj)
        else:
            self._buf.append((kind, obj))

    def send(self, data: bytes) -> None:
        self._out("send", data)

    def send_json(self, obj: Any) -> None:
        self._out("send_json", obj)

    def send_parts(self, parts: Any) -> None:
        self._out("send_parts", list(parts))

    def send_array(self, a: np.ndarray, **kw: Any) -> None:
        self._out("send_array", np.array(a))

    def flush(self) -> None:
        """Send what is held now (the protocol has work to do before its next read)."""
        self._send_held()
        self._ch.flush()

    def _send_held(self) -> None:
        if self._buf is None:
            return
        buf, self._buf = self._buf, None
        # the ready message and the query leave in one segment: one wake-up of the server, not two
        with self._ch.corked() if isinstance(self._ch, TCPChannel) else contextlib.nullcontext():
            for kind, obj in buf:
                getattr(self._ch, kind)(obj)

    def _release(self) -> None:
        if self._checked:
            return
        self._checked = True
        self._send_held()
        raw = self._ch.recv(max_bytes=1 << 20)
        hit = _ACCEPTED_ANSWERS.get((self._digest, raw))
        if hit is not None:
            self.kept_alive = hit  # byte for byte an answer accepted before: the same parameters
            return
        reply = parse_json(raw, max_bytes=1 << 20)
        if not isinstance(reply, dict) or not reply.get("ok") or not isinstance(reply.get("params"), dict) \
                or (reply["params"] != self._params and params_digest(reply["params"]) != self._digest):
            raise ProtocolError("early session not accepted (busy, refused or new parameters)")
        self.kept_alive = reply.get("keep_alive") is True
        if len(_ACCEPTED_ANSWERS) > 64:
            _ACCEPTED_ANSWERS.clear()
        _ACCEPTED_ANSWERS[(self._digest, raw)] = self.kept_alive

    def recv(self, *a: Any, **kw: Any) -> Any:
        self._release()
        return self._ch.recv(*a, **kw)

    def recv_json(self, *a: Any, **kw: Any) -> Any:
        self._release()
        return self._ch.recv_json(*a, **kw)

    def recv_bytearray(self, *a: Any, **kw: Any) -> Any:
        self._release()
        return self._ch.recv_bytearray(*a, **kw)

    def recv_array(self, *a: Any, **kw: Any) -> Any:
        self._release()
        return self._ch.recv_array(*a, **kw)

    def close(self) -> None:
        self._ch.close()


#: raw hello answers accepted for a parameter digest (checked answers are not parsed twice):
#: (digest, raw answer) -> whether that answer keeps the connection
_ACCEPTED_ANSWERS: dict[tuple[str, bytes], bool] = {}
#: public parameters of servers whose last session ran the lattice compact path, by "host:port":
#: the next session sends its queries with the hello (early data); dropped on any failure
_EARLY_PARAMS: dict[str, dict[str, Any]] = {}
#: send queries with the hello where the parameters are cached (False: always wait for them)
EARLY_DATA = True


def _early_session(host: str, port: int, hello: dict[str, Any], params: dict[str, Any], q_part: Any, f_part: Any,
                   c_part: Any, *, ssl_context: Any, server_hostname: str | None, timeout: float,
                   handshake_timeout: float, kept: TCPChannel | None = None, pool: Any = None
                   ) -> tuple[np.ndarray, CostReport, PublicParams]:
    """One session with early data, on a new connection or on ``kept`` (a connection the server
    kept after this client's last session); with ``pool`` (a kept-connection key) the connection
    is kept for the next session when the server's answer says it keeps it, else closed."""
    t0 = time.perf_counter()
    digest, cpp = _cached(params)
    if kept is not None:
        ch = kept
        ch.begin_session()
        ch.timeout = timeout
    else:
        ch = TCPChannel(connect_tls(host, port, ssl_context, server_hostname, handshake_timeout), timeout=timeout)
    keep = False
    try:
        # the first ciphertext's seed: the server re-randomises while we featurise
        seed = linear_he.hello_seed(cpp, _peer_name(ch))
        early = _EarlyChannel(ch, {**hello, "lattice_seed": seed.hex()}, params, digest)
        linear_he.settle_next_mask(cpp, _peer_name(ch))  # not left to overlap the features (GIL)
        preds, cost, pp = predict_features(early, q_part, f_part, c_part, params=params,  # type: ignore[arg-type]
                                           params_sha256=digest, announced_seed=seed)
        keep = pool is not None and early.kept_alive
    finally:
        if keep:
            _keep_connection(pool, ch)
        else:
            ch.close()
    cost.extra["early_data"] = True
    cost.extra["kept_alive"] = kept is not None
    cost.wall_s = time.perf_counter() - t0  # connect (unless kept) and hello included
    return preds, cost, pp


# ---- kept-alive connections -------------------------------------------------------------------
#: connections the server keeps after a session, one per (host, port, TLS context, server name):
#: taken out for one session (one session at a time per connection), put back after it ended well
_KEPT: dict[tuple[Any, ...], tuple[TCPChannel, float]] = {}
_KEPT_LOCK = threading.Lock()
#: a kept connection unused this long is closed here instead of reused (the server closes idle
#: ones after its idle timeout, 60 s by default; a closed one is noticed and replaced anyway)
KEEP_ALIVE_IDLE_S = 50.0


def _take_connection(pool: tuple[Any, ...]) -> TCPChannel | None:
    """A kept connection for ``pool`` that still looks open, or None. The server sends nothing
    between sessions, so a readable socket means it closed the connection (idle timeout, stop)."""
    with _KEPT_LOCK:
        hit = _KEPT.pop(pool, None)
    if hit is None:
        return None
    ch, since = hit
    if ch.closed or time.monotonic() - since > KEEP_ALIVE_IDLE_S:
        ch.close()
        return None
    try:
        readable, _, _ = select.select([ch.sock], [], [], 0)
    except (OSError, ValueError):
        readable = [ch.sock]
    if readable:
        ch.close()
        return None
    return ch


def _keep_connection(pool: tuple[Any, ...], ch: TCPChannel) -> None:
    with _KEPT_LOCK:
        old = _KEPT.pop(pool, None)
        _KEPT[pool] = (ch, time.monotonic())
    if old is not None:  # another thread's session to the same server kept one too: keep the newer
        old[0].close()


def close_kept_connections() -> int:
    """Close every connection kept for a next session (a long-running client that is done with
    its servers); returns how many were open. Servers close idle ones on their own."""
    with _KEPT_LOCK:
        kept = list(_KEPT.values())
        _KEPT.clear()
    for ch, _ in kept:
        ch.close()
    return len(kept)


def _hello_on(ch: TCPChannel, hello: dict[str, Any], handshake_timeout: float, timeout: float) -> dict[str, Any]:
    """Steps 1-2 on a kept connection (the next session's hello); ProtocolError unless "ok"."""
    ch.begin_session()
    ch.deadline = Deadline(handshake_timeout, "handshake")
    ch.timeout = handshake_timeout
    ch.send_json(hello)
    reply = ch.recv_json(max_bytes=1 << 20)
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ProtocolError("the kept connection's next session was not accepted")
    ch.deadline = None
    ch.timeout = timeout
    return reply


_DIGESTS: dict[int, tuple[dict[str, Any], str, PublicParams]] = {}


def _cached(params: dict[str, Any]) -> tuple[str, PublicParams]:
    """(params_digest, PublicParams) of a cached parameter dict, made once per dict (cached
    dicts are never modified; the entry keeps its dict alive, so its id is not reused)."""
    hit = _DIGESTS.get(id(params))
    if hit is None or hit[0] is not params:
        if len(_DIGESTS) > 64:
            _DIGESTS.clear()
        hit = _DIGESTS[id(params)] = (params, params_digest(params), PublicParams.from_dict(params))
    return hit[1], hit[2]


def _peer_name(ch: Channel) -> str:
    """The server's address, naming the OT-session ticket the client keeps for it. Asked of the
    socket once per connection (a kept connection's peer does not change) and kept on the channel."""
    if isinstance(ch, _EarlyChannel):
        ch = ch._ch
    name = getattr(ch, "_peer_name", None)
    if isinstance(name, str):
        return name
    try:
        host, port = ch.sock.getpeername()[:2]
        name = f"{host}:{port}"
    except (AttributeError, OSError, TypeError, ValueError):
        return "local"  # in-process channels (tests): one name; an unknown ticket just falls back
    ch._peer_name = name  # type: ignore[attr-defined]
    return name


def parse_address(address: str, default_port: int = 7000) -> tuple[str, int]:
    """"host:port" -> (host, port); a bare host gets ``default_port``."""
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    try:
        return host, int(port)
    except ValueError:
        raise SecureMLError(f"bad server address {address!r} (want HOST:PORT)") from None


def predict(server: str | Channel, Q: np.ndarray | None = None, *, featurize: Featurizer | None = None,
            counts: np.ndarray | None = None, ssl_context: ssl.SSLContext | None = None, timeout: float = 300.0,
            resume_ot: bool = True, token: str | None = None, server_hostname: str | None = None,
            handshake_timeout: float = 30.0, retries: int = 8, batch_size: int | None = None,
            with_params: bool = False, keep_alive: bool = True) -> Any:
    """Predict the queries ``Q`` (k, d) with the model served at ``server`` ("host:port" or a Channel).

    Over TCP: the hello's answer must come within ``handshake_timeout`` seconds; "busy" answers
    and refused connections are retried ``retries`` times with backoff
    (:func:`protocols.net.dial.open_session`); ``token`` authenticates to a server with
    ``--tokens``; ``ssl_context`` (:func:`protocols.net.pki.client_context`) verifies the server's
    certificate and host name (``server_hostname`` overrides the name checked).
    More queries than ``batch_size`` (default and at most the server's 256 per session) run as
    several sessions, one after the other, which also bounds this side's memory; the returned
    cost sums them (``cost.extra["sessions"]``).
    ``keep_alive`` (default on, TCP, with ``resume_ot`` only: a kept connection links sessions as
    a resumed ticket does): ask the server to keep the connection; the next session to the same
    server -- the next batch, or the next call in this process -- starts on it (no connect, no
    new server thread), and a connection the server closed is replaced by a new one.
    :func:`close_kept_connections` closes them.
    Returns (predictions, cost), or with ``with_params`` (predictions, cost, the server's
    :class:`PublicParams`).
    """
    if isinstance(server, Channel):
        preds, cost, pp = predict_features(server, Q, featurize, counts, resume_ot=resume_ot)
        return (preds, cost, pp) if with_params else (preds, cost)
    host, port = parse_address(server)
    if Q is not None:
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        n = Q.shape[0]
    elif featurize is not None:
        n = featurize.n_queries
    else:
        raise ValueError("give Q or featurize")
    size = max(1, min(batch_size or MAX_QUERIES_PER_SESSION, MAX_QUERIES_PER_SESSION))
    if n > size and Q is None and featurize.dataset is None:
        raise ModelError(f"{n} queries need several sessions (at most {size} each): give molecules "
                         "(molecules_featurizer) or Q, which can be split")
    preds_all, costs = [], []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        q_part = Q[lo:hi] if Q is not None else None
        f_part = featurize
        if featurize is not None and (lo, hi) != (0, n):
            f_part = Featurizer(n_queries=hi - lo, dataset=featurize.dataset.subset(np.arange(lo, hi)))
        c_part = None if counts is None else np.asarray(counts)[lo:hi]
        key = f"{host}:{port}"
        keep = keep_alive and resume_ot  # unlinkable sessions never share a connection
        pool = (host, port, id(ssl_context) if ssl_context is not None else None, server_hostname) if keep else None
        hello = client_hello_message(hi - lo, token, keep_alive=keep)
        kept = _take_connection(pool) if pool is not None else None
        cached = _EARLY_PARAMS.get(key) if EARLY_DATA and resume_ot else None
        if cached is not None and q_part is not None and q_part.shape[1] != _cached(cached)[1].n_features:
            # another model answers at this address now (a restart, or a port reused): the ordinary
            # way fetches its parameters instead of failing on the stale ones
            _EARLY_PARAMS.pop(key, None)
            cached = None
        if cached is not None:
            try:
                preds, cost, pp = _early_session(host, port, hello, cached, q_part,
                                                 f_part, c_part, ssl_context=ssl_context,
                                                 server_hostname=server_hostname, timeout=timeout,
                                                 handshake_timeout=handshake_timeout, kept=kept, pool=pool)
                preds_all.append(preds)
                costs.append(cost)
                continue
            except ProtocolError:  # busy, restarted with new parameters, gone: the ordinary way
                _EARLY_PARAMS.pop(key, None)
                kept = None  # (closed by the failed session)
        # a lattice server re-randomises for this seed while we wait and featurise (others ignore it)
        seed = linear_he.hello_seed(None, key)
        hello = {**hello, "lattice_seed": seed.hex()}
        ch, reply = None, {}
        if kept is not None:
            try:
                reply = _hello_on(kept, hello, handshake_timeout, timeout)
                ch = kept
            except ProtocolError:  # closed, busy or refused: a new connection, which retries or says why
                kept.close()
                seed = linear_he.hello_seed(None, key)  # a seed announced once
                hello = {**hello, "lattice_seed": seed.hex()}
        if ch is None:
            ch, reply = open_session(host, port, hello, ssl_context=ssl_context, server_hostname=server_hostname,
                                     handshake_timeout=handshake_timeout, channel_timeout=timeout, retries=retries)
        keep_ch = False
        try:
            preds, cost, pp = predict_features(ch, q_part, f_part, c_part, resume_ot=resume_ot,
                                               params=reply.get("params"), announced_seed=seed)
            keep_ch = pool is not None and reply.get("keep_alive") is True
            cost.extra["kept_alive"] = ch is kept
        finally:
            if keep_ch:
                _keep_connection(pool, ch)  # type: ignore[arg-type]
            else:
                ch.close()
        if pp.lattice_linear and resume_ot and isinstance(reply.get("params"), dict):
            _EARLY_PARAMS[key] = reply["params"]
        preds_all.append(preds)
        costs.append(cost)
    out = np.concatenate(preds_all), _sum_costs(costs)
    return (*out, pp) if with_params else out


def _sum_costs(costs: list[CostReport]) -> CostReport:
    """One report for several sessions: times, bytes and rounds add up; peak memory is the max."""
    if len(costs) == 1:
        costs[0].extra.setdefault("sessions", 1)
        return costs[0]
    c0 = costs[0]
    return CostReport(
        engine=c0.engine, wall_s=sum(c.wall_s for c in costs), offline_s=sum(c.offline_s for c in costs),
        online_s=sum(c.online_s for c in costs), bytes_sent=sum(c.bytes_sent for c in costs),
        bytes_received=sum(c.bytes_received for c in costs), rounds=sum(c.rounds for c in costs),
        offline_bytes=sum(c.offline_bytes for c in costs), peak_rss_mb=max(c.peak_rss_mb for c in costs),
        extra={**c0.extra, "n_queries": sum(int(c.extra.get("n_queries", 0)) for c in costs),
               "sessions": len(costs)},
    )
