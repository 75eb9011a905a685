"""Rounded COT corrections of pooled client-malicious compact sessions (PublicParams.ot_round_bits,
protocols.mpc.gilboa.inner_products_pipelined): the pool's derandomisation drops each
correction's low bits exactly as stated, the reconstructed inner product is y . x + E with E
centred and of the stated spread, and over real TCP against `protocols.krr.serve` honest sessions
stay within the plan's tolerance with fewer bytes, while deviating clients (a flipped bit of d, a
replayed pool position) get f(phi') + E for one phi' or are refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from protocols.krr import linear as lin
from protocols.krr.chain import CLIENT
from protocols.mpc import gilboa
from protocols.mpc.gilboa import bit_groups, inner_products_pipelined, rounded_groups, rounding_sd
from protocols.ot import pool as ot_pool
from protocols.testing import run_two_party
from secureml.errors import SecureMLError
from tests.protocols.krr.compact import small_rff_and_two_queries
from tests.protocols.krr.test_malicious import InProcessServer, _eventually, _ideal, _public
from tests.protocols.krr.test_linear_pool import _enc, _fresh_start as _start  # the pooled tests' helpers

U64 = np.uint64


def _pools(m: int, seed: int) -> tuple[ot_pool.SenderPool, ot_pool.ReceiverPool]:
    """A pool pair as a checked refill leaves it (pads m0, m1; the client's r and m_r)."""
    rng = np.random.default_rng(seed)
    h0 = rng.integers(0, 2**64, m, dtype=U64)
    h1 = rng.integers(0, 2**64, m, dtype=U64)
    r = rng.integers(0, 2, m).astype(np.uint8)
    return (ot_pool.SenderPool(b"p" * 16, 0, h0, h1),
            ot_pool.ReceiverPool(b"p" * 16, 0, r, np.where(r == 1, h1, h0)))


def test_rounded_derandomisation_drops_exactly_the_low_bits():
    """Per OT: choice 0 gets a0 exactly, choice 1 gets a0 + delta - (tau mod 2^c) (mod 2^bits);
    the corrections travel in ceil(kept / 8) bytes."""
    m, bits, c, kept = 4000, 40, 9, 31
    spool, rpool = _pools(m, 1)
    h0, h1, r = spool.h0.copy(), spool.h1.copy(), rpool.r.copy()
    rng = np.random.default_rng(2)
    delta = rng.integers(0, 2**64, m, dtype=U64)
    b = rng.integers(0, 2, m).astype(np.uint8)
    drops = [np.full(m, c, dtype=U64)]
    res = run_two_party(lambda p: ot_pool.cot_send_pooled(p.ch, spool, [delta], [bits], drops, [kept]),
                        lambda p: ot_pool.cot_recv_pooled(p.ch, rpool, [b], [bits], drops, [kept]))
    x0, got = res[0][0], res[1][0]
    mask = U64((1 << bits) - 1)
    d = (b ^ r).astype(bool)
    a0, a1 = np.where(d, h1, h0), np.where(d, h0, h1)
    tau = a0 + delta - a1
    want = (a0 + b.astype(U64) * (delta - (tau & U64((1 << c) - 1)))) & mask
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x0, a0 & mask)
    sent = res.parties[0].ch.bytes_sent
    assert m * 4 <= sent < m * 4 + 256  # ceil(31 / 8) = 4 bytes each, not 5
    assert rpool.left == 0 and spool.left == 0


