"""Client-malicious exact Laplacian protocol (protocols.krr.laplacian_malicious), in process with
real deviating clients (patched client steps, acting on the client's thread only): every run ends
in F(q') bit-exact or in an abort at step 6's check -- before anything that depends on u leaves
the server (the shared tail, gaussian_malicious.kernel_output, is never entered)."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, gaussian_malicious, laplacian
from protocols.krr import laplacian_malicious as lm
from protocols.mpc import fp48
from protocols.mpc.authenticated import MacCheckError
from protocols.net.transport import PeerDisconnected
from protocols.ot.iknp import OTExtensionSender
from protocols.krr.registry import _setup_exact_ot
from protocols.ot import ferret
from protocols.ot.consistency import ConsistencyError
from protocols.testing import checked_ot, run_two_party
from secureml.errors import ProtocolError
from tests.protocols.krr.deviations import PartyPatch as _Patch, bit_flipping_send
from tests.protocols.krr.deviations import patch_on_this_thread as _client_patch

U64 = np.uint64
P = fp48.P


def _case(N=24, d=6, seed=0, offset=-321.0, engine="softspoken"):
    rng = np.random.default_rng(seed)
    # entries on the 2^-4 grid: 10-bit encodings, so step 5's tables have 2^10 entries (fast tests)
    X = np.round(rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.6) * 16) / 16
    model = KernelModelParams(X, rng.normal(0, 500, N), offset, "laplacian", 40.0)
    pp = ServedModel(model, security="semi-honest", frac_bits=4).public
    pp.security, pp.ot_engine = "client-malicious", engine
    pp.laplacian_chain = "unbound"  # this module's protocol (its OT set-up needs both directions)
    pp.validate()
    XT = lm.prepare_server(model, pp)
    Q = np.clip(X[3] + rng.normal(0, 1, d), 0, 49)
    return model, pp, XT, pp.encode_features(Q[None])[0]


def _unbound(served):
    """This module's protocol: the unbound chain (the served default is the bound one since protocol 42)."""
    served.public.laplacian_chain = "unbound"
    served.public.validate()
    return served


def _setup_for(pp):
    """A client-malicious session's OT set-up: the registry's (silent OT: both directions as Ferret
    engines, the client-receiver one checked from S1 on), or the checked SoftSpoken extension."""
    if pp.ot_engine == "silent":
        return lambda p: _setup_exact_ot(p, pp, "laplacian")
    return checked_ot


def _run(model, pp, XT, q, patches=(), seed=3):
    for p in patches:
        p.__enter__()
    try:
        return run_two_party(lambda p: lm.online(p, pp, model=model, XT=XT), lambda p: lm.online(p, pp, q=q),
                             seed=seed, setup=_setup_for(pp), timeout=30)
    finally:
        for p in reversed(patches):
            p.__exit__()


def _tail_watch():
    """A server-side patch that records whether the shared tail (steps 7-11) was entered."""
    seen = {"tail": False}

    def watch(orig, *a, **kw):
        seen["tail"] = True
        return orig(*a, **kw)
    return _Patch(gaussian_malicious, "kernel_output", watch, server=True), seen


class _Patches:
    """Several patches entered and left as one."""

    def __init__(self, *patches):
        self.patches = patches

    def __enter__(self):
        for p in self.patches:
            p.__enter__()
        return self

    def __exit__(self, *exc):
        for p in reversed(self.patches):
            p.__exit__(*exc)


def _aborts(model, pp, XT, q, patch):
    watch, seen = _tail_watch()
    with pytest.raises(lm.ChainCheckError):
        _run(model, pp, XT, q, (patch, watch))
    assert not seen["tail"], "something depending on u left the server before the check"


def test_honest_output_is_f_of_q_bit_exact_and_close_to_plaintext():
    model, pp, XT, q = _case()
    rec, y = _run(model, pp, XT, q)
    assert y == (lm.reference(pp, model, XT, q, rec["rho"], rec["masks"]) + rec["flood"]) % (1 << gaussian_malicious.tail_plan(pp).ring_bits)
    X = XT.T.astype(float) / 2 ** pp.frac_bits + pp.feature_lo
    qd = q / 2 ** pp.frac_bits + pp.feature_lo
    plain = model.y_offset + float((model.dual_coef * np.exp(-np.abs(X - qd).sum(1) / model.sigma)).sum())
    assert abs(gaussian_malicious.decode(pp, y) - plain) < 1e-4


# ------------------------------------------------------------------------------------------------
# the chain on silent OT (protocol 27): the client is the Ferret receiver where it chooses (S1 on
# the checked extension) and the Ferret sender of the product COT in which the server chooses b_S
# ------------------------------------------------------------------------------------------------

def _ideal(model, pp, XT, q, rec, y):
    return y == (lm.reference(pp, model, XT, q, rec["rho"], rec["masks"]) + rec["flood"]) % (
        1 << gaussian_malicious.tail_plan(pp).ring_bits)


def test_silent_honest_output_is_f_of_q_bit_exact():
    model, pp, XT, q = _case(engine="silent")
    res = _run(model, pp, XT, q)
    server, client = res.parties
    assert isinstance(server.ot_sender, ferret.FerretSender) and server.ot_sender.checked
    assert isinstance(client.ot_receiver, ferret.FerretReceiver) and client.ot_receiver.checked
    assert not server.ot_receiver.checked and not client.ot_sender.checked
    assert server.ot_receiver.iterations >= 1  # the product COT did run on silent OT
    assert _ideal(model, pp, XT, q, *res)
    # the digit plan of the silent engine (five 3-bit digits for 15-bit entries; here 10-bit ones)
    assert laplacian.digit_levels(pp.x_bits, "silent") != laplacian.digit_levels(pp.x_bits, "softspoken")


def _corrupting_spcot(what):
    """FerretSender._spcot(orig, self, base, tree0, h) that corrupts, in every iteration message
    (Half-Tree, protocol 28: one masked level sum per level and tree), the top level's sum ("level"),
    the last level's high word ("c": the leaves' level, where c_i travelled before 28), or bit 0 of
    every level sum ("c_bit0": the receiver's noise bit is its own, whatever the sums' bit 0)."""
    def spcot(orig, self, base, tree0, h):
        send = self.ch.send_array

        def patched(msg, owned=False):
            msg = msg.copy()
            if what == "level":  # the top level's sum: the opened side is off, and with it half of
                msg[:, 0, 0] ^= U64(1 << 17)  # the tree's leaves
            elif what == "c":
                msg[:, h - 1, 1] ^= U64(0x5A5A)
            else:
                msg[:, :, 0] ^= U64(1)
            return send(msg, owned=True)
        self.ch.send_array = patched
        try:
            return orig(self, base, tree0, h)
        finally:
            self.ch.send_array = send
    return spcot


def _deviating_ferret_sender(what):
    """The client as Ferret sender (the server chooses), corrupting as :func:`_corrupting_spcot`."""
    return _Patch(ferret.FerretSender, "_spcot", _corrupting_spcot(what))


