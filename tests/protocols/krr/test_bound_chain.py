"""The bound comparison chain's server tables (protocols.krr.bound_chain): the XOR histograms and the
check words g_kj(v) against a direct per-element computation."""
from __future__ import annotations

import numpy as np

from protocols.krr import bound_chain as bc
from protocols.mpc import gf2_auth as g2

U64 = np.uint64


def _xor_sum_gf(chi: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """XOR over the rows where bits = 1 of chi (..., 3): the GF(2^16) sum, slot-wise."""
    sel = np.where(bits[..., None].astype(bool), chi, np.uint16(0))
    return np.bitwise_xor.reduce(sel, axis=-2)


def test_xor_histogram_matches_a_direct_sum():
    rng = np.random.default_rng(1)
    d, N, m = 5, 300, 3
    dig = rng.integers(0, 1 << m, (d, N))
    dig[2] = 7  # one column with a single value: every other run empty
    vals = rng.integers(0, 2**48, (d, N), dtype=U64)
    H = bc.xor_histogram(dig, m, vals)
    for j in range(d):
        for t in range(1 << m):
            want = np.bitwise_xor.reduce(vals[j][dig[j] == t]) if (dig[j] == t).any() else 0
            assert int(H[j, t]) == int(want)


def test_check_words_match_the_tables_the_client_opens():
    rng = np.random.default_rng(2)
    d, N, m = 4, 200, 3
    dig = rng.integers(0, 1 << m, (d, N))
    chi = rng.integers(0, 1 << 16, (d, N, 3), dtype=np.uint16)
    gamma = rng.integers(1, 1 << 16, 3, dtype=np.uint16)
    r = rng.integers(0, 2, (d, N), dtype=np.uint8)
    c_s = rng.integers(0, 2, (d, N), dtype=np.uint8)
    delta = rng.integers(0, 2, (d, N), dtype=np.uint8)
    g0 = bc.check_words(dig, m, chi, gamma, r)
    g = bc.check_words(dig, m, chi, gamma, r, c_s, delta)
    for v in range(1 << m):
        lt = (dig < v).astype(np.uint8)
        eq = (dig == v).astype(np.uint8)
        assert (g0[:, v] == _xor_sum_gf(chi, lt ^ r)).all()
        A = lt ^ (eq & c_s) ^ r
        s = eq ^ delta
        want = _xor_sum_gf(chi, A) ^ g2.gf_mul(_xor_sum_gf(chi, s), gamma)
        assert (g[:, v] == want).all()


def test_rekey_keeps_the_clients_key_the_one_of_its_bit():
    rng = np.random.default_rng(3)
    m0 = rng.integers(0, 256, (4, 5, 16), dtype=np.uint8)
    m1 = rng.integers(0, 256, (4, 5, 16), dtype=np.uint8)
    c = rng.integers(0, 2, (4, 5, 1)).astype(bool)
    mine = np.where(c, m1, m0)
    r0, r1 = bc.rekey((m0, m1), 0x41)
    assert (bc.rekey(mine, 0x41) == np.where(c, r1, r0)).all()
    assert not (bc.rekey(mine, 0x42) == bc.rekey(mine, 0x41)).all()  # domains differ
