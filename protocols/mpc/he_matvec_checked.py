"""X q with lattice HE, safe against a malicious client: the client's key and ciphertexts are
proven well formed (:mod:`protocols.mpc.bfv_proof`) before the server answers them, and the
answer is flooded by the noise bound the proof establishes.

The server (sender) holds X (n_rows x d, entries < 2^x_bits, or < 2^w_bits where the caller
asks for a wider matrix: ``w_bits``, below); the client (key owner) holds q (d entries < 2^x_bits)
whose bits it has already committed (MACs mod the ring's primes, given by the caller). Output:
additive shares mod 2^M of X q, **exact** (no rounding term: the binding check of
:mod:`protocols.krr.binding` needs u_i = D_i + rho_i exactly).

Why exact: the plaintext sits in the low bits (BGV-style, c0 + c1 s = m + t e mod Q with
t = 2^M): the client's decryption [c0 + c1 s]_Q mod t is m exactly whenever |m + t e| < Q/2,
which the plan checks from the proven bounds. (A BFV-style modulus switch, plaintext in the high
bits, cannot keep t = 2^56 exact: its rounding term t n / q_1 is hundreds of units, the 0..2E
error of :mod:`protocols.mpc.he_matvec`.) Protocol 35 switches the reply down BGV-style
(:func:`_switch_down`): dropping P = p_(kk+1) ... p_k, each part becomes (c + t v) / P with
t v = -c (mod P), so c0' + c1' s = W / P with W = m + t (N + v0 + v1 s), 0 <= v < P: the
plaintext is m P^-1 (mod t) -- exact, the client multiplies by P -- and the noise shrinks to
(N + v0 + v1 s) / P <= N / P + 1 + n, so the reply needs only kk = 2 primes
(:func:`reply_primes`: |W / P| < 2^70 < Q' / 2 ~ 2^99 at CM settings) instead of four.

Packing (coefficient packing in the manner of Cheetah, as :mod:`protocols.mpc.he_matvec`): with a
block of n_i columns and n_o = floor(n / n_i) rows, block b's message is
Q_b(X) = sum_{j < n_i} q_{b n_i + j} X^j and the server's plaintext
W_{o,b}(X) = sum_r sum_j x_{o n_o + r, b n_i + j} X^{r n_i + n_i - 1 - j}; coefficient
r n_i + n_i - 1 of sum_b Q_b W_{o,b} is row r's inner product. n_i minimises the bytes sent,
proof included (:func:`make_plan`).

Protocol (client = receiver, server = sender):
  1. server: a fresh 16-byte seed; pk1 and every c1_b are expanded from it (public, uniform).
  2. client: s ternary, pk0 = -pk1 s + t e', c0_b = -c1_b s + Q_b + t e_b; sends pk0 and the c0_b.
  3. both: :func:`protocols.mpc.bfv_proof.check_wellformed` (the message of block b is bound to
     the committed q). The server aborts on failure and sends nothing computed from the
     ciphertexts. (Its NTTs of pk1 and the c1_b, and the seed-only sums sum_b c1_b W_(o,b) of
     the first outputs, run while the client encrypts; those of pk0 and the c0_b while the
     client computes its opening: local work, the same messages in the same order; nothing
     derived from the client's polynomials leaves before the check passes. Since stop 10 the
     reply's sums may also be formed on a helper thread, SECUREML_HE_THREADS >= 2: local values
     only, the same ones.)
  4. server, per output block o: ct_o = sum_b ct_b W_{o,b} + (pk0 u + t e1, pk1 u + t e2)
     (u ternary, e1, e2 small: fresh per output, so c1 is an RLWE sample in the server's u and
     hides sum_b c1_b W_{o,b}) + (R_o + t f, 0) at the targets, R_o uniform mod t, f uniform in
     [-2^F, 2^F) (flooding); then (protocol 35) both parts switched down to the first
     ``reply_primes`` primes (:func:`_switch_down`). It sends c1' (coefficient form, all n
     coefficients; NTT form at all four primes in protocols 13-33) and c0' at the n_o targets;
     its share is -R_o.
  5. client: [c0' + c1' s]_Q' at the targets, mod t, times P (mod t): (X q)_r + R_r; its share.
Circuit privacy: after step 3, c0 + c1 s = m' + t N at each target with m' = (X q + R)_r and
N = sum_b e_b W_{o,b} + u e' + e1 + s e2 + f; every term but f is bounded by the proven
|e_b|, |e'| <= 32, ternary s and the server's own u, e1, e2 (:func:`make_plan`'s noise_bound,
carries of m' included); F = log2(bound) + 40 + log2(#targets), so the client's whole view of
N is within statistical distance 2^-40 of one independent of X. c1 is uniform given pk1 u + t e2
(RLWE in u; pk1 uniform because the server's seed made it), so it hides X computationally.
The switch of step 4 is a public deterministic map applied coefficientwise to what protocols
13-33 sent (c1 in full, c0 at the targets): the client's view is a function of that view, so it
hides X no less (the client sends nothing in steps 4-5).
Reply pads (stop 11, :class:`ReplyPad`; no wire change): the reply's c1 part,
c1_o = sum_b c1_b W_(o,b) + pk1 u_o + t e2_o, depends on the server's seed, its model and its fresh
u_o, e2_o only -- nothing of the client's -- so a server that asks for pads
(:func:`fill_pads`; ``secureml serve`` keeps one) makes it before the session, with the seed and the
NTTs of the u_o, from a fresh generator keyed by OS entropy. The session then sends that seed in
step 1 and, in step 4 (still only after the proof passed), those c1 words, and computes only c0 at
the targets (sum_b c0_b W_(o,b) + pk0 u_o + t e1 + R + t f, with e1, R, f fresh from the session's
generator as before): about half of step 4's server work leaves the critical path. What the client
sees has exactly the distribution of the inline path's (the same functions of independent fresh
values: a uniform seed, u_o and e2_o per output block, drawn by the server and independent of X,
the query and the client), so the privacy argument above is unchanged; the proof is unchanged (it
uses the seed's public parts, computed from the seed as before) and still precedes every reply. A
pad serves one session at most: :func:`take_pad` removes it under a lock before its seed is sent
(also when that session then aborts), and a forked worker drops the pads it inherited from its
parent (they record the pid that made them), so no u_o is ever used in two sessions. Whether a pad
was ready depends on the server's load only. A deviating or aborting client gains nothing: it
cannot obtain a pad twice, and each session (aborted or not) costs the server one pad's CPU after
it (:func:`refill_pads`), as the inline path spent it during the session.
Matrix width (``w_bits``, default x_bits): the proof commits and checks the query's d x_bits
bits only; the matrix's width enters the noise bound (sum_b e_b W_(o,b) and the plaintext's size
X q + R) and nothing else, so a caller whose matrix is wider than its query (the bit-free
Laplacian's products, :mod:`protocols.krr.strict_products`: M-bit entries, x_bits-bit query) passes
w_bits and gets a plan whose bound, flooding and reply format cover it. With w_bits = x_bits the
plan, its agreement message and the wire are what they were.
Threat model: semi-honest server, any client.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from protocols.mpc import authenticated as au
from protocols.mpc import bfv_proof, u128
from protocols.mpc.context import PartyContext
from protocols.mpc.authenticated import U128
from protocols.mpc.owner_cache import OwnerCache
from protocols.mpc.randomness import SecureRandom
from protocols.mpc.rlwe import CBD_ETA, LAZY_IN, Modulus, Ring, modulus as get_modulus, mulmod, ring as get_ring
from secureml.errors import DataError, ProtocolError

U64, I64 = np.uint64, np.int64
STAT_SECURITY = 40
_OT_BYTES = 12  # a random OT of the checked SoftSpoken extension, as the plan's cost model counts it
_CHUNK = 8  # output blocks per message (the wire's framing; computed one block at a time)
# output blocks whose seed-only products (:func:`seed_sums`, ~0.65 ms each at n = 8,192, B = 6) the
# server forms while the client encrypts (~30 ms for its key and 6 ciphertexts); the rest in the loop
_SEED_AHEAD = 32
_SUMS_AHEAD = 16  # output blocks the helper thread of the reply's sums may run ahead (4 MB of results)


@dataclass(frozen=True)
class CheckedPlan:
    n_rows: int
    d: int
    x_bits: int
    ring_bits: int
    n_i: int
    n_o: int
    blocks: int
    outputs: int
    noise_bound: int  # bound on |N - f| at a target (proven inputs, server's own noise, carries)
    flood_bits: int  # F
    reply_primes: int = 4  # the reply's primes after the modulus switch (protocol 35; all k before)
    trim_bits: int = 0  # r: bits [M, M + r) of every switched reply word are zeroed and not sent (protocol 35)
    word_bytes: int = 0  # bytes per switched reply word (an integer mod Q' without its r zero bits)
    w_bits: int = 0  # the matrix's entry width where it differs from x_bits (0: x_bits)

    @property
    def targets(self) -> np.ndarray:
        return np.arange(self.n_o, dtype=np.int64) * self.n_i + self.n_i - 1

    def mac_bits(self, ring: Ring | Modulus) -> int:
        """R: the MAC ring of the proof's lifted check (:func:`protocols.mpc.bfv_proof.lift_bits`),
        for its witness bits and the query's d x_bits bits."""
        return bfv_proof.lift_bits(ring, bfv_proof.witness_count(ring, self.blocks) + self.d * self.x_bits)[2]

    def bytes_estimate(self, ring: Ring | Modulus) -> int:
        up = (self.blocks + 1) * ring.k * ring.n * 7
        proof = bfv_proof.witness_count(ring, self.blocks) * (_OT_BYTES + -(-self.mac_bits(ring) // 8))
        per = self.word_bytes if self.reply_primes < ring.k else 7 * ring.k
        down = self.outputs * (ring.n + self.n_o) * per
        return up + proof + down


def _noise(ring: Ring | Modulus, n_rows: int, d: int, x_bits: int, M: int, n_i: int,
           w_bits: int | None = None) -> tuple[int, ...] | None:
    n = ring.n
    w_bits = x_bits if w_bits is None else w_bits
    n_o = n // n_i
    blocks, outputs = -(-d // n_i), -(-n_rows // n_o)
    B = bfv_proof.NOISE_BOUND
    # sum_b e_b W_{o,b}: at most n_o n_i nonzero coefficients of W per block, each < 2^w_bits
    bound = B * ((1 << w_bits) - 1) * n_o * n_i * blocks
    bound += B * n + CBD_ETA * (n + 1)  # u e' (u ternary), e1, s e2 (s ternary)
    m_max = (1 << M) + d * ((1 << w_bits) - 1) * ((1 << x_bits) - 1)  # |m'|: X q + R (non-negative at the targets)
    bound += -(-m_max // (1 << M)) + 1  # the carry floor(m' / t) the client also sees
    F = math.ceil(math.log2(bound)) + STAT_SECURITY + math.ceil(math.log2(max(2, outputs * n_o)))
    if m_max + (1 << M) * (bound + (1 << F)) >= ring.Q // 2:
        return None
    kk, r, wb = reply_format(ring, m_max, M, bound + (1 << F))
    return n_o, blocks, outputs, bound, F, kk, r, wb


def _switched_bound(ring: Ring | Modulus, kk: int, m_max: int, M: int, noise: int, r: int) -> tuple[int, int]:
    """(bound on |W / P| at the targets, Q') after the switch to the first kk primes and the trim
    of r bits: W / P = (m' + t (N + v0 + v1 s)) / P with 0 <= v < P, so |W / P| < m_max / P +
    t (noise / P + 1 + n); the trim adds t (eta0 + eta1 s), |eta| < 2^r: t (n + 1) 2^r more."""
    Qk = 1
    for p in ring.primes[:kk]:
        Qk *= p
    P = ring.Q // Qk
    return m_max // P + 1 + (1 << M) * (noise // P + 2 + ring.n + (ring.n + 1) * ((1 << r) - 1 if r else 0)), Qk


def reply_format(ring: Ring | Modulus, m_max: int, M: int, noise: int) -> tuple[int, int, int]:
    """(kk, r, word_bytes): the fewest leading primes the reply can be switched down to
    (:func:`_switch_down`) and still decrypt exactly (|W / P| < Q' / 2), for Q' < 2^128 (the words
    travel as integers mod Q'); then the widest trim r (bits [M, M + r) of each word zeroed by
    subtracting t eta, :func:`_trim`) that keeps |W / P| < Q' / 2 with the words in whole bytes.
    (ring.k, 0, 0): no switch, residues at every prime. At least two primes even where one would
    do (a small reply ring): the switched reply's words are CRT pairs (:func:`_trim`, :func:`_decrypt_low`)."""
    for kk in range(2, ring.k):
        b, Qk = _switched_bound(ring, kk, m_max, M, noise, 0)
        if 2 * b >= Qk or Qk.bit_length() > 128:
            continue
        r = 0
        while 2 * _switched_bound(ring, kk, m_max, M, noise, r + 1)[0] < Qk and M + r + 1 <= Qk.bit_length():
            r += 1
        wb = -(-(Qk.bit_length() - r) // 8)
        r = max(0, Qk.bit_length() - 8 * wb)  # the same bytes, the fewest trimmed bits
        return kk, r, wb
    return ring.k, 0, 0


def _crt2(ring: Ring, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residues (..., 2, m) at the first two primes -> the integers in [0, p1 p2) as limb pairs."""
    p1, p2 = int(ring.primes[0]), int(ring.primes[1])
    r1, r2 = a[..., 0, :], a[..., 1, :]
    h = _mm(_below(r2 + U64(p2) - _below(r1, p2), p2), pow(p1, -1, p2), p2)
    return u128.add((np.zeros_like(r1), r1), u128.mul64(np.full_like(h, p1), h))


def _shr(a: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    hi, lo = a
    if k >= 64:
        return np.zeros_like(hi), hi >> U64(k - 64)
    if k == 0:
        return hi, lo
    return hi >> U64(k), (lo >> U64(k)) | (hi << U64(64 - k))


def _trim(ring: Ring, a: np.ndarray, M: int, r: int, wb: int) -> np.ndarray:
    """Server: switched residues (..., 2, m) -> wire words (count, wb) uint8: the integer x mod Q'
    minus t eta, eta = bits [M, M + r) of x (so 0 <= x - t eta < Q', the same value mod t, and
    |eta| < 2^r), sent without those r zero bits."""
    x = _crt2(ring, a)
    low = u128.mask_bits(x, M)
    y = u128.add(low, u128.shl(_shr(x, M + r), M))
    return np.ascontiguousarray(u128.to_bytes(y, wb).reshape(-1, wb))


def _untrim(ring: Ring, raw: np.ndarray, M: int, r: int, wb: int, shape: tuple[int, ...]) -> np.ndarray:
    """Client: wire words -> residues (..., 2, m) at the first two primes of x - t eta."""
    y = u128.from_bytes(raw.reshape(-1, wb), wb)
    x = u128.add(u128.mask_bits(y, M), u128.shl(_shr(y, M), M + r))
    out = np.empty(shape[:-1] + (2, shape[-1]), dtype=U64)
    for i in range(2):
        p = int(ring.primes[i])
        lo = x[1]
        lo_mod = _below(_mm(lo >> U64(32), 1 << 32, p) + (lo & U64(0xFFFFFFFF)), p)  # lo mod p
        out[..., i, :] = _below(_mm(x[0], 1 << 64, p) + lo_mod, p).reshape(shape)  # x[0] < 2^36 < p
    return out


_PLANS: dict[tuple, CheckedPlan] = {}


def make_plan(n_rows: int, d: int, x_bits: int, ring_bits: int, ring: Ring | Modulus | None = None, *,
              w_bits: int | None = None) -> CheckedPlan:
    """The packing with the fewest bytes (ciphertexts, proof, replies) that fits the noise budget
    (a pure function of its arguments and the ring's primes, cached: ~10 ms of the client's
    critical path per query, plans are immutable). ``w_bits``: the matrix's entry width where it
    is not x_bits (the query's)."""
    ring = ring or get_modulus()
    w_bits = None if w_bits == x_bits else w_bits
    key = (n_rows, d, x_bits, ring_bits, ring.n, tuple(int(p) for p in ring.primes), w_bits)
    got = _PLANS.get(key)
    if got is None:
        got = _PLANS[key] = _make_plan(n_rows, d, x_bits, ring_bits, ring, w_bits)
    return got


def _make_plan(n_rows: int, d: int, x_bits: int, ring_bits: int, ring: Ring | Modulus,
               w_bits: int | None = None) -> CheckedPlan:
    if not (1 <= n_rows and 1 <= d and 1 <= x_bits <= 30 and 8 <= ring_bits <= 60
            and (w_bits is None or 1 <= w_bits <= 30)):
        raise ProtocolError(f"checked lattice matvec: unsupported sizes rows={n_rows} d={d} x_bits={x_bits} "
                            f"M={ring_bits} w_bits={w_bits}")
    best = None
    for n_i in range(1, min(d, ring.n) + 1):
        got = _noise(ring, n_rows, d, x_bits, ring_bits, n_i, w_bits)
        if got is None:
            continue
        n_o, blocks, outputs, bound, F, kk, r, wb = got
        plan = CheckedPlan(n_rows, d, x_bits, ring_bits, n_i, n_o, blocks, outputs, bound, F, kk, r, wb, w_bits or 0)
        cost = plan.bytes_estimate(ring)
        if best is None or cost < best[0]:
            best = (cost, plan)
    if best is None:
        raise ProtocolError("checked lattice matvec: noise budget exceeded for these sizes; use the OT cross term")
    return best[1]


class PreparedChecked:
    """The server's W_{o,b} in NTT form (query-independent, per model)."""

    def __init__(self, X: np.ndarray, x_bits: int, ring_bits: int, w_bits: int | None = None) -> None:
        X = np.ascontiguousarray(X, dtype=U64)
        if X.ndim != 2:
            raise DataError(f"he_matvec_checked needs a 2-D matrix, got shape {X.shape}")
        width = x_bits if w_bits is None else w_bits
        if X.size and int(X.max()) >> width:
            raise DataError(f"matrix entries do not fit in {width} bits")
        self.ring = ring = get_ring()
        self.plan = plan = make_plan(X.shape[0], X.shape[1], x_bits, ring_bits, ring, w_bits=w_bits)
        n, n_i, n_o = ring.n, plan.n_i, plan.n_o
        Xp = np.zeros((plan.outputs * n_o, plan.blocks * n_i), dtype=U64)
        Xp[: X.shape[0], : X.shape[1]] = X
        W = Xp.reshape(plan.outputs, n_o, plan.blocks, n_i).transpose(0, 2, 1, 3)[..., ::-1]
        W = W.reshape(plan.outputs, plan.blocks, n_o * n_i)
        self.W_hat = np.empty((plan.outputs, plan.blocks, ring.k, n), dtype=U64)
        coeffs = np.zeros((plan.blocks, ring.k, n), dtype=U64)
        for o in range(plan.outputs):
            coeffs[:, :, : n_o * n_i] = W[o][:, None, :]  # entries < 2^30 < every prime
            self.W_hat[o] = ring.ntt(coeffs)
        # reply pads (:class:`ReplyPad`, stop 11): none unless the server asks for them (fill_pads)
        self.pads: list[ReplyPad] = []
        self.pad_target = 0
        self.pad_lock = threading.Lock()


_PREPARED: OwnerCache[PreparedChecked] = OwnerCache()


def prepare(X: np.ndarray, x_bits: int, ring_bits: int, owner: Any = None) -> PreparedChecked:
    """Prepared plaintexts, cached per ``owner`` (the served model)."""
    def fits(pm: PreparedChecked) -> bool:
        return (pm.plan.n_rows, pm.plan.d, pm.plan.x_bits, pm.plan.ring_bits) == (*X.shape, x_bits, ring_bits)

    return _PREPARED.get(owner, lambda: PreparedChecked(X, x_bits, ring_bits), fits)


def _agree(p: PartyContext, plan: CheckedPlan, sender: bool) -> None:
    agreed = {"rows": plan.n_rows, "d": plan.d, "x_bits": plan.x_bits, "ring_bits": plan.ring_bits,
              "n_i": plan.n_i, "reply_primes": plan.reply_primes, "trim_bits": plan.trim_bits}
    if plan.w_bits:  # only where the matrix is wider than the query: the default's message is unchanged
        agreed["w_bits"] = plan.w_bits
    p.check_peer("he-matvec-checked", agreed, announce=sender)


def _flood_residues(ring: Ring, rng: Any, F: int, count: int, t_bits: int) -> np.ndarray:
    """t f mod p (k, count) for f uniform in [-2^F, 2^F): f = a 2^48 + b, a signed, b in [0, 2^48)."""
    if not 48 < F <= 48 + 62:
        raise ProtocolError("flooding width out of range")
    a = rng.random_below(count, F - 48 + 1).astype(I64) - I64(1 << (F - 48))
    b = rng.random_below(count, 48).astype(I64)
    ra, rb = ring.from_signed(a), ring.from_signed(b)
    f = ring.add(ring.mul(ra, ring.scalar(1 << 48)), rb)
    return ring.mul(f, ring.scalar(1 << t_bits))


def _below(x: np.ndarray, p: int) -> np.ndarray:
    """x mod p for x < 2 p (uint64): one conditional subtraction, by a sign mask."""
    y = x.astype(I64) - I64(p)
    y += I64(p) & (y >> 63)
    return y.view(U64)


def _mm(a: np.ndarray, c: int, p: int) -> np.ndarray:
    """a c mod p for residues a < p and a constant c."""
    return mulmod(a, np.array(c % p, U64), np.array(p, U64), np.array(1.0 / p))


def _switch_down(ring: Ring, kk: int, a: np.ndarray, t_bits: int) -> np.ndarray:
    """BGV modulus switch of coefficient residues a (..., k, m) from Q to Q' = p_1 ... p_kk:
    a' = (a + t v) / P (mod Q'), P = p_(kk+1) ... p_k, v = (-a t^-1 mod P) in [0, P) (mixed
    radix over the dropped primes), so that a + t v = 0 (mod P) and t v = 0 (mod t). Applied to
    both parts, c0' + c1' s = W / P with W = m' + t (N + v0 + v1 s): the plaintext becomes
    m' P^-1 (mod t), exactly. Returns (..., kk, m).

    Every step is a sum of residues times public constants, so each is formed as lazy products
    (:func:`_lazy_const`: x c - trunc(x c / p) p, |.| < p + 3 |x| / 8 for x < 2^50) summed in
    int64 and reduced once (:func:`_reduce1`), with the constants folded (Garner's digits
    x_j = -a_j t^-1 R_j^-1 - sum_(i<j) x_i R_i R_j^-1 mod p_j, R_j = p_d0 ... p_d(j-1); then
    a'_i = a_i P^-1 + sum_j x_j t R_j P^-1 mod p_i): the same residues as a product-at-a-time
    evaluation, in a third of the passes."""
    k = ring.k
    if kk >= k:
        return a
    P = [int(p) for p in ring.primes]
    drop = list(range(kk, k))
    t = 1 << t_bits
    R = [1]
    for j in drop[:-1]:
        R.append(R[-1] * P[j])
    Pd = R[-1] * P[drop[-1]]
    ai = a.view(I64)
    xs: list[np.ndarray] = []  # Garner digits of v: v = sum_j x_j R_j, 0 <= x_j < p_dj
    for jj, j in enumerate(drop):
        pj = P[j]
        acc = _lazy_const(ai[..., j, :], -pow(t * R[jj], -1, pj), pj)
        for ii in range(jj):
            acc += _lazy_const(xs[ii], -R[ii] * pow(R[jj], -1, pj), pj)
        xs.append(_reduce1(acc, pj))
    out = np.empty(a.shape[:-2] + (kk, a.shape[-1]), dtype=U64)
    for i in range(kk):
        pi_ = P[i]
        pinv = pow(Pd, -1, pi_)
        acc = _lazy_const(ai[..., i, :], pinv, pi_)
        for jj in range(len(drop)):
            acc += _lazy_const(xs[jj], t * R[jj] * pinv, pi_)
        out[..., i, :] = _reduce1(acc, pi_).view(U64)
    return out


def _lazy_const(x: np.ndarray, c: int, p: int) -> np.ndarray:
    """x c (mod p) as a lazy signed int64 residue, |result| < p + 3 |x| / 8, for int64 0 <= x < 2^50
    and a constant c (any integer: reduced mod p here)."""
    c %= p
    q = np.multiply(x, c / p, dtype=np.float64).astype(I64)  # the float quotient, truncated
    q *= I64(p)
    r = np.multiply(x, I64(c))  # wraps mod 2^64; the difference is exact
    r -= q
    return r


def _reduce1(x: np.ndarray, p: int) -> np.ndarray:
    """Lazy signed int64 residues (|x| < 2^60) -> [0, p) int64, in place: the float quotient is off by
    at most one, then two sign-mask corrections."""
    q = np.multiply(x, 1.0 / p, dtype=np.float64).astype(I64)
    q *= I64(p)
    x -= q
    x += I64(p) & (x >> 63)
    x -= I64(p)
    x += I64(p) & (x >> 63)
    return x


def _decrypt_low(ring: Ring, kk: int, v: np.ndarray, t_bits: int) -> np.ndarray:
    """Client: residues (kk, m) of W / P at the reply's primes (kk = 2: Q' = p1 p2 < 2^128, as
    :func:`reply_format` ensures) -> m' mod t (m,) uint64: W / P centred mod Q', mod t, times P
    (mod t), vectorised in 128-bit limbs."""
    if kk != 2:
        raise ProtocolError("a switched reply has two primes")
    Qk = int(ring.primes[0]) * int(ring.primes[1])
    P = ring.Q // Qk
    x = _crt2(ring, v[None])  # (1, m) limb pairs in [0, Q')
    half = ((Qk // 2) >> 64, (Qk // 2) & ((1 << 64) - 1))
    above = (x[0] > U64(half[0])) | ((x[0] == U64(half[0])) & (x[1] > U64(half[1])))  # x > Q' / 2
    mask = U64((1 << t_bits) - 1)
    low = (x[1] - np.where(above, U64(Qk & ((1 << 64) - 1)), U64(0))) & mask  # (x - Q' [x > Q'/2]) mod t
    prod = u128.mul64(low, np.full_like(low, U64(P % (1 << t_bits))))
    return (prod[1] & mask)[0]


def commit_query(p: PartyContext, chooser: int, plan: CheckedPlan, ring: Ring, q_pads, domain: int, *,
                 q_bits: np.ndarray | None = None, delta: np.uint64 | None = None) -> U128:
    """MACs (client, ``q_bits``) or keys (server, ``delta``) mod 2^R on the query's bits, on their
    existing random OTs ``q_pads`` (so the proof binds the ciphertexts to the bits those OTs fixed):
    one COT correction of ceil(R / 8) bytes per bit (:meth:`CheckedPlan.mac_bits`)."""
    nq = plan.d * plan.x_bits
    keep = np.full(nq, -(-plan.mac_bits(ring) // 8))
    if p.role == chooser:
        out = au.cot_on_pads(p, chooser, q_pads, domain, words=1, choices=q_bits, keep=keep)
    else:
        corr = (np.zeros((nq, 1), U64), np.full((nq, 1), delta, dtype=U64))
        out = au.cot_on_pads(p, chooser, q_pads, domain, words=1, corr=corr, keep=keep)
    return out[0][:, 0].copy(), out[1][:, 0].copy()


@dataclass(frozen=True)
class ReplyPad:
    """The query-independent half of one session's reply (stop 11), made before the session from
    the server's own fresh randomness: the public seed, pk1 and the c1_b in NTT form, u_o's NTT
    for every output block, and the reply's c1 part as the wire words it is sent as -- c1_o =
    sum_b c1_b W_(o,b) + pk1 u_o + t e2_o depends on the seed, the model and (u_o, e2_o) only.
    Used by one session at most (:func:`take_pad` removes it from the pool)."""
    seed: bytes
    pk1_hat: np.ndarray
    c1_hat: np.ndarray
    u_hat: np.ndarray  # (outputs, k, n) int64, NTT(u_o) in [0, p)
    c1_words: tuple[np.ndarray, ...]  # per message chunk of _CHUNK output blocks
    pid: int  # the process that made it: a forked worker never uses its parent's (shared) pads


def make_pad(prepared: PreparedChecked, rng: Any) -> ReplyPad:
    """A fresh :class:`ReplyPad` from ``rng`` (the server's generator, never the client's): the same
    arithmetic as :func:`matvec_sender`'s inline path (seed, then per chunk u and e2)."""
    plan, ring = prepared.plan, prepared.ring
    M, k, n, kk = plan.ring_bits, ring.k, ring.n, plan.reply_primes
    seed = rng.random_bytes(16)
    pk1, c1 = bfv_proof.public_parts(ring, seed, plan.blocks)
    pk1_hat, c1_hat = ring.ntt(pk1), ring.ntt(c1)
    C1, pk1h = ring.lazy_table(c1_hat), ring.lazy_table(pk1_hat)
    W = prepared.W_hat.view(I64)
    t_res = ring.scalar(1 << M)
    lazy_in = 1.375 * (plan.blocks + 1) < LAZY_IN
    u_hat = np.empty((plan.outputs, k, n), dtype=I64)
    words = []
    prod, tmp = np.empty((k, n), dtype=I64), np.empty((k, n), dtype=I64)
    for o0 in range(0, plan.outputs, _CHUNK):
        o1 = min(plan.outputs, o0 + _CHUNK)
        c = o1 - o0
        u = ring.ternary(rng, (c, n))
        e2 = ring.cbd(rng, (c, n))
        te2 = e2[:, None, :] * t_res.astype(I64)[None]
        acc1 = np.empty((c, k, n), dtype=U64)
        for i in range(c):
            o = o0 + i
            u_hat[o] = ring.ntt(np.broadcast_to(u[i], (k, n)), ternary=True).view(I64)
            a1 = _lazy_dot(ring, W[o], C1, np.empty((k, n), dtype=I64), prod, tmp)
            a1 += ring.lazy_mul(u_hat[o], pk1h, prod, tmp)
            acc1[i] = _c1_part(ring, plan, a1, e2[i], te2[i], lazy_in)
        words.append(_c1_wire(ring, plan, acc1))
    return ReplyPad(seed, pk1_hat, c1_hat, u_hat, tuple(words), os.getpid())


def _c1_part(ring: Ring, plan: CheckedPlan, a1: np.ndarray, e2: np.ndarray, te2: np.ndarray,
             lazy_in: bool) -> np.ndarray:
    """One output block's c1 from its lazy sum a1 = sum_b c1_b W_(o,b) + pk1 u (k, n): in NTT form
    with NTT(t e2) added (no switch), else INTT(a1) + t e2 in coefficient form."""
    k, n, M = ring.k, ring.n, plan.ring_bits
    if plan.reply_primes == k:  # c1 travels in NTT form: t e2 joins it there
        a1 += ring.ntt(np.broadcast_to(e2, (k, n)), scale=1 << M).view(I64)  # NTT(t e2)
        return ring.canonical(a1)
    # c1 = INTT(sum) + t e2 in coefficient form: the same residues as INTT(sum + NTT(t e2))
    # (the transform is linear), one NTT per output fewer; t e2 (exact in int64: |e2| <= 21)
    # joins before the transform's one reduction
    return ring.intt(a1 if lazy_in else ring.canonical(a1), plus=te2)


def _c1_wire(ring: Ring, plan: CheckedPlan, acc1: np.ndarray) -> np.ndarray:
    """A chunk's c1 (c, k, n) as sent: packed residues, or (protocol 35) switched down and trimmed."""
    if plan.reply_primes == ring.k:
        return ring.pack(acc1)
    M = plan.ring_bits
    return _trim(ring, _switch_down(ring, plan.reply_primes, acc1, M), M, plan.trim_bits, plan.word_bytes)


def fill_pads(prepared: PreparedChecked, count: int | None = None, rng_factory: Callable[[], Any] | None = None) -> None:
    """Make reply pads until ``count`` (then the pool's target: :func:`refill_pads` keeps it) are
    ready; each from a fresh generator (``rng_factory``, default OS entropy: SecureRandom())."""
    with prepared.pad_lock:
        if count is not None:
            prepared.pad_target = count
        need = prepared.pad_target - len(prepared.pads)
    for _ in range(max(0, need)):
        pad = make_pad(prepared, (rng_factory or SecureRandom)())
        with prepared.pad_lock:
            prepared.pads.append(pad)


def refill_pads(prepared: PreparedChecked | None) -> None:
    """After a session (the client has its answer): top the pool back up to its target (no-op for
    a server that never asked for pads)."""
    if prepared is not None and prepared.pad_target > len(prepared.pads):
        fill_pads(prepared)


def take_pad(prepared: PreparedChecked) -> ReplyPad | None:
    """Remove one pad from the pool (None if empty): a pad serves one session at most. Pads made by
    another process (the parent of forked workers: every worker holds a copy of its pool) are
    dropped unused, so no two sessions in two processes can share one."""
    with prepared.pad_lock:
        pid = os.getpid()
        prepared.pads[:] = [pad for pad in prepared.pads if pad.pid == pid]
        return prepared.pads.pop(0) if prepared.pads else None


def matvec_sender(p: PartyContext, chooser: int, prepared: PreparedChecked, *, q_pads, domain: int) -> np.ndarray:
    """Server: its share (n_rows,) mod 2^M of X q. ``q_pads``: the random-OT keys (m0, m1) of the
    client's d x_bits query bits (value-major, least significant first), hashed in ``domain``
    for their MACs. Raises MacCheckError (before anything computed from the client's ciphertexts
    leaves) if the client's key or ciphertexts are ill formed."""
    plan, ring = prepared.plan, prepared.ring
    M, k, n = plan.ring_bits, ring.k, ring.n
    _agree(p, plan, sender=False)
    delta = au.new_delta(p)  # the proof's own MAC key, fresh
    q_keys = commit_query(p, chooser, plan, ring, q_pads, domain, delta=delta)
    # 1. the public seed: a ready pad's (stop 11: made before the session, with that session's c1
    # part of the reply), or drawn here
    pad = take_pad(prepared)
    seed = pad.seed if pad is not None else p.rng.random_bytes(16)
    p.ch.send_array(np.frombuffer(seed, dtype=np.uint8).copy())
    p.ch.flush()
    W = prepared.W_hat.view(I64)  # (outputs, B, k, n)
    if pad is not None:
        pk1_hat, c1_hat = pad.pk1_hat, pad.c1_hat
        C1, ahead = None, np.empty((0, k, n), dtype=I64)
    else:
        # the seed's public parts in NTT form while the client encrypts (they depend on the seed
        # only); the proof reuses them (its a* NTTs are their reversals)
        pk1, c1 = bfv_proof.public_parts(ring, seed, plan.blocks)
        pk1_hat, c1_hat = ring.ntt(pk1), ring.ntt(c1)
        # and, still while the client encrypts, the seed-only part of the first outputs' c1:
        # sum_b c1_b W_(o,b) (lazy sums, the same values the loop below would form)
        C1 = ring.lazy_table(c1_hat)
        ahead = seed_sums(ring, W, C1, min(plan.outputs, _SEED_AHEAD))
    # 2. the client's pk0 and c0_b
    polys = bfv_proof.recv_polys(p, ring, plan.blocks + 1)
    pk0, c0 = polys[0], polys[1:]
    hats: dict[str, np.ndarray] = {}

    def transform() -> None:  # local only (nothing leaves before the proof passes)
        hats["c0"], hats["pk0"] = ring.ntt(c0), ring.ntt(pk0)

    # 3. proof, before anything depends on the ciphertexts (the NTTs of the client's polynomials
    # run while the client computes its opening)
    bfv_proof.check_wellformed(p, chooser, ring, seed=seed, pk0=pk0, c0=c0, t_bits=M, n_msg=plan.n_i,
                               x_bits=plan.x_bits, msg_keys=q_keys, delta=delta, public_hat=(pk1_hat, c1_hat),
                               while_waiting=transform)
    # 4. products, re-randomisation, masks, flooding. Products are lazy signed residues
    # (rlwe.Ring.lazy_mul: |x| < 1.375 p for canonical factors) summed in int64 -- B + 1 <= 2^12
    # terms stay below 2^63 -- and reduced once per sum.
    C0 = ring.lazy_table(hats["c0"])  # (B, k, n)
    # every output's sum_b c0_b W_(o,b) (and the seed-only sums not formed above): here, one block
    # at a time, or (SECUREML_HE_THREADS >= 2) on a helper thread ahead of this loop
    sums = _BlockSums(ring, W, C0, C1, first_c1=plan.outputs if pad is not None else ahead.shape[0])
    pk0h, pk1h = ring.lazy_table(hats["pk0"]), ring.lazy_table(pk1_hat)
    tgt = plan.targets
    t_res = ring.scalar(1 << M)
    kk = plan.reply_primes
    lazy_in = 1.375 * (plan.blocks + 1) < LAZY_IN  # the sums' bound within the transforms' lazy input
    share = np.empty(plan.outputs * plan.n_o, dtype=U64)
    try:
        for o0 in range(0, plan.outputs, _CHUNK):
            o1 = min(plan.outputs, o0 + _CHUNK)
            c = o1 - o0
            if pad is None:
                u = ring.ternary(p.rng, (c, n))
                e2 = ring.cbd(p.rng, (c, n))
                te2 = e2[:, None, :] * t_res.astype(I64)[None]  # t e2 mod p, unreduced: |.| < 21 p
            acc1 = np.empty((c, k, n), dtype=U64)
            c0t = np.empty((c, k, plan.n_o), dtype=U64)
            prod, tmp = np.empty((k, n), dtype=I64), np.empty((k, n), dtype=I64)
            for i in range(c):  # one output block at a time: its (k, n) work arrays stay in the cache
                o = o0 + i
                a0, s1 = sums.get(o)
                if pad is not None:  # the c1 part is the pad's; u's NTT too
                    a0 += ring.lazy_mul(pad.u_hat[o], pk0h, prod, tmp)
                    c0t[i] = ring.intt_at(a0 if lazy_in else ring.canonical(a0), tgt)
                    continue
                a1 = ahead[o] if s1 is None else s1
                uh = ring.ntt(np.broadcast_to(u[i], (k, n)), ternary=True).view(I64)  # u in {-1, 0, 1}
                a1 += ring.lazy_mul(uh, pk1h, prod, tmp)
                a0 += ring.lazy_mul(uh, pk0h, prod, tmp)
                # a0, a1: B + 1 lazy products below 1.375 p each: within the transforms' lazy input
                # bound if lazy_in (B = 6 at CM sizes: 9.625 p < LAZY_IN p = 10 p), so no reduction first
                acc1[i] = _c1_part(ring, plan, a1, e2[i], te2[i], lazy_in)
                if kk == k:
                    c0t[i] = ring.intt_at(ring.canonical(a0), tgt)
                else:
                    c0t[i] = ring.intt_at(a0 if lazy_in else ring.canonical(a0), tgt)  # only the targets leave
            e1 = ring.cbd(p.rng, (c, plan.n_o))
            R = p.rng.random_below((c, plan.n_o), M)
            c0t = ring.add(c0t, ring.mul(ring.from_signed(e1), t_res))
            c0t = ring.add(c0t, ring.from_signed(R.astype(I64)) if M < 63 else _res_u64(ring, R))
            flood = _flood_residues(ring, p.rng, plan.flood_bits, c * plan.n_o, M).reshape(k, c, plan.n_o)
            c0t = ring.add(c0t, flood.transpose(1, 0, 2))
            # protocol 35: switched down to the reply's primes (a public function of what protocols 13-33
            # sent, so the client's view hides X as before; c1 now travels in coefficient form)
            p.ch.send_array(pad.c1_words[o0 // _CHUNK] if pad is not None else _c1_wire(ring, plan, acc1),
                            owned=pad is None)
            p.ch.send_array(_c1_wire(ring, plan, c0t), owned=True)  # c0 at the targets: the same map
            p.ch.flush()
            share[o0 * plan.n_o:o1 * plan.n_o] = (U64(0) - R).ravel()
    finally:
        sums.close()
    return share[: plan.n_rows] & U64((1 << M) - 1)


def seed_sums(ring: Ring, W: np.ndarray, C1: tuple[np.ndarray, np.ndarray], count: int,
              prod: np.ndarray | None = None, tmp: np.ndarray | None = None) -> np.ndarray:
    """sum_b c1_b W_(o,b) for the first ``count`` output blocks of W (outputs, B, k, n) int64, as
    lazy signed int64 sums (count, k, n) (B products below 1.375 p each): the part of the reply's
    c1 that depends on the server's seed only, so it can be formed while the client encrypts."""
    k, n = ring.k, ring.n
    prod = np.empty((k, n), dtype=I64) if prod is None else prod
    tmp = np.empty((k, n), dtype=I64) if tmp is None else tmp
    out = np.empty((count, k, n), dtype=I64)
    for o in range(count):
        _lazy_dot(ring, W[o], C1, out[o], prod, tmp)
    return out


def _lazy_dot(ring: Ring, W_o: np.ndarray, C: tuple[np.ndarray, np.ndarray], out: np.ndarray,
              prod: np.ndarray, tmp: np.ndarray, C2: tuple[np.ndarray, np.ndarray] | None = None,
              out2: np.ndarray | None = None) -> np.ndarray:
    """sum_b C_b W_(o,b) into ``out`` (k, n) int64 (and, given ``C2``, sum_b C2_b W_(o,b) into
    ``out2``): the same integer as the sum of rlwe's lazy products sum_b (W C - trunc(W (C / p)) p),
    formed as two running sums -- the wrapping products W C, and the truncated quotients in float64
    -- and one product by p at the end instead of one per b; W_(o,b) (256 kB of the 187 MB prepared
    table) is converted to float64 once for both tables, while it is in the cache (stop 11).
    Exact: each quotient is the same float product W (C / p) (W < 2^50 converts exactly),
    truncated; up to 8 of them (each in [0, 2^50)) sum exactly in float64 before they join an int64
    sum; both sides agree mod 2^64, and the true sum (B terms below 1.375 p) is far below 2^63."""
    k_n = out.shape
    wf, ft = np.empty(k_n), np.empty(k_n)
    pairs = [(C, out, np.zeros(k_n, dtype=I64), np.zeros(k_n))]
    if C2 is not None:
        pairs.append((C2, out2, np.zeros(k_n, dtype=I64), np.zeros(k_n)))
    B = W_o.shape[0]
    for b in range(B):
        w = W_o[b]
        np.copyto(wf, w, casting="unsafe")
        for (ci, cq), acc, q, qf in pairs:
            np.multiply(wf, cq[b], out=ft)
            np.trunc(ft, out=ft)
            qf += ft
            if b == 0:
                np.multiply(w, ci[0], out=acc)  # wraps mod 2^64
            else:
                np.multiply(w, ci[b], out=prod)
                acc += prod
            if b % 8 == 7 or b == B - 1:  # at most 8 quotients below 2^50 per float sum: exact
                np.copyto(tmp, qf, casting="unsafe")
                q += tmp
                qf.fill(0.0)
    for _, acc, q, _ in pairs:
        q *= ring._p_full(q.shape, 1)
        acc -= q
    return out


def helper_threads() -> bool:
    """Whether the server forms the reply's block sums on a helper thread (:class:`_BlockSums`):
    only with ``SECUREML_HE_THREADS`` >= 2 (opt-in: on the shared 2-core machine no gain was
    measured, docs/malicious.md "Gaussian CPU, no wire change (stop 10)"). The values are the
    same either way."""
    env = os.environ.get("SECUREML_HE_THREADS", "").strip()
    # anything but a whole number (a typo in a deployment's environment) leaves the default path
    return env.isdigit() and int(env) > 1


class _BlockSums:
    """The server's sums of products per output block, sum_b c0_b W_(o,b) for every o and
    sum_b c1_b W_(o,b) for o >= ``first_c1`` (the earlier ones were formed while the client
    encrypted), by :func:`_lazy_dot` on a helper thread that runs at most _SUMS_AHEAD blocks ahead of :meth:`get`
    (:func:`helper_threads`; else on the caller's thread, on demand). Local values only: they
    are used like the loop's own sums (nothing is sent from here)."""

    def __init__(self, ring: Ring, W: np.ndarray, C0: tuple[np.ndarray, np.ndarray],
                 C1: tuple[np.ndarray, np.ndarray], first_c1: int) -> None:
        self.ring, self.W, self.C0, self.C1, self.first_c1 = ring, W, C0, C1, first_c1
        self.outputs = W.shape[0]
        self.ready: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.cond = threading.Condition()
        self.taken = 0  # blocks handed to the caller
        self.error: BaseException | None = None
        self.stop = False
        self.thread = None
        self._small = (np.empty((ring.k, ring.n), I64), np.empty((ring.k, ring.n), I64))
        if helper_threads() and self.outputs > 1:
            self.thread = threading.Thread(target=self._run, name="he-block-sums", daemon=True)
            self.thread.start()

    def _one(self, o: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Block o's sums by :func:`_lazy_dot` (both tables in one pass over W_(o,b) when the c1
        sum is still due), the same function and values as the caller's own path."""
        ring, W = self.ring, self.W
        prod, tmp = self._small
        s0 = np.empty((ring.k, ring.n), dtype=I64)
        if o < self.first_c1:
            return _lazy_dot(ring, W[o], self.C0, s0, prod, tmp), None
        s1 = np.empty_like(s0)
        _lazy_dot(ring, W[o], self.C0, s0, prod, tmp, self.C1, s1)
        return s0, s1

    def _run(self) -> None:
        try:
            for o in range(self.outputs):
                with self.cond:
                    while not self.stop and o >= self.taken + _SUMS_AHEAD:
                        self.cond.wait()
                    if self.stop:
                        return
                got = self._one(o)
                with self.cond:
                    self.ready[o] = got
                    self.cond.notify_all()
        except BaseException as exc:  # handed to the caller's get
            with self.cond:
                self.error = exc
                self.cond.notify_all()

    def get(self, o: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(sum with the c0_b, sum with the c1_b or None if formed earlier) of block o, in order."""
        if self.thread is None:  # one block's (k, n) products at a time: they stay in the cache
            return self._one(o)
        with self.cond:
            while o not in self.ready and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            got = self.ready.pop(o)
            self.taken = o + 1
            self.cond.notify_all()
        return got

    def close(self) -> None:
        if self.thread is not None:
            with self.cond:
                self.stop = True
                self.cond.notify_all()
            self.thread.join()


def _res_u64(ring: Ring, x: np.ndarray) -> np.ndarray:
    return (x[..., None, :] % ring.p).astype(U64)


def matvec_receiver(p: PartyContext, chooser: int, q: np.ndarray, x_bits: int, n_rows: int, ring_bits: int, *,
                    q_pads: np.ndarray, q_bits: np.ndarray, domain: int,
                    encrypt: Callable[..., Any] | None = None, w_bits: int | None = None) -> np.ndarray:
    """Client: its share (n_rows,) mod 2^M of X q. ``q_pads`` (d x_bits, 16): its random-OT keys
    of the committed query bits ``q_bits`` (their choice bits; value-major, least significant
    first), hashed in ``domain``. ``encrypt`` (tests) replaces :func:`bfv_proof.client_encrypt`.
    ``w_bits``: the server's matrix width where it is not x_bits (both parties pass the same)."""
    q = np.ascontiguousarray(q, dtype=U64).ravel()
    ring = get_ring()
    plan = make_plan(n_rows, q.shape[0], x_bits, ring_bits, ring, w_bits=w_bits)
    if q.size and int(q.max()) >> x_bits:
        raise DataError(f"query entries do not fit in {x_bits} bits")
    M, k, n = ring_bits, ring.k, ring.n
    _agree(p, plan, sender=True)
    q_bits = np.asarray(q_bits, dtype=np.uint8).ravel()
    q_macs = commit_query(p, chooser, plan, ring, q_pads, domain, q_bits=q_bits)
    seed = bytes(p.ch.recv_array(np.uint8, (16,)))
    qp = np.zeros(plan.blocks * plan.n_i, dtype=I64)
    qp[: q.shape[0]] = q.astype(I64)
    pk0, c0, wit = (encrypt or bfv_proof.client_encrypt)(ring, p.rng, seed, qp.reshape(plan.blocks, plan.n_i), M)
    p.ch.send_array(ring.pack(np.concatenate([pk0[None], c0], axis=0)), owned=True)
    p.ch.flush()
    bfv_proof.check_wellformed(p, chooser, ring, seed=seed, pk0=pk0, c0=c0, t_bits=M, n_msg=plan.n_i,
                               x_bits=plan.x_bits, msg_macs=q_macs, msg_bits=q_bits, witness=wit)
    tgt = plan.targets
    out = np.empty(plan.outputs * plan.n_o, dtype=U64)
    mask = (1 << M) - 1
    for o0 in range(0, plan.outputs, _CHUNK):
        o1 = min(plan.outputs, o0 + _CHUNK)
        c = o1 - o0
        kk = plan.reply_primes
        if kk == k:
            c1h = bfv_proof.recv_polys(p, ring, c)
            raw = p.ch.recv_array(np.uint8, (c * k * plan.n_o, 7))
            try:
                c0t = ring.unpack(raw, (c, k, plan.n_o))
            except ValueError:
                raise ProtocolError("malformed lattice reply") from None
            v = ring.add(c0t, ring.intt(ring.mul(c1h, wit.s_hat[None]))[..., tgt])  # (c, k, n_o)
            vals = ring.centered(v.transpose(1, 0, 2).reshape(k, c * plan.n_o))
            out[o0 * plan.n_o:o1 * plan.n_o] = np.array([x & mask for x in vals], dtype=U64)
            continue
        low = ring.prefix(kk)  # the reply's primes
        r, wb = plan.trim_bits, plan.word_bytes
        c1 = _untrim(ring, p.ch.recv_array(np.uint8, (c * n, wb)), M, r, wb, (c, n))
        c0t = _untrim(ring, p.ch.recv_array(np.uint8, (c * plan.n_o, wb)), M, r, wb, (c, plan.n_o))
        c1s = low.intt_at(low.mul(low.ntt(c1), wit.s_hat[None, :kk]), tgt)
        v = low.add(c0t, c1s)
        out[o0 * plan.n_o:o1 * plan.n_o] = _decrypt_low(ring, kk, v.transpose(1, 0, 2).reshape(kk, c * plan.n_o), M)
    return out[:n_rows]
