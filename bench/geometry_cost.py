"""What a SMILES query costs in accuracy: QM9 (B3LYP) geometries vs geometries we generate.

A model trained on QM9 learned B3LYP/6-31G(2df,p) equilibrium geometries. A query given as SMILES
gets its geometry from RDKit ETKDG (+ MMFF94, + GFN2-xTB relaxation); this script measures how much
the prediction error grows because of that, on the embedded set's seeded test split:

    python -m bench.geometry_cost --n-test 200 --out results/geometry_cost

Model: sorted Coulomb matrix + Laplacian-kernel KRR (secureml.representations / secureml.models),
sigma and lambda picked by 5-fold cross-validation on the training split; target U0 atomization
energy (kcal/mol). Writes ``<out>.json`` and ``<out>.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

GEOMETRIES = {
    "qm9": "QM9 B3LYP geometry (as trained)",
    "qm9_xtb": "QM9 geometry relaxed with GFN2-xTB",
    "etkdg": "SMILES -> RDKit ETKDG",
    "mmff": "SMILES -> ETKDG + MMFF94",
    "xtb": "SMILES -> ETKDG + MMFF94 + GFN2-xTB",
}


def _bond_rmsd(z: np.ndarray, ref: np.ndarray, x: np.ndarray) -> float:
    """RMS change of the bonded distances (< 1.6 Angstrom in the reference); atoms keep their order
    only for the QM9-derived geometries, so this is reported for those."""
    d0 = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    bonded = (d0 > 0) & (d0 < 1.6)
    return float(np.sqrt(np.mean((d - d0)[bonded] ** 2)))


def run(n_train: int | None = None, n_test: int = 200, seed: int = 0, property_name: str = "U0_atomization",
        progress: bool = True) -> dict:
    """Train on the embedded split's B3LYP geometries; predict test molecules from each geometry kind."""
    from tqdm import tqdm

    from secureml.data import embedded_split, load_embedded
    from secureml.data.dataset import MolecularDataset
    from secureml.data.geometry import relax_xtb, smiles_to_molecule
    from secureml.models.krr import KernelRidge, search_hyperparameters
    from secureml.representations.coulomb import CoulombMatrix

    data = load_embedded()
    train_idx, test_idx = embedded_split(seed=seed, n_train=n_train)
    test_idx = test_idx[:n_test]
    train, test = data.subset(train_idx), data.subset(test_idx)
    rep = CoulombMatrix(size=23, variant="sorted")
    X = rep.fit(train).transform(train)
    y = train.properties[property_name]
    t0 = time.perf_counter()
    best = search_hyperparameters(X, y, kernel="laplacian", sigmas=[10.0 ** e for e in (1.5, 2.0, 2.5, 3.0, 3.5)],
                                  lams=(1e-10, 1e-8), cv=5, seed=seed)
    model = KernelRidge(kernel="laplacian", sigma=best["sigma"], lam=best["lam"]).fit(X, y)
    fit_s = time.perf_counter() - t0

    geoms: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in GEOMETRIES}
    failed: dict[str, int] = {k: 0 for k in GEOMETRIES}
    seconds = {k: 0.0 for k in GEOMETRIES}
    keep = []
    for i in tqdm(range(len(test)), desc="geometries", unit="mol", disable=not progress):
        z, x = test.charges[i], test.coordinates[i]
        row = {"qm9": (z, x)}
        try:
            t = time.perf_counter()
            row["qm9_xtb"] = (z, relax_xtb(z, x)[0])
            seconds["qm9_xtb"] += time.perf_counter() - t
            for kind, relax in (("etkdg", None), ("mmff", "mmff"), ("xtb", "xtb")):
                t = time.perf_counter()
                row[kind] = smiles_to_molecule(test.smiles[i], relax=relax, seed=seed)
                seconds[kind] += time.perf_counter() - t
        except Exception as exc:  # a molecule RDKit or xTB cannot handle is left out of every column
            failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1
            continue
        keep.append(i)
        for k, v in row.items():
            geoms[k].append(v)
    truth = test.properties[property_name][keep]
    results = {}
    for kind, mols in geoms.items():
        ds = MolecularDataset([m[0] for m in mols], [m[1] for m in mols])
        pred = model.predict(rep.transform(ds))
        err = np.abs(pred - truth)
        results[kind] = {
            "description": GEOMETRIES[kind],
            "mae": float(err.mean()),
            "median_ae": float(np.median(err)),
            "seconds_per_molecule": seconds[kind] / max(len(keep), 1),
        }
    results["qm9_xtb"]["bond_rms_change_angstrom"] = float(
        np.mean([_bond_rmsd(z, x, x2) for (z, x), (_, x2) in zip(geoms["qm9"], geoms["qm9_xtb"])])
    )
    return {
        "property": property_name,
        "unit": "kcal/mol",
        "model": {"representation": "sorted Coulomb matrix (23)", "kernel": "laplacian", **{k: best[k] for k in ("sigma", "lam")},
                  "cv_mae": best["mae"], "fit_seconds": fit_s},
        "n_train": int(len(train)),
        "n_test": int(len(keep)),
        "test_rule": f"first {n_test} molecules of the embedded test split (seed {seed})",
        "failed": {k: v for k, v in failed.items() if v and k not in GEOMETRIES},
        "results": results,
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    kinds = list(report["results"])
    maes = [report["results"][k]["mae"] for k in kinds]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    bars = ax.barh([report["results"][k]["description"] for k in kinds][::-1], maes[::-1], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.set_xlabel(f"MAE of {report['property']} ({report['unit']})")
    ax.set_title(f"Query geometry vs accuracy\nsorted CM + Laplacian KRR, N = {report['n_train']}, "
                 f"{report['n_test']} test molecules", fontsize=9)
    ax.set_xlim(0, max(maes) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None, help="training molecules (default: the whole 80%% split)")
    parser.add_argument("--n-test", type=int, default=200, help="test molecules (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--property", default="U0_atomization")
    parser.add_argument("--out", type=Path, default=Path("results/geometry_cost"), help="output stem (.json, .png)")
    args = parser.parse_args(argv)
    report = run(args.n_train, args.n_test, args.seed, args.property)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plot(report, args.out.with_suffix(".png"))
    for kind, r in report["results"].items():
        print(f"{r['description']:<40} MAE {r['mae']:7.2f} {report['unit']}")
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
