"""Security review of silent OT protocols 27-28 (Half-Tree single-point COTs, checked mode):
attacks and structural checks that the functional tests of test_ferret.py do not make.

Each attack test runs the real engines (small, insecure LPN sets, seeded) and, where the attack
should fail, also a deliberately weakened variant on which it succeeds -- so the test can fail.
docs/malicious.md, "Security review of protocols 27-28", lists the findings these tests back.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.net.transport import local_channel_pair
from protocols.ot import ferret
from protocols.ot.crypto import derive_key
from protocols.ot.ferret import (
    FERRET_B11,
    FERRET_B11_SETUP,
    FERRET_MAIN,
    FERRET_SETUP,
    FerretReceiver,
    FerretSender,
    LocalLinearCode,
    LPNParams,
    ggm_punctured_tree,
)
from protocols.ot.iknp import OTExtensionSender

# the tiny LPN sets and the two-thread runner of the engine's own tests
from tests.protocols.ot.test_ferret import MAIN, SETUP, U64, _both  # noqa: E402


class _Recorder(FerretReceiver):
    """An honest receiver that keeps its view of the iterations: per batch of trees the sender's
    message, its own base rows and the iteration/tree indices; per iteration its base and output rows;
    and the session digest (public: it keys the fixed-key AES permutations)."""

    def _keys(self, digest):
        self.digest = bytes(digest)
        self.batches, self.starts, self.steps = [], [], []
        super()._keys(digest)

    def _spcot(self, base, tree0, h):
        recv = self.ch.recv_array

        def grab(*a, **kw):
            msg = recv(*a, **kw)
            self.batches.append((msg.copy(), base.copy(), tree0, self._iter))
            return msg
        self.ch.recv_array = grab
        try:
            return super()._spcot(base, tree0, h)
        finally:
            self.ch.recv_array = recv

    def _start(self, p, base):
        self.starts.append((p, base.copy(), self._iter))
        super()._start(p, base)

    def _step(self):
        rows, j0 = super()._step()
        self.steps.append((len(self.starts) - 1, rows.copy(), j0))  # the iteration's index in starts
        return rows, j0


def _pair(seed, sender=FerretSender, receiver=_Recorder, **kw):
    c0, c1 = local_channel_pair(timeout=60)
    s = sender(c0, seed=seed, params=MAIN, bootstrap=SETUP, **kw)
    r = receiver(c1, seed=seed + 1, params=MAIN, bootstrap=SETUP, **kw)
    _both(s.setup, r.setup)
    return s, r, c0, c1


def _ggm_inverse(digest: bytes):
    """pi^-1 of the session's GGM permutation (its key is public: derived from the transcript)."""
    key = derive_key(b"secureml-fe-ggm", digest)

    def inv(x: np.ndarray) -> np.ndarray:
        d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
        return np.frombuffer(d.update(np.ascontiguousarray(x).tobytes()), dtype=U64).reshape(x.shape)
    return inv


def _right_child_inversion(r: _Recorder) -> tuple[int, int]:
    """The receiver's attack on Delta: for every hidden path node p = y ^ Delta (y = XOR of the level's
    known nodes) whose *right* child p ^ H(p) it knows, invert the MMO hash as if sigma were the
    identity -- p ^ H(p) = pi(p ^ tw) ^ tw then -- and read Delta = pi^-1(right ^ tw) ^ tw ^ y.
    Returns (candidates tried, candidates equal to Delta) -- Delta taken from the sender by the caller."""
    inv = _ggm_inverse(r.digest)
    cands = []
    for msg, base, tree0, it in r.batches:
        bsz, h, _ = base.shape
        side = (base[:, :, 0] & U64(1)).astype(np.intp)
        opened = msg ^ base
        for lev in range(h - 1):  # hidden node at sums-index lev, children at lev + 1
            nodes, a = ggm_punctured_tree(r._ggm_aes, opened[:, : lev + 1], side[:, : lev + 1], tree0, it)
            y = np.bitwise_xor.reduce(nodes, axis=1)  # the punctured node is zero: the known nodes' XOR
            kids, _ = ggm_punctured_tree(r._ggm_aes, opened[:, : lev + 2], side[:, : lev + 2], tree0, it)
            m = nodes.shape[1]
            b = side[:, lev + 1]  # the opened side at the children's level: the sibling's side
            right = b == 1
            if not right.any():
                continue
            sib = kids[np.arange(bsz), b * m + a][right]
            tw = np.zeros_like(sib)
            tw[:, 0] = ferret._tweak(bsz, tree0, lev + 1, it)[right]
            cands.append(inv(sib ^ tw) ^ tw ^ y[right])
    c = np.concatenate(cands)
    return c, c.shape[0]


