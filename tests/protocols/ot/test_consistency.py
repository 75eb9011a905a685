"""The OT-extension consistency check (client-malicious mode): honest receivers pass, receivers
with inconsistent columns are caught exactly when their deviation would touch the sender's secret."""
from __future__ import annotations

import os

import numpy as np
import pytest

from protocols.ot import consistency
from protocols.ot.consistency import ConsistencyError, gf128_mul, hash_key
from protocols.ot.iknp import OTExtensionReceiver
from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender
from tests.protocols.ot.test_iknp import Pair

U64 = np.uint64


def test_gf128_mul_matches_aes_gcm():
    """Our GF(2^128) product is GCM's: a one-block GHASH difference is A h^2."""
    key = os.urandom(16)
    h = hash_key(key)
    a = np.frombuffer(os.urandom(16), np.uint8)
    diff = consistency._tag(key, a) ^ consistency._tag(key, np.zeros(16, np.uint8))
    assert diff == gf128_mul(gf128_mul(int.from_bytes(a.tobytes(), "big"), h), h)
    assert gf128_mul(1 << 127, 12345) == 12345  # the field's 1


def _checked_pair(engine: str, seed: int = 5, receiver_cls=None) -> Pair:
    p = Pair(chunk=4096, seed=seed)
    if engine == "softspoken":
        p.S = SoftSpokenSender(p.c0, k=4, seed=seed)
        p.R = (receiver_cls or SoftSpokenReceiver)(p.c1, k=4, seed=seed + 1)
    elif receiver_cls is not None:
        p.R = receiver_cls(p.c1, seed=seed + 1, chunk=4096)
    p.S.checked = p.R.checked = True
    p.run(p.S.setup, p.R.setup)
    return p


@pytest.mark.parametrize("engine", ["iknp", "softspoken"])
def test_honest_receiver_passes_and_outputs_are_correct(engine):
    p = _checked_pair(engine)
    rng = np.random.default_rng(1)
    n = 5000  # two pieces of 4096 (IKNP) / one (SoftSpoken): each piece checked
    c = rng.integers(0, 2, n).astype(np.uint8)
    delta = rng.integers(0, 2**64, n, dtype=U64, endpoint=False)
    x0, got = p.run(lambda: p.S.cot_send(delta), lambda: p.R.cot_recv(c))
    assert np.array_equal(got, x0 + c.astype(U64) * delta)
    # precomputed pools are checked when extended, then derandomized as before
    p.run(lambda: p.S.precompute(700), lambda: p.R.precompute(700))
    tables = rng.integers(0, 2**64, (200, 8), dtype=U64, endpoint=False)
    idx = rng.integers(0, 8, 200)
    _, y = p.run(lambda: p.S.lut_send(tables), lambda: p.R.lut_recv(idx, 3))
    assert np.array_equal(y, tables[np.arange(200), idx])
    assert p.S._checks == p.R._checks >= 2


def _flipping(base, flip):
    """A malicious receiver: flips bits of its extension message (inconsistent columns) and then
    proves as well as it can: with the Fiat-Shamir key of the message it really sent, over its
    honest rows and choices."""

    class Flip(base):
        def _prove_piece(self, message, rows, c):
            return super()._prove_piece(self._sent, rows, c)

        def _extend(self, c):
            send = self.ch.send_array
            done = []

            def patched(a, owned=False):
                if not done:  # the u / d message of this piece, before the proof
                    a = np.array(a, copy=True)
                    flip(a)
                    self._sent = a
                    done.append(1)
                return send(a, owned=owned)

            self.ch.send_array = patched
            try:
                return super()._extend(c)
            finally:
                self.ch.send_array = send

    return Flip


