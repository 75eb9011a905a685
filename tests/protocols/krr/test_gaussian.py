"""Double-blind exact Gaussian KRR over OT: correctness against plaintext, privacy, bad input."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr.params import PublicParams
from protocols.krr import ServedModel, predict_features, serve_one
from protocols.testing import run_krr_session, secrets_in_transcript, serve_one_in_thread, view_independence_pvalue
from protocols.net.transport import local_channel_pair
from secureml.errors import ModelError, ProtocolError


def _model(N=40, d=12, sigma=30.0, seed=0, offset=-321.0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.6)
    alpha = rng.normal(0, 500, N)
    return KernelModelParams(X, alpha, offset, "gaussian", sigma)


def _session(served: ServedModel, Q, record: bool = False, seed: int | None = None):
    return run_krr_session(served, Q, record=record, seed=seed)


def test_predictions_match_plaintext():
    model = _model()
    served = ServedModel(model)
    rng = np.random.default_rng(5)
    Q = np.vstack([
        model.X_train[3],  # distance exactly 0: kernel 1, borrow/wrap edge
        np.clip(model.X_train[7] + rng.normal(0, 2, 12), 0, None),  # near a training point
        np.full(12, 49.0),  # far from everything
    ])
    preds, cost, pp, _, box = _session(served, Q)
    assert "error" not in box
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-2)
    assert cost.rounds > 0 and cost.bytes_sent > 0 and box["cost"].bytes_sent > 0


@pytest.mark.parametrize("sigma", [3.0, 400.0])
def test_kernel_width_extremes(sigma):
    """Tiny sigma: most kernels vanish (top-bits flag path); huge sigma: all near 1."""
    model = _model(N=24, d=6, sigma=sigma, seed=2)
    Q = np.clip(model.X_train[:2] + 0.5, 0, 49.9)
    preds, *_ = _session(ServedModel(model), Q)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-2)


def test_no_distance_or_kernel_value_in_transcript():
    """The published protocol revealed every query-training distance; ours must not."""
    model = _model(N=32, d=8, seed=3)
    served = ServedModel(model)
    Q = model.X_train[:1] + np.random.default_rng(0).uniform(0.1, 0.4, (1, 8))
    preds, cost, pp, client_ch, box = _session(served, Q, record=True)
    X = pp.encode_features(model.X_train)
    q = pp.encode_features(Q)[0]
    D = ((X.astype(object) - q.astype(object)) ** 2).sum(axis=1)
    M = pp.ring_bits
    secrets = {int(v) % (1 << M) for v in D} | {int(v) >> pp.shift_bits for v in D}
    K = np.exp(-((model.X_train - Q) ** 2).sum(1) / (2 * model.sigma**2))
    secrets |= {int(round(k * (1 << pp.g_frac_bits))) for k in K}
    assert len(secrets) > 32
    assert secrets_in_transcript(client_ch.transcript, secrets) == []


def test_client_view_independent_of_query():
    """Bytes the client receives look the same whether its query sits on a training point or far away."""
    model = _model(N=32, d=8, seed=4)
    served = ServedModel(model)
    # seeded (other masks per session) so the chi-square test cannot fail by chance
    transcripts = [_session(served, Q, record=True, seed=seed)[3].transcript
                   for seed, Q in ((101, model.X_train[:1]), (202, np.full((1, 8), 49.0)))]
    assert view_independence_pvalue(transcripts) > 1e-4


def test_bad_queries_are_refused_before_anything_private_moves():
    model = _model(N=16, d=5, seed=6)
    served = ServedModel(model)
    for Q, msg in ((np.full((1, 5), np.nan), "NaN"), (np.full((1, 5), 1e6), "outside"), (np.zeros((1, 4)), "shape")):
        with pytest.raises(ModelError, match=msg):
            _session(served, Q)


def test_version_mismatch_is_a_clear_error():
    c0, c1 = local_channel_pair(timeout=10)
    served = ServedModel(_model(N=8, d=3))
    t = threading.Thread(target=lambda: pytest.raises(ProtocolError, serve_one, served, c0))
    t.start()
    c1.send_json({"protocol": "secureml-krr", "version": 999, "n_queries": 1})
    reply = c1.recv_json()
    t.join(10)
    assert reply["ok"] is False and "version" in reply["error"]
    with pytest.raises(ProtocolError, match="version"):
        PublicParams.from_dict({**served.public.to_dict(), "version": 1})


def test_public_params_reveal_only_bounds():
    served = ServedModel(_model())
    d = served.public.to_dict()
    assert set(d) >= {"n_train", "n_features", "sigma", "frac_bits", "feature_lo", "feature_hi"}
    hi = d["feature_hi"] - d["feature_lo"]
    assert hi == 2 ** round(np.log2(hi))  # a power of two, not the data's maximum


def test_grid_model_matches_plaintext_to_kernel_precision():
    """A model whose Coulomb matrices sit on the protocol's grid: only kernel-side rounding remains."""
    from secureml.data import embedded_split, load_embedded
    from secureml.models.krr import KernelRidge
    from secureml.models.pipeline import MolecularModel
    from secureml.representations import CoulombMatrix

    data = load_embedded()
    tr, te = embedded_split(0)
    mm = MolecularModel(CoulombMatrix(size=23, grid_bits=16), KernelRidge("gaussian", sigma=50.0, lam=1e-8),
                        "U0_atomization").fit(data.subset(tr[:300]))
    test = data.subset(te[:3])
    served = ServedModel.from_molecular_model(mm)
    assert served.public.frac_bits == 16
    preds, *_ = _session(served, mm.features(test))
    np.testing.assert_allclose(preds, mm.predict(test), atol=1e-3)


