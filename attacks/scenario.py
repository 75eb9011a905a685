"""The attack scenarios on the embedded data: who holds what.

The model owner trains on (part of) the embedded training split; the attacker owns public
molecules -- the embedded test split, which is never trained on -- with their QM9 labels, and
knows the published hyperparameters (kernel, sigma, lambda, representation).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from secureml.data import embedded_split, load_embedded, load_qm9, read_extxyz, read_npz, read_qm7
from secureml.data.dataset import MolecularDataset
from secureml.errors import DataError
from secureml.models import build_model
from secureml.models.pipeline import MolecularModel
from secureml.representations.coulomb import CoulombMatrix

PROPERTY = "U0_atomization"


@dataclass
class Scenario:
    data: MolecularDataset  # the whole embedded set
    X: np.ndarray  # its Coulomb-matrix features (all molecules)
    y: np.ndarray  # the property (kcal/mol)
    train: np.ndarray  # indices the model was trained on
    public: np.ndarray  # indices the attacker owns (never trained on)
    model: Any  # fitted MolecularModel

    @property
    def X_train(self) -> np.ndarray:
        return self.X[self.train]


@lru_cache(maxsize=4)
def embedded_features(cm_size: int = 29, variant: str = "sorted", grid_bits: int | None = None
                      ) -> tuple[MolecularDataset, np.ndarray, np.ndarray]:
    """The embedded data set, its Coulomb matrices and U0 atomization energies (cached).

    ``grid_bits``: entries rounded to multiples of 2^-grid_bits, as models meant for the OT
    service store them (``secureml train`` default 16).
    """
    data = load_embedded()
    X = CoulombMatrix(size=cm_size, variant=variant, grid_bits=grid_bits).transform(data)
    X.setflags(write=False)
    return data, X, np.asarray(data.properties[PROPERTY], dtype=np.float64)


def build(kernel: str = "gaussian", n_train: int | None = None, seed: int = 0, sigma: float | None = None,
          lam: float | None = None, cm_size: int = 29, variant: str = "sorted", grid_bits: int | None = None,
          estimator: Any = None) -> Scenario:
    """Fit the model owner's model on the first ``n_train`` molecules of the embedded split.

    ``estimator``: any fitted-to-be estimator (e.g. RandomFourierRidge) instead of exact KRR.
    """
    data, X, y = embedded_features(cm_size, variant, grid_bits)
    train, test = embedded_split(seed=seed, n_train=n_train)
    if estimator is None:
        opts: dict[str, Any] = {"cm_size": cm_size, "cm_variant": variant}
        if sigma is not None:
            opts["sigma"] = sigma
        if lam is not None:
            opts["lam"] = lam
        mm = build_model(f"krr-{kernel}", **opts)
        mm.representation = CoulombMatrix(size=cm_size, variant=variant, grid_bits=grid_bits)
    else:
        mm = MolecularModel(CoulombMatrix(size=cm_size, variant=variant, grid_bits=grid_bits), estimator)
    mm.estimator.fit(X[train], y[train])
    mm.property_name = PROPERTY
    mm.provenance = {"source": "secureml embedded set", "n_train": int(len(train)), "split_seed": seed}
    return Scenario(data, X, y, np.asarray(train), np.asarray(test), mm)


# ---------------------------------------------------------------------------------------------
# any model file the project writes
# ---------------------------------------------------------------------------------------------
def load_data(spec: str) -> MolecularDataset:
    """A labelled data set by name or path: ``embedded``, ``qm9`` (all of qm9pack), a qmllib
    source distribution (``*.tar.gz``: its QM7 copy), a QM7 folder (``DIR`` with ``DIR/../hof_qm7.txt``
    or ``DIR:ENERGIES``), or a ``.npz`` / ``.extxyz`` file written by secureml."""
    import tempfile
    from pathlib import Path

    if spec == "embedded":
        return load_embedded()
    if spec == "qm9":
        return load_qm9()
    path, _, energies = spec.partition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    if p.is_file() and p.name.endswith(".tar.gz"):
        xyz, prop = _qmllib_qm7(p, Path(tempfile.mkdtemp(prefix="secureml-qm7-")))
        return read_qm7(xyz, prop)
    if p.is_dir():
        prop = Path(energies) if energies else p.parent / "hof_qm7.txt"
        return read_qm7(p, prop)
    if p.suffix == ".npz" and p.is_file():
        return read_npz(p)
    if p.suffix in (".extxyz", ".xyz") and p.is_file():
        return read_extxyz(p)
    raise DataError(f"cannot read data {spec!r}: use embedded, qm9, a qmllib-*.tar.gz, a QM7 folder, "
                    ".npz or .extxyz")


def _qmllib_qm7(sdist: Any, dest: Any) -> tuple[Any, Any]:
    """QM7's xyz files and hof_qm7.txt from a qmllib source distribution, each written by its base
    name only (so no member path can write outside ``dest``)."""
    import tarfile
    from pathlib import PurePosixPath

    xyz_dir = dest / "qm7"
    xyz_dir.mkdir(parents=True, exist_ok=True)
    prop = None
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar.getmembers():
            parts = PurePosixPath(m.name).parts
            if not m.isfile() or "assets" not in parts:
                continue
            name = parts[-1]
            if len(parts) >= 2 and parts[-2] == "qm7" and name.endswith(".xyz"):
                out = xyz_dir / name
            elif name == "hof_qm7.txt":
                out = prop = dest / name
            else:
                continue
            fh = tar.extractfile(m)
            if fh is not None:
                out.write_bytes(fh.read())
    if prop is None or not any(xyz_dir.iterdir()):
        raise DataError(f"{sdist}: no tests/assets/qm7/*.xyz and hof_qm7.txt inside (not a qmllib sdist?)")
    return xyz_dir, prop


def _data_from_provenance(model: Any) -> MolecularDataset:
    """The data set a model file says it was trained on (embedded set or a qm9pack selection)."""
    prov = getattr(model, "provenance", {}) or {}
    if prov.get("data") == "embedded" or "secureml embedded set" in str(prov.get("reader", "")):
        return load_embedded()
    sel = prov.get("selection")
    if isinstance(sel, dict) and "qm9pack" in str(prov.get("reader", "")):
        return load_qm9(n=sel.get("n"), max_heavy_atoms=sel.get("max_heavy_atoms"), seed=int(sel.get("seed", 0)))
    raise DataError(f"the model file does not say where its data came from ({prov.get('source', 'no source')}); "
                    "pass the data set (--data)")


def match_rows(rows: np.ndarray, X: np.ndarray, rel_tol: float = 1e-6, chunk: int = 2048) -> np.ndarray:
    """Index into ``X`` of each row of ``rows`` (-1 where no row of X equals it to ``rel_tol``).

    Squared distances by one matrix product per chunk (BLAS), so tens of thousands of rows take
    seconds.
    """
    X = np.asarray(X, dtype=np.float64)
    x2 = np.einsum("ij,ij->i", X, X)
    out = np.full(len(rows), -1, dtype=np.int64)
    for s in range(0, len(rows), chunk):
        r = np.asarray(rows[s:s + chunk], dtype=np.float64)
        r2 = np.einsum("ij,ij->i", r, r)
        d2 = r2[:, None] + x2[None, :] - 2.0 * r @ X.T
        j = np.argmin(d2, axis=1)
        ok = np.sqrt(np.maximum(d2[np.arange(len(r)), j], 0.0)) <= rel_tol * (np.sqrt(r2) + 1e-12) + 1e-9
        out[s:s + chunk] = np.where(ok, j, -1)
    return out


def _members_by_digest(model: Any, data: MolecularDataset) -> np.ndarray | None:
    """Training indices of a model without stored representations, from its names digest."""
    import hashlib

    prov = getattr(model, "provenance", {}) or {}
    digest, n = prov.get("train_names_sha256"), prov.get("n_train")
    if not digest or not n or not data.names:
        return None
    candidates = []
    if len(data) == 3921:  # the embedded set: seeded splits
        candidates += [embedded_split(s, int(n))[0] for s in range(64)]
    candidates += [np.arange(len(data))[len(data) - int(n):], np.arange(int(n))]  # qm9 layout: test first
    for idx in candidates:
        if hashlib.sha256("\n".join(data.names[i] for i in idx).encode()).hexdigest() == digest:
            return np.asarray(idx)
    return None


def from_model(model: Any, data: MolecularDataset | str | None = None) -> Scenario:
    """A Scenario around any model file the project writes.

    ``data``: a labelled data set holding the training molecules and others (the attacker's public
    pool); default: the one the file's provenance names (embedded set or qm9pack selection).
    Members are the data rows whose representation equals a stored training row (exact KRR), or,
    for models that store no rows (random features), the split whose names match the file's
    digest. Labels are the model's property minus its baseline (what the estimator was fitted on).
    """
    if isinstance(model, str):
        model = MolecularModel.load(model)
    if isinstance(data, str):
        data = load_data(data)
    if data is None:
        data = _data_from_provenance(model)
    prop = model.property_name
    if prop not in data.properties:
        raise DataError(f"the data set has no {prop!r} values (it has {', '.join(sorted(data.properties))})")
    X = np.asarray(model.representation.transform(data), dtype=np.float64)
    y = np.asarray(data.properties[prop], dtype=np.float64) - np.asarray(model.baseline_energy(data), dtype=np.float64)
    est = model.estimator
    if hasattr(est, "X_fit_"):
        idx = match_rows(np.asarray(est.X_fit_), X)
        missing = int((idx < 0).sum())
        if missing:
            raise DataError(f"{missing} of {len(idx)} training rows of the model are not in the data set; "
                            "pass the data it was trained on (--data)")
        train = idx
    else:
        train = _members_by_digest(model, data)
        if train is None:
            raise DataError("cannot tell which molecules trained this model (no stored rows, no matching "
                            "names digest); pass the data it was trained on (--data)")
    public = np.setdiff1d(np.arange(len(data)), train)
    Xr = X.copy()
    Xr.setflags(write=False)
    return Scenario(data, Xr, y, np.asarray(train), public, model)


def build_on(data: MolecularDataset | str, kernel: str = "gaussian", n_train: int | None = None, seed: int = 0,
             sigma: float | None = None, lam: float | None = None, prop: str | None = None,
             cm_size: int | None = None) -> Scenario:
    """Fit the model owner's CM KRR on the first ``n_train`` molecules of a seeded permutation of
    any labelled data set (the rest is the attacker's public pool); sorted CM sized to the data."""
    if isinstance(data, str):
        data = load_data(data)
    prop = prop or (PROPERTY if PROPERTY in data.properties else next(iter(data.properties), None))
    if prop is None or prop not in data.properties:
        raise DataError(f"the data set has no property {prop!r}")
    size = cm_size or int(max(len(c) for c in data.charges))
    perm = np.random.default_rng(seed).permutation(len(data))
    n = min(int(n_train), len(data) - 1) if n_train is not None else int(0.8 * len(data))
    train, public = perm[:n], perm[n:]
    opts: dict[str, Any] = {"cm_size": size, "cm_variant": "sorted"}
    if sigma is not None:
        opts["sigma"] = sigma
    if lam is not None:
        opts["lam"] = lam
    mm: MolecularModel = build_model(f"krr-{kernel}", **opts)
    mm.fit(data.subset(train), prop)
    X = np.asarray(mm.representation.transform(data), dtype=np.float64)
    X.setflags(write=False)
    return Scenario(data, X, np.asarray(data.properties[prop], dtype=np.float64), train, public, mm)
