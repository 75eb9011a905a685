"""Exact KRR: kernels against naive formulas and qmllib, the solve against scikit-learn, CV search,
real-data accuracy (embedded QM9 subset, QM7-format files), the learning-curve command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
from sklearn.model_selection import GridSearchCV, KFold

from secureml.data import embedded_split, load_embedded
from secureml.errors import ModelError
from secureml.models import available_models, build_model
from secureml.models.krr import KernelRidge, kernel_matrix, search_hyperparameters
from secureml.representations import CoulombMatrix


@pytest.fixture(scope="module")
def embedded_cm() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted CM (size 29) of the embedded split: 1,200 training and all 784 test molecules."""
    ds = load_embedded()
    train, test = embedded_split(seed=0, n_train=1200)
    cm = CoulombMatrix(29)
    y = ds.properties["U0_atomization"]
    return cm.transform(ds.subset(train)), y[train], cm.transform(ds.subset(test)), y[test]


def test_kernel_matrix_matches_naive_formulas() -> None:
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(7, 5)) * 3, rng.normal(size=(4, 5)) * 3
    sigma = 2.5
    naive_g = np.array([[np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2)) for b in B] for a in A])
    naive_l = np.array([[np.exp(-np.sum(np.abs(a - b)) / sigma) for b in B] for a in A])
    np.testing.assert_allclose(kernel_matrix(A, B, "gaussian", sigma), naive_g, rtol=1e-12)
    np.testing.assert_allclose(kernel_matrix(A, B, "laplacian", sigma), naive_l, rtol=1e-12)
    K = kernel_matrix(A, A, "gaussian", sigma)
    np.testing.assert_allclose(np.diag(K), 1.0)
    np.testing.assert_allclose(K, K.T, atol=1e-15)