def test_dressed_atom_baseline_is_added_by_the_client():
    """A model's per-element energies are public; the client adds sum n_Z e_Z of its own molecule."""
    model = _model(N=24, d=6, seed=7)
    served = ServedModel(model, element_energies={1: -0.6, 6: -95.5, 8: -101.25})
    assert served.public.baseline_elements == [1, 6, 8]
    Q = np.clip(model.X_train[:2] + 0.5, 0, 49.9)
    counts = np.array([[4, 2, 1], [0, 3, 2]])
    preds, *_ = run_krr_session(served, Q, counts=counts)
    expected = model.predict(Q) + counts @ np.array([-0.6, -95.5, -101.25])
    np.testing.assert_allclose(preds, expected, atol=1e-2)
    with pytest.raises(ModelError, match="dressed-atom baseline"):
        run_krr_session(served, Q)  # refused before anything private moves
    with pytest.raises(ProtocolError, match="element energy"):
        PublicParams.from_dict({**served.public.to_dict(), "element_energies": {"6": float("nan")}})


@pytest.mark.parametrize("kind", ["exact", "compact"])
def test_dressed_atom_model_served_end_to_end(kind):
    """A MolecularModel with a dressed-atom baseline: double-blind equals its plaintext prediction."""
    from protocols.krr import molecules_featurizer
    from secureml.data import embedded_split, load_embedded
    from secureml.models.krr import KernelRidge
    from secureml.models.pipeline import MolecularModel
    from secureml.models.random_features import RandomFourierRidge
    from secureml.representations import CoulombMatrix

    data = load_embedded()
    tr, te = embedded_split(0)
    est = KernelRidge("gaussian", sigma=50.0, lam=1e-8) if kind == "exact" else \
        RandomFourierRidge(n_features=256, sigma=50.0, lam=1e-6, seed=0)
    # the exact model is issue 2's best CM pipeline: canonical atom order + dressed atoms
    rep = CoulombMatrix(size=23, grid_bits=16, variant="canonical" if kind == "exact" else "sorted")
    mm = MolecularModel(rep, est, "U0_atomization", baseline="dressed-atoms").fit(data.subset(tr[:300]))
    test = data.subset(te[:2])
    served = ServedModel.from_molecular_model(mm)
    assert served.public.element_energies  # published: the client adds them
    preds, *_ = run_krr_session(served, featurize=molecules_featurizer(test))
    np.testing.assert_allclose(preds, mm.predict(test), atol=1e-2)


def test_feature_bound_reveals_only_powers_of_two():
    from protocols.krr.params import feature_bounds

    assert feature_bounds(np.array([[0.3, 5.0]])) == (0.0, 8.0)
    # negative data: lo is -2^j (an integer power of two), never the exact floor of the minimum
    lo, hi = feature_bounds(np.array([[-5.3, 10.0]]))
    assert lo == -8.0 and hi == -8.0 + 32.0
    lo, hi = feature_bounds(np.array([[-1e-9, 1.0]]))
    assert lo == -1.0 and hi == 3.0  # span 2 x (1 + 1e-4) rounds up to 4
    for mn in (-0.7, -3.0, -17.2, -100.0):
        lo, hi = feature_bounds(np.array([[mn, 40.0]]))
        assert float(np.log2(-lo)).is_integer() and float(np.log2(hi - lo)).is_integer()


