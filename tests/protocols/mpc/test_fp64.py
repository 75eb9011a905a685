"""protocols.mpc.fp64 (F_p, p = 2^64 - 59) against Python integers, with the edge values that
exercise every carry: 0, 1, 58, 59, 2^32 +- 1, 2^63, p - 1, p .. 2^64 - 1 (unreduced inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import fp64
from protocols.mpc.randomness import SecureRandom, derive_key

U64 = np.uint64
P = fp64.P
EDGE = [0, 1, 2, 58, 59, 60, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 63) - 1, 1 << 63, P - 2, P - 1]
WIDE = EDGE + [P, P + 1, (1 << 64) - 2, (1 << 64) - 1]  # not residues: for reduce, mul, total


def _sample(rng, n, values):
    r = rng.integers(0, 1 << 64, n, dtype=np.uint64)
    e = np.array(values, dtype=U64)
    return np.concatenate([np.repeat(e, len(values)), r]), np.concatenate([np.tile(e, len(values)), r[::-1]])


def test_p_is_the_prime_2_64_minus_59():
    assert P == 2**64 - 59 and pow(3, P - 1, P) == 1 and pow(7, P - 1, P) == 1


def test_add_sub_on_residues_match_python():
    rng = np.random.default_rng(0)
    a, b = _sample(rng, 4000, EDGE)
    a, b = a % U64(P), b % U64(P)  # residues
    for f, op in ((fp64.add, lambda x, y: (x + y) % P), (fp64.sub, lambda x, y: (x - y) % P)):
        got = f(a, b)
        assert got.dtype == U64
        assert [int(g) for g in got] == [op(int(x), int(y)) for x, y in zip(a, b)]


def test_mul_reduce_reduce128_match_python_on_any_words():
    rng = np.random.default_rng(1)
    a, b = _sample(rng, 4000, WIDE)
    assert [int(g) for g in fp64.mul(a, b)] == [int(x) * int(y) % P for x, y in zip(a, b)]
    assert [int(g) for g in fp64.reduce(a)] == [int(x) % P for x in a]
    assert [int(g) for g in fp64.reduce128(a, b)] == [((int(x) << 64) + int(y)) % P for x, y in zip(a, b)]


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_total_matches_python(axis):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 1 << 64, (300, 7), dtype=np.uint64)
    a[:, 0] = U64((1 << 64) - 1)  # the widest column: every half-sum at its largest
    got = fp64.total(a, axis=axis)
    if axis is None:
        assert int(got) == sum(int(x) for x in a.ravel()) % P
    else:
        want = [sum(int(x) for x in row) % P for row in np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])]
        assert [int(g) for g in np.ravel(got)] == want


def test_uniform_is_reduced_and_seeded():
    x = fp64.uniform(SecureRandom(derive_key(5, "t")), 10000)
    y = fp64.uniform(SecureRandom(derive_key(5, "t")), 10000)
    assert (x == y).all() and (x < U64(P)).all() and len(set(x.tolist())) == 10000
    # the top bit is set about half the time (a draw of 64 bits, not fewer)
    assert 4700 < int((x >> U64(63)).sum()) < 5300


def test_uniform_redraws_the_59_values_at_or_above_p():
    class Rng:
        def __init__(self):
            self.calls = 0

        def random_u64(self, n):
            self.calls += 1
            return np.full(n, P + 3, dtype=U64) if self.calls == 1 else np.arange(n, dtype=U64)
    r = Rng()
    assert fp64.uniform(r, 4).tolist() == [0, 1, 2, 3] and r.calls == 2


def test_reduce128_short_matches_python_for_high_words_below_2_57():
    rng = np.random.default_rng(7)
    lo = np.concatenate([rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True),
                         np.array([0, 58, 59, P - 1, P, 2**64 - 1] * 3, dtype=np.uint64)])
    hi = np.concatenate([rng.integers(0, 2**57, 2000, dtype=np.uint64),
                         np.array([0] * 6 + [1] * 6 + [2**57 - 1] * 6, dtype=np.uint64)])
    got = fp64.reduce128_short(hi, lo)
    assert [int(g) for g in got] == [((int(h) << 64) + int(l)) % P for h, l in zip(hi, lo)]
