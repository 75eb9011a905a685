"""Client-malicious exact Gaussian protocol (protocols.krr.gaussian_malicious), in process with real
deviating clients (patched client steps, acting on the client's thread only): every run ends in
an abort or in F(q') bit-exact (or, where the deviation is a local edit of the client's own
numbers, in F(q') shifted by what the client itself added, or a uniformly masked value)."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, binding
from protocols.krr import gaussian_malicious as gm
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party
from tests.protocols.krr.deviations import PartyPatch as _Patch, perturbed_mask_reveal

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


def _run(model, pp, Xe, xx, q, patch=None, seed=3):
    def client(p):
        return gm.online(p, pp, q=q)

    def go():
        return run_two_party(lambda p: gm.online(p, pp, model=model, X=Xe, xx=xx), client,
                             seed=seed, setup=checked_ot, timeout=30)
    if patch is None:
        return go()
    with patch:
        return go()


def test_honest_client_gets_f_bit_exact_and_the_prediction():
    """Protocol 26: y = F_det + C + e_T -- bit-exact given the server's chain masks (which fix the
    carries C), and within N K' units above F_det + e_T whatever they are."""
    model, pp, Xe, xx, Q, q = _case()
    sv, y = _run(model, pp, Xe, xx, q)
    assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)
    carried = (y - gm.reference(pp, model, Xe, q, sv["rho"]) - sv["flood"]) % _ring(pp)
    assert 0 < carried <= pp.n_train * gm.tail_plan(pp).carries  # some carries, at most N K'
    assert abs(gm.decode(pp, y) - model.predict(Q[None])[0]) < 1e-4


