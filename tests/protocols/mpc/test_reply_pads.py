"""Reply pads of the checked lattice cross term (stop 11, protocols.mpc.he_matvec_checked.ReplyPad):
the query-independent half of a session's reply (seed, pk1 and c1_b, u's NTTs, the c1 words), made
before the session. A session with a pad gives exact shares; each pad serves one session at most
(also when the client deviates and the server aborts); forked workers never use their parent's
pads; a deviating client is caught in the proof with a pad as without; the Gaussian protocol refills
the pool after each session, only when the server asked for pads."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from protocols.mpc import authenticated as au
from protocols.mpc import bfv_proof, he_matvec_checked as hc
from protocols.mpc.authenticated import MacCheckError
from protocols.mpc.randomness import SecureRandom
from protocols.testing import checked_ot, run_two_party
from tests.protocols.mpc.test_bfv_proof import encrypt_under_c1_one

U64 = np.uint64
CLIENT = 1
ROWS, D, XB, M = 700, 30, 12, 40  # 3 output blocks of 273 rows


def _rngs(tag: str):
    """Seeded generators for the pads (tests only: reproducible)."""
    count = iter(range(1000))
    return lambda: SecureRandom(hashlib.blake2b(f"{tag}:{next(count)}".encode(), digest_size=16).digest())


@pytest.fixture()
def case():
    rng = np.random.default_rng(23)
    X = rng.integers(0, 2 ** XB, (ROWS, D), dtype=U64)
    q = rng.integers(0, 2 ** XB, D, dtype=U64)
    pm = hc.PreparedChecked(X, XB, M)  # a fresh one per test: its own pool
    assert pm.plan.outputs == 3
    return X, q, pm


def _bits(v):
    return ((v[:, None] >> np.arange(XB, dtype=U64)) & U64(1)).astype(np.uint8).ravel()


def _session(pm, q, seeds: list, encrypt=bfv_proof.client_encrypt, seed=5):
    def server(p):
        return hc.matvec_sender(p, CLIENT, pm, q_pads=au.random_choices(p, CLIENT, n=D * XB), domain=3)

    def enc(ring, rng, s, msgs, t_bits):
        seeds.append(s)  # the seed the server sent
        return encrypt(ring, rng, s, msgs, t_bits)

    def client(p):
        pads = au.random_choices(p, CLIENT, n=D * XB, choices=_bits(q))
        return hc.matvec_receiver(p, CLIENT, q, XB, ROWS, M, q_pads=pads, q_bits=_bits(q), domain=3, encrypt=enc)

    return run_two_party(server, client, seed=seed, setup=checked_ot)


def test_sessions_with_pads_are_exact_and_use_each_pad_once(case):
    X, q, pm = case
    hc.fill_pads(pm, 2, rng_factory=_rngs("exact"))
    made = [pad.seed for pad in pm.pads]
    assert len(set(made)) == 2
    want = (X.astype(object) @ q.astype(object)) % (1 << M)
    seeds: list = []
    for left in (1, 0, 0):  # two sessions on the pads, then one inline (the pool is empty)
        s0, s1 = _session(pm, q, seeds)
        assert ((s0.astype(object) + s1.astype(object)) % (1 << M) == want).all()
        assert len(pm.pads) == left
    assert seeds[:2] == made  # the pads' seeds, in order, each once
    assert seeds[2] not in made  # the inline session drew its own
    # a pad's u's are fresh per output block and ternary, its c1 words the reply's size
    pad = hc.make_pad(pm, _rngs("shape")())
    assert len(pad.c1_words) == 1 and pad.c1_words[0].shape == (3 * pm.ring.n, pm.plan.word_bytes)
    u = pm.ring.intt(pad.u_hat)  # back to coefficients: {0, 1, p - 1}
    assert all(set(np.unique(u[o, 0])) <= {0, 1, int(pm.ring.primes[0]) - 1} for o in range(3))
    assert not (u[0] == u[1]).all() and not (u[1] == u[2]).all()


def test_a_deviating_client_aborts_with_a_pad_and_the_pad_is_gone(case, monkeypatch):
    """A ciphertext under c1 = 1 (not the seed's c1): the proof fails before any reply; the pad
    whose seed went out is not kept for another session."""
    X, q, pm = case
    hc.fill_pads(pm, 1, rng_factory=_rngs("abort"))

    def boom(*a, **k):
        raise AssertionError("the server computed a reply for an ill-formed ciphertext")

    monkeypatch.setattr(hc, "_flood_residues", boom)
    with pytest.raises(MacCheckError):
        _session(pm, q, [], encrypt=encrypt_under_c1_one)
    assert pm.pads == []


def test_forked_workers_drop_their_parents_pads(case, monkeypatch):
    X, q, pm = case
    hc.fill_pads(pm, 1, rng_factory=_rngs("fork"))
    pid = hc.os.getpid()
    monkeypatch.setattr(hc.os, "getpid", lambda: pid + 1)  # as in a worker forked after the fill
    assert hc.take_pad(pm) is None and pm.pads == []
    hc.refill_pads(pm)  # the worker makes its own
    assert len(pm.pads) == 1 and pm.pads[0].pid == pid + 1


def test_gaussian_sessions_refill_only_when_asked():
    """Through the Gaussian protocol (steps 1-14): a server that asked for one pad has one again
    after each session (a fresh one), F(q') is exact with and without; one that did not has none."""
    from tests.protocols.krr import test_gaussian_malicious as tgm
    from protocols.krr import gaussian_malicious as gm

    model, pp, Xe, xx, Q, q = tgm._he_case()
    gm.prepare_server(model, pp)
    prepared = hc.prepare(Xe, pp.x_bits, pp.ring_bits, owner=model)
    assert prepared.pads == []
    for asked in (0, 1, 1):
        if asked:
            gm.prepare_server(model, pp, reply_pads=1)
        before = [pad.seed for pad in prepared.pads]
        assert len(before) == asked
        sv, y = tgm._run(model, pp, Xe, xx, q)
        assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % tgm._ring(pp)
        assert len(prepared.pads) == asked and not set(before) & {pad.seed for pad in prepared.pads}
