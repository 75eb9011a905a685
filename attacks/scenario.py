"""The attack scenarios on the embedded data: who holds what.

The model owner trains on (part of) the embedded training split; the attacker owns public
molecules -- the embedded test split, which is never trained on -- with their QM9 labels, and
knows the published hyperparameters (kernel, sigma, lambda, representation).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from secureml.data import embedded_split, load_embedded
from secureml.data.dataset import MolecularDataset
from secureml.models import build_model
from secureml.models.pipeline import MolecularModel
from secureml.representations.coulomb import CoulombMatrix

PROPERTY = "U0_atomization"


@dataclass
class Scenario:
    data: MolecularDataset  # the whole embedded set
    X: np.ndarray  # its Coulomb-matrix features (all molecules)
    y: np.ndarray  # the property (kcal/mol)
    train: np.ndarray  # indices the model was trained on
    public: np.ndarray  # indices the attacker owns (never trained on)
    model: Any  # fitted MolecularModel

    @property
    def X_train(self) -> np.ndarray:
        return self.X[self.train]


@lru_cache(maxsize=4)
def embedded_features(cm_size: int = 29, variant: str = "sorted", grid_bits: int | None = None
                      ) -> tuple[MolecularDataset, np.ndarray, np.ndarray]:
    """The embedded data set, its Coulomb matrices and U0 atomization energies (cached).

    ``grid_bits``: entries rounded to multiples of 2^-grid_bits, as models meant for the OT
    service store them (``secureml train`` default 16).
    """
    data = load_embedded()
    X = CoulombMatrix(size=cm_size, variant=variant, grid_bits=grid_bits).transform(data)
    X.setflags(write=False)
    return data, X, np.asarray(data.properties[PROPERTY], dtype=np.float64)


def build(kernel: str = "gaussian", n_train: int | None = None, seed: int = 0, sigma: float | None = None,
          lam: float | None = None, cm_size: int = 29, variant: str = "sorted", grid_bits: int | None = None,
          estimator: Any = None) -> Scenario:
    """Fit the model owner's model on the first ``n_train`` molecules of the embedded split.

    ``estimator``: any fitted-to-be estimator (e.g. RandomFourierRidge) instead of exact KRR.
    """
    data, X, y = embedded_features(cm_size, variant, grid_bits)
    train, test = embedded_split(seed=seed, n_train=n_train)
    if estimator is None:
        opts: dict[str, Any] = {"cm_size": cm_size, "cm_variant": variant}
        if sigma is not None:
            opts["sigma"] = sigma
        if lam is not None:
            opts["lam"] = lam
        mm = build_model(f"krr-{kernel}", **opts)
        mm.representation = CoulombMatrix(size=cm_size, variant=variant, grid_bits=grid_bits)
    else:
        mm = MolecularModel(CoulombMatrix(size=cm_size, variant=variant, grid_bits=grid_bits), estimator)
    mm.estimator.fit(X[train], y[train])
    mm.property_name = PROPERTY
    mm.provenance = {"source": "secureml embedded set", "n_train": int(len(train)), "split_seed": seed}
    return Scenario(data, X, y, np.asarray(train), np.asarray(test), mm)
