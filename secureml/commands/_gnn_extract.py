"""``secureml attack gnn-extract``: training-data extraction from a pretrained molecular GIN encoder.

Kept apart from :mod:`secureml.commands.attack` (which only registers the name and dispatches
here) so that torch / torch-geometric are imported only when this attack runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from secureml.runs import RESULTS, new_run_folder

HELP = ("training-data extraction from a pretrained molecular GIN encoder (Huang et al. 2024): "
        "scaffold+motif generation, learned score from shadow encoders, REINFORCE policy; P@K and FCD "
        "against random, QED-, SA-guided and policy-free baselines")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gnn-extract")
    g.add_argument("--family", default="attrmask",
                   help="gnn-extract: pretraining family of the target encoder: attrmask, graphcl, edgepred, "
                        "or a comma-separated list (default attrmask)")
    g.add_argument("--world", choices=("moses", "library"), default="moses",
                   help="gnn-extract: moses = natural MOSES molecules with a vocabulary scaffold and 1-2 "
                        "vocabulary motifs; library = a focused library generated over a small vocabulary "
                        "(default moses)")
    g.add_argument("--owner-scaffolds", type=int, default=None,
                   help="gnn-extract: the owner's library sits on this many scaffolds (moses: all pooled natural "
                        "molecules on them, 0 = a uniform draw from the pool; default 4 moses, 2 library)")
    g.add_argument("--n-private", type=int, default=None,
                   help="gnn-extract: molecules in the private pretraining set (default 100 library; moses: 500 "
                        "drawn for the pool, of which the owner keeps those on its scaffolds)")
    g.add_argument("--scaffolds", type=int, default=None, help="gnn-extract: scaffold vocabulary (100 / 10)")
    g.add_argument("--motifs", type=int, default=None, help="gnn-extract: motif vocabulary (30 / 10)")
    g.add_argument("--dim", type=int, default=64, help="gnn-extract: GIN width (paper: 300; default 64 for CPU)")
    g.add_argument("--layers", type=int, default=5, help="gnn-extract: GIN layers (default 5, as the paper)")
    g.add_argument("--epochs", type=int, default=None, help="gnn-extract: pretraining epochs (150 / 300)")
    g.add_argument("--batch-size", type=int, default=None, help="gnn-extract: pretraining batch (64 / 16)")
    g.add_argument("--lr", type=float, default=None, help="gnn-extract: pretraining learning rate (2e-3 / 1e-3)")
    g.add_argument("--no-fcd", action="store_true", help="gnn-extract: skip the Frechet ChemNet Distance")
    g.add_argument("--methods", default=None,
                   help="gnn-extract: the table rows to run, separated by ';' (default all): " + "; ".join(
                       ["random aux", "random generation", "QED-guided", "SA-guided", "scoring w/o policy",
                        "scoring w/o policy, prior-weighted", "attack, first policy (v1)", "attack, PPO policy",
                        "attack (policy + scoring)"]))
    g.add_argument("--policy", choices=("reinforce", "ppo"), default="reinforce",
                   help="gnn-extract: trainer of the attack row's policy (default reinforce)")
    g.add_argument("--beta", type=float, default=3.0,
                   help="gnn-extract: prior weight of the attack's objective, standardised score + beta log prior "
                        "(default 3; 0 = the score alone)")
    g.add_argument("--gnn-score", choices=("learned", "krr-kink", "krr-label"), default="learned",
                   help="gnn-extract: the generator's scoring function: the learned score on the released encoder "
                        "(default), or a served Laplacian KRR model on the same private molecules (Morgan count "
                        "fingerprints, logP): its label-free kink score or its label score; --target api|ot picks "
                        "the deployment (default api; ot: 4 sampled queries through the real OT protocol)")


def run(args: argparse.Namespace) -> int:
    import torch

    from attacks.gnn import experiment
    from attacks.gnn.space import generated_corpus
    from secureml.errors import DataError

    torch.set_num_threads(1)  # shared CPUs: one thread is as fast per core and leaves the rest free
    lib = args.world == "library"
    n_private = args.n_private or (100 if lib else 500)
    S = args.scaffolds or (10 if lib else 100)
    M = args.motifs or (10 if lib else 30)
    budget = args.budget or (1000 if lib else 2000)
    owner = args.owner_scaffolds if args.owner_scaffolds is not None else (2 if lib else 4)
    out = Path(args.out) if args.out else new_run_folder(RESULTS / "attacks", "gnn-extract-")
    results: dict[str, Any] = {}
    for fam in [f.strip() for f in args.family.split(",") if f.strip()]:
        if fam not in ("attrmask", "graphcl", "edgepred"):
            raise DataError(f"unknown family {fam!r}: choose attrmask, graphcl or edgepred")
        corpus = generated_corpus(n_private=n_private, n_scaffolds=S, n_motifs=M, owner_scaffolds=owner,
                                  seed=args.seed) if lib else None
        log = lambda s: print(s, file=sys.stderr)  # noqa: E731
        world = experiment.prepare(
            fam, n_private=n_private, n_scaffolds=S, n_motifs=M, dim=args.dim, n_layers=args.layers,
            epochs=args.epochs or (300 if lib else 150), lr=args.lr or (1e-3 if lib else 2e-3),
            batch_size=args.batch_size or (16 if lib else 64), n_score_neg=3 * n_private if lib else 1000,
            owner_scaffolds=0 if lib else owner, seed=args.seed, corpus=corpus, log=log)
        score = None
        deployment = args.target or "api"
        if args.gnn_score != "learned":
            from attacks.gnn.krr_target import ServiceScore, train_service

            if deployment not in ("api", "ot"):
                raise DataError(f"--gnn-score {args.gnn_score} needs --target api or ot, not {deployment}")
            svc = train_service(world.corpus.private, deployment)
            score = ServiceScore(svc, args.gnn_score.split("-")[1], public=world.corpus.aux[:500])
        methods = [m.strip() for m in args.methods.split(";")] if args.methods else None
        res = experiment.run_methods(world, budget=budget, seed=args.seed, fcd_on=not args.no_fcd, methods=methods,
                                     log=log, score=score, algo=args.policy, beta=args.beta)
        res["world"] = args.world
        res["score"] = args.gnn_score
        if score is not None:
            res["service"] = {"deployment": deployment, "sigma": svc.sigma, "n_bits": svc.n_bits,
                              "kink_step": svc.h, "cost": svc.target.cost()}
            fam = f"{fam}_{args.gnn_score}_{deployment}"
            res["family"] = fam
        paths = experiment.write(res, out / args.world)
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
        results[fam] = res
    print(json.dumps({f: {"chance": r["chance_precision"], "rows": r["rows"]} for f, r in results.items()},
                     indent=1, default=float))
    return 0
