"""Client-malicious Gaussian, binding step (protocols.krr.binding): an honest client ends with
u = D(q) + rho authenticated; real deviating clients (patched client steps, on the client's
thread only) -- a shifted distance at one index (any bit, the top one included), a distance
from another query, an inconsistent ||q||^2, different query bits in the two commitments, a
perturbed cross-term share -- are caught and the server aborts."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.krr import binding
from protocols.krr.params import PublicParams
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party

U64 = np.uint64
SERVER, CLIENT = 0, 1


def _pp(N=48, d=10):
    return PublicParams(kind="krr-gaussian", n_train=N, n_features=d, frac_bits=8, feature_lo=0.0,
                        feature_hi=64.0, sigma=30.0, weight_bits=20, cross_term="ot",
                        security="client-malicious")


def _data(pp, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 60, (pp.n_train, pp.n_features)) * (rng.random((pp.n_train, pp.n_features)) < 0.6)
    q = rng.uniform(0, 60, pp.n_features)
    Xe, qe = pp.encode_features(X), pp.encode_features(q[None])[0]
    xx = binding._mod((Xe * Xe).sum(axis=1, dtype=U64), pp.ring_bits)
    return Xe, xx, qe




class _ClientPatch:
    """Replace one client step (module function) for the client's thread only."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn
        self.orig = getattr(binding, name)
        self.client_thread = None

    def __enter__(self):
        orig, fn = self.orig, self.fn

        def dispatch(*a, **kw):
            if threading.current_thread() is self.client_thread:
                return fn(orig, *a, **kw)
            return orig(*a, **kw)
        setattr(binding, self.name, dispatch)
        return self

    def __exit__(self, *exc):
        setattr(binding, self.name, self.orig)


def _run(pp, Xe, xx, qe, patch=None, seed=3):
    def server(p):
        return binding.bound_masked_distances(p, pp, X=Xe, xx=xx)

    def client(p):
        if patch is not None:
            patch.client_thread = threading.current_thread()
        return binding.bound_masked_distances(p, pp, q=qe)

    if patch is None:
        return run_two_party(server, client, seed=seed, setup=checked_ot, timeout=30)
    with patch:
        return run_two_party(server, client, seed=seed, setup=checked_ot, timeout=30)


def test_honest_client_is_bound_to_its_query():
    pp = _pp()
    Xe, xx, qe = _data(pp)
    sv, cl = _run(pp, Xe, xx, qe)
    D = ((Xe.astype(object) - qe.astype(object)) ** 2).sum(axis=1)
    got = (cl.u.astype(object) - sv.rho.astype(object)) % (1 << pp.ring_bits)
    assert (got == D).all()
    # the MACs are MACs of u under the server's key, mod the check ring 2^(M + 44) (protocols 29, 34: the
    # commitment sends bit b's corrections in M + 44 - b bits, so nothing above that ring is fixed)
    mac = np.array([(h << 64) | l for h, l in zip(cl.u_mac[0].tolist(), cl.u_mac[1].tolist())], dtype=object)
    key = np.array([(h << 64) | l for h, l in zip(sv.u_key[0].tolist(), sv.u_key[1].tolist())], dtype=object)
    ring = 1 << min(pp.ring_bits + binding.CHECK_RING_MARGIN, 128)
    assert ((mac - key - cl.u.astype(object) * int(sv.delta)) % ring == 0).all()


@pytest.mark.parametrize("bit", ["low", "top", "middle"])
def test_shifted_distance_at_one_index_aborts(bit):
    """Finding 3: add delta_j to the client's D_j only (top bit: the kernel term goes to zero)."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=1)
    shift = {"low": 1, "top": 1 << (pp.ring_bits - 1), "middle": 12345 << 9}[bit]

    def masked(orig, norm, s_c, c, ring_bits):
        u = orig(norm, s_c, c, ring_bits)
        u[7] = binding._mod(u[7] + U64(shift), ring_bits)
        return u

    with pytest.raises(MacCheckError):
        _run(pp, Xe, xx, qe, _ClientPatch("client_masked", masked))


def test_zeroing_all_but_one_term_aborts():
    """Findings 1-2 through the distances: every D_i but one pushed past the kernel's cut."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=2)

    def masked(orig, norm, s_c, c, ring_bits):
        u = orig(norm, s_c, c, ring_bits)
        keep = u[5]
        u = binding._mod(u + U64(1 << (ring_bits - 1)), ring_bits)
        u[5] = keep
        return u

    with pytest.raises(MacCheckError):
        _run(pp, Xe, xx, qe, _ClientPatch("client_masked", masked))


def test_inconsistent_norm_aborts():
    """A claimed ||q||^2 off by a constant (shifts every D_i: would scale the kernel sum against
    the offset and reveal the offset) is caught: the norm is derived from the committed bits."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=3)
    with pytest.raises(MacCheckError):
        _run(pp, Xe, xx, qe, _ClientPatch("client_norm", lambda orig, q, rb: orig(q, rb) + U64(1 << 20)))


def test_query_bits_other_than_its_norm_aborts():
    """The query's bits are fixed once (the random OTs of step 2, reused by the cross term and the
    commitment); a client whose norm term belongs to another query is caught."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=4)

    def other(orig, q, s):
        q = orig(q, s).copy()
        q[2] ^= U64(1 << 3)
        return q

    with pytest.raises(MacCheckError):
        _run(pp, Xe, xx, qe, _ClientPatch("client_commit_query", other))