@pytest.mark.parametrize("inner_product", ["ot", "he"])
def test_semi_honest_step9_routes_match_plaintext_and_reveal_no_distance(inner_product):
    """Semi-honest sessions with step 9 over OT (Gilboa) or lattice HE (protocols/mpc/rlwe_ip128):
    the same predictions, and neither transcript carries a distance or kernel value."""
    model = _model(N=32, d=8, seed=3)
    served = ServedModel(model, security="semi-honest")
    served.public.inner_product = inner_product
    # near two training points, never on one (distance 0 and kernel 2^40 would be 8 zero bytes / a round number)
    Q = model.X_train[[0, 5]] + np.random.default_rng(0).uniform(0.1, 0.4, (2, 8))
    preds, cost, pp, client_ch, box = _session(served, Q, record=True, seed=31)
    assert "error" not in box and pp.lattice_sum == (inner_product == "he")
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-2)
    X = pp.encode_features(model.X_train)
    secrets = set()
    for q_row, q_enc in zip(Q, pp.encode_features(Q)):
        D = ((X.astype(object) - q_enc.astype(object)) ** 2).sum(axis=1)
        secrets |= {int(v) % (1 << pp.ring_bits) for v in D} | {int(v) >> pp.shift_bits for v in D}
        K = np.exp(-((model.X_train - q_row) ** 2).sum(1) / (2 * model.sigma**2))
        secrets |= {int(round(k * (1 << pp.g_frac_bits))) for k in K}
    assert len(secrets) > 64
    assert secrets_in_transcript(client_ch.transcript, secrets) == []


def test_semi_honest_lattice_step9_client_view_independent_of_query():
    """With step 9 by lattice HE, the bytes the client receives (table, truncated c1', val) look the
    same for a query on a training point and one far from all (seeded: cannot fail by chance)."""
    model = _model(N=32, d=8, seed=4)
    served = ServedModel(model, security="semi-honest")
    served.public.inner_product = "he"
    transcripts = [_session(served, Q, record=True, seed=seed)[3].transcript
                   for seed, Q in ((103, model.X_train[:1]), (204, np.full((1, 8), 49.0)))]
    assert view_independence_pvalue(transcripts) > 1e-4


def test_lattice_step9_wrong_size_ciphertext_fails_the_session_with_one_line(monkeypatch):
    """A deviating client whose step-9 ciphertext is one coefficient short: the server refuses it with
    one line before computing on it (its session fails, no prediction), and the next honest session
    on the same served model gets the right answer."""
    from protocols.mpc import rlwe_ip128

    model = _model(N=24, d=6, seed=8)
    served = ServedModel(model, security="semi-honest")
    served.public.inner_product = "he"
    Q = model.X_train[:1] + 0.3
    real = rlwe_ip128.client_ciphertexts
    monkeypatch.setattr(rlwe_ip128, "client_ciphertexts", lambda *a: real(*a)[:-rlwe_ip128.make_plan(24).coeff_bytes])
    c0, c1 = local_channel_pair(timeout=20)
    t, box = serve_one_in_thread(served, c0)
    with pytest.raises(ProtocolError):  # the client sees the session end, no prediction
        predict_features(c1, Q, None)
    t.join(20)
    monkeypatch.undo()
    err = box["error"]
    assert isinstance(err, ProtocolError) and "\n" not in str(err)
    assert str(err).startswith("lattice inner product: client ciphertexts of ")
    preds, *_ = _session(served, Q)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-2)


def test_a_coarse_grid_gets_the_exact_ot_cross_term_not_a_silently_wrong_lattice_one():
    """On the integer grid (--frac-bits 0) the semi-honest lattice cross term's rounding (X q - delta,
    0 <= delta <= 2E) moved the distance by units of one squared feature unit: predictions were off
    by ~10% with no error. The model's plan now takes the exact OT cross term there, keeps the
    lattice one on fine grids, and refuses an explicit lattice choice on the coarse one."""
    rng = np.random.default_rng(1)
    model = KernelModelParams(rng.integers(0, 4, (6, 1)).astype(float), rng.normal(0, 5, 6), 1.5, "gaussian", 2.0)
    Q = np.array([[1.0], [3.0]])
    coarse = ServedModel(model, frac_bits=0, security="semi-honest")
    assert coarse.public.cross_term == "ot" and not coarse.public.lattice_cross_term_fits()
    preds, *_ = run_krr_session(coarse, Q)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-4)
    assert ServedModel(model, frac_bits=12, security="semi-honest").public.cross_term == "he"
    coarse.public.cross_term = "he"
    with pytest.raises(ProtocolError, match="--cross-term ot"):
        coarse.public.validate()
