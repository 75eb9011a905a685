"""Vectorised arithmetic in the prime field F_p, p = 2^64 - 59, on numpy uint64 arrays.

The largest prime below 2^64: a residue fits one 8-byte word, half the (hi, lo) limb pair of the
Z_2^128 MACs of :mod:`protocols.mpc.authenticated` (:func:`protocols.mpc.authenticated.commit_p64`,
the client-malicious Laplacian check in :mod:`protocols.krr.laplacian_malicious`). numpy has no
128-bit integers, so a product goes through :func:`protocols.mpc.u128.mul64` (32-bit limbs) and is
folded back with 2^64 = 59 (mod p). Every function takes residues in [0, p) unless it says
otherwise and returns residues in [0, p).
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from protocols.mpc import u128

U64 = np.uint64
#: the modulus, 2^64 - 59
P = (1 << 64) - 59
_P = U64(P)
_C = U64(59)  # 2^64 mod p
_M32 = U64(0xFFFFFFFF)


def _wrapping(f: Callable) -> Callable:
    """Wrap-around is the arithmetic here: silence numpy's overflow warning on 0-d operands."""
    @functools.wraps(f)
    def g(*a, **kw):
        with np.errstate(over="ignore"):
            return f(*a, **kw)
    return g


@_wrapping
def reduce(a: np.ndarray) -> np.ndarray:
    """Any uint64 -> a mod p (one conditional subtraction: a < 2^64 < 2p)."""
    a = np.asarray(a, dtype=U64)
    return np.where(a >= _P, a - _P, a)


@_wrapping
def reduce128(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Any 128-bit value hi 2^64 + lo -> its residue mod p, elementwise.

    hi 2^64 + lo = 59 hi + lo (mod p); 59 hi < 2^70 is split as t_hi 2^64 + t_lo (t_hi < 2^6),
    folded once more (59 (t_hi + carry) < 2^12) and a last carry costs one more +59."""
    hi = np.asarray(hi, dtype=U64)
    lo = np.asarray(lo, dtype=U64)
    a = (hi & _M32) * _C  # < 2^38
    b = (hi >> U64(32)) * _C  # < 2^38: 59 hi = b 2^32 + a
    t_lo = (b << U64(32)) + a
    t_hi = (b >> U64(32)) + (t_lo < a).astype(U64)
    s = lo + t_lo
    k = (t_hi + (s < lo).astype(U64)) * _C  # < 66 * 59
    s2 = s + k
    s2 = s2 + (s2 < s).astype(U64) * _C  # wrapped: s2 < 2^12 now, + 59 cannot wrap again
    return np.where(s2 >= _P, s2 - _P, s2)


@_wrapping
def reduce128_short(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """:func:`reduce128` for hi < 2^57 (59 hi < 2^63): one fold, 59 hi + lo, and a wrap past 2^64
    (then the sum is below 59 hi < 2^63, so + 59 cannot wrap again) -- half of reduce128's passes,
    for sums whose high word is known to be short (step 5's tables: hi < 2^35)."""
    t = np.asarray(hi, dtype=U64) * _C
    s = np.asarray(lo, dtype=U64) + t
    s = s + (s < t).astype(U64) * _C
    return np.where(s >= _P, s - _P, s)


@_wrapping
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) mod p for residues: a wrap past 2^64 is worth 59, and then the sum is below p."""
    a = np.asarray(a, dtype=U64)
    s = a + np.asarray(b, dtype=U64)
    s = s + (s < a).astype(U64) * _C
    return np.where(s >= _P, s - _P, s)


@_wrapping
def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) mod p for residues: a borrow (a < b) wraps by 2^64, 59 more than p."""
    a = np.asarray(a, dtype=U64)
    b = np.asarray(b, dtype=U64)
    return (a - b) - (a < b).astype(U64) * _C


@_wrapping
def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b) mod p for any uint64 a, b (reduced or not): the full 128-bit product, folded."""
    return reduce128(*u128.mul64(a, b))


@_wrapping
def total(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Sum mod p along ``axis`` of any uint64 values (up to 2^32 terms): the 32-bit halves are
    summed exactly in uint64, recombined as a 128-bit value and reduced."""
    a = np.asarray(a, dtype=U64)
    s_lo = np.sum(a & _M32, axis=axis, dtype=U64)
    s_hi = np.sum(a >> U64(32), axis=axis, dtype=U64)
    lo = (s_hi << U64(32)) + s_lo
    hi = (s_hi >> U64(32)) + (lo < s_lo).astype(U64)
    return reduce128(hi, lo)


def uniform(rng, n: int) -> np.ndarray:
    """n residues exactly uniform in [0, p): 64-bit draws, the 59 values >= p redrawn."""
    x = rng.random_u64(n)
    while True:
        bad = np.flatnonzero(x >= _P)
        if bad.size == 0:
            return x
        x[bad] = rng.random_u64(bad.size)


def from_wide(w: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A uniform 128-bit (hi, lo) word (a hash output) -> a residue within statistical distance
    p / 2^128 < 2^-64 of uniform on F_p (reducing a 64-bit word would leave 2^-58)."""
    return reduce128(w[0], w[1])


__all__ = ["P", "reduce", "reduce128", "add", "sub", "mul", "total", "uniform", "from_wide"]
