"""Gilboa OT-based products: correctness vs plaintext, signed inputs, chunking, traffic, privacy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from protocols.mpc.gilboa import (
    bit_groups,
    gilboa_mul,
    inner_product,
    matvec,
)
from protocols.testing import run_two_party, transcript_arrays
from secureml.errors import DataError, ProtocolError

U64 = np.uint64


def _rand(rng: np.random.Generator, shape, bits: int = 64) -> np.ndarray:
    u = rng.integers(0, 2**64, size=shape, dtype=U64)
    return u if bits == 64 else u & U64((1 << bits) - 1)


def _signed(rng: np.random.Generator, shape, bits: int) -> np.ndarray:
    return rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape).astype(np.int64).view(U64)


def test_bit_groups_cover_all_bits_with_enough_width() -> None:
    for y_bits in (1, 7, 8, 9, 24, 63, 64):
        groups = bit_groups(y_bits)
        covered = [i for a, b, _ in groups for i in range(a, b)]
        assert covered == list(range(y_bits))
        for a, b, bits in groups:
            assert all(bits >= 64 - i and (bits + 7) // 8 == (64 - i + 7) // 8 for i in range(a, b))


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 200), y_bits=st.integers(1, 64), signed=st.booleans(), seed=st.integers(0, 2**31))
def test_mul_public_private_matches_plaintext(n: int, y_bits: int, signed: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = _rand(rng, n)
    y = _signed(rng, n, y_bits) if signed else _rand(rng, n, y_bits)
    s0, s1 = run_two_party(
        lambda p: gilboa_mul(p, 1, x=x, y_bits=y_bits, signed=signed),
        lambda p: gilboa_mul(p, 1, y=y, y_bits=y_bits, signed=signed),
        seed=seed,
    )
    assert np.array_equal(s0 + s1, x * y)


@settings(max_examples=5, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 20),
    y_bits=st.sampled_from([1, 5, 9, 17, 24, 64]),
    chunk=st.integers(1, 7),
    signed=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matvec_matches_plaintext(n: int, d: int, y_bits: int, chunk: int, signed: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = _rand(rng, (n, d))
    y = _signed(rng, d, y_bits) if signed else _rand(rng, d, y_bits)
    s0, s1 = run_two_party(
        lambda p: matvec(p, 1, X=X, y_bits=y_bits, chunk_cols=chunk, signed=signed),
        lambda p: matvec(p, 1, y=y, y_bits=y_bits, n=n, chunk_cols=chunk, signed=signed),
    )
    assert s0.shape == s1.shape == (n,)
    assert np.array_equal(s0 + s1, X @ y)


def test_matvec_fixed_point_kernel_use() -> None:
    """The KRR use: signed fixed-point matrix times a signed fixed-point query, then decode."""
    from protocols.mpc.fixed_point import FixedPointFormat

    fmt = FixedPointFormat(frac_bits=12)
    rng = np.random.default_rng(4)
    Xf = rng.uniform(-80, 80, size=(30, 12))
    qf = rng.uniform(-80, 80, size=12)
    X, q = fmt.encode(Xf), fmt.encode(qf)
    s0, s1 = run_two_party(
        lambda p: matvec(p, 1, X=X, y_bits=20, signed=True),
        lambda p: matvec(p, 1, y=q, y_bits=20, n=30, signed=True),
    )
    got = fmt.decode(s0 + s1, frac_bits=24)
    assert np.allclose(got, Xf @ qf, atol=12 * 80 * 2 * 2.0**-13)


def test_inner_product_and_empty_inputs() -> None:
    rng = np.random.default_rng(2)
    x, y = _rand(rng, 77), _rand(rng, 77, 30)
    (a0, e0, m0), (a1, e1, m1) = run_two_party(
        lambda p: (
            inner_product(p, 1, x=x, y_bits=30),
            gilboa_mul(p, 1, x=x[:0], y_bits=30),
            matvec(p, 1, X=np.zeros((0, 3), U64), y_bits=8),
        ),
        lambda p: (
            inner_product(p, 1, y=y, y_bits=30),
            gilboa_mul(p, 1, y=y[:0], y_bits=30),
            matvec(p, 1, y=np.zeros(3, U64), y_bits=8, n=0),
        ),
    )
    assert (np.array([a0]) + np.array([a1]))[0] == (x * y).sum(dtype=U64)
    assert e0.shape == e1.shape == (0,) and m0.shape == m1.shape == (0,)


def test_mismatched_calls_raise_protocol_error() -> None:
    X = np.ones((4, 3), dtype=U64)
    with pytest.raises(ProtocolError, match="peer runs"):
        run_two_party(
            lambda p: matvec(p, 1, X=X, y_bits=8),
            lambda p: matvec(p, 1, y=np.ones(3, U64), y_bits=8, n=5),  # wrong n
            timeout=10,
        )
    with pytest.raises(ProtocolError, match="peer runs"):
        run_two_party(
            lambda p: matvec(p, 1, X=X, y_bits=8, chunk_cols=1),
            lambda p: matvec(p, 1, y=np.ones(3, U64), y_bits=8, n=4, chunk_cols=2),
            timeout=10,
        )


def test_receiver_input_out_of_range_fails_fast() -> None:
    with pytest.raises(DataError, match="does not fit in 8"):
        run_two_party(
            lambda p: gilboa_mul(p, 1, x=np.ones(3, U64), y_bits=8),
            lambda p: gilboa_mul(p, 1, y=np.array([1, 2, 256], U64), y_bits=8),
            timeout=10,
        )
    with pytest.raises(DataError, match="signed"):
        run_two_party(
            lambda p: gilboa_mul(p, 1, x=np.ones(1, U64), y_bits=8, signed=True),
            lambda p: gilboa_mul(p, 1, y=np.array([128], U64), y_bits=8, signed=True),
            timeout=10,
        )


def test_traffic_matches_theory() -> None:
    n, y_bits = 4096, 64
    rng = np.random.default_rng(5)
    res = run_two_party(
        lambda p: (p.setup_ot(), gilboa_mul(p, 1, x=_rand(rng, n), y_bits=y_bits)),
        lambda p: (p.setup_ot(), gilboa_mul(p, 1, y=_rand(rng, n), y_bits=y_bits)),
    )
    c0, c1 = res.parties[0].ch, res.parties[1].ch
    # measure only the product: subtract the base-OT set-up measured separately
    setup = run_two_party(lambda p: p.setup_ot(), lambda p: p.setup_ot())
    base = setup.parties[0].ch.bytes_sent + setup.parties[1].ch.bytes_sent
    used = c0.bytes_sent + c1.bytes_sent - base
    theory = n * y_bits * 16 + n * sum((64 - i + 7) // 8 for i in range(y_bits))
    assert theory <= used <= 1.01 * theory


def test_receiver_view_independent_of_sender_secret() -> None:
    """What the receiver gets (COT corrections) for x = 0 and x = a fixed large value: same
    distribution (KS on the top 32 bits of the full-width corrections), and x never appears."""
    n = 3000
    y = np.full(n, 0b1011, dtype=U64)
    secret = U64(0x0123456789ABCDEF)

    def view(x: np.ndarray, seed: int) -> np.ndarray:
        res = run_two_party(
            lambda p: gilboa_mul(p, 1, x=x, y_bits=4),
            lambda p: gilboa_mul(p, 1, y=y, y_bits=4),
            record=True, seed=seed,
        )
        arrs = [a for a in transcript_arrays(res.parties[0].ch.transcript) if a.dtype == U64]
        return np.concatenate([a.ravel() for a in arrs])

    va = view(np.zeros(n, dtype=U64), 1)
    vb = view(np.full(n, secret, dtype=U64), 2)
    assert va.size == vb.size == 4 * n
    ks = stats.ks_2samp((va >> U64(32)).astype(float), (vb >> U64(32)).astype(float))
    assert ks.pvalue > 1e-3
    assert not np.any(vb == secret)


def test_sender_view_independent_of_receiver_choices() -> None:
    """The sender receives only IKNP u-matrices: byte histograms for y = 0 and y = all-ones agree."""
    n = 2048

    def view(y: np.ndarray, seed: int) -> np.ndarray:
        res = run_two_party(
            lambda p: gilboa_mul(p, 1, x=np.full(n, 7, U64), y_bits=8),
            lambda p: gilboa_mul(p, 1, y=y, y_bits=8),
            record=True, seed=seed,
        )
        arrs = transcript_arrays(res.parties[1].ch.transcript)
        return np.concatenate([a.ravel() for a in arrs if a.dtype == np.uint8 and a.ndim == 2])

    va = view(np.zeros(n, U64), 3)
    vb = view(np.full(n, 255, U64), 4)
    table = np.stack([np.bincount(va, minlength=256), np.bincount(vb, minlength=256)])
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_shares_are_uniform() -> None:
    n = 4000
    x = np.full(n, 3, U64)
    y = np.full(n, 5, U64)
    s0, s1 = run_two_party(
        lambda p: gilboa_mul(p, 1, x=x, y_bits=3),
        lambda p: gilboa_mul(p, 1, y=y, y_bits=3),
        seed=5,
    )
    assert np.array_equal(s0 + s1, x * y)
    for s in (s0, s1):
        assert stats.chisquare(np.bincount((s >> U64(60)).astype(int), minlength=16)).pvalue > 1e-4


def test_mul_and_dot_shared_private() -> None:
    from protocols.mpc.gilboa import dot_shared_private, mul_shared_private

    rng = np.random.default_rng(8)
    x = _rand(rng, 90)
    r = _rand(rng, 90)
    xs = (r, x - r)
    y = _signed(rng, 90, 33)
    for holder in (0, 1):
        (m0, d0), (m1, d1) = run_two_party(
            lambda p: (
                mul_shared_private(p, xs[p.role], holder, y if p.role == holder else None, 33, signed=True),
                dot_shared_private(p, xs[p.role], holder, y if p.role == holder else None, 33, signed=True),
            ),
            lambda p: (
                mul_shared_private(p, xs[p.role], holder, y if p.role == holder else None, 33, signed=True),
                dot_shared_private(p, xs[p.role], holder, y if p.role == holder else None, 33, signed=True),
            ),
        )
        assert np.array_equal(m0 + m1, x * y)
        assert (d0 + d1)[0] == (x * y).sum(dtype=U64)


def test_precomputed_ots_give_same_products_and_cheaper_online() -> None:
    rng = np.random.default_rng(12)
    n, d, bits = 64, 10, 12
    X, y = _rand(rng, (n, d)), _rand(rng, d, bits)

    def run(pre: bool):
        def f0(p):
            p.setup_ot()
            if pre:
                p.precompute_ot(d * bits, 0)
            m = p.ch.bytes_sent + p.ch.bytes_received
            return matvec(p, 1, X=X, y_bits=bits), p.ch.bytes_sent + p.ch.bytes_received - m

        def f1(p):
            p.setup_ot()
            if pre:
                p.precompute_ot(d * bits, 0)
            return matvec(p, 1, y=y, y_bits=bits, n=n)

        return run_two_party(f0, f1)

    (s0, online_pre), s1 = run(True)
    assert np.array_equal(s0 + s1, X @ y)
    (_, online_plain), _ = run(False)
    assert online_pre < online_plain - d * bits * 15  # IKNP columns (16 B/OT) moved offline
