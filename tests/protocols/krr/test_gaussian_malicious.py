"""Client-malicious exact Gaussian protocol (protocols.krr.gaussian_malicious), in process with real
deviating clients (patched client steps, acting on the client's thread only): every run ends in
an abort or in F(q') bit-exact (or, where the deviation is a local edit of the client's own
numbers, in F(q') shifted by what the client itself added, or a uniformly masked value)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, binding
from protocols.krr import gaussian_malicious as gm
from protocols.mpc import u128
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party
from tests.protocols.krr.deviations import perturbed_mask_reveal

U64 = np.uint64


def _case(N=24, d=6, seed=0, offset=-321.0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.6)
    model = KernelModelParams(X, rng.normal(0, 500, N), offset, "gaussian", 30.0)
    pp = ServedModel(model, security="semi-honest").public
    pp.security, pp.cross_term = "client-malicious", "ot"
    Xe = pp.encode_features(X)
    xx = (Xe * Xe).sum(axis=1, dtype=U64) & U64((1 << pp.ring_bits) - 1)
    Q = np.clip(X[3] + rng.normal(0, 1, d), 0, 49)
    return model, pp, Xe, xx, Q, pp.encode_features(Q[None])[0]


class _Patch:
    """Replace a client step of ``module`` for the client's thread only."""

    def __init__(self, module, name, fn):
        self.module, self.name, self.fn = module, name, fn
        self.orig = getattr(module, name)
        self.thread = None

    def __enter__(self):
        orig, fn = self.orig, self.fn

        def dispatch(*a, **kw):
            if threading.current_thread() is self.thread:
                return fn(orig, *a, **kw)
            return orig(*a, **kw)
        setattr(self.module, self.name, dispatch)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.orig)


def _run(model, pp, Xe, xx, q, patch=None, seed=3):
    def client(p):
        if patch is not None:
            patch.thread = threading.current_thread()
        return gm.online(p, pp, q=q)

    def go():
        return run_two_party(lambda p: gm.online(p, pp, model=model, X=Xe, xx=xx), client,
                             seed=seed, setup=checked_ot, timeout=30)
    if patch is None:
        return go()
    with patch:
        return go()


def test_honest_client_gets_f_bit_exact_and_the_prediction():
    model, pp, Xe, xx, Q, q = _case()
    sv, y = _run(model, pp, Xe, xx, q)
    assert y == gm.reference(pp, model, Xe, q, sv["rho"])
    assert abs(gm.decode(pp, y) - model.predict(Q[None])[0]) < 1e-2


def test_far_query_gives_the_offset_only_through_f():
    """A query far from every training point: F(q') is the offset (kernel below the cut) --
    which is what the prediction interface itself answers there."""
    model, pp, Xe, xx, Q, q = _case(seed=1)
    far = np.full(pp.n_features, 49.0)
    qf = pp.encode_features(far[None])[0]
    sv, y = _run(model, pp, Xe, xx, qf)
    assert y == gm.reference(pp, model, Xe, qf, sv["rho"])


def test_finding1_zeroing_the_client_factor_aborts():
    """Finding 1 through the client's factor: v_i = 0 for every i but one (would isolate one
    weighted kernel term; with all zero, the offset): the chain relations catch it."""
    model, pp, Xe, xx, Q, q = _case(seed=2)

    def chain(orig, pp_, x_lo):
        vs, zs = orig(pp_, x_lo)
        vs = [v.copy() for v in vs]
        vs[-1][np.arange(len(vs[-1])) != 5] = 0
        return vs, zs

    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, _Patch(gm, "client_chain_values", chain))


def test_finding1_zero_inputs_to_the_local_product_reveal_nothing():
    """Finding 1 through the final products: the client uses v'' = 0 (all, or all but one) in
    its local sum. Its output is then masked by sum r_i v_i: neither the offset nor a single
    weighted term comes out."""
    model, pp, Xe, xx, Q, q = _case(seed=3)
    offset = int(round(model.y_offset * (1 << pp.out_scale_bits))) % u128.MOD
    for keep in (None, 4):
        def out(orig, h, v, e, y_s):
            v2 = np.zeros_like(v)
            if keep is not None:
                v2[keep] = v[keep]
            return orig(h, v2, e, y_s)

        sv, y = _run(model, pp, Xe, xx, q, _Patch(gm, "client_output", out))
        assert y != offset
        assert abs(gm.decode(pp, y)) > 1e6  # uniformly masked: no prediction-sized value