def test_far_query_gives_the_offset_only_through_f():
    """A query far from every training point: F(q') is the offset (kernel below the cut) --
    which is what the prediction interface itself answers there."""
    model, pp, Xe, xx, Q, q = _case(seed=1)
    far = np.full(pp.n_features, 49.0)
    qf = pp.encode_features(far[None])[0]
    sv, y = _run(model, pp, Xe, xx, qf)
    assert y == (gm.reference(pp, model, Xe, qf, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)


def _ring(pp):
    return 1 << gm.tail_plan(pp).ring_bits


def _x_lo(pp, Xe, q, rho):
    D = ((Xe.astype(object) - q.astype(object)) ** 2).sum(axis=1)
    u = np.array([(int(a) + int(b)) % (1 << pp.ring_bits) for a, b in zip(D, rho)], dtype=U64)
    return u, (u >> U64(pp.shift_bits)) & U64((1 << gm.tail_plan(pp).lo_bits) - 1)


def _terms(pp, model, Xe, q, rho):
    """Every weight-derived value a broken protocol could hand out: the isolated weighted terms
    alpha_j G_j v_j (at the client's digits), the offset, and offset + each term (mod 2^R)."""
    from protocols.krr.expsum import encode_weights
    from protocols.mpc import limbs

    tp = gm.tail_plan(pp)
    u, x_lo = _x_lo(pp, Xe, q, rho)
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    xr = np.asarray(rho, dtype=U64) >> U64(pp.shift_bits)
    aG = gm.g_at(pp, xr, alpha, tp, ((u >> U64(pp.shift_bits)) >> U64(tp.lo_bits)).astype(np.int64))
    top = 1 << (64 * tp.g_limbs)
    v = gm.client_factor(pp, x_lo)
    terms = [((w - top if w >= top // 2 else w) * vi) % _ring(pp) for w, vi in zip(limbs.to_int(aG), v)]
    offset = int(round(model.y_offset * 2.0 ** tp.scale_bits)) % _ring(pp)
    return {offset} | set(terms) | {(offset + t) % _ring(pp) for t in terms}


def test_finding1_keeping_one_chain_value_gives_a_masked_number():
    """Finding 1 through the chain's end: the client sums only p_K,j (one point) or nothing. It
    holds p_K,j = alpha_j G_j v_j + s_K,j; y_S removes sum_i s_K,i, so the result is
    alpha_j G_j v_j + offset - sum_(i != j) s_K,i: masked by the other points' fresh s_K -- neither
    a weighted term, nor the offset, nor their sum, nor anything prediction-sized."""
    model, pp, Xe, xx, Q, q = _case(seed=3)
    for keep in (None, 4):
        def out(orig, p, y_s, ring_bits):
            p2 = np.zeros_like(p)
            if keep is not None:
                p2[keep] = p[keep]
            return orig(p2, y_s, ring_bits)

        sv, y = _run(model, pp, Xe, xx, q, _Patch(gm, "client_output", out))
        assert y not in _terms(pp, model, Xe, q, sv["rho"])
        assert abs(gm.decode(pp, y)) > 1e6


def test_another_digit_than_the_committed_one_opens_nothing():
    """A client that asks a chain table for another digit than its committed one (here: digit 0
    with its lowest bit flipped) cannot open that entry (bound_lut: it holds one key per committed
    bit); what it decrypts is a pseudorandom string, and its output is garbage, not F(q')."""
    from protocols.mpc import authenticated as au

    model, pp, Xe, xx, Q, q = _case(seed=7)
    first = gm.tail_plan(pp).digits[0]
    chain_digit = (pp.shift_bits + first[0], pp.shift_bits + first[1])

    def other(orig, party, chooser, digit, **kw):
        if digit == chain_digit:
            kw["values"] = kw["values"] ^ (U64(1) << U64(digit[0]))
        return orig(party, chooser, digit, **kw)

    sv, y = _run(model, pp, Xe, xx, q, _Patch(au, "bound_lut", other))
    assert y != (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)
    assert y not in _terms(pp, model, Xe, q, sv["rho"])
    assert abs(gm.decode(pp, y)) > 1e6


def test_finding3_delta_on_one_distance_share_aborts():
    model, pp, Xe, xx, Q, q = _case(seed=4)

    def masked(orig, norm, s_c, c, ring_bits):
        s_c = s_c.copy()
        s_c[2] += U64(1 << 30)
        return orig(norm, s_c, c, ring_bits)

    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, _Patch(binding, "client_masked", masked))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["u", "share", "norm", "query", "p", "z", "local-h"]),
       i=st.integers(0, 23), k=st.integers(0, 19), bit=st.integers(0, 40))
def test_randomised_deviation_aborts_or_gives_f(which, i, k, bit):
    """Perturb one client-computed value (random index, step, bit): a value bound by step 9's
    check aborts; an edit of the client's own numbers in the chain (its p_k, its received z_k, its
    h_i) moves y by exactly a number the client computes from its own view (its edited chain's
    sum minus its honest one's: protocol 26 truncates, so no longer err times the public factors
    exactly, but within K units of err times them over 2^(the later truncations)) -- never
    anything else."""
    _deviate(which, i, k, bit)


@pytest.mark.parametrize("which,i,k,bit", [("p", 0, 3, 5), ("p", 23, 19, 40), ("z", 7, 0, 0), ("z", 11, 19, 33),
                                           ("local-h", 5, 0, 17), ("u", 2, 0, 39)])
def test_chain_edits_shift_f_by_a_client_known_amount(which, i, k, bit):
    """The same, at fixed points (first and last digit, lowest and highest bit), so every kind of
    chain edit runs whatever examples the randomised test draws."""
    _deviate(which, i, k, bit)


def _deviate(which, i, k, bit):
    from fractions import Fraction

    from protocols.mpc import limbs

    model, pp, Xe, xx, Q, q = _case(seed=5)
    err = U64(1) << U64(bit)
    tp = gm.tail_plan(pp)
    K = len(tp.digits)
    k = k % K
    calls = []
    track = {}  # the client's honest chain ("h") beside its edited one ("d"), both from its own view
    if which in ("u", "share", "norm"):
        patch = _Patch(binding, "client_masked", perturbed_mask_reveal(which, i, err, xor=False))
    elif which == "query":
        def commit_q(orig, qq, step):
            qq = orig(qq, step).copy()
            qq[i % len(qq)] ^= U64(1) << U64(bit % pp.x_bits)
            return qq
        patch = _Patch(binding, "client_commit_query", commit_q)
    else:
        if which == "local-h":
            k = 0  # its received h_i = p_0,i

        def step(orig, p, g, z):
            kk = len(calls)
            calls.append(1)
            if kk == k:
                track["h"] = p.copy()
                e = limbs.zeros((len(g),), p.shape[-1])
                e[i, 0] = err
                if which in ("p", "local-h"):
                    p = limbs.add(p, e)  # p_(k-1) + err: shifted by ~err * g_k * later factors
                    out = orig(p, g, z)
                else:
                    out = orig(p, g, limbs.sub(z, e))  # z_k - err: shifted by ~err * later factors
            else:
                out = orig(p, g, z)
            if "h" in track:  # protocol 29: the client reads p'_k mod 2^R (R = 8 chain_bytes), then truncates
                R = tp.ring_bits
                track["h"] = limbs.shr(limbs.reduce(orig(track["h"], g, z), R), tp.shifts[kk])
                track["d"] = limbs.shr(limbs.reduce(out, R), tp.shifts[kk])
            return out
        patch = _Patch(gm, "client_chain_step", step)
    if which not in ("p", "z", "local-h"):
        with pytest.raises(MacCheckError):
            _run(model, pp, Xe, xx, q, patch, seed=i + k)
        return
    sv, y = _run(model, pp, Xe, xx, q, patch, seed=i + k)
    ring = _ring(pp)
    known = (limbs.total(track["d"]) - limbs.total(track["h"])) % ring
    ref = gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]
    assert y == (ref + known) % ring
    # and that known shift is err times the later public factors, rescaled, to within the floors
    _, x_lo = _x_lo(pp, Xe, q, sv["rho"])
    later = Fraction(int(err))
    for j, (a, b) in enumerate(tp.digits[k:], start=k):
        if j > k or which != "z":
            later *= int(gm.digit_factors(pp, a, b)[(int(x_lo[i]) >> a) & ((1 << (b - a)) - 1)])
        later /= 1 << tp.shifts[j]
    signed = known - ring if known >= ring // 2 else known
    assert abs(signed - later) <= K + 1


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
    assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)  # exact shares: the binding check passes
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
        assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["noise"] + sv["flood"]) % _ring(pp)
        got.append(gm.decode(pp, sv["noise"]))
    assert got[0] != got[1] and all(0 < abs(e) < 30 for e in got)


