"""Query-only reconstruction: the Laplacian kink attack and the free-centre fit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attacks import experiments, reconstruction, scenario
from attacks.reconstruction import AttackError
from attacks.targets import PlaintextAPITarget


@pytest.fixture(scope="module")
def lap_scn():
    return scenario.build("laplacian", n_train=8, cm_size=23)


def test_kink_filter_locates_a_single_kink_exactly():
    sigma, u, c, h = 50.0, 3.37, 2.5, 1.0
    t = np.arange(-2.0, 8.0, h)
    phi = c * np.exp(-np.abs(t - u) / sigma) + 0.7 * np.exp(t / sigma)  # kink + smooth background
    F = reconstruction._kink_filter(phi, h, sigma)
    nz = np.flatnonzero(np.abs(F) > 1e-12)
    assert len(nz) == 2  # exactly the two stencils straddling the kink
    delta, cc = reconstruction._solve_cell(F[nz[:1]], F[nz[1:]], h, sigma)
    assert abs(t[1 + nz[0]] + delta[0] - u) < 1e-9 and abs(cc[0] - c) < 1e-9


def test_kink_attack_recovers_laplacian_training_set(lap_scn):
    target = PlaintextAPITarget(lap_scn.model)
    res = experiments.query_reconstruction(target, lap_scn, method="kink", h=2.0, refine=8, depth=3)
    assert res["fraction_recovered_rel0.001"] >= 0.85
    assert res["fraction_molecules_exact"] >= 0.75
    assert res["random_baseline"] == 0.0  # nearest public molecule is never within 1%
    assert res["queries"] == target.cost()["queries"]
    assert abs(res["sigma_estimated"] - lap_scn.model.estimator.sigma) < 1e-3


def test_kink_attack_refuses_gaussian_models():
    scn = scenario.build("gaussian", n_train=8, cm_size=23)
    with pytest.raises(AttackError, match="Laplacian"):
        experiments.query_reconstruction(PlaintextAPITarget(scn.model), scn, method="kink")


def test_free_centre_fit_recovers_well_separated_centres():
    """The generic Barzilai-style fit, where it can work: low dimension, narrow kernel."""
    rng = np.random.default_rng(3)
    d, n, sigma = 3, 5, 0.6
    X = rng.uniform(-3, 3, (n, d))
    a = rng.uniform(1.0, 2.0, n) * rng.choice([-1, 1], n)

    def oracle(Q: np.ndarray) -> np.ndarray:
        d2 = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2)) @ a

    pool = rng.uniform(-3, 3, (200, d))  # the attacker's "public data": same range, other points
    torch.manual_seed(0)
    fit = reconstruction.expansion_attack(oracle, pool, 800, 3 * n, "gaussian", sigma, offset=0.0,
                                          noise=0.5, adam_steps=400, lbfgs_steps=200, lr=0.05, seed=1)
    got = reconstruction.match_points(X, fit.centres, 1e-2)["fraction_recovered"]
    base = reconstruction.match_points(X, pool[: 3 * n], 1e-2)["fraction_recovered"]
    assert got >= 0.8 and base == 0.0
    assert fit.loss < 1e-6


def test_match_points_counts_tolerance():
    T = np.array([[1.0, 0.0], [0.0, 10.0]])
    R = np.array([[1.0005, 0.0], [0.0, 11.0]])
    m = reconstruction.match_points(T, R, 1e-3)
    assert m["fraction_recovered"] == 0.5 and m["precision"] == 0.5
    assert math.isclose(m["rel_errors"][1], 0.1)
