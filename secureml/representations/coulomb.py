"""Coulomb matrix (Rupp et al., PRL 108, 058301, 2012) via dscribe.

    C_ii = 0.5 * Z_i^2.4,    C_ij = Z_i * Z_j / |R_i - R_j|   (i != j)

Units: dscribe uses the coordinates as given, so with secureml's Angstrom coordinates the
off-diagonal entries are in e^2/Angstrom (no conversion to Bohr). This is also what the qml /
qmllib Coulomb matrices use, so kernel widths from their papers and test suites (e.g. the QM7
Laplacian sigma = 10^4.2) carry over unchanged; with Bohr units the off-diagonal entries would
shrink by a factor 0.529.

Variants:
  * ``"sorted"``: rows and columns ordered by descending row L2 norm (dscribe ``sorted_l2``),
    zero-padded to ``size`` atoms, upper triangle kept: size*(size+1)/2 features
    (435 for size 29, all of QM9; 351 for size 26; 276 for size 23, QM7).
  * ``"unsorted"``: same without sorting (atom order as given; not permutation invariant).
  * ``"canonical"``: unsorted, after putting the atoms in a canonical chemical order derived from
    the geometry (RDKit canonical ranks of the heavy atoms, hydrogens after the atom they are bonded
    to; :mod:`secureml.representations.canonical_order`): permutation invariant, and close to QM9's
    own order, which learns much better than the row-norm sort (docs/models.md).
  * ``"eigenspectrum"``: the ``size`` eigenvalues sorted by descending absolute value.

The matrix is symmetric, so the upper triangle carries all of it; dropping the lower triangle
halves the width, and the width is what two-party protocols pay for per training point.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError, ModelError
from secureml.representations.base import Representation, check_molecule, register_representation
from secureml.representations.canonical_order import canonical_atom_order

_PERMUTATIONS = {"sorted": "sorted_l2", "unsorted": "none", "eigenspectrum": "eigenspectrum", "canonical": "none"}
# Molecules per dscribe call: bounds the temporary (chunk, size*size) float64 array.
_CHUNK = 4096


@register_representation
class CoulombMatrix(Representation):
    """Zero-padded Coulomb matrix; see the module docstring for units and variants.

    Args:
        size: number of atoms the matrix is padded to (29 covers every QM9 molecule). ``None``
            means "the largest molecule seen by :meth:`fit`".
        variant: ``"sorted"`` (default), ``"unsorted"``, ``"canonical"`` or ``"eigenspectrum"``.
        grid_bits: if set, round every entry to a multiple of 2^-grid_bits. A model meant for
            double-blind serving uses the protocol's fixed-point grid here, so that training data,
            plaintext queries and encrypted queries see exactly the same numbers (entries of up to
            ~100 change by < 2^-17, far below any chemical significance).
    """

    name = "coulomb_matrix"

    def __init__(self, size: int | None = 29, variant: str = "sorted", grid_bits: int | None = None) -> None:
        if variant not in _PERMUTATIONS:
            raise ModelError(f"unknown Coulomb-matrix variant {variant!r}; use one of {sorted(_PERMUTATIONS)}")
        if size is not None and (int(size) != size or size < 1):
            raise ModelError(f"Coulomb-matrix size must be a positive integer, got {size!r}")
        self.size = None if size is None else int(size)
        self.variant = variant
        if grid_bits is not None and not (0 <= int(grid_bits) <= 30):
            raise ModelError(f"grid_bits must be in 0..30, got {grid_bits!r}")
        self.grid_bits = None if grid_bits is None else int(grid_bits)
        self._descriptor: Any = None

    # -- settings ------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        params = {"name": self.name, "size": self.size, "variant": self.variant}
        if self.grid_bits is not None:
            params["grid_bits"] = self.grid_bits
        return params

    @property
    def n_features(self) -> int:
        if self.size is None:
            raise ModelError("CoulombMatrix(size=None) has no width until fit() has seen the data")
        if self.variant == "eigenspectrum":
            return self.size
        return self.size * (self.size + 1) // 2

    def fit(self, dataset: MolecularDataset) -> "CoulombMatrix":
        """With ``size=None``, take the size of the largest molecule; otherwise check nothing."""
        if self.size is None:
            if len(dataset) == 0:
                raise DataError("cannot fit a Coulomb-matrix size on an empty data set")
            self.size = max(len(z) for z in dataset.charges)
            self._descriptor = None
        return self

    # -- features ------------------------------------------------------------------------------
    def _dscribe(self) -> Any:
        if self._descriptor is None:
            from dscribe.descriptors import CoulombMatrix as _DscribeCM

            self.n_features  # noqa: B018 -- raises a clear error if the size is still unknown
            self._descriptor = _DscribeCM(n_atoms_max=self.size, permutation=_PERMUTATIONS[self.variant])
        return self._descriptor

    def _atoms(self, charges: Any, coordinates: Any, label: str) -> Any:
        from ase import Atoms

        z, r = check_molecule(charges, coordinates, label)
        assert self.size is not None
        if z.size > self.size:
            raise DataError(
                f"{label} has {z.size} atoms, more than the Coulomb-matrix size {self.size}; "
                f"use a representation with a larger size (or size=None to fit it)"
            )
        if self.variant == "canonical":
            order = canonical_atom_order(z, r)
            z, r = z[order], r[order]
        return Atoms(numbers=z, positions=r)

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        """dscribe output (n, size*size) or (n, size) -> our (n, n_features) layout."""
        assert self.size is not None
        if self.variant == "eigenspectrum":
            out = np.ascontiguousarray(raw, dtype=np.float64)
        else:
            iu = np.triu_indices(self.size)
            mats = raw.reshape(raw.shape[0], self.size, self.size)
            out = np.ascontiguousarray(mats[:, iu[0], iu[1]], dtype=np.float64)
        if self.grid_bits is not None:
            scale = float(1 << self.grid_bits)
            out = np.rint(out * scale) / scale
        return out

    def transform(self, dataset: MolecularDataset) -> np.ndarray:
        """Features of every molecule, shape (n_molecules, n_features), float64."""
        n_feat = self.n_features  # raises if unfitted with size=None
        out = np.empty((len(dataset), n_feat), dtype=np.float64)
        names = dataset.names if len(dataset.names) == len(dataset) else None
        desc = self._dscribe()
        for start in range(0, len(dataset), _CHUNK):
            stop = min(start + _CHUNK, len(dataset))
            systems = [
                self._atoms(
                    dataset.charges[i],
                    dataset.coordinates[i],
                    f"molecule {i}" + (f" ({names[i]})" if names else ""),
                )
                for i in range(start, stop)
            ]
            raw = np.asarray(desc.create(systems, n_jobs=1))
            out[start:stop] = self._finish(raw.reshape(stop - start, -1))
        return out

    def transform_one(self, charges: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
        """Features of one molecule, shape (n_features,)."""
        self.n_features  # noqa: B018 -- raises a clear error if the size is still unknown
        raw = np.asarray(self._dscribe().create(self._atoms(charges, coordinates, "molecule")))
        return self._finish(raw.reshape(1, -1))[0]

    def to_matrix(self, features: np.ndarray) -> np.ndarray:
        """Rebuild the symmetric (size, size) matrices from upper-triangle features."""
        if self.variant == "eigenspectrum":
            raise ModelError("an eigenspectrum cannot be turned back into a matrix")
        assert self.size is not None
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != self.n_features:
            raise ModelError(f"expected {self.n_features} features, got {f.shape[1]}")
        m = np.zeros((f.shape[0], self.size, self.size))
        iu = np.triu_indices(self.size)
        m[:, iu[0], iu[1]] = f
        m[:, iu[1], iu[0]] = f
        return m if np.ndim(features) == 2 else m[0]

    def __getstate__(self) -> dict[str, Any]:
        # The dscribe object wraps a C++ extension; rebuild it lazily after unpickling/cloning.
        state = dict(self.__dict__)
        state["_descriptor"] = None
        return state
