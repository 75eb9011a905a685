"""Compare engines: one double-blind KRR prediction with the OT engine (secureml's protocol), the
TenSEAL FHE baseline and the generic-MPC baseline, against plaintext numpy, on the same model.

Each engine runs as two real processes on TCP loopback; the table gives the client's wall time,
the traffic in both directions, the rounds and the error against plaintext. Engines whose
packages are not installed (FHE needs `pip install 'secureml[full]'`) are listed as skipped.

    python examples/compare_engines.py               # N = 1,024 training points, d = 351
    python examples/compare_engines.py --small       # N = 64, OT and generic MPC (what the tests run)

The full comparison, with CrypTen and plots: `secureml bench cost --quick`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="N = 64, OT and generic MPC only (seconds)")
    ap.add_argument("--engines", default=None,
                    help="comma-separated engines (default: ot,fhe,generic; with --small ot,generic, since the "
                         "FHE baseline's key set-up alone takes minutes here)")
    args = ap.parse_args(argv)
    args.engines = args.engines or ("ot,generic" if args.small else "ot,fhe,generic")

    from bench.cost import run_engine, synthetic_model, synthetic_queries

    n = 64 if args.small else 1024
    model, rng = synthetic_model(n, 351, sigma=74.0, seed=0)  # the published study's width and size
    Q = synthetic_queries(model, rng, k=1)
    t0 = time.perf_counter()
    plain = model.predict(Q)
    plain_s = time.perf_counter() - t0
    print(f"Gaussian KRR, N = {n}, d = 351, one query; plaintext {plain_s * 1e3:.3f} ms")
    print(f"{'engine':8s} {'wall (s)':>9s} {'MB':>9s} {'rounds':>7s} {'x plaintext':>12s} {'max error':>10s}")
    rows = {}
    for name in args.engines.split(","):
        try:
            r = run_engine(name.strip(), model, Q)
        except ImportError as exc:
            print(f"{name:8s} skipped: {exc.name or exc} is not installed")
            continue
        mb = r["client_to_server_MB"] + r["server_to_client_MB"]
        err = float(np.abs(r["preds"] - plain).max())
        rows[name] = {"wall_s": r["wall_s"], "MB": mb, "rounds": r["rounds"], "max_abs_error": err}
        print(f"{name:8s} {r['wall_s']:9.2f} {mb:9.2f} {r['rounds']:7d} {r['wall_s'] / plain_s:12.0f} {err:10.1e}")
    print("errors are in the model's output unit (kcal/mol for energy models)")
    return rows


if __name__ == "__main__":
    main()
