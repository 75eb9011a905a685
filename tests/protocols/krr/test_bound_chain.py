"""The bound comparison chain's server tables (protocols.krr.bound_chain): the XOR histograms and the
check words g_kj(v) against a direct per-element computation."""
from __future__ import annotations

import numpy as np
import pytest

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
    plan = bc.histogram_plan(dig, m)  # the server's kept plan: the same sums, dig not read again
    assert np.array_equal(bc.xor_histogram(None, m, vals, plan), H)
    assert np.array_equal(bc.check_words(None, m, vals.view(np.uint16).reshape(d, N, 4)[..., :3].copy(),
                                         np.ones(3, np.uint16), dig & 1, plan=plan),
                          bc.check_words(dig, m, vals.view(np.uint16).reshape(d, N, 4)[..., :3].copy(),
                                         np.ones(3, np.uint16), dig & 1))
    for j in range(d):
        for t in range(1 << m):
            want = np.bitwise_xor.reduce(vals[j][dig[j] == t]) if (dig[j] == t).any() else 0
            assert int(H[j, t]) == int(want)


def test_check_challenge_is_the_one_stream_per_step():
    """Step k's chi is elements k n .. (k + 1) n - 1 of the seed's stream, gamma element steps n."""
    seed = bytes(range(1, 33))
    n, steps = 1001, 4
    allv = g2.expand_chi(seed, n * steps + 1)
    ch = bc.expand_check(seed, n, steps)
    assert np.array_equal(ch.gamma, allv[n * steps])
    for k in (2, 0, 3, 1):
        assert np.array_equal(ch.chi(k), allv[k * n:(k + 1) * n])
    with pytest.raises(IndexError):
        ch.chi(steps)


def test_histogram_plans_are_kept_per_read_only_model():
    rng = np.random.default_rng(3)
    XT = rng.integers(0, 1 << 9, (3, 70), dtype=U64)
    levels = ((0, 3), (3, 6), (6, 9))
    assert bc._histogram_plans(XT, levels) is not bc._histogram_plans(XT, levels)  # writeable: made per call
    XT.flags.writeable = False
    kept = bc._histogram_plans(XT, levels)
    assert bc._histogram_plans(XT, levels) is kept
    for (a, b), plan in zip(levels, kept):
        dig = ((XT >> U64(a)) & U64(7)).astype(np.intp)
        vals = rng.integers(0, 2**48, XT.shape, dtype=U64)
        assert np.array_equal(bc.xor_histogram(None, b - a, vals, plan), bc.xor_histogram(dig, b - a, vals))


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


def test_kept_digit_tables_are_the_ones_made_per_session(monkeypatch):
    """The server's tables come from the semi-honest chain's per-model cache (column blocks) for a
    read-only XT and are made per session otherwise: the same [x < v], [x == v] either way."""
    from protocols.krr import laplacian

    monkeypatch.setattr(laplacian, "_TABLE_BYTES", 1 << 13)  # several column blocks per digit
    rng = np.random.default_rng(5)
    d, N = 30, 1000
    XT = rng.integers(0, 1 << 15, (d, N), dtype=U64)
    levels = laplacian.digit_levels(15, "silent")
    W = (N + 63) // 64
    frozen = XT.copy()
    frozen.flags.writeable = False
    cached = laplacian._server_tables(frozen, levels, W)
    assert cached is not None and len(cached[0]) > 1
    for k in range(len(levels)):
        fresh = list(bc._tables_of(XT, levels, k, None, W))
        kept = list(bc._tables_of(frozen, levels, k, cached, W))
        assert len(fresh) == 1 and sum(s.stop - s.start for s, _, _ in kept) == d
        for j, lt, eq in kept:
            assert np.array_equal(lt, fresh[0][1][j]) and np.array_equal(eq, fresh[0][2][j])
