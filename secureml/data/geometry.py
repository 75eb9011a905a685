"""Geometries and GFN2-xTB labels for a user's own molecules.

``smiles_to_molecule`` embeds a SMILES with RDKit's ETKDG (explicit hydrogens), pre-relaxes it with
MMFF94 and then, by default, relaxes it with GFN2-xTB (tblite) using scipy's L-BFGS-B on the
analytic xTB gradient. ``xtb_properties`` computes GFN2-xTB energy, atomization energy, HOMO, LUMO,
gap and dipole for a geometry. Together they let a company label its own private training set,
and turn a ``--smiles`` query into the (charges, coordinates) a model needs.

Note: xTB-relaxed geometries are not the B3LYP/6-31G(2df,p) geometries QM9 was computed at; a
model trained on QM9 sees slightly shifted inputs (see docs/data.md for what that costs).
"""
from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from secureml.data.formats import symbol, validate_molecule
from secureml.data.qm9 import HARTREE_TO_EV, HARTREE_TO_KCAL_MOL
from secureml.errors import DataError

BOHR_PER_ANGSTROM = 1.0 / 0.529177210903  # CODATA 2018 Bohr radius
DEBYE_PER_AU = 2.541746473  # 1 e*Bohr in Debye
# Gaussian's default convergence threshold on the maximum force component (Hartree/Bohr).
FORCE_TOLERANCE = 4.5e-4

# Unpaired electrons of the isolated ground-state atoms (Hund's rule), for xTB atom references.
_ATOM_UNPAIRED = {1: 1, 2: 0, 3: 1, 4: 0, 5: 1, 6: 2, 7: 3, 8: 2, 9: 1, 10: 0, 11: 1, 12: 0, 13: 1, 14: 2,
                  15: 3, 16: 2, 17: 1, 18: 0, 35: 1, 53: 1}

Relax = Literal["xtb", "mmff"] | None


