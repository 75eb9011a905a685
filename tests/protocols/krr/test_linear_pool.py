"""The checked random-OT pool of client-malicious compact sessions (protocols.ot.pool), over real
TCP against `protocols.krr.serve`: honest pooled sessions give the reference output bit for bit;
a replayed pool position, a wrong-sized d, a d of the wrong type and an unknown pool are refused
with a one-line error while the server keeps serving; a flipped bit of d is a flipped choice bit
(the ideal output of that query)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from protocols.krr import linear as lin
from protocols.krr import predict
from protocols.krr.chain import CLIENT
from protocols.mpc.gilboa import bit_groups
from protocols.ot import pool as ot_pool
from secureml.errors import SecureMLError
from tests.protocols.krr.compact import small_rff_and_two_queries
from tests.protocols.krr.test_malicious import InProcessServer, _eventually, _ideal, _public

U64 = np.uint64


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    mm, queries = small_rff_and_two_queries(64, 150)
    srv = InProcessServer(mm.save(tmp / "rff.npz"), "client-malicious").wait()
    try:
        yield mm, srv, queries
    finally:
        srv.stop()


def _enc(mm, pp, mols) -> np.ndarray:
    _, _, public = lin.linear_parts(mm)
    return pp.encode_features(lin.client_features(public, mols), "q")


def _fresh_start(srv, mm, mols):
    """A session without a ticket, then one that makes the ticket and its first pool."""
    _public(srv, mm, mols, resume_ot=False)
    return _public(srv, mm, mols)


def test_honest_pooled_sessions_equal_the_reference(pooled):
    mm, srv, mols = pooled
    first = _fresh_start(srv, mm, mols)
    pp = first[1]
    ref = _ideal(mm, pp, _enc(mm, pp, mols), first[2].extra["out_bits"])
    np.testing.assert_array_equal(first[0], ref)  # inline (first session of the ticket)
    assert first[2].extra["after_reply_s"] is not None  # ... and its pool made after the reply
    m = len(mols) * pp.n_features * pp.x_bits
    for _ in range(3):
        preds, _, cost = _public(srv, mm, mols)
        assert cost.extra["resumed"] and cost.extra["ot_pool_used"]
        np.testing.assert_array_equal(preds, ref)
        # online: d (m bits) and the corrections only -- no extension message (32 bits per OT)
        corrections = sum((b - a) * len(mols) * pp.n_features * ((w + 7) // 8)
                          for a, b, w in bit_groups(pp.x_bits, cost.extra["out_bits"]))
        assert cost.total_bytes - cost.offline_bytes < m // 8 + corrections + 2048
        assert cost.extra["extend_bytes"] == 0
    np.testing.assert_allclose(ref, mm.predict(mols), atol=1e-2)


def _client_pool(monkeypatch, before=None, after=None):
    """Patch the client's side of the pool agreement (this thread's role-1 calls only)."""
    real = lin._agree_pool

    def agree(party, ot, params, m):
        if party.role == CLIENT and before is not None:
            before(ot)
        out = real(party, ot, params, m)
        if party.role == CLIENT and after is not None:
            after(ot)
        return out

    monkeypatch.setattr(lin, "_agree_pool", agree)


def test_replayed_pool_entries_are_refused(pooled, monkeypatch):
    """A client that keeps a copy of its pool and spends the same entries again (it claims the
    old position) is refused: two corrections under one pad pair would give w_j differences."""
    mm, srv, mols = pooled
    _fresh_start(srv, mm, mols)
    saved = {}

    def keep(ot):
        saved["pool"] = copy.copy(ot["state"]["pool"])  # arrays are re-sliced, never written

    _client_pool(monkeypatch, before=keep)
    _public(srv, mm, mols)
    monkeypatch.undo()
    assert saved["pool"].at == 0

    def replay(ot):  # believe the server still holds the old position
        ot["state"]["pool"] = saved["pool"]
        ot["server_pool"] = ot_pool.status(saved["pool"])

    _client_pool(monkeypatch, before=replay)
    with pytest.raises(SecureMLError) as err:
        _public(srv, mm, mols)
    monkeypatch.undo()
    assert "\n" not in str(err.value)
    assert _eventually(lambda: "PoolRefused" in srv.text())
    # the server dropped that ticket and serves on: the next session starts afresh, correctly
    preds, _, cost = _public(srv, mm, mols)
    assert not cost.extra["resumed"]
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)


@pytest.mark.parametrize("how", ["long", "short", "dtype", "unknown-pool"])
def test_malformed_derandomisation_is_refused(pooled, monkeypatch, how):
    mm, srv, mols = pooled
    _fresh_start(srv, mm, mols)
    before = len(srv.lines)
    if how == "unknown-pool":
        def forge(ot):
            ot["state"]["pool"].id = bytes(16)
            ot["server_pool"] = ot_pool.status(ot["state"]["pool"])

        _client_pool(monkeypatch, before=forge)
    else:
        real_send = ot_pool.pack_bits

        def bad_pack(bits):
            d = real_send(bits)
            if how == "long":
                return np.concatenate([d, np.zeros(1, np.uint8)])
            if how == "short":
                return d[:-1]
            return d.view(np.uint8).astype(np.uint16)

        monkeypatch.setattr(ot_pool, "pack_bits", bad_pack)  # the server never packs bits
    with pytest.raises(SecureMLError) as err:
        _public(srv, mm, mols)
    monkeypatch.undo()
    assert "\n" not in str(err.value)
    assert _eventually(lambda: any("session failed" in ln for ln in srv.lines[before:]))
    want = "PoolRefused" if how == "unknown-pool" else "MalformedMessage"
    assert any(want in ln for ln in srv.lines[before:])
    preds, _, _ = _public(srv, mm, mols)
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)


def test_any_d_is_one_query(pooled, monkeypatch):
    """d is sent after the pool's choices r were fixed by the checked extension, so any d picks
    one query b = d ^ r: a client that flips bit (i, row a, feature j) of d and uses b' = d' ^ r
    for its own share gets exactly f(phi') for phi' with bit i of phi'_{a, j} flipped."""
    mm, srv, mols = pooled
    first = _fresh_start(srv, mm, mols)
    pp, out_bits = first[1], first[2].extra["out_bits"]
    enc = _enc(mm, pp, mols)
    k, n = enc.shape
    i, a, j = 3, 1, 7  # OTs are ordered bit-major, then row, then feature
    real_recv = ot_pool.cot_recv_pooled

    def flipped(ch, pool, choices, bits):
        flat = np.concatenate([np.asarray(c, dtype=np.uint8) for c in choices])
        flat[i * k * n + a * n + j] ^= 1  # d' = d ^ e, and this side's share uses b ^ e
        ends = np.cumsum([0] + [len(c) for c in choices])
        return real_recv(ch, pool, [flat[x:y] for x, y in zip(ends[:-1], ends[1:])], bits)

    monkeypatch.setattr(ot_pool, "cot_recv_pooled", flipped)
    import protocols.mpc.gilboa as gilboa
    monkeypatch.setattr(gilboa, "cot_recv_pooled", flipped)
    preds, _, cost = _public(srv, mm, mols)
    monkeypatch.undo()
    assert cost.extra["ot_pool_used"]
    enc2 = enc.copy()
    enc2[a, j] ^= U64(1 << i)
    np.testing.assert_array_equal(preds, _ideal(mm, pp, enc2, out_bits))
    assert not np.array_equal(preds, _ideal(mm, pp, enc, out_bits))


def test_pool_is_bounded_and_falls_back_inline(pooled, monkeypatch):
    """POOL_MAX bounds the OTs kept per ticket; a session needing more extends inline, correctly."""
    mm, srv, mols = pooled
    first = _fresh_start(srv, mm, mols)
    pp = first[1]
    m = len(mols) * pp.n_features * pp.x_bits
    monkeypatch.setattr(ot_pool, "POOL_MAX", m // 2)  # both sides live in this process
    _public(srv, mm, mols)  # refills only m / 2
    preds, _, cost = _public(srv, mm, mols)
    assert cost.extra["resumed"] and not cost.extra["ot_pool_used"]
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)


def test_pool_expires_with_its_ticket(pooled, monkeypatch):
    """The pool lives in the ticket's state: when the server's ticket expires, the pool goes with
    it; the client's next session extends inline (its own copy dropped) and makes a new pool."""
    from protocols.ot import session as ot_session

    mm, srv, mols = pooled
    _fresh_start(srv, mm, mols)
    assert _public(srv, mm, mols)[2].extra["ot_pool_used"]
    monkeypatch.setattr(ot_session.SERVER_TICKETS, "ttl_s", 1e-9)
    preds, _, cost = _public(srv, mm, mols)
    monkeypatch.undo()
    assert not cost.extra["resumed"] and not cost.extra["ot_pool_used"]
    np.testing.assert_allclose(preds, mm.predict(mols), atol=1e-2)
    _, _, cost = _public(srv, mm, mols)  # the new ticket and the pool made after that reply
    assert cost.extra["resumed"] and cost.extra["ot_pool_used"]


def test_concurrent_sessions_on_one_ticket_never_share_its_pool(pooled, monkeypatch):
    """Review (protocol 22): a client holds session A open on its ticket -- after the server
    announced the ticket's pool, before A spends it -- and starts session B with the same ticket on
    another connection. B must not resume the ticket (its Delta and pool are A's alone while A
    runs: otherwise both could spend the same pool entries, or collect KOS bits in parallel): B
    runs fresh base OTs and extends inline; A then spends the pool; both answers are exact."""
    import threading

    from protocols.ot import session as ot_session

    mm, srv, mols = pooled
    _fresh_start(srv, mm, mols)  # the ticket and its pool
    a_thread = threading.current_thread()
    a_waiting, b_done, out = threading.Event(), threading.Event(), {}
    held = dict(ot_session.CLIENT_TICKETS._d)  # B presents the same ticket A holds

    def hold(ot):
        if threading.current_thread() is a_thread and not b_done.is_set():
            a_waiting.set()
            b_done.wait(60)

    def session_b():
        assert a_waiting.wait(60)
        try:
            with ot_session.CLIENT_TICKETS._lock:
                ot_session.CLIENT_TICKETS._d.update(held)
            out["b"] = _public(srv, mm, mols)
        except Exception as exc:  # noqa: BLE001 - reported below
            out["b"] = exc
        finally:
            b_done.set()

    _client_pool(monkeypatch, before=hold)
    t = threading.Thread(target=session_b)
    t.start()
    preds_a, pp, cost_a = _public(srv, mm, mols)
    t.join(60)
    monkeypatch.undo()
    assert not isinstance(out["b"], Exception), out["b"]
    preds_b, _, cost_b = out["b"]
    assert cost_a.extra["resumed"] and cost_a.extra["ot_pool_used"]
    assert not cost_b.extra["resumed"] and not cost_b.extra["ot_pool_used"]
    ref = _ideal(mm, pp, _enc(mm, pp, mols), cost_a.extra["out_bits"])
    np.testing.assert_array_equal(preds_a, ref)
    np.testing.assert_array_equal(preds_b, ref)
