"""Models trained with scikit-learn or qmllib, imported into servable secureml model files."""
from __future__ import annotations

import numpy as np
import pytest

from secureml.data import embedded_split, load_embedded
from secureml.models.imports import from_qmllib, from_sklearn
from secureml.models.pipeline import MolecularModel
from secureml.representations import CoulombMatrix


@pytest.fixture(scope="module")
def data():
    ds = load_embedded()
    tr, te = embedded_split(0)
    return ds.subset(tr[:200]), ds.subset(te[:20])


@pytest.mark.parametrize("kernel,gamma", [("rbf", 1 / (2 * 60.0**2)), ("laplacian", 1 / 1000.0)])
def test_sklearn_kernel_ridge_round_trip_and_served(tmp_path, data, kernel, gamma):
    from sklearn.kernel_ridge import KernelRidge as SkKRR

    from protocols.common import KernelModelParams
    from protocols.krr.runner import run_local

    train, test = data
    rep = CoulombMatrix(size=23, grid_bits=8 if kernel == "laplacian" else None)
    X, Xq = rep.transform(train), rep.transform(test)
    y = train.properties["U0_atomization"]
    mean = float(y.mean())
    sk = SkKRR(alpha=1e-8, kernel=kernel, gamma=gamma).fit(X, y - mean)
    model = from_sklearn(sk, rep, "U0_atomization", "kcal/mol", y_offset=mean, elements=[1, 6, 7, 8, 9])
    want = sk.predict(Xq) + mean
    np.testing.assert_allclose(model.predict(test), want, rtol=1e-9, atol=1e-6)
    back = MolecularModel.load(model.save(tmp_path / "sk.npz"))
    assert back.property_unit == "kcal/mol" and back.elements_ == [1, 6, 7, 8, 9]
    np.testing.assert_allclose(back.predict(test), want, rtol=1e-9, atol=1e-6)
    # double-blind, two processes: the imported weights serve like a native model
    got = run_local(KernelModelParams.from_estimator(back.estimator), Xq[:2])
    got = got[0] if isinstance(got, tuple) else got
    np.testing.assert_allclose(got, want[:2], atol=0.05)


def test_sklearn_wrong_kernel_or_representation(data):
    from sklearn.kernel_ridge import KernelRidge as SkKRR

    from secureml.errors import ModelError

    train, _ = data
    X = CoulombMatrix(size=23).transform(train)
    with pytest.raises(ModelError, match="cannot be served"):
        from_sklearn(SkKRR(kernel="poly").fit(X, np.zeros(len(X))), CoulombMatrix(size=23))
    with pytest.raises(ModelError, match="276 features per molecule but"):
        from_sklearn(SkKRR(kernel="rbf").fit(X, np.zeros(len(X))), CoulombMatrix(size=29))


def test_qmllib_laplacian_model(data):
    qr = pytest.importorskip("qmllib.representations")
    from qmllib.kernels import laplacian_kernel
    from qmllib.solvers import cho_solve

    train, test = data
    X = np.array([qr.generate_coulomb_matrix(z, r, size=23, sorting="row-norm")
                  for z, r in zip(train.charges, train.coordinates)])
    Xq = np.array([qr.generate_coulomb_matrix(z, r, size=23, sorting="row-norm")
                   for z, r in zip(test.charges, test.coordinates)])
    y = train.properties["U0_atomization"]
    sigma = 10**4.2
    K = laplacian_kernel(X, X, sigma)
    K[np.diag_indices_from(K)] += 1e-10
    alpha = cho_solve(K, y)
    want = laplacian_kernel(Xq, X, sigma) @ alpha
    model = from_qmllib(X, alpha, "laplacian", sigma, CoulombMatrix(size=23), property_name="U0_atomization")
    np.testing.assert_allclose(model.predict(test), want, rtol=1e-6, atol=1e-4)


def test_import_model_cli(tmp_path, data):
    import joblib
    from sklearn.kernel_ridge import KernelRidge as SkKRR

    from secureml.cli import main

    train, test = data
    rep = CoulombMatrix(size=23)
    X = rep.transform(train)
    sk = SkKRR(alpha=1e-8, kernel="rbf", gamma=1e-4).fit(X, train.properties["U0_atomization"])
    joblib.dump(sk, tmp_path / "krr.joblib")
    assert main(["import-model", "--sklearn", str(tmp_path / "krr.joblib"), "--cm-size", "23", "--property",
                 "U0_atomization", "--unit", "kcal/mol", "--elements", "H,C,N,O,F",
                 "--out", str(tmp_path / "m.npz")]) == 0
    m = MolecularModel.load(tmp_path / "m.npz")
    np.testing.assert_allclose(m.predict(test), sk.predict(rep.transform(test)), rtol=1e-9, atol=1e-6)


def test_sklearn_estimator_inside_a_molecular_model_saves(tmp_path, data):
    from sklearn.kernel_ridge import KernelRidge as SkKRR

    train, test = data
    model = MolecularModel(CoulombMatrix(size=23), SkKRR(alpha=1e-8, kernel="laplacian", gamma=1e-3), "U0_atomization")
    model.fit(train)
    back = MolecularModel.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_allclose(back.predict(test), model.predict(test), rtol=1e-9, atol=1e-6)
