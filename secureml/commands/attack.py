"""``secureml attack NAME``: run one attack against one deployment of a model; JSON (+ PNG) out."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from secureml.runs import RESULTS, new_run_folder

NAMES = ("whitebox", "rf-whitebox", "reconstruct", "barzilai", "mia", "lira", "rank", "gnn-extract")

_HELP = {
    "whitebox": "rebuild the training molecules from a Coulomb-matrix KRR model file (charges, MDS geometry, "
                "RDKit bonds, SMILES)",
    "rf-whitebox": "recover training representations from random-feature weights, against the number of features",
    "reconstruct": "query-only reconstruction of the training representations (kink attack for Laplacian "
                   "kernels, free-centre fit otherwise)",
    "barzilai": "query-only reconstruction of a Gaussian-kernel model (Barzilai et al. 2025: query design, "
                "free-centre fit with restarts, sigma estimated with --estimate-sigma); --curve: recovered "
                "fraction against queries and N on synthetic data",
    "mia": "membership inference: loss threshold (Yeom et al.) and shadow models (offline LiRA)",
    "lira": "likelihood-ratio membership inference (Carlini et al. 2022): >= 16 shadow KRR models on a QM9 "
            "population, half of it members; TPR at 0.1% and 1% FPR, log-log ROC, at each --lams ridge",
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
                   help="any model file (.npz) written by `secureml train` (any data, any elements); its "
                        "training rows are located in --data; default: train one here on the embedded data "
                        "with --kernel/--n-train/--sigma/--lam")
    p.add_argument("--data", default=None,
                   help="with --model: the labelled data set holding its training molecules and the "
                        "attacker's public ones: embedded, qm9, a qmllib-*.tar.gz (QM7), a QM7 folder, "
                        ".npz or .extxyz (default: the data the model file's provenance names); without "
                        "--model the model is trained here on --n-train molecules of it (seeded permutation)")
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
    p.add_argument("--membership", choices=("measure", "grouped", "pairwise"), default="measure",
                   help="reconstruct/kink: assembly of coordinates shared by several training points -- "
                        "measure (3 queries per coordinate, near-linear in N, the strongest), grouped "
                        "(group membership tests, ~N^2), pairwise (one test per point and kink) "
                        "(default measure)")
    p.add_argument("--grid-step", type=float, default=1.0, help="reconstruct/kink: coarse grid step (default 1)")
    p.add_argument("--depth", type=int, default=4, help="reconstruct/kink: refinement levels (default 4)")
    p.add_argument("--curve", action="store_true",
                   help="reconstruct: run several budgets and plot recovered fraction vs queries")
    p.add_argument("--features", default="256,512,1024,2048,4096,8192",
                   help="rf-whitebox: comma-separated feature counts")
    p.add_argument("--restarts", type=int, default=3, help="barzilai: optimisation restarts (default 3)")
    p.add_argument("--estimate-sigma", action="store_true",
                   help="barzilai: estimate the kernel width from the answers instead of using the published one")
    p.add_argument("--ns", default="4,8,16,32", help="barzilai --curve: training-set sizes (default 4,8,16,32)")
    p.add_argument("--query-factors", default="0.5,1,2,4,8",
                   help="barzilai --curve: budgets as multiples of N (d + 2) (default 0.5,1,2,4,8)")
    p.add_argument("--curve-dim", type=int, default=5,
                   help="barzilai --curve: dimension of the synthetic data (default 5)")
    p.add_argument("--population", type=int, default=4000,
                   help="lira: QM9 molecules in the attacker's population; half train the target, so the "
                        "other half are the non-members (default 4,000: 2,000 each)")
    p.add_argument("--shadows", type=int, default=16, help="lira: shadow models (default 16)")
    p.add_argument("--lams", default="1e-8,1e-4,1e-2",
                   help="lira: comma-separated ridge values of the target (default 1e-8,1e-4,1e-2)")
    p.add_argument("--protocol-sample", type=int, default=4,
                   help="ot/fhe: queries answered by the real protocol (default 4)")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new results/attacks/NAME-DEPLOYMENT-<time>/ per run)")
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

    if args.model:
        return scenario.from_model(args.model, args.data)
    if args.data:
        return scenario.build_on(args.data, kernel, n_train=n_train, seed=args.seed, sigma=args.sigma, lam=args.lam)
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
    # one folder per run: no attack run overwrites another's results
    out = Path(args.out) if args.out else new_run_folder(RESULTS / "attacks", f"{name}-{target_kind}-")
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    t0 = time.perf_counter()
    if name == "rf-whitebox":
        result = _rf(args)
    elif name == "lira":
        result = _lira(args, target_kind, out)
    elif name == "barzilai" and args.curve:
        result = _barzilai_curve(args, out)
    else:
        kernel = args.kernel or ("laplacian" if name == "reconstruct" else "gaussian")
        n_train = args.n_train if args.n_train is not None else \
            {"whitebox": None, "reconstruct": 32, "barzilai": 8}.get(name, 1000)
        print(f"loading {args.model} ..." if args.model else
              f"training the model owner's {kernel} KRR on {args.data or 'the embedded data'} ...", file=sys.stderr)
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
                        depth=args.depth, seed=args.seed, membership=args.membership)
            elif name == "barzilai":
                result = experiments.barzilai_reconstruction(
                    tgt, scn, budget=args.budget, restarts=args.restarts, estimate_sigma=args.estimate_sigma,
                    seed=args.seed)
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
    print(f"wrote {path} (run folder {out})", file=sys.stderr)
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
            r = experiments.query_reconstruction(tgt, scn, method="kink", h=h, depth=depth, seed=args.seed,
                                                 membership=args.membership)
            rows.append({k: v for k, v in r.items() if not isinstance(v, dict)})
    else:
        for q in (256, 1024, 4096, 16384):
            r = experiments.query_reconstruction(tgt, scn, method="expansion", budget=q, seed=args.seed,
                                                 adam_steps=200, lbfgs_steps=50)
            rows.append({k: v for k, v in r.items() if not isinstance(v, dict)})
    _plot_curve(rows, Path(args.out) / "reconstruct_curve.png")
    best = max(rows, key=lambda r: r["value"])
    return {"attack": "reconstruct", "curve": rows, "metric": best["metric"], "value": best["value"],
            "queries": best["queries"]}


def _plot_curve(rows: list[dict[str, Any]], path: Path) -> None:
    from secureml.plot_style import legend_outside, log_axis, new_figure, save, series

    fig, ax = new_figure("normal")
    rows = sorted(rows, key=lambda r: r["queries"])
    q = [r["queries"] for r in rows]
    for i, (key, lab) in enumerate((("fraction_recovered_rel0.001", "points, rel. error < 1e-3"),
                                    ("fraction_recovered_rel0.01", "points, rel. error < 1e-2"),
                                    ("fraction_molecules_exact", "molecules (SMILES)"))):
        ax.plot(q, [r.get(key, float("nan")) for r in rows], label=lab, alpha=0.85, **{**series(i), "linestyle": "none"})
    for r in rows:
        if "depth" in r:  # kink attack: label each point with its finest grid step
            ax.annotate(f"step {r['h'] / r.get('refine', 8) ** r['depth']:.1e}",
                        (r["queries"], r.get("fraction_recovered_rel0.01", 0)), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    log_axis(ax.xaxis)
    ax.set_xlabel("queries")
    ax.set_ylabel("fraction of training set recovered")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"query-only reconstruction ({rows[0]['method']}, {rows[0]['kernel']}, N={rows[0]['n_train']})")
    legend_outside(ax)
    save(fig, path)


def _barzilai_curve(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Recovered fraction against queries and N (synthetic uniform data, Gaussian KRR)."""
    import csv

    import torch
    from tqdm import tqdm

    from attacks import barzilai
    from secureml.errors import SecureMLError

    torch.set_num_threads(1)  # many tiny fits: one thread is faster, and fair on a shared machine
    try:
        ns = tuple(int(v) for v in args.ns.split(",") if v.strip())
        fs = tuple(float(v) for v in args.query_factors.split(",") if v.strip())
    except ValueError:
        raise SecureMLError("--ns and --query-factors must be comma-separated numbers") from None
    sigma = args.sigma or 1.0
    with tqdm(total=len(ns) * len(fs), desc="barzilai curve", unit="run", file=sys.stderr) as bar:
        rows = barzilai.sweep(ns, fs, d=args.curve_dim, sigma=sigma, estimate=args.estimate_sigma,
                              restarts=args.restarts, seed=args.seed, progress=bar.update,
                              adam_steps=300, lbfgs_steps=100)
    tag = "est" if args.estimate_sigma else "known"
    png, csv_path = out / f"barzilai_curve_{tag}.png", out / f"barzilai_curve_{tag}.csv"
    barzilai.plot_sweep(rows, str(png))
    keys = [k for k in rows[0] if not isinstance(rows[0][k], list)]
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"N {r['n_train']:3d}  queries {r['queries']:6d} ({r['queries_over_n_d_plus_2']:.1f} N(d+2))  "
              f"sigma {r['sigma_used']:.3f}  recovered {r['fraction_recovered']:.2f}  "
              f"(nearest public point: {r['baseline_nearest_public']:.2f})", file=sys.stderr)
    print(f"wrote {png} and {csv_path}", file=sys.stderr)
    best = max(rows, key=lambda r: r["fraction_recovered"])
    return {"attack": "barzilai", "curve": rows, "metric": "fraction_recovered", "value": best["fraction_recovered"],
            "queries": best["queries"], "deployment": "api"}


