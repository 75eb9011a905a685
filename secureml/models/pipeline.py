"""A molecular model: representation + fitted estimator + where its training data came from."""
from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.data.formats import symbol
from secureml.data.readers import as_dataset
from secureml.data.units import known_unit
from secureml.errors import DataError, ModelError
from secureml.models.baseline import (
    BASELINES,
    baseline_from_energies,
    energies_by_symbol,
    fit_element_energies,
)
from secureml.models.io import read_model_parts, save_model
from secureml.models.krr import from_sklearn_kernel_ridge
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


# local representations (FCHL19, ~1-5 ms per molecule) show a progress bar from this many molecules on
_PROGRESS_MOLECULES = 500

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
        property_unit: str = "",
    ) -> None:
        self.representation = representation
        self.estimator = estimator
        self.property_name = property_name
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.baseline = _check_baseline(baseline)
        self.element_energies_: dict[int, float] | None = None
        # unit of the predictions ("kcal/mol", "eV", ... or "" if unknown); recorded in the model file
        self.property_unit: str = property_unit or known_unit(property_name)
        # nuclear charges present in the training molecules (set by fit, saved in the model file);
        # a query with any other element is refused by name
        self.elements_: list[int] | None = None

    # -- scikit-learn style parameters ------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters; with ``deep``, also the estimator's as ``estimator__<name>``."""
        params: dict[str, Any] = {
            "representation": self.representation,
            "estimator": self.estimator,
            "property_name": self.property_name,
            "property_unit": self.property_unit,
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
            if key not in ("representation", "estimator", "property_name", "property_unit", "provenance", "baseline"):
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
        rep = self.representation.fit(dataset)
        if getattr(rep, "local", False) and len(dataset) >= _PROGRESS_MOLECULES:
            X = rep.transform(dataset, progress=True)  # FCHL19: ~1-5 ms per molecule, show progress
        else:
            X = rep.transform(dataset)
        t1 = time.perf_counter()
        # The estimator learns what the baseline leaves (y itself for "mean").
        self.estimator.fit(X, y - self.fit_baseline(dataset, y))
        t2 = time.perf_counter()
        if prop != self.property_name or not self.property_unit:
            self.property_unit = self.property_unit if prop == self.property_name else ""
            self.property_unit = self.property_unit or known_unit(prop)
        self.property_name = prop
        self.elements_ = sorted({int(z) for c in dataset.charges for z in np.unique(c)})
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
        rep = self.representation
        if getattr(rep, "local", False) and len(dataset) >= _PROGRESS_MOLECULES:
            return rep.transform(dataset, progress=True)  # seconds for a test set: show progress
        return rep.transform(dataset)

    def check_elements(self, dataset: MolecularDataset) -> None:
        """DataError naming the first molecule with an element no training molecule had."""
        if not self.elements_:
            return
        known = set(self.elements_)
        for i, z in enumerate(dataset.charges):
            extra = sorted(set(np.unique(np.asarray(z)).tolist()) - known)
            if extra:
                who = f"molecule {dataset.names[i]!r}" if dataset.names and dataset.names[i] else f"molecule {i}"
                raise DataError(
                    f"{who} contains {', '.join(symbol(e) for e in extra)}: the model never saw it in training "
                    f"(its training molecules have {', '.join(symbol(e) for e in self.elements_)}); "
                    "train on molecules that contain it")

    def predict(self, molecules: Any) -> np.ndarray:
        """Predicted property values (in :attr:`property_unit`), one per molecule.

        ``molecules``: a MolecularDataset, ASE ``Atoms``, an RDKit ``Mol`` with a 3-D conformer and
        explicit hydrogens, a file path, or a list of these (:func:`secureml.data.readers.as_dataset`).
        """
        dataset = as_dataset(molecules)
        if len(dataset) == 0:
            return np.zeros(0)
        self.check_elements(dataset)
        # Baseline first: an element the model never saw fails fast, before the representation.
        base = self.baseline_energy(dataset)
        return np.asarray(self.estimator.predict(self.features(dataset)), dtype=np.float64) + base

    def predict_one(self, charges: np.ndarray, coordinates: np.ndarray) -> float:
        """Prediction for a single molecule given as arrays (Angstrom)."""
        self.check_elements(MolecularDataset([np.asarray(charges)], [np.asarray(coordinates)]))
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
        given an Ed25519 ``sign_key``, signed. A scikit-learn KernelRidge estimator is stored as
        the equal secureml KernelRidge (servable); this model keeps its own estimator."""
        if type(self.estimator).__module__.startswith("sklearn.kernel_ridge"):
            stored = copy.copy(self)
            stored.estimator = from_sklearn_kernel_ridge(self.estimator)
            return save_model(stored, path, sign_key=sign_key)
        return save_model(self, path, sign_key=sign_key)

    @classmethod
    def load(cls, path: str | Path, verify_key: Any = None) -> "MolecularModel":
        """Read a model file (:func:`load_model`), verifying its hash (and signature by ``verify_key``)."""
        return load_model(path, verify_key=verify_key)

    def __repr__(self) -> str:
        return (
            f"MolecularModel({self.representation!r}, {self.estimator!r}, "
            f"property_name={self.property_name!r}"
            + (f", property_unit={self.property_unit!r}" if self.property_unit else "")
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
    model.property_unit = parts.property_unit or model.property_unit
    model.elements_ = parts.elements
    return model
