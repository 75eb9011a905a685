"""Models trained elsewhere, as secureml model files that ``secureml serve`` can serve.

* scikit-learn ``sklearn.kernel_ridge.KernelRidge`` with ``kernel="rbf"`` or ``"laplacian"``
  (:func:`from_sklearn`): ``exp(-gamma ||x - y||^2)`` is the Gaussian kernel with
  ``sigma = 1 / sqrt(2 gamma)``; ``exp(-gamma ||x - y||_1)`` the Laplacian with
  ``sigma = 1 / gamma``. scikit-learn fits no intercept, so the offset is what you subtracted
  from the targets before fitting (``y_offset``; 0 if none).
* qmllib / qml (:func:`from_qmllib`): KRR there is a set of training representations, the
  weights ``alpha`` from ``cho_solve`` and a width; the kernels are the same as ours
  (``gaussian_kernel``: exp(-||x-y||^2 / (2 sigma^2)), ``laplacian_kernel``: exp(-||x-y||_1 / sigma)).
  qmllib's Coulomb matrices pack the *lower* triangle row by row; :func:`qmllib_cm_to_secureml`
  reorders them into secureml's upper-triangle layout.

The representation must be the one the features were computed with, so that a query owner's
client computes the same features: :class:`~secureml.representations.coulomb.CoulombMatrix`
with the right size and variant. (Row-norm sorting agrees with qmllib except for exactly tied
norms; see :mod:`secureml.representations.coulomb`.)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from secureml.errors import ModelError
from secureml.models.krr import KernelRidge, from_sklearn_kernel_ridge
from secureml.models.pipeline import MolecularModel
from secureml.representations.base import Representation
from secureml.representations.coulomb import CoulombMatrix


def _wrap(est: KernelRidge, representation: Representation, property_name: str, property_unit: str,
          elements: Sequence[int] | None, source: str) -> MolecularModel:
    n_rep = representation.n_features
    if est.X_fit_.shape[1] != n_rep:
        raise ModelError(f"the imported model has {est.X_fit_.shape[1]} features per molecule but "
                         f"{representation!r} gives {n_rep}: pass the representation it was trained with")
    model = MolecularModel(representation, est, property_name=property_name, property_unit=property_unit)
    model.elements_ = sorted(int(z) for z in elements) if elements is not None else None
    model.provenance = {"imported_from": source, "n_train": int(est.X_fit_.shape[0]), "property": property_name}
    return model


def from_sklearn(krr: Any, representation: Representation, property_name: str = "", property_unit: str = "",
                 y_offset: float = 0.0, elements: Sequence[int] | None = None) -> MolecularModel:
    """A servable :class:`MolecularModel` from a fitted ``sklearn.kernel_ridge.KernelRidge``."""
    est = from_sklearn_kernel_ridge(krr, y_offset)
    gamma = krr.gamma if krr.gamma is not None else 1.0 / est.X_fit_.shape[1]
    return _wrap(est, representation, property_name, property_unit, elements,
                 f"sklearn KernelRidge(kernel={krr.kernel!r}, gamma={gamma:g}, alpha={krr.alpha:g})")


def qmllib_cm_to_secureml(X: np.ndarray, size: int) -> np.ndarray:
    """qmllib Coulomb matrices (lower triangle, row by row) -> secureml's upper-triangle layout."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    n = size * (size + 1) // 2
    if X.shape[1] != n:
        raise ModelError(f"a size-{size} Coulomb matrix has {n} entries, got {X.shape[1]}")
    full = np.zeros((X.shape[0], size, size))
    il = np.tril_indices(size)
    full[:, il[0], il[1]] = X
    iu = np.triu_indices(size)
    # entry (i, j), j >= i, of the upper triangle equals (j, i) of the lower one
    return np.ascontiguousarray(full[:, iu[1], iu[0]])


def from_qmllib(X_train: np.ndarray, alphas: np.ndarray, kernel: str, sigma: float,
                representation: Representation, y_offset: float = 0.0, property_name: str = "",
                property_unit: str = "", elements: Sequence[int] | None = None,
                qmllib_cm_layout: bool = True) -> MolecularModel:
    """A servable model from qmllib KRR arrays (training representations, alphas, sigma).

    ``qmllib_cm_layout``: for a Coulomb-matrix representation, ``X_train`` is in qmllib's lower-
    triangle packing and is reordered (set False if it already has secureml's layout).
    """
    X = np.asarray(X_train, dtype=np.float64)
    if isinstance(representation, CoulombMatrix) and qmllib_cm_layout and representation.variant != "eigenspectrum":
        X = qmllib_cm_to_secureml(X, int(representation.size or 0))
    est = KernelRidge.from_state({"kernel": kernel, "sigma": float(sigma), "lam": 0.0,
                                  "X_fit_": X, "dual_coef_": np.asarray(alphas, dtype=np.float64).ravel(),
                                  "y_offset_": float(y_offset)})
    return _wrap(est, representation, property_name, property_unit, elements, f"qmllib KRR ({kernel}, sigma {sigma:g})")


__all__ = ["from_sklearn", "from_qmllib", "qmllib_cm_to_secureml"]