@pytest.mark.parametrize("what", ["level", "correction"])
def test_silent_deviating_ferret_sender_aborts_at_step_6(what):
    """The client as Ferret sender sends wrong top-level GGM sums (half of every tree's leaves off
    at the server), or shifts its COT correction tau of the product by 1 for every element: the
    server's COT outputs (hence L_S) go wrong, nothing the server sends before step 6 shows it
    (c = L_S + rho), and the client's honest u fails the check -- before the tail."""
    model, pp, XT, q = _case(engine="silent", seed=1)
    if what == "correction":
        def shifted(orig, engine, values, bits=64):  # tau = m0 + delta - m1: tau + 1 = delta + 1
            return orig(engine, (values + U64(1)) & U64((1 << bits) - 1), bits=bits)
        patch = _Patches(*(_Patch(cls, name, shifted) for cls in (OTExtensionSender, ferret.FerretSender)
                           for name in ("cot_send",) if name in vars(cls)),
                         _Patch(ferret.FerretSender, "cot_send_reserved",
                                lambda orig, engine, handle, values, bits=64:
                                orig(engine, handle, (values + U64(1)) & U64((1 << bits) - 1), bits=bits)))
    else:
        patch = _deviating_ferret_sender(what)
    _aborts(model, pp, XT, q, patch)


@pytest.mark.parametrize("what", ["level", "c", "c_bit0"])
def test_silent_deviating_ferret_sender_ends_in_abort_or_f_bit_exact(what):
    """Over seeds: every session with a deviating Ferret sender ends in the step-6 abort or in
    F(q') bit-exact, never another value (a wrong c_i spoils one row per tree, which these small
    sessions may not use). Flipping bit 0 of the level sums spoils the leaves but not the receiver's
    noise bit (its own)."""
    outcomes = []
    for seed in (5, 6, 7):
        model, pp, XT, q = _case(engine="silent", seed=seed)
        watch, seen = _tail_watch()
        try:
            res = _run(model, pp, XT, q, (_deviating_ferret_sender(what), watch), seed=seed)
            assert _ideal(model, pp, XT, q, *res)
            outcomes.append("ideal")
        except lm.ChainCheckError:
            assert not seen["tail"]
            outcomes.append("abort")
    if what == "level":
        assert outcomes == ["abort"] * 3
    else:
        assert "abort" in outcomes


def test_silent_receiver_with_inconsistent_s1_columns_is_stopped_by_the_check():
    """The client as Ferret receiver (where it chooses) deals S1 columns with another choice per
    block -- the KOS attack that would reveal the server's Delta: S1's consistency check aborts
    the set-up, before any GGM message or protocol step."""
    from protocols.ot.softspoken import SoftSpokenReceiver

    class Inconsistent(SoftSpokenReceiver):
        def _extend(self, c):
            send = self.ch.send_array

            def patched(a, owned=False):
                if a.dtype == U64 and a.ndim == 2:  # d = u ^ r, per block
                    a = a.copy()
                    a[:, 0] ^= U64(1 << 5)
                    self.ch.send_array = send
                return send(a, owned=owned)
            self.ch.send_array = patched
            try:
                return super()._extend(c)
            finally:
                self.ch.send_array = send

    model, pp, XT, q = _case(engine="silent")
    started = {"online": False}

    def server(p):
        started["online"] = True
        return lm.online(p, pp, model=model, XT=XT)
    with _Patch(ferret, "SoftSpokenReceiver", lambda orig, *a, **kw: Inconsistent(*a, **kw)):
        with pytest.raises(ConsistencyError):
            run_two_party(server, lambda p: lm.online(p, pp, q=q), seed=3, setup=_setup_for(pp), timeout=30)
    assert not started["online"]


def test_noise_gives_f_plus_the_servers_fresh_noise_and_a_deviation_still_aborts():
    """`serve --noise` on the Laplacian: the shared tail adds the server's fresh draw after every
    check (y = F(q') + e exactly); a deviating client still aborts at step 6 (before any noise)."""
    from protocols.krr.defense_spec import OutputDefense

    model, pp, XT, q = _case(seed=4)
    pp.output_defense = OutputDefense.from_options(noise=3.0).to_dict()
    pp.validate()
    rec, y = _run(model, pp, XT, q, seed=11)
    assert y == (lm.reference(pp, model, XT, q, rec["rho"], rec["masks"]) + rec["noise"] + rec["flood"]) % (1 << gaussian_malicious.tail_plan(pp).ring_bits)
    assert 0 < abs(gaussian_malicious.decode(pp, rec["noise"])) < 30

    def masked(orig, b, c):
        u = orig(b, c)
        u[1] += U64(2)
        return u
    _aborts(model, pp, XT, q, _Patch(lm, "client_masked", masked))


@pytest.mark.parametrize("bits,extreme", [(6, False), (15, True), (16, True)])
def test_mac_word_tables_are_the_weighted_l1_distance(bits, extreme):
    """Exact mod q = 2^48 - 59 against Python integers, at every v, also with every chi_i = q - 1,
    Delta = q - 1 and 16-bit entries (the limbs' widest sums); an unreduced Delta is its residue."""
    rng = np.random.default_rng(1)
    XT = rng.integers(0, 1 << bits, (3, 50)).astype(U64)
    XT[0, :5] = (1 << bits) - 1
    XT[1, :5] = 0
    chi = (np.full(50, P - 1, dtype=U64) if extreme else rng.integers(0, P, 50, dtype=np.uint64))
    delta = U64(P - 1) if extreme else U64(0xDEADBEEF12345677)
    K = np.array([1, 2, P - 1], U64)
    W = lm.mac_word_tables(XT, chi, bits, delta, K)
    assert W.shape == (3, 1 << bits) and W.dtype == U64
    for j in range(3):
        vs = np.arange(1 << bits)
        g = (np.abs(XT[j].astype(object)[None, :] - vs.astype(object)[:, None]) * chi.astype(object)[None, :]).sum(1)
        want = [(int(K[j]) + int(x) * int(delta)) % P for x in g]
        assert W[j].tolist() == want


