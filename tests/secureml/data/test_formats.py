"""Readers and writers of secureml.data.formats: round trips and bad-file errors."""
from __future__ import annotations

import numpy as np
import pytest

from secureml.data import load_embedded
from secureml.data.dataset import MolecularDataset
from secureml.data.formats import (
    read_extxyz,
    read_npz,
    read_qm7,
    read_qm9_xyz,
    read_xyz,
    symbol,
    validate_molecule,
    write_extxyz,
    write_npz,
)
from secureml.errors import DataError

# QM9's own file for molecule 1 (methane), with one coordinate in the Fortran "*^" notation QM9 uses.
METHANE_QM9 = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 2.1997*^-6\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC\t
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""

RAW_ORDER = ("rot_A", "rot_B", "rot_C", "dipole", "alpha", "homo_hartree", "lumo_hartree", "gap_hartree",
             "r2", "zpve_hartree", "U0_hartree", "U_hartree", "H_hartree", "G_hartree", "cv")


@pytest.fixture(scope="module")
def small() -> MolecularDataset:
    return load_embedded().subset(np.arange(0, 3921, 400))


def _qm9_text(ds: MolecularDataset, i: int, index: int) -> str:
    """A QM9-format file for molecule i, numbers written with repr (and one '*^' exponent)."""
    raw = "\t".join(repr(float(ds.properties[k][i])) for k in RAW_ORDER)
    atoms = "\n".join(
        f"{symbol(z)}\t{x:.10f}\t{y:.10f}\t{w:.10f}\t{0.1:.6f}" for z, (x, y, w) in zip(ds.charges[i], ds.coordinates[i])
    )
    return f"{len(ds.charges[i])}\ngdb {index}\t{raw}\t\n{atoms}\n100.0\t200.0*^0\n{ds.smiles[i]}\t{ds.smiles[i]}\nInChI=x\tInChI=x\n"


def test_qm9_xyz_methane_and_fortran_exponent(tmp_path):
    f = tmp_path / "dsgdb9nsd_000001.xyz"
    f.write_text(METHANE_QM9)
    ds = read_qm9_xyz(f)
    assert ds.names == ["qm9_000001"] and ds.smiles == ["C"]
    assert ds.charges[0].tolist() == [6, 1, 1, 1, 1]
    assert ds.coordinates[0][1, 2] == pytest.approx(2.1997e-6, rel=1e-12)
    # U0 atomization: -40.47893 - (-37.846772 + 4 * -0.500273) Hartree, in kcal/mol.
    assert ds.properties["U0_atomization"][0] == pytest.approx(-0.631066 * 627.5094740631, abs=1e-6)
    assert ds.properties["homo"][0] == pytest.approx(-0.3877 * 27.211386245988)


def test_qm9_xyz_folder_matches_embedded(tmp_path, small):
    for i in range(len(small)):
        (tmp_path / f"dsgdb9nsd_{i + 1:06d}.xyz").write_text(_qm9_text(small, i, i + 1))
    ds = read_qm9_xyz(tmp_path)
    assert len(ds) == len(small)
    for k in small.properties:
        np.testing.assert_allclose(ds.properties[k], small.properties[k], rtol=1e-12, atol=1e-9, err_msg=k)
    for a, b in zip(ds.coordinates, small.coordinates):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert ds.smiles == small.smiles


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("gdb 1\t157.7118\t", "gdb 1\t"), ":2: QM9 property line has 16 fields"),
        (lambda t: t.replace("\t13.21\t", "\t13.2.1\t"), ":2: malformed number '13.2.1'"),
        (lambda t: t.replace("H\t 1.0117308433", "Xx\t 1.0117308433"), ":5: unknown element 'Xx'"),
        (lambda t: t.replace("H\t 1.0117308433", "H\t nan"), ":5: non-finite coordinates"),
        (lambda t: t.replace("5\n", "6\n", 1), ":8: the atom count on line 1 says 6 atoms"),
        (lambda t: t.replace("5\n", "4\n", 1), ":7: more atom lines than the atom count (4)"),
        (lambda t: "", "empty file"),
    ],
)
def test_qm9_xyz_bad_files(tmp_path, edit, message):
    f = tmp_path / "bad.xyz"
    f.write_text(edit(METHANE_QM9))
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_qm9_xyz(f)
    assert str(f) in str(err.value)


