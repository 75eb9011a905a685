"""Vectorized arithmetic modulo 2^128 on numpy arrays of uint64 limbs.

The exact-KRR protocol multiplies three fixed-point numbers (weight x kernel factor x client
factor) whose combined scale needs ~110 bits, more than the 64-bit ring holds; numpy has no
128-bit integers, so values are kept as ``(hi, lo)`` pairs of uint64 arrays. Every function works
elementwise on arrays of any (equal) shape and wraps modulo 2^128, like the ring it models.
"""
from __future__ import annotations

import numpy as np

U64 = np.uint64
MASK32 = U64(0xFFFFFFFF)
MOD = 1 << 128


def add(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
    """(a + b) mod 2^128."""
    lo = a[1] + b[1]
    carry = (lo < a[1]).astype(U64)
    return a[0] + b[0] + carry, lo


def neg(a: tuple[np.ndarray, np.ndarray]):
    """(-a) mod 2^128 (two's complement: invert and add one)."""
    lo = ~a[1] + U64(1)
    carry = (lo == 0).astype(U64)
    return ~a[0] + carry, lo


def sub(a, b):
    """(a - b) mod 2^128."""
    return add(a, neg(b))


def mul64(a: np.ndarray, b: np.ndarray):
    """Full 128-bit product of two uint64 arrays, via 32-bit limbs (schoolbook)."""
    a = np.asarray(a, dtype=U64)
    b = np.asarray(b, dtype=U64)
    a0, a1 = a & MASK32, a >> U64(32)
    b0, b1 = b & MASK32, b >> U64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    # middle = p01 + p10 may carry into bit 64
    mid = p01 + p10
    mid_carry = (mid < p01).astype(U64)
    lo = p00 + (mid << U64(32))
    lo_carry = (lo < p00).astype(U64)
    hi = p11 + (mid >> U64(32)) + (mid_carry << U64(32)) + lo_carry
    return hi, lo


def mul_small(a: tuple[np.ndarray, np.ndarray], b: np.ndarray):
    """(a * b) mod 2^128 where b is a uint64 array (broadcasts)."""
    hi, lo = mul64(a[1], b)
    return hi + a[0] * np.asarray(b, dtype=U64), lo


def shl(a: tuple[np.ndarray, np.ndarray], k: int):
    """(a << k) mod 2^128 for a Python int 0 <= k < 128."""
    if k == 0:
        return a
    if k >= 64:
        return a[1] << U64(k - 64), np.zeros_like(a[1])
    return (a[0] << U64(k)) | (a[1] >> U64(64 - k)), a[1] << U64(k)


def mask_bits(a: tuple[np.ndarray, np.ndarray], bits: int):
    """a mod 2^bits (bits <= 128)."""
    if bits >= 128:
        return a
    if bits >= 64:
        m = U64((1 << (bits - 64)) - 1) if bits > 64 else U64(0)
        return a[0] & m, a[1]
    return np.zeros_like(a[0]), a[1] & U64((1 << bits) - 1)


def from_int(x: int, shape=()) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast a Python int (taken mod 2^128) to a limb pair of the given shape."""
    x %= MOD
    return np.full(shape, x >> 64, dtype=U64), np.full(shape, x & ((1 << 64) - 1), dtype=U64)


def from_bytes16(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpret (..., 16) uint8 pads (OT outputs) as little-endian 128-bit integers."""
    w = np.ascontiguousarray(b).view("<u8")
    return w[..., 1].copy(), w[..., 0].copy()


def total(a: tuple[np.ndarray, np.ndarray], axis=None):
    """Sum modulo 2^128 along ``axis``; returns limb pair (or a Python int when axis is None).

    Low limbs are summed as two 32-bit halves so no carry is lost (exact up to 2^32 terms).
    """
    hi, lo = a
    s_lo0 = np.sum(lo & MASK32, axis=axis, dtype=U64)
    s_lo1 = np.sum(lo >> U64(32), axis=axis, dtype=U64)
    s_hi = np.sum(hi, axis=axis, dtype=U64)
    if axis is None:
        return (int(s_lo0) + (int(s_lo1) << 32) + (int(s_hi) << 64)) % MOD
    # combine: value = s_lo0 + s_lo1 * 2^32 + s_hi * 2^64 (mod 2^128), vectorized
    part = (s_lo1 >> U64(32), s_lo1 << U64(32))
    res = add((s_hi, s_lo0), part)
    return res


def to_int(a: tuple[np.ndarray, np.ndarray]) -> list[int]:
    """Limb pair -> flat list of Python ints (for decoding a handful of results)."""
    hi = np.asarray(a[0]).ravel()
    lo = np.asarray(a[1]).ravel()
    return [(int(h) << 64) | int(l) for h, l in zip(hi, lo)]


def to_signed_float(x: int, scale_bits: int) -> float:
    """Decode a two's-complement 128-bit fixed-point integer."""
    x %= MOD
    if x >= MOD // 2:
        x -= MOD
    return x / float(1 << scale_bits)


def to_bytes(a: tuple[np.ndarray, np.ndarray], nbytes: int = 16) -> np.ndarray:
    """Serialise to (..., nbytes) uint8, keeping the low ``nbytes`` bytes (little-endian)."""
    out = np.empty(a[0].shape + (2,), dtype="<u8")
    out[..., 0] = a[1]
    out[..., 1] = a[0]
    return out.view(np.uint8).reshape(a[0].shape + (16,))[..., :nbytes]


def from_bytes(b: np.ndarray, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_bytes` (missing high bytes are zero)."""
    full = np.zeros(b.shape[:-1] + (16,), dtype=np.uint8)
    full[..., :nbytes] = b
    return from_bytes16(full)