@pytest.mark.parametrize("col", [0, 3, 64, 127])
def test_iknp_inconsistent_column_aborts_exactly_when_it_would_leak(col):
    """Flipping one OT's choice in column j changes the sender's rows iff s_j = 1: the check must
    abort then; if s_j = 0 the deviation is invisible to the sender and touches nothing."""

    def flip(u):
        u[col, 0] ^= np.uint8(1)

    p = _checked_pair("iknp", seed=11 + col, receiver_cls=_flipping(OTExtensionReceiver, flip))
    s_j = bool(p.S._s_bits[col])
    c = np.zeros(300, dtype=np.uint8)
    delta = np.arange(300, dtype=U64)
    if s_j:
        with pytest.raises(ConsistencyError):
            p.run(lambda: p.S.cot_send(delta), lambda: p.R.cot_recv(c))
    else:
        x0, got = p.run(lambda: p.S.cot_send(delta), lambda: p.R.cot_recv(c))
        assert np.array_equal(got, x0)  # its outputs are the honest ones for choices c


def test_iknp_many_columns_flipped_is_caught():
    def flip(u):
        u[:, 0] ^= np.uint8(0x5A)

    p = _checked_pair("iknp", seed=3, receiver_cls=_flipping(OTExtensionReceiver, flip))
    with pytest.raises(ConsistencyError):
        p.run(lambda: p.S.random_ot(256), lambda: p.R.random_ot(np.zeros(256, np.uint8)))


@pytest.mark.parametrize("block", [0, 7, 31])
def test_softspoken_inconsistent_block_aborts_unless_delta_block_is_zero(block):
    def flip(d):
        d[block, 0] ^= U64(1 << 9)

    p = _checked_pair("softspoken", seed=21 + block, receiver_cls=_flipping(SoftSpokenReceiver, flip))
    leaks = int(p.S._delta[block]) != 0
    c = np.ones(400, dtype=np.uint8)
    delta = np.arange(400, dtype=U64)
    if leaks:
        with pytest.raises(ConsistencyError):
            p.run(lambda: p.S.cot_send(delta), lambda: p.R.cot_recv(c))
    else:
        x0, got = p.run(lambda: p.S.cot_send(delta), lambda: p.R.cot_recv(c))
        assert np.array_equal(got, x0 + delta)


def test_unchecked_engine_does_not_notice_the_same_deviation():
    """Without the check the deviation goes through (what the check is for)."""

    def flip(u):
        u[:, 0] ^= np.uint8(0xFF)

    p = Pair(chunk=4096, seed=9)
    p.R = _flipping(OTExtensionReceiver, flip)(p.c1, seed=10, chunk=4096)
    p.run(p.S.setup, p.R.setup)
    m0, got = p.run(lambda: p.S.random_ot(64), lambda: p.R.random_ot(np.zeros(64, np.uint8)))
    assert not np.array_equal(got[:8], m0[0][:8])  # garbled rows, and no abort


def test_forged_proof_is_rejected():
    class Forger(OTExtensionReceiver):
        def _prove_piece(self, message, rows, c):
            self._check_key(message)
            self.ch.send_array(np.frombuffer(os.urandom(consistency.PROOF_BYTES), np.uint8).copy())

    p = _checked_pair("iknp", seed=13, receiver_cls=Forger)
    with pytest.raises(ConsistencyError):
        p.run(lambda: p.S.random_ot(100), lambda: p.R.random_ot(np.ones(100, np.uint8)))


def test_proof_hides_the_choices():
    """X is uniform over fresh runs even for all-zero choices (the random padding OTs)."""
    xs = set()
    for seed in range(6):
        p = _checked_pair("iknp", seed=100 + seed)
        sent = []
        orig = p.R.ch.send_array

        def spy(a, owned=False, _o=orig):
            sent.append(np.array(a, copy=True))
            return _o(a, owned=owned)

        p.R.ch.send_array = spy
        p.R._rng = None  # fresh padding randomness (os.urandom) for this run
        p.run(lambda: p.S.random_ot(128), lambda: p.R.random_ot(np.zeros(128, np.uint8)))
        proof = [a for a in sent if a.shape == (consistency.PROOF_BYTES,)][0]
        xs.add(proof[16:].tobytes())
    assert len(xs) == 6
