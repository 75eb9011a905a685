"""``secureml demo``: the main demonstration on the embedded default data."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on the embedded data and run a double-blind prediction")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from secureml.demo import run_demo

    return run_demo(seed=args.seed)
