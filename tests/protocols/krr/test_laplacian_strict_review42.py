"""Review of protocol 42 (the bound chain): targeted client deviations, each run against models that
differ only in the training data X (test_laplacian_strict_deviation's harness: "ideal" = F(q')
bit-exact, "abort:<server error>" = an abort before the tail).

* The products' lattice matvec at the proof's edge: the client encrypts its (committed) query with
  every noise coefficient at the proven bound (|e| = 32, s all ones). A reply that decrypted wrongly
  for such ciphertexts would move the client's share of S by an amount depending on the server's
  P = b_S - T2 -- i.e. on b = [x < q'] -- and step 6 would then abort for some X only. It decrypts
  exactly: F(q') for every X (he_matvec_checked's noise bound covers the M-bit P, ``w_bits``).
* Step 5, beta's MAC taken with the other choice (the client adds or drops tau on b_1's pad): a
  forgery against the key P_(1-c) it lacks -- an abort for every X, whatever the server's scale
  1 - a_1 (which depends on X) is.
"""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import bfv_proof, commit_fp48, fp48
from tests.protocols.krr.deviations import PartyPatch
from tests.protocols.krr.test_laplacian_strict_deviation import _models, _same_outcome_for_every_x

I64 = np.int64


def _max_noise_encrypt(orig, ring, rng, seed, messages, t_bits):
    """bfv_proof.client_encrypt with the proven bound's extreme noise (the slow path's formulas)."""
    messages = np.atleast_2d(np.asarray(messages, dtype=I64))
    B, n_msg = messages.shape
    pk1, c1 = bfv_proof.public_parts(ring, seed, B)
    pk1_hat, c1_hat = ring.ntt(pk1), ring.ntt(c1)
    s = np.ones(ring.n, dtype=I64)
    e_pk = np.full(ring.n, -bfv_proof.NOISE_BOUND, dtype=I64)
    e = np.full((B, ring.n), -bfv_proof.NOISE_BOUND, dtype=I64)
    e[:, 1::2] = bfv_proof.NOISE_BOUND - 1
    s_hat = ring.ntt(np.broadcast_to(s, (ring.k, ring.n)), ternary=True)
    m = np.zeros((B, ring.n), dtype=I64)
    m[:, :n_msg] = messages
    pk0 = ring.sub(bfv_proof._times_t(ring, e_pk, t_bits), ring.intt(ring.mul(pk1_hat, s_hat)))
    c0 = ring.sub(ring.add(ring.from_signed(m), bfv_proof._times_t(ring, e, t_bits)), ring.intt(ring.mul(c1_hat, s_hat)))
    return pk0, c0, bfv_proof.Witness(s, e_pk, e, s_hat, (pk1_hat, c1_hat))


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_lattice_ciphertexts_at_the_proven_noise_bound_give_f_for_every_x(engine):
    used = {"n": 0}

    def enc(orig, *a, **kw):
        used["n"] += 1
        return _max_noise_encrypt(orig, *a, **kw)
    assert _same_outcome_for_every_x(_models(engine), patches=(PartyPatch(bfv_proof, "client_encrypt", enc),)) == "ideal"
    assert used["n"] == 3


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
@pytest.mark.parametrize("point", [0, 5])
def test_beta_mac_with_the_other_choice_aborts_for_every_x(engine, point):
    def other(orig, party, chooser, pads, *, choices=None, **kw):
        c = np.ascontiguousarray(choices, dtype=np.uint8).ravel().copy()
        c[point] ^= 1
        return orig(party, chooser, pads, choices=c, **kw)
    got = _same_outcome_for_every_x(_models(engine), patches=(PartyPatch(commit_fp48, "bit_macs_on_pads", other),))
    assert got == "abort:StrictCheckError"
