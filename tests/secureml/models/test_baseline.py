"""Dressed-atom baseline: composition counts, per-element energies, and MolecularModel with it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secureml.data import MolecularDataset, embedded_split, load_embedded
from secureml.errors import DataError, ModelError
from secureml.models import build_model
from secureml.models.baseline import composition, composition_of, fit_element_energies
from secureml.models.io import read_model_file
from secureml.models.pipeline import load_model
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.representations import CoulombMatrix

PROP = "U0_atomization"


@pytest.fixture(scope="module")
def data() -> tuple[MolecularDataset, MolecularDataset]:
    ds = load_embedded()
    train, test = embedded_split(seed=0, n_train=300)  # 300 training molecules contain H, C, N, O, F
    return ds.subset(train), ds.subset(test[:300])


@pytest.fixture(scope="module")
def dressed(data) -> MolecularModel:
    return build_model("krr-gaussian", baseline="dressed-atoms", cm_variant="unsorted").fit(data[0], PROP)


def _mols(charges: list[list[int]], y: np.ndarray | None = None) -> MolecularDataset:
    rng = np.random.default_rng(0)
    return MolecularDataset(
        charges=[np.array(z) for z in charges],
        coordinates=[rng.normal(size=(len(z), 3)) for z in charges],
        properties={} if y is None else {PROP: np.asarray(y, dtype=float)},
        names=[f"m{i}" for i in range(len(charges))],
    )


def test_composition_counts_in_the_callers_element_order() -> None:
    ds = _mols([[6, 1, 1, 1, 1], [8, 1, 1], [6, 6, 8, 1, 1, 1, 1], [9, 1]])
    c = composition(ds, [8, 1, 6, 9])  # deliberately not sorted
    np.testing.assert_array_equal(c, [[0, 4, 1, 0], [1, 2, 0, 0], [1, 4, 2, 0], [0, 1, 0, 1]])
    assert c.dtype.kind == "i"
    np.testing.assert_array_equal(composition(ds, [1, 6, 7, 8, 9]).sum(axis=1), [5, 3, 7, 2])
    assert composition_of([], [1, 6]).shape == (0, 2)
    with pytest.raises(DataError, match=r"molecule 'm3' contains F"):
        composition(ds, [1, 6, 8])
    with pytest.raises(DataError, match=r"molecule 1 contains S"):
        composition_of([np.array([1]), np.array([16, 1, 1])], [1, 6])


def test_element_energies_recover_known_values() -> None:
    rng = np.random.default_rng(1)
    true = {1: -65.0, 6: -142.5, 7: -103.6, 8: -100.9}
    charges = [np.repeat(list(true), rng.integers(0, 6, size=4)) for _ in range(200)]
    charges = [z if len(z) else np.array([1]) for z in charges]
    y = np.array([sum(true[int(a)] for a in z) for z in charges])
    ds = _mols([z.tolist() for z in charges])
    e = fit_element_energies(ds, y)
    assert set(e) == set(true)
    for z, v in true.items():
        assert e[z] == pytest.approx(v, abs=1e-9)
    # With noise the fit is the least-squares one, and deterministic.
    noisy = y + rng.normal(scale=2.0, size=len(y))
    e1, e2 = fit_element_energies(ds, noisy), fit_element_energies(ds, noisy)
    assert e1 == e2 and all(abs(e1[z] - true[z]) < 1.0 for z in true)
    # Rank deficient (every molecule is CH4 or C2H8: counts proportional): minimum-norm solution
    # that still reproduces y exactly.
    ds2 = _mols([[6, 1, 1, 1, 1], [6, 6] + [1] * 8])
    e2 = fit_element_energies(ds2, np.array([-400.0, -800.0]))
    assert e2[6] + 4 * e2[1] == pytest.approx(-400.0) and np.isfinite(list(e2.values())).all()
    with pytest.raises(DataError, match="NaN"):
        fit_element_energies(ds2, np.array([1.0, np.nan]))


def test_dressed_model_is_krr_on_the_residual_plus_baseline(data, dressed: MolecularModel) -> None:
    train, test = data
    e = dressed.element_energies_
    assert set(e) == {1, 6, 7, 8, 9} and dressed.baseline == "dressed-atoms"
    elements = sorted(e)
    w = np.array([e[z] for z in elements])
    # Independent recomputation: composition fit, KRR on residuals, baseline added back.
    c_tr, c_te = composition(train, elements), composition(test, elements)
    y = train.properties[PROP]
    np.testing.assert_allclose(w, np.linalg.lstsq(c_tr.astype(float), y, rcond=None)[0], rtol=1e-10)
    rep = CoulombMatrix(29, "unsorted", grid_bits=16)
    est = KernelRidge("gaussian", 74.0, 1e-8).fit(rep.transform(train), y - c_tr @ w)
    expected = est.predict(rep.transform(test)) + c_te @ w
    np.testing.assert_allclose(dressed.predict(test), expected, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(dressed.baseline_energy(test), c_te @ w)
    assert dressed.predict_one(test.charges[0], test.coordinates[0]) == pytest.approx(expected[0], abs=1e-8)
    assert dressed.provenance["baseline"] == "dressed-atoms"
    assert set(dressed.provenance["element_energies"]) == {"H", "C", "N", "O", "F"}
    assert dressed.get_params()["baseline"] == "dressed-atoms"
    assert dressed.get_params()["estimator__sigma"] == 74.0


def test_dressed_atoms_beat_the_mean_baseline(data, dressed: MolecularModel) -> None:
    train, test = data
    mean = build_model("krr-gaussian", cm_variant="unsorted").fit(train, PROP)
    assert mean.baseline == "mean" and mean.element_energies_ is None
    np.testing.assert_array_equal(mean.baseline_energy(test), np.zeros(len(test)))
    # Measured 15.7 vs 25.7 kcal/mol (300 training molecules, sigma 74).
    assert dressed.score_mae(test) < 0.75 * mean.score_mae(test)


def test_save_load_round_trip(data, dressed: MolecularModel, tmp_path: Path) -> None:
    _, test = data
    path = dressed.save(tmp_path / "dressed.npz")
    back = load_model(path)
    assert back.baseline == "dressed-atoms" and back.element_energies_ == dressed.element_energies_
    np.testing.assert_array_equal(back.predict(test), dressed.predict(test))
    meta, _ = read_model_file(path)
    assert meta["baseline"] == "dressed-atoms" and set(meta["element_energies"]) == {"1", "6", "7", "8", "9"}
    assert meta["provenance"]["baseline"] == "dressed-atoms"


def test_unknown_element_at_predict_time(data, dressed: MolecularModel) -> None:
    _, test = data
    odd = test.subset(np.arange(3))
    odd.charges = [odd.charges[0], np.array([16, 1, 1]), odd.charges[2]]
    odd.coordinates = [odd.coordinates[0], np.array([[0, 0, 0], [1.34, 0, 0], [0, 1.34, 0]], float), odd.coordinates[2]]
    with pytest.raises(DataError, match=rf"molecule '{odd.names[1]}' contains S.*never saw it"):
        dressed.predict(odd)
    with pytest.raises(DataError, match="contains S"):
        dressed.predict_one(odd.charges[1], odd.coordinates[1])


def test_baseline_option_errors_and_unfitted_model(data) -> None:
    with pytest.raises(ModelError, match="unknown baseline"):
        build_model("krr-gaussian", baseline="linear")
    with pytest.raises(ModelError, match="unknown baseline"):
        MolecularModel(CoulombMatrix(23), KernelRidge(), baseline="atoms")
    m = MolecularModel(CoulombMatrix(23), KernelRidge(), PROP, "dressed-atoms")
    with pytest.raises(ModelError, match="not fitted"):
        m.baseline_energy(data[1])
    m.set_params(baseline="mean", estimator__sigma=50.0)
    assert m.baseline == "mean" and m.estimator.sigma == 50.0
    # Other recipes get the baseline from build_model as well.
    rff = build_model("rff-gaussian", baseline="dressed-atoms")
    assert rff.baseline == "dressed-atoms"


def test_train_command_with_dressed_atoms(data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secureml.cli import main

    out = tmp_path / "m.npz"
    assert main(["train", "--data", "embedded", "--n", "300", "--cm-variant", "unsorted",
                 "--baseline", "dressed-atoms", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["baseline"] == "dressed-atoms" and set(report["element_energies"]) == {"H", "C", "N", "O", "F"}
    back = load_model(out)
    _, test = data
    assert back.baseline == "dressed-atoms"
    # The same split and settings as the fixture model: the same predictions.
    fixture = build_model("krr-gaussian", baseline="dressed-atoms", cm_variant="unsorted").fit(data[0], PROP)
    np.testing.assert_allclose(back.predict(test), fixture.predict(test), rtol=1e-12, atol=1e-9)
    # A training set without F (the first 200 molecules) cannot serve the test set's F molecules:
    # refused before fitting, with the reason.
    assert main(["train", "--data", "embedded", "--n", "200", "--baseline", "dressed-atoms",
                 "--out", str(tmp_path / "small.npz")]) == 2
    assert "no training molecule contains F" in capsys.readouterr().err
    assert not (tmp_path / "small.npz").exists()
    # --cv searches on the residual of the baseline.
    assert main(["train", "--data", "embedded", "--n", "300", "--baseline", "dressed-atoms", "--cv",
                 "--sigmas", "20,74", "--cv-folds", "3", "--out", str(tmp_path / "cv.npz")]) == 0
    cv = json.loads((tmp_path / "cv.json").read_text())["cv"]
    from secureml.models.krr import search_hyperparameters

    train = data[0]
    X = CoulombMatrix(29, grid_bits=16).transform(train)
    c = composition(train, [1, 6, 7, 8, 9]).astype(float)
    y = train.properties[PROP]
    resid = search_hyperparameters(X, y - c @ np.linalg.lstsq(c, y, rcond=None)[0], "gaussian", [20.0, 74.0],
                                   [1e-8], cv=3, seed=0, progress=False)
    assert cv["sigma"] == resid["sigma"] and cv["mae"] == pytest.approx(resid["mae"], rel=1e-9)
