"""The in-memory molecular data set shared by loaders, representations, models and protocols."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MolecularDataset:
    """A list of molecules with per-molecule properties.

    Attributes:
        charges: one int array of nuclear charges per molecule.
        coordinates: one float array of shape (n_atoms, 3) per molecule, in Angstrom.
        properties: property name -> float array with one value per molecule (energies in kcal/mol).
        names: one identifier per molecule (e.g. ``"qm9_000123"``).
        smiles: SMILES per molecule where known (empty strings otherwise).
        provenance: free-form description of where the data came from (recorded in model files).
    """

    charges: list[np.ndarray]
    coordinates: list[np.ndarray]
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    smiles: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.charges)

    def subset(self, index: np.ndarray | list[int]) -> "MolecularDataset":
        """Return the molecules at ``index`` (in that order) as a new data set."""
        idx = np.asarray(index, dtype=int)
        return MolecularDataset(
            charges=[self.charges[i] for i in idx],
            coordinates=[self.coordinates[i] for i in idx],
            properties={k: np.asarray(v)[idx] for k, v in self.properties.items()},
            names=[self.names[i] for i in idx] if self.names else [],
            smiles=[self.smiles[i] for i in idx] if self.smiles else [],
            provenance=dict(self.provenance, subset_size=int(len(idx))),
        )
