"""Learning curve and timings of the qml-lightning-style local model on QM9 (U0 atomization energy).

Protocol (mirrors the qml-lightning reference run in /work/shared/ANCHORS.md):

* ``--n-pool`` (20,000) random QM9 molecules (``load_qm9(n, seed)``); the first ``--n-test``
  (2,000) of them are the fixed test set, training sets are the first N of the rest (nested);
* PCA bases fitted on *public* QM9 molecules outside that pool (``public_pca_dataset``), so no
  training or test molecule shapes the public feature map;
* FCHL19 with qml-lightning's QM9 settings, sigma 6, lambda 1e-8, npcas 128, per-element self
  energies; 16,384 features (nstacks 128) and 4,096 features (nstacks 32).

Writes ``local_model_bench.json`` and ``local_model_bench.png`` (MAE vs N, log axes, with the
reference points) to ``--out``. Run::

    .venv/bin/python -m bench.local_model_bench --out bench/results/local_model
    .venv/bin/python -m bench.local_model_bench --quick --out /tmp/lm   # a 1-minute smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# qml-lightning, unmodified, on an H100 (ANCHORS.md): MAE in kcal/mol by (features, N).
REFERENCE = {16384: {1024: 1.68, 4096: 0.93, 16384: 0.49}, 4096: {1024: 1.80, 4096: 1.03, 16384: 0.68}}
PROP = "U0_atomization"


def _parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from secureml.data import load_qm9
    from secureml.models.local import LocalRandomFeatureModel, public_pca_dataset
    from secureml.representations.fchl import FCHL19

    rep = FCHL19()
    t0 = time.perf_counter()
    pool = load_qm9(n=args.n_pool, seed=args.seed, properties=[PROP])
    pca_ds = public_pca_dataset(pool.names, rep.elements, n_molecules=args.pca_molecules,
                                environments=args.pca_environments, seed=args.seed)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    envs = rep.transform(pool, progress=True)
    t_rep = time.perf_counter() - t0
    pca_envs = rep.transform(pca_ds, progress=True)
    y = pool.properties[PROP]
    test_idx = np.arange(args.n_test)
    train_all = np.arange(args.n_test, len(pool))
    env_test, y_test = envs.subset(test_idx), y[test_idx]

    runs = []
    jobs = [(nst, n) for nst in args.nstacks for n in args.sizes if n <= len(train_all)]
    for nstacks, n in tqdm(jobs, desc="local-sorf fits", unit="fit"):
        idx = train_all[:n]
        env_tr = envs.subset(idx)
        model = LocalRandomFeatureModel(sigma=args.sigma, lam=args.lam, npcas=128, nstacks=nstacks,
                                        seed=args.seed, device=args.device, num_threads=args.threads)
        t0 = time.perf_counter()
        model.fit(env_tr, y[idx], pca_data=pca_envs)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(env_test)
        t_pred = time.perf_counter() - t0
        # Single-molecule latency: FCHL19 + features + dot product, one query at a time.
        single = []
        for i in range(args.n_single):
            mol = pool.subset([int(test_idx[i])])
            s0 = time.perf_counter()
            model.predict(rep.transform(mol))
            single.append(time.perf_counter() - s0)
        mae = float(np.abs(pred - y_test).mean())
        ref = REFERENCE.get(model.n_random_features, {}).get(n)
        runs.append({
            "n_train": n, "n_features": model.n_random_features, "nstacks": nstacks, "mae": mae,
            "rmse": float(np.sqrt(np.mean((pred - y_test) ** 2))),
            "reference_mae": ref, "ratio_to_reference": (mae / ref) if ref else None,
            "fit_seconds": t_fit,
            "fit_plus_fchl_seconds": t_fit + t_rep * n / len(pool),
            "predict_seconds_per_molecule_batch": t_pred / len(test_idx),
            "predict_seconds_per_molecule_single_incl_fchl": float(np.median(single)) if single else None,
            "ridge_shift": model.ridge_shift_,
        })
        tqdm.write(f"F={model.n_random_features:6d} N={n:6d}  MAE {mae:.3f} kcal/mol"
                   f"{f' (reference {ref})' if ref else ''}  fit {t_fit:.1f} s  "
                   f"predict {1e6 * t_pred / len(test_idx):.0f} us/molecule (batch)")
        del model, env_tr

    return {
        "benchmark": "local random-feature model (qml-lightning style), QM9 U0 atomization energy",
        "settings": {
            "n_pool": args.n_pool, "n_test": args.n_test, "seed": args.seed, "sigma": args.sigma,
            "lam": args.lam, "npcas": 128, "representation": rep.get_params(),
            "pca": {"molecules": len(pca_ds), "environments_per_element_min": args.pca_environments,
                    "source": "QM9 molecules outside the 20,000-molecule pool"},
            "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "blas_threads": os.environ.get("SECUREML_BLAS_THREADS", "1"),
            "torch_threads": args.threads or torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "load_seconds": t_load,
        "fchl_seconds_per_molecule": t_rep / len(pool),
        "runs": runs,
        "reference": {str(k): v for k, v in REFERENCE.items()},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    by_f: dict[int, list[dict]] = {}
    for r in result["runs"]:
        by_f.setdefault(r["n_features"], []).append(r)
    for (f, rs), color in zip(sorted(by_f.items(), reverse=True), ("C0", "C1", "C2", "C3")):
        rs = sorted(rs, key=lambda r: r["n_train"])
        ax.plot([r["n_train"] for r in rs], [r["mae"] for r in rs], "o-", color=color, label=f"secureml, F={f}")
        ref = REFERENCE.get(f)
        if ref:
            ax.plot(list(ref), list(ref.values()), "x--", color=color, alpha=0.6, label=f"qml-lightning (H100), F={f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training molecules N")
    ax.set_ylabel("MAE U0 atomization (kcal/mol)")
    ax.set_title("QM9, 2,000 test molecules")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_parse_ints, default=[1024, 4096, 16384], help="training sizes N")
    p.add_argument("--nstacks", type=_parse_ints, default=[128, 32], help="SORF stacks (F = 128 * nstacks)")
    p.add_argument("--n-pool", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--n-single", type=int, default=20, help="single-molecule latency samples")
    p.add_argument("--pca-molecules", type=int, default=2000)
    p.add_argument("--pca-environments", type=int, default=1024)
    p.add_argument("--sigma", type=float, default=6.0)
    p.add_argument("--lam", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the feature map (default: torch's setting)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--quick", action="store_true", help="small smoke run: N = 256, 1024; 3,000-molecule pool")
    p.add_argument("--out", type=Path, default=Path("bench/results/local_model"))
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.nstacks, args.n_pool, args.n_test = [256, 1024], [32, 8], 3000, 500
        args.pca_molecules = 500
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "local_model_bench.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "local_model_bench.png")
    print(f"wrote {args.out / 'local_model_bench.json'} and {args.out / 'local_model_bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
