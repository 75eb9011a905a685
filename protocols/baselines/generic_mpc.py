"""Gaussian KRR prediction the way a general-purpose MPC compiler evaluates it (baseline).

Both parties secret-share their inputs over Z_2^64 (fixed point, ``frac_bits`` fractional bits):
the model owner its training representations, weights and offset, the query owner its query.
Every product of two secrets is a Beaver multiplication whose triple comes from OT extension
between the two parties (no dealer: :mod:`protocols.mpc.triples`); every fixed-point product is
followed by an exact truncation (two 64-bit secure comparisons, :mod:`protocols.mpc.truncation`).
Nothing exploits the structure of the problem -- which is what the published MP-SPDZ study did
and what makes its cost grow like N * d Beaver products per prediction.

Steps (per query; both parties run the same code on their shares):
  1. inputs: x_i / c and alpha_i / 2^a, offset / 2^a (server), q / c (client), c = sigma sqrt(2^(k+1))
     (each owner scales its own plaintext; 2^a is a public power of two keeping the final sum in range);
  2. D'_i = sum_j (x_ij/c - q_j/c)^2: N*d Beaver products (no truncation before the sum), then one
     exact truncation per training point; v_i = -D'_i = -D_i / (2 sigma^2 2^k);
  3. clip v_i <- relu(v_i + 1) - 1 >= -1 (one secure comparison, B2A and a Beaver product):
     beyond the clip the true kernel is below exp(-2^k);
  4. K_i = p(v_i)^(2^k): Horner on the degree-7 interpolant of exp on [-1, 0] (6 Beaver products,
     one public product), then k Beaver squarings, each followed by an exact truncation;
  5. y = sum_i alpha_i K_i + offset (N Beaver products, one truncation), revealed to the client.

Threat model: semi-honest, no trusted party. Each party sees only uniformly masked openings
(x - a, y - b of Beaver products), the messages of OT extension and of the comparison
sub-protocols; the client additionally receives the server's share of y. Public: N, d, sigma
(through c), k, frac_bits, the shift a and the number of queries.

Offline / online: base OTs and all arithmetic Beaver triples (N (d + 8 + k) per query, the
dominant cost) are generated before any input is shared; AND triples and the OTs inside the
comparisons (truncations, clip) are made on demand during the online phase.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from protocols.baselines.fhe.params import exp_poly_coefficients
from protocols.baselines.fhe.procs import run_engine_local
from protocols.common import CostReport, KernelModelParams, check_hello, send_hello
from protocols.mpc.comparison import relu
from protocols.mpc.context import PartyContext
from protocols.mpc.fixed_point import FixedPointFormat
from protocols.mpc.party import Party
from protocols.mpc.providers import CorrelationProvider
from protocols.mpc.sharing import add_public, beaver_mul, mul_public, reveal_to, share
from protocols.mpc.triples import beaver_triples, bool_triples
from protocols.mpc.truncation import trunc_exact
from protocols.net.transport import Channel
from secureml.errors import DataError, ModelError, ProtocolError

PROTOCOL_NAME = "secureml-generic-mpc"
PROTOCOL_VERSION = 1
EXP_K = 4
DEFAULT_FRAC_BITS = 20
MAX_QUERIES_PER_SESSION = 16
U64 = np.uint64


class PooledTripleProvider(CorrelationProvider):
    """Beaver triples generated ahead of time (offline) by OT extension, then consumed in order.

    If the pool runs dry, more are generated on demand (counted in ``on_demand``). AND triples
    always come on demand from OT (they are few).
    """

    name = "ot-pooled"

    def __init__(self, party: PartyContext) -> None:
        super().__init__(party)
        self._a = self._b = self._c = np.empty(0, dtype=U64)
        self._pos = 0
        self.on_demand = 0

    def fill(self, n: int) -> None:
        a, b, c = beaver_triples(self.party, int(n))
        self._a = np.concatenate([self._a[self._pos :], a])
        self._b = np.concatenate([self._b[self._pos :], b])
        self._c = np.concatenate([self._c[self._pos :], c])
        self._pos = 0

    def _triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        left = self._a.size - self._pos
        if left < n:
            self.on_demand += n - left
            self.fill(n - left)
        s, e = self._pos, self._pos + n
        self._pos = e
        return self._a[s:e], self._b[s:e], self._c[s:e]

    def _bool_triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return bool_triples(self.party, n)


def triples_per_query(n_train: int, n_features: int, k: int = EXP_K) -> int:
    """Arithmetic Beaver triples of one prediction: N d (distances) + N (clip) + 6 N (Horner) + k N + N."""
    return n_train * (n_features + 8 + k)


def weight_shift(alpha: np.ndarray, offset: float, frac_bits: int) -> int:
    """Public 2^a so that sum |alpha| 2^(2 frac_bits) / 2^a stays below 2^60 (exact truncation needs < 2^62)."""
    total = float(np.abs(alpha).sum()) + abs(float(offset))
    if total == 0.0:
        return 0
    return max(0, math.ceil(math.log2(total)) - (60 - 2 * frac_bits))


def documented_error(alpha: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS, k: int = EXP_K,
                     kernel: np.ndarray | None = None) -> float:
    """Bound on |prediction - plaintext|, used in the docs and tests.

    p(v) carries <= 9 errors of 2^-f (exact truncations after 7 products, encoded inputs and
    coefficients); the 2^k-th power turns an absolute error e of p into ~2^k K^(1 - 2^-k) e / e^-1
    in K; the clip adds < exp(-2^k) per point. With the query's exact kernel values ``kernel``
    the bound is per point, otherwise K <= 1 everywhere (worst case). Weights: 2^(a - f) each.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    K = np.ones_like(alpha) if kernel is None else np.maximum(np.asarray(kernel, dtype=np.float64), math.exp(-(2.0**k)))
    eps = 2.0**k * 9 * 2.0 ** (-frac_bits) * math.e * K ** (1.0 - 2.0**-k) + math.exp(-(2.0**k))
    shift = weight_shift(alpha, 0.0, frac_bits)
    return float(np.abs(alpha) @ eps) + (alpha.size + 2) * 2.0 ** (shift - frac_bits)


