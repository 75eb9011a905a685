"""Your own molecules, in the files you already have, as one :class:`MolecularDataset`.

:func:`read_molecules` picks the reader from the path:

* a folder of ``.xyz`` files plus a property table (``labels=``): one line per molecule,
  ``name value [value ...]``, whitespace- or comma-separated, with an optional header line naming
  the columns; names may carry a folder prefix or the ``.xyz`` suffix (``qm7/0001.xyz``,
  ``0001``); a folder of QM9 ``dsgdb9nsd_*.xyz`` files needs no table;
* an ``.xyz`` / ``.extxyz`` file: extended xyz (ASE; ``key=value`` pairs per frame are properties),
  QM9's own format, or plain xyz (then properties come from ``labels=``, names from the comments);
* ``.npz`` (:func:`secureml.data.formats.read_npz`);
* ``.sdf`` / ``.sd`` / ``.mol`` (RDKit): 3-D coordinates of each record, numeric SD fields
  (``> <name>``) as properties; hydrogens must be explicit;
* ``.csv`` with a SMILES column and property columns: 3-D geometries by RDKit ETKDG, then
  MMFF94 or GFN2-xTB relaxation (``geometry=``), the pipeline ``predict --smiles`` uses;
* ``.pdb`` (ASE; geometry only, for queries).

:func:`as_dataset` turns what a Python user holds -- ASE ``Atoms``, RDKit ``Mol`` (with a 3-D
conformer), lists of them, paths, or a dataset -- into a dataset; :meth:`MolecularModel.predict`
accepts all of them through it.

Every problem is one :class:`~secureml.errors.DataError` line naming the file and, where there is
one, the line or record.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.data.formats import (
    _read_lines,
    parse_float,
    read_extxyz,
    read_npz,
    read_qm9_xyz,
    read_xyz,
    validate_molecule,
)
from secureml.data.geometry import smiles_to_molecule
from secureml.errors import DataError

GEOMETRIES = ("xtb", "mmff", "none")
SDF_SUFFIXES = (".sdf", ".sd", ".mol")
XYZ_SUFFIXES = (".xyz", ".extxyz")


# -- property tables -------------------------------------------------------------------------------
def _split(line: str) -> list[str]:
    line = line.split("#", 1)[0]
    if "," in line:
        return [t.strip() for t in next(csv.reader([line]))]
    return line.split()


def _is_float(token: str) -> bool:
    try:
        float(token.replace("*^", "e"))
    except ValueError:
        return False
    return True


def read_property_table(path: str | Path) -> tuple[list[str], dict[str, np.ndarray], list[int]]:
    """(molecule names, {column: values}, line numbers) of a ``name value...`` table.

    A first line whose value fields are not all numbers is a header naming the columns (its first
    field names the name column and is ignored); without one, the columns are called ``energy``,
    ``value_2``, ``value_3``... (qml's ``hof_qm7.txt``: PBE0 then DFTB3 atomization energies).
    """
    path = Path(path)
    lines = _read_lines(path)
    header: list[str] | None = None
    rows: list[tuple[int, str, list[float]]] = []
    width = None
    for ln, line in enumerate(lines, start=1):
        tokens = _split(line)
        if not tokens or not tokens[0]:
            continue
        if header is None and not rows and not all(_is_float(t) for t in tokens[1:]):
            header = tokens[1:]
            if not header:
                raise DataError(f"{path}:{ln}: a header needs at least one column after the name column")
            continue
        if len(tokens) < 2:
            raise DataError(f"{path}:{ln}: expected 'name value [value ...]', got {line.strip()!r}")
        values = [parse_float(t, path, ln) for t in tokens[1:]]
        if width is None:
            width, first = len(values), ln
        elif len(values) != width:
            raise DataError(f"{path}:{ln}: {len(values)} values, but line {first} has {width} (mismatched column count)")
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{path}:{ln}: non-finite property value")
        rows.append((ln, tokens[0], values))
    if not rows:
        raise DataError(f"{path}: no data lines")
    assert width is not None
    if header is not None and len(header) != width:
        raise DataError(f"{path}: the header names {len(header)} columns but the lines have {width} values")
    names = header if header is not None else ["energy"] + [f"value_{k}" for k in range(2, width + 1)]
    values = np.array([r[2] for r in rows], dtype=np.float64)
    return [r[1] for r in rows], {c: values[:, k] for k, c in enumerate(names)}, [r[0] for r in rows]


def _molecule_key(name: str) -> str:
    """``qm7/0001.xyz`` -> ``0001``: how table names and xyz files are matched."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".xyz") else base


def attach_labels(dataset: MolecularDataset, labels: str | Path) -> MolecularDataset:
    """Give ``dataset`` (molecules named by file or comment) the properties in the table ``labels``.

    Molecules keep the table's order; every table name must match a molecule.
    """
    labels = Path(labels)
    names, columns, lines = read_property_table(labels)
    index = {_molecule_key(n): i for i, n in enumerate(dataset.names)}
    order = []
    for name, ln in zip(names, lines):
        i = index.get(_molecule_key(name))
        if i is None:
            raise DataError(f"{labels}:{ln}: no molecule {name!r} in {dataset.provenance.get('source', 'the data')}")
        order.append(i)
    out = dataset.subset(order)
    out.names = [_molecule_key(n) for n in names]
    out.properties = {**out.properties, **columns}
    out.provenance = {**dataset.provenance, "labels": str(labels)}
    return out


# -- file formats ----------------------------------------------------------------------------------
def _is_qm9_file(path: Path) -> bool:
    try:
        with open(path) as fh:
            fh.readline()
            second = fh.readline().split()
    except (OSError, UnicodeDecodeError):
        return False
    return len(second) == 17 and second[0] == "gdb"


def _is_extended(path: Path) -> bool:
    try:
        with open(path) as fh:
            fh.readline()
            comment = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return "=" in comment


def read_xyz_folder(folder: str | Path, labels: str | Path | None = None) -> MolecularDataset:
    """Every ``.xyz`` file in ``folder`` (one molecule each, named by file stem), with ``labels``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.xyz"))
    if not files:
        raise DataError(f"{folder}: no .xyz files in the folder")
    if labels is None and _is_qm9_file(files[0]):
        return read_qm9_xyz(folder)
    charges, coords, names = [], [], []
    for f in files:
        mol = read_xyz(f)
        if len(mol) != 1:
            raise DataError(f"{f}: expected one molecule per file in a folder, found {len(mol)}")
        charges.append(mol.charges[0])
        coords.append(mol.coordinates[0])
        names.append(f.stem)
    ds = MolecularDataset(charges, coords, {}, names, [""] * len(names), {"source": str(folder), "format": "xyz folder"})
    return attach_labels(ds, labels) if labels is not None else ds


def _sdf_record_lines(path: Path) -> list[int]:
    """First line (1-based) of every record of an SD file."""
    starts, new = [], True
    with open(path, errors="replace") as fh:
        for ln, line in enumerate(fh, start=1):
            if new:
                starts.append(ln)
                new = False
            if line.startswith("$$$$"):
                new = True
    return starts


def _mol_arrays(mol: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(charges, Angstrom coordinates) of an RDKit molecule's 3-D conformer, all atoms."""
    if mol.GetNumConformers() == 0:
        raise DataError(f"{where}: no coordinates (embed a 3-D conformer first, e.g. AllChem.EmbedMolecule)")
    conf = mol.GetConformer()
    xyz = np.asarray(conf.GetPositions(), dtype=np.float64)
    if not conf.Is3D():  # RDKit reads the SD header's 2D/3D flag
        raise DataError(f"{where}: 2-D coordinates (a 2D record); the models need 3-D geometries")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    implicit = sum(a.GetNumImplicitHs() for a in mol.GetAtoms())
    if implicit:
        raise DataError(f"{where}: {implicit} implicit hydrogens; the models need every atom with coordinates "
                        "(write the file with explicit hydrogens, or Chem.AddHs(mol, addCoords=True))")
    return validate_molecule(z, xyz, source=where)


def read_sdf(path: str | Path) -> MolecularDataset:
    """SD / MOL file: 3-D coordinates of each record, numeric SD fields as properties.

    A field must be numeric in every record to become a property (text fields are skipped);
    a field present in some records only is an error naming the record.
    """
    from rdkit import Chem, RDLogger

    path = Path(path)
    _read_lines(path)  # empty / unreadable file errors
    starts = _sdf_record_lines(path)
    RDLogger.DisableLog("rdApp.*")  # RDKit prints its own parse errors; ours name the line
    try:
        # no sanitization: only elements and coordinates matter here, and files with bonds but no
        # bond orders (or unusual valences) are still valid geometries
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)
        charges, coords, names, smiles, fields = [], [], [], [], []
        for k, mol in enumerate(supplier):
            line = starts[k] if k < len(starts) else None
            where = f"{path}:{line} (record {k + 1})" if line else f"{path}: record {k + 1}"
            if mol is None:
                raise DataError(f"{where}: RDKit cannot read this record (bad counts line, atom or bond block)")
            mol.UpdatePropertyCache(strict=False)
            z, xyz = _mol_arrays(mol, where)
            charges.append(z)
            coords.append(xyz)
            title = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
            names.append(title or f"{path.stem}_{k + 1}")
            try:
                smiles.append(Chem.MolToSmiles(Chem.RemoveHs(mol)))
            except Exception:  # RDKit raises several types for molecules it cannot sanitize
                smiles.append("")
            fields.append({key: mol.GetProp(key) for key in mol.GetPropNames()})
    finally:
        RDLogger.EnableLog("rdApp.*")
    if not charges:
        raise DataError(f"{path}: no molecules")
    props: dict[str, np.ndarray] = {}
    for key in fields[0]:
        vals = []
        for k, f in enumerate(fields):
            if key not in f:
                raise DataError(f"{path}:{starts[k]} (record {k + 1}): no SD field <{key}>, which record 1 has")
            vals.append(f[key].strip())
        if all(_is_float(v) for v in vals):
            props[key] = np.array([float(v.replace("*^", "e")) for v in vals])
    return MolecularDataset(charges, coords, props, names, smiles, {"source": str(path), "format": "sdf"})


