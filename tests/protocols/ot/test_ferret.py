"""Silent OT (Ferret-style): the COT correlation for every output, GGM puncturing, the LPN code,
the derived OT operations of the IKNP interface, traffic, and a real TCP run.

Small LPN parameter sets (insecure, for speed); every run is seeded, so every check is deterministic.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.net.transport import TCPChannel, connect, listen, local_channel_pair
from protocols.ot import ferret
from protocols.ot.crypto import FixedKeyAES, derive_key
from protocols.ot.ferret import (
    FERRET_B11,
    FERRET_MAIN,
    FERRET_SETUP,
    FerretReceiver,
    FerretSender,
    LocalLinearCode,
    LPNParams,
    ferret_bits_per_cot,
    ggm_punctured_tree,
    ggm_tree,
)

U64 = np.uint64
# tiny sets: main n = 4,096 (reserve 640), set-up n = 1,024 >= 640
MAIN = LPNParams(n=16 << 8, k=512, t=16, h=8)
SETUP = LPNParams(n=8 << 7, k=256, t=8, h=7)


def _both(fs, fr):
    out = {}

    def run():
        try:
            out["s"] = fs()
        except BaseException as e:  # surfaced below
            out["e"] = e

    t = threading.Thread(target=run)
    t.start()
    got = fr()
    t.join(60)
    if "e" in out:
        raise out["e"]
    return out["s"], got


def _pair(seed: int = 0, bootstrap: LPNParams | None = SETUP, params: LPNParams = MAIN):
    c0, c1 = local_channel_pair(timeout=60)
    s = FerretSender(c0, seed=seed, params=params, bootstrap=bootstrap)
    r = FerretReceiver(c1, seed=seed + 1, params=params, bootstrap=bootstrap)
    _both(s.setup, r.setup)
    return s, r, c0, c1


def _check_correlation(q: np.ndarray, delta: np.ndarray, t: np.ndarray) -> np.ndarray:
    r = (t[:, 0] & U64(1)).astype(bool)
    expect = t.copy()
    expect[r] ^= delta
    np.testing.assert_array_equal(q, expect)  # q = t ^ r Delta, every output
    return r


@pytest.mark.parametrize("bootstrap", [SETUP, None])
def test_every_output_is_a_cot_across_iterations(bootstrap):
    s, r, _, _ = _pair(seed=3, bootstrap=bootstrap)
    (q, delta), t = _both(lambda: s.random_cots(3 * MAIN.usable + 100), lambda: r.random_cots(3 * MAIN.usable + 100))
    assert s.iterations == r.iterations >= 4
    assert delta[0] & U64(1) == 1 and not np.any(q[:, 0] & U64(1))  # the bit-0 convention
    _check_correlation(q, delta, t)
    # and the next call continues the same buffer with fresh outputs
    (q2, _), t2 = _both(lambda: s.random_cots(777), lambda: r.random_cots(777))
    _check_correlation(q2, delta, t2)
    assert np.unique(np.concatenate([q, q2]), axis=0).shape[0] == q.shape[0] + q2.shape[0]


def test_choice_bits_and_strings_look_uniform():
    s, r, _, _ = _pair(seed=11)
    n = 40_000
    (q, delta), t = _both(lambda: s.random_cots(n), lambda: r.random_cots(n))
    bits = _check_correlation(q, delta, t)
    # seeded run: these are fixed numbers, checked against loose bounds (binomial sd 0.0025)
    assert abs(bits.mean() - 0.5) < 0.02
    runs = np.count_nonzero(bits[1:] != bits[:-1]) / (n - 1)
    assert abs(runs - 0.5) < 0.02  # no long constant stretches (the noise is sparse, A u is not)
    # regular noise alone would be 1/256 ones per block: the LPN term must mix them in every block
    per_block = bits[: (n // 256) * 256].reshape(-1, 256).mean(axis=1)
    assert per_block.min() > 0.3 and per_block.max() < 0.7
    # every bit of q except bit 0 (fixed at 0 by convention) balanced; Delta's 127 free bits too
    qb = np.unpackbits(q.view(np.uint8), axis=1, bitorder="little").mean(axis=0)
    assert qb[0] == 0 and np.all(np.abs(qb[1:] - 0.5) < 0.02)
    assert np.unique(q, axis=0).shape[0] == n


def test_seeded_runs_repeat_and_seeds_differ():
    def run(seed):
        s, r, _, _ = _pair(seed=seed)
        (q, d), t = _both(lambda: s.random_cots(5000), lambda: r.random_cots(5000))
        return q, t
    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_iterations_send_one_way_and_the_stated_bytes():
    s, r, c0, c1 = _pair(seed=2)
    r0, s0 = c1.bytes_sent, c0.bytes_sent
    need = s.available + 2 * MAIN.usable
    _both(lambda: s.precompute(2 * MAIN.usable), lambda: r.precompute(2 * MAIN.usable))
    assert s.available == r.available >= need
    assert c1.bytes_sent == r0  # the receiver sends nothing: silent
    payload = c0.bytes_sent - s0
    assert s.iterations - 1 >= 2
    per_it = payload / (s.iterations - 1)
    assert MAIN.message_bytes <= per_it <= MAIN.message_bytes * 1.1  # + frame / array headers


def test_derived_operations_match_the_iknp_interface():
    s, r, _, _ = _pair(seed=7)
    rng = np.random.default_rng(0)
    n = 3 * MAIN.usable // 2  # spans an iteration
    c = rng.integers(0, 2, n).astype(np.uint8)
    delta = rng.integers(0, 2**63, n, dtype=U64)
    x0, got = _both(lambda: s.cot_send(delta, bits=24), lambda: r.cot_recv(c, bits=24))
    np.testing.assert_array_equal(got, (x0 + c.astype(U64) * delta) & U64((1 << 24) - 1))
    (m0, m1), mc = _both(lambda: s.random_ot(n), lambda: r.random_ot(c))
    np.testing.assert_array_equal(mc, np.where(c[:, None].astype(bool), m1, m0))
    assert not np.any(np.all(m0 == m1, axis=1))
    (b0, b1), bc = _both(lambda: s.random_bit_ot(n), lambda: r.random_bit_ot(c))
    np.testing.assert_array_equal(bc, np.where(c.astype(bool), b1, b0))
    a0, a1 = rng.integers(0, 2**63, (2, 500, 3), dtype=U64)
    _, got = _both(lambda: s.ot_send(a0, a1), lambda: r.ot_recv(c[:500], w=3))
    np.testing.assert_array_equal(got, np.where(c[:500, None].astype(bool), a1, a0))
    tables = rng.integers(0, 2**63, (300, 16), dtype=U64)
    idx = rng.integers(0, 16, 300)
    _, got = _both(lambda: s.lut_send(tables, bits=20), lambda: r.lut_recv(idx, 4, bits=20))
    np.testing.assert_array_equal(got, tables[np.arange(300), idx] & U64((1 << 20) - 1))


def test_chosen_choice_costs_one_bit_from_the_receiver():
    s, r, c0, c1 = _pair(seed=4)
    n = 4096
    _both(lambda: s.precompute(n), lambda: r.precompute(n))
    b0 = c1.bytes_sent
    c = np.random.default_rng(1).integers(0, 2, n).astype(np.uint8)
    _both(lambda: s.random_ot(n), lambda: r.random_ot(c))
    assert n // 8 <= c1.bytes_sent - b0 <= n // 8 + 64 * 4  # d = c ^ r, packed, plus headers


def test_ggm_puncturing():
    rng = np.random.default_rng(0)
    aes = FixedKeyAES(derive_key(b"test", b"fe-ggm"))
    delta = rng.integers(0, 2**63, size=2, dtype=U64)
    for h in (1, 3, 8):
        roots = rng.integers(0, 2**63, size=(6, 2), dtype=U64)
        leaves, sums = ggm_tree(aes, roots, delta, h, tree0=5, it=2)
        side = rng.integers(0, 2, size=(6, h)).astype(np.intp)
        opened = np.take_along_axis(sums, side[:, :, None, None], axis=2)[:, :, 0]
        got, alpha = ggm_punctured_tree(aes, opened, side, tree0=5, it=2)
        expect = ((1 - side) << np.arange(h)[None, :]).sum(axis=1)
        np.testing.assert_array_equal(alpha, expect)  # the path of the unopened sides
        for b in range(6):
            keep = np.arange(1 << h) != alpha[b]
            np.testing.assert_array_equal(got[b, keep], leaves[b, keep])
            assert not np.any(got[b, alpha[b]])
        # correlated GGM: the two sides of every level differ by Delta, every level XORs to Delta
        np.testing.assert_array_equal(sums[:, :, 0] ^ sums[:, :, 1], np.broadcast_to(delta, (6, h, 2)))
        np.testing.assert_array_equal(np.bitwise_xor.reduce(leaves, axis=1), np.broadcast_to(delta, (6, 2)))
        # the sums are XORs of the children on each side
        np.testing.assert_array_equal(sums[:, h - 1, 0], np.bitwise_xor.reduce(leaves[:, : 1 << (h - 1)], axis=1))
        # the tweaks separate trees and iterations: same roots, other tree index -> other leaves
        if h > 1:
            other, _ = ggm_tree(aes, roots, delta, h, tree0=6, it=2)
            again, _ = ggm_tree(aes, roots, delta, h, tree0=5, it=3)
            assert not np.any(np.all(other == leaves, axis=2)) and not np.any(np.all(again == leaves, axis=2))
    # a wrong opening changes the rebuilt leaves (the receiver really depends on the message)
    roots = rng.integers(0, 2**63, size=(1, 2), dtype=U64)
    leaves, sums = ggm_tree(aes, roots, delta, 4)
    side = np.zeros((1, 4), dtype=np.intp)
    opened = sums[:, :, 0].copy()
    opened[0, 1, 0] ^= U64(1)
    got, alpha = ggm_punctured_tree(aes, opened, side)
    keep = np.arange(16) != alpha[0]
    assert not np.array_equal(got[0, keep], leaves[0, keep])


def test_lpn_code_is_determined_by_its_seed():
    a = LocalLinearCode(100_000, 4_000, 10, b"\x01" * 16)
    b = LocalLinearCode(100_000, 4_000, 10, b"\x01" * 16)
    c = LocalLinearCode(100_000, 4_000, 10, b"\x02" * 16)
    ia = a.indices(0, 100_000)
    np.testing.assert_array_equal(ia, b.indices(0, 100_000))
    assert np.mean(ia == c.indices(0, 100_000)) < 0.01
    assert ia.shape == (10, 100_000) and ia.min() >= 0 and ia.max() < 4_000
    # random access by row range, at any offset
    np.testing.assert_array_equal(a.indices(12_345, 12_400), ia[:, 12_345:12_400])
    np.testing.assert_array_equal(a.indices(3, 4), ia[:, 3:4])
    # columns about uniform: every column hit close to its mean of 250 times (fixed seed)
    counts = np.bincount(ia.ravel(), minlength=4_000)
    assert counts.min() > 150 and counts.max() < 350
    # the product: out ^= XOR of the d table rows, against a plain loop
    table = np.random.default_rng(0).integers(0, 2**63, (4_000, 2), dtype=U64)
    out = np.zeros((1000, 2), dtype=U64)
    a.mul_xor(table, 500, out)
    ref = np.zeros((1000, 2), dtype=U64)
    for j in range(1000):
        for l in range(10):
            ref[j] ^= table[ia[l, 500 + j]]
    np.testing.assert_array_equal(out, ref)


def test_parameters_and_costs():
    assert FERRET_MAIN.n == 10_485_760 and FERRET_MAIN.usable == 10_485_760 - 452_000 - 1_280 * 13
    assert FERRET_SETUP.n >= FERRET_MAIN.reserve
    # Half-Tree (protocol 28): one 16-byte block per level and tree
    assert 0.21 < ferret_bits_per_cot(FERRET_MAIN, chosen=False) < 0.22
    assert ferret_bits_per_cot(FERRET_MAIN) < 1.22
    assert 0.69 < ferret_bits_per_cot(FERRET_B11, chosen=False) < 0.71
    with pytest.raises(ValueError):
        LPNParams(n=1000, k=10, t=10, h=7)  # n != t 2^h
    with pytest.raises(ValueError):
        LPNParams(n=256, k=300, t=2, h=7)  # no output left
    c0, _ = local_channel_pair()
    with pytest.raises(ValueError):
        FerretSender(c0, params=MAIN, bootstrap=LPNParams(n=512, k=64, t=4, h=7))  # set-up too small


def test_checked_mode_is_chosen_before_set_up():
    """Checked mode lives in S1 (the checked SoftSpoken extension): an engine set up unchecked
    refuses to be switched to it afterwards (its Delta may already have leaked)."""
    s, r, _, _ = _pair(seed=9)
    with pytest.raises(ValueError):
        s.checked = True
    with pytest.raises(ValueError):
        r.checked = True
    assert not s.checked and not r.checked


def _checked_pair(seed: int = 0):
    c0, c1 = local_channel_pair(timeout=60)
    s = FerretSender(c0, seed=seed, params=MAIN, bootstrap=SETUP, checked=True)
    r = FerretReceiver(c1, seed=seed + 1, params=MAIN, bootstrap=SETUP, checked=True)
    _both(s.setup, r.setup)
    return s, r, c0, c1


def test_checked_mode_runs_s1_checked_and_every_output_is_a_cot():
    """Checked mode = S1 on the checked SoftSpoken extension (PAD_OTS more OTs and a 32-byte proof
    from the receiver); the iterations, the outputs and chosen-choice COTs are the same engine's."""
    s, r, c0, c1 = _checked_pair(seed=31)
    assert s._s1_checked and r._s1_checked
    (q, delta), t = _both(lambda: s.random_cots(2 * MAIN.usable), lambda: r.random_cots(2 * MAIN.usable))
    _check_correlation(q, delta, t)
    d = np.arange(5_000, dtype=U64) * U64(0x9E3779B97F4A7C15)
    c = np.random.default_rng(2).integers(0, 2, 5_000).astype(np.uint8)
    x0, got = _both(lambda: s.cot_send(d, bits=64), lambda: r.cot_recv(c, bits=64))
    np.testing.assert_array_equal(got, x0 + c.astype(U64) * d)
    # the receiver's set-up traffic: the unchecked engine's plus the check (32 B per S1 piece and
    # PAD_OTS more OTs at 128 / k = 32 bits each; this S1 is one piece), plus the proof's framing
    _, ru, _, _ = _pair(seed=31)
    from protocols.ot.consistency import PAD_OTS, PROOF_BYTES
    extra = r.silent_bytes_sent - ru.silent_bytes_sent
    assert PROOF_BYTES + 32 * PAD_OTS // 8 <= extra <= PROOF_BYTES + 32 * PAD_OTS // 8 + 32


