"""Double-blind prediction with compact random-feature models (cost independent of N)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.krr.linear import client_features, linear_parts
from protocols.krr import ServedModel, molecules_featurizer, predict_features, serve_one
from protocols.net.transport import local_channel_pair
from tests.protocols.krr.compact import ERROR_BUDGET, rff_model_and_queries
from secureml.data import embedded_split, load_embedded
from secureml.models.pipeline import MolecularModel



@pytest.fixture(scope="module")
def rff_model():
    return rff_model_and_queries(3)


def _run(served, featurize):
    c0, c1 = local_channel_pair(timeout=60)
    c1.record()
    t = threading.Thread(target=lambda: serve_one(served, c0))
    t.start()
    try:
        return predict_features(c1, featurize=featurize), c1
    finally:
        t.join(30)


def test_public_model_holds_no_weights(rff_model):
    mm, test = rff_model
    w, offset, public = linear_parts(mm)
    assert np.abs(w).max() > 0 and not np.any(public.estimator.coef_)
    assert public.estimator.y_offset_ == 0.0
    # the client's features from the public model are the model's own features
    np.testing.assert_allclose(client_features(public, test)[:, : mm.estimator.n_features],
                               mm.estimator.features(mm.features(test)))


def test_linear_predictions_match_plaintext(rff_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm)
    served.precompute_ot = True  # offline extension (the default extends within the online phase)
    (preds, cost, pp), ch = _run(served, molecules_featurizer(test))
    np.testing.assert_allclose(preds, mm.predict(test), atol=ERROR_BUDGET)
    first = cost.total_bytes
    # second session: the public model is cached and the OT session resumed (no base OTs), so
    # only the OT extension and the online phase remain
    (preds2, cost2, _), _ = _run(served, molecules_featurizer(test))
    np.testing.assert_allclose(preds2, preds, atol=ERROR_BUDGET)
    assert cost2.extra["resumed"] and cost2.extra["ot_setup_bytes"] < 600
    assert cost2.total_bytes < first - pp.public_model_bytes * 0.9
    # trimmed ring: corrections narrower than 64 bits; SoftSpoken: 32 bits per OT of extension
    n_ot = len(test) * pp.n_features * pp.x_bits
    assert cost2.extra["out_bits"] < 64
    assert n_ot * 4 <= cost2.extra["extend_bytes"] < n_ot * 4 * 1.05 + 4096
    # the weights never travel
    received = b"".join(f for d, f in ch.transcript if d == "recv")
    w, _, _ = linear_parts(mm)
    w_enc = np.rint(w * 2.0**pp.weight_frac_bits).astype(np.int64)
    for v in w_enc[np.abs(w_enc) > 1 << 24][:200]:
        assert int(v).to_bytes(8, "little", signed=True) not in received


def test_local_model_double_blind(tmp_path, monkeypatch):
    """The qml-lightning-style local model: FCHL19 + public PCA + SORF + per-element energies."""
    from secureml.models.local import LocalRandomFeatureModel
    from secureml.representations.fchl import FCHL19

    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    data = load_embedded()
    tr, te = embedded_split(0)
    mm = MolecularModel(FCHL19(), LocalRandomFeatureModel(nstacks=8, pca_n_molecules=300), "U0_atomization")
    mm.fit(data.subset(tr[:200]))
    test = data.subset(te[:2])
    served = ServedModel.from_molecular_model(mm)
    assert served.public.kind == "linear"
    (preds, cost, pp), _ = _run(served, molecules_featurizer(test))
    np.testing.assert_allclose(preds, mm.predict(test), atol=ERROR_BUDGET)
    assert cost.offline_bytes > 0 and cost.online_s > 0
    # local features grow with the molecule: the public bound leaves room above the calibration
    from protocols.krr.linear import feature_bound

    w, _, public = linear_parts(mm)
    phi = client_features(public, test)
    assert feature_bound(public, phi) == pytest.approx(2 * np.abs(phi).max())
    assert pp.feature_hi >= 2 * np.abs(client_features(public, load_embedded().subset(np.arange(0, 3921, 8)))).max()


def test_plan_bits_follow_the_error_budget(rff_model):
    """Looser tolerance -> fewer fractional bits (fewer OTs); the exact RFF bound sqrt(2/F)."""
    from protocols.krr.linear import feature_bound, plan

    mm, test = rff_model
    w, _, public = linear_parts(mm)
    phi = client_features(public, test)
    tight, loose = plan(phi, w, 1000.0, tol=1e-4), plan(phi, w, 1000.0, tol=1e-2)
    assert tight["frac_bits"] - loose["frac_bits"] in (6, 7, 8)  # log2(100) = 6.6
    assert feature_bound(public, phi) == pytest.approx(np.sqrt(2.0 / 512))
    bounded = plan(phi, w, 1000.0, bound=feature_bound(public, phi))
    assert bounded["feature_lo"] == -bounded["feature_hi"] == -(2.0 ** -4)


def _serve_file(path, q):
    from protocols.krr import ServedModel, serve

    serve(ServedModel.from_file(path), "127.0.0.1", 0, max_sessions=2, on_ready=q.put)


def test_two_processes_over_tcp_resume(rff_model, tmp_path, monkeypatch):
    """Real server process on TCP: the second session resumes the OT session of the first."""
    import multiprocessing as mp

    from protocols.krr import predict

    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    mm, test = rff_model
    path = mm.save(tmp_path / "rff.npz")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve_file, args=(str(path), q), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=120)
        p1, c1 = predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(test.subset([0])))
        p2, c2 = predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(test.subset([1])))
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    np.testing.assert_allclose(np.r_[p1, p2], mm.predict(test.subset([0, 1])), atol=ERROR_BUDGET)
    assert not c1.extra["resumed"] and c2.extra["resumed"]
    assert c2.total_bytes < 2e6 and c2.extra["ot_setup_s"] < c1.extra["ot_setup_s"]
