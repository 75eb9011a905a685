"""SoftSpoken OT extension: correctness, IKNP's correlation, traffic, fresh streams per session."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.ot.crypto import FixedKeyAES, derive_key
from protocols.ot.softspoken import (
    ALLOWED_K,
    SoftSpokenReceiver,
    SoftSpokenSender,
    cot_recv_many,
    cot_send_many,
    ggm_deal,
    ggm_punctured,
    softspoken_bits_per_ot,
)
from protocols.net.transport import local_channel_pair

U64 = np.uint64


def _pair(k: int, seed: int = 0):
    c0, c1 = local_channel_pair(timeout=30)
    s, r = SoftSpokenSender(c0, k=k, seed=seed), SoftSpokenReceiver(c1, k=k, seed=seed + 1)
    t = threading.Thread(target=s.setup)
    t.start()
    r.setup()
    t.join(30)
    return s, r, c0, c1


def _both(fs, fr):
    out = {}
    t = threading.Thread(target=lambda: out.__setitem__("s", fs()))
    t.start()
    got = fr()
    t.join(30)
    return out["s"], got


def test_ggm_punctured_matches_dealer():
    rng = np.random.default_rng(0)
    aes = FixedKeyAES(derive_key(b"test", b"ggm"))
    for k in ALLOWED_K:
        roots = rng.integers(0, 2**63, size=(5, 2), dtype=U64)
        leaves, sums = ggm_deal(aes, roots, k)
        c = rng.integers(0, 2, size=(5, k)).astype(np.uint8)
        chosen = np.take_along_axis(sums, c.astype(np.intp)[:, :, None, None], axis=2)[:, :, 0]
        got, delta = ggm_punctured(aes, chosen, c)
        # the punctured point is the path of the *unchosen* sides; every other leaf is known
        expect = (((1 - c) << np.arange(k - 1, -1, -1)[None, :]).sum(axis=1))
        np.testing.assert_array_equal(delta, expect)
        for b in range(5):
            keep = np.arange(1 << k) != delta[b]
            np.testing.assert_array_equal(got[b, keep], leaves[b, keep])
            assert not np.any(got[b, delta[b]])


@pytest.mark.parametrize("k", ALLOWED_K)
def test_iknp_correlation(k):
    """Extended rows satisfy q_i = t_i ^ r_i * s with the sender's s = (Delta_b)_b."""
    s, r, _, _ = _pair(k)
    n = 1000
    c = np.random.default_rng(k).integers(0, 2, size=n).astype(np.uint8)
    q, t = _both(lambda: s._extend(n), lambda: r._extend(c))
    expect = np.where(c[:, None].astype(bool), t ^ s._s64[None, :], t)
    np.testing.assert_array_equal(q, expect)
    assert s._s_bits.sum() not in (0, 128)  # s is random, not trivial


@pytest.mark.parametrize("k", ALLOWED_K)
@pytest.mark.parametrize("pre", [0, 3000])
def test_cot_and_random_ot(k, pre):
    s, r, _, _ = _pair(k)
    rng = np.random.default_rng(1)
    delta = rng.integers(0, 2**40, size=5000, dtype=U64)
    c = rng.integers(0, 2, size=5000).astype(np.uint8)
    x0, x = _both(lambda: (s.precompute(pre), s.cot_send(delta, bits=40))[1],
                  lambda: (r.precompute(pre), r.cot_recv(c, bits=40))[1])
    np.testing.assert_array_equal(x, (x0 + c.astype(U64) * delta) & U64((1 << 40) - 1))
    (m0, m1), mc = _both(lambda: s.random_ot(300), lambda: r.random_ot(c[:300]))
    np.testing.assert_array_equal(mc, np.where(c[:300, None].astype(bool), m1, m0))
    assert not np.array_equal(m0, m1)


@pytest.mark.parametrize("k", [1, 4])
def test_extension_traffic_is_128_over_k_bits(k):
    s, r, c0, c1 = _pair(k)
    before = c1.bytes_sent
    n = 1 << 14
    _both(lambda: s.precompute(n), lambda: r.precompute(n))
    payload = c1.bytes_sent - before
    assert n * softspoken_bits_per_ot(k) // 8 <= payload <= n * softspoken_bits_per_ot(k) // 8 + 1024


def test_resumed_sessions_use_fresh_streams():
    """Two sessions from one saved state, same choices: the sender's views must differ.

    With a reused PRG stream d1 ^ d2 = r1 ^ r2 would be public -- here r1 = r2, so d1 == d2.
    """
    s, r, _, _ = _pair(4)
    st_s, st_r = s.state(), r.state()
    n = 4096
    c = np.zeros(n, dtype=np.uint8)
    views = []
    for sid in (b"session-one", b"session-two"):
        c0, c1 = local_channel_pair(timeout=30)
        c0.record()
        ss, rr = SoftSpokenSender.resume(c0, st_s, sid), SoftSpokenReceiver.resume(c1, st_r, sid)
        delta = np.arange(1, n + 1, dtype=U64)
        x0, x = _both(lambda: ss.cot_send(delta, bits=32), lambda: rr.cot_recv(c, bits=32))
        np.testing.assert_array_equal(x, x0)  # choices all zero: receiver gets x0
        views.append(b"".join(f for d, f in c0.transcript if d == "recv"))
    a, b = (np.frombuffer(v, dtype=np.uint8) for v in views)
    assert a.shape == b.shape
    frac = np.unpackbits(a ^ b).mean()
    assert 0.45 < frac < 0.55  # independent-looking, not equal


def test_receiver_message_hides_choices():
    """All-zero and all-one choices give statistically identical (uniform) d messages."""
    for bit in (0, 1):
        s, r, c0, _ = _pair(4, seed=10 + bit)
        c0.record()
        c = np.full(1 << 14, bit, dtype=np.uint8)
        _both(lambda: s._extend(c.shape[0]), lambda: r._extend(c))
        d = np.frombuffer(c0.transcript[-1][1], dtype=np.uint8)
        assert abs(np.unpackbits(d).mean() - 0.5) < 0.02


def test_cot_many_mixed_widths():
    s, r, _, _ = _pair(4)
    rng = np.random.default_rng(3)
    sizes, bits = [7000, 1, 40000, 3], [64, 13, 57, 8]
    deltas = [rng.integers(0, 2**63, size=n, dtype=U64) for n in sizes]
    ch = [rng.integers(0, 2, size=n).astype(np.uint8) for n in sizes]
    xs, ys = _both(lambda: (s.precompute(20000), cot_send_many(s, deltas, bits))[1],
                   lambda: (r.precompute(20000), cot_recv_many(r, ch, bits))[1])
    for x0, y, c, d, b in zip(xs, ys, ch, deltas, bits):
        mask = U64(0xFFFFFFFFFFFFFFFF) if b == 64 else U64((1 << b) - 1)
        np.testing.assert_array_equal(y, (x0 + c.astype(U64) * d) & mask)


def test_bad_k_and_bad_state():
    c0, _ = local_channel_pair()
    with pytest.raises(ValueError):
        SoftSpokenSender(c0, k=3)
    s, r, _, _ = _pair(2)
    st = s.state()
    st["delta"] = st["delta"] + 4  # out of range for k = 2
    from protocols.net.transport import MalformedMessage

    with pytest.raises(MalformedMessage):
        SoftSpokenSender.resume(c0, st, b"sid")
