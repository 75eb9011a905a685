"""Readers for a user's own files: xyz folder + property table, SDF, CSV of SMILES, Python objects."""
from __future__ import annotations

import numpy as np
import pytest

from secureml.data import load_embedded
from secureml.data.readers import as_dataset, read_molecules, read_property_table, select_property
from secureml.data.units import convert, known_unit, to_training_unit
from secureml.errors import DataError


def _write_xyz(path, z, x, comment=""):
    from secureml.data.formats import symbol

    lines = [str(len(z)), comment] + [f"{symbol(a)} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for a, p in zip(z, x)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def mols():
    return load_embedded().subset(np.arange(6))


def test_xyz_folder_with_prefixed_names_and_header(tmp_path, mols):
    folder = tmp_path / "qm7"
    folder.mkdir()
    for i in range(len(mols)):
        _write_xyz(folder / f"{i:04d}.xyz", mols.charges[i], mols.coordinates[i])
    table = tmp_path / "labels.csv"
    # header names the columns; names carry a folder prefix and the suffix; order differs from files
    rows = ["file,homo_ev,energy_ha"] + [f"qm7/{i:04d}.xyz,{-6 - i / 10},{-40 - i}" for i in reversed(range(6))]
    table.write_text("\n".join(rows) + "\n")
    ds = read_molecules(folder, labels=table)
    assert ds.names == [f"{i:04d}" for i in reversed(range(6))]
    np.testing.assert_allclose(ds.properties["energy_ha"], [-40 - i for i in reversed(range(6))])
    np.testing.assert_array_equal(ds.charges[0], mols.charges[5])
    name, values = select_property(ds, "2")  # a column number picks the second column
    assert name == "energy_ha"


def test_property_table_errors_name_file_and_line(tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("a 1.0 2.0\nb 3.0\n")
    with pytest.raises(DataError, match=r"t.txt:2: 1 values, but line 1 has 2"):
        read_property_table(t)
    t.write_text("a 1.0\nb x\n")
    with pytest.raises(DataError, match=r"t.txt:2: malformed number 'x'"):
        read_property_table(t)


def test_missing_molecule_in_folder(tmp_path, mols):
    folder = tmp_path / "f"
    folder.mkdir()
    _write_xyz(folder / "a.xyz", mols.charges[0], mols.coordinates[0])
    (tmp_path / "l.txt").write_text("a 1.0\nb 2.0\n")
    with pytest.raises(DataError, match=r"l.txt:2: no molecule 'b'"):
        read_molecules(folder, labels=tmp_path / "l.txt")


def _sdf(tmp_path, mols, field="energy", bad_record=None):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    w = Chem.SDWriter(str(tmp_path / "m.sdf"))
    for i in range(len(mols)):
        from secureml.data.formats import symbol

        xyz = f"{len(mols.charges[i])}\n\n" + "\n".join(
            f"{symbol(a)} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for a, p in zip(mols.charges[i], mols.coordinates[i]))
        m = Chem.MolFromXYZBlock(xyz)
        rdDetermineBonds.DetermineConnectivity(m)
        m.SetProp("_Name", f"m{i}")
        m.SetProp(field, str(float(mols.properties["U0_atomization"][i])))
        m.SetProp("note", "text fields are skipped")
        w.write(m)
    w.close()
    return tmp_path / "m.sdf"


def test_sdf_with_properties(tmp_path, mols):
    ds = read_molecules(_sdf(tmp_path, mols))
    assert ds.names == [f"m{i}" for i in range(6)]
    assert set(ds.properties) == {"energy"}
    np.testing.assert_allclose(ds.properties["energy"], mols.properties["U0_atomization"])
    for i in range(6):
        np.testing.assert_allclose(ds.coordinates[i], mols.coordinates[i], atol=1e-4)


def test_sdf_error_names_line(tmp_path, mols):
    path = _sdf(tmp_path, mols)
    text = path.read_text().split("$$$$\n")
    rec = text[2].split("\n")
    rec[3] = "garbage counts line"  # the atom/bond counts line of record 3
    text[2] = "\n".join(rec)
    path.write_text("$$$$\n".join(text))
    start = len("$$$$\n".join(text[:2]).split("\n")) + 1  # first line of record 3
    with pytest.raises(DataError, match=rf"m.sdf:{start} \(record 3\): RDKit cannot read"):
        read_molecules(path)


def test_python_objects(mols):
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    atoms = [Atoms(numbers=mols.charges[i], positions=mols.coordinates[i]) for i in range(2)]
    ds = as_dataset(atoms)
    assert len(ds) == 2
    m = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(m, randomSeed=0)
    assert as_dataset(m).charges[0].tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    with pytest.raises(DataError, match="implicit hydrogens"):
        flat = Chem.MolFromSmiles("CCO")
        AllChem.EmbedMolecule(flat, randomSeed=0)
        as_dataset(flat)


def test_smiles_csv(tmp_path):
    (tmp_path / "m.csv").write_text("name,smiles,gap\nethanol,CCO,7.1\nwater,O,8.0\n")
    ds = read_molecules(tmp_path / "m.csv", geometry="mmff", progress=False)
    assert ds.names == ["ethanol", "water"] and ds.smiles == ["CCO", "O"]
    np.testing.assert_allclose(ds.properties["gap"], [7.1, 8.0])
    (tmp_path / "b.csv").write_text("name,smiles,gap\nx,C1CC,1.0\n")
    with pytest.raises(DataError, match=r"b.csv:2: SMILES 'C1CC'"):
        read_molecules(tmp_path / "b.csv", geometry="none", progress=False)


def test_units():
    np.testing.assert_allclose(convert(1.0, "Hartree"), 627.5094740631)
    np.testing.assert_allclose(convert(1.0, "eV"), 23.060547830619)
    np.testing.assert_allclose(convert(4.184, "kJ/mol"), 1.0)
    assert to_training_unit([1.0], "ha")[1] == "kcal/mol"
    assert to_training_unit([1.0], "D") == (pytest.approx([1.0]), "D")
    assert known_unit("U0_atomization") == "kcal/mol" and known_unit("homo") == "eV" and known_unit("mine") == ""
    with pytest.raises(DataError, match="not an energy unit"):
        convert(1.0, "D")


def test_orbital_energies_are_trained_in_ev():
    """HOMO, LUMO and gap stay in eV (the field's convention), whatever unit the data has."""
    from secureml.data.units import is_orbital_energy

    assert to_training_unit([1.0], "Hartree", "homo") == (pytest.approx([27.211386245988]), "eV")
    assert to_training_unit([500.0], "meV", "HOMO_LUMO_gap_au") == (pytest.approx([0.5]), "eV")
    assert to_training_unit([1.0], "eV", "xtb_lumo") == (pytest.approx([1.0]), "eV")
    assert to_training_unit([1.0], "eV", "U0_atomization")[1] == "kcal/mol"
    assert all(map(is_orbital_energy, ["gap", "LUMO", "xtb_homo", "band gap (eV)"]))
    assert not any(map(is_orbital_energy, ["singapore_energy", "U0", "homogeneity"]))


def test_read_qm7_accepts_folder_prefixed_names(tmp_path, mols):
    from secureml.data import read_qm7

    folder = tmp_path / "qm7"
    folder.mkdir()
    for i in range(3):
        _write_xyz(folder / f"{i:04d}.xyz", mols.charges[i], mols.coordinates[i])
    (tmp_path / "hof.txt").write_text("".join(f"qm7/{i:04d}.xyz {-100.0 - i} {-90.0 - i}\n" for i in range(3)))
    ds = read_qm7(folder, tmp_path / "hof.txt")
    assert ds.names == ["0000", "0001", "0002"]
    np.testing.assert_allclose(ds.properties["energy"], [-100, -101, -102])
