"""Digit chains (borrow and non-zero flag shares) and the one table-OT index layout."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.krr.chain import TableLayout, chain, digit_plan
from protocols.testing import run_two_party

U64 = np.uint64


def test_table_layout_server_entry_at_client_index_is_the_right_one():
    rng = np.random.default_rng(0)
    n, m = 50, 3
    for flag in (False, True):
        lay = TableLayout(m, flag)
        bs, bc = rng.integers(0, 2, n).astype(np.uint8), rng.integers(0, 2, n).astype(np.uint8)
        zs, zc = (rng.integers(0, 2, n).astype(np.uint8) for _ in range(2)) if flag else (None, None)
        digit = rng.integers(0, 1 << m, n).astype(U64)
        cand, beta, z = lay.entries(bs, zs)
        # a table whose entry records (digit, reconstructed borrow, reconstructed flag)
        entry = cand + 16 * beta + (0 if z is None else 64 * z)
        table = lay.flatten(np.broadcast_to(entry, (n, 1 << m, 2, 2 if flag else 1)))
        assert table.shape == (n, 1 << lay.bits)
        got = table[np.arange(n), lay.index(digit, bc, zc).astype(np.int64)]
        want = digit.astype(np.int64) + 16 * (bs ^ bc) + (0 if not flag else 64 * (zs ^ zc))
        assert np.array_equal(got, want)


@pytest.mark.parametrize("digit_bits", [1, 3, 4])
def test_chain_gives_shares_of_the_borrow_and_the_nonzero_flag(digit_bits):
    """D = u - rho (mod 2^W): borrow out of the low L bits, and [any bit of D above L+2 is set]."""
    rng = np.random.default_rng(digit_bits)
    n, L, W = 400, 7, 16
    D = rng.integers(0, 1 << W, n).astype(U64)
    D[:40] = 0  # edge cases: zero distance, and values with only low bits
    D[40:80] &= U64((1 << L) - 1)
    rho = rng.integers(0, 1 << W, n).astype(U64)
    u = (D + rho) & U64((1 << W) - 1)
    low, top = digit_plan(0, L, digit_bits), digit_plan(L, W, digit_bits)
    zeros = np.zeros(n, dtype=np.uint8)

    def run(p):
        x = rho if p.role == 0 else u
        beta, _ = chain(p, x, low, zeros, None)
        _, z = chain(p, x, top, beta, zeros.copy())
        return beta, z

    (b0, z0), (b1, z1) = run_two_party(run, run)
    low_mask = U64((1 << L) - 1)
    borrow = ((u & low_mask).astype(np.int64) - (rho & low_mask).astype(np.int64) < 0).astype(np.uint8)
    assert np.array_equal(b0 ^ b1, borrow)
    assert np.array_equal(z0 ^ z1, ((D >> U64(L)) != 0).astype(np.uint8))
    # each party's shares alone are balanced bits (the server's are fresh random bits)
    assert 0.35 < b1.mean() < 0.65 and 0.35 < z1.mean() < 0.65
