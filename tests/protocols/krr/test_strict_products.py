"""The bit-free Laplacian's products step (protocols.krr.strict_products), two real parties on the
checked OT extension: exact shares of S_i = sum_j (q_j - x_ij) b_ij, and deviating clients (patched
client steps, the client's thread only) that either abort at the lattice proof or move their own
share by an amount they know."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.krr import strict_products as sp
from protocols.krr.chain import CLIENT
from protocols.mpc import authenticated as au
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party
from tests.protocols.krr.deviations import PartyPatch

U64 = np.uint64
XB, M = 10, 25  # 10-bit entries (test_laplacian_malicious's _case), a 25-bit ring
MASK = U64((1 << M) - 1)


def _case(N=24, d=6, seed=0, b=None):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 1 << XB, (N, d)).astype(U64)
    X[0] = 0
    X[1] = (1 << XB) - 1
    q = rng.integers(0, 1 << XB, d).astype(U64)
    q[0], q[-1] = 0, (1 << XB) - 1
    b_S = rng.integers(0, 2, (N, d)).astype(np.uint8)
    if b is None:  # the true comparison bits, shared
        bits = (X < q[None, :]).astype(np.uint8)
    elif b == "random":  # any bits (S_i may be negative: it wraps mod 2^M)
        bits = rng.integers(0, 2, (N, d)).astype(np.uint8)
    else:
        bits = np.full((N, d), b, dtype=np.uint8)
    return X, q, b_S, bits ^ b_S


def _run(X, q, b_S, b_C, seed=3, record=None, layout="wide", stats=None):
    N, d = X.shape
    qbits = ((q[:, None] >> np.arange(XB, dtype=U64)[None, :]) & U64(1)).astype(np.uint8).ravel()

    def server(p):
        qp = au.random_choices(p, CLIENT, n=d * XB)
        bp = au.random_choices(p, CLIENT, n=N * d)
        before = p.ch.stats()
        out = sp.server(p, X=X, b_S=b_S, b_pads=bp, q_pads=(qp[0].reshape(d, XB, 16), qp[1].reshape(d, XB, 16)),
                        x_bits=XB, ring_bits=M, layout=layout)
        if stats is not None:
            after = p.ch.stats()
            stats.update({k: after[k] - before[k] for k in after})
        return out

    def client(p):
        qp = au.random_choices(p, CLIENT, n=d * XB, choices=qbits).reshape(d, XB, 16)
        bp = au.random_choices(p, CLIENT, n=N * d, choices=b_C)
        if record is not None:
            record["b_pads"] = bp
        return sp.client(p, q=q, b_C=b_C, b_pads=bp, q_pads=qp, x_bits=XB, ring_bits=M, layout=layout)

    return run_two_party(server, client, seed=seed, setup=checked_ot, timeout=30)


@pytest.mark.parametrize("N,seed,b,layout", [(24, 0, None, "wide"), (64, 1, None, "wide"), (48, 9, "random", "wide"),
                                             (32, 2, 1, "wide"), (32, 4, 0, "wide"), (40, 10, "random", "stacked"),
                                             (24, 11, 1, "stacked")])
def test_shares_reconstruct_S_exactly(N, seed, b, layout):
    X, q, b_S, b_C = _case(N=N, seed=seed, b=b)
    s_S, s_C = _run(X, q, b_S, b_C, layout=layout)
    assert s_S.dtype == U64 and s_C.dtype == U64 and s_S.shape == (N,)
    assert int(s_S.max()) < 1 << M and int(s_C.max()) < 1 << M
    want = sp.reference(X, q, b_S ^ b_C, M)
    np.testing.assert_array_equal((s_S + s_C) & MASK, want)
    if b == "random":  # some S_i < 0 (x_ij > q_j with b_ij = 1): wrapped mod 2^M, still exact
        assert (want >= U64(1 << (M - 1))).any()
    if b == 0:
        assert (want == 0).all()


@pytest.mark.parametrize("layout", sp.LAYOUTS)
def test_lattice_query_other_than_committed_is_refused(layout):
    """A client encrypting q' != its committed q (one bit of one entry) is refused by the proof."""
    X, q, b_S, b_C = _case(seed=5)
    other = q.copy()
    other[2] ^= U64(1)
    seen = []

    def swap(orig, qq):
        seen.append(True)
        return other

    with PartyPatch(sp, "client_lattice_query", swap):
        with pytest.raises(MacCheckError):
            _run(X, q, b_S, b_C, layout=layout)
    assert seen