def _sigmaless_ccr(aes, nodes, hi, out=None):
    """The node hash without the orthomorphism: pi(z) ^ z with z = x ^ tw (a flawed variant);
    _ccr's signature (hi broadcast against the nodes' low words, optional output buffer)."""
    z = nodes.copy()
    z[..., 0] ^= hi
    h = aes.permute(z)
    h ^= z
    if out is None:
        return h
    dst = out.reshape(-1)[: h.size].reshape(h.shape)
    dst[...] = h
    return dst


@pytest.mark.parametrize("sigma", [True, False])
def test_a_receiver_inverting_the_right_child_learns_delta_only_without_sigma(sigma, monkeypatch):
    """Half-Tree's node hash must be circular-correlation robust: the receiver knows one child of each
    hidden node p = y ^ Delta. With MMO pi(z) ^ z on z = x ^ tw (no sigma) the right child is
    x ^ H(x) = pi(x ^ tw) ^ tw: invertible with the public key -- Delta in one AES decryption. With
    sigma (ours) the same computation yields nothing: no candidate equals Delta."""
    if not sigma:
        monkeypatch.setattr(ferret, "_ccr", _sigmaless_ccr)
    s, r, _, _ = _pair(seed=50)
    _both(lambda: s.random_cots(MAIN.usable), lambda: r.random_cots(MAIN.usable))
    cands, n = _right_child_inversion(r)
    hits = np.count_nonzero(np.all(cands == s._s64, axis=1))
    assert n > 60  # ~half the hidden nodes with children (S2: 8 trees x 6, main: 16 x 7 per iteration)
    if sigma:
        assert hits == 0
    else:
        assert hits == n  # every one of them gives Delta away


