"""Barzilai et al. 2025-style query reconstruction of Gaussian-kernel KRR (small synthetic models)."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import barzilai, experiments, scenario
from attacks.reconstruction import AttackError
from attacks.targets import PlaintextAPITarget


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny fits: one torch thread is several times faster on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_barzilai_recovers_training_points_with_known_sigma():
    est, X, pool = barzilai.synthetic_model(3, d=2, sigma=1.0, seed=1, n_public=300)
    res = barzilai.attack(est.predict, pool, 4 * 3 * 4, 3, sigma=1.0, restarts=2, adam_steps=100, lbfgs_steps=60)
    sc = barzilai.score(res, X, pool)
    assert sc["fraction_recovered"] == 1.0 and sc["median_rel_error"] < 1e-3
    assert sc["baseline_nearest_public"] == 0.0  # 300 fresh points from the same box: none that close


def test_barzilai_estimates_sigma_from_answers():
    est, X, pool = barzilai.synthetic_model(3, d=2, sigma=0.8, seed=2, n_public=300)
    res = barzilai.attack(est.predict, pool, 4 * 3 * 4, 3, sigma=None, restarts=2, adam_steps=100, lbfgs_steps=60)
    assert abs(res.sigma - 0.8) < 0.01 * 0.8
    assert barzilai.score(res, X, pool)["fraction_recovered"] >= 2 / 3
    assert res.sigma_curve is not None and len(res.sigma_curve["fine_sigma"]) == 8


def test_barzilai_below_n_d_plus_2_queries_recovers_nothing():
    est, X, pool = barzilai.synthetic_model(3, d=2, sigma=1.0, seed=1, n_public=300)
    res = barzilai.attack(est.predict, pool, 8, 3, sigma=1.0, restarts=1, adam_steps=100, lbfgs_steps=30)
    assert barzilai.score(res, X, pool)["fraction_recovered"] == 0.0  # 8 < n (d + 2) = 12 equations


def test_barzilai_wrapper_refuses_laplacian_and_reports_baseline():
    lap = scenario.build("laplacian", n_train=4, cm_size=23)
    with pytest.raises(AttackError, match="Gaussian"):
        experiments.barzilai_reconstruction(PlaintextAPITarget(lap.model), lap)
    gauss = scenario.build("gaussian", n_train=2, cm_size=23)
    res = experiments.barzilai_reconstruction(PlaintextAPITarget(gauss.model), gauss, budget=64, restarts=1,
                                              adam_steps=20, lbfgs_steps=5)
    assert res["queries"] == 64 and res["random_baseline"] == 0.0 and 0.0 <= res["value"] <= 1.0
    assert np.isclose(res["queries_over_n_d_plus_2"], 64 / (2 * 278))
