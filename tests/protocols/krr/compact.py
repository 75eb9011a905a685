"""The small random-feature model the compact-model tests share (OT path and lattice path)."""
from __future__ import annotations

from typing import Any

from secureml.data import embedded_split, load_embedded
from secureml.models.pipeline import MolecularModel
from secureml.models.random_features import RandomFourierRidge
from secureml.representations import CoulombMatrix

# |double-blind - plaintext| bound of the default fixed-point plan (protocols.krr.linear.DEFAULT_TOL);
# the lattice path keeps the same budget
ERROR_BUDGET = 5e-3


def rff_model_and_queries(n_queries: int) -> tuple[MolecularModel, Any]:
    """RFF (512 features) on 400 embedded training molecules, and ``n_queries`` held-out ones."""
    data = load_embedded()
    tr, te = embedded_split(0)
    est = RandomFourierRidge("gaussian", sigma=50.0, n_features=512, lam=1e-6)
    mm = MolecularModel(CoulombMatrix(size=23), est, "U0_atomization").fit(data.subset(tr[:400]))
    return mm, data.subset(te[:n_queries])


def small_rff_and_two_queries(n_features: int, n_train: int) -> tuple[MolecularModel, Any]:
    """RFF (``n_features``, seed 1) on the first ``n_train`` embedded training molecules, and two
    held-out ones: the models of the pooled, precorrected and rounded OT-path tests."""
    data = load_embedded()
    tr, te = embedded_split(0)
    est = RandomFourierRidge(n_features=n_features, sigma=50.0, lam=1e-6, seed=1)
    mm = MolecularModel(CoulombMatrix(size=23), est, "U0_atomization").fit(data.subset(tr[:n_train]))
    return mm, data.subset(te[:2])
