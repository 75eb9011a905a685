"""Numpy arithmetic in R_Q = Z_Q[X]/(X^n + 1), Q a product of four ~50-bit NTT primes.

Used by the client-malicious lattice cross term (:mod:`protocols.mpc.he_matvec_checked`) and its
well-formedness proof (:mod:`protocols.mpc.bfv_proof`), which need every polynomial as numpy (the
proof is linear algebra over the coefficients mod each prime) -- SEAL's Python bindings cannot
hand ciphertext coefficients back to numpy in bulk, so this module does the ring arithmetic itself.

Why these parameters: n = 8,192 and log2 Q = 200 (four primes just below 2^50, p = 1 mod 2n) stay
below the 218 bits the HomomorphicEncryption.org standard allows for 128-bit security at
n = 8,192 with ternary secrets and error of standard deviation ~3.2 (no key switching is done, so
no special prime). Primes below 2^50 let a product a b mod p run in float64 + uint64 arithmetic
(:func:`mulmod`): the quotient estimate floor(a b / p) is off by at most one.

Representation: a polynomial is a (k, n) uint64 array of its residues mod each prime; leading
batch axes are allowed everywhere. :func:`ntt` evaluates at psi^(2i+1), i = 0..n-1 (psi a primitive
2n-th root of unity), in natural order, so products are pointwise.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from protocols.ot.crypto import CounterPRG, derive_key

U64, I64, F64 = np.uint64, np.int64, np.float64
N_DEFAULT = 8192
PRIME_BITS = 50
N_PRIMES = 4
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
        s = a + b
        return np.where(s >= self.p, s - self.p, s)

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(a >= b, a - b, a + self.p - b)


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
        for i in range(n):
            rev[i] = int(format(i, f"0{self.logn}b")[::-1], 2)
        self.rev = rev
        psi = [_root(p, n) for p in self.primes]
        # twist (psi^j), untwist with 1/n (psi^-j / n), and per-stage cyclic twiddles omega_{2h}^j
        self.twist = np.array([[pow(s, j, p) for j in range(n)] for s, p in zip(psi, self.primes)], dtype=U64)
        ninv = [pow(n, -1, p) for p in self.primes]
        self.untwist = np.array([[pow(s, -j, p) * ni % p for j in range(n)]
                                 for s, p, ni in zip(psi, self.primes, ninv)], dtype=U64)
        self.fwd, self.inv = [], []
        h = 1
        while h < n:
            w = [pow(s, 2 * (n // (2 * h)), p) for s, p in zip(psi, self.primes)]  # omega_{2h}
            for tab, sign in ((self.fwd, 1), (self.inv, -1)):
                wt = np.array([[pow(x, sign * j, p) for j in range(h)] for x, p in zip(w, self.primes)],
                              dtype=I64)[:, None, :]
                tab.append((wt, wt.astype(F64) / np.array(self.primes, dtype=F64)[:, None, None]))
            h *= 2
        # CRT: x = sum_i [v_i * (Q/p_i)^-1 mod p_i] * Q/p_i  (mod Q)
        self.crt_hat = [self.Q // p for p in self.primes]
        self.crt_inv = np.array([pow(self.Q // p % p, -1, p) for p in self.primes], dtype=U64)[:, None]

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
    def _cyclic(self, a: np.ndarray, tables: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Radix-2 DIT on bit-reversed input, int64 throughout (values < 2^50): each butterfly's
        product uses the twiddle's precomputed w / p (one float multiply for the quotient) and
        branch-free sign-mask corrections instead of np.where (the hot loop of the lattice path)."""
        a = np.ascontiguousarray(a[..., self.rev]).view(I64)
        lead, n, k = a.shape[:-2], self.n, self.k
        p = self.p.astype(I64)[:, :, None]
        out = np.empty_like(a)
        h = 1
        for w, wq in tables:
            x = a.reshape(*lead, k, n // (2 * h), 2, h)
            y = out.reshape(*lead, k, n // (2 * h), 2, h)
            u, v = x[..., 0, :], x[..., 1, :]
            q = (v.astype(F64) * wq).astype(I64)
            t = v * w
            t -= q * p  # exact mod 2^64; the true value lies in [-p, 2p)
            t += p & (t >> 63)
            t -= p
            t += p & (t >> 63)  # t = v w mod p
            lo, hi = y[..., 0, :], y[..., 1, :]
            np.add(u, t, out=lo)
            lo -= p
            lo += p & (lo >> 63)
            np.subtract(u, t, out=hi)
            hi += p & (hi >> 63)
            a, out = out, a
            h *= 2
        return a.view(U64)

    def ntt(self, a: np.ndarray) -> np.ndarray:
        """Coefficients (..., k, n) -> evaluations at psi^(2i+1), natural order."""
        return self._cyclic(self.mul(a, self.twist), self.fwd)

    def intt(self, a: np.ndarray) -> np.ndarray:
        return self.mul(self._cyclic(a, self.inv), self.untwist)

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
        """Centred binomial error, eta = CBD_ETA, as int64 (|e| <= eta)."""
        bits = rng.random_bits((*shape, 2 * CBD_ETA)).astype(I64)
        return bits[..., :CBD_ETA].sum(axis=-1) - bits[..., CBD_ETA:].sum(axis=-1)

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
