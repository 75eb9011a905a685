"""Build ``secureml/data/embedded.npz``, the embedded default data set, from qm9pack.

Run ``python -m secureml.data.build_embedded`` (deterministic: same qm9pack, same file content).
The set is every QM9 molecule with at most 7 heavy atoms (3,921 molecules), in QM9 order, stored
compactly: padded int8 nuclear charges (0 = padding), float32 coordinates (Angstrom), float64
properties (see :data:`secureml.data.qm9.PROPERTY_INFO`), SMILES, names and a JSON header.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from secureml.data import qm9

EMBEDDED_MAX_HEAVY_ATOMS = 7
EMBEDDED_FORMAT = 1
EMBEDDED_FILE = Path(__file__).with_name("embedded.npz")


def build_arrays() -> dict[str, np.ndarray]:
    """The arrays stored in ``embedded.npz`` (keys ``charges``, ``coordinates``, ``n_atoms``,
    ``names``, ``smiles``, ``qm9_index``, ``meta`` and ``prop_<name>`` per property)."""
    flat = qm9._load_flat()
    heavy = qm9.heavy_atom_counts(flat)
    index = qm9.select_indices(len(flat["n_atoms"]), heavy, None, EMBEDDED_MAX_HEAVY_ATOMS, 0)
    data = qm9.dataset_from_flat(flat, index)
    n_atoms = np.array([len(z) for z in data.charges], dtype=np.int8)
    width = int(n_atoms.max())
    charges = np.zeros((len(data), width), dtype=np.int8)
    coords = np.zeros((len(data), width, 3), dtype=np.float32)
    mask = np.arange(width)[None, :] < n_atoms[:, None]
    charges[mask] = np.concatenate(data.charges)
    coords[mask] = np.concatenate(data.coordinates)
    meta = {
        "format": EMBEDDED_FORMAT,
        "source": qm9.QM9_SOURCE,
        "qm9pack_version": qm9.qm9pack_version(),
        "selection": f"all QM9 molecules with at most {EMBEDDED_MAX_HEAVY_ATOMS} heavy atoms, QM9 order",
        "units": {p: u for p, (u, _) in qm9.PROPERTY_INFO.items()},
        "coordinates": "Angstrom (float32), B3LYP/6-31G(2df,p)",
        "built_by": "python -m secureml.data.build_embedded",
        "licenses": "QM9 data CC0; qm9pack MIT",
    }
    arrays: dict[str, np.ndarray] = {
        "charges": charges,
        "coordinates": coords,
        "n_atoms": n_atoms,
        "names": np.array(data.names, dtype=str),
        "smiles": np.array(data.smiles, dtype=str),
        "qm9_index": flat["index"][index].astype(np.int32),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    for name, values in data.properties.items():
        arrays[f"prop_{name}"] = np.asarray(values, dtype=np.float64)
    return arrays


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_FILE, help="output .npz (default: the packaged file)")
    args = parser.parse_args(argv)
    arrays = build_arrays()
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays['n_atoms'])} molecules, {args.out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
