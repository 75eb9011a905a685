"""The embedded default data set: QM9 molecules with up to 7 heavy atoms, shipped in the package.

Used by the demo and the tests, so they need neither qm9pack's 99 MB of CSV nor a parse. Built by
:mod:`secureml.data.build_embedded`. The split (:func:`embedded_split`) is a seeded 80/20 split.
"""
from __future__ import annotations

import functools
import json

import numpy as np

from secureml.data.dataset import MolecularDataset
from secureml.data.qm9 import split_by_lengths
from secureml.errors import DataError

TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    from importlib.resources import files

    resource = files("secureml.data") / "embedded.npz"
    try:
        with resource.open("rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError as exc:
        raise DataError(
            "secureml/data/embedded.npz is missing; rebuild it with python -m secureml.data.build_embedded"
        ) from exc
    for a in arrays.values():
        a.setflags(write=False)  # shared between calls; each dataset gets its own copies
    return arrays


def embedded_info() -> dict:
    """The JSON header of the embedded file (source, selection, units) plus its size."""
    arrays = _arrays()
    meta = json.loads(str(arrays["meta"]))
    meta["molecules"] = int(len(arrays["n_atoms"]))
    meta["max_atoms"] = int(arrays["charges"].shape[1])
    meta["properties"] = sorted(k[5:] for k in arrays if k.startswith("prop_"))
    return meta


def load_embedded() -> MolecularDataset:
    """The embedded default set (3,921 QM9 molecules, <= 7 heavy atoms), all properties.

    Coordinates are float32 values (as stored) widened to float64; properties as in
    :data:`secureml.data.qm9.PROPERTY_INFO`.
    """
    arrays = _arrays()
    n_atoms = arrays["n_atoms"].astype(np.int64)
    mask = np.arange(arrays["charges"].shape[1])[None, :] < n_atoms[:, None]
    charges = split_by_lengths(arrays["charges"][mask].astype(np.int64), n_atoms)
    coords = split_by_lengths(arrays["coordinates"][mask].astype(np.float64), n_atoms)
    meta = json.loads(str(arrays["meta"]))
    return MolecularDataset(
        charges=charges,
        coordinates=coords,
        properties={k[5:]: arrays[k].copy() for k in arrays if k.startswith("prop_")},
        names=arrays["names"].tolist(),
        smiles=arrays["smiles"].tolist(),
        provenance={
            "source": meta["source"],
            "reader": f"secureml embedded set (qm9pack {meta['qm9pack_version']}), {meta['selection']}",
            "units": meta["units"],
            "coordinates": meta["coordinates"],
        },
    )


def embedded_split(seed: int = 0, n_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 80/20 train/test split of :func:`load_embedded` (indices into it).

    A permutation from ``numpy.random.default_rng(seed)``: its first 20% (784 molecules) is the
    test set, the rest (3,137) the training set in permutation order. ``n_train`` keeps the first
    ``n_train`` training indices, so training sets for growing ``n_train`` are nested and the test
    set stays fixed.
    """
    n = int(len(_arrays()["n_atoms"]))
    n_test = int(round(TEST_FRACTION * n))
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    if n_train is not None:
        if not 0 < n_train <= len(train):
            raise DataError(f"n_train must be between 1 and {len(train)} for the embedded set, got {n_train}")
        train = train[:n_train]
    return train, test
