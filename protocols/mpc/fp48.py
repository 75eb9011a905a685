"""Vectorised arithmetic in the prime field F_q, q = 2^48 - 59, on numpy uint64 arrays.

The largest prime below 2^48: a residue travels in 6 bytes (:func:`pack`), three quarters of
the 8-byte words of the F_p check it replaced (p = 2^64 - 59, protocols 31-33). The client-malicious Laplacian check (protocol 34,
:mod:`protocols.krr.laplacian_malicious`) uses it: its per-point relation has |e_i| < 2^35, far
inside (-q/2, q/2), so only the MAC key's and the challenge's entropy needs the field, 2^-47 each.
Products go through 16-bit limbs of one factor (each limb times a residue < 2^64, reduced with
numpy's exact uint64 %), so nothing here needs 128-bit integers. Every function takes residues in
[0, q) unless it says otherwise and returns residues in [0, q).
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

U64 = np.uint64
#: the modulus, 2^48 - 59 (prime)
P = (1 << 48) - 59
#: bytes of one residue on the wire
BYTES = 6
_P = U64(P)
_M16 = U64(0xFFFF)
_M24 = U64(0xFFFFFF)
_S16 = U64(16)


def _wrapping(f: Callable) -> Callable:
    """np.where evaluates both branches: silence numpy's overflow warning on 0-d operands (the
    branch that wraps is never the one taken)."""
    @functools.wraps(f)
    def g(*a, **kw):
        with np.errstate(over="ignore"):
            return f(*a, **kw)
    return g


def _shl16(a: np.ndarray) -> np.ndarray:
    """(a 2^16) mod q for residues a (< 2^48, so a 2^16 < 2^64: exact)."""
    return (a << _S16) % _P


def reduce(a: np.ndarray) -> np.ndarray:
    """Any uint64 -> a mod q."""
    return np.asarray(a, dtype=U64) % _P


def reduce128(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Any 128-bit value hi 2^64 + lo -> its residue mod q: 2^64 = 59 2^16 (mod q), so
    hi 2^64 = ((hi mod q) 59 mod q) 2^16, each step below 2^64."""
    h = (np.asarray(hi, dtype=U64) % _P) * U64(59) % _P  # < 2^54 before the %
    return (_shl16(h) + np.asarray(lo, dtype=U64) % _P) % _P  # a sum of two residues < 2^49


_M48 = U64((1 << 48) - 1)
_C64 = U64(59 << 16)  # 2^64 mod q


def _fold(a: np.ndarray) -> np.ndarray:
    """a < 2^64 -> a value = a (mod q) below 2^48 + 2^22: 2^48 = 59 (mod q)."""
    return (a >> U64(48)) * U64(59) + (a & _M48)


def fold_inplace(a: np.ndarray, tmp: np.ndarray) -> None:
    """:func:`_fold` in place: a <- a value = a (mod q) below 2^48 + 59 (a >> 48), with ``tmp`` a
    scratch array of a's shape (no fresh temporaries on large tables)."""
    np.right_shift(a, U64(48), out=tmp)
    tmp *= U64(59)
    a &= _M48
    a += tmp


def reduce128_short(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """:func:`reduce128` for hi < 2^40 with shifts instead of divisions (numpy's uint64 % costs
    several times a shift): hi 2^64 + lo = hi 59 2^16 + lo (mod q), hi 59 2^16 < 2^62, and three
    folds bring the sum below 2^48 + 2^7, then one conditional subtraction. For step 5's tables
    (protocols.krr.laplacian_malicious.mac_word_tables: hi < 2^13 at N = 2^14, B = 15)."""
    t = _fold(np.asarray(lo, dtype=U64)) + np.asarray(hi, dtype=U64) * _C64  # < 2^49 + 2^62
    t = _fold(_fold(t))  # < 2^48 + 2^22, then < 2^48 + 2^7
    return np.where(t >= _P, t - _P, t)


@_wrapping
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) mod q for residues (the sum is below 2^49: no wrap)."""
    s = np.asarray(a, dtype=U64) + np.asarray(b, dtype=U64)
    return np.where(s >= _P, s - _P, s)


@_wrapping
def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) mod q for residues."""
    a = np.asarray(a, dtype=U64)
    b = np.asarray(b, dtype=U64)
    return np.where(a >= b, a - b, a + (_P - b))


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a b) mod q for any uint64 a, b (both reduced first): Horner over a's three 16-bit limbs,
    each limb times b below 2^64."""
    a = reduce(a)
    b = reduce(b)
    r = ((a >> U64(32)) * b) % _P
    r = (_shl16(r) + ((a >> _S16) & _M16) * b % _P) % _P
    return (_shl16(r) + (a & _M16) * b % _P) % _P


def total(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Sum mod q along ``axis`` of any uint64 values (up to 2^40 terms): the 24-bit low parts and
    the 40-bit high parts are summed exactly in uint64, then recombined mod q."""
    a = np.asarray(a, dtype=U64)
    s_lo = np.sum(a & _M24, axis=axis, dtype=U64) % _P
    s_hi = np.sum(a >> U64(24), axis=axis, dtype=U64) % _P
    hi = (((s_hi << U64(8)) % _P) << _S16) % _P  # s_hi 2^24 mod q, in two exact shifts
    return (hi + s_lo) % _P


def uniform(rng, n: int) -> np.ndarray:
    """n residues exactly uniform in [0, q): the top 48 bits of 64-bit draws, the 59 values >= q
    redrawn."""
    x = rng.random_u64(n) >> _S16
    while True:
        bad = np.flatnonzero(x >= _P)
        if bad.size == 0:
            return x
        x[bad] = rng.random_u64(bad.size) >> _S16


def from_wide(w: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A uniform 128-bit (hi, lo) word (a hash output) -> a residue within statistical distance
    q / 2^128 < 2^-80 of uniform on F_q."""
    return reduce128(w[0], w[1])


def pack(a: np.ndarray) -> np.ndarray:
    """Residues (n,) -> (n, 6) uint8, little-endian: what travels."""
    return np.ascontiguousarray(np.ascontiguousarray(a, dtype="<u8").view(np.uint8).reshape(-1, 8)[:, :BYTES])


def unpack(b: np.ndarray) -> np.ndarray:
    """(n, 6) uint8 -> (n,) uint64 (not checked against q: the caller refuses values >= q)."""
    b = np.asarray(b, dtype=np.uint8).reshape(-1, BYTES)
    out = np.zeros((b.shape[0], 8), dtype=np.uint8)
    out[:, :BYTES] = b
    return out.view("<u8").reshape(-1).astype(U64)


__all__ = ["P", "BYTES", "reduce", "reduce128", "reduce128_short", "add", "sub", "mul", "total", "uniform", "from_wide", "pack", "unpack"]