def _online(p: Party, fmt: FixedPointFormat, n: int, d: int, k: int,
            X_sh: np.ndarray, w_sh: np.ndarray, q_sh: np.ndarray) -> np.ndarray | None:
    """Steps 2-5 on shares; returns the prediction (scaled by 2^-a, fixed point) at the client."""
    f = fmt.frac_bits
    one = fmt.encode(1.0)
    diff = X_sh - q_sh[None, :]  # step 2 (local)
    sq = beaver_mul(p, diff, diff)
    D = sq.sum(axis=1, dtype=U64)  # scale 2^(2f): sums of products need no intermediate truncation
    v = np.negative(trunc_exact(p, D, f))  # uint64 negation wraps modulo 2^64
    v = add_public(p, relu(p, add_public(p, v, one)), fmt.encode(-1.0))  # step 3
    c = exp_poly_coefficients()  # step 4: Horner
    r = add_public(p, trunc_exact(p, mul_public(v, fmt.encode(c[-1])), f), fmt.encode(c[-2]))
    for j in range(len(c) - 3, -1, -1):
        r = add_public(p, trunc_exact(p, beaver_mul(p, r, v), f), fmt.encode(c[j]))
    for _ in range(k):
        r = trunc_exact(p, beaver_mul(p, r, r), f)
    prod = beaver_mul(p, w_sh[:n], r)  # step 5
    y = trunc_exact(p, np.array([prod.sum(dtype=U64)]), f) + w_sh[n : n + 1]
    return reveal_to(p, y, 1)


