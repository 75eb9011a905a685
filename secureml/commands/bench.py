"""``secureml bench``: cost benchmarks (leakage has its own `secureml report leakage`)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="cost benchmarks: every engine side by side")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    from bench import cost

    c = bsub.add_parser("cost", help="time, traffic, rounds and error of every engine vs training size",
                        description=cost.__doc__)
    cost.add_arguments(c)
    c.set_defaults(func=lambda a: cost.run(a))
    p.set_defaults(func=lambda a: p.print_help() or 0)
