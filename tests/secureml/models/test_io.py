"""Model files: round trips, what the file records, extensibility, and bad files."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureml.data import embedded_split, load_embedded
from secureml.errors import ModelError
from secureml.models.io import (
    FORMAT_VERSION,
    META_KEY,
    describe_model,
    read_model_file,
    rehash_model_file,
    register_estimator,
    save_model,
)
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel, load_model
from secureml.representations import CoulombMatrix


@pytest.fixture(scope="module")
def data():
    ds = load_embedded()
    train, test = embedded_split(seed=0, n_train=300)
    return ds.subset(train), ds.subset(test[:100])


@pytest.fixture(scope="module")
def fitted(data) -> MolecularModel:
    train, _ = data
    return MolecularModel(CoulombMatrix(23), KernelRidge("laplacian", 3000.0, 1e-10)).fit(train, "U0_atomization")


def test_round_trip_predicts_identically(fitted: MolecularModel, data, tmp_path: Path) -> None:
    _, test = data
    path = fitted.save(tmp_path / "model.npz")
    back = MolecularModel.load(path)
    np.testing.assert_array_equal(back.predict(test), fitted.predict(test))
    assert back.representation == fitted.representation
    assert back.estimator.get_params() == fitted.estimator.get_params()
    np.testing.assert_array_equal(back.estimator.X_fit_, fitted.estimator.X_fit_)
    assert back.property_name == "U0_atomization"
    assert back.provenance["n_train"] == 300 and back.provenance["property"] == "U0_atomization"
    assert back.provenance["source"] == fitted.provenance["source"]
    assert len(back.provenance["train_names_sha256"]) == 64
    # predict_one agrees with the batch path
    assert back.predict_one(test.charges[0], test.coordinates[0]) == pytest.approx(back.predict(test)[0], abs=1e-9)
    assert 0 < back.score_mae(test) < 40


def test_file_is_plain_npz_recording_everything(fitted: MolecularModel, tmp_path: Path) -> None:
    path = save_model(fitted, tmp_path / "m")  # .npz appended
    assert path.name == "m.npz"
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f[META_KEY]))
        assert f["estimator.state.X_fit_"].shape == (300, 276)
        assert f["estimator.state.dual_coef_"].shape == (300,)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["representation"] == {"name": "coulomb_matrix", "size": 23, "variant": "sorted"}
    assert meta["n_features"] == 276
    assert meta["estimator"]["class"] == "KernelRidge"
    assert meta["estimator"]["params"] == {"kernel": "laplacian", "sigma": 3000.0, "lam": 1e-10}
    assert meta["estimator"]["state"]["y_offset_"] == pytest.approx(fitted.estimator.y_offset_)
    assert meta["secureml_version"]
    assert "U0_atomization" in meta["provenance"]["units"]
    desc = describe_model(path)
    assert desc["estimator"]["state"]["X_fit_"].startswith("array[300, 276]")


@register_estimator
class _NestedStateEstimator:
    """A stand-in for compact models: nested per-element arrays, lists and scalars in the state."""

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"scale": self.scale}

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_NestedStateEstimator":
        self.w_ = np.linalg.lstsq(X, y, rcond=None)[0]
        self.pca_ = {1: {"mean": X.mean(0), "basis": np.eye(X.shape[1])[:2]}, 6: {"mean": X.std(0)}}
        self.stack_ = [np.arange(3), np.ones((2, 2), dtype=np.float32)]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scale * X @ self.w_

    def get_state(self) -> dict[str, Any]:
        return {"scale": self.scale, "w_": self.w_, "pca_": self.pca_, "stack_": self.stack_, "note": None, "ok": True}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "_NestedStateEstimator":
        est = cls(state["scale"])
        est.w_ = state["w_"]
        est.pca_ = {int(k): v for k, v in state["pca_"].items()}
        est.stack_ = state["stack_"]
        return est


def test_registry_extends_to_other_estimators_with_nested_state(data, tmp_path: Path) -> None:
    train, test = data
    model = MolecularModel(CoulombMatrix(23, "eigenspectrum"), _NestedStateEstimator(0.5)).fit(train, "U0_atomization")
    back = load_model(model.save(tmp_path / "nested.npz"))
    np.testing.assert_array_equal(back.predict(test), model.predict(test))
    np.testing.assert_array_equal(back.estimator.pca_[1]["basis"], model.estimator.pca_[1]["basis"])
    assert back.estimator.stack_[1].dtype == np.float32
    assert back.representation == CoulombMatrix(23, "eigenspectrum")


def test_unregistered_or_unstorable_estimators_are_refused(data, tmp_path: Path) -> None:
    train, _ = data

    class Plain(KernelRidge):
        pass

    model = MolecularModel(CoulombMatrix(23), Plain("gaussian", 74.0)).fit(train, "U0_atomization")
    with pytest.raises(ModelError, match="not registered"):
        model.save(tmp_path / "x.npz")
    est = _NestedStateEstimator()
    est.fit(np.eye(3), np.ones(3))
    est.pca_ = {"a.b": np.zeros(2)}  # '.' would break array names
    with pytest.raises(ModelError, match="keys"):
        MolecularModel(CoulombMatrix(3), est).save(tmp_path / "y.npz")
    est.pca_ = {"x": object()}
    with pytest.raises(ModelError, match="cannot store"):
        MolecularModel(CoulombMatrix(3), est).save(tmp_path / "z.npz")


def _rewrite(src: Path, dst: Path, meta_fn=None, drop: str | None = None) -> Path:
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != drop}
    if meta_fn is not None:
        meta = json.loads(str(arrays[META_KEY]))
        arrays[META_KEY] = np.array(json.dumps(meta_fn(meta)))
    np.savez(dst, **arrays)
    return rehash_model_file(dst)  # internally consistent but bad files: the schema must catch them


def test_bad_files_give_model_errors_naming_the_file(fitted: MolecularModel, tmp_path: Path) -> None:
    good = fitted.save(tmp_path / "good.npz")
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "nope.npz", "no such model file")
    (tmp_path / "empty.npz").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.npz", "not a secureml model file")
    (tmp_path / "junk.npz").write_bytes(b"\x93NUMPY garbage" * 10)
    cases["junk"] = (tmp_path / "junk.npz", "not a secureml model file")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    cases["no meta"] = (tmp_path / "other.npz", "no __secureml_model__")
    cases["wrong format"] = (_rewrite(good, tmp_path / "fmt.npz", lambda m: {**m, "format": "x"}), "not a secureml model")
    cases["future"] = (_rewrite(good, tmp_path / "v.npz", lambda m: {**m, "format_version": 99}), "version 99")
    cases["unknown class"] = (
        _rewrite(good, tmp_path / "cls.npz", lambda m: {**m, "estimator": {**m["estimator"], "class": "Evil", "module": "os"}}),
        "unknown estimator class 'Evil'",
    )
    cases["unknown rep"] = (
        _rewrite(good, tmp_path / "rep.npz", lambda m: {**m, "representation": {"name": "soap"}}),
        "unknown representation",
    )
    cases["missing array"] = (_rewrite(good, tmp_path / "arr.npz", drop="estimator.state.dual_coef_"), "missing")
    cases["width"] = (_rewrite(good, tmp_path / "w.npz", lambda m: {**m, "n_features": 5}), "records 5")
    cases["bad state"] = (
        _rewrite(good, tmp_path / "st.npz", lambda m: {**m, "estimator": {**m["estimator"], "state": {"kernel": "gaussian"}}}),
        "incomplete KernelRidge state",
    )
    with zipfile.ZipFile(tmp_path / "trunc.npz", "w") as z:
        z.writestr(META_KEY + ".npy", b"\x93NUMPY\x01\x00")
    cases["truncated"] = (tmp_path / "trunc.npz", "model file")
    for label, (path, message) in cases.items():
        with pytest.raises(ModelError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value), label


def test_nan_weights_are_refused(fitted: MolecularModel, tmp_path: Path) -> None:
    good = fitted.save(tmp_path / "good.npz")
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["estimator.state.dual_coef_"] = arrays["estimator.state.dual_coef_"].copy()
    arrays["estimator.state.dual_coef_"][3] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    rehash_model_file(tmp_path / "nan.npz")
    with pytest.raises(ModelError, match="NaN"):
        load_model(tmp_path / "nan.npz")
    meta, arrs = read_model_file(good)
    assert set(arrs) == {"estimator.state.X_fit_", "estimator.state.dual_coef_"}


def test_train_command_saves_a_loadable_model(tmp_path: Path, capsys) -> None:
    from secureml.cli import main

    out = tmp_path / "cli_model.npz"
    rc = main(["train", "--data", "embedded", "--n", "400", "--kernel", "laplacian", "--cm-size", "23",
               "--cv", "--sigmas", "300,3000", "--lams", "1e-10", "--cv-folds", "3", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test MAE" in printed
    model = load_model(out)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n_train"] == 400 and report["cv"]["sigma"] in (300.0, 3000.0)
    assert model.estimator.sigma == report["cv"]["sigma"]
    assert report["mae"] == pytest.approx(model.provenance["test_mae"])
    # A bad option is one clear error line and exit code 2, not a traceback.
    assert main(["train", "--data", "embedded", "--n", "50", "--model", "krr-gaussian", "--set", "bogus=1",
                 "--out", str(tmp_path / "b.npz")]) == 2
    assert "does not take" in capsys.readouterr().err
    assert main(["train", "--data", "embedded", "--n", "50", "--property", "nope", "--out", str(tmp_path / "c.npz")]) == 2
    assert "no property 'nope'" in capsys.readouterr().err


# -- baseline entries (format version 2) ----------------------------------------------------------
def test_version_1_files_load_as_mean_baseline(fitted: MolecularModel, data, tmp_path: Path) -> None:
    """A file written before the dressed-atom baseline existed (no baseline entries, version 1)."""
    _, test = data
    good = fitted.save(tmp_path / "good.npz")
    meta, _ = read_model_file(good)
    assert meta["format_version"] == FORMAT_VERSION and meta["baseline"] == "mean" and meta["element_energies"] is None

    def as_v1(m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if k not in ("baseline", "element_energies")} | {"format_version": 1}

    old = load_model(_rewrite(good, tmp_path / "v1.npz", as_v1))
    assert old.baseline == "mean" and old.element_energies_ is None
    np.testing.assert_array_equal(old.predict(test), fitted.predict(test))


def test_bad_baseline_entries_are_refused(data, tmp_path: Path) -> None:
    train, _ = data
    model = MolecularModel(CoulombMatrix(23), KernelRidge("gaussian", 74.0, 1e-8), baseline="dressed-atoms")
    good = model.fit(train, "U0_atomization").save(tmp_path / "dressed.npz")
    assert load_model(good).element_energies_ == model.element_energies_
    energies = read_model_file(good)[0]["element_energies"]
    cases = {
        "kind": ({"baseline": "linear"}, "unknown baseline 'linear'"),
        "none": ({"element_energies": None}, "needs its element energies"),
        "nan": ({"element_energies": {**energies, "6": float("nan")}}, "bad element energy"),
        "key": ({"element_energies": {**energies, "C": 1.0}}, "bad element energy 'C'"),
        "text": ({"element_energies": {**energies, "6": "1.0"}}, "bad element energy"),
    }
    for label, (patch, message) in cases.items():
        path = _rewrite(good, tmp_path / f"{label}.npz", lambda m, p=patch: {**m, **p})
        with pytest.raises(ModelError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value), label
