"""The small interface every molecular representation implements, and a registry by name.

A representation turns a molecule (nuclear charges + Cartesian coordinates in Angstrom) into a
feature vector of a *fixed* width, so a model file can record the width and a query owner can
check that its features fit the model before any two-party protocol starts.

Concrete classes register themselves with :func:`register_representation`; model files store
``representation.get_params()`` (which always contains ``"name"``) and
:func:`representation_from_params` rebuilds the object from it.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError, ModelError

_REGISTRY: dict[str, type["Representation"]] = {}

R = TypeVar("R", bound=type)


def register_representation(cls: R) -> R:
    """Class decorator: make ``cls`` loadable by its ``name`` attribute."""
    name = getattr(cls, "name", "")
    if not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    _REGISTRY[name] = cls
    return cls


def registered_representations() -> dict[str, type["Representation"]]:
    """Name -> class of every representation known so far (imports all sibling modules first)."""
    _import_all()
    return dict(_REGISTRY)


def _import_all() -> None:
    # Representations in sibling modules (e.g. fchl.py) register themselves on import; importing
    # only our own package's modules keeps a model file from naming arbitrary code to import.
    import secureml.representations as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"secureml.representations.{info.name}")
            except ImportError:
                # A representation whose optional dependency is missing is simply unavailable.
                continue


def representation_from_params(params: dict[str, Any]) -> "Representation":
    """Rebuild a representation from ``get_params()`` output (as stored in a model file)."""
    if not isinstance(params, dict) or "name" not in params:
        raise ModelError(f"representation parameters must be a dict with a 'name': {params!r}")
    name = params["name"]
    if name not in _REGISTRY:
        _import_all()
    if name not in _REGISTRY:
        raise ModelError(
            f"unknown representation {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}"
        )
    return _REGISTRY[name].from_params(params)


def check_molecule(charges: Any, coordinates: Any, label: str = "molecule") -> tuple[np.ndarray, np.ndarray]:
    """Return (charges as int64 (n,), coordinates as float64 (n, 3)) or raise DataError.

    Representations check their own input because a query owner may pass hand-made arrays that
    never went through a file reader.
    """
    z = np.asarray(charges)
    r = np.asarray(coordinates, dtype=np.float64)
    if z.ndim != 1 or z.size == 0:
        raise DataError(f"{label}: charges must be a non-empty 1-D array, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.number) or not np.all(np.isfinite(z)) or np.any(z != np.round(z)):
        raise DataError(f"{label}: nuclear charges must be integers, got {z!r}")
    z = z.astype(np.int64)
    if np.any(z < 1) or np.any(z > 118):
        bad = z[(z < 1) | (z > 118)]
        raise DataError(f"{label}: unknown element with nuclear charge {int(bad[0])}")
    if r.shape != (z.size, 3):
        raise DataError(f"{label}: coordinates must have shape ({z.size}, 3), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise DataError(f"{label}: coordinates contain NaN or inf")
    return z, r


class Representation:
    """Base class: a fixed-width molecular descriptor with a scikit-learn-like API.

    Subclasses set ``name``, implement :meth:`transform_one` (and usually a faster
    :meth:`transform`), :attr:`n_features` and :meth:`get_params`.
    """

    name: str = ""

    def fit(self, dataset: MolecularDataset) -> "Representation":
        """Learn whatever depends on the data (e.g. the padding size); default: nothing."""
        return self

    def transform(self, dataset: MolecularDataset) -> np.ndarray:
        """Features of every molecule, shape (n_molecules, n_features), float64."""
        if len(dataset) == 0:
            return np.zeros((0, self.n_features))
        rows = [
            self.transform_one(z, r)
            for z, r in zip(dataset.charges, dataset.coordinates)
        ]
        return np.vstack(rows)

    def fit_transform(self, dataset: MolecularDataset) -> np.ndarray:
        return self.fit(dataset).transform(dataset)

    def transform_one(self, charges: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
        """Features of one molecule, shape (n_features,)."""
        raise TypeError(f"{type(self).__name__} does not implement transform_one")

    @property
    def n_features(self) -> int:
        raise TypeError(f"{type(self).__name__} does not define n_features")

    def get_params(self) -> dict[str, Any]:
        """JSON-serialisable settings, including ``"name"``; enough to rebuild the object."""
        return {"name": self.name}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Representation":
        kwargs = {k: v for k, v in params.items() if k != "name"}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ModelError(f"bad parameters for representation {cls.name!r}: {exc}") from exc

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_params() == other.get_params()  # type: ignore[union-attr]

    __hash__ = None  # type: ignore[assignment]


__all__ = [
    "Representation",
    "register_representation",
    "registered_representations",
    "representation_from_params",
    "check_molecule",
]