def test_flipped_choices_move_only_the_clients_share_by_what_it_knows():
    """A client that uses the output of the other choice at some elements (its vector-COT words as
    if b_C were flipped there: P_c + (1 - c) tau, computed from what it received) moves its share by
    exactly -sum_j e1_ij + sum_j q_j e2_ij, e = (1 - 2c) tau, an amount it knows; the server's share
    is unchanged and the b in S stays the committed one."""
    X, q, b_S, b_C = _case(N=32, seed=6)
    N, d = X.shape
    flip = np.zeros(N * d, dtype=bool)
    flip[np.random.default_rng(7).choice(N * d, 40, replace=False)] = True
    rec: dict = {}

    def choices(orig, c):
        rec["c"] = c.ravel().copy()
        return np.ones_like(c)  # ask for P_c + tau everywhere: tau is then known at every element

    def deviate(orig, Y):
        c = rec["c"].astype(U64)
        Pc = au._stream(rec["b_pads"], 2, sp.PRODUCTS_DOMAIN) & MASK
        tau = (Y - Pc) & MASK  # received correction, per element and word
        honest = (Pc + c[:, None] * tau) & MASK
        flipped = (Pc + (U64(1) - c)[:, None] * tau) & MASK
        out = np.where(flip[:, None], flipped, honest)
        rec["e"] = (out - honest) & MASK
        return out

    honest_S, honest_C = _run(X, q, b_S, b_C)
    with PartyPatch(sp, "client_vole_choices", choices), PartyPatch(sp, "client_vole_words", deviate):
        s_S, s_C = _run(X, q, b_S, b_C, record=rec)
    np.testing.assert_array_equal(s_S, honest_S)  # same seed: the server's share did not move
    e = rec["e"].reshape(N, d, 2)
    assert (e[flip.reshape(N, d)] != 0).all() and (e[~flip.reshape(N, d)] == 0).all()
    known = (-(e[:, :, 0].sum(axis=1, dtype=U64)) + (e[:, :, 1] * q[None, :]).sum(axis=1, dtype=U64)) & MASK
    np.testing.assert_array_equal((s_C - honest_C) & MASK, known)
    want = sp.reference(X, q, b_S ^ b_C, M)
    np.testing.assert_array_equal((s_S + s_C - known) & MASK, want)  # S of the committed b
    b_flip = (b_S ^ b_C) ^ flip.reshape(N, d)
    assert ((s_S + s_C) & MASK != sp.reference(X, q, b_flip, M)).any()  # not S of the flipped b


@pytest.mark.parametrize("layout", sp.LAYOUTS)
def test_bytes_on_the_wire_match_the_cost_functions(layout):
    """Step 1 sends exactly 2 ceil(M / 8) bytes per element (plus frame headers); the lattice part is
    within 1% of lattice_bytes's estimate (its 16 B per witness OT is the checked engine's mean)."""
    X, q, b_S, b_C = _case(N=48, seed=12)
    N, d = X.shape
    st: dict = {}
    _run(X, q, b_S, b_C, layout=layout, stats=st)
    total = st["bytes_sent"] + st["bytes_received"]
    lattice = total - sp.vole_bytes_per_element(M) * N * d
    est = sp.lattice_bytes(N, d, XB, M)[layout]
    assert abs(lattice - est) < 0.01 * est, (lattice, est)


def test_byte_figures():
    assert sp.vole_bytes_per_element(25) == 8
    assert sp.limb_bits(15, 25) == (15, 2)
    assert sp.limb_bits(10, 25) == (10, 3)


def test_matrix_width_leaves_the_default_plan_alone_and_grows_the_flooding():
    """he_matvec_checked's w_bits: w_bits = x_bits is the default plan (same agreement, same wire);
    a wider matrix gets a larger noise bound and flooding, and entries beyond it are refused."""
    from protocols.mpc import he_matvec_checked as hmc
    from secureml.errors import DataError

    base = hmc.make_plan(300, 351, 15, 25)
    assert hmc.make_plan(300, 351, 15, 25, w_bits=15) is base and base.w_bits == 0
    wide = hmc.make_plan(300, 351, 15, 25, w_bits=25)
    assert wide.w_bits == 25 and wide.x_bits == 15
    assert wide.noise_bound > base.noise_bound and wide.flood_bits > base.flood_bits
    with pytest.raises(DataError):
        hmc.PreparedChecked(np.full((4, 6), 1 << 12, dtype=U64), 10, 25, w_bits=12)
