"""MolecularModel.predict takes what a Python user holds: ASE Atoms, RDKit Mols, paths, datasets."""
from __future__ import annotations

import numpy as np
import pytest

from secureml.data import embedded_split, load_embedded, write_extxyz
from secureml.errors import DataError
from secureml.models import build_model


def test_predict_accepts_atoms_mols_and_paths(tmp_path) -> None:
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from secureml.data.formats import symbol

    data = load_embedded()
    tr, te = embedded_split(0)
    model = build_model("krr-laplacian", cm_size=23).fit(data.subset(tr[:200]), "U0_atomization")
    test = data.subset(te[:3])
    want = model.predict(test)
    atoms = [Atoms(numbers=z, positions=x) for z, x in zip(test.charges, test.coordinates)]
    np.testing.assert_allclose(model.predict(atoms), want)
    np.testing.assert_allclose(model.predict(atoms[0]), want[:1])
    mols = []
    for z, x in zip(test.charges, test.coordinates):
        m = Chem.MolFromXYZBlock(f"{len(z)}\n\n" + "\n".join(f"{symbol(a)} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f}"
                                                               for a, p in zip(z, x)))
        rdDetermineBonds.DetermineConnectivity(m)
        mols.append(m)
    np.testing.assert_allclose(model.predict(mols), want, atol=1e-4)
    write_extxyz(test, tmp_path / "q.xyz")
    np.testing.assert_allclose(model.predict(tmp_path / "q.xyz"), want, atol=1e-4)
    with pytest.raises(DataError, match="expected ase.Atoms, an RDKit Mol"):
        model.predict([42])
