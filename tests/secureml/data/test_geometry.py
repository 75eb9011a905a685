"""SMILES -> 3-D geometry (RDKit ETKDG + GFN2-xTB relaxation) and xTB properties (tblite)."""
from __future__ import annotations

import numpy as np
import pytest

from secureml.data import load_embedded
from secureml.data.geometry import BOHR_PER_ANGSTROM, relax_xtb, smiles_to_molecule, xtb_properties
from secureml.errors import DataError


def _max_gradient(z, x):
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", z, x * BOHR_PER_ANGSTROM)
    calc.set("verbosity", 0)
    return float(np.abs(calc.singlepoint().get("gradient")).max())


def test_ethanol_geometry_is_relaxed_and_deterministic():
    z, x = smiles_to_molecule("CCO", relax="xtb", seed=0)
    assert sorted(z.tolist()) == [1] * 6 + [6, 6, 8] and x.shape == (9, 3)
    c = np.flatnonzero(z == 6)
    assert np.linalg.norm(x[c[0]] - x[c[1]]) == pytest.approx(1.52, abs=0.04)
    assert _max_gradient(z, x) < 1e-3  # converged: forces near zero at GFN2-xTB
    z2, x2 = smiles_to_molecule("CCO", relax="xtb", seed=0)
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_allclose(x, x2, atol=1e-8)
    zm, xm = smiles_to_molecule("CCO", relax="mmff")
    assert _max_gradient(zm, xm) > _max_gradient(z, x)


def test_xtb_properties_methane_and_water():
    z, x = smiles_to_molecule("C")
    ch = np.linalg.norm(x[z == 1] - x[z == 6], axis=1)
    assert np.allclose(ch, 1.09, atol=0.02)  # QM9 (B3LYP) has 1.0919 Angstrom
    p = xtb_properties(z, x)
    assert p["energy"] == pytest.approx(-4.175, abs=0.01)  # GFN2-xTB total energy of CH4 (Hartree)
    assert p["dipole"] < 0.01 and p["gap"] > 10 and p["homo"] < p["lumo"]
    assert p["gap"] == pytest.approx(p["lumo"] - p["homo"])
    # atomization: molecule minus isolated atoms, negative, of the order of the QM9 value (-396 kcal/mol)
    assert -600 < p["atomization"] < -300
    zw, xw = smiles_to_molecule("O")
    assert 1.0 < xtb_properties(zw, xw)["dipole"] < 3.0  # water: ~1.85 D experimentally


def test_relaxing_a_qm9_geometry_barely_moves_it():
    ds = load_embedded().subset([100, 2000])
    for z, x0 in zip(ds.charges, ds.coordinates):
        x, _ = relax_xtb(z, x0)
        d0 = np.linalg.norm(x0[:, None] - x0[None], axis=-1)
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        bonded = (d0 > 0) & (d0 < 1.6)
        # B3LYP and GFN2-xTB bond lengths agree to a few hundredths of an Angstrom (torsions of
        # OH groups may turn further, so only bonds are compared)
        assert np.abs(d - d0)[bonded].max() < 0.05


def test_bad_smiles():
    with pytest.raises(DataError, match="cannot parse"):
        smiles_to_molecule("C1CC")
    with pytest.raises(DataError, match="cannot parse"):
        smiles_to_molecule("")
    with pytest.raises(DataError, match="relax must be"):
        smiles_to_molecule("C", relax="dft")
    with pytest.raises(DataError, match="non-finite"):
        xtb_properties([6, 1], [[0, 0, 0], [0, 0, float("nan")]])
