"""The checked random-OT pool (protocols.ot.pool) on its own: refill over a checked SoftSpoken
session, spending by derandomisation, the refusals, and the check covering the pooled OTs."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.ot import pool as P
from protocols.ot.consistency import ConsistencyError
from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender
from protocols.net.transport import local_channel_pair

U64 = np.uint64


def _engines(seed: int = 0):
    c0, c1 = local_channel_pair(timeout=30)
    s, r = SoftSpokenSender(c0, k=4, seed=seed), SoftSpokenReceiver(c1, k=4, seed=seed + 1)
    s.checked = r.checked = True
    t = threading.Thread(target=s.setup)
    t.start()
    r.setup()
    t.join(30)
    return s, r


def _refill(s, r, n, old_s=None, old_r=None):
    out = {}

    def srv():
        try:
            out["pool"] = P.refill_send(s, n, old_s)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out["err"] = exc
            s.ch.close()

    t = threading.Thread(target=srv)
    t.start()
    try:
        rp = P.refill_recv(r, n, old_r)
    except Exception as exc:  # noqa: BLE001
        rp = exc
    t.join(30)
    return out, rp


def _spend(sp, rp, deltas, choices, bits):
    c0, c1 = local_channel_pair(timeout=30)
    out = {}
    t = threading.Thread(target=lambda: out.update(x0=P.cot_send_pooled(c0, sp, deltas, bits)))
    t.start()
    got = P.cot_recv_pooled(c1, rp, choices, bits)
    t.join(30)
    return out["x0"], got


def test_refill_then_spend_gives_correlated_ots():
    s, r = _engines()
    out, rp = _refill(s, r, 3000)
    sp = out["pool"]
    assert sp.id == rp.id and sp.left == rp.left == 3000 and P.status(sp) == P.status(rp)
    rng = np.random.default_rng(3)
    deltas = [rng.integers(0, 2**63, 1000, dtype=U64), rng.integers(0, 2**63, 1500, dtype=U64)]
    choices = [rng.integers(0, 2, 1000).astype(np.uint8), rng.integers(0, 2, 1500).astype(np.uint8)]
    bits = [64, 20]
    x0, got = _spend(sp, rp, deltas, choices, bits)
    for x, g, dl, c, b in zip(x0, got, deltas, choices, bits):
        mask = U64((1 << b) - 1) if b < 64 else U64(2**64 - 1)
        np.testing.assert_array_equal(g, (x + c.astype(U64) * dl) & mask)
    # the spent entries are gone on both sides; the rest keeps its place
    assert sp.left == rp.left == 500 and sp.at == rp.at == 2500
    # a refill keeps the unused entries first, under a new id
    out, rp2 = _refill(s, r, 700, sp, rp)
    assert out["pool"].left == rp2.left == 1200 and out["pool"].id == rp2.id != sp.id


def test_check_request_refuses_replays_and_strangers():
    s, r = _engines(5)
    out, rp = _refill(s, r, 256)
    sp = out["pool"]
    req = {"id": sp.id.hex(), "at": 0}
    assert P.check_request(sp, req, 256) is sp
    sp.at, sp.h0, sp.h1 = 128, sp.h0[128:], sp.h1[128:]  # 128 entries spent
    with pytest.raises(P.PoolRefused, match="already used"):
        P.check_request(sp, req, 64)
    with pytest.raises(P.PoolRefused, match="no such pool"):
        P.check_request(sp, {"id": "00" * 16, "at": 128}, 64)
    with pytest.raises(P.PoolRefused, match="does not match"):
        P.check_request(sp, {"id": sp.id.hex(), "at": 128}, 129)  # more than is left
    with pytest.raises(P.PoolRefused, match="malformed"):
        P.check_request(sp, {"id": sp.id.hex(), "at": "128"}, 1)
    with pytest.raises(P.PoolRefused):
        P.check_request(None, {"id": sp.id.hex(), "at": 128}, 1)


def test_bits_past_the_last_ot_are_refused():
    s, r = _engines(7)
    out, rp = _refill(s, r, 64)
    sp = out["pool"]
    c0, c1 = local_channel_pair(timeout=30)
    c1.send_array(np.array([0, 0b1000_0000], dtype=np.uint8))  # 9 OTs: bit 15 is past them
    with pytest.raises(P.PoolRefused, match="past its OTs"):
        P.cot_send_pooled(c0, sp, [np.ones(9, dtype=U64)], [64])
    assert sp.left == 64 - 9  # burnt before anything was sent


def test_inconsistent_refill_is_caught_before_any_pool_exists():
    """The refill's consistency check covers the pooled OTs: a client whose columns disagree
    gets no pool (the server raises before its "ok"), so no correction ever depends on them."""
    s, r = _engines(9)
    real = r.ch.send_array

    def tamper(a, owned=False):
        a = np.array(a, copy=True)
        if a.dtype == U64 and a.ndim == 2:  # the extension message (one row per block)
            a[:, 0] ^= U64(0xFFFF)
        return real(a, owned=owned)

    r.ch.send_array = tamper
    out, rp = _refill(s, r, 1000)
    assert isinstance(out.get("err"), ConsistencyError) and "pool" not in out
    assert isinstance(rp, Exception)


def test_pools_of_many_tickets_stay_within_the_store_bound():
    """Resource exhaustion (review): a client opening many sessions, each of up to 256 queries,
    gets a fresh ticket per session whose pool the server refills to POOL_MAX OTs (16 bytes each,
    8 MiB). The store keeps 1,024 tickets, so pools alone could hold 8 GiB of server memory. The
    store bounds the pooled OTs of all its tickets together (the least recently used pools are
    dropped first -- never reused, only forgotten: the next session of that ticket extends inline)."""
    from protocols.ot import session as S

    store = S.TicketStore()
    tickets = [bytes([i]) * 16 for i in range(64)]
    for t in tickets:  # 64 sessions that each ended with a full pool (zero-copy arrays)
        full = np.broadcast_to(U64(0), (P.POOL_MAX,))
        store.give_back(S._Entry(t, {"k": 4, "pool": P.SenderPool(t, 0, full, full)}))
    held = [store.get(t).get("pool") for t in tickets if store.get(t) is not None]
    total = sum(p.left for p in held if p is not None)
    assert 16 * total <= 256 << 20  # at most 256 MiB of pads across the store
    assert len([p for p in held if p is not None]) >= 1 and held[-1] is not None  # the newest pool kept
    assert all(store.get(t) is not None for t in tickets)  # the tickets (their base OTs) stay
