"""Double-blind prediction with compact random-feature models (cost independent of N)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.krr.linear import client_features, linear_parts
from protocols.krr.service import ServedModel, molecules_featurizer, predict_features, serve_one
from protocols.transport import local_channel_pair
from secureml.data import embedded_split, load_embedded
from secureml.models.pipeline import MolecularModel
from secureml.models.random_features import RandomFourierRidge
from secureml.representations import CoulombMatrix


@pytest.fixture(scope="module")
def rff_model():
    data = load_embedded()
    tr, te = embedded_split(0)
    est = RandomFourierRidge("gaussian", sigma=50.0, n_features=512, lam=1e-6)
    mm = MolecularModel(CoulombMatrix(size=23), est, "U0_atomization").fit(data.subset(tr[:400]))
    return mm, data.subset(te[:3])


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
    (preds, cost, pp), ch = _run(served, molecules_featurizer(test))
    np.testing.assert_allclose(preds, mm.predict(test), atol=1e-3)
    first = cost.total_bytes
    # second session: the public model is cached, so only the protocol's own traffic remains
    (preds2, cost2, _), _ = _run(served, molecules_featurizer(test))
    np.testing.assert_allclose(preds2, preds)
    assert cost2.total_bytes < first - pp.public_model_bytes * 0.9
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
    np.testing.assert_allclose(preds, mm.predict(test), atol=1e-2)
    assert cost.offline_bytes > 0 and cost.online_s > 0
