"""QM9 read straight from the CSV files inside the installed ``qm9pack`` wheel.

QM9 (Ramakrishnan, Dral, Rupp, von Lilienfeld, Sci. Data 1, 140022, 2014; CC0) holds 130,831
small organic molecules (C, H, N, O, F; up to 9 heavy atoms) with B3LYP/6-31G(2df,p) geometries
and properties. ``qm9pack`` (MIT) ships all of it as CSV; its own loader imports the removed
``pkg_resources``, so we never import ``qm9pack`` and only locate its data folder.

The first load parses the CSV (a few seconds) and caches flat arrays as ``.npz`` in
``$SECUREML_CACHE`` (default ``~/.cache/secureml``), keyed by the qm9pack version; later loads
read the cache.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError

log = logging.getLogger(__name__)

# CODATA 2018 conversion factors.
HARTREE_TO_KCAL_MOL = 627.5094740631
HARTREE_TO_EV = 27.211386245988

# Per-atom reference energies (Hartree) of the isolated atoms at B3LYP/6-31G(2df,p), the level of
# QM9 itself: the QM9 "atomref" table (Ramakrishnan et al. 2014, figshare
# doi:10.6084/m9.figshare.1057643). Columns: U0 (0 K), U (298.15 K), H (298.15 K), G (298.15 K).
ATOM_REFERENCE_HARTREE: dict[str, dict[int, float]] = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063162, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}
QM9_ELEMENTS = (1, 6, 7, 8, 9)

# The 15 raw QM9 properties in the order of the QM9 xyz property line (after "gdb <index>"),
# with qm9pack's CSV column for each.
RAW_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("A", "RotA_GHz"),
    ("B", "RotB_GHz"),
    ("C", "RotC_GHz"),
    ("mu", "Dipole_debye"),
    ("alpha", "Polarizability_bohr3"),
    ("homo", "HOMO_au"),
    ("lumo", "LUMO_au"),
    ("gap", "HOMO_LUMO_gap_au"),
    ("r2", "R2_bohr2"),
    ("zpve", "ZPVE_au"),
    ("U0", "InternalEnergy_0K_au"),
    ("U", "InternalEnergy_298K_au"),
    ("H", "Enthalphy_298K_au"),
    ("G", "GibbsFreeEnergy_298K_au"),
    ("Cv", "Heatcapacity_Cv_cal_mol_K"),
)

# Public property name -> (unit, description). Energies that are differences are in kcal/mol,
# orbital energies in eV; the raw Hartree values are kept under *_hartree names.
PROPERTY_INFO: dict[str, tuple[str, str]] = {
    "U0_atomization": ("kcal/mol", "atomization energy at 0 K: U0 minus the atoms' U0"),
    "U_atomization": ("kcal/mol", "atomization energy at 298.15 K: U minus the atoms' U"),
    "H_atomization": ("kcal/mol", "atomization enthalpy at 298.15 K: H minus the atoms' H"),
    "G_atomization": ("kcal/mol", "atomization free energy at 298.15 K: G minus the atoms' G"),
    "homo": ("eV", "HOMO energy"),
    "lumo": ("eV", "LUMO energy"),
    "gap": ("eV", "HOMO-LUMO gap"),
    "dipole": ("D", "dipole moment"),
    "alpha": ("bohr^3", "isotropic polarizability"),
    "r2": ("bohr^2", "electronic spatial extent <R^2>"),
    "zpve": ("kcal/mol", "zero-point vibrational energy"),
    "cv": ("cal/(mol K)", "heat capacity at 298.15 K"),
    "rot_A": ("GHz", "rotational constant A"),
    "rot_B": ("GHz", "rotational constant B"),
    "rot_C": ("GHz", "rotational constant C"),
    "U0_hartree": ("Hartree", "total internal energy at 0 K"),
    "U_hartree": ("Hartree", "total internal energy at 298.15 K"),
    "H_hartree": ("Hartree", "total enthalpy at 298.15 K"),
    "G_hartree": ("Hartree", "total free energy at 298.15 K"),
    "homo_hartree": ("Hartree", "HOMO energy"),
    "lumo_hartree": ("Hartree", "LUMO energy"),
    "gap_hartree": ("Hartree", "HOMO-LUMO gap"),
    "zpve_hartree": ("Hartree", "zero-point vibrational energy"),
}

CACHE_FORMAT = 1
_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9_SOURCE = (
    "QM9: Ramakrishnan, Dral, Rupp, von Lilienfeld, Sci. Data 1, 140022 (2014), CC0; "
    "B3LYP/6-31G(2df,p)"
)


def cache_dir() -> Path:
    """Folder for parsed-data caches: ``$SECUREML_CACHE`` or ``~/.cache/secureml``."""
    return Path(os.environ.get("SECUREML_CACHE") or Path.home() / ".cache" / "secureml")


def qm9pack_data_dir() -> Path:
    """The ``data`` folder of the installed qm9pack, found without importing qm9pack."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("QM9 needs the package qm9pack (pip install qm9pack==1.0.3); it is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [f for f in _CSV_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(f"qm9pack at {folder} lacks {', '.join(missing)}; reinstall qm9pack==1.0.3")
    return folder


def qm9pack_version() -> str:
    """Version of the installed qm9pack (the cache key)."""
    try:
        return importlib.metadata.version("qm9pack")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError("QM9 needs the package qm9pack (pip install qm9pack==1.0.3)") from exc


def cache_path() -> Path:
    """Where the parsed QM9 arrays are (or will be) cached."""
    return cache_dir() / f"qm9pack-{qm9pack_version()}-v{CACHE_FORMAT}.npz"


def derived_properties(
    raw: dict[str, np.ndarray], charges_flat: np.ndarray, n_atoms: np.ndarray
) -> dict[str, np.ndarray]:
    """Public QM9 properties (see :data:`PROPERTY_INFO`) from the 15 raw ones.

    Atomization energies are ``E_molecule - sum_atoms E_atom`` (negative for bound molecules),
    converted from Hartree to kcal/mol, with :data:`ATOM_REFERENCE_HARTREE`.
    """
    charges_flat = np.asarray(charges_flat)
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    if charges_flat.size and not np.isin(charges_flat, QM9_ELEMENTS).all():
        bad = sorted(set(np.unique(charges_flat).tolist()) - set(QM9_ELEMENTS))
        raise DataError(f"QM9 atom references exist only for H, C, N, O, F; found Z={bad}")
    mol_of_atom = np.repeat(np.arange(len(n_atoms)), n_atoms)
    out: dict[str, np.ndarray] = {}
    for key in ("U0", "U", "H", "G"):
        table = np.zeros(10)
        for z, e in ATOM_REFERENCE_HARTREE[key].items():
            table[z] = e
        atoms_sum = np.bincount(mol_of_atom, weights=table[charges_flat], minlength=len(n_atoms))
        out[f"{key}_atomization"] = (np.asarray(raw[key], float) - atoms_sum) * HARTREE_TO_KCAL_MOL
    for key in ("homo", "lumo", "gap"):
        out[key] = np.asarray(raw[key], float) * HARTREE_TO_EV
    out["dipole"] = np.asarray(raw["mu"], float)
    out["alpha"] = np.asarray(raw["alpha"], float)
    out["r2"] = np.asarray(raw["r2"], float)
    out["zpve"] = np.asarray(raw["zpve"], float) * HARTREE_TO_KCAL_MOL
    out["cv"] = np.asarray(raw["Cv"], float)
    for key in ("A", "B", "C"):
        out[f"rot_{key}"] = np.asarray(raw[key], float)
    for key in ("U0", "U", "H", "G", "homo", "lumo", "gap", "zpve"):
        out[f"{key}_hartree"] = np.asarray(raw[key], float)
    return out


def _parse_float_list(text: str, expected: int, what: str) -> np.ndarray:
    """Parse comma-separated floats in C (np.fromstring), failing loudly on any junk."""
    with warnings.catch_warnings():
        # np.fromstring only warns when it stops early on malformed text; make that an error.
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(text, sep=",")
        except (DeprecationWarning, ValueError) as exc:
            raise DataError(f"qm9pack CSV: malformed numbers in column {what}") from exc
    if values.size != expected:
        raise DataError(f"qm9pack CSV: column {what} has {values.size} numbers, expected {expected}")
    return values


def _parse_csv(folder: Path, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Parse qm9pack's CSV files into flat arrays (one row per atom or per molecule).

    ``max_rows`` reads only the first rows of the first file (for quick checks).
    """
    import pandas as pd  # a dependency of qm9pack; only needed for this one-off parse

    columns = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"] + [c for _, c in RAW_PROPERTIES]
    frames = []
    for name in _CSV_FILES[:1] if max_rows else _CSV_FILES:
        try:
            frames.append(
                pd.read_csv(
                    folder / name, usecols=columns, dtype={"SMILES": str}, keep_default_na=False, nrows=max_rows
                )
            )
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{folder / name}: cannot parse qm9pack CSV: {exc}") from exc
    df = pd.concat(frames, ignore_index=True)
    n_atoms = df["N_atoms"].to_numpy(np.int64)
    total = int(n_atoms.sum())
    # Both list columns look like "[[x,y,z],...]" / "['C','H',...]": strip the brackets and parse
    # everything in one go instead of one Python call per molecule.
    xyz_text = ",".join(df["XYZ_Ang"].tolist()).translate(str.maketrans("[]", "  "))
    coords = _parse_float_list(xyz_text, 3 * total, "XYZ_Ang").reshape(total, 3)
    symbols = np.array(
        ",".join(df["Elements"].tolist()).translate(str.maketrans("", "", "[]' ")).split(",")
    )
    if symbols.size != total:
        raise DataError(f"qm9pack CSV: column Elements has {symbols.size} entries, expected {total}")
    lookup = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
    uniq, inverse = np.unique(symbols, return_inverse=True)
    unknown = [s for s in uniq.tolist() if s not in lookup]
    if unknown:
        raise DataError(f"qm9pack CSV: unknown elements {unknown}")
    charges = np.array([lookup[s] for s in uniq.tolist()], dtype=np.int8)[inverse]
    out = {
        "charges": charges,
        "coordinates": coords,
        "n_atoms": n_atoms,
        "index": df["Index"].to_numpy(np.int64),
        "smiles": np.array(df["SMILES"].tolist(), dtype=str),
    }
    for key, column in RAW_PROPERTIES:
        out[f"raw_{key}"] = df[column].to_numpy(np.float64)
    if not np.isfinite(coords).all():
        raise DataError("qm9pack CSV: non-finite coordinates")
    return out


def _load_flat(use_cache: bool = True) -> dict[str, np.ndarray]:
    """Flat QM9 arrays from the cache, parsing qm9pack's CSV (and caching) on a miss."""
    path = cache_path()
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError) as exc:  # a truncated or foreign file: rebuild it
            log.warning("ignoring unreadable QM9 cache %s (%s)", path, exc)
    log.info("parsing QM9 from qm9pack CSV (first load; cached afterwards)")
    flat = _parse_csv(qm9pack_data_dir())
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a concurrent reader never sees a half-written cache.
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **flat)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write QM9 cache %s (%s)", path, exc)
    return flat


