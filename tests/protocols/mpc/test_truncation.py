"""Truncation of shared fixed-point values and the fixed-point product built on it."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc.fixed_point import FixedPointFormat
from protocols.mpc.truncation import local_failure_probability, mul_fixed, trunc_local
from protocols.testing import run_two_party, dealer_provider

U64 = np.uint64
FMT = FixedPointFormat(frac_bits=16)


def _split(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = rng.integers(0, 2**64, size=x.shape, dtype=U64)
    return r, x - r


class _P:
    """Stand-in for the role of a party in purely local operations."""

    def __init__(self, role: int) -> None:
        self.role = role


@pytest.mark.parametrize("exact", [False, True])
def test_mul_fixed_within_documented_error(exact: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-200, 200, size=300)
    y = rng.uniform(-200, 200, size=300)
    xs, ys = _split(FMT.encode(x), rng), _split(FMT.encode(y), rng)

    def party(p):
        return mul_fixed(p, xs[p.role], ys[p.role], FMT, exact=exact)

    z0, z1 = run_two_party(party, party, provider=dealer_provider(5) if not exact else None)
    got = FMT.decode(z0 + z1)
    ex, ey = FMT.decode(FMT.encode(x)), FMT.decode(FMT.encode(y))
    exact_prod = ex * ey
    ulp = FMT.resolution
    if exact:
        # floor: -1 ulp < got - x*y <= 0
        assert np.all(got - exact_prod <= 1e-9) and np.all(got - exact_prod > -ulp - 1e-9)
    else:
        # SecureML: floor or floor + 1 -> within one ulp
        assert np.all(np.abs(got - exact_prod) < ulp + 1e-9)


def test_trunc_local_error_and_failure_bound() -> None:
    # values with |x| < 2^40: failures should be (much) rarer than the bound 2^-23 per value
    rng = np.random.default_rng(11)
    n = 20000
    x = rng.integers(-(2**40), 2**40, size=n).astype(np.int64).view(U64)
    xs = _split(x, rng)
    f = 16
    t0 = trunc_local(_P(0), xs[0], f)
    t1 = trunc_local(_P(1), xs[1], f)
    got = (t0 + t1).view(np.int64)
    floor = x.view(np.int64) >> f
    assert np.all((got == floor) | (got == floor + 1))
    assert local_failure_probability(40) == 2.0**-23
    # a value near 2^63 fails with constant probability: the bound is not vacuous
    big = np.full(4000, 2**62, dtype=U64)
    b0, b1 = _split(big, rng)
    bad = ((trunc_local(_P(0), b0, f) + trunc_local(_P(1), b1, f)).view(np.int64) - (2**62 >> f))
    assert np.mean(np.abs(bad) > 1) > 0.1
