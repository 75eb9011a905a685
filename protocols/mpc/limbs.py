"""Vectorised arithmetic modulo 2^(64 n) on numpy arrays of n little-endian uint64 limbs.

The client-malicious kernel tail (:mod:`protocols.krr.gaussian_malicious`, steps 10-13) runs a
masked chain of K public factors of ~2^40 each on a product that starts at ~2^75: its ring needs
hundreds of bits, more than :mod:`protocols.mpc.u128` holds. A value is an array of shape
(..., n), limb 0 the least significant; every function works elementwise over the leading axes
and wraps modulo 2^(64 n) like the ring it models. Only what the tail needs: add, sub, neg, a
product by a small public integer per element (< 2^64; the tail's factors are < 2^41), the full
product of two limb arrays (:func:`mul`: the client's A~_0 B~_0 + A~_1 B~_1 of step 10's rank-2
split, protocol 25), sums, a floor shift right of the unsigned value (:func:`shr`: the chain's
local truncation, protocol 26), and conversion to and from Python integers and the (hi, lo) pairs
of :mod:`protocols.mpc.u128`.
"""
from __future__ import annotations

import numpy as np

from protocols.mpc import u128

U64 = np.uint64
MASK32 = U64(0xFFFFFFFF)


def limbs_for(bits: int) -> int:
    """Limbs of the smallest ring 2^(64 n) with at least ``bits`` bits."""
    return max(1, -(-bits // 64))


def zeros(shape: tuple[int, ...], n: int) -> np.ndarray:
    """The value 0, shape (..., n)."""
    return np.zeros(tuple(shape) + (n,), dtype=U64)


def from_int(x: int, shape: tuple[int, ...], n: int) -> np.ndarray:
    """A Python int (taken mod 2^(64 n)) broadcast to shape (..., n)."""
    x %= 1 << (64 * n)
    out = zeros(shape, n)
    for j in range(n):
        out[..., j] = U64((x >> (64 * j)) & 0xFFFFFFFFFFFFFFFF)
    return out


def from_u128(a: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """A (hi, lo) pair read as an integer in [0, 2^128), zero-extended to n >= 2 limbs."""
    out = zeros(np.shape(a[1]), n)
    out[..., 0], out[..., 1] = a[1], a[0]
    return out


def to_int(a: np.ndarray) -> list[int]:
    """Flat list of Python ints (in [0, 2^(64 n)))."""
    n = a.shape[-1]
    flat = np.asarray(a).reshape(-1, n)
    return [sum(int(row[j]) << (64 * j) for j in range(n)) for row in flat]


def shr(a: np.ndarray, t: int) -> np.ndarray:
    """floor(a / 2^t) of the unsigned value a in [0, 2^(64 n)), 0 <= t: the top bits fill with 0."""
    n = a.shape[-1]
    q, r = divmod(int(t), 64)
    out = zeros(a.shape[:-1], n)
    if q >= n:
        return out
    src = a[..., q:]
    if r == 0:
        out[..., :n - q] = src
        return out
    out[..., :n - q] = src >> U64(r)
    # the low bits of limb j + 1 move into the top of limb j
    out[..., :n - q - 1] |= src[..., 1:] << U64(64 - r)
    return out


def shl(a: np.ndarray, t: int) -> np.ndarray:
    """(a * 2^t) mod 2^(64 n), 0 <= t: the product by a power of two as limb shifts."""
    n = a.shape[-1]
    q, r = divmod(int(t), 64)
    out = zeros(a.shape[:-1], n)
    if q >= n:
        return out
    if r == 0:
        out[..., q:] = a[..., :n - q]
        return out
    out[..., q:] = a[..., :n - q] << U64(r)
    # the high bits of limb j move into the bottom of limb j + 1
    out[..., q + 1:] |= a[..., :n - q - 1] >> U64(64 - r)
    return out


def random(rng, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Uniform in Z_2^(64 n) from a generator with ``random_u64(count)`` (the parties' rng)."""
    count = int(np.prod(shape, dtype=np.int64)) * n
    return np.asarray(rng.random_u64(count), dtype=U64).reshape(tuple(shape) + (n,))


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) mod 2^(64 n); broadcasts over the leading axes."""
    a, b = np.broadcast_arrays(a, b)
    n = a.shape[-1]
    out = np.empty(a.shape, dtype=U64)
    carry = None  # bool: the previous limb's sum wrapped
    for j in range(n):
        s = np.add(a[..., j], b[..., j], out=out[..., j])
        if j == n - 1:  # the top limb's carry leaves the ring
            if carry is not None:
                s += carry
            break
        c = s < a[..., j]
        if carry is not None:
            s += carry
            c |= s < carry  # s + 1 wrapped to 0
        carry = c
    return out


def neg(a: np.ndarray) -> np.ndarray:
    """(-a) mod 2^(64 n): invert every limb and add one."""
    one = zeros(a.shape[:-1], a.shape[-1])
    one[..., 0] = 1
    return add(~a, one)


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) mod 2^(64 n)."""
    return add(a, neg(b))


def mul_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b) mod 2^(64 n) for a uint64 array b broadcasting against a's leading axes: every
    limb times b as a 128-bit product from 32-bit halves (b's split once), the high word carried
    into the next limb (not formed for the top limb, whose high word leaves the ring)."""
    b = np.asarray(b, dtype=U64)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape)
    n = a.shape[-1]
    out = np.empty(shape + (n,), dtype=U64)
    b0, b1 = b & MASK32, b >> U64(32)
    carry = None  # high word of the previous limb's product, plus its carry
    for j in range(n):
        aj = a[..., j]
        a0, a1 = aj & MASK32, aj >> U64(32)
        lo = np.multiply(a0, b0, out=np.empty(shape, dtype=U64))
        mid = np.multiply(a0, b1, out=np.empty(shape, dtype=U64))
        x = np.multiply(a1, b0, out=np.empty(shape, dtype=U64))
        mid += x
        if j < n - 1:
            hi = np.multiply(a1, b1, out=np.empty(shape, dtype=U64))
            hi += (mid < x).astype(U64) << U64(32)  # the middle sum wrapped past 2^64
        np.left_shift(mid, U64(32), out=x)
        lo += x
        if j < n - 1:
            hi += lo < x  # lo wrapped
            mid >>= U64(32)
            hi += mid
        if carry is not None:
            lo += carry
            if j < n - 1:
                hi += lo < carry  # hi <= 2^64 - 2 for a 64 x 64-bit product: never wraps
        out[..., j] = lo
        carry = hi if j < n - 1 else None
    return out


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b) mod 2^(64 n) for two limb arrays (broadcasting over the leading axes): schoolbook,
    b times each limb of a (:func:`mul_small`), shifted by that limb's position."""
    a, b = np.broadcast_arrays(a, b)
    n = a.shape[-1]
    out = np.zeros(a.shape, dtype=U64)
    for i in range(n):
        part = mul_small(b[..., : n - i], a[..., i])  # only the limbs that land below 2^(64 n)
        shifted = np.zeros(a.shape, dtype=U64)
        shifted[..., i:] = part
        out = add(out, shifted)
    return out


def total(a: np.ndarray) -> int:
    """Sum of all elements modulo 2^(64 n) as a Python int (32-bit halves summed in uint64:
    exact up to 2^32 terms)."""
    n = a.shape[-1]
    flat = np.asarray(a).reshape(-1, n)
    s = 0
    for j in range(n):
        lo = int(np.sum(flat[:, j] & MASK32, dtype=U64))
        hi = int(np.sum(flat[:, j] >> U64(32), dtype=U64))
        s += (lo + (hi << 32)) << (64 * j)
    return s % (1 << (64 * n))


def reduce(a: np.ndarray, bits: int) -> np.ndarray:
    """a mod 2^bits (bits <= 64 n): the limbs above cleared, the top one masked (a copy)."""
    out = np.array(a, dtype=U64, copy=True)
    q, r = divmod(int(bits), 64)
    if q < out.shape[-1]:
        out[..., q] &= U64((1 << r) - 1)
        out[..., q + 1:] = 0
    return out


def uniform_between(rng, shape: tuple[int, ...], n: int, lo: int, hi: int, bits: int | None = None) -> np.ndarray:
    """Uniform on [lo, hi) inside Z_2^(64 n), by rejection from uniform ring elements (the
    rejected share is (2^(64 n) - (hi - lo)) / 2^(64 n); the tail uses hi - lo = 2^(64 n) - 2^(l+1),
    a rejection probability of 2^(l + 1 - 64 n)). ``bits``: draw the candidates mod 2^bits
    instead (hi <= 2^bits; the rejected share is then (2^bits - (hi - lo)) / 2^bits)."""
    top = 64 * n if bits is None else bits
    if not 0 <= lo < hi <= 1 << top or top > 64 * n:
        raise ValueError("need 0 <= lo < hi <= 2^bits <= 2^(64 n)")

    def draw(sh):
        r = random(rng, sh, n)
        return r if bits is None else reduce(r, bits)

    out = draw(shape)
    flat = out.reshape(-1, n)
    lo_l, hi_l = from_int(lo, (), n), from_int(hi - 1, (), n)
    while True:
        bad = _less(flat, lo_l) | _less(hi_l, flat)
        k = int(bad.sum())
        if not k:
            return out
        flat[bad] = draw((k,))


def _less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a < b as unsigned integers (broadcasting), compared from the top limb down."""
    a, b = np.broadcast_arrays(a, b)
    lt = np.zeros(a.shape[:-1], dtype=bool)
    eq = np.ones(a.shape[:-1], dtype=bool)
    for j in range(a.shape[-1] - 1, -1, -1):
        lt |= eq & (a[..., j] < b[..., j])
        eq &= a[..., j] == b[..., j]
    return lt


def to_signed_float(x: int, n: int, scale_bits: int) -> float:
    """Decode a two's-complement fixed-point integer of Z_2^(64 n) at scale 2^scale_bits."""
    mod = 1 << (64 * n)
    x %= mod
    if x >= mod // 2:
        x -= mod
    return x / (1 << scale_bits)  # int / int: correctly rounded however wide x is


__all__ = ["limbs_for", "zeros", "from_int", "from_u128", "to_int", "random", "add", "neg", "sub", "mul_small", "mul",
           "total", "uniform_between", "to_signed_float", "reduce"]