def _reconstruct(L: int, x: np.ndarray, y: np.ndarray, y_bits: int, ring_bits: int, seed: int) -> np.ndarray:
    k, n = y.shape
    spool, rpool = _pools(k * n * y_bits, seed)
    res = run_two_party(
        lambda p: inner_products_pipelined(p, CLIENT, x=x, y_bits=y_bits, ring_bits=ring_bits, k=k, pool=spool,
                                           round_bits=L),
        lambda p: inner_products_pipelined(p, CLIENT, y=y, y_bits=y_bits, ring_bits=ring_bits, pool=rpool,
                                           round_bits=L))
    M = 1 << ring_bits
    out = []
    for row, s0, s1 in zip(y, res[0], res[1]):
        err = (int(s0) + int(s1) - sum(int(a) * int(b) for a, b in zip(x, row))) % M
        out.append(err - M if err >= M // 2 else err)
    return np.array(out, dtype=np.float64)


def test_rounded_inner_products_are_exact_plus_a_centred_error():
    """y . x + E per row: E centred, its spread the one stated (sum over chosen bits i < L of
    4^i (4^c_i - 1) / 12), |E| below the hard bound; with L = 0 the same pools give E = 0."""
    rng = np.random.default_rng(3)
    k, n, y_bits, ring_bits, L = 400, 24, 10, 44, 13
    x = rng.integers(0, 2**40, n, dtype=U64)
    y = rng.integers(0, 2**y_bits, (k, n), dtype=U64)
    assert not _reconstruct(0, x, y, y_bits, ring_bits, 4).any()
    err = _reconstruct(L, x, y, y_bits, ring_bits, 4)
    bits = (y[..., None] >> np.arange(y_bits, dtype=U64)) & U64(1)  # (k, n, y_bits)
    c = np.maximum(0, L - np.arange(y_bits))
    var = (bits.sum(axis=1) * (4.0 ** np.arange(y_bits)) * (4.0 ** c - 1) / 12).sum(axis=1)  # per row
    z = err / np.sqrt(var)
    assert abs(z.mean()) < 4 / np.sqrt(k)  # centred (the mean was added back)
    assert 0.85 < z.var() < 1.15  # the stated spread
    assert np.abs(err).max() <= n * y_bits * 2 ** (L - 1)
    assert np.sqrt(var.max()) <= rounding_sd(n * y_bits, L)
    # another x, the same pools and bits: the same error law (E does not depend on x)
    err2 = _reconstruct(L, rng.integers(0, 2**40, n, dtype=U64), y, y_bits, ring_bits, 4)
    assert abs((err2 / np.sqrt(var)).mean()) < 4 / np.sqrt(k) and 0.85 < (err2 / np.sqrt(var)).var() < 1.15


def test_round_bits_plan_for_the_benchmark_models():
    """The public L of the two benchmark shapes: the kept width is 32 bits (4 bytes per OT), the
    worst-case six-sigma error within tol / 2."""
    from protocols.krr.params import PublicParams

    for n, F, fw, lo, hi, out_bits, L in ((4096, 24, 11, -2.0**-5, 2.0**-5, 49, 17),
                                          (4101, 27, 15, 0.0, 2.0, 56, 24)):
        pp = PublicParams(kind="linear", n_train=1, n_features=n, frac_bits=F, feature_lo=lo, feature_hi=hi,
                          weight_frac_bits=fw, output_bits=out_bits)
        assert lin.round_bits(pp, out_bits) == L
        pp.ot_round_bits = L
        pp.validate()
        assert 6 * lin.rounding_error_sd(pp) <= lin.DEFAULT_TOL / 2
        assert all(kb == out_bits - L for *_, kb in rounded_groups(pp.x_bits, out_bits, L) if _[0] < L)
    pp.ot_round_bits = 60
    with pytest.raises(Exception):
        pp.validate()


# ---- over TCP against protocols.krr.serve ---------------------------------------------------------

@pytest.fixture(scope="module")
def rounded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rounded")
    mm, queries = small_rff_and_two_queries(256, 300)
    path = mm.save(tmp / "rff.npz")
    srv = InProcessServer(path, "client-malicious", round_ot=True).wait()
    exact = InProcessServer(path, "client-malicious").wait()
    srv.exact = exact
    try:
        yield mm, srv, queries
    finally:
        srv.stop()
        exact.stop()


def test_honest_rounded_sessions(rounded):
    """The first session of a ticket extends inline (exact); pooled ones are f(phi') + E with E
    within six worst-case sigmas, not all zero, and send the rounded widths' bytes."""
    mm, srv, mols = rounded
    first = _start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    L = pp.ot_round_bits
    assert L > 0
    ref = _ideal(mm, pp, _enc(mm, pp, mols), out_bits)
    np.testing.assert_array_equal(first[0], ref)
    bound = 6 * lin.rounding_error_sd(pp)
    m = len(mols) * pp.n_features * pp.x_bits
    per_ot = sum((b - a) * ((kb + 7) // 8) for a, b, _, kb in rounded_groups(pp.x_bits, out_bits, L))
    exact = sum((b - a) * ((w + 7) // 8) for a, b, w in bit_groups(pp.x_bits, out_bits))
    assert per_ot < exact
    errs = []
    for _ in range(4):
        preds, _, cost = _public(srv, mm, mols)
        assert cost.extra["ot_pool_used"]
        errs.append(preds - ref)
        online = cost.total_bytes - cost.offline_bytes
        corrections = len(mols) * pp.n_features * per_ot
        assert m // 8 + corrections <= online < m // 8 + corrections + 2048
    errs = np.concatenate(errs)
    assert np.abs(errs).max() < bound and np.abs(errs).max() > 0
    np.testing.assert_allclose(ref, mm.predict(mols), atol=1e-2)
    # byte for byte: the same online bytes in every pooled session, and exactly the corrections'
    # difference below the exact server's pooled sessions of the same model
    onlines = set()
    for _ in range(2):
        _, _, cost = _public(srv, mm, mols)
        onlines.add(cost.total_bytes - cost.offline_bytes)
    _start(srv.exact, mm, mols)
    preds_x, pp_x, cost_x = _public(srv.exact, mm, mols)
    assert pp_x.ot_round_bits == 0 and cost_x.extra["ot_pool_used"]
    np.testing.assert_array_equal(preds_x, ref)  # exact corrections: f(phi') exactly
    assert len(onlines) == 1
    assert (cost_x.total_bytes - cost_x.offline_bytes) - onlines.pop() == len(mols) * pp.n_features * (exact - per_ot)


def test_rounded_flipped_d_is_one_query(rounded, monkeypatch):
    """A client flipping one bit of d gets f(phi') + E for phi' with that bit flipped: within the
    rounding bound of that query's ideal output, far from the unflipped one's."""
    mm, srv, mols = rounded
    first = _start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    enc = _enc(mm, pp, mols)
    k, n = enc.shape
    w, _, _ = lin.linear_parts(mm)
    j = int(np.argmax(np.abs(w)))
    i, a = pp.x_bits - 1, 0
    real_recv = ot_pool.cot_recv_pooled

    def flipped(ch, pool, choices, bits, *rest):
        flat = np.concatenate([np.asarray(c, dtype=np.uint8) for c in choices])
        flat[i * k * n + a * n + j] ^= 1
        ends = np.cumsum([0] + [len(c) for c in choices])
        return real_recv(ch, pool, [flat[x:y] for x, y in zip(ends[:-1], ends[1:])], bits, *rest)

    monkeypatch.setattr(gilboa, "cot_recv_pooled", flipped)
    preds, _, cost = _public(srv, mm, mols)
    monkeypatch.undo()
    assert cost.extra["ot_pool_used"]
    enc2 = enc.copy()
    enc2[a, j] ^= U64(1 << i)
    bound = 6 * lin.rounding_error_sd(pp)
    assert np.abs(preds - _ideal(mm, pp, enc2, out_bits)).max() < bound
    assert np.abs(preds - _ideal(mm, pp, enc, out_bits)).max() > 10 * bound


def test_rounded_replay_is_refused(rounded, monkeypatch):
    """Replaying pool entries is refused with rounded corrections as with exact ones."""
    mm, srv, mols = rounded
    _start(srv, mm, mols)
    saved = {}
    real = lin._agree_pool

    def agree(party, ot, params, m, hook):
        if party.role == CLIENT:
            hook(ot)
        return real(party, ot, params, m)

    def keep(ot):
        saved["pool"] = copy.copy(ot["state"]["pool"])

    monkeypatch.setattr(lin, "_agree_pool", lambda *a: agree(*a, keep))
    _public(srv, mm, mols)
    monkeypatch.undo()

    def replay(ot):
        ot["state"]["pool"] = saved["pool"]
        ot["server_pool"] = ot_pool.status(saved["pool"])

    monkeypatch.setattr(lin, "_agree_pool", lambda *a: agree(*a, replay))
    with pytest.raises(SecureMLError):
        _public(srv, mm, mols)
    monkeypatch.undo()
    assert _eventually(lambda: "PoolRefused" in srv.text())
