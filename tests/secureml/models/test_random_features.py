"""Random Fourier / Cauchy features, structured orthogonal random features, the ridge solver."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from secureml.errors import ModelError
from secureml.models.random_features import NormalEquations, RandomFourierRidge, ridge_solve
from secureml.models.sorf import fwht, random_bias, sorf_diagonals, sorf_matrix, sorf_transform


# -- Walsh-Hadamard and SORF ---------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 8, 128])
def test_fwht_matches_scipy_hadamard(d):
    x = torch.from_numpy(np.random.default_rng(d).normal(size=(5, d)))
    expected = x.numpy() @ scipy.linalg.hadamard(d) / math.sqrt(d)
    np.testing.assert_allclose(fwht(x).numpy(), expected, rtol=0, atol=1e-12)
    # Orthonormal and symmetric: it is its own inverse.
    np.testing.assert_allclose(fwht(fwht(x)).numpy(), x.numpy(), atol=1e-12)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ModelError):
        fwht(torch.zeros(3, 12))


def test_sorf_blocks_are_scaled_orthogonal_and_match_the_fwht_path():
    d, stacks, sigma = 32, 4, 2.5
    diag = torch.from_numpy(sorf_diagonals(stacks, d, seed=3).astype(np.float64))
    assert set(np.unique(diag.numpy())) == {-1.0, 1.0}
    M = sorf_matrix(diag, sigma).numpy()
    assert M.shape == (d, stacks * d)
    for s in range(stacks):
        block = M[:, s * d:(s + 1) * d]
        # (sqrt(d)/sigma) * orthogonal: block^T block = (d / sigma^2) I, every row/column norm sqrt(d)/sigma.
        np.testing.assert_allclose(block.T @ block, (d / sigma**2) * np.eye(d), atol=1e-10)
        np.testing.assert_allclose(np.linalg.norm(block, axis=0), math.sqrt(d) / sigma, rtol=1e-12)
    # Blocks are different random matrices, not copies.
    assert not np.allclose(M[:, :d], M[:, d:2 * d])
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(7, d)))
    np.testing.assert_allclose(sorf_transform(x, diag, sigma).numpy(), x.numpy() @ M, atol=1e-10)


def test_sorf_features_approximate_the_gaussian_kernel():
    # SORF is unbiased only as d grows; at d = 128 (the local model's width) the residual bias is
    # far below the Monte-Carlo error at these feature counts.
    rng = np.random.default_rng(1)
    d, sigma = 128, 12.0
    X = rng.normal(size=(30, d))
    exact = np.exp(-scipy.spatial.distance.cdist(X, X, "sqeuclidean") / (2 * sigma**2))
    errs = []
    for stacks in (1, 64):
        e = []
        for seed in range(3):
            diag = torch.from_numpy(sorf_diagonals(stacks, d, seed=seed).astype(np.float64))
            b = torch.from_numpy(random_bias(stacks * d, seed=seed + 100))
            c = sorf_transform(torch.from_numpy(X), diag, sigma) + b
            phi = math.sqrt(2.0 / (stacks * d)) * torch.cos(c)
            e.append(np.abs(phi.numpy() @ phi.numpy().T - exact).mean())
        errs.append(np.mean(e))
    assert errs[1] < errs[0] / 4  # 64x more features: ~8x smaller error expected


# -- random Fourier / Cauchy features ------------------------------------------------------------
@pytest.mark.parametrize("kernel,metric,power", [("gaussian", "sqeuclidean", 2), ("laplacian", "cityblock", 1)])
def test_rff_kernel_approximation_error_shrinks_with_F(kernel, metric, power):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6))
    sigma = 2.0
    D = scipy.spatial.distance.cdist(X, X, metric)
    exact = np.exp(-D / (2 * sigma**2)) if power == 2 else np.exp(-D / sigma)
    y = rng.normal(size=60)
    errs = []
    for F in (64, 1024, 16384):
        e = []
        for seed in range(3):
            m = RandomFourierRidge(kernel=kernel, sigma=sigma, n_features=F, seed=seed, lam=1e-3).fit(X, y)
            phi = m.features(X)
            e.append(np.abs(phi @ phi.T - exact).mean())
        errs.append(np.mean(e))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < errs[0] / 8  # Monte-Carlo error ~ 1/sqrt(F): 256x more features -> ~16x


def test_rff_fits_a_smooth_function_and_approaches_exact_krr():
    rng = np.random.default_rng(2)
    X = rng.uniform(-2, 2, size=(400, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2 - 0.5 * X[:, 2]
    Xtr, ytr, Xte, yte = X[:300], y[:300], X[300:], y[300:]
    lam = 1e-4
    # Exact Gaussian KRR, written out here so the test does not depend on another module.
    K = np.exp(-scipy.spatial.distance.cdist(Xtr, Xtr, "sqeuclidean") / (2 * 1.5**2))
    alpha = np.linalg.solve(K + lam * np.eye(300), ytr - ytr.mean())
    Kte = np.exp(-scipy.spatial.distance.cdist(Xte, Xtr, "sqeuclidean") / (2 * 1.5**2))
    exact = Kte @ alpha + ytr.mean()
    m = RandomFourierRidge(kernel="gaussian", sigma=1.5, n_features=8192, lam=lam).fit(Xtr, ytr)
    pred = m.predict(Xte)
    baseline = np.abs(yte - ytr.mean()).mean()
    assert np.abs(pred - yte).mean() < 0.05 * baseline
    assert np.abs(pred - exact).mean() < 0.05 * np.abs(exact - ytr.mean()).mean()
    assert m.W_.shape == (3, 8192) and m.b_.shape == (8192,) and m.coef_.shape == (8192,)


def test_rff_is_sklearn_compatible():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0])
    est = RandomFourierRidge(n_features=256, sigma=2.0)
    assert clone(est).get_params() == est.get_params()
    gs = GridSearchCV(est, {"sigma": [0.5, 4.0], "lam": [1e-6, 1e-2]}, cv=3,
                      scoring="neg_mean_absolute_error").fit(X, y)
    assert gs.best_params_["sigma"] == 4.0
    assert gs.best_estimator_.score(X, y) > 0.9


def test_rff_errors():
    X = np.zeros((4, 2))
    with pytest.raises(ModelError):
        RandomFourierRidge(kernel="cosine").fit(X, np.zeros(4))
    with pytest.raises(ModelError):
        RandomFourierRidge().predict(X)
    with pytest.raises(ModelError):
        RandomFourierRidge(n_features=8).fit(np.array([[np.nan, 1.0]] * 4), np.zeros(4))
    m = RandomFourierRidge(n_features=8).fit(X, np.arange(4.0))
    with pytest.raises(ModelError):
        m.predict(np.zeros((2, 3)))


def test_rff_map_is_label_independent_and_state_round_trips():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 5))
    a = RandomFourierRidge(kernel="laplacian", sigma=3.0, n_features=512, seed=7).fit(X, rng.normal(size=50))
    b = RandomFourierRidge(kernel="laplacian", sigma=3.0, n_features=512, seed=7).fit(X, rng.normal(size=50))
    np.testing.assert_array_equal(a.features(X), b.features(X))
    assert not np.allclose(a.coef_, b.coef_)
    c = RandomFourierRidge.from_state(a.get_state())
    np.testing.assert_array_equal(c.predict(X), a.predict(X))
    with pytest.raises(ModelError):
        RandomFourierRidge.from_state({"kernel": "gaussian"})


# -- ridge solver --------------------------------------------------------------------------------
def test_primal_dual_and_streamed_ridge_agree_with_numpy():
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(120, 200))
    y = rng.normal(size=120)
    lam = 1e-3
    ref = np.linalg.solve(Z.T @ Z + lam * np.eye(200), Z.T @ y)
    for solver in ("primal", "dual", "auto"):
        w, shift = ridge_solve(torch.from_numpy(Z), torch.from_numpy(y), lam, solver)
        assert shift == lam
        np.testing.assert_allclose(w.numpy(), ref, atol=1e-8)
    ne = NormalEquations(200)
    for s in range(0, 120, 50):
        ne.add(torch.from_numpy(Z[s:s + 50]), torch.from_numpy(y[s:s + 50]))
    np.testing.assert_allclose(ne.solve(lam)[0].numpy(), ref, atol=1e-8)
    with pytest.raises(ModelError):
        ridge_solve(torch.from_numpy(Z), torch.from_numpy(y), lam, "qr")


def test_ridge_survives_a_numerically_singular_gram_matrix():
    # Rank-1 features with lambda far below rounding: Cholesky fails first, the shift is raised.
    z = np.random.default_rng(6).normal(size=(50, 1))
    Z = np.hstack([z] * 40) * 1e3
    w, shift = ridge_solve(torch.from_numpy(Z), torch.from_numpy(z[:, 0]), 1e-300, "primal")
    assert shift > 1e-300 and np.all(np.isfinite(w.numpy()))
    np.testing.assert_allclose(Z @ w.numpy(), z[:, 0], rtol=1e-4, atol=1e-6)


def test_rff_recipes_and_model_file_round_trip(tmp_path):
    from ase.build import molecule

    from secureml.data.dataset import MolecularDataset
    from secureml.models import build_model
    from secureml.models.pipeline import MolecularModel

    mols = [molecule(n) for n in ("CH4", "NH3", "H2O", "C2H6", "CH3OH", "C2H4", "HCN", "CH3CH2OH")]
    ds = MolecularDataset(
        charges=[m.numbers for m in mols], coordinates=[m.positions for m in mols],
        properties={"E": np.arange(len(mols), dtype=float) * 10.0}, names=[f"m{i}" for i in range(len(mols))],
    )
    for name in ("rff-gaussian", "rff-laplacian"):
        mm = build_model(name, n_features=128, seed=1, cm_size=9)
        mm.fit(ds, "E")
        path = mm.save(tmp_path / f"{name}.npz")
        back = MolecularModel.load(path)
        np.testing.assert_array_equal(back.predict(ds), mm.predict(ds))
        assert type(back.estimator).__name__ == "RandomFourierRidge"
    with pytest.raises(ModelError):
        build_model("rff-gaussian", bogus=1)


def test_blas_limits_cap_every_blas_library_and_restore_it(monkeypatch):
    """The cached controller (no library rescan per prediction) still limits every BLAS library."""
    from threadpoolctl import threadpool_info

    from secureml.models.random_features import _blas_limits

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert before
    monkeypatch.setenv("SECUREML_BLAS_THREADS", "1")
    with _blas_limits():
        inside = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert set(inside) == set(before) and set(inside.values()) == {1}
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert after == before
