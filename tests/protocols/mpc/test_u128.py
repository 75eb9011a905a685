"""128-bit ring arithmetic on pairs of uint64 words, against Python integers."""
from __future__ import annotations

import numpy as np

from protocols.mpc import u128


def test_u128_matches_python_ints():
    rng = np.random.default_rng(1)
    a = (rng.integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(2), rng.integers(0, 2**63, 50, dtype=np.uint64))
    b = rng.integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(3)
    A = u128.to_int(a)
    got = u128.to_int(u128.mul_small(a, b))
    assert got == [(x * int(y)) % 2**128 for x, y in zip(A, b)]
    assert u128.to_int(u128.neg(a)) == [(-x) % 2**128 for x in A]
    assert u128.total(a) == sum(A) % 2**128


def test_u128_bytes_round_trip_and_trimming():
    rng = np.random.default_rng(2)
    a = (rng.integers(0, 2**63, 20, dtype=np.uint64), rng.integers(0, 2**63, 20, dtype=np.uint64))
    full = u128.to_int(a)
    for nb in (16, 9, 3):
        back = u128.to_int(u128.from_bytes(u128.to_bytes(a, nb), nb))
        assert back == [x % 2 ** (8 * nb) for x in full]
    assert u128.to_int(u128.mask_bits(a, 70)) == [x % 2**70 for x in full]