def test_finding3_delta_on_one_distance_share_aborts():
    model, pp, Xe, xx, Q, q = _case(seed=4)

    def masked(orig, norm, s_c, c, ring_bits):
        s_c = s_c.copy()
        s_c[2] += U64(1 << 30)
        return orig(norm, s_c, c, ring_bits)

    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, _Patch(binding, "client_masked", masked))


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["u", "share", "norm", "query", "v", "z", "v-last", "local-h"]),
       i=st.integers(0, 23), k=st.integers(0, 9), bit=st.integers(0, 40))
def test_randomised_deviation_aborts_or_gives_f(which, i, k, bit):
    """Perturb one client-computed value (random index, step, bit): abort, or -- for an edit of
    the client's own received numbers -- F(q') moved by exactly the client-known edit."""
    model, pp, Xe, xx, Q, q = _case(seed=5)
    err = U64(1) << U64(bit)
    if which in ("u", "share", "norm"):
        patch = _Patch(binding, "client_masked", perturbed_mask_reveal(which, i, err, xor=False))
    elif which == "query":
        def commit_q(orig, qq, step):
            qq = orig(qq, step).copy()
            qq[i % len(qq)] ^= U64(1) << U64(bit % pp.x_bits)
            return qq
        patch = _Patch(binding, "client_commit_query", commit_q)
    elif which in ("v", "z", "v-last"):
        kk = len(gm.plan(pp)[1]) - 1 if which == "v-last" else k
        def chain(orig, pp_, x_lo):
            vs, zs = orig(pp_, x_lo)
            vs, zs = [v.copy() for v in vs], [(z[0].copy(), z[1].copy()) for z in zs]
            if which == "z":
                zs[kk][1][i] ^= err  # t_k changes: the relation z = 2^V v + t no longer holds
            else:
                vs[kk][i] ^= err
            return vs, zs
        patch = _Patch(gm, "client_chain_values", chain)
    else:
        def out(orig, h, v, e, y_s):
            h = (h[0].copy(), h[1].copy())
            h[1][i] += err
            return orig(h, v, e, y_s)
        patch = _Patch(gm, "client_output", out)
    if which == "local-h":
        sv, y = _run(model, pp, Xe, xx, q, patch, seed=i + k)
        # the client added err to its own h_i: y = F(q') + err * v_i, a number it knows itself
        D = ((Xe.astype(object) - q.astype(object)) ** 2).sum(axis=1)
        u = np.array([(int(a) + int(b)) % (1 << pp.ring_bits) for a, b in zip(D, sv["rho"])], dtype=U64)
        x_lo = (u >> U64(pp.shift_bits)) & U64((1 << pp.lo_bits) - 1)
        v_i = int(gm.client_factor(pp, x_lo)[0][-1][i])
        assert y == (gm.reference(pp, model, Xe, q, sv["rho"]) + int(err) * v_i) % u128.MOD
        return
    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, patch, seed=i + k)


def test_parameters_outside_the_protocol_are_refused_clearly():
    """A distance whose high part is wider than one table OT serves (tiny sigma against the
    bounds) is refused when the model is served, with the way out in the message."""
    from secureml.errors import ProtocolError

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 50, (8, 4))
    with pytest.raises(ProtocolError, match="semi-honest"):
        ServedModel(KernelModelParams(X, rng.normal(0, 5, 8), 0.0, "gaussian", 0.01), security="client-malicious")
    # the same model is served semi-honest without complaint
    assert ServedModel(KernelModelParams(X, rng.normal(0, 5, 8), 0.0, "gaussian", 0.01),
                       security="semi-honest").public.security == "semi-honest"


# ---- the checked lattice cross term (protocol 12's default for client-malicious sessions) -------
def _he_case(seed=0):
    model, pp, Xe, xx, Q, q = _case(seed=seed)
    pp.cross_term = "he"
    return model, pp, Xe, xx, Q, q


def test_lattice_cross_term_honest_client_gets_f_bit_exact():
    model, pp, Xe, xx, Q, q = _he_case()
    sv, y = _run(model, pp, Xe, xx, q)
    assert y == gm.reference(pp, model, Xe, q, sv["rho"])  # exact shares: the binding check passes
    assert abs(gm.decode(pp, y) - model.predict(Q[None])[0]) < 1e-2


