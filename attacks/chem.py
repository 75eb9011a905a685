"""From Coulomb matrices back to molecules: charges, distances, 3D geometry, bonds, SMILES.

A Coulomb matrix (Rupp et al. 2012) in secureml's convention (dscribe, Angstrom coordinates, no
conversion to Bohr) is

    C_ii = 0.5 * Z_i ** 2.4,        C_ij = Z_i * Z_j / r_ij   (i != j, r in Angstrom),

zero-padded to ``size`` atoms. The ``"sorted"`` variant orders rows/columns by descending row L2
norm; ``"unsorted"`` keeps the input atom order. Features are the upper triangle in row-major
``numpy.triu_indices(size)`` order. Both are invertible: every charge comes from its diagonal entry
and every interatomic distance from an off-diagonal entry, so the full distance matrix, and with it
the geometry up to rotation, translation and *reflection*, follows by classical multidimensional
scaling (Torgerson 1952). Reflection means chirality cannot be recovered, which is why SMILES are
compared with stereochemistry stripped. The ``"eigenspectrum"`` variant keeps only eigenvalues and
is not inverted here.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from scipy.optimize import least_squares
from scipy.optimize import linear_sum_assignment

from secureml.errors import ModelError
from secureml.data.formats import parse_element, symbol

# Largest nuclear charge a diagonal entry may decode to (oganesson). Which elements a model can
# contain is not fixed here: it comes from the model file (see :func:`model_elements`), so QM7's
# sulfur or any other element the representation supports decodes like H, C, N, O, F.
MAX_Z = 118


def elements_from_diagonals(features: np.ndarray, size: int | None = None, z_tol: float = 0.08) -> tuple[int, ...]:
    """The nuclear charges present in Coulomb-matrix rows: Z = (2 C_ii)^(1/2.4) rounded.

    Only diagonals within ``z_tol`` of an integer count; off-integer ones belong to no element and
    are reported per molecule by :func:`invert_coulomb_matrix`.
    """
    mats = features_to_matrices(features, size)
    diag = np.diagonal(mats, axis1=1, axis2=2).ravel()
    zf = (2.0 * diag[diag > 1e-6]) ** (1.0 / 2.4)
    z = np.rint(zf)
    ok = (np.abs(zf - z) <= z_tol) & (z >= 1) & (z <= MAX_Z)
    return tuple(int(v) for v in np.unique(z[ok]))


def model_elements(model: object) -> tuple[int, ...]:
    """The element set of a Coulomb-matrix model file.

    A model fitted with the dressed-atom baseline records one energy per element in its provenance
    (the training set's elements exactly); otherwise the charges decoded from the stored training
    rows' diagonals are the element set.
    """
    prov = getattr(model, "provenance", None) or {}
    energies = prov.get("element_energies") if isinstance(prov, dict) else None
    recorded: set[int] = set()
    if isinstance(energies, dict) and energies:
        recorded = {parse_element(str(k)) for k in energies}
    est = getattr(model, "estimator", model)
    X = getattr(est, "X_fit_", None)
    derived = set(elements_from_diagonals(X)) if X is not None else set()
    return tuple(sorted(recorded | derived))


def cm_size_from_features(n_features: int) -> int:
    """The padding size s with s (s + 1) / 2 == n_features (upper-triangle layout)."""
    s = int(round((np.sqrt(8 * n_features + 1) - 1) / 2))
    if s * (s + 1) // 2 != n_features:
        raise ModelError(f"{n_features} features is not the upper triangle of a square matrix")
    return s


def features_to_matrices(features: np.ndarray, size: int | None = None) -> np.ndarray:
    """Upper-triangle feature rows (n, s(s+1)/2) -> symmetric matrices (n, s, s)."""
    f = np.atleast_2d(np.asarray(features, dtype=np.float64))
    s = size or cm_size_from_features(f.shape[1])
    if f.shape[1] != s * (s + 1) // 2:
        raise ModelError(f"expected {s * (s + 1) // 2} features for size {s}, got {f.shape[1]}")
    m = np.zeros((f.shape[0], s, s))
    iu = np.triu_indices(s)
    m[:, iu[0], iu[1]] = f
    m[:, iu[1], iu[0]] = f
    return m


def coulomb_matrix(charges: np.ndarray, coords: np.ndarray, size: int, variant: str = "sorted"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Numpy Coulomb matrix features of one molecule and the atom order used.

    Returns (features (s(s+1)/2,), order) where ``order[k]`` is the input atom placed in row k.
    Used to get the ground-truth atom correspondence when scoring a reconstruction, and as an
    independent check of the representation code.
    """
    z = np.asarray(charges, dtype=np.float64)
    r = np.asarray(coords, dtype=np.float64)
    n = z.size
    if n > size:
        raise ModelError(f"molecule has {n} atoms, more than the matrix size {size}")
    d = np.linalg.norm(r[:, None, :] - r[None, :, :], axis=-1)
    np.fill_diagonal(d, 1.0)
    m = np.outer(z, z) / d
    np.fill_diagonal(m, 0.5 * z**2.4)
    if variant == "sorted":
        order = np.argsort(-np.linalg.norm(m, axis=1), kind="stable")
    elif variant == "unsorted":
        order = np.arange(n)
    else:
        raise ModelError(f"cannot build the {variant!r} Coulomb matrix here")
    full = np.zeros((size, size))
    full[:n, :n] = m[np.ix_(order, order)]
    iu = np.triu_indices(size)
    return full[iu], order


@dataclass
class Reconstruction:
    """One molecule recovered from a Coulomb matrix (``valid`` False if it is not a molecule's CM)."""

    charges: np.ndarray
    coords: np.ndarray
    stress: float  # RMS relative error of the rebuilt distances (0 for an exact CM)
    valid: bool
    reason: str = ""


def classical_mds(dist: np.ndarray, dim: int = 3) -> np.ndarray:
    """Coordinates (n, dim) whose pairwise distances best match ``dist`` (Torgerson scaling)."""
    n = dist.shape[0]
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (dist**2) @ j
    w, v = np.linalg.eigh(b)
    w, v = w[::-1][:dim], v[:, ::-1][:, :dim]
    x = v * np.sqrt(np.maximum(w, 0.0))
    if x.shape[1] < dim:  # fewer than dim+1 atoms: pad with zero columns
        x = np.hstack([x, np.zeros((n, dim - x.shape[1]))])
    return x


def _refine(x0: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Least-squares polish of coordinates against relative distance errors (noisy CMs only)."""
    n = x0.shape[0]
    iu = np.triu_indices(n, 1)
    target = dist[iu]

    def resid(flat: np.ndarray) -> np.ndarray:
        x = flat.reshape(n, 3)
        return (np.linalg.norm(x[iu[0]] - x[iu[1]], axis=1) - target) / target

    return least_squares(resid, x0.ravel(), method="lm" if 3 * n <= len(target) else "trf").x.reshape(n, 3)


def invert_coulomb_matrix(matrix: np.ndarray, z_tol: float = 0.08, refine: bool = True,
                          elements: Sequence[int] | None = None) -> Reconstruction:
    """Charges and 3D coordinates from one (padded) Coulomb matrix.

    Charges: Z = (2 C_ii)^(1/2.4), rounded (``z_tol`` is how far from an integer it may be);
    ``elements``: the charges allowed (the model's element set); None allows any Z in 1..118.
    Distances: r_ij = Z_i Z_j / C_ij. Geometry: classical MDS, then least-squares refinement when the
    distances are not exactly Euclidean (noisy or approximately reconstructed matrices).
    """
    m = np.asarray(matrix, dtype=np.float64)
    diag = np.diag(m)
    atoms = np.flatnonzero(diag > 1e-6)
    if atoms.size == 0:
        return Reconstruction(np.zeros(0, int), np.zeros((0, 3)), np.inf, False, "empty matrix")
    zf = (2.0 * diag[atoms]) ** (1.0 / 2.4)
    z = np.rint(zf).astype(int)
    off_int = np.abs(zf - z) > z_tol
    if off_int.any():
        k = int(np.flatnonzero(off_int)[0])
        return Reconstruction(z, np.zeros((atoms.size, 3)), np.inf, False,
                              f"diagonal entry {diag[atoms][k]:.4g} is not 0.5 Z^2.4 for an integer Z "
                              f"(Z = {zf[k]:.3f})")
    allowed = np.arange(1, MAX_Z + 1) if elements is None else np.asarray(list(elements), dtype=int)
    bad = ~np.isin(z, allowed)
    if bad.any():
        return Reconstruction(z, np.zeros((atoms.size, 3)), np.inf, False,
                              f"charge Z = {int(z[bad][0])} is not in the model's element set "
                              f"{sorted(int(v) for v in allowed)}")
    sub = m[np.ix_(atoms, atoms)]
    off = ~np.eye(atoms.size, dtype=bool)
    if atoms.size > 1 and np.any(sub[off] <= 1e-9):
        return Reconstruction(z, np.zeros((atoms.size, 3)), np.inf, False, "non-positive off-diagonal entry")
    dist = np.zeros_like(sub)
    dist[off] = (np.outer(z, z)[off]) / sub[off]
    x = classical_mds(dist)
    stress = _stress(x, dist)
    if refine and atoms.size > 2 and stress > 1e-6:
        x = _refine(x, dist)
        stress = _stress(x, dist)
    return Reconstruction(z, x - x.mean(0), stress, True)


def _stress(x: np.ndarray, dist: np.ndarray) -> float:
    n = x.shape[0]
    if n < 2:
        return 0.0
    iu = np.triu_indices(n, 1)
    got = np.linalg.norm(x[iu[0]] - x[iu[1]], axis=1)
    return float(np.sqrt(np.mean(((got - dist[iu]) / dist[iu]) ** 2)))


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence C-level stdout/stderr (RDKit's Hueckel code prints warnings straight to fd 1)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def canonical_smiles(smiles: str) -> str:
    """Canonical SMILES without stereochemistry ("" if RDKit cannot parse it)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol)


def molecule_smiles(charges: np.ndarray, coords: np.ndarray, charge: int = 0, orders: int = 4) -> str:
    """Canonical stereo-free SMILES of the molecule whose atoms are (Z, xyz), via rdDetermineBonds.

    Connectivity from distances, then bond orders with the extended-Hueckel variant (which rebuilds
    every QM9 molecule tried here; the plain one misses ~1% of them). Returns "" on failure.
    RDKit's bond-order assignment depends on the atom order: for some sulfur heterocycles of QM7
    one order gives the neutral structure and another a charge-separated resonance form
    ([O-]...[S+]). A Coulomb matrix fixes its own atom order (sorted by row norm), so the result
    would depend on how the matrix was sorted; when the first structure carries formal charges,
    up to ``orders`` - 1 more atom orders are tried and the one with the fewest charged atoms wins.
    Call inside :func:`quiet_stdout` when doing many: the Hueckel code prints warnings.
    """
    z = np.asarray(charges)
    x = np.asarray(coords, dtype=float)
    best, best_charged = "", None
    rng = np.random.default_rng(0)
    perms = [np.arange(len(z)), np.arange(len(z))[::-1]] + [rng.permutation(len(z)) for _ in range(max(orders - 2, 0))]
    for perm in perms[:max(orders, 1)]:
        smi, charged = _determine_bonds(z[perm], x[perm], charge)
        if smi and (best_charged is None or charged < best_charged):
            best, best_charged = smi, charged
        if best_charged == 0:
            break
    return best


def _determine_bonds(charges: np.ndarray, coords: np.ndarray, charge: int) -> tuple[str, int]:
    """(SMILES, number of atoms with a formal charge) for one atom order; ("", 0) on failure."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.RWMol()
    for a in charges:
        mol.AddAtom(Chem.Atom(int(a)))
    conf = Chem.Conformer(len(charges))
    for i, p in enumerate(np.asarray(coords, dtype=float)):
        conf.SetAtomPosition(i, p.tolist())
    mol.AddConformer(conf, assignId=True)
    mol = mol.GetMol()
    for hueckel in (True, False):
        try:
            trial = Chem.Mol(mol)
            rdDetermineBonds.DetermineBonds(trial, charge=charge, useHueckel=hueckel)
            Chem.RemoveStereochemistry(trial)
            charged = sum(1 for a in trial.GetAtoms() if a.GetFormalCharge() != 0)
            return Chem.MolToSmiles(Chem.RemoveHs(trial)), charged
        except Exception:  # noqa: BLE001 -- RDKit raises several types for unbondable geometries
            continue
    return "", 0


def kabsch_rmsd(p: np.ndarray, q: np.ndarray, allow_reflection: bool = True) -> float:
    """RMSD between corresponding point sets after optimal superposition (Kabsch 1976).

    With ``allow_reflection`` the best improper rotation is allowed too: a Coulomb matrix does not
    distinguish mirror images, so scoring a reconstruction must not either.
    """
    p = p - p.mean(0)
    q = q - q.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    best = np.inf
    for flip in ((1.0, -1.0) if allow_reflection else (None,)):
        if flip is None:
            s = np.sign(np.linalg.det(u @ vt)) or 1.0
        else:
            s = flip
        r = u @ np.diag([1.0, 1.0, s]) @ vt
        best = min(best, float(np.sqrt(np.mean(np.sum((p @ r - q) ** 2, axis=1)))))
    return best


def matched_rmsd(z_rec: np.ndarray, x_rec: np.ndarray, z_true: np.ndarray, x_true: np.ndarray,
                 order: np.ndarray | None = None, iterations: int = 3) -> float:
    """Geometry RMSD (Angstrom) with the right atom correspondence; inf if the formulas differ.

    Starts from ``order`` (true atom of each reconstructed row, e.g. the sorted-CM order) and then
    re-assigns atoms of the same element by the Hungarian method after each superposition, so ties
    in the CM row sorting (symmetry-equivalent atoms) cannot inflate the error.
    """
    if sorted(z_rec.tolist()) != sorted(np.asarray(z_true).tolist()):
        return float("inf")
    xt = np.asarray(x_true, dtype=float)
    perm = np.asarray(order) if order is not None else np.arange(len(z_true))
    if not np.array_equal(np.asarray(z_true)[perm], z_rec):
        perm = _element_assignment(z_rec, x_rec, z_true, xt)
    best = kabsch_rmsd(x_rec, xt[perm])
    for _ in range(iterations):
        aligned = _superpose(x_rec, xt[perm])
        new = _element_assignment(z_rec, aligned, z_true, xt)
        r = kabsch_rmsd(x_rec, xt[new])
        if r >= best - 1e-12:
            break
        best, perm = r, new
    return best


def _superpose(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p moved (rotation/reflection + translation) onto q."""
    pc, qc = p.mean(0), q.mean(0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    cands = [u @ np.diag([1.0, 1.0, s]) @ vt for s in (1.0, -1.0)]
    r = min(cands, key=lambda r: np.sum(((p - pc) @ r - (q - qc)) ** 2))
    return (p - pc) @ r + qc


def _element_assignment(z_rec: np.ndarray, x_rec: np.ndarray, z_true: np.ndarray, x_true: np.ndarray) -> np.ndarray:
    perm = np.empty(len(z_rec), dtype=int)
    for el in np.unique(z_rec):
        i = np.flatnonzero(z_rec == el)
        j = np.flatnonzero(np.asarray(z_true) == el)
        cost = np.linalg.norm(x_rec[i, None, :] - x_true[None, j, :], axis=-1)
        r, c = linear_sum_assignment(cost)
        perm[i[r]] = j[c]
    return perm


def formula(z: Sequence[int]) -> str:
    """Hill formula (C, H first, then alphabetical), any element, for reports."""
    counts: dict[str, int] = {}
    for a in z:
        s = symbol(int(a))
        counts[s] = counts.get(s, 0) + 1
    order = [k for k in ("C", "H") if k in counts] + sorted(k for k in counts if k not in ("C", "H"))
    return "".join(f"{k}{counts[k] if counts[k] > 1 else ''}" for k in order)