def test_commitment_of_another_valid_query_binds_to_that_query():
    """A client whose OT bits are q' but whose norm term is q's is caught (u is not D(q') + rho);
    choosing q' everywhere is just the query q'."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=5)
    q2 = qe.copy()
    q2[0] = (q2[0] + U64(37)) % U64(1 << pp.x_bits)
    with pytest.raises(MacCheckError):
        _run(pp, Xe, xx, qe, _ClientPatch("client_commit_query", lambda orig, q, s: q2))
    sv, cl = _run(pp, Xe, xx, q2)
    D = ((Xe.astype(object) - q2.astype(object)) ** 2).sum(axis=1)
    assert (((cl.u.astype(object) - sv.rho.astype(object)) % (1 << pp.ring_bits)) == D).all()


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, 47), val=st.integers(0, 40), odd=st.integers(0, 1000), where=st.sampled_from(["u", "share"]))
def test_random_perturbation_of_a_client_value_aborts(i, val, odd, where):
    """Randomised deviation: perturb the client's u_i or its cross-term share s_C,i by an error
    of random 2-adic valuation: always an abort (seeded: deterministic)."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=6)
    err = U64(((2 * odd + 1) << val) % (1 << pp.ring_bits)) or U64(1)

    def masked(orig, norm, s_c, c, ring_bits):
        if where == "share":
            s_c = s_c.copy()
            s_c[i] += err
            return orig(norm, s_c, c, ring_bits)
        u = orig(norm, s_c, c, ring_bits)
        u[i] = binding._mod(u[i] + err, ring_bits)
        return u

    with pytest.raises(MacCheckError):
        _run(pp, Xe, xx, qe, _ClientPatch("client_masked", masked), seed=i + val)


def test_identity_patch_passes():
    """The patching harness itself changes nothing: an honest step through it passes."""
    pp = _pp()
    Xe, xx, qe = _data(pp, seed=7)
    sv, cl = _run(pp, Xe, xx, qe, _ClientPatch("client_masked", lambda orig, *a: orig(*a)))
    assert cl.u.shape == sv.rho.shape == (pp.n_train,)


@pytest.mark.parametrize("N", [32, 300])
def test_cross_term_byte_estimates_match_the_wire(N):
    """binding.cross_term_bytes (what `serve --cross-term auto` compares) against the bytes of a real
    step 2 at d = 351: both estimates within 1%, and the cheaper by
    estimate is the cheaper on the wire (OT at N = 32, the lattice at N = 300)."""
    from bench.cross_term_choice import public_params, step2_bytes

    pp, Xe, q = public_params(N, 351)
    est, wire = binding.cross_term_bytes(pp), {}
    for cross in ("ot", "he"):
        pp.cross_term = cross
        wire[cross] = step2_bytes(pp, Xe, q)
    assert abs(wire["ot"] - est["ot"]) < 0.01 * est["ot"]
    assert abs(wire["he"] - est["he"]) < 0.01 * est["he"]
    assert binding.cheaper_cross_term(pp) == min(wire, key=wire.get) == ("ot" if N == 32 else "he")


def test_rows_as_float_is_kept_per_model_for_its_own_matrix():
    """Step 6's float64 copy of X: exact, made once per (owner, X) and remade for another X."""
    from protocols.krr import binding

    class Owner:  # any weakly referable object stands for the served model
        pass

    X = np.random.default_rng(5).integers(0, 2 ** 23, (40, 7), dtype=np.uint64)
    X[0, 0] = 2 ** 23 - 1
    owner = Owner()
    a = binding.rows_as_float(X, owner=owner)
    assert a.dtype == np.float64 and (a.astype(np.uint64) == X).all()
    assert binding.rows_as_float(X, owner=owner) is a  # kept
    X2 = X.copy()
    b = binding.rows_as_float(X2, owner=owner)
    assert b is not a and (b == a).all()  # another matrix: made again, not a stale copy
    assert binding.rows_as_float(X, owner=None) is not binding.rows_as_float(X, owner=None)  # no owner: not kept


def test_overlapping_sessions_blas_limit_is_shared_and_restored():
    """Step 6's one-thread BLAS limit is process-wide and sessions run in server threads: two
    overlapping sessions (A in, B in, A out, B out -- the interleaving of two threads, here made
    deterministic) keep BLAS at one thread until the last leaves, then restore the original. Before
    the fix A's exit restored 2 threads under B, and B's exit left the process at 1 for good."""
    from threadpoolctl import ThreadpoolController

    ctl = ThreadpoolController()
    if not ctl.select(user_api="blas").lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can control")

    def threads() -> set[int]:
        return {c.num_threads for c in ThreadpoolController().select(user_api="blas").lib_controllers}

    with ctl.limit(limits=2, user_api="blas"):  # a known original, whatever the machine's default
        assert threads() == {2}
        a, b = binding._one_blas_thread(), binding._one_blas_thread()
        a.__enter__()
        b.__enter__()
        assert threads() == {1}
        a.__exit__(None, None, None)
        assert threads() == {1}  # B still inside
        b.__exit__(None, None, None)
        assert threads() == {2}
        with binding._one_blas_thread():  # and nested in one thread
            with binding._one_blas_thread():
                assert threads() == {1}
            assert threads() == {1}
        assert threads() == {2}