@pytest.mark.parametrize("deviation", ["u", "share"])
def test_noise_deviating_client_still_aborts(deviation):
    """Noise changes nothing before the check: a changed u (finding 3 after the fact) and a
    shifted distance share (finding 3) abort as without noise (step 9 comes before the noise is
    drawn)."""
    model, pp, Xe, xx, Q, q = _case(seed=2)
    _noised(pp, 3.0)
    patch = _Patch(binding, "client_masked", perturbed_mask_reveal(deviation, 3, U64(1 << 20), xor=False))
    with pytest.raises(MacCheckError):
        _run(model, pp, Xe, xx, q, patch)


def test_noise_zeroed_chain_reveals_nothing():
    """With noise, the client drops its whole chain (y = y_S alone): offset + e - sum s_K, masked
    by the fresh s_K -- no prediction-sized value, neither the offset nor offset + noise."""
    model, pp, Xe, xx, Q, q = _case(seed=3)
    _noised(pp, 3.0)

    def out(orig, p, y_s, ring_bits):
        return orig(np.zeros_like(p), y_s, ring_bits)

    sv, y = _run(model, pp, Xe, xx, q, _Patch(gm, "client_output", out))
    assert abs(gm.decode(pp, y)) > 1e6
    assert y not in _terms(pp, model, Xe, q, sv["rho"])


def test_rounding_is_refused_in_client_malicious_mode():
    from secureml.errors import ProtocolError

    model, pp, Xe, xx, Q, q = _case()
    with pytest.raises(ProtocolError, match="--round-to"):
        ServedModel(model, security="client-malicious").set_defense(round_to=1.0)


# ---- step 10's rank-2 split of the G table (protocol 25; `tail_plan` takes it where it is cheaper)
@pytest.fixture(params=["e1", "e0"])
def split(monkeypatch, request):
    monkeypatch.setattr(gm, "G_SPLIT", "split")  # both parties run in this process: one plan
    # protocol 36: the weights on either table (the tests' small models pick e1 themselves)
    monkeypatch.setattr(gm, "ALPHA_SIDE", request.param)


def test_split_factors_multiply_to_the_g_table():
    """A(e0) B_b(e0)(e1) / 2^g = G(e) up to the roundings (an absolute 2^-g-level error, as G's
    own), with the same zeros (the cut [H < 2^lut] depends on e1 and the borrow only), for every
    e, point and split h0."""
    from protocols.krr.expsum import encode_weights
    from protocols.mpc import limbs

    model, pp, Xe, xx, Q, q = _case(seed=8)
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    one = np.ones_like(alpha)
    rho_x = np.random.default_rng(0).integers(0, 2**62, len(alpha), dtype=np.uint64) >> U64(62 - (pp.ring_bits - pp.shift_bits))
    single = gm.tail_plan(pp)
    for h0 in range(1, single.hb):
        tp = gm.TailPlan(single.hb, single.digits, single.scale_bits, single.one_factor_bits, 3, 3, 200, split=h0,
                         lo_bits=single.lo_bits, lut_bits=single.lut_bits, step=single.step)
        G = np.array(limbs.to_int(gm.g_table(pp, rho_x, one, single)), dtype=object).reshape(len(alpha), -1)
        for e in range(1 << single.hb):
            got = np.array(limbs.to_int(gm.g_at(pp, rho_x, one, tp, np.full(len(alpha), e))), dtype=object)
            H = (e - (rho_x >> U64(single.lo_bits)).astype(np.int64)) % (1 << single.hb)
            assert all(v == 0 for v, h in zip(got, H) if h >= 1 << single.lut_bits)  # the cut, exactly
            # in units of 2^-g: G's rounding (1/2), A's (1/2 times B <= e^step), B's (1/2 times A <= 1)
            err = [abs(int(v) / 2**pp.g_frac_bits - int(g)) for g, v in zip(G[:, e], got)]
            assert max(err) <= 1 + np.exp(single.step) / 2


