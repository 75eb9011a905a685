"""FCHL19 atomic environments (Christensen et al., J. Chem. Phys. 152, 044107, 2020) via qmllib.

FCHL19 describes every atom by a fixed-width vector of two-body (radial, per neighbour element)
and three-body (radial x angular, per element pair) Gaussian basis functions within a cut-off.
It is a *local* representation: a molecule becomes an (n_atoms, width) array plus the element of
each atom, which is what the local random-feature model (:mod:`secureml.models.local`) consumes.

The default hyperparameters are those of qml-lightning's QM9 example (rcut 6 Angstrom for both
the two- and the three-body terms, 23 + 22 radial functions, eta2 0.27, eta3 5.6, decays 2.78 /
2.1, three-body weight 60.1) with elements H, C, N, O, F: width 5*23 + 30*22 = 775.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.data.formats import symbol
from secureml.errors import DataError, ModelError
from secureml.representations.base import Representation, check_molecule, register_representation

__all__ = ["FCHL19", "AtomicEnvironments"]


@dataclass
class AtomicEnvironments:
    """Per-atom representations of a set of molecules, stored flat.

    Attributes:
        X: (n_atoms_total, width) atomic environment vectors; atoms of one molecule are contiguous.
        Z: (n_atoms_total,) nuclear charge of each atom.
        offsets: (n_molecules + 1,) molecule ``i`` owns rows ``offsets[i]:offsets[i+1]``.
        names: molecule identifiers (may be empty).
        params: ``get_params()`` of the representation that produced ``X``.
    """

    X: np.ndarray
    Z: np.ndarray
    offsets: np.ndarray
    names: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per molecule."""
        return np.diff(self.offsets)

    @property
    def mol_index(self) -> np.ndarray:
        """(n_atoms_total,) index of the molecule each atom belongs to."""
        return np.repeat(np.arange(len(self)), self.n_atoms)

    def molecules(self) -> list[np.ndarray]:
        """One (n_atoms, width) array per molecule (views into ``X``)."""
        return np.split(self.X, self.offsets[1:-1])

    def elements(self) -> list[np.ndarray]:
        """The nuclear charges of each molecule's atoms."""
        return np.split(self.Z, self.offsets[1:-1])

    def element_counts(self, elements: Sequence[int]) -> np.ndarray:
        """(n_molecules, len(elements)) how many atoms of each element each molecule has."""
        mol = self.mol_index
        out = np.zeros((len(self), len(elements)))
        for k, e in enumerate(elements):
            out[:, k] = np.bincount(mol, weights=(self.Z == e), minlength=len(self))
        return out

    def subset(self, index: Sequence[int] | np.ndarray) -> "AtomicEnvironments":
        """The molecules at ``index`` (in that order)."""
        idx = np.asarray(index, dtype=np.int64)
        counts = self.n_atoms[idx]
        starts = self.offsets[idx]
        new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # Atom rows: for each chosen molecule, starts[i] + 0..counts[i]-1, without a Python loop.
        rows = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
        return AtomicEnvironments(
            X=self.X[rows], Z=self.Z[rows], offsets=new_offsets,
            names=[self.names[i] for i in idx] if self.names else [], params=dict(self.params),
        )

    def __getitem__(self, index: Sequence[int] | np.ndarray | slice) -> "AtomicEnvironments":
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        return self.subset(index)


