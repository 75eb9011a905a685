"""Precorrected OT pools of client-malicious compact sessions (protocols.ot.pool R4, served
model's ot_pool_precorrect): the refill after a reply also sends the next queries' corrections,
so a resumed session sends only d = b ^ r online. Over real TCP against `protocols.krr.serve`:
honest pooled sessions give the reference output bit for bit with about n x_bits / 8 bytes
online; a flipped bit of d is exactly the query with that bit flipped; a replayed pool position
and a d of the wrong size are refused while the server keeps serving; sessions with fewer
queries than the refill spend whole blocks."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from protocols.krr import linear as lin
from protocols.krr.chain import CLIENT
from protocols.mpc import gilboa
from protocols.mpc.gilboa import bit_groups
from protocols.ot import pool as ot_pool
from secureml.errors import SecureMLError
from tests.protocols.krr.compact import small_rff_and_two_queries
from tests.protocols.krr.test_malicious import InProcessServer, _eventually, _ideal, _public
from tests.protocols.krr.test_linear_pool import _enc, _fresh_start as _start  # the pooled tests' helpers

U64 = np.uint64


@pytest.fixture(scope="module")
def pre(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    mm, queries = small_rff_and_two_queries(128, 200)
    srv = InProcessServer(mm.save(tmp / "rff.npz"), "client-malicious", precorrect=True).wait()
    try:
        yield mm, srv, queries
    finally:
        srv.stop()


def test_honest_precorrected_sessions_equal_the_reference(pre):
    mm, srv, mols = pre
    first = _start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    ref = _ideal(mm, pp, _enc(mm, pp, mols), out_bits)
    np.testing.assert_array_equal(first[0], ref)  # inline (first session of the ticket)
    m = len(mols) * pp.n_features * pp.x_bits
    corrections = sum((b - a) * len(mols) * pp.n_features * ((w + 7) // 8) for a, b, w in bit_groups(pp.x_bits, out_bits))
    for _ in range(3):
        preds, _, cost = _public(srv, mm, mols)
        assert cost.extra["resumed"] and cost.extra["ot_pool_used"]
        np.testing.assert_array_equal(preds, ref)
        online = cost.total_bytes - cost.offline_bytes
        assert m // 8 <= online < m // 8 + 2048  # d and the output share: no correction online
        # after the reply: the refill's extension (32 bits per OT) and the next corrections
        assert corrections + m * 4 <= cost.extra["after_reply_bytes"] < corrections + m * 4 + 8192
    np.testing.assert_allclose(ref, mm.predict(mols), atol=1e-2)


def test_fewer_queries_spend_whole_blocks(pre):
    """A refill for two queries serves a one-query session (one block), then another one; a
    two-query session after that finds too few entries and extends inline -- all exact."""
    mm, srv, mols = pre
    first = _start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    one = mols.subset([0])
    ref1 = _ideal(mm, pp, _enc(mm, pp, one), out_bits)
    for _ in range(2):
        preds, _, cost = _public(srv, mm, one)
        assert cost.extra["ot_pool_used"]
        np.testing.assert_array_equal(preds, ref1)
    preds, _, cost = _public(srv, mm, mols)
    np.testing.assert_array_equal(preds, _ideal(mm, pp, _enc(mm, pp, mols), out_bits))


def test_precorrected_any_d_is_one_query(pre, monkeypatch):
    """A client that flips one bit of d (and takes its share with the flipped bit) gets exactly
    f(phi') for phi' with that bit flipped: d picks b = d ^ r, nothing more."""
    mm, srv, mols = pre
    first = _start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    enc = _enc(mm, pp, mols)
    i, a, j = 5, 1, 7  # query-major: row, then bit, then feature
    preds, cost, enc2 = _with_a_flipped_bit(monkeypatch, srv, mm, mols, pp, enc, a, i, j)
    assert cost.extra["ot_pool_used"]
    np.testing.assert_array_equal(preds, _ideal(mm, pp, enc2, out_bits))
    assert not np.array_equal(preds, _ideal(mm, pp, enc, out_bits))


def _with_a_flipped_bit(monkeypatch, srv, mm, mols, pp, enc, a, i, j):
    """A session whose client flips the derandomisation bit of query a's bit i of feature j
    (query-major: row, then bit, then feature); returns (predictions, cost, the query it selects)."""
    n = enc.shape[1]
    real = ot_pool.spend_recv

    def flipped(ch, pool, b):
        b = np.asarray(b, dtype=np.uint8).copy()
        b[a * pp.x_bits * n + i * n + j] ^= 1
        return real(ch, pool, b)

    monkeypatch.setattr(gilboa, "spend_recv", flipped)
    preds, _, cost = _public(srv, mm, mols)
    monkeypatch.undo()
    enc2 = enc.copy()
    enc2[a, j] ^= U64(1 << i)
    return preds, cost, enc2


def _client_pool(monkeypatch, hook):
    real = lin._agree_pool

    def agree(party, ot, params, m):
        if party.role == CLIENT:
            hook(ot)
        return real(party, ot, params, m)

    monkeypatch.setattr(lin, "_agree_pool", agree)


def test_precorrected_replay_is_refused(pre, monkeypatch):
    """Spending precorrected entries twice would give x0 and -x0 - w_enc_j: the weights. The
    server refuses any position but its cursor."""
    mm, srv, mols = pre
    _start(srv, mm, mols)
    saved = {}
    _client_pool(monkeypatch, lambda ot: saved.setdefault("pool", copy.copy(ot["state"]["pool"])))
    _public(srv, mm, mols)
    monkeypatch.undo()
    assert saved["pool"].pre

    def replay(ot):
        ot["state"]["pool"] = saved["pool"]
        ot["server_pool"] = ot_pool.status(saved["pool"])

    _client_pool(monkeypatch, replay)
    with pytest.raises(SecureMLError) as err:
        _public(srv, mm, mols)
    monkeypatch.undo()
    assert "\n" not in str(err.value)
    assert _eventually(lambda: "PoolRefused" in srv.text())
    preds, _, cost = _public(srv, mm, mols)  # the ticket was dropped: a fresh start, correct
    assert not cost.extra["resumed"]
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)


def test_precorrected_wrong_sized_d_is_refused(pre, monkeypatch):
    """A d one byte too long (or short) is refused before anything is computed from it; the
    server serves on."""
    mm, srv, mols = pre
    _start(srv, mm, mols)
    before = len(srv.lines)
    real = ot_pool.pack_bits
    monkeypatch.setattr(ot_pool, "pack_bits", lambda bits: np.concatenate([real(bits), np.zeros(1, np.uint8)]))
    with pytest.raises(SecureMLError) as err:
        _public(srv, mm, mols)
    monkeypatch.undo()
    assert "\n" not in str(err.value)
    assert _eventually(lambda: any("session failed" in ln for ln in srv.lines[before:]))
    assert any("MalformedMessage" in ln for ln in srv.lines[before:])
    preds, _, _ = _public(srv, mm, mols)
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)


def _pre_pools(m: int, seed: int):
    rng = np.random.default_rng(seed)
    h0 = rng.integers(0, 2**64, m, dtype=U64)
    h1 = rng.integers(0, 2**64, m, dtype=U64)
    r = rng.integers(0, 2, m).astype(np.uint8)
    return ot_pool.SenderPool(b"q" * 16, 0, h0, h1), ot_pool.ReceiverPool(b"q" * 16, 0, r, np.where(r == 1, h1, h0))


def test_precorrection_and_spending_arithmetic():
    """R4 then P1-P2 in process: c - s = b delta (mod 2^(8 nbytes)) per entry for any b; the
    server refuses to correct a precorrected pool again, and a d with bits past its OTs."""
    from protocols.testing import run_two_party

    m = 13
    sp, rp = _pre_pools(m, 5)
    rng = np.random.default_rng(6)
    delta = rng.integers(0, 2**64, m, dtype=U64)
    nbytes = np.array([7] * 5 + [6] * 8)
    res = run_two_party(lambda p: ot_pool.precorrect_send(p.ch, sp, m, delta, nbytes),
                        lambda p: ot_pool.precorrect_recv(p.ch, rp, m, nbytes))
    spre, rpre = res
    assert spre.pre and rpre.pre
    b = rng.integers(0, 2, m).astype(np.uint8)
    s, c = run_two_party(lambda p: ot_pool.spend_send(p.ch, copy.copy(spre), m),
                         lambda p: ot_pool.spend_recv(p.ch, copy.copy(rpre), b))
    mask = (U64(1) << (U64(8) * nbytes.astype(U64))) - U64(1)
    np.testing.assert_array_equal((c - s) & mask, (b.astype(U64) * delta) & mask)
    with pytest.raises(ot_pool.PoolRefused):
        ot_pool.cot_send_pooled(None, copy.copy(spre), [delta], [64])

    def padded(p):
        p.ch.send_array(np.array([0, 0x80], dtype=np.uint8))  # bit 15 set: past the 13 OTs

    with pytest.raises(ot_pool.PoolRefused):
        run_two_party(lambda p: ot_pool.spend_send(p.ch, copy.copy(spre), m), padded)


# ---- precorrected pools with rounded corrections (ot_round_bits) ------------------------------------

def _pre_reconstruct(L: int, x: np.ndarray, y: np.ndarray, y_bits: int, ring_bits: int, seed: int) -> np.ndarray:
    """R4 (with L) then the inner products on that pool, in process: y . x + E per row, E."""
    from protocols.mpc.gilboa import inner_products_precorrected, precorrected_layout
    from protocols.testing import run_two_party

    k, n = y.shape
    m = k * n * y_bits
    sp, rp = _pre_pools(m, seed)
    j, nb, drops = precorrected_layout(k, n, y_bits, ring_bits, L)

    def server(p):
        pool = ot_pool.precorrect_send(p.ch, sp, m, x[j], nb, drops)
        return inner_products_precorrected(p, CLIENT, x=x, y_bits=y_bits, ring_bits=ring_bits, k=k, pool=pool,
                                           round_bits=L)

    def client(p):
        pool = ot_pool.precorrect_recv(p.ch, rp, m, nb, drops)
        return inner_products_precorrected(p, CLIENT, y=y, y_bits=y_bits, ring_bits=ring_bits, pool=pool,
                                           round_bits=L)

    s0, s1 = run_two_party(server, client)
    M = 1 << ring_bits
    out = []
    for row, a, b in zip(y, s0, s1):
        e = (int(a) + int(b) - sum(int(u) * int(v) for u, v in zip(x, row))) % M
        out.append(e - M if e >= M // 2 else e)
    return np.array(out, dtype=np.float64)


def test_rounded_precorrection_error_law():
    """Exact with L = 0; with L > 0 the error is centred, of the stated spread (entries with
    r = 1 carry it, whatever b is), and the same law for another x."""
    rng = np.random.default_rng(7)
    k, n, y_bits, ring_bits, L = 400, 24, 10, 44, 13
    x = rng.integers(0, 2**40, n, dtype=U64)
    y = rng.integers(0, 2**y_bits, (k, n), dtype=U64)
    assert not _pre_reconstruct(0, x, y, y_bits, ring_bits, 8).any()
    r = _pre_pools(k * n * y_bits, 8)[1].r.reshape(k, y_bits, n)
    c = np.maximum(0, L - np.arange(y_bits))
    var = (r.sum(axis=2) * (4.0 ** np.arange(y_bits)) * (4.0 ** c - 1) / 12).sum(axis=1)
    for xx in (x, rng.integers(0, 2**40, n, dtype=U64)):
        z = _pre_reconstruct(L, xx, y, y_bits, ring_bits, 8) / np.sqrt(var)
        assert abs(z.mean()) < 4 / np.sqrt(k) and 0.85 < z.var() < 1.15


@pytest.fixture(scope="module")
def pre_rounded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre_rounded")
    mm, queries = small_rff_and_two_queries(256, 300)
    srv = InProcessServer(mm.save(tmp / "rff.npz"), "client-malicious", round_ot=True, precorrect=True).wait()
    try:
        yield mm, srv, queries
    finally:
        srv.stop()


def test_rounded_precorrected_sessions(pre_rounded, monkeypatch):
    """Rounded and precorrected together: d online only, the refill's corrections at the rounded
    widths, outputs within six worst-case sigmas of f(phi'); a flipped bit of d is one query."""
    from protocols.mpc.gilboa import rounded_groups

    mm, srv, mols = pre_rounded
    first = _start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    assert pp.ot_round_bits > 0
    enc = _enc(mm, pp, mols)
    ref = _ideal(mm, pp, enc, out_bits)
    bound = 6 * lin.rounding_error_sd(pp)
    k, n = enc.shape
    m = k * n * pp.x_bits
    corr = k * n * sum((b - a) * ((kb + 7) // 8) for a, b, _, kb in rounded_groups(pp.x_bits, out_bits, pp.ot_round_bits))
    errs = []
    for _ in range(3):
        preds, _, cost = _public(srv, mm, mols)
        assert cost.extra["ot_pool_used"]
        assert m // 8 <= cost.total_bytes - cost.offline_bytes < m // 8 + 2048
        assert corr + m * 4 <= cost.extra["after_reply_bytes"] < corr + m * 4 + 8192
        errs.append(preds - ref)
    errs = np.concatenate(errs)
    assert 0 < np.abs(errs).max() < bound
    w, _, _ = lin.linear_parts(mm)
    j, i, a = int(np.argmax(np.abs(w))), pp.x_bits - 1, 0
    preds, _, enc2 = _with_a_flipped_bit(monkeypatch, srv, mm, mols, pp, enc, a, i, j)
    assert np.abs(preds - _ideal(mm, pp, enc2, out_bits)).max() < bound
    assert np.abs(preds - ref).max() > 10 * bound
