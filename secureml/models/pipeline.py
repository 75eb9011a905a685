"""A molecular model: representation + fitted estimator + where its training data came from."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError, ModelError
from secureml.models.baseline import (
    BASELINES,
    baseline_from_energies,
    energies_by_symbol,
    fit_element_energies,
)
from secureml.models.io import read_model_parts, save_model
from secureml.representations.base import Representation


def _target(dataset: MolecularDataset, property_name: str) -> np.ndarray:
    if property_name not in dataset.properties:
        known = ", ".join(sorted(dataset.properties)) or "none"
        raise DataError(f"the data set has no property {property_name!r}; available: {known}")
    y = np.asarray(dataset.properties[property_name], dtype=np.float64)
    if y.shape != (len(dataset),):
        raise DataError(f"property {property_name!r} has {y.shape} values for {len(dataset)} molecules")
    if not np.isfinite(y).all():
        raise DataError(f"property {property_name!r} contains NaN or inf for {int((~np.isfinite(y)).sum())} molecules")
    return y


def _check_baseline(baseline: str) -> str:
    if baseline not in BASELINES:
        raise ModelError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    return baseline


class MolecularModel:
    """Predicts a property of molecules:
    ``estimator.predict(representation.transform(data)) + baseline_energy(data)``.

    Args:
        representation: a :class:`~secureml.representations.base.Representation`.
        estimator: a scikit-learn style regressor registered with
            :func:`secureml.models.io.register_estimator` (needed to save it).
        property_name: the property it predicts (e.g. ``"U0_atomization"``, kcal/mol).
        baseline: ``"mean"`` (default): the estimator models the property itself (exact KRR
            subtracts the training mean). ``"dressed-atoms"``: :meth:`fit` first fits per-element
            energies ``e_Z`` (``y ~ sum_Z n_Z e_Z``, :mod:`secureml.models.baseline`) and the
            estimator learns the residual; predictions add ``sum_Z n_Z e_Z`` back.
        provenance: description of the training data; :meth:`fit` fills it in (keyword only in
            practice: it follows ``baseline``).

    Attributes:
        element_energies_: ``{Z: e_Z}`` after fitting with ``baseline="dressed-atoms"``, else None.
    """

    def __init__(
        self,
        representation: Representation,
        estimator: Any,
        property_name: str = "",
        baseline: str = "mean",
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.representation = representation
        self.estimator = estimator
        self.property_name = property_name
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.baseline = _check_baseline(baseline)
        self.element_energies_: dict[int, float] | None = None

    # -- scikit-learn style parameters ------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters; with ``deep``, also the estimator's as ``estimator__<name>``."""
        params: dict[str, Any] = {
            "representation": self.representation,
            "estimator": self.estimator,
            "property_name": self.property_name,
            "baseline": self.baseline,
            "provenance": self.provenance,
        }
        if deep and hasattr(self.estimator, "get_params"):
            params.update({f"estimator__{k}": v for k, v in self.estimator.get_params().items()})
        return params

    def set_params(self, **params: Any) -> "MolecularModel":
        """Set constructor parameters (``estimator__<name>`` goes to the estimator)."""
        nested = {k.split("__", 1)[1]: v for k, v in params.items() if k.startswith("estimator__")}
        for key, value in params.items():
            if key.startswith("estimator__"):
                continue
            if key not in ("representation", "estimator", "property_name", "provenance", "baseline"):
                raise ModelError(f"MolecularModel has no parameter {key!r}")
            if key == "baseline":
                value = _check_baseline(value)
            setattr(self, key, value)
        if nested:
            self.estimator.set_params(**nested)
        return self

    # -- the baseline ---------------------------------------------------------------------------
    def fit_baseline(self, dataset: MolecularDataset, y: np.ndarray) -> np.ndarray:
        """Fit the baseline on ``(dataset, y)`` and return its values there (zeros for "mean").

        :meth:`fit` calls this; it is public so that hyperparameter searches can work on the same
        residual ``y - fit_baseline(dataset, y)`` the estimator will be fitted on.
        """
        _check_baseline(self.baseline)
        if self.baseline == "mean":
            self.element_energies_ = None
            return np.zeros(len(dataset))
        self.element_energies_ = fit_element_energies(dataset, y)
        return self.baseline_energy(dataset)

    def baseline_energy(self, dataset: MolecularDataset) -> np.ndarray:
        """``sum_Z n_Z e_Z`` per molecule (zeros for the "mean" baseline).

        DataError naming the molecule if it has an element no training molecule had.
        """
        if self.baseline == "mean":
            return np.zeros(len(dataset))
        return baseline_from_energies(dataset.charges, self._energies(), dataset.names or None)

    def _energies(self) -> dict[int, float]:
        if self.element_energies_ is None:
            raise ModelError("the dressed-atom baseline is not fitted: call fit() first")
        return self.element_energies_

    def fit(self, dataset: MolecularDataset, property_name: str | None = None) -> "MolecularModel":
        """Fit representation and estimator on ``dataset``'s ``property_name`` values."""
        prop = property_name or self.property_name
        if not prop:
            raise ModelError("no property to fit: pass property_name")
        if len(dataset) == 0:
            raise DataError("cannot fit a model on an empty data set")
        y = _target(dataset, prop)
        t0 = time.perf_counter()
        X = self.representation.fit(dataset).transform(dataset)
        t1 = time.perf_counter()
        # The estimator learns what the baseline leaves (y itself for "mean").
        self.estimator.fit(X, y - self.fit_baseline(dataset, y))
        t2 = time.perf_counter()
        self.property_name = prop
        # Record where the data came from without copying the molecules' names into the file:
        # a digest lets the owner prove which set was used without disclosing it.
        names_digest = hashlib.sha256("\n".join(dataset.names).encode()).hexdigest() if dataset.names else ""
        self.provenance = {
            **{k: v for k, v in dataset.provenance.items()},
            "n_train": len(dataset),
            "property": prop,
            "train_names_sha256": names_digest,
            "representation_seconds": round(t1 - t0, 4),
            "fit_seconds": round(t2 - t1, 4),
            "baseline": self.baseline,
        }
        if self.element_energies_ is not None:
            self.provenance["element_energies"] = energies_by_symbol(self.element_energies_)
        return self

    def features(self, dataset: MolecularDataset) -> Any:
        """The representation of ``dataset`` as this model's estimator consumes it."""
        return self.representation.transform(dataset)

    def predict(self, dataset: MolecularDataset) -> np.ndarray:
        """Predicted property values, one per molecule."""
        if len(dataset) == 0:
            return np.zeros(0)
        # Baseline first: an element the model never saw fails fast, before the representation.
        base = self.baseline_energy(dataset)
        return np.asarray(self.estimator.predict(self.features(dataset)), dtype=np.float64) + base

    def predict_one(self, charges: np.ndarray, coordinates: np.ndarray) -> float:
        """Prediction for a single molecule given as arrays (Angstrom)."""
        base = 0.0
        if self.baseline != "mean":
            base = float(baseline_from_energies([np.asarray(charges)], self._energies())[0])
        x = self.representation.transform_one(charges, coordinates)
        return float(np.asarray(self.estimator.predict(np.asarray(x)[None, :]))[0]) + base

    def score_mae(self, dataset: MolecularDataset) -> float:
        """Mean absolute error on ``dataset``'s values of this model's property."""
        y = _target(dataset, self.property_name)
        return float(np.abs(self.predict(dataset) - y).mean())

    @property
    def n_features(self) -> int:
        return int(self.representation.n_features)

    def save(self, path: str | Path, sign_key: Any = None) -> Path:
        """Write this model to one ``.npz`` file (see :mod:`secureml.models.io`), hashed and,
        given an Ed25519 ``sign_key``, signed."""
        return save_model(self, path, sign_key=sign_key)

    @classmethod
    def load(cls, path: str | Path, verify_key: Any = None) -> "MolecularModel":
        """Read a model file (:func:`load_model`), verifying its hash (and signature by ``verify_key``)."""
        return load_model(path, verify_key=verify_key)

    def __repr__(self) -> str:
        return (
            f"MolecularModel({self.representation!r}, {self.estimator!r}, "
            f"property_name={self.property_name!r}"
            + (f", baseline={self.baseline!r})" if self.baseline != "mean" else ")")
        )


def load_model(path: str | Path, verify_key: Any = None) -> MolecularModel:
    """Read a file written by :meth:`MolecularModel.save`; ModelError for a bad, modified or
    unknown file (and, given ``verify_key``, one not signed by it). ``sha256_``: its verified hash."""
    parts = read_model_parts(path, verify_key)
    model = MolecularModel(parts.representation, parts.estimator, property_name=parts.property_name,
                           baseline=parts.baseline, provenance=parts.provenance)
    model.element_energies_ = parts.element_energies
    model.sha256_ = parts.sha256
    return model