def _write_qm7(folder, ds, lines=None):
    folder.mkdir()
    for i in range(len(ds)):
        body = "\n".join(f" {symbol(z)} {x:.6f} {y:.6f} {w:.6f}" for z, (x, y, w) in zip(ds.charges[i], ds.coordinates[i]))
        (folder / f"{i + 1:04d}.xyz").write_text(f"{len(ds.charges[i])}\ncharge = 0\n{body}\n")
    return lines if lines is not None else [
        f"{i + 1:04d}.xyz {ds.properties['U0_atomization'][i]:.4f} {ds.properties['gap'][i]:.4f}" for i in range(len(ds))
    ]


def test_qm7_round_trip(tmp_path, small):
    lines = _write_qm7(tmp_path / "qm7", small)
    (tmp_path / "hof_qm7.txt").write_text("\n".join(lines) + "\n")
    ds = read_qm7(tmp_path / "qm7", tmp_path / "hof_qm7.txt")
    assert ds.names[0] == "0001" and len(ds) == len(small)
    np.testing.assert_allclose(ds.properties["energy"], small.properties["U0_atomization"], atol=1e-4)
    np.testing.assert_allclose(ds.properties["value_2"], small.properties["gap"], atol=1e-4)
    for a, b in zip(ds.charges, small.charges):
        assert np.array_equal(a, b)
    named = read_qm7(tmp_path / "qm7", tmp_path / "hof_qm7.txt", property_names=["hof", "gap"])
    assert set(named.properties) == {"hof", "gap"}


def test_qm7_errors(tmp_path, small):
    lines = _write_qm7(tmp_path / "qm7", small.subset([0, 1, 2]))
    prop = tmp_path / "p.txt"
    prop.write_text("\n".join([lines[0], lines[1].rsplit(" ", 1)[0], lines[2]]))
    with pytest.raises(DataError, match=r"p\.txt:2: 1 values, but line 1 has 2 \(mismatched property count\)"):
        read_qm7(tmp_path / "qm7", prop)
    prop.write_text(lines[0] + "\n9999.xyz 1.0 2.0\n")
    with pytest.raises(DataError, match=r"p\.txt:2: no xyz file '9999\.xyz'"):
        read_qm7(tmp_path / "qm7", prop)
    prop.write_text("")
    with pytest.raises(DataError, match=r"p\.txt: empty file"):
        read_qm7(tmp_path / "qm7", prop)
    (tmp_path / "qm7" / "0002.xyz").write_text("3\ncharge = 0\n C 0 0 0\n H 0 0 1.1\n")
    prop.write_text(lines[1])
    with pytest.raises(DataError, match=r"0002\.xyz:1: the atom count says 3 atoms but only 2"):
        read_qm7(tmp_path / "qm7", prop)


def test_npz_round_trip_and_layouts(tmp_path, small):
    path = tmp_path / "d.npz"
    write_npz(small, path)
    ds = read_npz(path)
    assert ds.names == small.names and ds.smiles == small.smiles
    for k in small.properties:
        np.testing.assert_array_equal(ds.properties[k], small.properties[k])
    for a, b in zip(ds.coordinates, small.coordinates):
        np.testing.assert_array_equal(a, b)
    # flat layout: per-atom arrays plus atom counts
    flat = tmp_path / "flat.npz"
    np.savez(flat, Z=np.concatenate(small.charges), R=np.concatenate(small.coordinates),
             natoms=[len(z) for z in small.charges], energy=small.properties["U0_atomization"])
    ds = read_npz(flat)
    assert [len(z) for z in ds.charges] == [len(z) for z in small.charges]
    np.testing.assert_array_equal(ds.properties["energy"], small.properties["U0_atomization"])