@pytest.mark.parametrize("which", ["share", "encrypt-other", "encrypt-noise"])
def test_lattice_cross_term_deviations_abort(which):
    """Finding 3 with the lattice cross term: a perturbed cross-term share is caught by the binding
    check (the lattice shares are exact, so the relation is exact); a ciphertext of another query
    or with noise outside the proven bound is caught by the well-formedness proof. (u, norm and
    query-bit deviations meet the same binding check as with the OT cross term: tested above.)"""
    from protocols.mpc import bfv_proof

    model, pp, Xe, xx, Q, q = _he_case(seed=6)
    if which in ("share", "u", "norm"):
        patch = _Patch(binding, "client_masked", perturbed_mask_reveal(which, 3, U64(1) << U64(17), xor=False))
    elif which == "query":
        def commit_q(orig, qq, step):
            qq = orig(qq, step).copy()
            qq[1] ^= U64(4)
            return qq
        patch = _Patch(binding, "client_commit_query", commit_q)
    else:
        def enc(orig, ring, rng, seed, msgs, t_bits):
            if which == "encrypt-other":
                msgs = msgs.copy()
                msgs[0, 0] += 1
                return orig(ring, rng, seed, msgs, t_bits)
            pk0, c0, w = orig(ring, rng, seed, msgs, t_bits)
            c0 = c0.copy()
            c0[0, :, 9] = (c0[0, :, 9] + ring.scalar(1 << (t_bits + 30))[:, 0]) % ring.p[:, 0]
            return pk0, c0, w
        patch = _Patch(bfv_proof, "client_encrypt", enc)
    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, patch)


# ---- output noise (step 14, D1): added by the server after the last check ----------------------
def _noised(pp, sd):
    from protocols.krr.defense import OutputDefense

    pp.output_defense = OutputDefense.from_options(noise=sd).to_dict()
    pp.validate()
    return pp


def test_noise_honest_client_gets_f_plus_the_servers_fresh_noise():
    """y = F(q') + e exactly, e the server's own fresh draw (different per run), at the stated scale."""
    model, pp, Xe, xx, Q, q = _case(seed=4)
    _noised(pp, 3.0)
    got = []
    for seed in (11, 12):
        sv, y = _run(model, pp, Xe, xx, q, seed=seed)
        assert y == (gm.reference(pp, model, Xe, q, sv["rho"]) + sv["noise"]) % u128.MOD
        got.append(gm.decode(pp, sv["noise"]))
    assert got[0] != got[1] and all(0 < abs(e) < 30 for e in got)


@pytest.mark.parametrize("deviation", ["chain", "share"])
def test_noise_deviating_client_still_aborts(deviation):
    """Noise changes nothing before the check: a zeroed factor chain (finding 1) and a shifted
    distance share (finding 3) abort as without noise (the check comes before the noise is drawn)."""
    model, pp, Xe, xx, Q, q = _case(seed=2)
    _noised(pp, 3.0)
    if deviation == "chain":
        def fn(orig, pp_, x_lo):
            vs, zs = orig(pp_, x_lo)
            vs = [v.copy() for v in vs]
            vs[-1][np.arange(len(vs[-1])) != 5] = 0
            return vs, zs
        patch = _Patch(gm, "client_chain_values", fn)
    else:
        def fn(orig, norm, s_c, c, ring_bits):
            s_c = s_c.copy()
            s_c[3] += U64(1 << 20)
            return orig(norm, s_c, c, ring_bits)
        patch = _Patch(binding, "client_masked", fn)
    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, patch)


def test_noise_zeroed_local_product_reveals_nothing():
    """Freedom (b) with noise: v'' = 0 in the client's local sum leaves the output masked by
    sum r_i v_i -- no prediction-sized value, neither the offset nor offset + noise."""
    model, pp, Xe, xx, Q, q = _case(seed=3)
    _noised(pp, 3.0)

    def out(orig, h, v, e, y_s):
        return orig(h, np.zeros_like(v), e, y_s)

    sv, y = _run(model, pp, Xe, xx, q, _Patch(gm, "client_output", out))
    assert abs(gm.decode(pp, y)) > 1e6


def test_rounding_is_refused_in_client_malicious_mode():
    from secureml.errors import ProtocolError

    model, pp, Xe, xx, Q, q = _case()
    with pytest.raises(ProtocolError, match="--round-to"):
        ServedModel(model, security="client-malicious").set_defense(round_to=1.0)
