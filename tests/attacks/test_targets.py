"""Deployment targets: the services answer like the API (through the real protocols), refuse what
the real services refuse, and count queries and cost."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import experiments, scenario
from attacks.report import leakage_summary
from attacks.targets import EngineUnavailable, ModelFileTarget, OTServiceTarget, PlaintextAPITarget, make_target


@pytest.fixture(scope="module")
def tiny():
    return scenario.build("gaussian", n_train=8, cm_size=23)


def test_api_counts_queries(tiny):
    t = PlaintextAPITarget(tiny.model)
    t.predict(tiny.X[:5])
    t.predict(tiny.X[:3])
    assert t.cost()["queries"] == 8 and t.cost()["protocol_queries"] == 0
    assert not t.white_box and ModelFileTarget(tiny.model).white_box


def test_ot_service_answers_through_the_protocol(tiny):
    t = OTServiceTarget(tiny.model, protocol_sample=2)
    Q = tiny.X[tiny.public[:3]]
    out = t.predict(Q)
    plain = tiny.model.estimator.predict(Q)
    c = t.cost()
    assert c["protocol_queries"] == 2 and c["queries"] == 3
    assert c["bytes_per_query"] > 1e4  # real traffic was measured
    assert 0.0 < c["max_abs_deviation"] < 0.05  # fixed-point answers: close, not bit-identical
    np.testing.assert_allclose(out, plain, atol=0.05)
    # an attack that only needs answers gives the same result through the service
    res = experiments.rank(OTServiceTarget(tiny.model, protocol_sample=1), tiny, score="label", pool_size=200,
                           n_members=8, ks=(8,))
    assert res["precision_at_k"]["8"] == 1.0


def test_ot_service_refuses_out_of_bounds_and_serves_laplacian(tiny):
    t = OTServiceTarget(tiny.model, protocol_sample=0)
    Q = np.vstack([tiny.X[tiny.public[0]], np.full(tiny.X.shape[1], -5.0)])
    out = t.predict(Q)
    assert np.isfinite(out[0]) and np.isnan(out[1]) and t.cost()["refused"] == 1
    lap = scenario.build("laplacian", n_train=8, cm_size=23)
    t_lap = make_target("ot", lap.model, protocol_sample=1)
    Q = lap.X[lap.public[:2]]
    np.testing.assert_allclose(t_lap.predict(Q), lap.model.estimator.predict(Q), atol=0.05)
    assert t_lap.cost()["protocol_queries"] == 1
    with pytest.raises(EngineUnavailable):
        make_target("fhe", lap.model)


def test_fhe_service_answers_through_the_protocol(tiny):
    t = make_target("fhe", tiny.model, protocol_sample=1)
    Q = tiny.X[tiny.public[:2]]
    out = t.predict(Q)
    assert t.cost()["protocol_queries"] == 1
    np.testing.assert_allclose(out, tiny.model.estimator.predict(Q), atol=0.5)


def test_leakage_summary_from_rows():
    rows = [
        {"attack": "whitebox", "deployment": "model-file", "status": "ok", "value": 1.0,
         "detail": {"fraction_smiles_exact": 0.9997, "n_molecules": 3137, "median_rmsd_angstrom": 1e-15}},
        {"attack": "mia", "deployment": "api", "status": "ok", "value": 1.0},
        {"attack": "mia", "deployment": "ot", "status": "ok", "value": 0.999, "protocol_queries": 4,
         "max_abs_deviation": 3e-3, "seconds_per_query": 1.0, "bytes_per_query": 6.5e7},
    ]
    text = leakage_summary(rows)
    assert "99.97% of 3137" in text and "ot 0.999" in text and "same answers" in text
