"""Readers and writers for the molecular file formats users already have.

* plain xyz (one or more frames): :func:`read_xyz`
* QM7 as distributed with the qml test suite: a folder of ``.xyz`` files plus a ``name value...``
  property file: :func:`read_qm7`
* QM9's own extended xyz (``dsgdb9nsd_*.xyz``: property line, Mulliken charges, frequencies,
  SMILES, InChI; Fortran ``*^`` exponents): :func:`read_qm9_xyz`
* one ``.npz`` with ``charges``/``coordinates``/property arrays: :func:`read_npz`, :func:`write_npz`
* extended xyz through ASE: :func:`read_extxyz`, :func:`write_extxyz`

Every reader checks what it reads and raises :class:`~secureml.errors.DataError` with
``file:line: what is wrong`` for empty files, wrong atom counts, unknown elements, malformed or
non-finite numbers and mismatched property counts. :func:`validate_molecule` is the same check for
molecules that come from elsewhere (e.g. a prediction query).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.data.qm9 import derived_properties, RAW_PROPERTIES
from secureml.errors import DataError

# Element symbols indexed by nuclear charge (same table as ase.data.chemical_symbols, written out
# so that importing this module stays cheap).
_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf "
    "Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
SYMBOL_TO_Z: dict[str, int] = {s: z for z, s in enumerate(_SYMBOLS) if z > 0}
MAX_Z = len(_SYMBOLS) - 1

# Atoms closer than this (Angstrom) are a broken geometry, not a molecule (and make the Coulomb
# matrix infinite).
MIN_DISTANCE = 0.1


def symbol(z: int) -> str:
    """Element symbol of nuclear charge ``z``."""
    return _SYMBOLS[int(z)]


def _where(path: str | Path, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def parse_element(token: str, path: str | Path = "<input>", line: int | None = None) -> int:
    """Nuclear charge from an element symbol (any case) or an atomic number."""
    if token.isdigit():
        z = int(token)
        if 1 <= z <= MAX_Z:
            return z
        raise DataError(f"{_where(path, line)}: unknown element with atomic number {token}")
    z = SYMBOL_TO_Z.get(token[:1].upper() + token[1:].lower())
    if z is None:
        raise DataError(f"{_where(path, line)}: unknown element {token!r}")
    return z


def parse_float(token: str, path: str | Path = "<input>", line: int | None = None) -> float:
    """A float, accepting Fortran/Mathematica exponents such as ``2.1997*^-6`` (used by QM9)."""
    try:
        return float(token.replace("*^", "e"))
    except ValueError:
        raise DataError(f"{_where(path, line)}: malformed number {token!r}") from None


def validate_molecule(
    charges: Sequence[int] | np.ndarray,
    coordinates: Sequence[Sequence[float]] | np.ndarray,
    source: str = "molecule",
    first_line: int | None = None,
    elements: Iterable[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check one molecule and return ``(charges int64 (n,), coordinates float64 (n, 3))``.

    Raises :class:`DataError` for no atoms, shape mismatches, non-integer or unknown nuclear
    charges (or ones outside ``elements`` when given), non-finite coordinates and atoms closer
    than :data:`MIN_DISTANCE`. ``source`` names the file or query in the message; with
    ``first_line``, atom ``i`` is reported at line ``first_line + i``.
    """

    def at(i: int) -> str:
        return f"{source}:{first_line + i}" if first_line is not None else f"{source}: atom {i + 1}"

    try:
        z = np.asarray(charges)
        xyz = np.asarray(coordinates, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: charges/coordinates are not numeric arrays ({exc})") from None
    if z.ndim != 1 or z.size == 0:
        raise DataError(f"{source}: a molecule needs a 1-D array of at least one nuclear charge, got shape {z.shape}")
    if xyz.shape != (z.size, 3):
        raise DataError(f"{source}: {z.size} nuclear charges but coordinates of shape {xyz.shape}, expected ({z.size}, 3)")
    if not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
        raise DataError(f"{source}: nuclear charges must be integers, got dtype {z.dtype}")
    bad = np.flatnonzero(~np.isfinite(z.astype(np.float64)) | (z != np.round(z)) | (z < 1) | (z > MAX_Z))
    if bad.size:
        raise DataError(f"{at(int(bad[0]))}: unknown element with nuclear charge {z[bad[0]]!r}")
    z = z.astype(np.int64)
    if elements is not None:
        allowed = np.array(sorted(set(int(e) for e in elements)))
        outside = np.flatnonzero(~np.isin(z, allowed))
        if outside.size:
            names = ", ".join(symbol(e) for e in allowed)
            raise DataError(f"{at(int(outside[0]))}: element {symbol(z[outside[0]])} not supported (allowed: {names})")
    nonfinite = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if nonfinite.size:
        raise DataError(f"{at(int(nonfinite[0]))}: non-finite coordinates {xyz[nonfinite[0]].tolist()}")
    if len(z) > 1:
        d = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
        d[np.diag_indices(len(z))] = np.inf
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < MIN_DISTANCE:
            i, j = min(i, j), max(i, j)
            raise DataError(f"{at(int(j))}: atoms {i + 1} and {j + 1} are {d[i, j]:.3g} Angstrom apart (overlapping)")
    return z, xyz


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text.splitlines()


def _atom_count(lines: list[str], i: int, path: Path) -> int:
    token = lines[i].strip()
    if not token.isdigit() or int(token) == 0:
        raise DataError(f"{path}:{i + 1}: expected the number of atoms (a positive integer), got {lines[i].strip()!r}")
    return int(token)


def _is_number(token: str) -> bool:
    try:
        float(token.replace("*^", "e"))
    except ValueError:
        return False
    return True


def _looks_like_atom_line(line: str) -> bool:
    # An atom line has an element and three coordinates; a frame's count line has one token.
    return len(line.split()) >= 4


def _xyz_frames(path: Path, lines: list[str], min_columns: int = 4) -> Iterator[tuple[int, int, str, list[list[str]]]]:
    """Yield ``(first_atom_line, n_atoms, comment, atom_tokens)`` per frame of a plain xyz file."""
    i = 0
    while i < len(lines):
        if not lines[i].strip():  # blank lines between frames
            i += 1
            continue
        n = _atom_count(lines, i, path)
        comment = lines[i + 1] if i + 1 < len(lines) else ""
        atoms = lines[i + 2 : i + 2 + n]
        if len(atoms) < n or any(not a.strip() for a in atoms):
            have = next((k for k, a in enumerate(atoms) if not a.strip()), len(atoms))
            raise DataError(f"{path}:{i + 1}: the atom count says {n} atoms but only {have} atom lines follow")
        tokens = [a.split() for a in atoms]
        for k, t in enumerate(tokens):
            if len(t) < min_columns:
                raise DataError(
                    f"{path}:{i + 3 + k}: expected an element and 3 coordinates"
                    f"{'' if min_columns == 4 else f' ({min_columns} columns)'}, got {atoms[k].strip()!r}"
                )
        nxt = i + 2 + n
        while nxt < len(lines) and not lines[nxt].strip():
            nxt += 1
        if nxt < len(lines) and _looks_like_atom_line(lines[nxt]):
            raise DataError(f"{path}:{nxt + 1}: more atom lines than the atom count ({n}) on line {i + 1} says")
        yield i + 3, n, comment, tokens
        i = nxt


def _atoms_from_tokens(path: Path, first_line: int, tokens: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    charges = [parse_element(t[0], path, first_line + k) for k, t in enumerate(tokens)]
    coords = [[parse_float(v, path, first_line + k) for v in t[1:4]] for k, t in enumerate(tokens)]
    return validate_molecule(charges, coords, source=str(path), first_line=first_line)


def read_xyz(path: str | Path) -> MolecularDataset:
    """Read a plain xyz file with one or more frames (comment lines are kept as names if short)."""
    path = Path(path)
    lines = _read_lines(path)
    charges, coords, names = [], [], []
    for k, (first, n, comment, tokens) in enumerate(_xyz_frames(path, lines)):
        z, xyz = _atoms_from_tokens(path, first, tokens)
        charges.append(z)
        coords.append(xyz)
        title = comment.strip()
        names.append(title if title and len(title.split()) == 1 else f"{path.stem}_{k}")
    return MolecularDataset(charges, coords, {}, names, [""] * len(charges), {"source": str(path), "format": "xyz"})


def read_qm7(
    folder: str | Path, property_file: str | Path, property_names: Sequence[str] | None = None
) -> MolecularDataset:
    """Read QM7 as distributed with the qml tests: ``folder/*.xyz`` and a property file.

    Each non-blank line of ``property_file`` (``#`` starts a comment) is ``name value [value ...]``
    where ``name`` is an xyz file in ``folder`` (with or without ``.xyz``). Every line must have the
    same number of values. They become properties named ``property_names`` (default ``energy``,
    then ``value_2``, ``value_3``...; in qml's ``hof_qm7.txt`` the first is the PBE0 atomization
    energy and the second the DFTB3 one, both kcal/mol). Molecules keep the property file's order.
    """
    folder, property_file = Path(folder), Path(property_file)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of .xyz files")
    lines = _read_lines(property_file)
    entries: list[tuple[int, str, list[float]]] = []
    width = None
    for ln, line in enumerate(lines, start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        values = [parse_float(t, property_file, ln) for t in tokens[1:]]
        if not values:
            raise DataError(f"{property_file}:{ln}: expected 'name value', got {line.strip()!r}")
        if width is None:
            width, width_line = len(values), ln
        elif len(values) != width:
            raise DataError(
                f"{property_file}:{ln}: {len(values)} values, but line {width_line} has {width} (mismatched property count)"
            )
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{property_file}:{ln}: non-finite property value")
        entries.append((ln, tokens[0], values))
    if not entries:
        raise DataError(f"{property_file}: empty file")
    names = list(property_names) if property_names is not None else ["energy"] + [f"value_{k}" for k in range(2, width + 1)]
    if len(names) != width:
        raise DataError(f"{property_file}: {width} values per line but {len(names)} property names given")
    charges, coords, mol_names = [], [], []
    for ln, name, _ in entries:
        path = folder / name
        if not path.is_file() and path.suffix != ".xyz":
            path = folder / f"{name}.xyz"
        if not path.is_file():
            # names with a folder prefix ("qm7/0001.xyz") refer to the file by its base name
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            path = folder / (base if base.endswith(".xyz") else f"{base}.xyz")
        if not path.is_file():
            raise DataError(f"{property_file}:{ln}: no xyz file {name!r} in {folder}")
        mol = read_xyz(path)
        if len(mol) != 1:
            raise DataError(f"{path}: expected one molecule, found {len(mol)}")
        charges.append(mol.charges[0])
        coords.append(mol.coordinates[0])
        mol_names.append(path.stem)
    values = np.array([v for _, _, v in entries], dtype=np.float64)
    return MolecularDataset(
        charges,
        coords,
        {p: values[:, k] for k, p in enumerate(names)},
        mol_names,
        [""] * len(charges),
        {"source": f"{folder} + {property_file}", "format": "qm7 (xyz folder + property file)"},
    )


QM9_XYZ_FIELDS = 17  # "gdb", the index, then the 15 properties of secureml.data.qm9.RAW_PROPERTIES


def _read_qm9_file(path: Path) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, str]:
    """One QM9 ``dsgdb9nsd_*.xyz`` file: charges, coordinates, index, 15 raw properties, SMILES."""
    lines = _read_lines(path)
    n = _atom_count(lines, 0, path)
    if len(lines) < 2:
        raise DataError(f"{path}:1: a QM9 file needs a property line after the atom count")
    fields = lines[1].split()
    if len(fields) != QM9_XYZ_FIELDS:
        raise DataError(
            f"{path}:2: QM9 property line has {len(fields)} fields, expected {QM9_XYZ_FIELDS} "
            "(tag, index and 15 properties; mismatched property count)"
        )
    if not fields[1].isdigit():
        raise DataError(f"{path}:2: QM9 molecule index {fields[1]!r} is not an integer")
    raw = np.array([parse_float(t, path, 2) for t in fields[2:]])
    if not np.isfinite(raw).all():
        raise DataError(f"{path}:2: non-finite property value")
    tokens = [line.split() for line in lines[2 : 2 + n]]
    for k, t in enumerate(tokens):
        if not t or _is_number(t[0]):
            raise DataError(f"{path}:{3 + k}: the atom count on line 1 says {n} atoms but line {3 + k} is not an atom line")
        if len(t) != 5:
            raise DataError(f"{path}:{3 + k}: QM9 atom lines have 5 columns (element, x, y, z, Mulliken charge), got {len(t)}")
    if len(lines) < n + 5:
        raise DataError(
            f"{path}:{len(lines)}: a QM9 file with {n} atoms has {n + 5} lines (count, properties, atoms, "
            f"frequencies, SMILES, InChI); this one ends after {len(lines)} (wrong atom count?)"
        )
    after = lines[2 + n].split()
    if len(after) == 5 and not _is_number(after[0]):
        raise DataError(f"{path}:{3 + n}: more atom lines than the atom count ({n}) on line 1 says")
    z, xyz = _atoms_from_tokens(path, 3, tokens)
    for k, t in enumerate(tokens):
        parse_float(t[4], path, 3 + k)  # the Mulliken charge must be a number too
    smiles = lines[3 + n].split()
    if not smiles:
        raise DataError(f"{path}:{4 + n}: missing SMILES line")
    return z, xyz, int(fields[1]), raw, smiles[0]


def read_qm9_xyz(path_or_folder: str | Path) -> MolecularDataset:
    """Read one QM9 extended-xyz file or a folder of them (sorted by file name).

    Returns the same properties as :func:`secureml.data.load_qm9` (atomization energies in
    kcal/mol, orbital energies in eV...), names ``qm9_<index>`` and the first (GDB) SMILES.
    """
    path = Path(path_or_folder)
    files = sorted(path.glob("*.xyz")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .xyz files")
    parsed = [_read_qm9_file(f) for f in files]
    charges = [p[0] for p in parsed]
    raw = np.array([p[3] for p in parsed])
    try:
        props = derived_properties(
            {key: raw[:, k] for k, (key, _) in enumerate(RAW_PROPERTIES)},
            np.concatenate(charges),
            np.array([len(z) for z in charges]),
        )
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    return MolecularDataset(
        charges,
        [p[1] for p in parsed],
        props,
        [f"qm9_{p[2]:06d}" for p in parsed],
        [p[4] for p in parsed],
        {"source": str(path), "format": "QM9 extended xyz"},
    )


_CHARGE_KEYS = ("charges", "nuclear_charges", "atomic_numbers", "Z", "numbers")
_COORD_KEYS = ("coordinates", "positions", "coords", "R", "xyz")
_COUNT_KEYS = ("n_atoms", "natoms", "num_atoms", "N")


def write_npz(dataset: MolecularDataset, path: str | Path) -> None:
    """Write ``dataset`` as one ``.npz``: padded ``charges`` (n, max_atoms; 0 = padding),
    ``coordinates`` (n, max_atoms, 3), ``n_atoms``, one array per property, ``names``, ``smiles``
    and a JSON ``provenance`` string; no pickled objects."""
    n_atoms = np.array([len(z) for z in dataset.charges], dtype=np.int64)
    width = int(n_atoms.max()) if len(n_atoms) else 0
    charges = np.zeros((len(dataset), width), dtype=np.int64)
    coords = np.zeros((len(dataset), width, 3), dtype=np.float64)
    mask = np.arange(width)[None, :] < n_atoms[:, None]
    if len(dataset):
        charges[mask] = np.concatenate(dataset.charges)
        coords[mask] = np.concatenate(dataset.coordinates)
    clash = {"charges", "coordinates", "n_atoms", "names", "smiles", "provenance"} & set(dataset.properties)
    if clash:
        raise DataError(f"property names {sorted(clash)} clash with the npz layout")
    np.savez_compressed(
        path,
        charges=charges,
        coordinates=coords,
        n_atoms=n_atoms,
        names=np.array(dataset.names or [f"mol_{i}" for i in range(len(dataset))], dtype=str),
        smiles=np.array(dataset.smiles or [""] * len(dataset), dtype=str),
        provenance=np.array(json.dumps(dataset.provenance, default=str)),
        **{k: np.asarray(v, dtype=np.float64) for k, v in dataset.properties.items()},
    )


def read_npz(path: str | Path, allow_pickle: bool = False) -> MolecularDataset:
    """Read an ``.npz`` with nuclear charges, coordinates (Angstrom) and per-molecule properties.

    Accepted layouts: padded ``charges`` (n, max_atoms) with 0 as padding and ``coordinates``
    (n, max_atoms, 3) (as :func:`write_npz` writes); flat per-atom arrays plus ``n_atoms``; or
    object arrays of per-molecule arrays, which need ``allow_pickle=True`` -- only for files you
    trust, since unpickling can run code. Other 1-D numeric arrays of length n are properties.
    """
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    with npz:
        try:
            arrays = {k: npz[k] for k in npz.files}
        except ValueError as exc:
            raise DataError(
                f"{path}: holds pickled object arrays; pass allow_pickle=True only if you trust the file ({exc})"
            ) from None
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt .npz ({exc})") from None
    if not arrays:
        raise DataError(f"{path}: empty file")
    ck = next((k for k in _CHARGE_KEYS if k in arrays), None)
    xk = next((k for k in _COORD_KEYS if k in arrays), None)
    if ck is None or xk is None:
        raise DataError(f"{path}: needs nuclear charges ({'/'.join(_CHARGE_KEYS)}) and coordinates ({'/'.join(_COORD_KEYS)}); found {sorted(arrays)}")
    z_all, x_all = arrays.pop(ck), arrays.pop(xk)
    nk = next((k for k in _COUNT_KEYS if k in arrays), None)
    counts = arrays.pop(nk) if nk else None
    charges: list[np.ndarray] = []
    coords: list[np.ndarray] = []
    if z_all.dtype == object:
        charges = [np.asarray(z) for z in z_all]
        coords = [np.asarray(x, dtype=float) for x in x_all]
    elif z_all.ndim == 2:
        if x_all.shape != z_all.shape + (3,):
            raise DataError(f"{path}: {ck} has shape {z_all.shape} but {xk} has {x_all.shape}, expected {z_all.shape + (3,)}")
        present = z_all != 0
        if counts is None:
            counts = present.sum(axis=1)
        elif not np.array_equal(np.asarray(counts), present.sum(axis=1)):
            bad = int(np.flatnonzero(np.asarray(counts) != present.sum(axis=1))[0])
            raise DataError(f"{path}: molecule {bad}: {nk} says {int(counts[bad])} atoms, {ck} has {int(present[bad].sum())} non-zero")
        charges = [z_all[i][present[i]] for i in range(len(z_all))]
        coords = [x_all[i][present[i]] for i in range(len(z_all))]
    elif z_all.ndim == 1 and counts is not None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.sum() != len(z_all) or x_all.shape != (len(z_all), 3):
            raise DataError(f"{path}: {nk} sums to {counts.sum()} atoms but {ck} has {len(z_all)} and {xk} shape {x_all.shape}")
        split = np.cumsum(counts)[:-1]
        charges, coords = np.split(z_all, split), np.split(x_all, split)
    else:
        raise DataError(f"{path}: cannot tell molecules apart: {ck} has shape {z_all.shape} and no atom counts ({'/'.join(_COUNT_KEYS)})")
    n = len(charges)
    mols = [validate_molecule(z, x, source=f"{path}: molecule {i}") for i, (z, x) in enumerate(zip(charges, coords))]
    names = [str(s) for s in arrays.pop("names")] if "names" in arrays else [f"{path.stem}_{i}" for i in range(n)]
    smiles = [str(s) for s in arrays.pop("smiles")] if "smiles" in arrays else [""] * n
    provenance: dict = {"source": str(path), "format": "npz"}
    if "provenance" in arrays:
        try:
            provenance = dict(json.loads(str(arrays.pop("provenance"))), file=str(path))
        except (json.JSONDecodeError, TypeError):
            pass
    if len(names) != n or len(smiles) != n:
        raise DataError(f"{path}: names/smiles arrays do not have one entry per molecule ({n})")
    props: dict[str, np.ndarray] = {}
    for key, arr in arrays.items():
        if arr.ndim == 1 and np.issubdtype(arr.dtype, np.number):
            if len(arr) != n:
                raise DataError(f"{path}: property {key!r} has {len(arr)} values for {n} molecules (mismatched property count)")
            props[key] = arr.astype(np.float64)
    return MolecularDataset([m[0] for m in mols], [m[1] for m in mols], props, names, smiles, provenance)


def _escape(value: str) -> str:
    # ASE's extxyz reader unescapes backslashes but its writer does not escape them, so a SMILES
    # with stereo bonds (C/C=C\C) would lose its backslashes in a round trip; double them here.
    return value.replace("\\", "\\\\")


def write_extxyz(dataset: MolecularDataset, path: str | Path, progress: bool = False) -> None:
    """Write ``dataset`` as extended xyz (ASE): properties, ``name`` and ``smiles`` per frame.

    ``progress`` shows a tqdm bar (writing runs at roughly 1,000-2,000 molecules per second).
    """
    from ase import Atoms
    from ase.io import write
    from tqdm import tqdm

    if not len(dataset):
        raise DataError(f"{path}: nothing to write (empty data set)")
    chunk = 1000
    with open(path, "w") as fh, tqdm(total=len(dataset), unit="mol", disable=not progress, desc="writing") as bar:
        for start in range(0, len(dataset), chunk):
            frames = []
            for i in range(start, min(start + chunk, len(dataset))):
                atoms = Atoms(numbers=dataset.charges[i], positions=dataset.coordinates[i])
                atoms.info.update({k: float(v[i]) for k, v in dataset.properties.items()})
                if dataset.names:
                    atoms.info["name"] = _escape(dataset.names[i])
                if dataset.smiles and dataset.smiles[i]:
                    atoms.info["smiles"] = _escape(dataset.smiles[i])
                frames.append(atoms)
            write(fh, frames, format="extxyz")
            bar.update(len(frames))


def read_extxyz(path: str | Path) -> MolecularDataset:
    """Read an extended-xyz file through ASE; numeric per-frame values become properties.

    The file is first scanned for frame structure, elements and coordinates so that errors name
    the line; every property must be present in every frame.
    """
    from ase.io import read

    path = Path(path)
    lines = _read_lines(path)
    frames_at = []
    for first, n, comment, tokens in _xyz_frames(path, lines):
        # ASE reads columns as the Properties= header says; the standard layout starts with
        # species and position, which is all we check here.
        if "Properties=" not in comment or "Properties=species:S:1:pos:R:3" in comment:
            _atoms_from_tokens(path, first, tokens)
        frames_at.append(first)
    try:
        frames = read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types (XYZError, KeyError, ValueError...)
        raise DataError(f"{path}: not valid extended xyz ({type(exc).__name__}: {exc})") from None
    charges, coords, names, smiles, values = [], [], [], [], []
    for k, atoms in enumerate(frames):
        z, xyz = validate_molecule(atoms.numbers, atoms.positions, source=str(path), first_line=frames_at[k])
        charges.append(z)
        coords.append(xyz)
        scalars = {}
        results = atoms.calc.results if atoms.calc is not None else {}
        for key, v in list(atoms.info.items()) + list(results.items()):
            if isinstance(v, (bool, np.bool_)) or key in ("name", "smiles"):
                continue
            if isinstance(v, (int, float, np.integer, np.floating)) or (isinstance(v, np.ndarray) and v.ndim == 0 and np.issubdtype(v.dtype, np.number)):
                scalars[key] = float(v)
        names.append(str(atoms.info.get("name", f"{path.stem}_{k}")))
        smiles.append(str(atoms.info.get("smiles", "")))
        values.append(scalars)
    keys = list(values[0])
    for k, scalars in enumerate(values):
        if set(scalars) != set(keys):
            diff = sorted(set(scalars) ^ set(keys))
            raise DataError(f"{path}:{frames_at[k] - 1}: frame {k + 1} does not have the same properties as frame 1 ({', '.join(diff)}; mismatched property count)")
    return MolecularDataset(
        charges,
        coords,
        {key: np.array([v[key] for v in values]) for key in keys},
        names,
        smiles,
        {"source": str(path), "format": "extxyz"},
    )