def test_checked_s1_aborts_a_receiver_with_inconsistent_columns(monkeypatch):
    """A deviating receiver (the client, in client-malicious sessions) whose S1 columns encode
    different choices per block -- the KOS attack on Delta -- is stopped by S1's consistency check
    before the sender sends anything that depends on Delta (its first GGM message)."""
    from protocols.ot import ferret
    from protocols.ot.consistency import ConsistencyError
    from protocols.ot.softspoken import SoftSpokenReceiver

    class Inconsistent(SoftSpokenReceiver):
        def _extend(self, c):
            send = self.ch.send_array

            def patched(a, owned=False):
                if a.dtype == U64 and a.ndim == 2:  # the d = u ^ r blocks: another choice in one OT per block
                    a = a.copy()
                    a[:, 0] ^= U64(1 << 9)
                    self.ch.send_array = send  # only this message
                return send(a, owned=owned)
            self.ch.send_array = patched
            try:
                return super()._extend(c)
            finally:
                self.ch.send_array = send

    monkeypatch.setattr(ferret, "SoftSpokenReceiver", Inconsistent)
    c0, c1 = local_channel_pair(timeout=10)
    s = FerretSender(c0, seed=5, params=MAIN, bootstrap=SETUP, checked=True)
    r = FerretReceiver(c1, seed=6, params=MAIN, bootstrap=SETUP, checked=True)
    sent = {}

    def sender():
        try:
            s.setup()
        finally:
            sent["silent"] = s.silent_bytes_sent
            c0.close()
    with pytest.raises(ConsistencyError):
        _both(sender, lambda: _swallow(r.setup))
    assert sent["silent"] == 0  # no GGM message (nothing keyed by Delta) left the sender
    # the same deviation against an unchecked engine goes through unnoticed (what the check is for)
    c0, c1 = local_channel_pair(timeout=10)
    s = FerretSender(c0, seed=5, params=MAIN, bootstrap=SETUP)
    r = FerretReceiver(c1, seed=6, params=MAIN, bootstrap=SETUP)
    _both(s.setup, r.setup)


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the peer's abort closes the channel under the receiver
        pass