def test_sigma_is_a_linear_orthomorphism_and_the_tweak_enters_after_it():
    """_ccr's z = sigma(x) ^ tw: read sigma off the code with pi replaced by zero (out = z), then check
    over GF(2) that sigma and sigma ^ id both have rank 128 (Guo et al.'s orthomorphism condition)."""

    class _Zero:  # an instrument to read z out of _ccr (out = pi(z) ^ z = z), not a permutation
        @staticmethod
        def permute(z):
            return np.zeros_like(z)

    basis = np.zeros((1, 128, 2), dtype=U64)
    for i in range(128):
        basis[0, i, i // 64] = U64(1) << U64(i % 64)
    hi = np.array([0x1234_5678_9ABC], dtype=U64)
    z = ferret._ccr(_Zero, basis, hi)[0]
    z0 = ferret._ccr(_Zero, np.zeros((1, 1, 2), dtype=U64), hi)[0, 0]
    assert z0[0] == hi[0] and z0[1] == 0  # tw = (hi, 0): added after sigma
    sig = z ^ z0  # sigma(e_i), linear part

    def rank(rows: np.ndarray) -> int:
        v = [int(a) | int(b) << 64 for a, b in rows]
        rk = 0
        for bit in range(128):
            piv = next((j for j in range(rk, 128) if v[j] >> bit & 1), None)
            if piv is None:
                continue
            v[rk], v[piv] = v[piv], v[rk]
            for j in range(128):
                if j != rk and v[j] >> bit & 1:
                    v[j] ^= v[rk]
            rk += 1
        return rk

    assert rank(sig) == 128
    assert rank(sig ^ basis[0]) == 128
    assert rank(basis[0]) == 128  # the rank routine itself sees a full basis
    assert rank(np.zeros((128, 2), dtype=U64)) == 0


class _ReusedRoots(FerretSender):
    """A flawed sender whose GGM roots repeat across trees (a broken randomness source)."""

    def _spcot(self, base, tree0, h):
        orig = ferret.random_bytes
        # only this engine's calls (by its generator): the peer runs concurrently in another thread
        ferret.random_bytes = (lambda n, rng=None:
                               orig(16, rng) * (n // 16) if rng is self._rng else orig(n, rng))
        try:
            return super()._spcot(base, tree0, h)
        finally:
            ferret.random_bytes = orig


@pytest.mark.parametrize("sender", [FerretSender, _ReusedRoots])
def test_a_receiver_combining_two_trees_learns_delta_only_if_roots_repeat(sender):
    """Level 1 of tree i is (k_i, k_i ^ Delta) and the receiver opens one of them: with two trees that
    share a root and open different sides, k ^ (k ^ Delta) = Delta. The attack: XOR the opened level-1
    values of every pair of trees (all batches, all iterations) that open different sides."""
    s, r, _, _ = _pair(seed=60, sender=sender)
    _both(lambda: s.random_cots(2 * MAIN.usable), lambda: r.random_cots(2 * MAIN.usable))
    lvl1, sides = [], []
    for msg, base, _, _ in r.batches:
        lvl1.append((msg ^ base)[:, 0])
        sides.append(base[:, 0, 0] & U64(1))
    v, b = np.concatenate(lvl1), np.concatenate(sides).astype(bool)
    cand = v[b][:, None, :] ^ v[~b][None, :, :]
    hits = np.count_nonzero(np.all(cand == s._s64, axis=2))
    assert cand.shape[0] * cand.shape[1] > 100
    if sender is FerretSender:
        assert hits == 0
    else:
        assert hits > 0


@pytest.mark.parametrize("batch_rows", [None, 5 << 8])
def test_choice_bits_are_lpn_samples_of_the_stated_code(batch_rows, monkeypatch):
    """Correctness tests cannot see a degenerate LPN step (both parties would compute the same wrong
    code). Recompute every output choice bit of every iteration from the receiver's base alone:
    r = e ^ A u with u = bit 0 of the k secret rows, e the regular noise (one 1 per tree, at leaf
    alpha_i = sum_l (1 - r_{i,l}) 2^l, in protocol 38's node-major row order), A from
    LocalLinearCode.indices (the reference path, not mul_xor's gathers).  ``batch_rows`` 5 << 8:
    batches of 5 trees of MAIN's 16 (and 10 of SETUP's 8: one batch), the last one short."""
    if batch_rows is not None:
        monkeypatch.setattr(ferret, "_BATCH_ROWS", batch_rows)
    s, r, _, _ = _pair(seed=70)
    _both(lambda: s.random_cots(2 * MAIN.usable), lambda: r.random_cots(2 * MAIN.usable))
    assert len(r.starts) >= 3
    checked = 0
    for i, (p, base, it) in enumerate(r.starts):
        parts = sorted((j0, x) for si, x, j0 in r.steps if si == i)
        out = np.concatenate([x for _, x in parts])
        if out.shape[0] != p.n:
            continue  # a partly run iteration (lazy batches)
        u = (base[: p.k, 0] & U64(1)).astype(np.uint8)
        rj = (base[p.k :, 0] & U64(1)).astype(np.int64).reshape(p.t, p.h)
        alpha = ((1 - rj) << np.arange(p.h)[None, :]).sum(axis=1)
        e = np.zeros(p.n, dtype=np.uint8)
        # protocol 38's output order: in the batch of trees i0 .. i0+B-1, leaf x of tree i is row
        # i0 * 2^h + x*B + (i - i0) (B = max(1, _BATCH_ROWS >> h), the last batch maybe shorter)
        per = max(1, ferret._BATCH_ROWS >> p.h)
        tree = np.arange(p.t)
        i0 = tree - tree % per
        bsz = np.minimum(per, p.t - i0)
        e[i0 * (1 << p.h) + alpha * bsz + (tree - i0)] = 1
        code = LocalLinearCode(p.n, p.k, p.d, r._code(p).seed)
        au = np.bitwise_xor.reduce(u[code.indices(0, p.n)], axis=0)
        expect = e ^ au
        np.testing.assert_array_equal((out[:, 0] & U64(1)).astype(np.uint8), expect)
        assert 0.4 < au.mean() < 0.6 and e.sum() == p.t
        checked += 1
    assert checked >= 2  # the set-up iteration and at least one main one


def test_mul_xor_matches_the_code_across_gather_and_row_blocks():
    """LPN's gathers run in blocks of _LPN_ROWS rows; check
    A v over a row range that starts off a block and crosses both kinds of boundary, at b11's k,
    against the reference XOR of table[indices]."""
    k = FERRET_B11.k
    n = (1 << 18) + (1 << 16)
    code = LocalLinearCode(n, k, 10, hashlib.blake2b(b"review", digest_size=16).digest())
    table = np.random.default_rng(1).integers(0, 2**63, (k, 2), dtype=U64)
    j0, rows = 12_345, (1 << 18) + (1 << 14) + 77
    assert rows > ferret._LPN_ROWS
    out = np.random.default_rng(2).integers(0, 2**63, (rows, 2), dtype=U64)
    ref = out.copy()
    code.mul_xor(table, j0, out)
    idx = code.indices(j0, j0 + rows)
    for l in range(10):
        ref ^= table[idx[l]]
    np.testing.assert_array_equal(out, ref)


def _record_sends(ch):
    sent = []
    send = ch.send_array

    def rec(a, owned=False):
        sent.append(hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())
        return send(a, owned=owned)
    ch.send_array = rec
    return sent


def test_fast_paths_send_and_output_what_the_generic_paths_do():
    """random_bit_ot and one-word cot_send skip the derandomisation pass (they swap the two pads by d):
    on identically seeded engines they must send the same bytes and give the same outputs as
    OTExtensionSender's generic paths, and hash two distinct inputs for m0 and m1 (m0 != m1 for about
    half of the 1-bit OTs; a hash of equal inputs would give m0 == m1 always: both messages to the
    receiver)."""
    n = 3 * MAIN.usable // 2
    rng = np.random.default_rng(8)
    c = rng.integers(0, 2, n).astype(np.uint8)
    delta = rng.integers(0, 2**63, n, dtype=U64)

    def run(fast: bool):
        s, r, c0, _ = _pair(seed=80, receiver=FerretReceiver)
        sent = _record_sends(c0)
        if fast:
            bits = _both(lambda: s.random_bit_ot(n), lambda: r.random_bit_ot(c))
            cot = _both(lambda: s.cot_send(delta, bits=40), lambda: r.cot_recv(c, bits=40))
        else:
            bits = _both(lambda: OTExtensionSender.random_bit_ot(s, n), lambda: r.random_bit_ot(c))
            cot = _both(lambda: OTExtensionSender.cot_send(s, delta, bits=40), lambda: r.cot_recv(c, bits=40))
        return bits, cot, sent

    (fb, fc, fs), (gb, gc, gs) = run(True), run(False)
    (m0, m1), mc = fb
    np.testing.assert_array_equal(m0, gb[0][0])
    np.testing.assert_array_equal(m1, gb[0][1])
    np.testing.assert_array_equal(mc, np.where(c.astype(bool), m1, m0))
    np.testing.assert_array_equal(fc[0], gc[0])
    np.testing.assert_array_equal(fc[1], gc[1])
    np.testing.assert_array_equal(fc[1], (fc[0] + c.astype(U64) * delta) & U64((1 << 40) - 1))
    assert fs == gs and len(fs) > 0
    assert 0.45 < np.mean(m0 != m1) < 0.55


def test_no_cot_row_and_no_hash_tweak_is_used_twice():
    """Across mixed calls (random COTs, reserved COTs, chosen-choice COTs, 1-bit and 128-bit random
    OTs, precompute) spanning several iterations: every row the buffer hands out is distinct, none is
    a base row (LPN secret or single-point COT) of any iteration, and the OT-hash tweak ranges of
    both roles are disjoint and identical between the roles."""
    taken = {0: [], 1: []}
    ranges = {0: [], 1: []}

    def instrument(eng, role):
        parts, nxt = eng._take_parts, eng._next_index

        def tp(k):  # every row leaves the buffer here (_take and, since 28, reserve_cots' views)
            got = parts(k)
            taken[role].append(np.concatenate(got).copy())
            return got
        eng._take_parts = tp

        def ni(k):
            start = nxt(k)
            ranges[role].append((start, k))
            return start
        eng._next_index = ni

    s, r, _, _ = _pair(seed=90)
    instrument(s, 0)
    instrument(r, 1)
    rng = np.random.default_rng(9)
    c = rng.integers(0, 2, 3000).astype(np.uint8)
    d = rng.integers(0, 2**63, 3000, dtype=U64)
    _both(lambda: s.random_cots(1500), lambda: r.random_cots(1500))
    hs, (ch, hr) = _both(lambda: s.reserve_cots(2500), lambda: r.reserve_cots(2500))
    _both(lambda: s.cot_send(d, bits=64), lambda: r.cot_recv(c, bits=64))
    _both(lambda: s.cot_send_reserved(hs, d[:2500], bits=30), lambda: r.cot_recv_reserved(hr, bits=30))
    _both(lambda: s.random_bit_ot(3000), lambda: r.random_bit_ot(c))
    _both(lambda: s.precompute(MAIN.usable), lambda: r.precompute(MAIN.usable))
    _both(lambda: s.random_ot(3000), lambda: r.random_ot(c))
    _both(lambda: s.cot_send(np.stack([d, d], 1), bits=64), lambda: r.cot_recv(c, w=2, bits=64))
    assert r.iterations >= 4, r.iterations
    for role, eng in ((0, s), (1, r)):
        rows = np.concatenate(taken[role])
        assert rows.shape[0] == 1500 + 2500 + 3 * 3000 + 3000
        keyed = rows.copy()
        keyed[:, 0] &= ~U64(1)  # compare 127 bits (bit 0: 0 or the choice bit): stricter
        assert np.unique(keyed, axis=0).shape[0] == rows.shape[0]
    bases = np.concatenate([b for _, b, _ in r.starts])
    allr = np.concatenate(taken[1])
    both = np.concatenate([bases, allr])
    assert np.unique(both, axis=0).shape[0] == both.shape[0]  # no handed-out row was a base row
    assert ranges[0] == ranges[1]
    pos = 0
    for start, k in ranges[0]:
        assert start == pos  # contiguous, increasing: each tweak once
        pos += k


def test_tweaks_are_unique_per_level_tree_and_iteration():
    """The GGM tweak TAG | level << 8 | tree << 17 | it << 40 is unique for level < 2^9, tree < 2^23,
    it < 2^24: every shipped set fits, and a set or an iteration count outside is refused (review
    fix: before, t >= 2^23 trees or 2^24 iterations wrapped onto other tweaks silently)."""
    for p in (FERRET_MAIN, FERRET_SETUP, FERRET_B11, FERRET_B11_SETUP):
        tw = np.concatenate([ferret._tweak(p.t, 0, lev, it) for it in (0, 1, (1 << 24) - 1)
                             for lev in range(1, p.h)])
        assert np.unique(tw).shape[0] == tw.shape[0]
    with pytest.raises(ValueError):
        LPNParams(n=(1 << 23) << 1, k=1000, t=1 << 23, h=1)
    LPNParams(n=((1 << 23) - 1) << 1, k=1000, t=(1 << 23) - 1, h=1)  # the largest allowed
    s, r, _, _ = _pair(seed=95, receiver=FerretReceiver)
    s._iter = r._iter = 1 << 24  # as after 2^24 iterations
    with pytest.raises(RuntimeError):
        _both(lambda: s.random_cots(2 * MAIN.usable), lambda: r.random_cots(2 * MAIN.usable))


class _RandomFlips(FerretSender):
    """A deviating sender flipping random bits anywhere in its level sums (every tree, every level)."""

    flips = 0

    def _spcot(self, base, tree0, h):
        send = self.ch.send_array
        rng = np.random.default_rng(1000 + tree0 + 7 * self._iter)

        def patched(msg, owned=False):
            msg = msg.copy()
            flat = msg.reshape(-1).view(np.uint8)
            pos = rng.integers(0, flat.size * 8, 1 + flat.size // 64)
            np.bitwise_xor.at(flat, pos // 8, (1 << (pos % 8)).astype(np.uint8))
            self.flips += pos.size
            return send(msg, owned=True)
        self.ch.send_array = patched
        try:
            return super()._spcot(base, tree0, h)
        finally:
            self.ch.send_array = send


def test_a_sender_flipping_random_message_bits_moves_no_choice_bit():
    """The receiver's choice bits r = e ^ A u do not depend on anything the sender sends: random bit
    flips across all level sums of all trees (S2 and main iterations) leave every choice bit equal to
    the honest run's, and the damage shows in the strings only."""
    n = 2 * MAIN.usable

    def run(cls):
        s, r, _, _ = _pair(seed=97, sender=cls, receiver=FerretReceiver)
        (q, delta), t = _both(lambda: s.random_cots(n), lambda: r.random_cots(n))
        return s, q, delta, t

    _, q, delta, t = run(FerretSender)
    s2, q2, delta2, t2 = run(_RandomFlips)
    assert s2.flips > 50
    np.testing.assert_array_equal(t2[:, 0] & U64(1), t[:, 0] & U64(1))
    r2 = (t2[:, 0] & U64(1)).astype(bool)
    assert np.any(q2 != np.where(r2[:, None], t2 ^ delta2, t2))


class _ChosenS1(_Recorder):
    """A deviating receiver (checked mode: the client) that picks all its S1 choice bits -- 1 here, so
    every S2 tree is punctured at its first leaf and the S2 LPN secret is all ones (A u = 0: d = 10
    ones per row).  (All 0, the choice before protocol 38, puts every S2 noise bit at a last leaf,
    rows (2^h' - 1) t' + i in the node-major order: past the reserved rows, so every later base bit
    is 0 too and no right child is ever opened -- nothing for the attacks below to try.)"""

    def setup(self):
        orig = ferret.random_bytes
        # our S1 choices only (by our generator): the sender's S2 roots come from the same function,
        # concurrently, in the other thread
        ferret.random_bytes = lambda n, rng=None: b"\xff" * n if rng is self._rng else orig(n, rng)
        try:
            super().setup()
        finally:
            ferret.random_bytes = orig


def test_a_receiver_choosing_its_s1_bits_controls_its_choice_bits_not_delta():
    """Checked mode: S1 binds the receiver to *some* choice bits, not to random ones. A receiver that
    picks them (all 1) fixes its S2 outputs' choice bits (A u = 0, every alpha = 0: one 1 per tree,
    at its first leaf) -- it may, as a receiver chooses anyway -- while every output is still a COT
    and neither attack above finds Delta: it opened one side per level, as an honest receiver."""
    s, r, _, _ = _pair(seed=99, receiver=_ChosenS1, checked=True)
    assert s._s1_checked and r._s1_checked
    p, base, _ = r.starts[0]
    assert p == SETUP and np.all(base[:, 0] & U64(1))
    out = np.concatenate([x for i, x, _ in sorted(r.steps, key=lambda z: z[2]) if i == 0])
    expect = np.zeros(SETUP.n, dtype=np.uint64)
    expect[: SETUP.t] = 1  # one batch of SETUP.t trees, node-major (protocol 38): leaf 0 of tree i is row i
    np.testing.assert_array_equal(out[:, 0] & U64(1), expect)
    (q, delta), t = _both(lambda: s.random_cots(2 * MAIN.usable), lambda: r.random_cots(2 * MAIN.usable))
    rr = (t[:, 0] & U64(1)).astype(bool)
    np.testing.assert_array_equal(q, np.where(rr[:, None], t ^ delta, t))
    cands, n = _right_child_inversion(r)
    assert n > 0 and not np.any(np.all(cands == s._s64, axis=1))
    lvl1 = np.concatenate([(m ^ b)[:, 0] for m, b, _, _ in r.batches])
    assert np.unique(lvl1, axis=0).shape[0] == lvl1.shape[0]  # the sender's roots stayed fresh
    pairs = lvl1[:, None, :] ^ lvl1[None, :, :]  # every pair (the sides here are mostly equal)
    assert pairs.shape[0] > 20 and not np.any(np.all(pairs == s._s64, axis=2))
