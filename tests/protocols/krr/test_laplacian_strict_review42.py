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


def _offset_model(off: int, engine: str, i: int = 3, j: int = 2):
    """_models()'s first case with x_ij = q_j + off (test_laplacian_strict_deviation._tied, any offset)."""
    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel
    from protocols.krr import laplacian_strict as ls

    model, pp, _, q = _models(engine)[0]
    X = np.array(model.X_train, dtype=float)
    X[i, j] = (int(q[j]) + off) / 2 ** pp.frac_bits + pp.feature_lo
    model = KernelModelParams(X, model.dual_coef, model.y_offset, "laplacian", model.sigma)
    pp2 = ServedModel(model, security="semi-honest", frac_bits=4).public
    pp2.security, pp2.ot_engine = "client-malicious", engine
    pp2.validate()
    XT = ls.prepare_server(model, pp2)
    assert int(XT[j, i]) == int(q[j]) + off and pp2.x_bits == pp.x_bits
    return model, pp2, XT, q


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_the_other_threshold_where_the_client_sees_s_1_aborts_exactly_when_its_own_s_says(engine):
    """The semi-honest chain's selective failure is the client picking the other threshold (B for A)
    at one element: that changes its share exactly where x^(k) = v^(k) -- an X-dependent effect. Here
    (digit step 1 of the (5, 5) plan, element (i, j)) the client does so, i.e. flips c^1_C there iff
    its received s = A ^ B is 1 (elsewhere A = B and there is nothing to pick). Against models with
    x_ij = q'_j (a tie at digit 1) and x_ij = q'_j + 2^5 (no tie) the outcome is an abort iff the
    client's own s bit was 1 -- a function of its view (s = [x == v] ^ delta is uniform to it
    whatever X is); the session is F(q') otherwise. (With the same seeds the two models' s differ,
    as delta is the same and [x == v] is not: the harness's same-outcome-for-every-X assertion holds
    only for deviations that do not read the client's view, as its own tests do.)"""
    from protocols.krr import bound_chain
    from protocols.krr.laplacian import _pack, _unpack

    i, j = 3, 2
    seen: list[int] = []
    for off in (0, 32, 1):
        case = _offset_model(off, engine, i, j)
        N = case[1].n_train

        def other(orig, A, w, c, s):
            sb = _unpack(s, N)
            seen.append(int(sb[j, i]))
            out = _unpack(orig(A, w, c, s), N).copy()
            out[j, i] ^= sb[j, i]
            return _pack(out, A.shape[1])
        from tests.protocols.krr.test_laplacian_strict_deviation import _session
        got = _session(case, patches=(PartyPatch(bound_chain, "client_next_share", other),))
        assert got == ("abort:ChainCheckError" if seen[-1] else "ideal"), (off, seen[-1], got)
    assert len(set(seen[:2])) == 2  # the tie and the non-tie model gave the client different s bits
