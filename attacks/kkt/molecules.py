"""Coulomb-matrix features for the molecular KKT experiment, and turning a recovered matrix back into
a molecule (charges from the diagonal, distances from the off-diagonal, classical MDS, RDKit bonds).

Sorted Coulomb matrix (Rupp et al. 2012; Montavon et al. 2013): M_ii = 0.5 Z_i^2.4,
M_ij = Z_i Z_j / |R_i - R_j| (Angstrom), rows/columns ordered by decreasing row norm, zero-padded to
``size`` atoms; the feature vector is the upper triangle including the diagonal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secureml.errors import DataError

ELEMENTS = np.array([1, 6, 7, 8, 9])
_DIAG = 0.5 * ELEMENTS.astype(float) ** 2.4


def coulomb_matrix(charges: np.ndarray, coords: np.ndarray, size: int) -> np.ndarray:
    """The sorted, padded (size x size) Coulomb matrix of one molecule."""
    z = np.asarray(charges, dtype=np.float64)
    r = np.asarray(coords, dtype=np.float64)
    n = len(z)
    if n > size:
        raise DataError(f"molecule has {n} atoms, more than the Coulomb-matrix size {size}")
    dist = np.linalg.norm(r[:, None, :] - r[None, :, :], axis=-1)
    np.fill_diagonal(dist, 1.0)
    if (dist < 1e-3).any():
        raise DataError("two atoms at the same position")
    m = np.outer(z, z) / dist
    np.fill_diagonal(m, 0.5 * z ** 2.4)
    order = np.argsort(-np.linalg.norm(m, axis=1), kind="stable")
    out = np.zeros((size, size))
    out[:n, :n] = m[np.ix_(order, order)]
    return out


def cm_features(charges: list[np.ndarray], coords: list[np.ndarray], size: int | None = None) -> np.ndarray:
    """Upper-triangle sorted Coulomb-matrix vectors (n_molecules, size (size + 1) / 2)."""
    size = size or max(len(z) for z in charges)
    iu = np.triu_indices(size)
    return np.stack([coulomb_matrix(z, r, size)[iu] for z, r in zip(charges, coords)])


def vector_to_matrix(v: np.ndarray, size: int) -> np.ndarray:
    """Inverse of the upper-triangle flattening (symmetric matrix)."""
    m = np.zeros((size, size))
    m[np.triu_indices(size)] = v
    return m + np.triu(m, 1).T


def size_from_length(length: int) -> int:
    size = int(round((np.sqrt(8 * length + 1) - 1) / 2))
    if size * (size + 1) // 2 != length:
        raise DataError(f"{length} is not the length of an upper-triangle Coulomb-matrix vector")
    return size


@dataclass
class DecodedMolecule:
    """What could be read back from a (recovered) Coulomb matrix."""

    charges: np.ndarray
    coords: np.ndarray | None
    smiles: str | None
    valid: bool
    reason: str
    mds_stress: float = float("nan")


def decode_cm(v: np.ndarray, size: int | None = None, min_diag: float = 0.25,
              max_stress: float = 0.1) -> DecodedMolecule:
    """Turn a Coulomb-matrix vector back into a molecule where the matrix is physically valid.

    1. charges: each diagonal entry snaps to the nearest of 0.5 Z^2.4 for Z in {H, C, N, O, F} (in log
       space); entries below ``min_diag`` are padding (no atom).
    2. distances r_ij = Z_i Z_j / M_ij; non-positive or tiny (< 0.5 A) off-diagonals are invalid.
    3. classical MDS to 3-D; valid if the discarded eigenvalues carry < ``max_stress`` of the spectrum.
    4. RDKit ``rdDetermineBonds.DetermineBonds`` (charge 0, then Hueckel) gives bonds and a SMILES.
    """
    size = size or size_from_length(len(v))
    m = vector_to_matrix(np.asarray(v, dtype=np.float64), size)
    diag = np.diag(m)
    present = diag > min_diag
    if present.sum() < 2:
        return DecodedMolecule(np.zeros(0, int), None, None, False, "fewer than 2 atoms")
    dz = diag[present]
    z = ELEMENTS[np.abs(np.log(dz)[:, None] - np.log(_DIAG)[None, :]).argmin(1)]
    mm = m[np.ix_(present, present)]
    off = mm[~np.eye(len(z), dtype=bool)]
    if (off <= 0).any():
        return DecodedMolecule(z, None, None, False, "non-positive off-diagonal entry")
    dist = np.outer(z, z).astype(float) / np.where(np.eye(len(z), dtype=bool), 1.0, mm)
    np.fill_diagonal(dist, 0.0)
    dist = 0.5 * (dist + dist.T)
    if dist[~np.eye(len(z), dtype=bool)].min() < 0.5:
        return DecodedMolecule(z, None, None, False, "atoms closer than 0.5 A")
    n = len(z)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (dist ** 2) @ j
    w, u = np.linalg.eigh(b)
    w, u = w[::-1], u[:, ::-1]
    stress = float(np.abs(w[3:]).sum() / max(np.abs(w).sum(), 1e-12))
    xyz = u[:, :3] * np.sqrt(np.maximum(w[:3], 0.0))
    if stress > max_stress:
        return DecodedMolecule(z, xyz, None, False, f"not embeddable in 3-D (stress {stress:.2f})", stress)
    smi = xyz_to_smiles(z, xyz)
    if smi is None:
        return DecodedMolecule(z, xyz, None, False, "RDKit could not assign bonds", stress)
    return DecodedMolecule(z, xyz, smi, True, "ok", stress)


def best_scale(z: np.ndarray, mean: np.ndarray, std: np.ndarray, size: int,
               scales: np.ndarray | None = None) -> float:
    """Attacker-side fix of the KKT scale ambiguity for a standardised CM candidate ``z``.

    A bias-free network cannot tell ``z`` from ``a * z`` (lambda absorbs ``a``), so pick the ``a`` whose
    un-standardised diagonal lies closest to physically possible entries (0 for padding or
    0.5 Z^2.4 for H, C, N, O, F). Uses no training data.
    """
    scales = np.geomspace(0.2, 5.0, 81) if scales is None else scales
    diag_idx = np.flatnonzero(np.triu(np.ones((size, size), bool))[np.triu_indices(size)] &
                              (np.triu_indices(size)[0] == np.triu_indices(size)[1]))
    d = scales[:, None] * z[diag_idx][None, :] * std[diag_idx] + mean[diag_idx]
    allowed = np.concatenate([[0.0], _DIAG])
    err = np.abs(d[:, :, None] - allowed[None, None, :]) / np.maximum(allowed, 1.0)[None, None, :]
    return float(scales[err.min(2).sum(1).argmin()])


def xyz_to_smiles(charges: np.ndarray, coords: np.ndarray) -> str | None:
    """Canonical SMILES without stereo from elements and coordinates, or None if bonds fail."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    sym = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
    block = f"{len(charges)}\n\n" + "\n".join(
        f"{sym[int(q)]} {x:.6f} {y:.6f} {zz:.6f}" for q, (x, y, zz) in zip(charges, coords))
    for hueckel in (False, True):
        try:
            mol = Chem.MolFromXYZBlock(block)
            if mol is None:
                return None
            rdDetermineBonds.DetermineBonds(mol, charge=0, useHueckel=hueckel)
            # Stereo first: RDKit keeps hydrogens that define a double bond's stereo.
            Chem.RemoveStereochemistry(mol)
            mol = Chem.RemoveHs(mol)
            return Chem.MolToSmiles(Chem.MolFromSmiles(Chem.MolToSmiles(mol)))
        except Exception:  # RDKit raises plain ValueError/RuntimeError for unassignable bonding
            continue
    return None


def canonical_smiles(smiles: str) -> str | None:
    """Canonical SMILES without stereo, for comparing a decoded molecule with a training molecule."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol)


def fallback_molecules() -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Small neutral closed-shell molecules (H, C, N, O, F only) from ASE's G2 collection.

    Lets the tests check the Coulomb-matrix code without the embedded QM9 data.
    """
    from ase.build import molecule
    from ase.collections import g2

    zs, rs, names = [], [], []
    for name in g2.names:
        atoms = molecule(name)
        z = atoms.get_atomic_numbers()
        if not set(z.tolist()) <= set(ELEMENTS.tolist()) or len(z) < 3 or atoms.get_initial_magnetic_moments().any():
            continue
        zs.append(z.astype(int))
        rs.append(atoms.get_positions())
        names.append(name)
    return zs, rs, names
