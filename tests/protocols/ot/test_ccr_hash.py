"""Protocol 39's one-call hash of the OTs' one-block outputs: H(x) = pi(sigma(x)) ^ sigma(x)
(protocols.ot.crypto, "One-call hash") for semi-honest engines, TCCR for checked engines and
wherever a client-malicious session runs (``tccr_hash``). Seeded, small LPN sets (insecure)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from protocols.krr.registry import _setup_exact_ot
from protocols.net.transport import local_channel_pair
from protocols.ot import crypto
from protocols.ot.crypto import FixedKeyAES
from protocols.ot.ferret import FerretReceiver, FerretSender
from protocols.testing import run_two_party
from tests.protocols.ot.test_ferret import MAIN, SETUP, U64, _both  # the tiny insecure sets and the two-thread runner


def _pair(seed: int, checked: bool = False) -> tuple[FerretSender, FerretReceiver]:
    c0, c1 = local_channel_pair(timeout=60)
    s = FerretSender(c0, seed=seed, params=MAIN, bootstrap=SETUP, checked=checked)
    r = FerretReceiver(c1, seed=seed + 1, params=MAIN, bootstrap=SETUP, checked=checked)
    _both(s.setup, r.setup)
    return s, r


def _sigma_hash(aes: FixedKeyAES, x: np.ndarray) -> np.ndarray:
    """The definition, written out: z = sigma(x) = (x_1, x_0 ^ x_1), H = pi(z) ^ z."""
    z = np.stack([x[:, 1], x[:, 0] ^ x[:, 1]], axis=1)
    return aes.permute(z) ^ z


@pytest.mark.parametrize("k", [1, 63, 64, 65, 200])
def test_ccr_is_pi_of_sigma_xor_sigma_in_every_block(monkeypatch, k):
    monkeypatch.setattr(crypto, "_BITS_ROWS", 64)  # several blocks and a tail
    aes = FixedKeyAES(b"0123456789abcdef")
    rng = np.random.default_rng(k)
    x = rng.integers(0, 2**64 - 1, (k, 2), dtype=U64, endpoint=True)
    d = rng.integers(0, 2**64 - 1, 2, dtype=U64, endpoint=True)
    h0, h1 = _sigma_hash(aes, x), _sigma_hash(aes, x ^ d)
    np.testing.assert_array_equal(aes.ccr_block(x), h0)
    np.testing.assert_array_equal(aes.ccr_block(x, d), h1)
    np.testing.assert_array_equal(aes.ccr_word(x, d), h1[:, 0])
    np.testing.assert_array_equal(aes.ccr_bits(x), (h0[:, 0] & U64(1)).astype(np.uint8))
    for kind, low in (("bits", lambda h: (h[:, 0] & U64(1)).astype(np.uint8)), ("word", lambda h: h[:, 0]),
                      ("block", lambda h: h)):
        a, b = aes.ccr_pair(x, d, kind)
        np.testing.assert_array_equal(a, low(h0))
        np.testing.assert_array_equal(b, low(h1))
    # not the TCCR hash of the same rows (one AES call, no tweak)
    assert not np.array_equal(aes.ccr_word(x), aes.tccr_word(x, 0, FixedKeyAES.TAG_OT))


@pytest.mark.parametrize("mode", ["semi-honest", "tccr_hash", "checked"])
def test_one_block_outputs_use_the_mode_s_hash_and_stay_cots(mode):
    s, r = _pair(seed=21, checked=mode == "checked")
    s.tccr_hash = r.tccr_hash = mode == "tccr_hash"
    assert s.uses_tccr == r.uses_tccr == (mode != "semi-honest")
    (q, delta), t = _both(lambda: s.random_cots(3000), lambda: r.random_cots(3000))
    c = (t[:, 0] & U64(1)).astype(bool)
    start = 1 << 20  # any tweak start both sides share
    for kind, recv in (("bits", r._hash_bits), ("word", r._hash_word)):
        h0, h1 = s._hash_pair(q, start, kind)
        np.testing.assert_array_equal(recv(t, start), np.where(c, h1, h0))  # the receiver's is m_c
        if mode == "semi-honest":
            expect = s._ccr_aes.ccr_word(q) if kind == "word" else s._ccr_aes.ccr_bits(q)
        else:
            expect = (s._aes.tccr_word(q, start, FixedKeyAES.TAG_OT) if kind == "word"
                      else s._aes.tccr_bits(q, start, FixedKeyAES.TAG_OT))
        np.testing.assert_array_equal(h0, expect)
    b0, b1 = s._hash_pair(q, start, "block")
    np.testing.assert_array_equal(r._pad(t, start, 2), np.where(c[:, None], b1, b0))
    # the operations on top agree end to end in this mode
    rng = np.random.default_rng(5)
    n = MAIN.usable + 500  # spans an iteration
    cc = rng.integers(0, 2, n).astype(np.uint8)
    (m0, m1), mc = _both(lambda: s.random_bit_ot(n), lambda: r.random_bit_ot(cc))
    np.testing.assert_array_equal(mc, np.where(cc.astype(bool), m1, m0))
    assert 0.45 < float(np.mean(m0 ^ m1)) < 0.55
    dl = rng.integers(0, 2**63, (n, 2), dtype=U64)
    for w in (1, 2):
        x0, got = _both(lambda: s.cot_send(dl[:, :w].copy(), bits=40), lambda: r.cot_recv(cc, w=w, bits=40))
        np.testing.assert_array_equal(got.reshape(n, w),
                                      (x0.reshape(n, w) + cc.astype(U64)[:, None] * dl[:, :w]) & U64((1 << 40) - 1))
    if mode != "checked":  # reserved COTs are the semi-honest engines' (checked engines refuse them)
        hs, (cr, hr) = _both(lambda: s.reserve_cots(2000), lambda: r.reserve_cots(2000))
        x0, got = _both(lambda: s.cot_send_reserved(hs, dl[:2000, 0].copy()), lambda: r.cot_recv_reserved(hr))
        np.testing.assert_array_equal(got, x0 + cr.astype(U64) * dl[:2000, 0])


def test_the_hash_must_agree_on_both_sides():
    """One side on TCCR, the other on the one-call hash: the receiver's bits are no longer m_c
    (about half differ) -- the flag is what decides, and a session sets it on both parties."""
    s, r = _pair(seed=9)
    s.tccr_hash = True
    c = np.random.default_rng(2).integers(0, 2, 4000).astype(np.uint8)
    (m0, m1), mc = _both(lambda: s.random_bit_ot(4000), lambda: r.random_bit_ot(c))
    wrong = float(np.mean(mc != np.where(c.astype(bool), m1, m0)))
    assert 0.4 < wrong < 0.6


@pytest.mark.parametrize("checked_ot", [False, True])
def test_exact_kernel_sessions_keep_tccr_exactly_when_client_malicious(checked_ot):
    pp = SimpleNamespace(ot_engine="softspoken", checked_ot=checked_ot)

    def side(p):
        _setup_exact_ot(p, pp, "gaussian")
        return p.ot_sender.uses_tccr, p.ot_receiver.uses_tccr

    r0, r1 = run_two_party(side, side, seed=3)
    assert r0 == r1 == (checked_ot, checked_ot)  # both directions, both parties