def _one_thread():
    """Run tblite's OpenMP code on one thread: for QM9-sized molecules extra threads only add
    synchronisation, and on a shared, busy machine they made a relaxation ~20x slower here."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _calculator(charges: np.ndarray, coords_angstrom: np.ndarray, charge: int = 0, uhf: int = 0):
    try:
        from tblite.interface import Calculator
    except ImportError:
        raise DataError("GFN2-xTB needs tblite, which is not installed (pip install 'secureml[local]'); "
                        "or build geometries without it (train --geometry mmff)") from None
    calc = Calculator("GFN2-xTB", charges, coords_angstrom * BOHR_PER_ANGSTROM, charge=float(charge), uhf=uhf)
    calc.set("verbosity", 0)
    return calc


def _singlepoint(calc, previous=None, where: str = "molecule"):
    try:
        return calc.singlepoint(previous) if previous is not None else calc.singlepoint()
    except Exception as exc:  # tblite raises its own RuntimeError subclasses on SCF failure
        raise DataError(f"{where}: GFN2-xTB calculation failed ({exc})") from None


def relax_xtb(
    charges: np.ndarray,
    coordinates: np.ndarray,
    charge: int = 0,
    uhf: int = 0,
    fmax: float = FORCE_TOLERANCE,
    max_steps: int = 500,
) -> tuple[np.ndarray, float]:
    """Relax a geometry with GFN2-xTB; returns ``(coordinates in Angstrom, energy in Hartree)``.

    L-BFGS-B on the xTB energy with its analytic gradient; converged when the largest gradient
    component is below ``fmax`` Hartree/Bohr. The wave function of the previous step seeds each
    SCF, so a step costs a few milliseconds for QM9-sized molecules.
    """
    from scipy.optimize import minimize

    z, xyz = validate_molecule(charges, coordinates)
    calc = _calculator(z, xyz, charge, uhf)
    state = {"res": None}

    def energy_and_gradient(flat_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        calc.update(positions=flat_bohr.reshape(-1, 3))
        state["res"] = _singlepoint(calc, state["res"])
        return float(state["res"].get("energy")), np.asarray(state["res"].get("gradient")).ravel()

    with _one_thread():
        if len(z) == 1:
            return xyz, energy_and_gradient((xyz * BOHR_PER_ANGSTROM).ravel())[0]
        out = minimize(
            energy_and_gradient,
            (xyz * BOHR_PER_ANGSTROM).ravel(),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": fmax, "ftol": 1e-12, "maxiter": max_steps},
        )
    if np.abs(out.jac).max() > 10 * fmax:
        raise DataError(f"GFN2-xTB relaxation did not converge (max gradient {np.abs(out.jac).max():.2g} Ha/Bohr)")
    return out.x.reshape(-1, 3) / BOHR_PER_ANGSTROM, float(out.fun)


def smiles_to_molecule(smiles: str, relax: Relax = "xtb", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3-D molecule from a SMILES: ``(nuclear charges int64 (n,), coordinates in Angstrom (n, 3))``.

    RDKit ETKDGv3 embedding with explicit hydrogens (``randomSeed=seed``), MMFF94 pre-relaxation
    (UFF where MMFF has no parameters), then GFN2-xTB relaxation when ``relax="xtb"``.
    ``relax=None`` returns the raw ETKDG conformer. The formal charge of the SMILES is passed to xTB.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # RDKit prints parse errors to stderr; we raise them instead
    if relax not in ("xtb", "mmff", None):
        raise DataError(f"relax must be 'xtb', 'mmff' or None, got {relax!r}")
    mol = Chem.MolFromSmiles(smiles) if smiles and smiles.strip() else None
    if mol is None:
        raise DataError(f"SMILES {smiles!r}: RDKit cannot parse it")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True  # the documented fallback for hard-to-embed ring systems
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise DataError(f"SMILES {smiles!r}: RDKit ETKDG could not embed a 3-D conformer")
    if relax is not None:
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        elif AllChem.UFFHasAllMoleculeParams(mol):
            AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    charges = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    coords = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
    if relax == "xtb":
        uhf = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
        coords, _ = relax_xtb(charges, coords, charge=Chem.GetFormalCharge(mol), uhf=uhf)
    return validate_molecule(charges, coords, source=f"SMILES {smiles!r}")


@functools.lru_cache(maxsize=None)
def xtb_atom_energy(z: int) -> float:
    """GFN2-xTB energy (Hartree) of the isolated atom ``z`` in its Hund's-rule spin state."""
    if z not in _ATOM_UNPAIRED:
        raise DataError(f"no xTB atom reference for element {symbol(z)} (have {sorted(_ATOM_UNPAIRED)})")
    with _one_thread():
        calc = _calculator(np.array([z]), np.zeros((1, 3)), 0, _ATOM_UNPAIRED[z])
        return float(_singlepoint(calc, where=f"atom {symbol(z)}").get("energy"))


def xtb_properties(charges: np.ndarray, coordinates: np.ndarray, charge: int = 0, uhf: int = 0) -> dict[str, float]:
    """GFN2-xTB single point: ``energy`` (Hartree), ``atomization`` (kcal/mol, energy minus the
    isolated atoms' xTB energies), ``homo``, ``lumo``, ``gap`` (eV) and ``dipole`` (Debye)."""
    z, xyz = validate_molecule(charges, coordinates)
    with _one_thread():
        res = _singlepoint(_calculator(z, xyz, charge, uhf))
    energy = float(res.get("energy"))
    eps = np.asarray(res.get("orbital-energies")).ravel()
    occ = np.asarray(res.get("orbital-occupations")).ravel()
    # Occupations run 0..2 (0..1 per spin channel when spin-polarised); 0.5 separates filled from empty.
    homo = float(eps[occ > 0.5].max()) if (occ > 0.5).any() else float("nan")
    lumo = float(eps[occ < 0.5].min()) if (occ < 0.5).any() else float("nan")
    atoms = sum(xtb_atom_energy(int(a)) for a in z)
    return {
        "energy": energy,
        "atomization": (energy - atoms) * HARTREE_TO_KCAL_MOL,
        "homo": homo * HARTREE_TO_EV,
        "lumo": lumo * HARTREE_TO_EV,
        "gap": (lumo - homo) * HARTREE_TO_EV,
        "dipole": float(np.linalg.norm(res.get("dipole"))) * DEBYE_PER_AU,
    }