def test_npz_errors(tmp_path, small):
    p = tmp_path / "bad.npz"
    np.savez(p, charges=np.array([[6, 1, 0]]), coordinates=np.array([[[0, 0, 0], [0, 0, 1.1], [0, 0, 0]]]), energy=np.zeros(2))
    with pytest.raises(DataError, match="mismatched property count"):
        read_npz(p)
    np.savez(p, charges=np.array([[6, 1]]), coordinates=np.array([[[0, 0, 0], [0, np.nan, 1.0]]]))
    with pytest.raises(DataError, match="molecule 0: atom 2: non-finite"):
        read_npz(p)
    np.savez(p, charges=np.array([[6, 130]]), coordinates=np.array([[[0, 0, 0], [0, 0, 1.0]]]))
    with pytest.raises(DataError, match="unknown element"):
        read_npz(p)
    objs = np.empty(2, dtype=object)
    objs[0], objs[1] = np.array([1]), np.array([1, 1])
    np.savez(p, charges=objs, coordinates=objs)
    with pytest.raises(DataError, match="allow_pickle"):
        read_npz(p)
    p.write_bytes(b"")
    with pytest.raises(DataError, match="bad.npz"):
        read_npz(p)


def test_extxyz_round_trip(tmp_path, small):
    ds0 = small.subset([0, 1, 2])
    ds0.smiles[1] = "C/C=C\\C"  # stereo bonds: backslashes must survive ASE's reader
    path = tmp_path / "d.xyz"
    write_extxyz(ds0, path)
    ds = read_extxyz(path)
    assert ds.names == ds0.names and ds.smiles == ds0.smiles
    for k in ds0.properties:
        np.testing.assert_allclose(ds.properties[k], ds0.properties[k], rtol=1e-12, err_msg=k)
    for a, b in zip(ds.coordinates, ds0.coordinates):
        np.testing.assert_allclose(a, b, atol=1e-8)
    plain = read_xyz(path)  # an extended xyz file is also a plain xyz file
    assert len(plain) == 3 and plain.properties == {}


def test_extxyz_errors(tmp_path):
    p = tmp_path / "e.xyz"
    good = "2\nenergy=1.0\nC 0 0 0\nH 0 0 1.1\n"
    cases = [
        (good + "2\nenergy=1.0 gap=2.0\nC 0 0 0\nH 0 0 1.1\n", r"e\.xyz:6: frame 2 does not have the same properties"),
        ("2\nenergy=1.0\nC 0 0 0\nQq 0 0 1.1\n", r"e\.xyz:4: unknown element 'Qq'"),
        ("2\nenergy=1.0\nC 0 0 0\nH 0 inf 1.1\n", r"e\.xyz:4: non-finite coordinates"),
        ("3\nenergy=1.0\nC 0 0 0\nH 0 0 1.1\n", r"e\.xyz:1: the atom count says 3 atoms but only 2"),
        ("1\nenergy=1.0\nC 0 0 0\nH 0 0 1.1\n", r"e\.xyz:4: more atom lines than the atom count \(1\)"),
        ("two\nenergy=1.0\nC 0 0 0\n", r"e\.xyz:1: expected the number of atoms"),
        ("2\nenergy=1.0\nC 0 0 0\nH 0 0 1.1x\n", r"e\.xyz:4: malformed number '1.1x'"),
        ("2\nenergy=1.0\nC 0 0 0\nH 0 0 0.01\n", r"e\.xyz:4: atoms 1 and 2 are 0.01 Angstrom apart"),
        ("  \n\n", r"e\.xyz: empty file"),
    ]
    for text, message in cases:
        p.write_text(text)
        with pytest.raises(DataError, match=message):
            read_extxyz(p)


def test_validate_molecule():
    z, x = validate_molecule([6, 1], [[0, 0, 0], [0, 0, 1.09]])
    assert z.dtype == np.int64 and x.shape == (2, 3)
    with pytest.raises(DataError, match="query: atom 2: element Cl not supported"):
        validate_molecule([6, 17], [[0, 0, 0], [0, 0, 1.7]], source="query", elements=[1, 6, 7, 8, 9])
    with pytest.raises(DataError, match=r"coordinates of shape \(1, 3\)"):
        validate_molecule([6, 1], [[0, 0, 0]])
    with pytest.raises(DataError, match="at least one"):
        validate_molecule([], np.zeros((0, 3)))
    with pytest.raises(DataError, match="unknown element"):
        validate_molecule([6.5], [[0, 0, 0]])
