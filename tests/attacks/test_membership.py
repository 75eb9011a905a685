"""Membership inference and candidate ranking on small embedded-data models; metrics."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import experiments, metrics, scenario
from attacks.targets import PlaintextAPITarget


@pytest.fixture(scope="module")
def gauss_scn():
    return scenario.build("gaussian", n_train=300, cm_size=23)


@pytest.fixture(scope="module")
def lap_scn():
    return scenario.build("laplacian", n_train=300, cm_size=23)


def test_metrics_against_known_values():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = y + rng.normal(0, 1.0, 500)
    assert abs(metrics.roc_auc(s, y) - roc_auc_score(y, s)) < 1e-12
    assert metrics.tpr_at_fpr(np.r_[np.ones(10), np.zeros(10)], np.r_[np.ones(10), np.zeros(10)], 0.01) == 1.0
    assert metrics.precision_at_k(np.arange(10.0), np.r_[np.zeros(5), np.ones(5)], 5) == 1.0
    # a random score is no better than chance
    assert abs(metrics.roc_auc(rng.normal(size=4000), rng.integers(0, 2, 4000)) - 0.5) < 0.03


def test_mia_on_interpolating_krr(gauss_scn):
    res = experiments.mia(PlaintextAPITarget(gauss_scn.model), gauss_scn, n_each=150, n_shadows=3)
    assert res["loss_threshold"]["auc"] > 0.95 and res["loss_threshold"]["tpr_at_1pct_fpr"] > 0.5
    assert res["shadow"]["auc"] > 0.9
    # shuffled membership labels: the same scores must look like chance
    rng = np.random.default_rng(1)
    scn = gauss_scn
    idx = np.r_[rng.choice(scn.train, 150, replace=False), rng.choice(scn.public, 150, replace=False)]
    r = scn.model.estimator.predict(scn.X[idx]) - scn.y[idx]
    fake = rng.permutation(np.r_[np.ones(150), np.zeros(150)])
    assert abs(metrics.roc_auc(-np.abs(r), fake) - 0.5) < 0.1


def test_mia_weakens_with_strong_ridge():
    scn = scenario.build("gaussian", n_train=300, cm_size=23, lam=10.0)
    res = experiments.mia(PlaintextAPITarget(scn.model), scn, n_each=150, n_shadows=2)
    assert res["loss_threshold"]["auc"] < 0.8  # regularisation is what protects against this attack


def test_ranking_by_label_beats_random(gauss_scn):
    res = experiments.rank(PlaintextAPITarget(gauss_scn.model), gauss_scn, score="label", pool_size=500,
                           n_members=50, ks=(25, 50))
    assert res["precision_at_k"]["25"] >= 0.9
    assert res["random_precision"] == pytest.approx(0.1)


def test_label_free_kink_ranking_beats_random(lap_scn):
    res = experiments.rank(PlaintextAPITarget(lap_scn.model), lap_scn, score="kink", pool_size=500,
                           n_members=50, ks=(25, 50))
    assert res["precision_at_k"]["25"] >= 0.6  # random ranking: 0.1
    assert res["auc"] > 0.85
