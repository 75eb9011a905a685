"""Additive sharing over Z_2^64: share/reconstruct, linear ops, Beaver products, truncation, privacy."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from protocols.mpc.fixed_point import FixedPointFormat
from protocols.mpc.sharing import (
    ArithmeticShare,
    add,
    add_public,
    beaver_mul,
    mul_public,
    neg,
    reconstruct,
    reveal_to,
    share,
    sub,
)
from protocols.testing import run_two_party, dealer_provider, transcript_arrays

U64 = np.uint64
FMT = FixedPointFormat(frac_bits=16)


def _split(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = rng.integers(0, 2**64, size=x.shape, dtype=U64)
    return r, x - r


def test_share_reconstruct_and_linear_ops() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**64, size=37, dtype=U64)
    y = rng.integers(0, 2**64, size=37, dtype=U64)
    c = U64(123456789)

    def party(p):
        xs = share(p, x if p.role == 0 else None, owner=0, shape=(37,))
        ys = share(p, y if p.role == 1 else None, owner=1)
        lin = add_public(p, sub(add(xs, mul_public(ys, c)), neg(xs)), U64(7))
        return reconstruct(p, xs), reconstruct(p, ys), reconstruct(p, lin), reveal_to(p, xs, 1)

    (x0, y0, l0, v0), (x1, y1, l1, v1) = run_two_party(party, party, seed=1)
    assert np.array_equal(x0, x) and np.array_equal(x1, x)
    assert np.array_equal(y0, y) and np.array_equal(y1, y)
    assert np.array_equal(l0, x + y * c + x + U64(7)) and np.array_equal(l1, l0)
    assert v0 is None and np.array_equal(v1, x)


def test_share_is_uniform_mask() -> None:
    # the owner's kept share is the mask; the peer's share is x - mask: both look uniform
    x = np.full(4000, 5, dtype=U64)

    def party(p):
        return share(p, x if p.role == 0 else None, owner=0)

    s0, s1 = run_two_party(party, party, seed=6)
    assert np.array_equal(s0 + s1, x)
    for s in (s0, s1):
        top = (s >> U64(60)).astype(int)  # 16 buckets
        assert stats.chisquare(np.bincount(top, minlength=16)).pvalue > 1e-4


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_beaver_mul_exact_ring(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**64, size=n, dtype=U64)
    y = rng.integers(0, 2**64, size=n, dtype=U64)
    xs, ys = _split(x, rng), _split(y, rng)

    def party(p):
        return beaver_mul(p, xs[p.role], ys[p.role])

    z0, z1 = run_two_party(party, party, provider=dealer_provider(seed))
    assert np.array_equal(z0 + z1, x * y)


def test_arithmetic_share_operators() -> None:
    x = FMT.encode(np.array([1.5, -2.0]))
    y = FMT.encode(np.array([4.0, 0.25]))

    def party(p):
        a = ArithmeticShare.from_owner(p, x if p.role == 0 else None, 0)
        b = ArithmeticShare.from_owner(p, y if p.role == 1 else None, 1)
        return ((a + b) * b - a + FMT.encode(1.0)).reconstruct()

    r0, _ = run_two_party(party, party, provider=dealer_provider())
    # exact check in the ring: (a+b)*b has 2f fraction bits, a and 1.0 have f
    expect = (x + y) * y - x + FMT.encode(1.0)
    assert np.array_equal(r0, expect)


def test_beaver_opened_values_independent_of_secret() -> None:
    """Party 1's view of a Beaver product (the opened d, e and party 0's share messages) for two
    different secrets is statistically indistinguishable (KS test on the top 32 bits)."""

    def view_for(secret: int, seed: int) -> np.ndarray:
        x = np.full(3000, secret, dtype=U64)
        y = np.full(3000, 3, dtype=U64)

        def p0(p):
            xs = share(p, x, 0)
            ys = share(p, y, 0)
            return beaver_mul(p, xs, ys)

        def p1(p):
            xs = share(p, None, 0)
            ys = share(p, None, 0)
            return beaver_mul(p, xs, ys)

        res = run_two_party(p0, p1, provider=dealer_provider(seed), record=True, seed=seed)
        # what party 1 received = what party 0 sent (frames are recorded whole on the send side)
        sent = transcript_arrays(res.parties[0].ch.transcript, "send")
        return np.concatenate([a.ravel() for a in sent])

    va = view_for(0, 1)
    vb = view_for(2**63 + 12345, 2)
    assert va.size == vb.size == 4 * 3000  # 2 shares + (d, e)
    ks = stats.ks_2samp((va >> U64(32)).astype(float), (vb >> U64(32)).astype(float))
    assert ks.pvalue > 1e-3
    # and the secret never appears in the transcript
    assert not np.any(vb == U64(2**63 + 12345))