def test_kernel_matrix_matches_qmllib_and_blocks(embedded_cm) -> None:
    qk = pytest.importorskip("qmllib.kernels")
    X = embedded_cm[0][:1500]  # more rows than one block (1,024)
    Q = embedded_cm[2][:30]
    np.testing.assert_allclose(kernel_matrix(X, Q, "gaussian", 74.0), qk.gaussian_kernel(X, Q, 74.0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(kernel_matrix(X, Q, "laplacian", 3000.0), qk.laplacian_kernel(X, Q, 3000.0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_fit_matches_sklearn_kernel_ridge_on_centered_targets(embedded_cm, kernel: str) -> None:
    X, y, Xt, _ = embedded_cm
    X, y = X[:400], y[:400]
    sigma, lam = (74.0, 1e-6) if kernel == "gaussian" else (3000.0, 1e-6)
    ours = KernelRidge(kernel, sigma, lam).fit(X, y)
    sk = SkKernelRidge(alpha=lam, kernel="rbf" if kernel == "gaussian" else "laplacian",
                       gamma=1 / (2 * sigma**2) if kernel == "gaussian" else 1 / sigma)
    sk.fit(X, y - y.mean())
    np.testing.assert_allclose(ours.predict(Xt), sk.predict(Xt) + y.mean(), rtol=1e-7, atol=1e-6)
    # The dual weights solve (K + lam I) alpha = y - mean(y).
    K = kernel_matrix(X, X, kernel, sigma)
    np.testing.assert_allclose((K + lam * np.eye(len(X))) @ ours.dual_coef_, y - y.mean(), atol=1e-6)
    assert ours.X_fit_.shape == X.shape and ours.dual_coef_.shape == (400,)
    assert ours.y_offset_ == pytest.approx(y.mean())


def test_kernel_model_params_predict_like_estimator(embedded_cm) -> None:
    from protocols.common import KernelModelParams

    X, y, Xt, _ = embedded_cm
    for kernel, sigma in (("gaussian", 74.0), ("laplacian", 3000.0)):
        est = KernelRidge(kernel, sigma, 1e-8).fit(X[:300], y[:300])
        np.testing.assert_allclose(KernelModelParams.from_estimator(est).predict(Xt[:50]), est.predict(Xt[:50]), rtol=1e-10)


def test_accuracy_on_embedded_qm9(embedded_cm) -> None:
    X, y, Xt, yt = embedded_cm
    baseline = np.abs(yt - y.mean()).mean()
    mae_g = np.abs(KernelRidge("gaussian", 74.0, 1e-8).fit(X, y).predict(Xt) - yt).mean()
    mae_l = np.abs(KernelRidge("laplacian", 3000.0, 1e-10).fit(X, y).predict(Xt) - yt).mean()
    # Measured (seed 0, 1,200 training molecules): mean predictor ~150, Gaussian ~19, Laplacian ~9.
    assert baseline > 100
    assert mae_g < 25 and mae_l < 12
    assert mae_l < mae_g


def test_sklearn_compatibility_grid_search_and_clone(embedded_cm) -> None:
    X, y = embedded_cm[0][:150], embedded_cm[1][:150]
    est = KernelRidge(kernel="laplacian", sigma=10.0, lam=1e-8)
    assert clone(est).get_params() == {"kernel": "laplacian", "sigma": 10.0, "lam": 1e-8}
    gs = GridSearchCV(est, {"sigma": [3.0, 3000.0]}, cv=3, scoring="neg_mean_absolute_error").fit(X, y)
    assert gs.best_params_ == {"sigma": 3000.0}  # a width of 3 makes the kernel the identity
    assert gs.predict(X[:5]).shape == (5,)
    assert 0 < KernelRidge("laplacian", 3000.0).fit(X, y).score(X, y) <= 1.0


def test_search_hyperparameters_matches_brute_force_cv(embedded_cm) -> None:
    X, y = embedded_cm[0][:160], embedded_cm[1][:160]
    sigmas, lams = [10.0, 74.0, 400.0], [1e-8, 1e-2]
    res = search_hyperparameters(X, y, "gaussian", sigmas, lams, cv=3, seed=3)
    assert {(g["sigma"], g["lam"]) for g in res["grid"]} == {(s, v) for s in sigmas for v in lams}
    folds = list(KFold(3, shuffle=True, random_state=3).split(X))
    for g in res["grid"]:
        maes = [np.abs(KernelRidge("gaussian", g["sigma"], g["lam"]).fit(X[tr], y[tr]).predict(X[te]) - y[te]).mean()
                for tr, te in folds]
        assert g["mae"] == pytest.approx(np.mean(maes), rel=1e-8)
    best = min(res["grid"], key=lambda g: g["mae"])
    assert (res["sigma"], res["lam"]) == (best["sigma"], best["lam"])
    assert res["sigma"] != 10.0  # too narrow for CM distances
    # A default grid is built around the median distance when none is given.
    assert len(search_hyperparameters(X[:80], y[:80], "laplacian", cv=3)["grid"]) == 9


def test_errors() -> None:
    X = np.random.default_rng(0).normal(size=(10, 3))
    y = X.sum(1)
    with pytest.raises(ModelError, match="unknown kernel"):
        KernelRidge("polynomial").fit(X, y)
    with pytest.raises(ModelError, match="sigma"):
        KernelRidge("gaussian", sigma=0.0).fit(X, y)
    with pytest.raises(ModelError, match="lam"):
        KernelRidge("gaussian", lam=-1.0).fit(X, y)
    with pytest.raises(ModelError, match="targets"):
        KernelRidge().fit(X, y[:5])
    with pytest.raises(ValueError):
        KernelRidge().fit(np.full((3, 2), np.nan), np.zeros(3))
    est = KernelRidge("gaussian", 1.0).fit(X, y)
    with pytest.raises(ModelError, match="features"):
        est.predict(np.zeros((2, 4)))
    # Duplicate training points and no regularisation: K is singular.
    with pytest.raises(ModelError, match="positive definite"):
        KernelRidge("gaussian", 1e6, lam=0.0).fit(np.vstack([X, X]), np.concatenate([y, y]))
    with pytest.raises(ModelError, match="cv"):
        search_hyperparameters(X, y, "gaussian", [1.0], cv=1)


def _write_qm7_format(ds, folder: Path, energies: np.ndarray) -> Path:
    """QM7 as the qml tests ship it: one plain .xyz per molecule plus 'name energy' lines."""
    from secureml.data.formats import symbol

    folder.mkdir()
    lines = []
    for name, z, r, e in zip(ds.names, ds.charges, ds.coordinates, energies):
        atoms = "".join(f"{symbol(int(a)):2s} {x:12.6f} {y_:12.6f} {w:12.6f}\n" for a, (x, y_, w) in zip(z, r))
        (folder / f"{name}.xyz").write_text(f"{len(z)}\ncharge = 0\n{atoms}")
        lines.append(f"{name}.xyz {e:.4f}\n")
    prop = folder.parent / "hof_qm7.txt"
    prop.write_text("".join(lines))
    return prop


def test_qm7_format_laplacian_bound(tmp_path: Path) -> None:
    """The qml/qmllib QM7 check, on QM7-format files written from QM9 molecules (<= 7 heavy atoms).

    Protocol of qmllib's test_energy_krr_cmat: the first 1,000 files by name, shuffled, 700 train /
    300 test, sorted CM of size 23, Laplacian kernel, sigma = 10^4.2, lambda = 1e-10. Our pipeline
    must match qmllib's own (same representation and kernel, no centering there) -- that is what makes
    the real-QM7 bound (MAE < 6 kcal/mol in qmllib's suite) carry over. QM9 molecules are harder
    than QM7's at equal size: measured here ~8.3 kcal/mol for both pipelines.
    """
    from secureml.data.formats import read_qm7

    emb = load_embedded()
    first = emb.subset(np.argsort(emb.names)[:1000])
    prop = _write_qm7_format(first, tmp_path / "qm7", first.properties["U0_atomization"])
    qm7 = read_qm7(tmp_path / "qm7", prop)
    assert len(qm7) == 1000
    perm = np.random.default_rng(666).permutation(1000)
    tr, te = perm[:700], perm[-300:]
    X = CoulombMatrix(23, "sorted").transform(qm7)
    y = qm7.properties["energy"]
    est = KernelRidge("laplacian", 10**4.2, 1e-10).fit(X[tr], y[tr])
    mae = np.abs(est.predict(X[te]) - y[te]).mean()

    qr = pytest.importorskip("qmllib.representations")
    qk = pytest.importorskip("qmllib.kernels")
    Q = np.array([qr.generate_coulomb_matrix(z, r, size=23, sorting="row-norm")
                  for z, r in zip(qm7.charges, qm7.coordinates)])
    K = qk.laplacian_kernel(Q[tr], Q[tr], 10**4.2)
    K[np.diag_indices_from(K)] += 1e-10
    alpha = np.linalg.solve(K, y[tr])
    mae_qmllib = np.abs(qk.laplacian_kernel(Q[te], Q[tr], 10**4.2) @ alpha - y[te]).mean()
    assert mae <= mae_qmllib + 0.05
    assert mae < 9.0


def test_model_registry_and_learning_curve_command(tmp_path: Path) -> None:
    from secureml.cli import main

    models = available_models()
    assert {"krr-gaussian", "krr-laplacian"} <= set(models)
    m = build_model("krr-laplacian", cm_size=23)
    assert m.estimator.kernel == "laplacian" and m.representation.n_features == 276
    with pytest.raises(ModelError, match="does not take"):
        build_model("krr-gaussian", n_stacks=3)
    with pytest.raises(ModelError, match="unknown model"):
        build_model("no-such-model")

    out = tmp_path / "lc"
    rc = main(["learning-curve", "--data", "embedded", "--sizes", "100,400", "--model", "krr-laplacian",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "learning_curve.json").read_text())
    assert [r["n_train"] for r in summary["results"]] == [100, 400]
    lap = [r["mae"] for r in summary["results"]]
    assert lap[1] < lap[0]  # more data, lower error
    assert summary["n_test"] == 784
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert (out / "learning_curve.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_exact_krr_trains_on_5000_qm9_molecules_under_a_minute() -> None:
    import time

    from secureml.data import load_qm9

    ds = load_qm9(n=6000, seed=0, properties=["U0_atomization"])
    X = CoulombMatrix(29).transform(ds)
    y = ds.properties["U0_atomization"]
    t0 = time.perf_counter()
    est = KernelRidge("gaussian", 74.0, 1e-8).fit(X[:5000], y[:5000])
    assert time.perf_counter() - t0 < 60
    assert np.abs(est.predict(X[5000:]) - y[5000:]).mean() < 20
