"""Ring arithmetic mod 2^(64 n) on uint64 limb arrays (protocols.mpc.limbs), against Python ints."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import limbs
from protocols.mpc.randomness import SecureRandom

U64 = np.uint64
EDGE = [0, 1, 2**64 - 1, 2**64, 2**128 - 1]


def _values(rng, count, n):
    vals = [int.from_bytes(rng.bytes(8 * n), "little") for _ in range(count)]
    mod = 1 << (64 * n)
    return vals + [e % mod for e in EDGE] + [mod - 1, mod - 2**63]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 11])
def test_add_sub_neg_mul_small_total_match_python_ints(n):
    rng = np.random.default_rng(n)
    mod = 1 << (64 * n)
    A = _values(rng, 40, n)
    B = list(reversed(A))
    a = np.array([limbs.from_int(x, (), n) for x in A])
    b = np.array([limbs.from_int(x, (), n) for x in B])
    assert limbs.to_int(a) == A
    assert limbs.to_int(limbs.add(a, b)) == [(x + y) % mod for x, y in zip(A, B)]
    assert limbs.to_int(limbs.sub(a, b)) == [(x - y) % mod for x, y in zip(A, B)]
    assert limbs.to_int(limbs.neg(a)) == [(-x) % mod for x in A]
    small = np.concatenate([rng.integers(0, 2**41, len(A) - 3, dtype=U64), np.array([0, 2**41, 2**64 - 1], U64)])
    assert limbs.to_int(limbs.mul_small(a, small)) == [(x * int(s)) % mod for x, s in zip(A, small)]
    assert limbs.total(a) == sum(A) % mod
    assert limbs.to_int(limbs.mul(a, b)) == [(x * y) % mod for x, y in zip(A, B)]


@pytest.mark.parametrize("n", [1, 2, 4])
def test_mul_small_with_full_64_bit_multipliers(n):
    """Multipliers of every size up to 2^64 - 1 (the 32-bit halves' middle sum and the low word
    both wrap for some of these), broadcast both ways."""
    rng = np.random.default_rng(10 + n)
    mod = 1 << (64 * n)
    A = _values(rng, 30, n)
    a = np.array([limbs.from_int(x, (), n) for x in A])
    words = [int(v) for v in rng.integers(0, 2**64, 8, dtype=U64)] + [2**64 - 1, 2**63, 2**32 - 1, 2**32, 1, 0]
    b = np.array(words, dtype=U64)
    out = limbs.mul_small(a[:, None, :], b[None, :])
    assert limbs.to_int(out) == [(x * s) % mod for x in A for s in words]
    col = np.array([words[i % len(words)] for i in range(len(A))], dtype=U64)
    assert limbs.to_int(limbs.mul_small(a, col)) == [(x * int(s)) % mod for x, s in zip(A, col)]


def test_mul_small_broadcasts_a_column_against_a_table_row():
    """The tail's table shape: (N, 1, n) masks times (1, 2^m) public factors -> (N, 2^m, n)."""
    n = 4
    rng = np.random.default_rng(7)
    A = _values(rng, 5, n)
    g = np.array([3, 2**40, 12345], dtype=U64)
    a = np.array([limbs.from_int(x, (), n) for x in A])[:, None, :]
    out = limbs.mul_small(a, g[None, :])
    assert out.shape == (len(A), 3, n)
    assert limbs.to_int(out) == [(x * int(s)) % (1 << 256) for x in A for s in g]


def test_from_u128_and_signed_decode():
    hi = np.array([0, 2**64 - 1], U64)
    lo = np.array([5, 2**64 - 1], U64)
    assert limbs.to_int(limbs.from_u128((hi, lo), 3)) == [5, 2**128 - 1]
    assert limbs.to_signed_float((1 << 192) - (3 << 10), 3, 10) == -3.0
    assert limbs.to_signed_float(7 << 600, 11, 600) == 7.0


def test_uniform_between_stays_in_range_and_is_seeded():
    lo, hi = 2**70, 2**128 - 2**70
    a = limbs.uniform_between(SecureRandom(b"k" * 16), (1000,), 2, lo, hi)
    b = limbs.uniform_between(SecureRandom(b"k" * 16), (1000,), 2, lo, hi)
    assert np.array_equal(a, b)
    vals = limbs.to_int(a)
    assert all(lo <= v < hi for v in vals)
    # a narrow range forces rejections: still in range
    narrow = limbs.to_int(limbs.uniform_between(SecureRandom(b"j" * 16), (50,), 1, 2**63, 2**63 + 2**62))
    assert all(2**63 <= v < 2**63 + 2**62 for v in narrow) and len(set(narrow)) == 50
    assert limbs.limbs_for(128) == 2 and limbs.limbs_for(129) == 3


@pytest.mark.parametrize("n", [1, 3, 4])
def test_shl_is_the_product_by_a_power_of_two(n):
    rng = np.random.default_rng(20 + n)
    mod = 1 << (64 * n)
    A = _values(rng, 20, n)
    a = np.array([limbs.from_int(x, (), n) for x in A])
    for t in (0, 1, 40, 63, 64, 65, 128, 64 * n - 1, 64 * n, 64 * n + 5):
        assert limbs.to_int(limbs.shl(a, t)) == [(x << t) % mod for x in A]
        if t < 64:
            assert np.array_equal(limbs.shl(a, t), limbs.mul_small(a, np.full(len(A), 1 << t, dtype=U64)))


def test_shr_is_the_floor_of_the_unsigned_value():
    """The chain's local truncation (protocol 26): floor(a / 2^t) for t within a limb, across limb
    boundaries and past the top (0)."""
    a = limbs.random(SecureRandom(b"s" * 16), (200,), 4)
    vals = limbs.to_int(a)
    for t in (0, 1, 40, 63, 64, 65, 127, 130, 255, 256, 300):
        assert limbs.to_int(limbs.shr(a, t)) == [v >> t for v in vals], t
    top = limbs.from_int((1 << 256) - 1, (), 4)
    assert limbs.to_int(limbs.shr(top, 40)) == [(1 << 216) - 1]


def test_reduce_and_byte_sized_uniform_ranges():
    """Protocol 29's byte-sized rings: reduce is mod 2^bits (any bits up to 64 n), and
    uniform_between(bits=...) draws inside [lo, hi) <= 2^bits without rejecting almost everything."""
    a = limbs.random(SecureRandom(b"r" * 16), (300,), 4)
    vals = limbs.to_int(a)
    for bits in (0, 1, 63, 64, 65, 168, 216, 255, 256):
        assert limbs.to_int(limbs.reduce(a, bits)) == [v % (1 << bits) for v in vals], bits
    lo, hi = 2**74, 2**136 - 2**74
    got = limbs.to_int(limbs.uniform_between(SecureRandom(b"u" * 16), (2000,), 3, lo, hi, bits=136))
    assert all(lo <= v < hi for v in got)
    assert max(got) >= 2**135  # spread over the range, not just its low end
    with pytest.raises(ValueError):
        limbs.uniform_between(SecureRandom(b"u" * 16), (2,), 3, 0, 2**137, bits=136)
