"""The synthetic models and queries every cost benchmark shares (one definition, no bench circles)."""
from __future__ import annotations

import numpy as np

from protocols.common import KernelModelParams

LAPLACIAN_GRID_BITS = 8  # Laplacian models' entries sit on the 2^-8 grid (as `secureml train` makes them)


def synthetic_model(N: int, d: int, sigma: float, seed: int = 0, kernel: str = "gaussian"):
    """Coulomb-matrix-like model: non-negative sparse entries up to ~73.5 (ANCHORS.md's peer setting);
    for the Laplacian kernel the entries are rounded to the 2^-8 grid."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 73.5, (N, d)) * (rng.random((N, d)) < 0.5)
    alpha = rng.normal(0, 1e3, N)
    if kernel == "laplacian":
        X = np.round(X * (1 << LAPLACIAN_GRID_BITS)) / (1 << LAPLACIAN_GRID_BITS)
    return KernelModelParams(X, alpha, -1000.0, kernel, sigma), rng


def synthetic_queries(model, rng, k: int = 1) -> np.ndarray:
    """Queries near the first training points (on the model's grid for the Laplacian kernel)."""
    d = model.n_features
    Q = np.clip(model.X_train[:k] + rng.normal(0, 1.0, (k, d)) * (model.X_train[:k] > 0), 0, 127)
    if model.kernel == "laplacian":
        Q = np.round(Q * (1 << LAPLACIAN_GRID_BITS)) / (1 << LAPLACIAN_GRID_BITS)
    return Q