def serve_one(model: KernelModelParams, ch: Channel, *, frac_bits: int = DEFAULT_FRAC_BITS,
              k: int = EXP_K, seed: int | None = None, **_ignored: Any) -> CostReport:
    """Model owner's side (party 0): handshake, offline triples, shared evaluation (steps 1-5)."""
    if model.kernel != "gaussian":
        raise ModelError(f"the generic-MPC engine implements the Gaussian kernel; this model uses {model.kernel!r}")
    t0 = time.perf_counter()
    hello = ch.recv_json(max_bytes=4096)
    try:
        nq = check_hello(hello, PROTOCOL_NAME, PROTOCOL_VERSION, MAX_QUERIES_PER_SESSION, model.n_features)
        if not 8 <= frac_bits <= 26:
            raise ProtocolError("frac_bits must be in 8..26")
    except ProtocolError as exc:
        ch.send_json({"ok": False, "error": str(exc)})
        raise
    n, d = model.n_train, model.n_features
    c = float(model.sigma) * math.sqrt(2.0 ** (k + 1))
    shift = weight_shift(model.dual_coef, model.y_offset, frac_bits)
    params = {"n_train": n, "n_features": d, "c": c, "k": k, "frac_bits": frac_bits, "weight_shift": shift}
    ch.send_json({"ok": True, "params": params})
    ready = ch.recv_json(max_bytes=4096)
    if not isinstance(ready, dict) or not ready.get("ready"):
        raise ProtocolError("client aborted")
    fmt = FixedPointFormat(frac_bits=frac_bits)
    p = Party(ch, 0, seed=seed, provider=PooledTripleProvider)
    prov = p.provider
    p.setup_ot()  # offline: base OTs, then all arithmetic triples
    prov.fill(nq * triples_per_query(n, d, k))
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    X_sh = share(p, fmt.encode(model.X_train / c), 0)  # step 1
    w = np.concatenate([model.dual_coef, [model.y_offset]]) / 2.0**shift
    w_sh = share(p, fmt.encode(w), 0)
    for _ in range(nq):
        q_sh = share(p, None, 1, shape=(d,))
        _online(p, fmt, n, d, k, X_sh, w_sh, q_sh)
    t1 = time.perf_counter()
    return _cost(t0, t_off, t1, ch, off_bytes, prov, {"n_queries": nq, **params})


def predict(ch: Channel, queries: np.ndarray, *, seed: int | None = None, **_ignored: Any) -> tuple[np.ndarray, CostReport]:
    """Query owner's side (party 1); the prediction is revealed to it alone."""
    Q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    if not np.isfinite(Q).all():
        raise DataError("queries contain NaN or inf")
    t0 = time.perf_counter()
    pr = send_hello(ch, PROTOCOL_NAME, PROTOCOL_VERSION, Q.shape[0], Q.shape[1], 4096)
    try:
        n, d, c, k = int(pr["n_train"]), int(pr["n_features"]), float(pr["c"]), int(pr["k"])
        f, shift = int(pr["frac_bits"]), int(pr["weight_shift"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed generic-MPC parameters") from None
    if d != Q.shape[1] or not (1 <= n <= 1 << 22 and 0 <= k <= 8 and 8 <= f <= 26 and c > 0 and 0 <= shift < 40):
        raise ProtocolError("generic-MPC parameters out of range")
    fmt = FixedPointFormat(frac_bits=f)
    qs = Q / c
    fmt.encode(qs)  # overflow check before anything is shared
    ch.send_json({"ready": True})
    p = Party(ch, 1, seed=seed, provider=PooledTripleProvider)
    prov = p.provider
    p.setup_ot()
    prov.fill(Q.shape[0] * triples_per_query(n, d, k))
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    X_sh = share(p, None, 0, shape=(n, d))
    w_sh = share(p, None, 0, shape=(n + 1,))
    out = np.empty(Q.shape[0])
    for i in range(Q.shape[0]):
        q_sh = share(p, fmt.encode(qs[i]), 1)
        y = _online(p, fmt, n, d, k, X_sh, w_sh, q_sh)
        out[i] = float(fmt.decode(y)[0]) * 2.0**shift
    t1 = time.perf_counter()
    return out, _cost(t0, t_off, t1, ch, off_bytes, prov, {"frac_bits": f, "k": k, "n_train": n})


def _cost(t0: float, t_off: float, t1: float, ch: Channel, off_bytes: int, prov: PooledTripleProvider,
          extra: dict[str, Any]) -> CostReport:
    return CostReport.from_channel(
        "generic-mpc", ch, t0, t_off, t1, off_bytes,
        {**extra, "beaver_triples": prov.n_triples, "and_triples": prov.n_bool_triples,
               "triples_on_demand": prov.on_demand},
    )


def run_local(model: KernelModelParams, queries: np.ndarray, timeout: float = 3600.0,
              **opts: Any) -> tuple[np.ndarray, CostReport, CostReport]:
    """Both parties as two spawned processes over TCP loopback: (predictions, client cost, server cost)."""
    return run_engine_local("protocols.baselines.generic_mpc", model, queries, timeout=timeout, **opts)