@pytest.mark.parametrize("n", [16_384, 70_000])
def test_mac_word_tables_stay_exact_at_the_widest_limbs_of_large_sessions(n):
    """The limb width follows N and B (two 35-bit limbs at N = 16,384, B = 15; 31-bit ones at
    70,000, B = 16): with every chi_i = q - 1, Delta = q - 1 and entries at both ends of the range
    the sums are at their largest; spot values against Python integers."""
    bits = 15 if n == 16_384 else 16
    rng = np.random.default_rng(2)
    XT = rng.integers(0, 1 << bits, (2, n)).astype(U64)
    XT[0, : n // 2] = (1 << bits) - 1
    XT[1, : n // 2] = 0
    chi = np.full(n, P - 1, dtype=U64)
    W = lm.mac_word_tables(XT, chi, bits, U64(P - 1), np.array([3, P - 2], U64))
    for j, k in ((0, 3), (1, P - 2)):
        for v in (0, 1, 1 << (bits - 1), (1 << bits) - 1):
            g = sum(abs(int(x) - v) for x in XT[j].tolist()) * (P - 1)
            assert int(W[j, v]) == (k + g * (P - 1)) % P


@pytest.mark.parametrize("extreme", [False, True])
def test_mac_word_tables_mod_q_path_equals_the_limb_path(extreme, monkeypatch):
    """N = 2^14, B = 15 (the widest the in-place mod-q path takes): its whole tables equal the
    128-bit limb path's, on random data and with every chi'_i = chi_i Delta = q - 1 (Delta = 1) and
    the entries at the ends of the range (the sums at their largest)."""
    n, bits = lm._FAST_MAX_N, lm._FAST_MAX_X_BITS
    rng = np.random.default_rng(3)
    XT = rng.integers(0, 1 << bits, (3, n)).astype(U64)
    if extreme:
        XT[0, : n // 2] = (1 << bits) - 1
        XT[1, :] = (1 << bits) - 1
        XT[2, : n // 2] = 0
    chi = np.full(n, P - 1, dtype=U64) if extreme else rng.integers(0, P, n, dtype=np.uint64)
    delta = U64(1) if extreme else U64(0x123456789ABC)
    K = np.array([0, 5, P - 1], U64)
    fast = lm.mac_word_tables(XT, chi, bits, delta, K)
    monkeypatch.setattr(lm, "_FAST_MAX_N", 0)  # force the limb path
    assert (lm.mac_word_tables(XT, chi, bits, delta, K) == fast).all()
    assert int(fast.max()) < P


@pytest.mark.parametrize("err", ["one", "mid", "wrap"])
def test_u_off_at_one_point_aborts(err):
    """v_i + 1, v_i + 2^(M-1), and v_i with its bit M flipped (the low M bits -- all that steps 7-11
    read -- unchanged: the integer relation's wrap part is what is wrong) all abort."""
    model, pp, XT, q = _case()
    M = pp.ring_bits

    def masked(orig, b, c):
        v = orig(b, c)
        if err == "wrap":
            v[5] ^= U64(1 << M)
        else:
            v[5] += U64(1 if err == "one" else 1 << (M - 1))
        return v
    _aborts(model, pp, XT, q, _Patch(lm, "client_masked", masked))


def test_u_plus_q_does_not_fit_the_committed_bits():
    """Protocol 33: the check is mod q = 2^48 - 59 on integers |e_i| < 2^(M+3) < q, so e_i = 0 (mod q)
    means e_i = 0. A client that adds q (or 2^(M+1)) to v commits only v's M + 1 low bits: the value
    moves by (q or 2^(M+1)) mod 2^(M+1) -- 0 for 2^(M+1), whose session is therefore the ideal one."""
    model, pp, XT, q = _case()
    M = pp.ring_bits
    for add, ideal in ((P, False), (1 << (M + 1), True)):
        def masked(orig, b, c, add=add):
            v = orig(b, c)
            v[5] += U64(add)
            return v
        if ideal:
            assert _ideal(model, pp, XT, q, *_run(model, pp, XT, q, (_Patch(lm, "client_masked", masked),)))
        else:
            assert P % (1 << (M + 1))  # q is odd: its low M + 1 bits are not 0
            _aborts(model, pp, XT, q, _Patch(lm, "client_masked", masked))


def test_another_query_in_the_chain_than_committed_aborts():
    model, pp, XT, q = _case()

    def other(orig, q_):
        q2 = q_.copy()
        q2[2] = (q2[2] + U64(37)) % U64(1 << pp.x_bits)
        return q2
    _aborts(model, pp, XT, q, _Patch(lm, "client_chain_query", other))


def test_flipped_share_bit_choice_in_the_chain_aborts():
    """The client flips its random-OT choices (its comparison shares) of one column at the top
    digit: each received bit is then off by the server's random delta, so b_ij flips with
    probability 1/2 and L_i moves by -2 |x_ij - q_j| -- which it cannot predict."""
    model, pp, XT, q = _case()
    N = pp.n_train
    j = 1
    calls = {"n": 0}
    top = len(laplacian.digit_levels(pp.x_bits, pp.ot_engine)) - 1

    def flip(orig, party, choices, n):
        calls["n"] += 1
        if choices is not None and calls["n"] == top:
            choices = choices.copy()
            choices[j * N:(j + 1) * N] ^= 1
        return orig(party, choices, n)
    _aborts(model, pp, XT, q, _Patch(laplacian, "_rot_bits", flip))
    assert calls["n"] == top


def test_shifted_product_correlation_is_hidden_by_the_mask_and_aborts():
    """Review finding (mask without full width, protocol 29): a client that shifted its product
    COT correlation of every element (i, 0) moved the server's share of L_i by 2^63 b_S,i0 (the
    chain was mod 2^64 then); with rho < 2^63 the top bit of u = L_C + c was b_S,i0: N threshold
    bits [x_i0 < q_0] = b_S xor b_C per session, read without an abort. Since protocol 32 the
    chain is mod 2^M ((M-1)-bit products): here D = 2^(M-2) on the correlation moves a by
    2^(M-1) b_S,i0 (mod 2^M). Since protocol 33 c = a + rho (mod 2^M) with rho uniform on Z_2^M:
    neither v's bit M-1 nor its wrap bit M tells the shift (the guessed bits are at chance) and the
    corrected v fails step 6's check. (N = 128: a guess at chance stays below 3/4 of the points
    by 5.6 standard deviations; at N = 32 one of the two did not, at this seed: 25 of 32.)"""
    model, pp, XT, q = _case(N=128, seed=5)
    q = q.copy()
    q[0] = max(int(q[0]), 1)  # b_C is read off the correlation q_0 (1 - 2 b_C), so q_0 != 0
    N, M = pp.n_train, pp.ring_bits
    half = U64((1 << (M - 1)) - 1)
    seen = {}

    def shifted(orig, engine, values, bits=64):
        if bits == M - 1 and "b_c" not in seen:  # the chain's product (i): the client's correlation
            corr = values.reshape(-1, N)[0]
            seen["b_c"] = (corr != U64(int(q[0]))).astype(np.uint8)
            values = values.copy()
            values[:N] = (values[:N] + U64(1 << (M - 2))) & half
        return orig(engine, values, bits=bits)

    def masked(orig, b, c):
        v = orig(b, c)
        mid = ((v >> U64(M - 1)) & U64(1)).astype(np.uint8)
        top = ((v >> U64(M)) & U64(1)).astype(np.uint8)
        seen["guess_mid"], seen["guess_top"] = mid ^ seen["b_c"], top ^ seen["b_c"]
        return v - (mid.astype(U64) << U64(M - 1))

    truth = (XT[0] < q[0]).astype(np.uint8)
    assert 0 < truth.sum() < N
    watch, tail = _tail_watch()
    try:
        _run(model, pp, XT, q, (_Patch(OTExtensionSender, "cot_send", shifted), _Patch(lm, "client_masked", masked),
                                watch))
        aborted = False
    except lm.ChainCheckError:
        aborted = True
    assert "b_c" in seen, "the product COT was not found"
    for key in ("guess_mid", "guess_top"):
        right = int((seen[key] == truth).sum())
        assert right <= 0.75 * N, f"{right}/{N} threshold bits of the training data read off u (aborted: {aborted})"
    assert aborted and not tail["tail"]


# ------------------------------------------------------------------------------------------------
# steps 3-6 (protocol 33): c mod 2^M, MACs on v = b + c and on the product b_1 (1 - a_1)
# ------------------------------------------------------------------------------------------------

def _share_inputs(M, n=200, seed=0):
    """Distances L < 2^(M-1) and client shares b (server a = L - b mod 2^M) covering every
    (a_1, b_1) MSB case, with the extremes (L = 0, L = 2^(M-1) - 1, shares 0, 2^(M-1), 2^M - 1)."""
    rng = np.random.default_rng(seed)
    top, half = (1 << M) - 1, 1 << (M - 1)
    L = [0, 0, 0, half - 1, half - 1, half - 1, half - 1, 1, half - 2]
    b = [0, top, half, 0, top, half, half - 1, half, half - 1]
    L += rng.integers(0, half, n).tolist()
    b += rng.integers(0, 1 << M, n).tolist()
    L, b = np.array(L, dtype=U64), np.array(b, dtype=U64)
    return L, (L - b) & U64(top), b


@pytest.mark.parametrize("M", [8, 25, 32])
def test_the_checked_relation_holds_over_the_integers_in_all_four_msb_cases(M):
    """v - 2^M b_1 (1 - a_1) - L = check_offset = rho + 2^M (a_1 - lambda) exactly (mod q, and every
    term is far below q) for an honest client, in all four (a_1, b_1) cases and both wraps of c,
    at every rho extreme; v mod 2^M = L + rho mod 2^M (what the tail reads)."""
    L, a, b = _share_inputs(M)
    cases = {(int(x >> U64(M - 1)), int(y >> U64(M - 1))) for x, y in zip(a, b)}
    assert cases == {(0, 0), (0, 1), (1, 0), (1, 1)}
    rng = np.random.default_rng(M)
    for rho in (np.zeros_like(L), np.full_like(L, (1 << M) - 1), rng.integers(0, 1 << M, len(L)).astype(U64)):
        c = (a + rho) & U64((1 << M) - 1)
        v = lm.client_masked(b, c)
        b1, a1 = b >> U64(M - 1), a >> U64(M - 1)
        lhs = [int(x) - (1 << M) * int(y) * (1 - int(z)) - int(d) for x, y, z, d in zip(v, b1, a1, L)]
        assert [x % P for x in lhs] == lm.check_offset(M, rho, a).tolist()
        assert all(abs(x) < 1 << (M + 2) for x in lhs)
        assert ((v & U64((1 << M) - 1)) == ((L + rho) & U64((1 << M) - 1))).all()


def _product_flip_session(engine, seed, point):
    """One session in which the client flips its product-OT choice b_1 at ``point``: 'abort' or
    'ideal', and the server's MSB a_1 there."""
    model, pp, XT, q = _case(engine=engine, seed=seed)
    seen = {}

    def record(orig, party, pp_, N, **kw):
        a = orig(party, pp_, N, **kw)
        seen["a1"] = int(a[point] >> U64(pp_.ring_bits - 1))
        return a

    def flip(orig, b1):
        b1 = orig(b1).copy()
        b1[point] ^= 1
        return b1
    watch, tail = _tail_watch()
    try:
        res = _run(model, pp, XT, q, (_Patch(laplacian, "l1_shares", record, server=True),
                                      _Patch(lm, "client_product_choice", flip), watch), seed=seed)
    except lm.ChainCheckError:
        assert not tail["tail"]
        return "abort", seen["a1"]
    assert _ideal(model, pp, XT, q, *res)
    return "ideal", seen["a1"]


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_flipped_product_choice_aborts_or_is_f_bit_exact(engine):
    """A client that flips its product-OT choice b_1 for one point holds a MAC on b_1' (1 - a_1):
    where the server's MSB a_1 is 0 the checked sum moves by +-2^M and step 6 aborts; where a_1 = 1
    the product is 0 either way and the session is the ideal one. The outcome is exactly the bit
    a_1 (the MSB of L - b mod 2^M: X-dependent) -- the one-bit-per-aborted-session class."""
    outcomes = []
    for seed, point in ((1, 0), (2, 3), (3, 5), (4, 7), (5, 11), (6, 2)):
        outcome, a1 = _product_flip_session(engine, seed, point)
        assert outcome == ("ideal" if a1 else "abort")
        outcomes.append(outcome)
    assert set(outcomes) == {"abort", "ideal"}


def test_chi_is_expanded_from_a_32_byte_seed_the_same_on_both_sides():
    """Step 5 sends a 32-byte seed (was N residues, 8 N bytes): chi is a function of the seed,
    residues in [0, q), different for another seed; a seed of another length is refused."""
    seed = bytes(range(32))
    chi = lm.expand_chi(seed, 1000)
    assert chi.dtype == U64 and chi.shape == (1000,) and (chi < U64(P)).all()
    assert lm.expand_chi(seed, 1000).tolist() == chi.tolist()
    assert lm.expand_chi(seed[::-1], 1000).tolist() != chi.tolist()
    assert len(set(chi.tolist())) == 1000 and int(chi.max()) >> 44  # full-width residues (48 bits), no repeats
    with pytest.raises(ProtocolError):
        lm.expand_chi(seed[:16], 10)


def test_forged_mac_word_aborts():
    """The combined MAC off by 1, 2^32, q - 1 (= -1 mod q), or sent unreduced (+ q, the same residue
    as a word >= q): every one aborts."""
    model, pp, XT, q = _case()
    for shift in (1, 1 << 32, P - 1):
        _aborts(model, pp, XT, q, _Patch(lm, "client_check_mac", lambda orig, *a: (orig(*a) + shift) % P))

    def unreduced(orig, *a):
        mw = orig(*a)
        return mw + P  # a word >= q: never a residue the server computes
    _aborts(model, pp, XT, q, _Patch(lm, "client_check_mac", unreduced))


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_randomised_deviation_over_the_clients_messages(engine):
    """One random bit of one client message flipped per session (a seeded sample of the client's
    messages, the last three always among them; on silent OT these include its S1 messages, its
    GGM sums and c_i as Ferret sender and its derandomisation bits as receiver):
    each session aborts (at the OT check, step 6's check or the tail's) or returns F(q') bit-exact."""
    model, pp, XT, q = _case(N=12, d=4, seed=2, engine=engine)
    rng = np.random.default_rng(7)

    def client_flipping(target, state):
        def client(p):
            p.ch._send_frame = bit_flipping_send(p.ch._send_frame, rng, target, state)
            return lm.online(p, pp, q=q)
        return client

    count = {"n": 0, "hit": False}
    run_two_party(lambda p: lm.online(p, pp, model=model, XT=XT), client_flipping(-1, count), seed=5,
                  setup=_setup_for(pp), timeout=30)
    total = count["n"]
    targets = sorted(set(rng.choice(total, size=min(8, total), replace=False).tolist()) | {total - 3, total - 2,
                                                                                            total - 1})
    outcomes = []
    for target in targets:
        state = {"n": 0, "hit": False}
        try:
            rec, y = run_two_party(lambda p: lm.online(p, pp, model=model, XT=XT), client_flipping(target, state),
                                   seed=5, setup=_setup_for(pp), timeout=30)
            assert y == (lm.reference(pp, model, XT, q, rec["rho"], rec["masks"]) + rec["flood"]) % (1 << gaussian_malicious.tail_plan(pp).ring_bits)
            outcomes.append("ideal")
        except (ProtocolError, PeerDisconnected, ValueError):
            outcomes.append("abort")
        assert state["hit"]
    assert len(outcomes) == len(targets) >= 8 and "abort" in outcomes


def test_refuses_wide_entries_with_one_line():
    model, pp, XT, q = _case()
    pp2 = ServedModel(model, security="semi-honest").public  # finest grid: 20-bit entries
    with pytest.raises(ProtocolError, match="--security semi-honest"):
        lm.check_params(pp2)


def test_refuses_distances_wider_than_32_bits():
    """c travels in 4-byte words and the check needs |e_i| < 2^(M+3) < q: M is capped at 32."""
    import copy

    from protocols.krr.params import LAPLACIAN_MALICIOUS_MAX_RING_BITS

    _, pp, _, _ = _case()
    assert LAPLACIAN_MALICIOUS_MAX_RING_BITS == 32 and pp.ring_bits <= 32
    wide = copy.copy(pp)
    wide.n_features = 1 << (32 - pp.x_bits)  # M = log2 d + B + 1 = 33
    assert wide.ring_bits == 33
    with pytest.raises(ProtocolError, match="--security semi-honest"):
        lm.check_params(wide)


def test_is_a_mac_check_error():
    assert issubclass(lm.ChainCheckError, MacCheckError)


# ------------------------------------------------------------------------------------------------
# over real TCP against `protocols.krr.serve` (in a thread of this process; client patches act on
# the client's -- this test's -- thread only): aborts are logged without client text, counted
# against the client, and the server serves the next client
# ------------------------------------------------------------------------------------------------

class _TCPServer:
    def __init__(self, served, max_aborts, store=None, **serve_kw):
        import logging

        from protocols.krr import serve
        from protocols.krr.server import AbortCounter

        self.stop_event, self.ready, self.port, self.lines = threading.Event(), threading.Event(), 0, []
        self.handler = logging.Handler()
        self.handler.emit = lambda rec: self.lines.append(rec.getMessage())
        logging.getLogger("secureml.serve").addHandler(self.handler)
        self.aborts = AbortCounter(max_aborts, store=store)

        def on_ready(port):
            self.port = port
            self.ready.set()

        self.thread = threading.Thread(target=lambda: serve(served, "127.0.0.1", 0, on_ready=on_ready,
                                                            stop=self.stop_event, session_timeout=20,
                                                            aborts=self.aborts, **serve_kw), daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        import logging

        self.stop_event.set()
        self.thread.join(5)
        logging.getLogger("secureml.serve").removeHandler(self.handler)


@pytest.fixture()
def tcp_server():
    model, _, _, _ = _case(N=16, d=5, seed=4)
    served = _unbound(ServedModel(model, frac_bits=4))  # the API's default: client-malicious (bound chain)
    assert served.public.security == "client-malicious" and served.public.ot_engine == "softspoken"
    srv = _TCPServer(served, max_aborts=2)
    try:
        yield model, srv
    finally:
        srv.stop()


def test_tcp_honest_then_deviating_clients_abort_and_are_counted(capsys, tcp_server, monkeypatch):
    from protocols.krr import predict
    from secureml.errors import SecureMLError

    model, srv = tcp_server
    assert "can tell it one bit about the training data" in capsys.readouterr().out  # the start-up line
    Q = model.X_train[[2, 7]] + 0.5
    plain = model.predict(Q)
    preds, _ = predict(srv.address, Q)
    np.testing.assert_allclose(preds, plain, atol=1e-3)

    def off_by_one(orig, b, c):
        u = orig(b, c)
        u[3] += U64(1)
        return u
    _client_patch(monkeypatch, lm, "client_masked", off_by_one)
    with pytest.raises(SecureMLError):
        predict(srv.address, Q[:1])
    monkeypatch.undo()
    assert any("failed a protocol check (ChainCheckError): abort 1 of 2" in ln for ln in srv.lines)
    # the next (honest) session from the same client is served
    preds, _ = predict(srv.address, Q[:1])
    np.testing.assert_allclose(preds, plain[:1], atol=1e-3)
    _client_patch(monkeypatch, lm, "client_check_mac", lambda orig, *a: (orig(*a) + 1) % P)
    with pytest.raises(SecureMLError):
        predict(srv.address, Q[:1])
    monkeypatch.undo()
    # two aborts used up: this client (its address: no identity configured) is refused before any OT
    with pytest.raises(SecureMLError, match="failed 2 protocol checks"):
        predict(srv.address, Q[:1], retries=0)
    assert srv.aborts.count("ip:127.0.0.1") == 2
    # nothing the client sent is in the log: only server-side facts (class names, counts, address)
    assert all("Error:" not in ln for ln in srv.lines)
    assert srv.thread.is_alive()


def test_tcp_silent_ot_session_and_a_deviating_ferret_sender(monkeypatch):
    """`serve` over TCP with the model on silent OT (protocol 27; forced: this small model would get
    SoftSpoken): an honest client gets the plaintext prediction; a client whose Ferret sender
    corrupts the top GGM level of every tree fails step 6, is counted, and the server goes on."""
    from protocols.krr import predict
    from secureml.errors import SecureMLError

    model, _, _, _ = _case(N=16, d=5, seed=4)
    served = _unbound(ServedModel(model, frac_bits=4))
    served.public.ot_engine = "silent"
    served.public.validate()
    srv = _TCPServer(served, max_aborts=2)
    try:
        Q = model.X_train[[2]] + 0.5
        preds, _ = predict(srv.address, Q)
        np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
        orig = ferret.FerretSender._spcot
        client = threading.current_thread()

        spcot = _corrupting_spcot("level")

        def corrupt(self, base, tree0, h):
            if threading.current_thread() is not client:
                return orig(self, base, tree0, h)
            return spcot(orig, self, base, tree0, h)
        monkeypatch.setattr(ferret.FerretSender, "_spcot", corrupt)
        with pytest.raises(SecureMLError):
            predict(srv.address, Q, retries=0)
        monkeypatch.undo()
        assert any("failed a protocol check (ChainCheckError): abort 1 of 2" in ln for ln in srv.lines)
        preds, _ = predict(srv.address, Q)
        np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
        assert srv.thread.is_alive()
    finally:
        srv.stop()


def _held_deviating_session(srv, Q, monkeypatch, all_deviate: bool):
    """A client thread "first" (not started) whose session deviates at step 3 (u off by one at one
    point) and waits inside it -- admitted, nothing failed yet -- until ``release`` is set; with
    ``all_deviate`` every other client thread's session deviates too. Returns (thread, inside,
    release, errors)."""
    from protocols.krr import predict
    from secureml.errors import SecureMLError

    inside, release, errors = threading.Event(), threading.Event(), []
    orig = lm.client_masked

    def held(b, c):
        u = orig(b, c)
        first = threading.current_thread().name == "first"
        if first:
            inside.set()
            release.wait(20)
        if first or all_deviate:
            u[3] += U64(1)
        return u
    monkeypatch.setattr(lm, "client_masked", held)

    def run():
        try:
            predict(srv.address, Q, retries=0)
        except SecureMLError as exc:
            errors.append(exc)
    return threading.Thread(target=run, name="first", daemon=True), inside, release, errors


def test_tcp_concurrent_deviating_sessions_cannot_exceed_the_abort_limit(monkeypatch):
    """Review finding (the counter was checked at admission only): with --max-aborts 1 a client
    opens one deviating session, holds it just before its commitment (admitted, nothing failed
    yet) and opens a second deviating session: both were admitted and both aborted -- two bits for
    a limit of one (with `concurrency` slots and W workers, up to W x concurrency per round). Now a
    session in progress counts as a possible abort: the second is turned away ("busy", retried by
    an honest client) before any protocol work, and the count never passes the limit."""
    from protocols.krr import predict
    from secureml.errors import SecureMLError

    model, _, _, _ = _case(N=16, d=5, seed=4)
    srv = _TCPServer(_unbound(ServedModel(model, frac_bits=4)), max_aborts=1)
    Q = model.X_train[[2]] + 0.5
    # every client thread of this test deviates; the first one waits inside
    t, inside, release, errors = _held_deviating_session(srv, Q, monkeypatch, all_deviate=True)
    try:
        t.start()
        assert inside.wait(30)
        # answered "busy" (one slot of two is free: the counter's answer, which an honest client
        # behind the same address retries), nothing run
        with pytest.raises(SecureMLError, match="busy"):
            predict(srv.address, Q, retries=0)
        assert srv.aborts.count("ip:127.0.0.1") == 0
        release.set()
        t.join(30)
        assert len(errors) == 1  # the held session itself aborted at step 6
        assert srv.aborts.count("ip:127.0.0.1") == 1
        with pytest.raises(SecureMLError, match="failed 1 protocol checks"):
            predict(srv.address, Q, retries=0)
    finally:
        release.set()
        srv.stop()


def test_abort_counter_in_the_ledger_is_shared_by_workers_and_survives_a_restart(tmp_path):
    """With a query ledger (serve --budget/--rate) the failed-check count lives in its file: two
    counters on one file (two worker processes) add up, and a new one (a restart) still refuses."""
    from protocols.krr.server import AbortCounter
    from protocols.net.frontdoor import Refused
    from secureml.serving.ledger import QueryLedger

    path = tmp_path / "ledger.sqlite"
    a, b = AbortCounter(2, store=QueryLedger(path)), AbortCounter(2, store=QueryLedger(path))
    a.check("token:eve")
    assert a.record("token:eve") == 1 and b.record("token:eve") == 2
    assert b.count("token:alice") == 0
    b.check("token:alice")
    with pytest.raises(Refused, match="failed 2 protocol checks"):
        AbortCounter(2, store=QueryLedger(path)).check("token:eve")
    AbortCounter(None, store=QueryLedger(path)).check("token:eve")  # 0 / None: count, never refuse


def test_a_failed_check_the_ledger_cannot_record_is_counted_in_the_process(tmp_path, caplog):
    """Fail closed: when the store cannot record a failed check (SQLite busy past its timeout, a
    full disk), the failure is counted in this process on top of the store's count, so the client
    is still refused at the limit (before: the failure went uncounted, one more bit per failure)."""
    import sqlite3

    from protocols.krr.server import AbortCounter
    from protocols.net.frontdoor import Refused
    from secureml.serving.ledger import QueryLedger

    class FullDisk(QueryLedger):
        def record_abort(self, client_id: str) -> int:
            raise sqlite3.OperationalError("database or disk is full")

    counter = AbortCounter(2, store=FullDisk(tmp_path / "ledger.sqlite"))
    with caplog.at_level("ERROR", logger="secureml.serve"):
        with counter.session("ip:10.0.0.9"):
            assert counter.record("ip:10.0.0.9") == 1
    assert "could not record a failed check (OperationalError)" in caplog.text
    assert "disk is full" not in caplog.text and "10.0.0.9" not in caplog.text
    counter.check("ip:10.0.0.9")
    with counter.session("ip:10.0.0.9"):  # one unrecorded failure and one running session: the limit
        with pytest.raises(Refused, match="busy"):
            with counter.session("ip:10.0.0.9"):
                pass
        assert counter.record("ip:10.0.0.9") == 2
    for ask in (lambda: counter.check("ip:10.0.0.9"), lambda: counter.session("ip:10.0.0.9").__enter__()):
        with pytest.raises(Refused, match="failed 2 protocol checks"):
            ask()
    counter.check("ip:10.0.0.10")  # another client is not affected



def test_sessions_in_progress_are_counted_across_processes_a_dead_workers_row_is_dropped(tmp_path):
    """Worker processes share one store (serve gives --workers > 1 a temporary ledger file when no
    --ledger is set): a session in progress in one process makes another process turn the same
    client away ("busy") at --max-aborts 1, so the bound is the limit, not limit + workers - 1;
    the row of a process that died mid-session is dropped at the next admission."""
    import multiprocessing as mp

    from protocols.krr.server import AbortCounter
    from protocols.net.frontdoor import Refused
    from secureml.serving.ledger import QueryLedger

    path = tmp_path / "aborts.sqlite"
    ctx = mp.get_context("fork")
    inside, release = ctx.Event(), ctx.Event()

    def worker() -> None:
        with AbortCounter(1, store=QueryLedger(path)).session("ip:10.0.0.9"):
            inside.set()
            release.wait(20)
        os._exit(0)

    def dies_inside() -> None:
        AbortCounter(1, store=QueryLedger(path)).session("ip:10.0.0.9").__enter__()
        inside.set()
        os._exit(1)  # killed mid-session: no end_session

    here = AbortCounter(1, store=QueryLedger(path))
    p = ctx.Process(target=worker)
    p.start()
    try:
        assert inside.wait(20)
        with pytest.raises(Refused, match="busy"):
            with here.session("ip:10.0.0.9"):
                pass
        with here.session("ip:10.0.0.10"):  # another client is not affected
            pass
    finally:
        release.set()
        p.join(20)
    with here.session("ip:10.0.0.9"):  # ended there: admitted here
        pass
    inside.clear()
    p = ctx.Process(target=dies_inside)
    p.start()
    p.join(20)
    assert inside.is_set() and p.exitcode == 1
    with here.session("ip:10.0.0.9"):  # the dead process's row does not hold the slot
        pass
    here.record("ip:10.0.0.9")
    with pytest.raises(Refused, match="failed 1 protocol checks"):
        with here.session("ip:10.0.0.9"):
            pass


# ------------------------------------------------------------------------------------------------
# security review of protocol 32 and the shared abort counter (docs/malicious.md)
# ------------------------------------------------------------------------------------------------

def test_tcp_a_session_turned_away_busy_by_the_abort_counter_is_not_charged(tmp_path, monkeypatch):
    """Review finding: with a query ledger (serve --budget/--rate) the answers were charged at
    admission, *before* the abort counter turned the session away as "busy" (its sessions in
    progress could use up its remaining failed checks) -- a refusal the client retries, and every
    retry was charged again: a client behind one address with more concurrent sessions than
    --max-aborts burnt its budget (and rate tokens) on sessions it never got. Now the counter's
    busy answer comes before the ledger charges."""
    from protocols.krr import predict
    from protocols.net.frontdoor import admit_hook
    from secureml.errors import SecureMLError
    from secureml.serving.ledger import QueryLedger

    model, _, _, _ = _case(N=16, d=5, seed=4)
    ledger = QueryLedger(tmp_path / "ledger.sqlite", budget=10)
    srv = _TCPServer(_unbound(ServedModel(model, frac_bits=4)), max_aborts=1, store=ledger, admit=admit_hook(ledger))
    Q = model.X_train[[2]] + 0.5
    # the first client thread deviates and waits inside its session
    t, inside, release, errors = _held_deviating_session(srv, Q, monkeypatch, all_deviate=False)
    try:
        t.start()
        assert inside.wait(30)
        for _ in range(3):  # an honest client's retries
            with pytest.raises(SecureMLError, match="busy"):
                predict(srv.address, Q, retries=0)
        assert ledger.usage("ip:127.0.0.1")["used"] == 1  # the held session's one answer only
        release.set()
        t.join(30)
        assert len(errors) == 1 and srv.aborts.count("ip:127.0.0.1") == 1
    finally:
        release.set()
        srv.stop()


def test_mask_hides_any_server_share_in_every_bit_of_c():
    """Review, step 3 (protocol 33): c = a + rho (mod 2^M), rho uniform on Z_2^M, is uniform whatever
    the server's share a is -- for the shifts a deviating client can cause through the chain
    (2^(M-1), 1, any) -- exactly: every bit of c is balanced (4 sigma) for every one of them."""
    from protocols.mpc.randomness import SecureRandom

    M, n = 25, 1 << 16
    rng = SecureRandom(bytes(16))
    for shift in (0, 1, 1 << (M - 1), (1 << M) - 1, 12345):
        rho = lm.draw_mask(rng, n, M)
        assert int(rho.max()) < 1 << M
        c = (U64(shift) + rho) & U64((1 << M) - 1)
        for bit in (0, M - 2, M - 1):
            ones = int(((c >> U64(bit)) & U64(1)).sum())
            assert abs(ones - n / 2) < 4 * (n / 4) ** 0.5, (shift, bit, ones)


def test_chi_seed_is_fresh_per_query_and_drawn_after_the_commitment():
    """Review, step 5: in a two-query session the server draws a new 32-byte seed for each query,
    from its own AES-CTR stream (party.rng), after that query's commitment of u (64 N random OTs,
    whose choice bits the server has received when commit_p64 returns); the client's chi is the
    expansion of the seed it received."""
    from protocols.mpc import commit_fp48

    model, pp, XT, _ = _case(N=16, d=5, seed=4)
    N = pp.n_train
    events = []

    def commit(orig, party, chooser, **kw):
        out = orig(party, chooser, **kw)
        if kw.get("bits") == pp.ring_bits + 2 and kw.get("n") == N:
            events.append("commit")
        return out

    client_chis = []
    real_chi = lm.expand_chi

    def chi(seed, n):  # both threads (run_two_party names them party0, the server, and party1)
        if threading.current_thread().name == "party0":
            events.append(("seed", seed))
            return real_chi(seed, n)
        client_chis.append((seed, real_chi(seed, n)))
        return client_chis[-1][1]
    Q = model.X_train[[1, 2]] + 0.25
    lm.expand_chi = chi
    try:
        with _Patches(_Patch(commit_fp48, "bit_macs", commit, server=True)):
            run_two_party(lambda p: lm.server_online(p, pp, 2, model), lambda p: lm.client_online(p, pp, Q),
                          seed=5, setup=_setup_for(pp), timeout=60)
    finally:
        lm.expand_chi = real_chi
    assert [e if e == "commit" else "seed" for e in events] == ["commit", "seed", "commit", "seed"]
    seeds = [e[1] for e in events if e != "commit"]
    assert len(seeds[0]) == lm.CHI_SEED_BYTES and seeds[0] != seeds[1]
    assert [s for s, _ in client_chis] == seeds
    assert all(chi.tolist() == lm.expand_chi(s, N).tolist() for s, chi in client_chis)


def test_begin_session_is_atomic_across_processes(tmp_path):
    """Review, the shared abort counter: six processes ask to begin a session of the same client at
    the same moment (a barrier) with --max-aborts 2: BEGIN IMMEDIATE serialises the read of failed
    checks + sessions in progress and the insert, so exactly two are admitted, four told busy."""
    import multiprocessing as mp

    from secureml.serving.ledger import QueryLedger

    path = tmp_path / "aborts.sqlite"
    QueryLedger(path)
    ctx = mp.get_context("fork")
    barrier, release, out = ctx.Barrier(6), ctx.Event(), ctx.Queue()

    def worker() -> None:
        led = QueryLedger(path)
        barrier.wait(20)
        out.put(str(led.begin_session("ip:10.0.0.7", 2)))
        release.wait(20)  # alive while the others decide: its row counts
        os._exit(0)

    procs = [ctx.Process(target=worker) for _ in range(6)]
    for p in procs:
        p.start()
    try:
        verdicts = sorted(out.get(timeout=30) for _ in procs)
    finally:
        release.set()
        for p in procs:
            p.join(20)
    assert verdicts == ["None", "None", "busy", "busy", "busy", "busy"]


def test_a_session_in_progress_in_another_pid_namespace_is_not_dropped_as_dead(tmp_path, monkeypatch):
    """Review finding: two serve instances sharing a ledger file (--ledger on a shared volume) in
    different pid namespaces (containers) or hosts: a worker's row of sessions in progress was
    dropped by the other instance whenever its pid did not exist *there* -- a live session read as
    a dead worker's, and the client admitted past --max-aborts (limit + the other instance's
    sessions). Now rows carry their process's pid namespace (boot id and /proc/self/ns/pid): only
    rows of our own namespace are checked by pid; another namespace's count as running until they
    end there or are older than FOREIGN_TTL_S (a crashed container must not hold a slot for ever)."""
    from secureml.serving import ledger as ledger_mod
    from secureml.serving.ledger import QueryLedger

    path = tmp_path / "shared.sqlite"
    now = [1000.0]
    here = QueryLedger(path, clock=lambda: now[0])
    other = QueryLedger(path, clock=lambda: now[0])
    real_ns = getattr(ledger_mod, "_NAMESPACE", None)
    with monkeypatch.context() as m:  # the other instance: its own namespace, a pid that is no process here
        m.setattr(ledger_mod, "_NAMESPACE", "another-boot-id|pid:[4026532999]", raising=False)
        m.setattr(os, "getpid", lambda: 4_194_304)  # above Linux's pid_max
        assert other.begin_session("token:eve", 1) is None
    assert getattr(ledger_mod, "_NAMESPACE", None) == real_ns
    assert here.running("token:eve") == 1
    assert here.begin_session("token:eve", 1) == "busy"
    now[0] += ledger_mod.FOREIGN_TTL_S + 1  # that instance never ended it: expired, dropped
    assert here.begin_session("token:eve", 1) is None
    here.end_session("token:eve")
    assert here.running("token:eve") == 0


def test_tcp_a_failed_check_is_recorded_before_its_session_slot_is_released(tmp_path, monkeypatch):
    """Review, the shared abort counter: over TCP with a ledger store, a deviating session's calls
    are begin_session, record_abort, end_session in this order -- between the failure and the
    release the session counts twice (running and failed), never zero times, so no concurrent
    session of the same client is admitted on a stale count."""
    from protocols.krr import predict
    from secureml.errors import SecureMLError
    from secureml.serving.ledger import QueryLedger

    calls = []

    class Logged(QueryLedger):
        def begin_session(self, client_id, limit):
            calls.append("begin")
            return super().begin_session(client_id, limit)

        def record_abort(self, client_id):
            calls.append(("record", self.running(client_id)))
            return super().record_abort(client_id)

        def end_session(self, client_id):
            calls.append(("end", self.aborts(client_id)))
            return super().end_session(client_id)

    model, _, _, _ = _case(N=16, d=5, seed=4)
    srv = _TCPServer(_unbound(ServedModel(model, frac_bits=4)), max_aborts=2, store=Logged(tmp_path / "l.sqlite"))
    try:
        _client_patch(monkeypatch, lm, "client_check_mac", lambda orig, *a: (orig(*a) + 1) % P)
        with pytest.raises(SecureMLError):
            predict(srv.address, model.X_train[[2]] + 0.5, retries=0)
        assert calls == ["begin", ("record", 1), ("end", 1)]
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------------
# protocol 33: the shared tail's split point for the Laplacian kernel
# ------------------------------------------------------------------------------------------------

def test_tail_plan_takes_a_wider_low_part_at_cm_settings_for_both_kernels():
    """At N = 16,384, d = 351 (bench.synthetic's CM-like models) the Laplacian's tail splits x at
    L = 22 instead of pp.lo_bits = 19: one G table of 2^3 entries of 19 bytes and 22 one-bit chain
    digits, now (protocol 36: output scale 78 = T - 1 + 20, the first digit truncating 18 bits) in
    Z_2^216, 746 B per point (812 B in Z_2^240 at protocol 34; the rank-2 split at L = 19 sent 1,297
    B); its G entries still fit 64-bit words (2^40 e^(c 2^22) < 2^64). The Gaussian (protocol 36)
    takes the wider L too: 1,059 B at L = 41 on the sigma-1000 model (1,144 B at L = pp.lo_bits = 40,
    protocol 34), and on bench.malicious_steps' sigma-74 model (protocol 37) 2,260 B at L = 42: the
    split h0 = 4 (past lut = 2) with the weights on the e1 side, A with ga = 48 fractional bits (its
    rounding gain e^step / 2^(ga - g) = 2^9.3 <= 2^10), 13- and 18-byte words, entry 0 of both tables
    free, the c words 22 of RG = 192 bits' 24 bytes; 42 digits in Z_2^216 (3,034 B at L = 41 in
    protocol 36, 3,560 B at L = 40 in protocol 34)."""
    import math

    from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model

    model, _ = synthetic_model(16384, 351, 1000.0, seed=0, kernel="laplacian")
    pp = ServedModel(model, security="client-malicious", frac_bits=LAPLACIAN_GRID_BITS).public
    tp = gaussian_malicious.tail_plan(pp)
    assert (pp.lo_bits, tp.lo_bits, tp.hb, tp.lut_bits, tp.split) == (19, 22, 3, 2, 0)
    assert (tp.g_bytes, tp.chain_bytes, len(tp.digits), tp.scale_bits, tp.shifts[0]) == (19, 27, 22, 78, 18)
    assert tp.g_bytes_per_point() + tp.chain_bytes_per_point() == 746
    assert math.log2(math.exp(tp.step)) + pp.g_frac_bits < 64
    gauss, _ = synthetic_model(16384, 351, 1000.0, seed=0, kernel="gaussian")
    gp = ServedModel(gauss, security="client-malicious").public
    gt = gaussian_malicious.tail_plan(gp)
    assert (gp.lo_bits, gt.lo_bits) == (40, 41) and gt.g_bytes_per_point() + gt.chain_bytes_per_point() == 1059
    gauss, _ = synthetic_model(16384, 351, 74.0, seed=0, kernel="gaussian")
    gp = ServedModel(gauss, security="client-malicious").public
    gt = gaussian_malicious.tail_plan(gp)
    assert (gp.lo_bits, gt.lo_bits, gt.split, gt.alpha_e0, gt.head_shift, gt.scale_bits, gt.ring_bits) == (
        40, 42, 4, False, 17, 79, 216)
    assert (gt.lut_bits, gt.g_ring_bits, gt.g_cut, gt.a_frac_bits) == (2, 192, 16, 48)
    assert (gt.a_bytes, gt.b_bytes, gt.g_bytes_per_point(), gt.chain_bytes_per_point()) == (13, 18, 1126, 1134)


def test_small_model_runs_the_wider_split_point_bit_exact():
    """The tests' model (L = 12 against pp.lo_bits = 11): the honest output is reference() bit-exact
    and within 1e-4 of the plaintext prediction; G's single table then has 2^2 entries."""
    model, pp, XT, q = _case(seed=9)
    tp = gaussian_malicious.tail_plan(pp)
    assert tp.lo_bits == pp.lo_bits + 1 and tp.hb == pp.d_bits - tp.lo_bits
    rec, y = _run(model, pp, XT, q)
    assert _ideal(model, pp, XT, q, rec, y)
    X = XT.T.astype(float) / 2 ** pp.frac_bits + pp.feature_lo
    qd = q / 2 ** pp.frac_bits + pp.feature_lo
    plain = model.y_offset + float((model.dual_coef * np.exp(-np.abs(X - qd).sum(1) / model.sigma)).sum())
    assert abs(gaussian_malicious.decode(pp, y) - plain) < 1e-4
