"""Numpy arithmetic in R_Q = Z_Q[X]/(X^n + 1), Q a product of four ~50-bit NTT primes.

Used by the client-malicious lattice cross term (:mod:`protocols.mpc.he_matvec_checked`) and its
well-formedness proof (:mod:`protocols.mpc.bfv_proof`), which need every polynomial as numpy (the
proof is linear algebra over the coefficients mod each prime) -- SEAL's Python bindings cannot
hand ciphertext coefficients back to numpy in bulk, so this module does the ring arithmetic itself.

Why these parameters: n = 8,192 and log2 Q = 200 (four primes just below 2^50, p = 1 mod 2n) stay
below the 218 bits the HomomorphicEncryption.org standard allows for 128-bit security at
n = 8,192 with ternary secrets and error of standard deviation ~3.2 (no key switching is done, so
no special prime). Primes below 2^50 let a product a b mod p run in float64 + uint64 arithmetic
(:func:`mulmod`): the quotient estimate floor(a b / p) is off by at most one. Inside the NTT and
the server's sums, products stay unreduced signed int64 values congruent mod p (:meth:`Ring.lazy_mul`,
bounded in the NTT section's comment) and are reduced once (:meth:`Ring.canonical`).

Representation: a polynomial is a (k, n) uint64 array of its residues mod each prime; leading
batch axes are allowed everywhere. :func:`ntt` evaluates at psi^(2i+1), i = 0..n-1 (psi a primitive
2n-th root of unity), in natural order, so products are pointwise.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Any

import numpy as np

from protocols.ot.crypto import CounterPRG, derive_key

U64, I64, F64 = np.uint64, np.int64, np.float64
N_DEFAULT = 8192
PRIME_BITS = 50
N_PRIMES = 4
#: lazy signed inputs of the inverse transform may reach LAZY_IN p in magnitude (:meth:`Ring.intt`)
LAZY_IN = 10
#: centred binomial error (eta = 21: standard deviation sqrt(21 / 2) = 3.24, |e| <= 21)
CBD_ETA = 21


def _is_prime(m: int) -> bool:
    if m < 2:
        return False
    for sp in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if m % sp == 0:
            return m == sp
    d, r = m - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):  # deterministic below 3.3e24
        x = pow(a, d, m)
        if x in (1, m - 1):
            continue
        for _ in range(r - 1):
            x = x * x % m
            if x == m - 1:
                break
        else:
            return False
    return True


def _primes(n: int, bits: int, count: int) -> list[int]:
    """The ``count`` largest primes below 2^bits with p = 1 (mod 2n): deterministic, public."""
    out, c = [], ((1 << bits) - 1) // (2 * n)
    while len(out) < count:
        m = c * 2 * n + 1
        if m < (1 << bits) and _is_prime(m):
            out.append(m)
        c -= 1
    return out


def _root(p: int, n: int) -> int:
    """A primitive 2n-th root of unity mod p (psi^n = -1)."""
    for g in range(2, 1000):
        psi = pow(g, (p - 1) // (2 * n), p)
        if pow(psi, n, p) == p - 1:
            return psi
    raise ValueError("no 2n-th root found")  # pragma: no cover


class ModPrimes:
    """Elementwise arithmetic mod k primes below 2^50, inputs already reduced; ``p`` and ``pinv``
    (1 / p as float64) are shaped by the subclass to broadcast along its prime axis."""

    p: np.ndarray
    pinv: np.ndarray

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a b mod p."""
        return mulmod(a, b, self.p, self.pinv)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(a + b) mod p for a, b < p: a + b - p (< 2^51 in magnitude) in int64, p added back where
        negative (a sign mask instead of np.where: 1.5x faster on the proof's arrays)."""
        pi = self.p.astype(I64)
        s = np.add(a, b, dtype=U64).view(I64)
        s -= pi
        s += pi & (s >> 63)
        return s.view(U64)

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(a - b) mod p for a, b < p."""
        s = np.subtract(a, b, dtype=U64).view(I64)
        s += self.p.astype(I64) & (s >> 63)
        return s.view(U64)


class Ring(ModPrimes):
    """Public ring parameters and NTT tables (identical on both sides: nothing secret here)."""

    def __init__(self, n: int = N_DEFAULT, prime_bits: int = PRIME_BITS, n_primes: int = N_PRIMES) -> None:
        if n & (n - 1) or not 8 <= n <= 1 << 15 or prime_bits > 50:
            raise ValueError("n must be a power of two and primes at most 50 bits")
        self.n, self.logn = n, n.bit_length() - 1
        self.primes = _primes(n, prime_bits, n_primes)
        self.k = len(self.primes)
        self.Q = 1
        for p in self.primes:
            self.Q *= p
        self.log2_Q = self.Q.bit_length()
        self.p = np.array(self.primes, dtype=U64)[:, None]  # (k, 1) for broadcasting over coefficients
        self.pinv = (1.0 / np.array(self.primes, dtype=F64))[:, None]
        rev = np.zeros(n, dtype=np.intp)
        for b in range(self.logn):  # bit b of i becomes bit logn - 1 - b
            rev |= ((np.arange(n) >> b) & 1) << (self.logn - 1 - b)
        self.rev = rev
        psi = [_root(p, n) for p in self.primes]
        # twist (psi^j), untwist with 1/n (psi^-j / n), and per-stage cyclic twiddles omega_{2h}^j
        # (powers by vectorised products, not one Python pow per entry: a client's first session
        # builds these tables, ~0.3 -> ~0.02 s at n = 8,192; the same residues)
        self.twist = _powers([s for s in psi], self.primes, n)
        ninv = self.scalar(0)
        ninv[:, 0] = [pow(n, -1, p) for p in self.primes]
        self.untwist = self.mul(_powers([pow(s, -1, p) for s, p in zip(psi, self.primes)], self.primes, n), ninv)
        self._build_ntt_tables(psi)
        # CRT: x = sum_i [v_i * (Q/p_i)^-1 mod p_i] * Q/p_i  (mod Q)
        self.crt_hat = [self.Q // p for p in self.primes]
        self.crt_inv = np.array([pow(self.Q // p % p, -1, p) for p in self.primes], dtype=U64)[:, None]

    def prefix(self, kk: int) -> "Ring":
        """The same ring at its first kk primes only (a view of this ring's tables, cached): what a
        reply switched down to those primes is computed in (:mod:`protocols.mpc.he_matvec_checked`)."""
        cache = self.__dict__.setdefault("_prefixes", {})
        if kk not in cache:
            sub = copy.copy(self)
            sub.__dict__.pop("_prefixes", None)
            sub.primes, sub.k = self.primes[:kk], kk
            sub.Q = 1
            for p in sub.primes:
                sub.Q *= p
            sub.log2_Q = sub.Q.bit_length()
            sub.p, sub.pinv = self.p[:kk], self.pinv[:kk]
            sub.twist, sub.untwist = self.twist[:kk], self.untwist[:kk]
            sub._twist_A = {key: (a[:kk], b[:kk]) for key, (a, b) in self._twist_A.items()}
            sub._stages = {sg: [(h, w[:kk], wq[:kk]) for h, w, wq in st] for sg, st in self._stages.items()}
            sub.__dict__.pop("_pfull", None)  # the shallow copy would share this ring's (k-prime) arrays
            sub._untwist_lazy = (self._untwist_lazy[0][:kk], self._untwist_lazy[1][:kk])
            sub.crt_hat = [sub.Q // p for p in sub.primes]
            sub.crt_inv = np.array([pow(sub.Q // p % p, -1, p) for p in sub.primes], dtype=U64)[:, None]
            cache[kk] = sub
        return cache[kk]

    # ---- modular arithmetic (k primes along axis -2): mul / add / sub from ModPrimes -------------
    def neg(self, a: np.ndarray) -> np.ndarray:
        """-a mod p."""
        return np.where(a == 0, a, self.p - a)

    def from_signed(self, x: np.ndarray) -> np.ndarray:
        """Small signed integers (..., n) -> residues (..., k, n)."""
        x = np.asarray(x, dtype=I64)[..., None, :]
        return (x % self.p.astype(I64)).astype(U64)

    def scalar(self, c: int) -> np.ndarray:
        """An integer constant as (k, 1) residues."""
        return np.array([c % p for p in self.primes], dtype=U64)[:, None]

    # ---- NTT -----------------------------------------------------------------------------------
    # Radix-2 DIT (cyclic, on bit-reversed input) between a twist by psi^j and an untwist by
    # psi^-j / n; four things make it fast in numpy (4-5x the plain radix-2 loop at n = 8,192):
    # * two layouts: element e = R g + r (R = 2^floor(log2(n) / 2), G = n / R). Stages with h < R
    #   pair elements of one g along r: on an (R, G) array the pairs are rows, G contiguous words
    #   each. Stages with h >= R pair one r along g: on the transposed (G, R) array (natural order)
    #   the pairs are rows of R words. No stage works on runs of 2 or 4 words (numpy's slow case).
    # * lazy signed residues: a butterfly's product v w mod p is v w - trunc(v w / p) p with the
    #   quotient from one float multiply by the precomputed w / p and no correction (|result| <
    #   p + 3|v| 2^-53 p < p + 3|v| / 8 for p < 2^50), so the values grow by at most 1.375x + p per
    #   stage: < 250 p < 2^58 after 13 stages, exact in wrapping int64; one canonical reduction at
    #   the end. Inputs may be any signed values of magnitude below p (small noise polynomials go
    #   in as they are).
    # * preallocated buffers and out= (no temporaries in the stage loop).
    # * one (k, n) polynomial at a time (:meth:`_each`): its work arrays stay in the cache.
    def _build_ntt_tables(self, psi: list[int]) -> None:
        n, k = self.n, self.k
        R = 1 << (self.logn // 2)
        G = n // R
        self._R, self._G = R, G
        primes = np.array(self.primes, dtype=F64)
        # the gather that puts the bit-reversed input into the (R, G) layout: A[r, g] = a[rev(R g + r)]
        self._idx_A = np.ascontiguousarray(self.rev.reshape(G, R).T)
        self._twist_A = {1: self.lazy_table(np.ascontiguousarray(self.twist[:, self._idx_A]), 2)}
        self._stages: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for sign in (1, -1):
            stages = []
            h = 1
            while h < n:
                w = [pow(s, sign * 2 * (n // (2 * h)), p) for s, p in zip(psi, self.primes)]  # omega_{2h}^sign
                if h < R:
                    e = np.arange(h)[:, None]  # (h, 1): the exponent is r mod h, broadcast over g
                else:
                    hg = h // R  # (hg, R): exponent R (g mod hg) + r
                    e = (R * np.arange(hg)[:, None] + np.arange(R)[None, :])
                wt = _powers(w, self.primes, h)[:, e.ravel()].astype(I64).reshape(k, *e.shape)  # exponents < h
                wq = wt.astype(F64) / primes.reshape(k, *([1] * e.ndim))
                # shaped like the stage's half (k, blocks, h, inner) for a (k, n) polynomial: for h < R
                # broadcast over g and stored whole (numpy's loops are ~2x slower with a stride-0
                # innermost operand; 6 stages x 2 signs x 256 kB), else broadcast over the blocks only
                if h < R:
                    shp = (k, R // (2 * h), h, G)
                    wt, wq = (np.ascontiguousarray(np.broadcast_to(t[:, None], shp)) for t in (wt, wq))
                else:
                    wt, wq = wt[:, None], wq[:, None]
                stages.append((h, wt, wq))
                h *= 2
            self._stages[sign] = stages
        self._untwist_lazy = self.lazy_table(self.untwist)

    def lazy_table(self, w: np.ndarray, trailing: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Residues w (prime axis followed by ``trailing`` axes; (..., k, n) by default) as (int64,
        w / p float64, correctly rounded): the precomputed factor of :meth:`lazy_mul`."""
        w = np.asarray(w)
        pf = np.array(self.primes, dtype=F64).reshape(self.k, *([1] * trailing))
        return w.astype(I64), w.astype(F64) / pf

    def _p_like(self, ndim: int) -> np.ndarray:
        """p as int64, shaped (k, 1, ..., 1) to broadcast over ``ndim`` trailing axes after the prime."""
        return self.p.astype(I64).reshape(self.k, *([1] * ndim))

    def _p_full(self, shape: tuple[int, ...], ndim: int) -> np.ndarray:
        """p as int64 at every position of ``shape`` (prime axis followed by ``ndim`` trailing axes):
        the same values as :meth:`_p_like`, stored whole because numpy's integer loops run ~2x
        slower with a broadcast (stride-0) innermost operand. Cached per shape (a few per process);
        shapes above 2^20 positions get the broadcast view (no copy that large is kept)."""
        cache = self.__dict__.setdefault("_pfull", {})
        key = (shape, ndim)
        got = cache.get(key)
        if got is None:
            if math.prod(shape) > 1 << 20:
                return self._p_like(ndim)
            if len(cache) > 64:  # bound the memory whatever shapes callers bring
                cache.clear()
            got = cache[key] = np.ascontiguousarray(np.broadcast_to(self._p_like(ndim), shape))
        return got

    @staticmethod
    def _lazy_mul(v: np.ndarray, w: np.ndarray, wq: np.ndarray, p: np.ndarray, out: np.ndarray,
                  tmp: np.ndarray) -> np.ndarray:
        """out = v w - trunc(v (w / p)) p: congruent to v w mod p, |out| < p + 3 |v| / 8 (int64)."""
        np.multiply(v, wq, out=tmp, casting="unsafe")  # float quotient, truncated into int64
        tmp *= p
        np.multiply(v, w, out=out)  # wraps mod 2^64; the difference is exact
        out -= tmp
        return out

    def lazy_mul(self, v: np.ndarray, table: tuple[np.ndarray, np.ndarray], out: np.ndarray | None = None,
                 tmp: np.ndarray | None = None) -> np.ndarray:
        """v w mod p as lazy signed int64 residues (|result| < p + 3 |v| / 8) for (..., k, n) int64 ``v``
        (|v| < 2^60) and a :meth:`lazy_table` ``table`` of w: sums of a few such products stay
        far below 2^63, so callers accumulate them and reduce once (:meth:`canonical`)."""
        out = np.empty(np.broadcast_shapes(v.shape, table[0].shape), dtype=I64) if out is None else out
        tmp = np.empty_like(out) if tmp is None else tmp
        return self._lazy_mul(v, table[0], table[1], self._p_full(out.shape, 1), out, tmp)

    def canonical(self, a: np.ndarray) -> np.ndarray:
        """Lazy signed residues (..., k, n) int64, |a| < 2^60 -> [0, p) uint64, in place."""
        return self._canonical(a, 1)

    def _canonical(self, a: np.ndarray, ndim: int) -> np.ndarray:
        """Signed lazy residues (|a| < 2^60) -> [0, p) as uint64 (in place)."""
        p = self._p_full(a.shape, ndim)
        q = np.multiply(a, self.pinv.reshape(self.k, *([1] * ndim)), casting="unsafe", dtype=F64).astype(I64)
        q *= p
        a -= q  # now in [-p, 2p): the float quotient is off by at most one
        a += p & (a >> 63)
        a -= p
        a += p & (a >> 63)
        return a.view(U64)

    def _cyclic(self, a: np.ndarray, sign: int, twist: tuple[np.ndarray, np.ndarray] | None,
                stop: int | None = None, ternary: bool = False) -> np.ndarray:
        """Cyclic DIT of (..., k, n) signed residues (|a| < p), optionally times a twist table in the
        (R, G) layout first; returns lazy int64 residues (|x| < 2^58), natural order, (..., k, n).
        ``stop`` (> R): only the stages with h < stop (blocks of ``stop`` positions complete, flat
        position order: :meth:`intt_at`). ``ternary``: the input is in {-1, 0, 1}, so the twist is
        the exact product a w (|a w| < p: the same bound as the lazy product) in one pass."""
        R, G, k = self._R, self._G, self.k
        lead = a.shape[:-2]
        a = np.asarray(a)
        x = a.view(I64) if a.dtype == U64 else a.astype(I64, copy=False)
        if ternary and twist is not None and x.ndim == 2 and x.strides[0] == 0:
            # one polynomial broadcast along the prime axis (the server's u): gathered once, and the
            # exact twist product writes the (k, R, G) layout
            buf = np.empty((k, R, G), dtype=I64)
            np.multiply(np.take(x[0], self._idx_A), twist[0], out=buf)
            x, buf = buf, np.empty_like(buf)
            twist = None
        else:
            x = np.take(x, self._idx_A, axis=-1)  # (..., k, R, G) C-contiguous (x[..., idx] is not)
            buf = np.empty_like(x)
        half = np.empty(x.shape[:-2] + (R * G // 2,), dtype=I64)
        tmp = np.empty_like(half)
        if twist is not None:
            if ternary:
                np.multiply(x, twist[0], out=buf)
            else:
                self._lazy_mul(x, twist[0], twist[1], self._p_full(x.shape, 2), buf, np.empty_like(x))
            x, buf = buf, x
        p4 = self._p_full(half.shape, 1)  # reshaped per stage below (a view)
        for h, w, wq in self._stages[sign]:
            if stop is not None and h >= stop:
                break
            if h == R:  # switch to the (G, R) layout: the pairs are now along g
                buf.reshape(*lead, k, G, R)[...] = x.reshape(*lead, k, R, G).transpose(*range(len(lead) + 1), -1, -2)
                x, buf = buf, x
            if h < R:
                xs = x.reshape(*lead, k, R // (2 * h), 2, h, G)
                ys = buf.reshape(*lead, k, R // (2 * h), 2, h, G)
            else:
                hg = h // R
                xs = x.reshape(*lead, k, G // (2 * hg), 2, hg, R)
                ys = buf.reshape(*lead, k, G // (2 * hg), 2, hg, R)
            u, v, lo, hi = xs[..., 0, :, :], xs[..., 1, :, :], ys[..., 0, :, :], ys[..., 1, :, :]
            if h == 1:  # omega_2^0 = 1: no product
                np.add(u, v, out=lo)
                np.subtract(u, v, out=hi)
            else:
                t = self._lazy_mul(v, w, wq, p4.reshape(u.shape), out=half.reshape(u.shape), tmp=tmp.reshape(u.shape))
                np.add(u, t, out=lo)
                np.subtract(u, t, out=hi)
            x, buf = buf, x
        return x.reshape(*lead, k, R * G)  # n >= 8: the last stage (h = n / 2 >= R) ran in (G, R)

    def ntt(self, a: np.ndarray, scale: int = 1, ternary: bool = False) -> np.ndarray:
        """Coefficients (..., k, n) -> evaluations at psi^(2i+1), natural order, times ``scale``
        (merged into the twist table: ntt(a, t) = ntt(a) t mod p at no extra cost). ``a`` may be
        residues in [0, p) or small signed integers broadcast along the prime axis (|a| < p);
        ``ternary=True`` promises entries in {-1, 0, 1} (the twist is then one exact product)."""
        tw = self._twist_A.get(scale)
        if tw is None:
            tw = self._twist_A[scale] = self.lazy_table(self.mul(self.twist, self.scalar(scale))[:, self._idx_A], 2)
        return self._each(a, lambda x: self._canonical(self._cyclic(x, 1, tw, ternary=ternary), 1))

    def intt_at(self, a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """intt(a)[..., idx] for (..., k, n) residues (or lazy ones, |a| < LAZY_IN p, as :meth:`intt`:
        after 9 stages below 1.375^9 LAZY_IN p + 45 p < 2^58), without the whole inverse transform: the
        DIT's stages with h < H (H = max(2 R, n / 16)) leave, at flat positions H c + f, the size-H
        transforms D_c'[f] of the subsequences a[c' + (n / H) t] (c' = c bit-reversed in
        log2(n / H) bits), and coefficient e of the inverse is
            untwist_e sum_c omega^(-e c') D_c'[e mod H]   (omega = psi^2, n / H terms),
        one lazy product per (target, block) with the untwist folded into the table: for the
        server's 138 targets of n = 8,192, 9 of the 13 stages and 16 products per target instead
        of 4 more stages, the untwist and the reduction over all n."""
        idx = np.asarray(idx, dtype=np.intp).ravel()
        H = max(2 * self._R, self.n // 16)
        if H >= self.n:
            return self.intt(a)[..., idx]
        tab, pos = self._partial_table(idx, H)
        a = np.asarray(a)
        flat = a.reshape(-1, self.k, self.n)
        out = np.empty((flat.shape[0], self.k, idx.shape[0]), dtype=U64)
        p3 = self._p_like(2)
        for i in range(flat.shape[0]):
            x = self._cyclic(flat[i], -1, None, stop=H)  # (k, n) lazy, |x| < 2^58
            g = self._canonical(x[:, pos], 2)  # (k, T, n / H) in [0, p)
            prod = self._lazy_mul(g.view(I64), tab[0], tab[1], p3, np.empty(g.shape, I64), np.empty(g.shape, I64))
            out[i] = self._canonical(prod.sum(axis=-1), 1)  # n / H terms below 1.375 p each
        return out.reshape(a.shape[:-1] + (idx.shape[0],))

    def _partial_table(self, idx: np.ndarray, H: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """(:meth:`lazy_table` of untwist_e psi^(-2 e c') (k, T, n / H), flat positions (T, n / H))
        for :meth:`intt_at`, cached per prime set, H and index set."""
        cache = self.__dict__.setdefault("_partial", {})
        key = (tuple(self.primes), H, idx.tobytes())
        got = cache.get(key)
        if got is None:
            m = self.n // H
            bits = m.bit_length() - 1
            crev = [int(format(c, f"0{bits}b")[::-1], 2) if bits else 0 for c in range(m)]
            # z = psi^(-2 e) per (prime, index): one pow each, then z^j (j < n / H) by products
            psi = [int(v) for v in self.twist[:, 1]]
            z = np.array([[pow(s, -2 * int(e), pr) for e in idx] for s, pr in zip(psi, self.primes)],
                         dtype=U64)  # (k, T)
            powers = [self.untwist[:, idx]]  # untwist_e z^j, j = 0, 1, ...
            for _ in range(1, m):
                powers.append(self.mul(powers[-1], z))
            w = np.stack(powers, axis=-1)[..., crev]  # (k, T, n / H): block c takes j = c'
            pos = (H * np.arange(m, dtype=np.intp)[None, :] + (idx % H)[:, None]).astype(np.intp)
            got = cache[key] = (self.lazy_table(w, 2), pos)
        return got

    def intt(self, a: np.ndarray, plus: np.ndarray | None = None) -> np.ndarray:
        """Evaluations (..., k, n) -> coefficients in [0, p). ``a`` may also be lazy signed int64
        residues with |a| < LAZY_IN p (the server's unreduced sums of products): the stages then
        stay below 1.375^13 LAZY_IN p + 165 p < 800 p < 2^60, the untwisted values below 301 p.
        ``plus`` (same shape, int64, |plus| < 2^57): added to the coefficients before the one
        reduction (a small term such as t e, without a pass of its own)."""
        def one(a: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
            x = self._cyclic(a, -1, None)
            out = np.empty_like(x)
            self._lazy_mul(x, *self._untwist_lazy, self._p_full(x.shape, 1), out=out, tmp=np.empty_like(x))
            if extra is not None:
                out += extra
            return self._canonical(out, 1)
        return self._each(a, one, plus)

    def _each(self, a: np.ndarray, fn, b: np.ndarray | None = None) -> np.ndarray:
        """``fn`` on each (k, n) polynomial of a batch (with the matching one of ``b``, if given):
        one polynomial's work arrays (256 kB at n = 8,192) stay in the cache through the 13
        stages, which a batch's do not (1.4 against 2.4 ms per polynomial for a batch of 8 on
        this machine)."""
        a = np.asarray(a)
        if b is not None and np.shape(b) != a.shape:
            raise ValueError("the added polynomials must have the transformed ones' shape")
        if a.ndim == 2:
            return fn(a) if b is None else fn(a, b)
        flat = a.reshape(-1, self.k, self.n)
        flat_b = None if b is None else np.asarray(b).reshape(-1, self.k, self.n)
        out = np.empty(flat.shape, dtype=U64)
        for i in range(flat.shape[0]):
            out[i] = fn(flat[i]) if flat_b is None else fn(flat[i], flat_b[i])
        return out.reshape(a.shape)

    def polymul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Negacyclic product a b mod (X^n + 1, p_i) of coefficient arrays."""
        return self.intt(self.mul(self.ntt(a), self.ntt(b)))

    def adjoint(self, a: np.ndarray) -> np.ndarray:
        """a(X^-1) mod X^n + 1: the transpose of multiplication by a, so <chi, a s> = <a* chi, s>."""
        out = self.neg(a[..., ::-1])  # coefficient k of a* is -a_(n-k) for k >= 1
        out = np.roll(out, 1, axis=-1)
        out[..., 0] = a[..., 0]
        return out

    # ---- randomness ----------------------------------------------------------------------------
    def expand(self, seed: bytes, label: str, lead: tuple[int, ...] = ()) -> np.ndarray:
        """Uniform residues (lead..., k, n) from a public seed (AES-CTR, rejection sampling)."""
        count = int(np.prod(lead, dtype=np.int64)) if lead else 1
        prg = CounterPRG(derive_key(b"secureml/rlwe/expand", seed, label.encode()))
        out = np.empty((count, self.k, self.n), dtype=U64)
        mask = U64((1 << PRIME_BITS) - 1)
        for i, p in enumerate(self.primes):
            need, got = count * self.n, []
            while need > 0:
                w = np.frombuffer(prg.next(8 * (need + need // 64 + 16)), dtype=U64) & mask
                w = w[w < U64(p)][:need]
                got.append(w)
                need -= w.shape[0]
            out[:, i, :] = np.concatenate(got).reshape(count, self.n)
        return out.reshape(*lead, self.k, self.n)

    def cbd(self, rng: Any, shape: tuple[int, ...]) -> np.ndarray:
        """Centred binomial error, eta = CBD_ETA, as int64 (|e| <= eta): coefficient i is the
        number of ones in bits [2 eta i, 2 eta i + eta) of the stream less that in the next eta
        bits (the stream and bit order of ``rng.random_bits``). Counted on 64-bit words, not
        unpacked bits: 2 eta = 42, so 4 coefficients take 21 bytes, read as three big-endian words
        (padded to 24 bytes), each field a popcount of one or two masked words (~5x faster
        than summing unpacked bits at 65,536 coefficients)."""
        shape = tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        raw = np.frombuffer(rng.random_bytes((count * 2 * CBD_ETA + 7) // 8), dtype=np.uint8)
        if CBD_ETA != 21:  # pragma: no cover - the word layout below is for 21-bit fields
            bits = np.unpackbits(raw)[: count * 2 * CBD_ETA].reshape(*shape, 2, CBD_ETA)
            s = bits.sum(axis=-1, dtype=np.int16)
            return (s[..., 0] - s[..., 1]).astype(I64)
        groups = -(-count // 4)
        buf = np.zeros((groups, 24), dtype=np.uint8)
        flat = np.zeros(groups * 21, dtype=np.uint8)
        flat[: raw.shape[0]] = raw
        buf[:, :21] = flat.reshape(groups, 21)
        words = buf.view(">u8").astype(U64)  # (groups, 3): bit j of the 192 counted from the top
        out = np.empty((groups, 4), dtype=I64)
        for c in range(4):
            field = []
            for f in (2 * c, 2 * c + 1):
                lo, hi, ones = 21 * f, 21 * f + 21, None
                for w in range(lo // 64, (hi - 1) // 64 + 1):
                    s, e = max(lo, 64 * w) - 64 * w, min(hi, 64 * w + 64) - 64 * w
                    part = _popcount(words[:, w] & U64(((1 << (e - s)) - 1) << (64 - e)))
                    ones = part if ones is None else ones + part
                field.append(ones)
            out[:, c] = field[0].astype(I64) - field[1].astype(I64)
        return out.reshape(-1)[:count].reshape(shape)

    def ternary(self, rng: Any, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform in {-1, 0, 1} (bias 2^-63 from the reduction), int64."""
        return (rng.random_u64(shape) % U64(3)).astype(I64) - 1

    # ---- CRT -----------------------------------------------------------------------------------
    def centered(self, r: np.ndarray) -> list[int]:
        """(k, m) residues -> the m integers in (-Q/2, Q/2] (Python ints)."""
        y = self.mul(r, self.crt_inv)
        out = []
        cols = [[int(v) for v in y[i]] for i in range(self.k)]
        for vals in zip(*cols):
            x = sum(v * h for v, h in zip(vals, self.crt_hat)) % self.Q
            out.append(x - self.Q if x > self.Q // 2 else x)
        return out

    # ---- wire format: 7 bytes per residue (all < 2^50) ------------------------------------------
    @staticmethod
    def pack(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.ascontiguousarray(a, dtype="<u8").view(np.uint8).reshape(-1, 8)[:, :7])

    def unpack(self, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`pack`; raises ValueError if a residue is not below its prime."""
        full = np.zeros((raw.shape[0], 8), dtype=np.uint8)
        full[:, :7] = raw
        a = full.view("<u8").reshape(shape).astype(U64)
        if bool((a >= self.p).any()):
            raise ValueError("residue not reduced")
        return a


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Ones in each uint64 word (numpy >= 2: one ufunc; else a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POP8[np.ascontiguousarray(x).view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def _powers(bases: list[int], primes: list[int], count: int) -> np.ndarray:
    """(k, count) uint64: bases[i]^j mod primes[i] for j < count, by doubling the known prefix
    (x^(m + j) = x^m x^j): log2(count) vectorised products instead of count Python pows."""
    k = len(primes)
    p = np.array(primes, dtype=U64)[:, None]
    pinv = 1.0 / p.astype(F64)
    out = np.empty((k, max(1, count)), dtype=U64)
    out[:, 0] = 1
    m = 1
    while m < count:
        step = min(m, count - m)
        xm = np.array([pow(int(b), m, int(q)) for b, q in zip(bases, primes)], dtype=U64)[:, None]
        out[:, m:m + step] = mulmod(out[:, :step], xm, p, pinv)
        m += step
    return out[:, :count]


def mulmod(a: np.ndarray, b: np.ndarray, p: np.ndarray, pinv: np.ndarray) -> np.ndarray:
    """a b mod p for a, b < p < 2^50: float64 quotient estimate (off by at most one: relative error
    ~2^-51 of a quotient below 2^50), exact remainder in wrapping int64, two sign-mask corrections."""
    a, b = np.asarray(a), np.asarray(b)
    q = (a.astype(F64) * b.astype(F64) * pinv).astype(I64)
    pi = np.asarray(p).astype(I64)
    r = a.astype(I64, copy=False) * b.astype(I64, copy=False)
    r -= q * pi
    r += pi & (r >> 63)
    r -= pi
    r += pi & (r >> 63)
    return r.view(U64)


class Modulus:
    """The public numbers of a ring without its NTT tables (plans, parameter checks)."""

    def __init__(self, n: int = N_DEFAULT) -> None:
        self.n = n
        self.primes = _primes(n, PRIME_BITS, N_PRIMES)
        self.k = len(self.primes)
        self.Q = 1
        for p in self.primes:
            self.Q *= p


@lru_cache(maxsize=4)
def modulus(n: int = N_DEFAULT) -> Modulus:
    return Modulus(n)


@lru_cache(maxsize=4)
def ring(n: int = N_DEFAULT) -> Ring:
    """One ring per degree and process (tables take ~1 s to build at n = 8,192)."""
    return Ring(n)