def _smiles_column(header: Sequence[str], path: Path) -> int:
    for k, h in enumerate(header):
        if h.strip().lower() in ("smiles", "smi", "canonical_smiles", "smiles_string"):
            return k
    raise DataError(f"{path}:1: no SMILES column in the header ({', '.join(header)}); name one column 'smiles'")


def read_smiles_csv(path: str | Path, geometry: str = "xtb", seed: int = 0, progress: bool = True) -> MolecularDataset:
    """CSV with a header, a ``smiles`` column and numeric property columns.

    Geometries: RDKit ETKDG embedding then ``geometry`` = "xtb" (GFN2-xTB relaxation, ~0.3 s per
    small molecule, needs ``tblite``), "mmff" (MMFF94 only) or "none" (ETKDG only).
    """
    path = Path(path)
    if geometry not in GEOMETRIES:
        raise DataError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    lines = _read_lines(path)
    rows = list(csv.reader(lines))
    header = [h.strip() for h in rows[0]]
    s_col = _smiles_column(header, path)
    name_col = next((k for k, h in enumerate(header) if h.lower() in ("name", "id", "molecule")), None)
    prop_cols = [k for k in range(len(header)) if k not in (s_col, name_col)]
    data = [(ln, r) for ln, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    if not data:
        raise DataError(f"{path}: no data lines after the header")
    for ln, r in data:
        if len(r) != len(header):
            raise DataError(f"{path}:{ln}: {len(r)} fields, the header has {len(header)}")
    numeric = [k for k in prop_cols if all(_is_float(r[k]) for _, r in data)]
    from tqdm import tqdm

    charges, coords, names, smiles = [], [], [], []
    for ln, r in tqdm(data, desc=f"3-D geometries ({geometry})", unit="mol", disable=not progress or len(data) < 5):
        s = r[s_col].strip()
        try:
            z, x = smiles_to_molecule(s, relax=None if geometry == "none" else geometry, seed=seed)  # type: ignore[arg-type]
        except DataError as exc:
            raise DataError(f"{path}:{ln}: {exc}") from None
        charges.append(np.asarray(z))
        coords.append(np.asarray(x))
        names.append(r[name_col].strip() if name_col is not None else f"{path.stem}_{ln - 1}")
        smiles.append(s)
    props = {header[k]: np.array([float(r[k]) for _, r in data]) for k in numeric}
    return MolecularDataset(charges, coords, props, names, smiles,
                            {"source": str(path), "format": "csv (SMILES)", "geometry": geometry})


def read_ase_file(path: str | Path) -> MolecularDataset:
    """Any geometry format ASE reads (PDB...): all frames, no properties."""
    from ase.io import read

    path = Path(path)
    _read_lines(path)
    try:
        frames = read(str(path), index=":")
    except Exception as exc:  # ASE raises many types for malformed files
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    return atoms_dataset(frames, source=str(path), stem=path.stem)


def read_molecules(
    path: str | Path,
    labels: str | Path | None = None,
    geometry: str = "xtb",
    progress: bool = True,
) -> MolecularDataset:
    """Read molecules (and their properties) from ``path``; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir():
        ds = read_xyz_folder(path, labels)
        return ds
    if suffix in XYZ_SUFFIXES:
        if _is_qm9_file(path):
            ds = read_qm9_xyz(path)
        elif suffix == ".extxyz" or _is_extended(path):
            ds = read_extxyz(path)
        else:
            ds = read_xyz(path)
    elif suffix == ".npz":
        ds = read_npz(path)
    elif suffix in SDF_SUFFIXES:
        ds = read_sdf(path)
    elif suffix in (".csv", ".smi", ".tsv"):
        ds = read_smiles_csv(path, geometry=geometry, progress=progress)
    elif suffix in (".pdb", ".cif", ".mol2", ".gen", ".traj"):
        ds = read_ase_file(path)
    else:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'}; use .xyz/.extxyz, .npz, .sdf, "
                        ".csv (SMILES), .pdb, or a folder of .xyz files")
    return attach_labels(ds, labels) if labels is not None else ds


def select_property(dataset: MolecularDataset, name: str, source: str = "the data") -> tuple[str, np.ndarray]:
    """(property name, values): ``name`` is a property of ``dataset`` or a 1-based column number."""
    props = dataset.properties
    if name in props:
        return name, np.asarray(props[name], dtype=np.float64)
    if name.isdigit() and 1 <= int(name) <= len(props):
        key = list(props)[int(name) - 1]
        return key, np.asarray(props[key], dtype=np.float64)
    known = ", ".join(props) or "none"
    raise DataError(f"{source} has no property {name!r}; it has: {known}"
                    + ("" if props else " (give a property table with --labels)"))


# -- Python objects ----------------------------------------------------------------------------------
def atoms_dataset(frames: Iterable[Any], source: str = "ase.Atoms", stem: str = "molecule") -> MolecularDataset:
    """ASE ``Atoms`` objects as a dataset (numeric ``atoms.info`` entries become properties if all
    frames have them)."""
    charges, coords, names, infos = [], [], [], []
    for k, atoms in enumerate(frames):
        z, x = validate_molecule(atoms.numbers, atoms.positions, source=f"{source}: molecule {k + 1}")
        charges.append(z)
        coords.append(x)
        info = getattr(atoms, "info", {}) or {}
        names.append(str(info.get("name", f"{stem}_{k + 1}")))
        infos.append({key: float(v) for key, v in info.items()
                      if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))})
    if not charges:
        raise DataError(f"{source}: no molecules")
    common = set(infos[0]).intersection(*infos[1:]) if infos else set()
    props = {key: np.array([i[key] for i in infos]) for key in infos[0] if key in common}
    return MolecularDataset(charges, coords, props, names, [""] * len(charges), {"source": source, "format": "ase"})


def _is_atoms(obj: Any) -> bool:
    return hasattr(obj, "numbers") and hasattr(obj, "positions") and hasattr(obj, "get_chemical_symbols")


def _is_rdkit_mol(obj: Any) -> bool:
    return hasattr(obj, "GetConformer") and hasattr(obj, "GetAtoms")


def as_dataset(obj: Any) -> MolecularDataset:
    """A :class:`MolecularDataset` from a dataset, a path, ASE ``Atoms``, an RDKit ``Mol`` (3-D
    conformer, explicit hydrogens), or a list of any of these."""
    if isinstance(obj, MolecularDataset):
        return obj
    if isinstance(obj, (str, Path)):
        return read_molecules(obj)
    items = [obj] if (_is_atoms(obj) or _is_rdkit_mol(obj)) else list(obj)
    if not items:
        raise DataError("no molecules given")
    charges, coords, names = [], [], []
    for k, item in enumerate(items):
        if _is_atoms(item):
            z, x = validate_molecule(item.numbers, item.positions, source=f"molecule {k + 1} (ase.Atoms)")
            name = str((getattr(item, "info", {}) or {}).get("name", f"molecule_{k + 1}"))
        elif _is_rdkit_mol(item):
            z, x = _mol_arrays(item, f"molecule {k + 1} (RDKit Mol)")
            name = item.GetProp("_Name") if item.HasProp("_Name") and item.GetProp("_Name") else f"molecule_{k + 1}"
        elif isinstance(item, MolecularDataset):
            charges += list(item.charges)
            coords += list(item.coordinates)
            names += list(item.names or [f"molecule_{k + 1}_{i}" for i in range(len(item))])
            continue
        elif isinstance(item, (str, Path)):
            sub = read_molecules(item)
            charges += list(sub.charges)
            coords += list(sub.coordinates)
            names += list(sub.names)
            continue
        else:
            raise DataError(f"molecule {k + 1}: expected ase.Atoms, an RDKit Mol, a path or a MolecularDataset, "
                            f"got {type(item).__name__}")
        charges.append(z)
        coords.append(x)
        names.append(name)
    return MolecularDataset(charges, coords, {}, names, [""] * len(charges), {"source": "python objects"})


__all__ = [
    "GEOMETRIES",
    "as_dataset",
    "atoms_dataset",
    "attach_labels",
    "read_molecules",
    "read_property_table",
    "read_sdf",
    "read_smiles_csv",
    "read_xyz_folder",
    "select_property",
]