@pytest.mark.parametrize("alpha_e0", [False, True])
def test_split_tables_are_the_stated_sums_in_any_row_chunks(alpha_e0):
    """Step 10's split tables (computed a few hundred points at a time) against their formulas in
    Python integers mod 2^(64 nG), for chunk sizes that do and do not divide N; with the weights on
    either table (protocol 36: alpha_e0 puts alpha A_b in the e0 words)."""
    from protocols.mpc import limbs

    rng = np.random.default_rng(12)
    N, nG = 23, 3
    mod = 1 << (64 * nG)

    def words(*shape, top=64):
        return rng.integers(0, 2**64, shape, dtype=U64) >> U64(64 - top)

    As, Bs = [words(N, 4, top=41) for _ in (0, 1)], [words(N, 8, top=46) for _ in (0, 1)]
    tm, sg = [words(N, 1, nG) for _ in (0, 1)], [words(N, 1, nG) for _ in (0, 1)]
    r1, r2, a = words(N, 1, nG), words(N, 1, nG), words(N, 1, nG)
    e0, e1 = gm.split_tables(As, Bs, tm, sg, r1, r2, a, alpha_e0=alpha_e0)
    for rows in (1, 5, 23):
        f0, f1 = gm.split_tables(As, Bs, tm, sg, r1, r2, a, rows=rows, alpha_e0=alpha_e0)
        assert np.array_equal(e0, f0) and np.array_equal(e1, f1)
    I = lambda x: limbs.to_int(x)[0]  # noqa: E731 - one limb array (nG,) as an int
    for i in (0, 7, 22):
        t, s, al = [I(x[i, 0]) for x in tm], [I(x[i, 0]) for x in sg], I(a[i, 0])
        fa, fb = (al, 1) if alpha_e0 else (1, al)  # which side's words carry the weight
        X = [fa * int(As[b][i, 0]) % mod for b in (0, 1)]
        c1 = (s[0] * X[0] + s[1] * X[1] + I(r1[i, 0])) % mod
        want0 = [(X[0] + t[0]) % mod, (X[1] + t[1]) % mod, c1]
        assert [I(e0[i, 0, k * nG:(k + 1) * nG]) for k in range(3)] == want0
        for e in (0, 5):
            bt = [(fb * int(Bs[b][i, e]) + s[b]) % mod for b in (0, 1)]
            c2 = (t[0] * bt[0] + t[1] * bt[1] + I(r2[i, 0])) % mod
            assert [I(e1[i, e, k * nG:(k + 1) * nG]) for k in range(3)] == [bt[0], bt[1], c2]


def test_split_past_lut_multiplies_to_the_g_table_and_runs_bit_exact(monkeypatch):
    """Protocol 37's h0 > lut (the tests' models have lut = hb, so the plan is forced here: lut = 0,
    h0 = 2 of hb = 3): A carries [H0 < 2^lut], B_b [H1 = 0], and A B is the one-table G (same
    zeros, the roundings' error) at every e; a whole session on that plan is reference() + e_T
    bit-exact, with points inside and outside the cut."""
    import dataclasses

    from protocols.krr.expsum import encode_weights
    from protocols.mpc import limbs

    model, pp, Xe, xx, Q, q = _case(seed=9)
    monkeypatch.setattr(gm, "G_SPLIT", "split")
    L3 = pp.d_bits - 3  # the split point with hb = 3
    forced = next(t for t in gm._plans_at(pp, L3, 3) if t.split)
    forced = dataclasses.replace(forced, lut_bits=0, split=2)
    assert forced.hb == 3 and forced.split > forced.lut_bits
    single = dataclasses.replace(forced, split=0)
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    rho_x = np.random.default_rng(1).integers(0, 2**62, len(alpha), dtype=np.uint64) >> U64(62 - (pp.ring_bits - pp.shift_bits))
    G = np.array(limbs.to_int(gm.g_table(pp, rho_x, np.ones_like(alpha), single)), dtype=object).reshape(len(alpha), -1)
    for e in range(1 << forced.hb):
        got = limbs.to_int(gm.g_at(pp, rho_x, np.ones_like(alpha), forced, np.full(len(alpha), e)))
        H = (e - (rho_x >> U64(forced.lo_bits)).astype(np.int64)) % (1 << forced.hb)
        assert all((v == 0) == (h >= 1) for v, h in zip(got, H))  # the cut [H < 2^lut], exactly
        err = [abs(int(v) / 2**forced.a_frac_bits - int(g)) for g, v in zip(G[:, e], got)]
        assert max(err) <= 1 + np.exp(forced.step) / 2 ** (forced.a_frac_bits - pp.g_frac_bits + 1)
    monkeypatch.setattr(gm, "tail_plan", lambda p: forced)
    sv, y = _run(model, pp, Xe, xx, q)
    assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)
    u, _ = _x_lo(pp, Xe, q, sv["rho"])
    H = ((u >> U64(pp.shift_bits + forced.lo_bits)) - (np.asarray(sv["rho"], dtype=U64) >> U64(pp.shift_bits
                                                                                               + forced.lo_bits)))
    H = H.astype(np.int64) % (1 << forced.hb)
    assert (H < 1).any() and (H >= 1).any()  # points inside and outside the cut


