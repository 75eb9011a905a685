"""Measure the baseline engines on a real model: ``python -m protocols.baselines.fhe.measure --help``.

Trains exact Gaussian KRR on a seeded subset of the 21,800 QM9 molecules with <= 8 heavy atoms
(qm9pack; sorted Coulomb matrix of size 29, i.e. 435 features; U0 atomization energy,
kcal/mol; sigma 74 and lambda 1e-8 as in the published study), then runs each requested engine as
two processes over TCP loopback on the same held-out queries and prints one JSON line per
(engine, N): wall/offline/online time per party, bytes each way, rounds, peak memory and
|prediction - plaintext|. Used for the figures in docs/baselines.md; ``secureml bench cost``
is the full side-by-side benchmark.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def build_model(n_train: int, n_queries: int, seed: int = 0, sigma: float = 74.0, lam: float = 1e-8):
    from protocols.common import KernelModelParams
    from secureml.data.qm9 import load_qm9
    from secureml.models.krr import KernelRidge
    from secureml.representations.coulomb import CoulombMatrix

    ds = load_qm9(n=n_train + n_queries, max_heavy_atoms=8, seed=seed, properties=["U0_atomization"])
    X = CoulombMatrix(size=29).fit(ds).transform(ds)
    y = np.asarray(ds.properties["U0_atomization"], dtype=np.float64)
    tr, te = np.arange(n_train), np.arange(n_train, n_train + n_queries)
    est = KernelRidge(sigma=sigma, lam=lam).fit(X[tr], y[tr])
    return KernelModelParams.from_estimator(est), X[te]


def run_engine(name: str, model: Any, Q: np.ndarray, opts: dict[str, Any]) -> dict[str, Any]:
    if name == "fhe":
        from protocols.baselines.fhe import run_local
    elif name == "crypten":
        from protocols.baselines.crypten_engine import run_local
    elif name == "generic":
        from protocols.baselines.generic_mpc import run_local
    else:
        raise SystemExit(f"unknown engine {name}")
    t0 = time.perf_counter()
    pred, cc, sc = run_local(model, Q, **opts)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    ref = model.predict(Q)
    plain_s = (time.perf_counter() - t1) / len(Q)
    return {
        "engine": name, "n_train": model.n_train, "n_features": model.n_features, "n_queries": len(Q),
        "opts": opts, "wall_both_s": wall, "plaintext_s_per_query": plain_s,
        "abs_err": np.abs(pred - ref).tolist(), "client": cc.to_dict(), "server": sc.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["fhe", "crypten", "generic"], nargs="+", default=["fhe"])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256], help="training sizes")
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--flood-bits", type=int, default=None, help="FHE statistical flooding parameter s")
    ap.add_argument("--frac-bits", type=int, default=None, help="generic MPC / CrypTen fractional bits")
    ap.add_argument("--out", default=None, help="append JSON lines to this file")
    args = ap.parse_args(argv)
    for n in args.n:
        model, Q = build_model(n, args.queries)
        for eng in args.engine:
            opts: dict[str, Any] = {}
            if eng == "fhe" and args.flood_bits is not None:
                opts["flood_bits"] = args.flood_bits
            if eng == "generic" and args.frac_bits is not None:
                opts["frac_bits"] = args.frac_bits
            if eng == "crypten" and args.frac_bits is not None:
                opts["precision_bits"] = args.frac_bits
            rec = run_engine(eng, model, Q, opts)
            line = json.dumps(rec)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
