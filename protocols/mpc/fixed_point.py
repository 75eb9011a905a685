"""Fixed-point encoding of real numbers into the ring Z_2^64 (numpy ``uint64``).

A real ``x`` is stored as the integer ``round(x * 2^f)`` in two's complement, so that ring
addition is real addition and a ring product carries ``2f`` fractional bits (one truncation by
``f`` bits brings it back, see :mod:`protocols.mpc.truncation`).

Precision: encoding rounds to the nearest multiple of ``2^-f`` (error <= ``2^-(f+1)``); the
representable range is ``[-2^(ring_bits-1-f), 2^(ring_bits-1-f))``.  Products of two encoded
values need ``|x*y| * 2^(2f) < 2^(ring_bits-1)`` before truncation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secureml.errors import DataError

U64 = np.uint64


@dataclass(frozen=True)
class FixedPointFormat:
    """``frac_bits`` fractional bits in a ``ring_bits``-bit two's-complement ring.

    The two-party protocols in :mod:`protocols` compute modulo 2^64, so they require
    ``ring_bits == 64``; smaller rings are supported by :meth:`encode`/:meth:`decode` only.
    """

    frac_bits: int = 16
    ring_bits: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.ring_bits <= 64:
            raise DataError(f"ring_bits must be in 1..64, got {self.ring_bits}")
        if not 0 <= self.frac_bits < self.ring_bits - 1:
            raise DataError(
                f"frac_bits must be in 0..{self.ring_bits - 2}, got {self.frac_bits}"
            )

    @property
    def scale(self) -> float:
        """2^frac_bits: the integer that represents 1.0."""
        return float(2**self.frac_bits)

    @property
    def resolution(self) -> float:
        """Spacing of representable values, 2^-frac_bits."""
        return 2.0 ** -self.frac_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude that encodes without overflow (exclusive bound)."""
        return 2.0 ** (self.ring_bits - 1 - self.frac_bits)

    @property
    def mask(self) -> np.uint64:
        return U64((1 << self.ring_bits) - 1) if self.ring_bits < 64 else U64(2**64 - 1)

    def encode(self, x: np.ndarray | float, frac_bits: int | None = None) -> np.ndarray:
        """float(s) -> uint64 two's complement with ``frac_bits`` (default: the format's) bits.

        Raises :class:`DataError` on NaN/inf or a value outside the representable range.
        """
        f = self.frac_bits if frac_bits is None else int(frac_bits)
        a = np.asarray(x, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DataError("cannot encode NaN or inf as fixed point")
        scaled = np.rint(a * float(2**f))
        limit = float(2 ** (self.ring_bits - 1))
        if a.size and (scaled.max(initial=0.0) >= limit or scaled.min(initial=0.0) < -limit):
            worst = float(np.abs(a).max())
            raise DataError(
                f"value {worst:g} overflows fixed point with {f} fractional bits in a "
                f"{self.ring_bits}-bit ring (|x| must be < {2.0 ** (self.ring_bits - 1 - f):g})"
            )
        out = scaled.astype(np.int64).view(np.uint64)
        if self.ring_bits < 64:
            out = out & self.mask
        return out

    def decode(self, u: np.ndarray, frac_bits: int | None = None) -> np.ndarray:
        """uint64 ring elements -> float64 (signed, two's complement) divided by 2^frac_bits."""
        f = self.frac_bits if frac_bits is None else int(frac_bits)
        a = np.asarray(u, dtype=np.uint64)
        if self.ring_bits < 64:
            a = a & self.mask
            sign = U64(1 << (self.ring_bits - 1))
            # sign-extend: values with the top ring bit set are negative
            a = np.where(a & sign, a | ~self.mask, a)
        return a.view(np.int64).astype(np.float64) / float(2**f)


def to_signed(u: np.ndarray) -> np.ndarray:
    """View uint64 ring elements as int64 (two's complement), without copying."""
    return np.asarray(u, dtype=np.uint64).view(np.int64)


def from_signed(i: np.ndarray) -> np.ndarray:
    """int64 -> uint64 ring elements (two's complement)."""
    return np.asarray(i, dtype=np.int64).view(np.uint64)
