"""Differentially private random-feature ridge: sensitivity bound, noise calibration, and the
released noise checked empirically against its stated distribution."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from secureml.models.dp import (DPRandomFeatureRidge, analytic_gaussian_sigma, gaussian_delta,
                                ridge_sensitivity)


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, (n, d))
    y = 50 + 30 * np.sin(X[:, 0]) + rng.normal(0, 1, n)
    return X, y


def test_analytic_gaussian_matches_its_delta_and_beats_the_classic_bound():
    for eps in (0.1, 1.0, 8.0):
        s = analytic_gaussian_sigma(eps, 1e-5, 2.0)
        assert abs(gaussian_delta(s, 2.0, eps) - 1e-5) < 1e-7
        if eps < 1:  # the classic sqrt(2 ln(1.25/delta)) Delta / eps (Dwork & Roth, Thm A.1) is looser
            assert s < 2.0 * math.sqrt(2 * math.log(1.25 / 1e-5)) / eps
    assert analytic_gaussian_sigma(1.0, 1e-5, 1.0) > analytic_gaussian_sigma(2.0, 1e-5, 1.0)


def test_sensitivity_bound_holds_on_neighbouring_data_sets():
    """Replace one example by an adversarial one (max label, a different point): the minimiser
    moves by less than the stated bound."""
    X, y = _data()
    lam, Y, c = 3.0, 40.0, 50.0
    base = DPRandomFeatureRidge(sigma=4.0, n_features=64, lam=lam, label_bound=Y, label_center=c)
    base.n_features_in_ = X.shape[1]
    base._draw_map(X.shape[1])
    w = base._exact_solve(X, np.clip(y - c, -Y, Y))
    bound = ridge_sensitivity(len(y), lam, Y)
    worst = 0.0
    rng = np.random.default_rng(1)
    for i in range(20):
        X2, y2 = X.copy(), np.clip(y - c, -Y, Y)
        X2[i] = rng.uniform(0, 10, X.shape[1])
        y2[i] = -Y if y2[i] > 0 else Y
        worst = max(worst, float(np.linalg.norm(base._exact_solve(X2, y2) - w)))
    assert 0 < worst <= bound


def test_released_noise_follows_the_stated_distribution():
    X, y = _data()
    kw = dict(sigma=4.0, n_features=2000, lam=5.0, label_bound=40.0, label_center=50.0, epsilon=2.0)
    noisy = DPRandomFeatureRidge(noise_seed=7, **kw).fit(X, y)
    exact = noisy._exact_solve(X, np.clip(y - 50.0, -40.0, 40.0))
    sd = noisy.privacy_["noise_sd"]
    z = (noisy.coef_ - exact) / sd
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.std(z) - 1) < 0.08
    assert stats.kstest(z / 1.5, "norm").pvalue < 1e-3  # a misstated scale is caught
    assert noisy.privacy_["sensitivity"] == pytest.approx(ridge_sensitivity(len(y), 5.0, 40.0))
    # fresh noise per release unless seeded
    other = DPRandomFeatureRidge(noise_seed=8, **kw).fit(X, y)
    assert not np.allclose(other.coef_, noisy.coef_)


def test_dp_model_file_round_trip(tmp_path):
    from secureml.data import embedded_split, load_embedded
    from secureml.models.dp import dp_rff_model
    from secureml.models.pipeline import MolecularModel

    data = load_embedded()
    tr, te = embedded_split(0)
    mm = dp_rff_model(1.0, lam=10.0, label_bound=300.0, label_center=-1700.0, n_features=64,
                      noise_seed=0).fit(data.subset(tr[:60]))
    path = mm.save(tmp_path / "dp.npz")
    back = MolecularModel.load(path)
    test = data.subset(te[:4])
    np.testing.assert_allclose(back.predict(test), mm.predict(test))
    assert back.estimator.privacy_["epsilon"] == 1.0 and back.estimator.privacy_["n"] == 60


def test_needs_public_center():
    from secureml.errors import ModelError

    X, y = _data(n=10)
    with pytest.raises(ModelError, match="public label_center"):
        DPRandomFeatureRidge(n_features=8).fit(X, y)