def split_by_lengths(array: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Cut ``array`` into consecutive views of the given lengths (10x faster than np.split,
    which calls swapaxes for every piece)."""
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return [array[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def heavy_atom_counts(flat: dict[str, np.ndarray]) -> np.ndarray:
    """Number of non-hydrogen atoms per molecule of a flat array dict."""
    mol_of_atom = np.repeat(np.arange(len(flat["n_atoms"])), flat["n_atoms"])
    return np.bincount(mol_of_atom, weights=flat["charges"] > 1, minlength=len(flat["n_atoms"])).astype(
        np.int64
    )


def select_indices(
    n_total: int, heavy: np.ndarray, n: int | None, max_heavy_atoms: int | None, seed: int
) -> np.ndarray:
    """Indices chosen by :func:`load_qm9` (see there for the rules)."""
    pool = np.arange(n_total)
    if max_heavy_atoms is not None:
        pool = pool[heavy <= max_heavy_atoms]
    if n is None:
        return pool
    if n < 0 or n > len(pool):
        raise DataError(f"asked for {n} QM9 molecules, but only {len(pool)} match the selection")
    return pool[np.random.default_rng(seed).permutation(len(pool))[:n]]


def _check_properties(properties: Iterable[str] | None) -> list[str]:
    names = list(PROPERTY_INFO) if properties is None else list(properties)
    unknown = [p for p in names if p not in PROPERTY_INFO]
    if unknown:
        raise DataError(f"unknown QM9 properties {unknown}; known: {', '.join(PROPERTY_INFO)}")
    return names


def dataset_from_flat(
    flat: dict[str, np.ndarray],
    index: np.ndarray,
    properties: Sequence[str] | None = None,
    provenance: dict | None = None,
) -> MolecularDataset:
    """Build a :class:`MolecularDataset` from flat QM9 arrays and the chosen molecule indices."""
    names = _check_properties(properties)
    n_atoms = flat["n_atoms"]
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    index = np.asarray(index, dtype=np.int64)
    starts, stops = offsets[index], offsets[index + 1]
    # Gather the chosen molecules' atoms in one indexing operation, then cut the compact copies
    # into per-molecule views (no per-molecule copies, and no reference to the full arrays).
    lengths = stops - starts
    first_of_atom = np.repeat(np.cumsum(lengths) - lengths, lengths)
    atom_sel = np.repeat(starts, lengths) + np.arange(int(lengths.sum())) - first_of_atom
    charges_sel = flat["charges"][atom_sel].astype(np.int64)
    charges = split_by_lengths(charges_sel, lengths)
    coords = split_by_lengths(np.asarray(flat["coordinates"][atom_sel], dtype=np.float64), lengths)
    raw = {key: flat[f"raw_{key}"][index] for key, _ in RAW_PROPERTIES}
    derived = derived_properties(raw, charges_sel, n_atoms[index])
    return MolecularDataset(
        charges=charges,
        coordinates=coords,
        properties={p: derived[p] for p in names},
        names=[f"qm9_{int(i):06d}" for i in flat["index"][index]],
        smiles=[str(s) for s in flat["smiles"][index]],
        provenance=dict(provenance or {}),
    )


def load_qm9(
    n: int | None = None,
    max_heavy_atoms: int | None = None,
    seed: int = 0,
    properties: Iterable[str] | None = None,
) -> MolecularDataset:
    """Load QM9 (all of it, or a seeded random subset) from the installed qm9pack.

    Args:
        n: number of molecules; ``None`` keeps all matching molecules in QM9 order. With ``n``, the
            molecules are the first ``n`` of a seeded permutation of the matching ones, so subsets
            for growing ``n`` (same seed) are nested and already shuffled.
        max_heavy_atoms: keep only molecules with at most this many non-hydrogen atoms.
        seed: seed of the permutation.
        properties: names from :data:`PROPERTY_INFO` to keep (default: all).

    Names are ``qm9_<QM9 index, 6 digits>``; coordinates in Angstrom; see :data:`PROPERTY_INFO`.
    """
    names = _check_properties(properties)
    flat = _load_flat()
    heavy = heavy_atom_counts(flat)
    index = select_indices(len(flat["n_atoms"]), heavy, n, max_heavy_atoms, seed)
    provenance = {
        "source": QM9_SOURCE,
        "reader": f"qm9pack {qm9pack_version()} (MIT), CSV read by secureml.data.qm9",
        "selection": {"n": n, "max_heavy_atoms": max_heavy_atoms, "seed": seed},
        "units": {p: PROPERTY_INFO[p][0] for p in names},
        "coordinates": "Angstrom, B3LYP/6-31G(2df,p) equilibrium geometries",
    }
    return dataset_from_flat(flat, index, names, provenance)


def qm9_summary() -> dict:
    """What QM9 data is available (for ``secureml data info``); parses nothing if uncached."""
    info: dict = {"cache": str(cache_dir())}
    try:
        folder = qm9pack_data_dir()
        info.update(qm9pack_version=qm9pack_version(), qm9pack_data=str(folder))
    except DataError as exc:
        info["error"] = str(exc)
        return info
    path = cache_path()
    info["cached"] = path.is_file()
    if path.is_file():
        flat = _load_flat()
        heavy = heavy_atom_counts(flat)
        info["molecules"] = int(len(flat["n_atoms"]))
        info["max_atoms"] = int(flat["n_atoms"].max())
        info["molecules_by_max_heavy_atoms"] = {
            int(k): int((heavy <= k).sum()) for k in range(1, int(heavy.max()) + 1)
        }
    else:
        # One data line per molecule (no quoted newlines in qm9pack's CSV): count without parsing.
        rows = 0
        for name in _CSV_FILES:
            with open(folder / name, "rb") as fh:
                rows += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 22), b"")) - 1
        info["molecules"] = rows
    return info
