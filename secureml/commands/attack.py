"""``secureml attack NAME``: run one attack against one deployment of a model; JSON (+ PNG) out."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

NAMES = ("whitebox", "rf-whitebox", "reconstruct", "mia", "rank", "gnn-extract")

_HELP = {
    "whitebox": "rebuild the training molecules from a Coulomb-matrix KRR model file (charges, MDS geometry, "
                "RDKit bonds, SMILES)",
    "rf-whitebox": "recover training representations from random-feature weights, against the number of features",
    "reconstruct": "query-only reconstruction of the training representations (kink attack for Laplacian "
                   "kernels, free-centre fit otherwise)",
    "mia": "membership inference: loss threshold (Yeom et al.) and shadow models (offline LiRA)",
    "rank": "candidate ranking: precision@K of training molecules in an auxiliary pool",
    "gnn-extract": "training-data extraction from a pretrained molecular GIN encoder (see _gnn_extract)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack",
        help="run one privacy attack against a model file, plaintext API, OT or FHE service",
        description="Run one attack against one deployment of a model trained on the embedded data. "
                    + " ".join(f"{n}: {h}." for n, h in _HELP.items())
                    + " The OT and FHE services answer a sample of the queries (--protocol-sample) "
                    "through the real two-party protocol over TCP; the rest come from the plaintext "
                    "model after the service's own input checks, and the cost is extrapolated.",
        epilog="examples: secureml attack whitebox --target model-file; "
               "secureml attack mia --target ot --protocol-sample 4; "
               "secureml attack reconstruct --kernel laplacian --n-train 32 --curve",
    )
    p.add_argument("name", choices=NAMES, help="which attack")
    p.add_argument("--target", choices=("model-file", "api", "ot", "fhe"), default=None,
                   help="deployment attacked: model-file (white box), api (plaintext predictions), ot "
                        "(double-blind OT service), fhe (CKKS service); default model-file for white-box "
                        "attacks, api otherwise")
    p.add_argument("--model", default=None,
                   help="model file (.npz) trained on the embedded split (`secureml train --data embedded "
                        "--n N --seed S`); default: train one here with --kernel/--n-train/--sigma/--lam")
    p.add_argument("--kernel", choices=("gaussian", "laplacian"), default=None,
                   help="kernel of the model trained here (default: laplacian for reconstruct, else gaussian)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training molecules (default: all 3,137 for whitebox, 32 for reconstruct, 1,000 otherwise)")
    p.add_argument("--sigma", type=float, default=None, help="kernel width (default: the recipe's)")
    p.add_argument("--lam", type=float, default=None, help="ridge (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="data split / attack seed (default 0)")
    p.add_argument("--budget", type=int, default=None,
                   help="query budget: expansion fit queries (reconstruct), candidates (mia: 2 x 300), pool "
                        "size (rank: 1000); the attack stops with an error when it would exceed it")
    p.add_argument("--method", choices=("auto", "kink", "expansion"), default="auto",
                   help="reconstruct: kink (exact, Laplacian), expansion (free-centre fit), auto")
    p.add_argument("--score", choices=("label", "kink", "reference"), default="label",
                   help="rank: score from predictions (label: |f - y|; kink: label-free, Laplacian)")
    p.add_argument("--grid-step", type=float, default=1.0, help="reconstruct/kink: coarse grid step (default 1)")
    p.add_argument("--depth", type=int, default=4, help="reconstruct/kink: refinement levels (default 4)")
    p.add_argument("--curve", action="store_true",
                   help="reconstruct: run several budgets and plot recovered fraction vs queries")
    p.add_argument("--features", default="256,512,1024,2048,4096,8192",
                   help="rf-whitebox: comma-separated feature counts")
    p.add_argument("--protocol-sample", type=int, default=4,
                   help="ot/fhe: queries answered by the real protocol (default 4)")
    p.add_argument("--out", default=None, help="output folder (default results/attacks)")
    from secureml.commands import _gnn_extract

    _gnn_extract.add_arguments(p)
    p.set_defaults(func=run)


class _Budget:
    """Wraps a target's predict and refuses to go past the query budget."""

    def __init__(self, target: Any, budget: int | None, bar: Any) -> None:
        self.target, self.budget, self.bar, self.used = target, budget, bar, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def predict(self, Q: Any) -> Any:
        from attacks.reconstruction import AttackError

        n = len(Q)
        if self.budget is not None and self.used + n > self.budget:
            raise AttackError(f"query budget {self.budget} exhausted ({self.used} used, {n} more asked)")
        self.used += n
        out = self.target.predict(Q)
        if self.bar is not None:
            self.bar.update(n)
        return out