class _DeviatingSender(FerretSender):
    """A Ferret sender that corrupts its iteration messages (Half-Tree: one masked level sum per level
    and tree, protocol 28): ``what`` = "level" (level h//2 of every tree), "last" (the last level, 40th
    bit), "bit0" (bit 0 of every level sum: the bit that, were the receiver to read its noise bit from
    the sender's sums, would be the one to attack)."""

    what = "level"

    def _spcot(self, base, tree0, h):
        send = self.ch.send_array

        def patched(msg, owned=False):
            msg = msg.copy()
            if self.what == "level":
                msg[:, h // 2, 0] ^= U64(0xF0F0)
            elif self.what == "last":
                msg[:, h - 1, 1] ^= U64(1 << 40)
            else:
                msg[:, :, 0] ^= U64(1)
            return send(msg, owned=True)
        self.ch.send_array = patched
        try:
            return super()._spcot(base, tree0, h)
        finally:
            self.ch.send_array = send


@pytest.mark.parametrize("batch_rows", [None, 5 << 8])
@pytest.mark.parametrize("what", ["level", "last", "bit0"])
def test_a_deviating_sender_cannot_move_the_receivers_choice_bits(what, batch_rows, monkeypatch):
    """The receiver's choice bits r = e ^ A u are functions of its own randomness only: whatever a
    deviating sender sends, they equal the honest run's (same seeds) bit for bit -- so the
    derandomisation bits d = c ^ r it later sends are as pseudorandom (LPN) as with an honest
    sender. Only the receiver's strings t go wrong (the COT breaks at the rows the error reaches).
    Before protocol 27 the receiver read its noise bit from bit 0 of the sender's c_i: clearing it
    moved ~26% of these bits (the noise gone, r = A u linear); since 28 (Half-Tree) it sets the bit
    itself on the XOR of the other leaves.  ``batch_rows`` 5 << 8: batches of 5 of MAIN's 16 trees (the
    last one short), whose leaves protocol 38 takes node-major per batch."""
    if batch_rows is not None:
        monkeypatch.setattr(ferret, "_BATCH_ROWS", batch_rows)
    n = 2 * MAIN.usable

    def run(cls):
        c0, c1 = local_channel_pair(timeout=60)
        s = cls(c0, seed=40, params=MAIN, bootstrap=SETUP)
        s.what = what
        r = FerretReceiver(c1, seed=41, params=MAIN, bootstrap=SETUP)
        _both(s.setup, r.setup)
        (q, delta), t = _both(lambda: s.random_cots(n), lambda: r.random_cots(n))
        return q, delta, t

    q, delta, t = run(FerretSender)
    q2, delta2, t2 = run(_DeviatingSender)
    np.testing.assert_array_equal(t2[:, 0] & U64(1), t[:, 0] & U64(1))
    np.testing.assert_array_equal(q2, q)  # the deviating sender's own view is the honest one
    _check_correlation(q, delta, t)  # the honest run's outputs are COTs
    r = (t2[:, 0] & U64(1)).astype(bool)
    broken = np.any(q2 != np.where(r[:, None], t2 ^ delta2, t2), axis=1)
    assert broken.any()  # the deviation did reach the receiver's strings


def test_over_tcp():
    srv = listen()
    port = srv.getsockname()[1]
    out = {}

    def server():
        ch = TCPChannel.accept(srv, timeout=30)
        s = FerretSender(ch, seed=21, params=MAIN, bootstrap=SETUP)
        delta = np.arange(20_000, dtype=U64) * U64(0x9E3779B97F4A7C15)
        out["x0"] = s.cot_send(delta, bits=64)
        out["delta"] = delta
        ch.close()

    t = threading.Thread(target=server)
    t.start()
    ch = connect("127.0.0.1", port, timeout=30)
    r = FerretReceiver(ch, seed=22, params=MAIN, bootstrap=SETUP)
    c = np.random.default_rng(5).integers(0, 2, 20_000).astype(np.uint8)
    got = r.cot_recv(c, bits=64)
    t.join(60)
    ch.close()
    srv.close()
    np.testing.assert_array_equal(got, out["x0"] + c.astype(U64) * out["delta"])


def test_lazy_batches_cost_what_a_request_needs(monkeypatch):
    from protocols.ot import ferret

    monkeypatch.setattr(ferret, "_BATCH_ROWS", 1024)  # 4 trees of 2^8 leaves per batch: 4 batches per iteration
    s, r, c0, c1 = _pair(seed=13)
    assert s.available == r.available == SETUP.n - MAIN.reserve  # the set-up iteration's extra rows
    b0 = c0.bytes_sent
    need = s.available + 1500  # the next main iteration's rows: reserve 640 first, then outputs
    _both(lambda: s.precompute(1500), lambda: r.precompute(1500))
    # batches of 1,024 rows: 640 + 1,500 rows need 3 of the iteration's 4 batches
    assert s.available == r.available == need - 1500 + 3 * 1024 - MAIN.reserve
    assert s.iterations == r.iterations == 1  # only the set-up one is complete
    sent = c0.bytes_sent - b0
    assert 3 * 4 * MAIN.h * 16 <= sent < 4 * 4 * MAIN.h * 16
    (q, delta), t = _both(lambda: s.random_cots(5 * MAIN.usable), lambda: r.random_cots(5 * MAIN.usable))
    _check_correlation(q, delta, t)
    assert s.iterations == r.iterations >= 6


def test_reserved_cots_take_the_random_choices_and_send_no_bit_back():
    s, r, c0, c1 = _pair(seed=17)
    n = MAIN.usable + 777  # spans an iteration
    handle_s, (c, handle_r) = _both(lambda: s.reserve_cots(n), lambda: r.reserve_cots(n))
    assert c.dtype == np.uint8 and set(np.unique(c)) == {0, 1} and 0.4 < c.mean() < 0.6
    delta = np.random.default_rng(3).integers(0, 2**63, n, dtype=U64)
    b1 = c1.bytes_sent
    x0, got = _both(lambda: s.cot_send_reserved(handle_s, delta, bits=24),
                    lambda: r.cot_recv_reserved(handle_r, bits=24))
    assert c1.bytes_sent == b1  # no derandomisation bit
    np.testing.assert_array_equal(got, (x0 + c.astype(U64) * delta) & U64((1 << 24) - 1))
    assert x0.max() < 1 << 24
    # the engines stay in step: a chosen-choice COT after the reserved ones
    cc = np.random.default_rng(4).integers(0, 2, 1000).astype(np.uint8)
    x0, got = _both(lambda: s.cot_send(delta[:1000], bits=64), lambda: r.cot_recv(cc, bits=64))
    np.testing.assert_array_equal(got, x0 + cc.astype(U64) * delta[:1000])


def test_reserved_cots_on_an_iknp_engine_are_chosen_at_random():
    from protocols.ot.iknp import OTExtensionReceiver, OTExtensionSender

    c0, c1 = local_channel_pair(timeout=60)
    s, r = OTExtensionSender(c0, seed=1), OTExtensionReceiver(c1, seed=2)
    _both(s.setup, r.setup)
    n = 5000
    handle_s, (c, handle_r) = _both(lambda: s.reserve_cots(n), lambda: r.reserve_cots(n))
    delta = np.random.default_rng(3).integers(0, 2**63, n, dtype=U64)
    x0, got = _both(lambda: s.cot_send_reserved(handle_s, delta, bits=24),
                    lambda: r.cot_recv_reserved(handle_r, bits=24))
    np.testing.assert_array_equal(got, (x0 + c.astype(U64) * delta) & U64((1 << 24) - 1))
    assert 0.4 < c.mean() < 0.6


def test_checked_ots_refused_on_an_engine_set_up_unchecked():
    """Checked mode needs a checked S1: an engine set up unchecked refuses the switch, and one whose
    flag was forced past the setter refuses every chosen-choice OT."""
    s, r, _, _ = _pair(seed=71)
    with pytest.raises(ValueError, match="before its set-up"):
        r.checked = True
    r._checked = True
    with pytest.raises(ValueError, match="S1 ran on the unchecked extension"):
        r._no_checked()


def test_a_batch_of_trees_is_each_tree_alone():
    """The batch expands node-major (all trees' node i together) and transposes the leaves back:
    every tree of a batch must equal that tree expanded alone (one tree: both layouts coincide),
    with its own tweak (tree index), for the sender and the punctured receiver."""
    aes = FixedKeyAES(derive_key(b"t", b"batch"))
    rng = np.random.default_rng(7)
    bsz, h, tree0 = 70, 7, 3  # 2^7 leaves: two transpose blocks of 64
    roots = rng.integers(0, 2**63, (bsz, 2), dtype=U64)
    delta = rng.integers(0, 2**63, 2, dtype=U64) | U64(1)
    leaves, sums = ggm_tree(aes, roots, delta, h, tree0=tree0, it=1)
    side = rng.integers(0, 2, (bsz, h))
    opened = sums[np.arange(bsz)[:, None], np.arange(h)[None, :], side]
    got, alpha = ggm_punctured_tree(aes, opened, side, tree0=tree0, it=1)
    for i in (0, 1, 37, bsz - 1):
        one, s1 = ggm_tree(aes, roots[i : i + 1], delta, h, tree0=tree0 + i, it=1)
        np.testing.assert_array_equal(leaves[i], one[0])
        np.testing.assert_array_equal(sums[i], s1[0])
        g1, a1 = ggm_punctured_tree(aes, opened[i : i + 1], side[i : i + 1], tree0=tree0 + i, it=1)
        assert alpha[i] == a1[0]
        np.testing.assert_array_equal(got[i], g1[0])
    known = np.ones(1 << h, dtype=bool)
    known[alpha[0]] = False
    np.testing.assert_array_equal(got[0][known], leaves[0][known])


def test_permute_into_writes_pi_in_place_and_wants_spare_bytes():
    aes = FixedKeyAES(derive_key(b"t", b"permute"))
    x = np.random.default_rng(8).integers(0, 2**63, (33, 2), dtype=U64)
    out = np.zeros((34, 2), dtype=U64)  # one block to spare
    aes.permute_into(x, out)
    np.testing.assert_array_equal(out[:33], aes.permute(x))
    with pytest.raises(ValueError):
        aes.permute_into(x, np.zeros((33, 2), dtype=U64))


@pytest.mark.parametrize("k", [1, 2, 4_000, 1 << 12, 124_000, 1 << 17, (1 << 31) - 1, 1 << 30])
def test_code_columns_are_the_stated_multiply_shift(k):
    """Column of entry (l, j) = floor(w * k / 2^32), w the (l*n + j)-th keystream word, whichever of
    _columns' two paths runs (power-of-two k: one shift), checked in Python integers."""
    n = 3_000
    code = LocalLinearCode(n, k, 3, bytes(range(16)))
    w = code._words(0, 3 * n).astype(object)
    expect = np.array([(int(x) * k) >> 32 for x in w], dtype=np.int64).reshape(3, n)
    got = code.indices(0, n)
    np.testing.assert_array_equal(got, expect)
    assert got.max() < k and (k == 1 or got.max() >= k // 2)


def test_mul_xor_on_no_rows_is_a_no_op():
    code = LocalLinearCode(1 << 10, 100, 10, bytes(16))
    table = np.ones((100, 2), dtype=U64)
    out = np.empty((0, 2), dtype=U64)
    code.mul_xor(table, 1 << 10, out)  # the empty range at the end of the code
    assert out.shape == (0, 2)


def test_mul_xor_block_size_follows_concurrent_encodings_with_the_same_output(monkeypatch):
    """While another thread of the process runs an LPN encoding, mul_xor works in 2^16-row blocks
    (fewer numpy calls, fewer GIL hand-offs), else in cache-sized 2^13-row blocks; the CTR streams
    continue across blocks, so the output is the reference A v either way -- also when the size
    changes mid-call -- and the count of running encodings is restored after each call."""
    rows, j0 = 150_000, 3
    code = LocalLinearCode(160_000, 1 << 12, 10, bytes(range(16)))
    table = np.random.default_rng(9).integers(0, 2**63, (1 << 12, 2), dtype=U64)
    ref = np.zeros((rows, 2), dtype=U64)
    idx = code.indices(j0, j0 + rows)
    for l in range(10):
        ref ^= table[idx[l]]
    sizes = []
    real = LocalLinearCode._mul_xor_block

    def record(self, streams, tc, acc, a, b, *rest):
        sizes.append(b - a)
        if others[0] and len(sizes) == 1:
            ferret._LPN_ACTIVE[0] -= 1  # the other encoding ends after our first block
        return real(self, streams, tc, acc, a, b, *rest)
    monkeypatch.setattr(LocalLinearCode, "_mul_xor_block", record)
    others = [0]
    got = np.zeros_like(ref)
    code.mul_xor(table, j0, got)
    np.testing.assert_array_equal(got, ref)
    assert set(sizes[:-1]) == {1 << 13} and ferret._LPN_ACTIVE[0] == 0
    sizes.clear()
    others[0] = 1
    monkeypatch.setattr(ferret, "_LPN_ACTIVE", [1])  # another encoding running when we start
    got = np.zeros_like(ref)
    code.mul_xor(table, j0, got)
    np.testing.assert_array_equal(got, ref)
    assert sizes[0] == 1 << 16 and set(sizes[1:-1]) == {1 << 13} and sum(sizes) == rows
    assert ferret._LPN_ACTIVE[0] == 0  # ours ended, and so had the other one