@pytest.mark.parametrize("alpha_e0", [False, True])
def test_split_free_entry_0_is_the_pad_and_the_cut_product_is_alpha_g_plus_s0_plus_delta(alpha_e0):
    """Protocol 37, step 10: split_free_masks makes entry 0 of both tables the client's own pads
    (A~_b, B~_b mod their widths; c1(0), c2(0) = pad 2^cut), and at every (e0, e1) the client's
    A~_0 B~_0 + A~_1 B~_1 - c1' - c2' (the c words without their low cut bits) is alpha G + s0 +
    delta mod 2^RG, s0 = -(r1 + r2), delta = (c1 mod 2^cut) + (c2 mod 2^cut) -- in Python integers."""
    from protocols.mpc import limbs

    rng = np.random.default_rng(37)
    N, nG, h0, h1, RG, cut, ta, tb = 9, 3, 2, 3, 176, 16, 128, 136
    As = [rng.integers(0, 2**40, (N, 1 << h0), dtype=U64) for _ in (0, 1)]
    Bs = [rng.integers(0, 2**46, (N, 1 << h1), dtype=U64) for _ in (0, 1)]
    alpha = rng.integers(-(2**29), 2**29, N)
    a = gm.signed_limbs(alpha, nG)

    def pads(wa: int) -> np.ndarray:  # entry 0's pads as bound_lut gives them: each part its own width
        words = [limbs.reduce(rng.integers(0, 2**64, (N, nG), dtype=U64), w) for w in (wa, wa, RG - cut)]
        return np.concatenate(words, axis=-1)

    p0, p1 = pads(ta), pads(tb)
    tm, sg, r1, r2 = gm.split_free_masks(As, Bs, a, p0, p1, cut, alpha_e0=alpha_e0)
    e0, e1 = gm.split_tables(As, Bs, tm, sg, r1, r2, a[:, None, :], alpha_e0=alpha_e0)
    I = lambda x: limbs.to_int(np.ascontiguousarray(x))[0]  # noqa: E731
    mod = 1 << RG
    for i in (0, 4, 8):
        s0 = -(I(r1[i, 0]) + I(r2[i, 0])) % mod
        sent0 = [I(e0[i, 0, k * nG:(k + 1) * nG]) for k in range(3)]
        sent1 = [I(e1[i, 0, k * nG:(k + 1) * nG]) for k in range(3)]
        want0 = [I(p0[i, k * nG:(k + 1) * nG]) for k in range(3)]
        want1 = [I(p1[i, k * nG:(k + 1) * nG]) for k in range(3)]
        assert [sent0[0] % 2**ta, sent0[1] % 2**ta, sent0[2] % mod] == [want0[0], want0[1], want0[2] << cut]
        assert [sent1[0] % 2**tb, sent1[1] % 2**tb, sent1[2] % mod] == [want1[0], want1[1], want1[2] << cut]
        for x in range(1 << h0):
            for y in range(1 << h1):
                A = [I(e0[i, x, k * nG:(k + 1) * nG]) for k in range(3)]
                B = [I(e1[i, y, k * nG:(k + 1) * nG]) for k in range(3)]
                At, Bt = [v % 2**ta for v in A[:2]], [v % 2**tb for v in B[:2]]
                c1, c2 = A[2] % mod, B[2] % mod
                h = (At[0] * Bt[0] + At[1] * Bt[1] - (c1 >> cut << cut) - (c2 >> cut << cut)) % mod
                aG = sum(int(As[b][i, x]) * int(Bs[b][i, y]) for b in (0, 1)) * int(alpha[i])
                delta = c1 % 2**cut + c2 % 2**cut
                assert h == (aG + s0 + delta) % mod