def _scenario(args: argparse.Namespace, kernel: str, n_train: int | None) -> Any:
    from attacks import scenario
    from attacks.report import scenario_for

    if args.model:
        from secureml.models.pipeline import MolecularModel

        return scenario_for(MolecularModel.load(args.model), args.seed)
    return scenario.build(kernel, n_train=n_train, seed=args.seed, sigma=args.sigma, lam=args.lam)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from attacks import experiments
    from attacks.targets import make_target

    name = args.name
    if name == "gnn-extract":  # its own deployment (a released encoder) and options
        from secureml.commands import _gnn_extract

        return _gnn_extract.run(args)
    target_kind = args.target or ("model-file" if name in ("whitebox", "rf-whitebox") else "api")
    out = Path(args.out or "results/attacks")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if name == "rf-whitebox":
        result = _rf(args)
    else:
        kernel = args.kernel or ("laplacian" if name == "reconstruct" else "gaussian")
        n_train = args.n_train if args.n_train is not None else {"whitebox": None, "reconstruct": 32}.get(name, 1000)
        print(f"training the model owner's {kernel} KRR on the embedded data ...", file=sys.stderr)
        scn = _scenario(args, kernel, n_train)
        target = make_target(target_kind, scn.model, protocol_sample=args.protocol_sample)
        with tqdm(desc=f"{name} @ {target_kind}", unit="q", file=sys.stderr) as bar:
            tgt = _Budget(target, args.budget if name == "reconstruct" and args.method != "expansion" else None, bar)
            if name == "whitebox":
                bar.unit = "mol"
                result = experiments.whitebox_krr(tgt, scn, progress=bar.update)
            elif name == "reconstruct":
                if args.curve:
                    result = _curve(tgt, scn, args, bar)
                else:
                    result = experiments.query_reconstruction(
                        tgt, scn, method=args.method, budget=args.budget or 4096, h=args.grid_step,
                        depth=args.depth, seed=args.seed)
            elif name == "mia":
                result = experiments.mia(tgt, scn, n_each=(args.budget or 600) // 2, seed=args.seed)
            else:
                result = experiments.rank(tgt, scn, score=args.score, pool_size=args.budget or 1000, seed=args.seed)
        result["deployment"] = target_kind
        result["cost"] = target.cost()
    result["wall_seconds"] = time.perf_counter() - t0
    path = out / f"{name}_{target_kind}.json"
    path.write_text(json.dumps(result, indent=1, default=_default))
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve",)}, indent=1, default=_default))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _curve(tgt: Any, scn: Any, args: argparse.Namespace, bar: Any) -> dict[str, Any]:
    """Recovered fraction against queries: kink attack at growing resolution, or fit at growing budget."""
    from attacks import experiments

    rows = []
    if (args.method == "kink") or (args.method == "auto" and tgt.public.get("kernel") == "laplacian"):
        for h, depth in ((4.0, 1), (2.0, 2), (1.0, 2), (1.0, 3), (1.0, 4), (0.5, 4)):
            r = experiments.query_reconstruction(tgt, scn, method="kink", h=h, depth=depth, seed=args.seed)
            rows.append({k: v for k, v in r.items() if not isinstance(v, dict)})
    else:
        for q in (256, 1024, 4096, 16384):
            r = experiments.query_reconstruction(tgt, scn, method="expansion", budget=q, seed=args.seed,
                                                 adam_steps=200, lbfgs_steps=50)
            rows.append({k: v for k, v in r.items() if not isinstance(v, dict)})
    _plot_curve(rows, Path(args.out or "results/attacks") / "reconstruct_curve.png")
    best = max(rows, key=lambda r: r["value"])
    return {"attack": "reconstruct", "curve": rows, "metric": best["metric"], "value": best["value"],
            "queries": best["queries"]}


def _plot_curve(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    rows = sorted(rows, key=lambda r: r["queries"])
    q = [r["queries"] for r in rows]
    for key, lab, mk in (("fraction_recovered_rel0.001", "points, rel. error < 1e-3", "o"),
                         ("fraction_recovered_rel0.01", "points, rel. error < 1e-2", "s"),
                         ("fraction_molecules_exact", "molecules (SMILES)", "^")):
        ax.plot(q, [r.get(key, float("nan")) for r in rows], mk, label=lab, alpha=0.8)
    for r in rows:
        if "depth" in r:  # kink attack: label each point with its finest grid step
            ax.annotate(f"step {r['h'] / r.get('refine', 8) ** r['depth']:.1e}",
                        (r["queries"], r.get("fraction_recovered_rel0.01", 0)), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("fraction of training set recovered")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"query-only reconstruction ({rows[0]['method']}, {rows[0]['kernel']}, N={rows[0]['n_train']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rf(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from attacks import experiments, scenario
    from secureml.models.random_features import RandomFourierRidge

    feats = tuple(int(v) for v in args.features.split(",") if v.strip())
    n = args.n_train or 4
    kernel = args.kernel or "gaussian"
    sigma = args.sigma or (100.0 if kernel == "gaussian" else 10 ** 4.2)

    def factory(n_train: int, F: int) -> Any:
        est = RandomFourierRidge(kernel, sigma=sigma, n_features=F, lam=args.lam or 1e-8, seed=args.seed)
        return scenario.build(n_train=n_train, seed=args.seed, estimator=est)

    with tqdm(total=len(feats), desc="rf-whitebox", unit="F", file=sys.stderr) as bar:
        res = experiments.whitebox_rf(factory, n_train=n, features=feats, seed=args.seed, progress=bar.update)
    _plot_rf(res, Path(args.out or "results/attacks") / "rf_whitebox.png")
    res["deployment"] = "model-file"
    return res


def _plot_rf(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = [r["features_over_nd"] for r in rows]
    ax.plot(x, [r["fraction_recovered"] for r in rows], "o-", label="training points recovered (rel. 1e-2)")
    ax.plot(x, [r["pool_membership_precision_at_n"] for r in rows], "s--", label="members found in a pool")
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("features / (n (d + 1))")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"random-feature weights -> training data (n={res['n_train']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
