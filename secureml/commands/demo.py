"""``secureml demo``: the main demonstration on the embedded default data."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on the embedded data and run a double-blind prediction")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--kernel", choices=("gaussian", "laplacian", "both"), default="both",
                   help="exact KRR model(s) to serve double-blind (default both)")
    p.add_argument("--out", default=None, help="run folder for the model files (default: runs/demo-<time>/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from secureml.demo import run_demo

    kernels = ("gaussian", "laplacian") if args.kernel == "both" else (args.kernel,)
    return run_demo(seed=args.seed, kernels=kernels, out_dir=args.out)