def _lira(args: argparse.Namespace, target_kind: str, out: Path) -> dict[str, Any]:
    from tqdm import tqdm

    from attacks import lira
    from secureml.errors import SecureMLError

    try:
        lams = tuple(float(v) for v in args.lams.split(",") if v.strip())
    except ValueError:
        raise SecureMLError(f"--lams must be comma-separated numbers, got {args.lams!r}") from None
    if args.shadows < 4 or args.population < 20:
        raise SecureMLError("lira needs --shadows >= 4 and --population >= 20")
    data = None
    if args.data:
        from attacks import scenario

        data = scenario.load_data(args.data)
    with tqdm(total=args.shadows * len(lams), desc=f"lira @ {target_kind}", unit="shadow", file=sys.stderr) as bar:
        res = lira.run(data, kernel=args.kernel or "gaussian", sigma=args.sigma, lams=lams,
                       n_population=args.population, n_shadows=args.shadows, deployment=target_kind,
                       protocol_sample=args.protocol_sample, seed=args.seed, progress=bar.update)
    paths = lira.write_outputs(res, out)
    for r in res["rows"]:
        print(f"lambda {r['lam']:g}: test MAE {r['target_test_mae_kcal_mol']:.2f} kcal/mol; "
              + "; ".join(f"{k} AUC {r[k]['auc']:.3f} TPR@0.1%FPR {r[k]['tpr_at_0.001_fpr']:.4f} "
                          f"TPR@1%FPR {r[k]['tpr_at_0.01_fpr']:.4f}" for k in ("lira_online", "loss_threshold"))
              + " (chance: TPR = FPR)", file=sys.stderr)
    for v in paths.values():
        print(f"wrote {v}", file=sys.stderr)
    res.pop("roc")  # in lira.json and lira_roc.csv; keeps the printed JSON short
    return res


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
    _plot_rf(res, Path(args.out) / "rf_whitebox.png")
    res["deployment"] = "model-file"
    return res


def _plot_rf(res: dict[str, Any], path: Path) -> None:
    from secureml.plot_style import log_axis, new_figure, save, series

    rows = res["curve"]
    fig, ax = new_figure("normal")
    x = [r["features_over_nd"] for r in rows]
    ax.plot(x, [r["fraction_recovered"] for r in rows], label="training points recovered (rel. 1e-2)", **series(0))
    ax.plot(x, [r["pool_membership_precision_at_n"] for r in rows], label="members found in a pool",
            **{**series(1), "linestyle": "--"})
    ax.axvline(1.0, color="grey", lw=0.8)
    log_axis(ax.xaxis)
    ax.set_xlabel("features / (n (d + 1))")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"random-feature weights -> training data (n={res['n_train']})")
    ax.legend(loc="best")
    save(fig, path)