@register_representation
class FCHL19(Representation):
    """FCHL19 atomic environments (qmllib ``generate_fchl19``), one row per atom.

    Args:
        elements: nuclear charges the representation knows (others raise DataError).
        rcut, acut: two-body and three-body cut-off radii (Angstrom); ``acut=None`` means rcut.
        nRs2, nRs3, eta2, eta3, two_body_decay, three_body_decay, three_body_weight: FCHL19
            basis settings (qmllib names).
        dtype: "float32" (default; halves the memory of large sets, the random-feature model
            computes its features in float32 anyway) or "float64".
        extend_elements: if True, :meth:`fit` adds every element of the training molecules to
            ``elements`` (S, Cl, Br, P ...), so a model covers the chemistry it was trained on; the
            fitted list is what get_params() records in the model file.
    """

    name = "fchl19"
    local = True  # per-atom output: transform() returns AtomicEnvironments, not a 2-D array

    def __init__(
        self,
        elements: Sequence[int] = (1, 6, 7, 8, 9),
        rcut: float = 6.0,
        acut: float | None = None,
        nRs2: int = 23,
        nRs3: int = 22,
        eta2: float = 0.27,
        eta3: float = 5.6,
        two_body_decay: float = 2.78,
        three_body_decay: float = 2.1,
        three_body_weight: float = 60.1,
        dtype: str = "float32",
        extend_elements: bool = False,
    ) -> None:
        self.extend_elements = bool(extend_elements)
        self.elements = sorted(int(e) for e in elements) if extend_elements else [int(e) for e in elements]
        if len(set(self.elements)) != len(self.elements) or not (self.elements or extend_elements):
            raise ModelError(f"FCHL19 elements must be distinct nuclear charges, got {elements!r}")
        self.rcut = float(rcut)
        self.acut = float(rcut if acut is None else acut)
        self.nRs2 = int(nRs2)
        self.nRs3 = int(nRs3)
        self.eta2 = float(eta2)
        self.eta3 = float(eta3)
        self.two_body_decay = float(two_body_decay)
        self.three_body_decay = float(three_body_decay)
        self.three_body_weight = float(three_body_weight)
        if dtype not in ("float32", "float64"):
            raise ModelError(f"FCHL19 dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = dtype

    @property
    def n_features(self) -> int:
        """Width of one atomic environment vector."""
        n = len(self.elements)
        return n * self.nRs2 + n * (n + 1) * self.nRs3

    def get_params(self) -> dict[str, Any]:
        return {
            "name": self.name, "elements": list(self.elements), "rcut": self.rcut, "acut": self.acut,
            "nRs2": self.nRs2, "nRs3": self.nRs3, "eta2": self.eta2, "eta3": self.eta3,
            "two_body_decay": self.two_body_decay, "three_body_decay": self.three_body_decay,
            "three_body_weight": self.three_body_weight, "dtype": self.dtype,
            **({"extend_elements": True} if self.extend_elements else {}),
        }

    def fit(self, dataset: MolecularDataset) -> "FCHL19":
        """With ``extend_elements``, add the elements of ``dataset`` to :attr:`elements`."""
        if self.extend_elements and len(dataset):
            seen = {int(z) for c in dataset.charges for z in np.unique(np.asarray(c))}
            self.elements = sorted(set(self.elements) | seen)
        return self

    def transform_one(self, charges: np.ndarray, coordinates: np.ndarray, label: str = "molecule") -> np.ndarray:
        """(n_atoms, n_features) environments of one molecule (Angstrom coordinates)."""
        from qmllib.representations import generate_fchl19

        z, r = check_molecule(charges, coordinates, label)
        unknown = sorted(set(z.tolist()) - set(self.elements))
        if unknown:
            raise DataError(
                f"{label} contains {', '.join(symbol(e) for e in unknown)}: the model never saw it in training "
                f"(it covers {', '.join(symbol(e) for e in self.elements)}); train on molecules that contain it"
            )
        rep = generate_fchl19(
            z, r, elements=self.elements, nRs2=self.nRs2, nRs3=self.nRs3, eta2=self.eta2,
            eta3=self.eta3, rcut=self.rcut, acut=self.acut, two_body_decay=self.two_body_decay,
            three_body_decay=self.three_body_decay, three_body_weight=self.three_body_weight,
        )
        return np.asarray(rep, dtype=self.dtype)

    def transform(self, dataset: MolecularDataset, progress: bool = False) -> AtomicEnvironments:  # type: ignore[override]
        """Environments of every atom of every molecule, as :class:`AtomicEnvironments`."""
        n = len(dataset)
        counts = np.fromiter((len(c) for c in dataset.charges), dtype=np.int64, count=n)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        X = np.empty((int(offsets[-1]), self.n_features), dtype=self.dtype)
        it = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="FCHL19", unit="mol", leave=False)
        # qmllib's Fortran routine takes one molecule at a time; this loop is over molecules.
        for i in it:
            label = dataset.names[i] if dataset.names else f"molecule {i}"
            X[offsets[i]:offsets[i + 1]] = self.transform_one(dataset.charges[i], dataset.coordinates[i], label)
        Z = np.concatenate([np.asarray(c, dtype=np.int64) for c in dataset.charges]) if n else np.zeros(0, np.int64)
        return AtomicEnvironments(X=X, Z=Z, offsets=offsets, names=list(dataset.names), params=self.get_params())

    def fit_transform(self, dataset: MolecularDataset) -> AtomicEnvironments:  # type: ignore[override]
        return self.fit(dataset).transform(dataset)
