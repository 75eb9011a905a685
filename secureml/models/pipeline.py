"""A molecular model: representation + fitted estimator + where its training data came from."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError, ModelError
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


class MolecularModel:
    """Predicts a property of molecules: ``estimator.predict(representation.transform(data))``.

    Args:
        representation: a :class:`~secureml.representations.base.Representation`.
        estimator: a scikit-learn style regressor registered with
            :func:`secureml.models.io.register_estimator` (needed to save it).
        property_name: the property it predicts (e.g. ``"U0_atomization"``, kcal/mol).
        provenance: description of the training data; :meth:`fit` fills it in.
    """

    def __init__(
        self,
        representation: Representation,
        estimator: Any,
        property_name: str = "",
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.representation = representation
        self.estimator = estimator
        self.property_name = property_name
        self.provenance: dict[str, Any] = dict(provenance or {})

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
        self.estimator.fit(X, y)
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
        }
        return self

    def features(self, dataset: MolecularDataset) -> Any:
        """The representation of ``dataset`` as this model's estimator consumes it."""
        return self.representation.transform(dataset)

    def predict(self, dataset: MolecularDataset) -> np.ndarray:
        """Predicted property values, one per molecule."""
        if len(dataset) == 0:
            return np.zeros(0)
        return np.asarray(self.estimator.predict(self.features(dataset)), dtype=np.float64)

    def predict_one(self, charges: np.ndarray, coordinates: np.ndarray) -> float:
        """Prediction for a single molecule given as arrays (Angstrom)."""
        x = self.representation.transform_one(charges, coordinates)
        return float(np.asarray(self.estimator.predict(np.asarray(x)[None, :]))[0])

    def score_mae(self, dataset: MolecularDataset) -> float:
        """Mean absolute error on ``dataset``'s values of this model's property."""
        y = _target(dataset, self.property_name)
        return float(np.abs(self.predict(dataset) - y).mean())

    @property
    def n_features(self) -> int:
        return int(self.representation.n_features)

    def save(self, path: str | Path) -> Path:
        """Write this model to one ``.npz`` file (see :mod:`secureml.models.io`)."""
        from secureml.models.io import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "MolecularModel":
        from secureml.models.io import load_model

        return load_model(path)

    def __repr__(self) -> str:
        return (
            f"MolecularModel({self.representation!r}, {self.estimator!r}, "
            f"property_name={self.property_name!r})"
        )
