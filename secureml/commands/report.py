"""``secureml report leakage``: the attacks x deployments matrix on the embedded data."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from secureml.runs import output_folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="reports; `secureml report leakage` runs every attack against every deployment",
        description="Reports. `leakage` runs every attack (white-box extraction, membership inference, "
                    "candidate ranking, query-only reconstruction) against every deployment of the same "
                    "model (model file, plaintext API, OT service, FHE service) on the embedded data and "
                    "writes leakage.md / .csv / .json / .png: the leakage metric beside its chance "
                    "baseline, the queries used and the attacker's total cost (seconds, bytes); the "
                    "figure plots leakage above chance against cost, one panel per attack. Takes "
                    "several minutes (--quick: about a minute, smaller models): the services answer a "
                    "sample of the queries through the real protocols.",
        epilog="examples: secureml report leakage --out results/leakage; "
               "secureml report leakage --quick --deployments model-file,api,ot",
    )
    p.add_argument("what", choices=("leakage", "defenses"),
                   help="which report: leakage (attacks x deployments) or defenses (attacks x defenses: "
                        "leakage beside chance against MAE and cost per query, Pareto fronts)")
    p.add_argument("--no-protocol", action="store_true",
                   help="defenses: skip the real OT sessions that measure each output defense's cost")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new results/leakage/<time>/ or results/defenses/<time>/ per run)")
    p.add_argument("--attacks", default=None,
                   help="comma-separated subset of: whitebox, mia, rank-label, rank-kink, reconstruct-kink, "
                        "reconstruct-fit, reconstruct-barzilai (default all); for `defenses`: mia, rank-kink, extract, "
                        "reconstruct-kink (default), kkt (DP-SGD victims of the KKT attack: ~10 CPU minutes) and gnn-extract "
                        "(DP-SGD-pretrained GIN encoders against training-data extraction: ~1 CPU minute quick)")
    p.add_argument("--deployments", default="model-file,api,ot,fhe",
                   help="comma-separated subset of model-file, api, ot, fhe (default all four)")
    p.add_argument("--ot-sample", type=int, default=4, help="queries per attack through the real OT protocol")
    p.add_argument("--fhe-sample", type=int, default=2, help="queries per attack through the real FHE protocol")
    p.add_argument("--seed", type=int, default=0, help="split / attack seed (default 0)")
    p.add_argument("--quick", action="store_true",
                   help="leakage: smaller models and budgets (N = 300 / 8 training molecules, fewer queries): "
                        "the same attacks and figure in about a minute; defenses: fewer strengths and attacker "
                        "repeats, F = 1,024 (under 5 minutes); numbers are not the documented ones")
    from secureml.sweep import add_scheduler_argument

    add_scheduler_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "defenses":
        return run_defenses(args)
    from tqdm import tqdm

    from attacks.report import ATTACKS, leakage_matrix, leakage_summary, write_report

    attacks = [a.strip() for a in args.attacks.split(",")] if args.attacks else [a[0] for a in ATTACKS]
    known = {a[0] for a in ATTACKS}
    unknown = set(attacks) - known
    if unknown:
        from secureml.errors import SecureMLError

        raise SecureMLError(f"unknown attack(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    deps = [d.strip() for d in args.deployments.split(",") if d.strip()]
    with tqdm(total=len(attacks) * len(deps), desc="leakage matrix", unit="cell", file=sys.stderr) as bar:
        def step(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        rows = leakage_matrix(attacks=attacks, deployments=deps,
                              protocol_sample={"ot": args.ot_sample, "fhe": args.fhe_sample},
                              seed=args.seed, quick=args.quick, progress=step, scheduler=args.scheduler)
    paths = write_report(rows, output_folder(args.out, "leakage"))
    print(paths["md"].read_text())
    print(leakage_summary(rows))
    for k, v in paths.items():
        print(f"wrote {v}", file=sys.stderr)
    return 0


def run_defenses(args: argparse.Namespace) -> int:
    """``secureml report defenses``: attacks (mia, rank-kink, extract) x defenses."""
    from tqdm import tqdm

    from attacks.defenses import matrix, report
    from secureml.errors import SecureMLError

    attacks = [a.strip() for a in args.attacks.split(",")] if args.attacks else list(matrix.ATTACKS)
    unknown = set(attacks) - set(matrix.ATTACKS) - set(matrix.OPTIONAL_ATTACKS) - {"kkt", "gnn-extract"}
    if unknown:
        raise SecureMLError(f"unknown attack(s) {', '.join(sorted(unknown))} for `report defenses`; "
                            f"known: {', '.join([*matrix.ATTACKS, *matrix.OPTIONAL_ATTACKS])}, kkt, gnn-extract")
    out = output_folder(args.out, "defenses")
    n = len(set(attacks) - {"kkt", "gnn-extract"}) * len(matrix.defenses(args.quick)) + 1 \
        + (0 if args.no_protocol else 1) + ("kkt" in attacks) + ("gnn-extract" in attacks)
    with tqdm(total=n, desc="defense matrix", unit="cell", file=sys.stderr) as bar:
        def step(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        res = report.run(attacks, quick=args.quick, seed=args.seed, with_protocol=not args.no_protocol,
                         progress=step)
    paths = report.write(res, out)
    print(paths["md"].read_text())
    for v in paths.values():
        print(f"wrote {v}", file=sys.stderr)
    return 0
