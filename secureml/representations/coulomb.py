"""Coulomb matrix (Rupp et al., PRL 108, 058301, 2012), computed with numpy.

    C_ii = 0.5 * Z_i^2.4,    C_ij = Z_i * Z_j / |R_i - R_j|   (i != j)

Units: dscribe uses the coordinates as given, so with secureml's Angstrom coordinates the
off-diagonal entries are in e^2/Angstrom (no conversion to Bohr). This is also what the qml /
qmllib Coulomb matrices use, so kernel widths from their papers and test suites (e.g. the QM7
Laplacian sigma = 10^4.2) carry over unchanged; with Bohr units the off-diagonal entries would
shrink by a factor 0.529.

Variants:
  * ``"sorted"``: rows and columns ordered by descending row L2 norm (as dscribe ``sorted_l2`` and
    qmllib ``sorting="row-norm"``), zero-padded to ``size`` atoms, upper triangle kept:
    size*(size+1)/2 features (435 for size 29, all of QM9; 351 for size 26; 276 for size 23, QM7).
    Tie-break (documented, deterministic, independent of the input atom order): rows whose norms
    agree to 1e-12 of the molecule's largest norm (float noise) are ordered by descending nuclear
    charge, then by their entries sorted in descending order, compared lexicographically
    (rounded to 1e-9). Atoms still tied after that (symmetry-equivalent ones: the two ends of
    HC#C-C#CH) are placed position by position: at each position, the tied atom whose entries
    towards the atoms already placed (in their order) are lexicographically largest; where several
    remain equal the choices are all tried (up to 64 orders) and the one giving the
    lexicographically largest matrix wins (:func:`_resolve_ties`). dscribe keeps tied atoms in
    input order and qmllib orders them otherwise, so two QM7 molecules with exactly tied norms
    (0023 HC#C-C#CH, 0627 NC-C#C-CN) got different matrices from the two libraries, which moved
    predictions of models containing them by up to 24 kcal/mol; here every input order of a
    molecule gives one matrix (before the placement step, the 720 orders of either gave 8).
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
# Molecules per vectorised batch: bounds the temporary (chunk, size, size) float64 arrays.
_CHUNK = 1024
# Relative tolerance under which two row norms count as tied (see the module docstring).
TIE_RTOL = 1e-12


def _resolve_ties(C: np.ndarray, order: np.ndarray, keys: np.ndarray, max_orders: int = 64) -> np.ndarray:
    """Order atoms whose sort keys are all equal (the module docstring's tie-break), for one molecule.

    ``C``: its (size, size) matrix; ``order``: the atoms sorted by the keys; ``keys``: (n_keys, size)
    the keys of each atom. Groups of equal keys are filled position by position with the atom whose
    (rounded) entries towards the atoms placed so far are largest; remaining equalities branch, and
    of the complete orders (at most ``max_orders`` branchings) the lexicographically largest matrix wins.
    """
    R = np.round(C, 9)
    n_atoms = int(np.count_nonzero(keys[-1]))  # padding (zero norm) sorts last and stays there
    tail = [int(a) for a in order[n_atoms:]]
    order = order[:n_atoms]
    key_of = [tuple(keys[:, a]) for a in order]
    groups: list[list[int]] = []
    for pos, a in enumerate(order):
        if pos and key_of[pos] == key_of[pos - 1]:
            groups[-1].append(int(a))
        else:
            groups.append([int(a)])
    if all(len(g) == 1 for g in groups):
        return np.asarray([*order, *tail], dtype=order.dtype)
    budget = [max_orders]
    done: list[list[int]] = []

    def fill(prefix: list[int], left: list[list[int]]) -> None:
        while left and len(left[0]) == 1:
            prefix, left = prefix + left[0], left[1:]
        if not left:
            done.append(prefix)
            return
        group = left[0]
        towards = {a: tuple(R[a, prefix]) for a in group}
        best = max(towards.values())
        cands = [a for a in group if towards[a] == best]
        if len(cands) > 1 and budget[0] <= 0:
            cands = cands[:1]  # search cap reached: input order decides (documented)
        for a in cands:
            if len(cands) > 1:
                budget[0] -= 1
            rest = [b for b in group if b != a]
            fill(prefix + [a], ([rest] if rest else []) + left[1:])

    fill([], groups)
    iu = np.triu_indices(len(order))

    def flat(o: list[int]) -> tuple:
        return tuple(R[np.ix_(o, o)][iu])

    return np.asarray([*max(done, key=flat), *tail], dtype=order.dtype)


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
        return self

    # -- features ------------------------------------------------------------------------------
    def _check(self, charges: Any, coordinates: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
        z, r = check_molecule(charges, coordinates, label)
        assert self.size is not None
        if z.size > self.size:
            raise DataError(
                f"{label} has {z.size} atoms; this model's Coulomb matrix holds at most {self.size} "
                f"(train a model with --cm-size {z.size} or more to predict molecules this large)"
            )
        if self.variant == "canonical":
            order = canonical_atom_order(z, r)
            z, r = z[order], r[order]
        return z, r

    def _matrices(self, mols: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, size, size) padded Coulomb matrices in the input atom order (vectorised)."""
        assert self.size is not None
        n, s = len(mols), self.size
        Z = np.zeros((n, s))
        R = np.zeros((n, s, 3))
        for i, (z, r) in enumerate(mols):
            Z[i, : len(z)] = z
            R[i, : len(z)] = r
        # squared distances coordinate by coordinate (no (n, s, s, 3) temporary)
        D2 = np.zeros((n, s, s))
        for k in range(3):
            diff = R[:, :, None, k] - R[:, None, :, k]
            D2 += diff * diff
        idx = np.arange(s)
        # zero only on the diagonal and between padding atoms (real atoms are >= 0.1 A apart),
        # where the product of charges is replaced or zero anyway: avoid 0/0
        D2[D2 == 0.0] = 1.0
        C = Z[:, :, None] * Z[:, None, :]  # 0 wherever a padding atom is involved
        C /= np.sqrt(D2, out=D2)
        C[:, idx, idx] = 0.5 * Z**2.4
        return C

    def _sorted(self, C: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Rows/columns by descending row norm; ties as the module docstring says."""
        norms = np.linalg.norm(C, axis=2)
        scale = np.maximum(norms.max(axis=1, keepdims=True), 1e-300)
        key_norm = np.round(norms / scale / TIE_RTOL)  # equal for norms tied to TIE_RTOL
        order = np.argsort(-key_norm, axis=1, kind="stable")
        ks = np.take_along_axis(key_norm, order, axis=1)
        tied = np.flatnonzero(((ks[:, 1:] == ks[:, :-1]) & (ks[:, 1:] > 0)).any(axis=1))
        if tied.size:
            # only molecules with tied norms need the full key (np.lexsort: last key is primary)
            rows = np.round(-np.sort(-C[tied], axis=2), 9)  # each row's entries, descending
            keys = np.concatenate([-np.moveaxis(rows[:, :, ::-1], 2, 0), -Z[tied][None], -key_norm[tied][None]], axis=0)
            order[tied] = np.lexsort(keys, axis=-1)
            for j, m in enumerate(tied):
                order[m] = _resolve_ties(C[m], order[m], keys[:, j])
        C = np.take_along_axis(C, order[:, :, None], axis=1)
        return np.take_along_axis(C, order[:, None, :], axis=2)

    def _features(self, mols: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        assert self.size is not None
        C = self._matrices(mols)
        if self.variant == "eigenspectrum":
            ev = np.linalg.eigvalsh(C)
            # by descending absolute value; +x before -x for a deterministic order
            order = np.lexsort((-ev, -np.abs(ev)), axis=-1)
            out = np.take_along_axis(ev, order, axis=1)
        else:
            if self.variant == "sorted":
                Z = np.zeros((len(mols), self.size))
                for i, (z, _) in enumerate(mols):
                    Z[i, : len(z)] = z
                C = self._sorted(C, Z)
            iu = np.triu_indices(self.size)
            out = np.ascontiguousarray(C[:, iu[0], iu[1]], dtype=np.float64)
        if self.grid_bits is not None:
            scale = float(1 << self.grid_bits)
            out = np.rint(out * scale) / scale
        return out

    def transform(self, dataset: MolecularDataset) -> np.ndarray:
        """Features of every molecule, shape (n_molecules, n_features), float64."""
        n_feat = self.n_features  # raises if unfitted with size=None
        out = np.empty((len(dataset), n_feat), dtype=np.float64)
        names = dataset.names if len(dataset.names) == len(dataset) else None
        for start in range(0, len(dataset), _CHUNK):
            stop = min(start + _CHUNK, len(dataset))
            mols = [
                self._check(dataset.charges[i], dataset.coordinates[i],
                            f"molecule {i}" + (f" ({names[i]})" if names else ""))
                for i in range(start, stop)
            ]
            out[start:stop] = self._features(mols)
        return out

    def transform_one(self, charges: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
        """Features of one molecule, shape (n_features,)."""
        self.n_features  # noqa: B018 -- raises a clear error if the size is still unknown
        return self._features([self._check(charges, coordinates, "molecule")])[0]

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
