"""The lattice proof's prime field (protocols.mpc.fp_auth) and the ring arithmetic under it
(protocols.mpc.rlwe), against Python integers."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import fp_auth, rlwe

U64 = np.uint64




def test_ring_product_and_adjoint_match_schoolbook():
    R = rlwe.Ring(16)
    rng = np.random.default_rng(1)
    a = np.stack([rng.integers(0, p, 16, dtype=U64) for p in R.primes])
    b = np.stack([rng.integers(0, p, 16, dtype=U64) for p in R.primes])
    c = R.polymul(a, b)
    for i, p in enumerate(R.primes):
        ref = [0] * 16
        for x in range(16):
            for y in range(16):
                v = int(a[i, x]) * int(b[i, y])
                ref[(x + y) % 16] += v if x + y < 16 else -v
        assert [r % p for r in ref] == [int(v) for v in c[i]]
    # <chi, a s> = <a* chi, s>: the identity the well-formedness check rests on
    g = R.polymul(R.adjoint(a), b)
    for i, p in enumerate(R.primes):
        lhs = sum(int(b[i, j]) * int(R.polymul(a, a)[i, j]) for j in range(16)) % p
        rhs = sum(int(g[i, j]) * int(a[i, j]) for j in range(16)) % p
        assert lhs == rhs


def test_mulmod_exact_at_the_prime_size():
    R = rlwe.ring()
    rng = np.random.default_rng(2)
    a = np.stack([rng.integers(0, p, 4000, dtype=U64) for p in R.primes])
    b = np.stack([np.concatenate([rng.integers(0, p, 3998, dtype=U64), np.array([p - 1, p - 2], dtype=U64)]) for p in R.primes])
    got = R.mul(a, b)
    for i, p in enumerate(R.primes):
        assert [int(x) * int(y) % p for x, y in zip(a[i], b[i])] == [int(v) for v in got[i]]


def test_field_dot_matches_python_integers_over_many_terms():
    """The lattice proof's relations mod each prime: sums of up to 20,000 products, chunked so
    that no partial sum wraps (8192 terms below 2^50 each), against Python integers."""
    field = fp_auth.Field(rlwe.ring().primes)
    rng = np.random.default_rng(4)
    m = 20_000
    coef = np.stack([rng.integers(0, p, m, dtype=U64) for p in field.primes], axis=1)
    vals = np.stack([rng.integers(0, p, m, dtype=U64) for p in field.primes], axis=1)
    coef[:9000] = field.p - 1  # the largest products in one chunk and across chunks
    vals[:9000] = field.p - 1
    got = field.dot(coef, vals)
    for i, p in enumerate(field.primes):
        assert int(got[i]) == sum(int(c) * int(v) for c, v in zip(coef[:, i], vals[:, i])) % p


def test_field_refuses_primes_of_50_bits_or_more():
    with pytest.raises(ValueError, match="below 2\\^50"):
        fp_auth.Field([(1 << 50) + 55])