def test_split_client_at_digit_0_opens_only_its_own_pads(split):
    """Protocol 37's free entry 0 on both G tables, the client's view: where its committed e0
    (resp. e1) is 0 it opens its own pads there -- the same words whatever the model's weights
    (two models, one seed: same keys, same rho) -- and where the digit is not 0 the words move
    with the weights (under pads it does not hold)."""
    from protocols.mpc import authenticated as au

    model, pp, Xe, xx, Q, q = _case(seed=9)
    tp = gm.tail_plan(pp)
    assert tp.split
    lo = pp.shift_bits + tp.lo_bits
    seen = []
    for coef in (model.dual_coef, -model.dual_coef[::-1]):  # the same bound on the weights
        got: dict[int, np.ndarray] = {}

        def lut(orig, party, chooser, digit, **kw):
            out = orig(party, chooser, digit, **kw)
            if digit[0] >= lo:
                got[digit[0]] = out.copy()
            return out

        m = KernelModelParams(model.X_train, np.ascontiguousarray(coef), model.y_offset, "gaussian", 30.0)
        sv, y = _run(m, pp, Xe, xx, q, _Patch(au, "bound_lut", lut))
        assert y == (gm.reference(pp, m, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)
        seen.append((got, sv["rho"]))
    (g1, rho1), (g2, rho2) = seen
    assert np.array_equal(rho1, rho2)
    u, _ = _x_lo(pp, Xe, q, rho1)
    e = (u >> U64(lo)).astype(np.int64)
    for start, digit in ((lo, e & ((1 << tp.split) - 1)), (lo + tp.split, e >> tp.split)):
        zero = digit == 0
        assert zero.any() and (~zero).any()
        assert np.array_equal(g1[start][zero], g2[start][zero])  # its own pads: weight-free
        assert not np.array_equal(g1[start][~zero], g2[start][~zero])


@pytest.mark.parametrize("cross", ["ot", "he"])
def test_split_honest_client_gets_f_bit_exact_and_the_prediction(split, cross):
    model, pp, Xe, xx, Q, q = _case(seed=9)
    pp.cross_term = cross
    tp = gm.tail_plan(pp)
    # protocol 26: the first digit truncates the split's g extra bits, every later one V; the flood
    # covers 2^40 times the N K carries
    # (protocol 37: the split's A carries ga >= g fractional bits, so t_1 = ga)
    assert tp.split and tp.shifts == (tp.a_frac_bits,) + (pp.v_frac_bits,) * (len(tp.digits) - 1)
    assert tp.a_frac_bits >= pp.g_frac_bits and np.exp(tp.step) <= 2.0 ** (tp.a_frac_bits - pp.g_frac_bits + 10)
    # protocol 36: K + 1 carries per point with step 10b's truncation of h; protocol 37: K + 2 (its
    # carry is in {0, 1, 2} with the c words' low bits unsent)
    assert tp.head_shift and tp.flood_bits == 40 + (pp.n_train * (len(tp.digits) + 2) - 1).bit_length()
    sv, y = _run(model, pp, Xe, xx, q)
    assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % _ring(pp)
    # step 10b's carry, like the digits', stays one unit of 2^-S: at most N K' units in all
    carried = (y - gm.reference(pp, model, Xe, q, sv["rho"]) - sv["flood"]) % _ring(pp)
    assert 0 < carried <= pp.n_train * tp.carries
    assert abs(gm.decode(pp, y) - model.predict(Q[None])[0]) < 1e-4


@pytest.mark.parametrize("which,i,k,bit", [("local-h", 3, 0, 40), ("p", 11, 5, 7), ("u", 4, 0, 9)])
def test_split_deviations_abort_or_shift_f_by_a_client_known_amount(split, which, i, k, bit):
    _deviate(which, i, k, bit)


def test_split_client_edits_of_its_table_words_shift_or_mask(split):
    """The client's own step-10 arithmetic (the split's A~_b B~_b - c1 - c2): dropping a
    correction word or a product leaves h masked by the server's fresh masks -- the output is a
    masked number, never F(q') shifted by something weight-free and never a weighted term."""
    model, pp, Xe, xx, Q, q = _case(seed=10)

    for drop in ("c1", "product"):
        def prod(orig, e0, e1, n):
            e0 = e0.copy()
            if drop == "c1":
                e0[:, 2 * n:] = 0
            else:
                e0[:, :n] = 0  # A~_0 := 0
            return orig(e0, e1, n)

        sv, y = _run(model, pp, Xe, xx, q, _Patch(gm, "client_split_product", prod))
        assert y not in _terms(pp, model, Xe, q, sv["rho"])
        assert abs(gm.decode(pp, y)) > 1e6


def _separate_two_terms(y: int, offset: int, v1: int, v2: int, ring: int) -> tuple[int, int] | None:
    """The knapsack attack on an exact output: F - offset = a_1 v_1 + a_2 v_2 with the client's
    known v_i; a_1 = (F - offset) / g * (v_1 / g)^-1 mod (v_2 / g), g = gcd(v_1, v_2)."""
    import math
    t = (y - offset) % ring
    t = t - ring if t >= ring // 2 else t
    g = math.gcd(v1, v2)
    if t % g:
        return None
    m = v2 // g
    a1 = (t // g) * pow(v1 // g, -1, m) % m
    a1 = a1 - m if a1 >= m // 2 else a1
    rest = t - a1 * v1
    return (a1, rest // v2) if rest % v2 == 0 else None


def test_flooding_hides_the_separate_terms():
    """Step 13a. With two training points inside the table's cut, the exact product F = offset +
    a_1 v_1 + a_2 v_2 (a_i = alpha_i G_i unknown to the client, v_i = prod_k g_k(d_k,i) a public
    function of its u, ~800 bits each: protocol 25's output before its flood) gives both a_i by one
    modular inverse -- each weighted kernel term instead of their sum. The protocol's output
    (protocol 26: F_det + C + e_T at the one-factor scale, e_T uniform on 2^T, T = 40 + log2(N K))
    does not, even lifted back to F's scale: the same attack on it fails; y is within N K units of
    F_det + e_T and still decodes to the prediction."""
    from fractions import Fraction

    from protocols.krr.expsum import encode_weights
    from protocols.mpc import limbs

    rng = np.random.default_rng(7)
    X = rng.uniform(0, 50, (2, 6))
    model = KernelModelParams(X, np.array([812.5, -433.25]), -321.0, "gaussian", 30.0)
    pp = ServedModel(model, security="semi-honest").public
    pp.security, pp.cross_term = "client-malicious", "ot"
    Xe = pp.encode_features(X)
    xx = (Xe * Xe).sum(axis=1, dtype=U64) & U64((1 << pp.ring_bits) - 1)
    Q = X.mean(axis=0)
    q = pp.encode_features(Q[None])[0]
    sv, y = _run(model, pp, Xe, xx, q)
    tp, ring = gm.tail_plan(pp), _ring(pp)
    assert not tp.split
    u, x_lo = _x_lo(pp, Xe, q, sv["rho"])
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    xr = np.asarray(sv["rho"], dtype=U64) >> U64(pp.shift_bits)
    aG = gm.g_table(pp, xr, alpha, tp)[np.arange(2), ((u >> U64(pp.shift_bits)) >> U64(tp.lo_bits)).astype(np.intp)]
    top = 1 << (64 * tp.g_limbs)
    a = tuple(w - top if w >= top // 2 else w for w in limbs.to_int(aG))
    assert all(a)  # both points inside the cut
    v1, v2 = gm.client_factor(pp, x_lo)
    # the exact product at its own scale 2^(w + g + K V), in a ring wide enough for it
    drop = tp.head_shift + sum(tp.shifts)
    wide = 1 << (tp.scale_bits + drop + 64)
    # (exact: 2^(scale + drop) is past the float range with 40 one-bit digits)
    offset_x = round(Fraction(model.y_offset) * (1 << (tp.scale_bits + drop)))
    exact = (offset_x + a[0] * v1 + a[1] * v2) % wide
    assert _separate_two_terms(exact, offset_x, v1, v2, wide) == a  # the attack works on exact F
    det = gm.reference(pp, model, Xe, q, sv["rho"])  # F_det, without the carries
    diff = (y - det - sv["flood"]) % ring
    assert 0 <= diff <= pp.n_train * tp.carries  # the carries: at most N K' units
    assert y == (gm.reference(pp, model, Xe, q, sv["rho"], sv["masks"]) + sv["flood"]) % ring
    assert 0 < abs(sv["flood"]) <= 1 << (tp.flood_bits - 1)
    signed = y - ring if y >= ring // 2 else y
    assert _separate_two_terms((signed << drop) % wide, offset_x, v1, v2, wide) != a
    # e_T < 2^(T-1) units of 2^-(w + g + V): 2^-(w + g + V - T + 1) of a prediction unit
    assert abs(gm.decode(pp, y) - gm.decode(pp, det)) <= 2.0 ** (tp.flood_bits - 1 - tp.scale_bits) + 1e-15
    assert abs(gm.decode(pp, y) - model.predict(Q[None])[0]) < 1e-3  # the query's fixed-point grid


@pytest.mark.parametrize("mode", ["single", "split"])
@pytest.mark.parametrize("n_train", [24, 16384])
def test_rescaled_chain_plan_meets_its_bounds(monkeypatch, mode, n_train):
    """Protocols 26, 29 and 37's plan: the masks' wrap probability summed over the N K masks <= 2^-40,
    the flood 2^T >= 2^40 N K' (the carries), the output fits the ring, every digit truncates back
    to the one-factor scale, and the bound m covers the worst-case product (|alpha| = 2^(weight_bits
    - 1), the largest G, every factor 2^V, one carry per digit) -- recomputed here, not read back."""
    import math

    monkeypatch.setattr(gm, "G_SPLIT", mode)
    pp = _case()[1]
    pp.n_train = n_train
    tp = gm.tail_plan(pp)
    K, R, m = len(tp.digits), tp.ring_bits, tp.mask_bits
    assert 1 << tp.flood_bits >= (n_train * tp.carries) << 40
    # protocol 36: the output scale keeps 17 bits below the flood (e_T < 2^-17 prediction units),
    # at most g bits below the one-factor scale w + g + V; the split truncates h itself (step 10b),
    # one G table its first digit
    one = pp.weight_frac_bits + pp.g_frac_bits + pp.v_frac_bits
    assert tp.scale_bits == max(tp.flood_bits - 1 + gm.OUTPUT_NOISE_BITS, one - pp.g_frac_bits) < one
    assert tp.flood_bits - 1 - tp.scale_bits <= -17
    assert tp.head_shift == (one - tp.scale_bits if tp.split else 0)
    # protocol 37: step 10b's carry is in {0, 1, 2} (the c words' unsent low bits add to h)
    assert tp.carries == K + (2 if tp.split else 0)
    RG = tp.g_ring_bits
    assert R >= tp.scale_bits + tp.flood_bits + 24 + 2 and R >= RG - tp.head_shift and R % 8 == 0 and RG % 8 == 0
    assert 64 * tp.chain_limbs >= R and 64 * tp.g_limbs >= max(RG, 8 * tp.a_bytes, 8 * tp.b_bytes)
    ga = tp.a_frac_bits  # protocol 37: A's fractional bits (the split)
    head = pp.weight_frac_bits + pp.g_frac_bits + (ga if tp.split else 0)
    assert tp.head_shift + sum(tp.shifts) == head + K * pp.v_frac_bits - tp.scale_bits
    g_max = math.exp(pp.step) * 2.0 ** pp.g_frac_bits + 2
    worst = 2 ** (pp.weight_bits - 1) * g_max * ((2.0 ** ga + 1) if tp.split else 1)
    # protocol 29, step 10: the lift of h = alpha G + s0 in Z_2^RG (whole bytes), its statistical
    # distance over the N points <= 2^-40 (log2, exact enough in floats at these sizes)
    assert worst < 2.0 ** tp.lift_bits
    if not tp.split:
        assert math.log2(n_train * worst) + 40 <= math.log2(2.0 ** RG - 2.0 ** (tp.lift_bits + 1))
    else:
        # protocol 37: s0 is fixed by the free entries' pads (uniform on a coset of 2^cut), h' = alpha G
        # + delta + s0 with delta < 2^(cut+1): it leaves [0, 2^RG) for < worst + 2^(cut+2) values of s0
        assert tp.g_cut < tp.head_shift and tp.g_cut % 8 == 0
        assert math.log2(n_train * (worst + 2.0 ** (tp.g_cut + 2))) + 40 <= RG
        # the narrow words, two of each per point, uniform mod 2^(8 bytes) with entry 0 their pad: the
        # word x(e) + pad - x(0) wraps for at most span(x) pads (A_b in [0, 2^g], alpha A_b in an
        # interval of length |alpha| 2^g, B_b in [0, g_max], alpha B_b of length |alpha| g_max)
        w_max = 2.0 ** (pp.weight_bits - 1)
        sa, sb = (w_max * 2.0 ** ga, g_max) if tp.alpha_e0 else (2.0 ** ga, w_max * g_max)
        assert math.log2(2 * n_train * sa) + 40 <= 8 * tp.a_bytes
        assert math.log2(2 * n_train * sb) + 40 <= 8 * tp.b_bytes
        assert 8 * tp.a_bytes < RG and 8 * tp.b_bytes < RG  # narrower than the ring: the point of them
        # the bytes on the wire: both tables' entry 0 free, the c words less their low g_cut bits
        c = RG // 8 - tp.g_cut // 8
        h0, h1 = tp.split, tp.hb - tp.split
        assert tp.g_bytes_per_point() == (2 ** h0 - 1) * (2 * tp.a_bytes + c) + (2 ** h1 - 1) * (2 * tp.b_bytes + c)
    if tp.head_shift:  # step 10b: floor(h / 2^D) (one more unit below 0) and its carry c_0 <= 2
        worst = worst / 2.0 ** tp.head_shift + 3
    wraps = 0.0
    for t in tp.shifts:
        assert worst * 2.0 ** pp.v_frac_bits < 2.0 ** m
        wraps += worst * 2.0 ** pp.v_frac_bits
        worst = worst * 2.0 ** pp.v_frac_bits / 2.0 ** t + 1
    # protocol 37: mask k (uniform on Z_2^R, fixed by the free entry 0) wraps p'_k for |v g| of its
    # values: N sum_k |v g| / 2^R <= 2^-40 (protocols 29-36: N K 2^(m+1) / (2^R - 2^(m+1)))
    assert math.log2(n_train * wraps) + 40 <= R
    # the bytes on the wire: entry 0 of every chain table is free
    assert tp.chain_bytes_per_point() == sum(2 ** (b - a) - 1 for a, b in tp.digits) * R // 8


@pytest.mark.parametrize("frac_bits", [2, 8])
def test_a_small_model_with_few_fractional_bits_is_served(frac_bits):
    """A small reply ring fits one prime, but the switched lattice reply travels as CRT pairs of two
    (he_matvec_checked.reply_format keeps at least two): before, the server raised IndexError in
    _crt2 and the session ended for any explicit frac_bits on this 12 x 5 model."""
    from tests.protocols.krr.test_transcript_pin import _exact_model, _session

    model = _exact_model("gaussian")
    served = ServedModel(model, frac_bits=frac_bits, security="client-malicious")
    Q = model.X_train[:2] + 0.25
    preds, _, _ = _session(served, Q, seeded=True)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
