"""Truncation of shared fixed-point values (divide by 2^f after a product).

Two methods:

* :func:`trunc_local` -- SecureML's probabilistic local truncation (Mohassel-Zhang, S&P 2017,
  Theorem 1): party 0 computes ``x0 >> f``, party 1 computes ``-((-x1) >> f)``, no messages.
  If ``|x| < 2^l`` (as a signed ring element) then, except with probability at most
  ``2^(l+1-64)`` per element (:func:`local_failure_probability`), the result ``t`` satisfies
  ``t in {floor(x / 2^f), floor(x / 2^f) + 1}``: an error below one unit in the last place
  (``2^-f`` after decoding).  On failure the result is off by about ``2^(64-f)`` (garbage).
  Example: 16 fractional bits, products below 2^40 -> failure probability <= 2^-23 per value.
* :func:`trunc_exact` -- faithful truncation: the exact ``floor(x / 2^f)`` for ``|x| < 2^62``,
  using two secure comparisons (wrap and carry bits, :mod:`protocols.mpc.comparison`).  Costs one
  64-bit millionaires' protocol per element (LUT OTs + AND rounds) and one B2A COT per bit.

Threat model: semi-honest; ``trunc_local`` sends nothing; ``trunc_exact`` sends only messages of
the comparison and B2A sub-protocols, which are masked by fresh OT pads and triples.
"""
from __future__ import annotations

import numpy as np

from protocols.mpc.comparison import b2a, millionaire
from protocols.mpc.fixed_point import FixedPointFormat
from protocols.mpc.party import Party
from protocols.mpc.sharing import beaver_mul
from secureml.errors import DataError

U64 = np.uint64
#: trunc_exact shifts x by this public bias so that x + bias is non-negative
EXACT_BIAS_BITS = 62


def local_failure_probability(l_bits: int) -> float:
    """Per-element failure bound of :func:`trunc_local` for values with ``|x| < 2^l_bits``."""
    return float(min(1.0, 2.0 ** (l_bits + 1 - 64)))


def _check_f(f: int) -> int:
    f = int(f)
    if not 0 <= f < 63:
        raise DataError(f"truncation by {f} bits is out of range 0..62")
    return f


def trunc_local(p: Party, x: np.ndarray, f: int) -> np.ndarray:
    """SecureML probabilistic truncation of a shared value by ``f`` bits (no communication).

    Steps: party 0: ``x0 >> f`` (logical shift); party 1: ``-((-x1) >> f)``.
    Error bound and failure probability: see the module docstring.
    """
    f = _check_f(f)
    x = np.asarray(x, dtype=U64)
    if p.role == 0:
        return x >> U64(f)
    return U64(0) - ((U64(0) - x) >> U64(f))


def trunc_exact(p: Party, x: np.ndarray, f: int, provider=None) -> np.ndarray:
    """Exact ``floor(x / 2^f)`` of a shared signed value with ``|x| < 2^62``.

    Steps:
      1. party 0 adds the public bias B = 2^62, so x' = x + B lies in [0, 2^63);
      2. wrap = [x0' + x1 >= 2^64] and carry = [low_f(x0') + low_f(x1) >= 2^f], both as
         millionaires' comparisons (party 0's value > 2^k - 1 - party 1's value), batched in one
         call; XOR-shared results;
      3. B2A converts both bits to arithmetic shares;
      4. share = (x_p' >> f) + carry_p - 2^(64-f) wrap_p, and party 0 subtracts B >> f.
    Since x' = x0' + x1 - 2^64 wrap over the integers and the low parts add with carry,
    floor(x'/2^f) = (x0' >> f) + (x1 >> f) + carry - 2^(64-f) wrap exactly.
    """
    f = _check_f(f)
    x = np.ascontiguousarray(x, dtype=U64)
    shape = x.shape
    if f == 0:
        return x.copy()
    x = x.ravel()
    n = x.size
    if p.role == 0:
        x = x + U64(1 << EXACT_BIAS_BITS)
    low_mask = U64((1 << f) - 1)
    low = x & low_mask
    if p.role == 0:
        inputs = np.concatenate([x, low])
    else:
        inputs = np.concatenate([U64(2**64 - 1) - x, low_mask - low])
    bits = millionaire(p, inputs, 64, provider=provider)
    arith = b2a(p, bits)
    wrap, carry = arith[:n], arith[n:]
    out = (x >> U64(f)) + carry - wrap * U64(1 << (64 - f))
    if p.role == 0:
        out = out - U64(1 << (EXACT_BIAS_BITS - f))
    return out.reshape(shape)


def mul_fixed(
    p: Party,
    x: np.ndarray,
    y: np.ndarray,
    fmt: FixedPointFormat,
    provider=None,
    exact: bool = False,
) -> np.ndarray:
    """Fixed-point product: Beaver product then truncation by ``fmt.frac_bits``.

    ``exact=False`` uses SecureML's local truncation (error <= 1 ulp, failure probability
    ~2^(l+1-64) for |x*y| < 2^l, see :mod:`protocols.mpc.truncation`); ``exact=True`` the
    comparison-based faithful truncation (interactive, exact floor).
    """
    z = beaver_mul(p, x, y, provider)
    if exact:
        return trunc_exact(p, z, fmt.frac_bits, provider=provider)
    return trunc_local(p, z, fmt.frac_bits)
