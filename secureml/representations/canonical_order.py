"""A canonical atom order for the unsorted Coulomb matrix: permutation invariant, chemistry-aware.

QM9 lists a molecule's heavy atoms in a consistent, SMILES-like order and the hydrogens after
them; a Coulomb matrix kept in that order learns much better than the row-norm-sorted one
(docs/models.md), but it depends on how the input file orders its atoms. This module derives the
same kind of order from the geometry alone, so any permutation of the input gives the same matrix:

  1. connectivity from the coordinates (RDKit ``DetermineConnectivity``: covalent radii);
  2. heavy atoms by RDKit's canonical atom ranks (``CanonicalRankAtoms`` without tie breaking);
  3. each hydrogen after the heavy atoms, ordered by the rank of the atom it is bonded to;
  4. atoms that tie (topologically equivalent: the hydrogens of a methyl group, the carbons of
     two equivalent methyls) by descending Coulomb-matrix row norm, a geometric invariant -- RDKit's
     own tie breaking uses the input index, which would make the order depend on the input.

If connectivity cannot be determined the order falls back to descending nuclear charge, then
descending row norm -- still independent of the input order.
"""
from __future__ import annotations

import numpy as np


def _row_norms(z: np.ndarray, r: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(r[:, None, :] - r[None, :, :], axis=-1)
    np.fill_diagonal(d, 1.0)
    cm = np.outer(z, z) / d
    np.fill_diagonal(cm, 0.5 * z.astype(np.float64) ** 2.4)
    return np.linalg.norm(cm, axis=1)


def canonical_atom_order(charges: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Indices that put the atoms in canonical order (heavy atoms first, then hydrogens)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    z = np.asarray(charges, dtype=np.int64)
    r = np.asarray(coordinates, dtype=np.float64)
    if z.size <= 1:
        return np.arange(z.size)
    mol = Chem.RWMol()
    for a in z:
        mol.AddAtom(Chem.Atom(int(a)))
    conf = Chem.Conformer(int(z.size))
    for i, p in enumerate(r):
        conf.SetAtomPosition(i, [float(v) for v in p])
    mol.AddConformer(conf)
    norm = _row_norms(z, r)
    RDLogger.DisableLog("rdApp.*")
    try:
        rdDetermineBonds.DetermineConnectivity(mol)
        ranks = np.asarray(Chem.CanonicalRankAtoms(mol, breakTies=False), dtype=np.int64)
    except Exception:  # RDKit raises assorted errors on odd geometries: order by charge and norm
        return np.lexsort((-norm, -z))
    finally:
        RDLogger.EnableLog("rdApp.*")
    heavy = np.flatnonzero(z > 1)
    hyd = np.flatnonzero(z == 1)
    heavy = heavy[np.lexsort((-norm[heavy], ranks[heavy]))]
    anchor = np.array([min((ranks[n.GetIdx()] for n in mol.GetAtomWithIdx(int(i)).GetNeighbors()),
                           default=np.iinfo(np.int64).max) for i in hyd], dtype=np.int64)
    hyd = hyd[np.lexsort((-norm[hyd], anchor))]
    return np.concatenate([heavy, hyd])
