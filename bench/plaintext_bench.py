"""Plaintext exact-KRR prediction cost per molecule: the denominator of every overhead ratio.

For each training-set size N, a real model is fitted on N QM9 molecules (sorted Coulomb matrix,
Gaussian or Laplacian kernel) and its prediction time is measured three ways:

* ``predict_one_s``: ``KernelRidge.predict`` on one query (input checks included), median;
* ``core_one_s``: the bare numpy evaluation a server would run for one query,
  ``alpha @ exp(-||X - q||^2 / (2 sigma^2))`` (or the L1 form), median;
* ``batch_per_query_s``: ``KernelRidge.predict`` on a batch of queries, divided by its size.

Also recorded: the Coulomb-matrix time per molecule (dscribe), fit time, model size, test MAE.
Prediction timings run with ``--blas-threads`` BLAS threads (default 1): one query is a
matrix-vector product too small to gain from threads, and on a shared machine waking idle BLAS
threads costs milliseconds of noise. Fitting uses all threads.

    python -m bench.plaintext_bench --sizes 256,1024,4096,16384 --out results/plaintext_bench.json

Writes JSON (and a PNG next to it). Timings are wall clock on whatever machine runs it; compare
ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_SIZES = "256,512,1024,2048,4096,8192,16384"


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def core_predict_one(X: np.ndarray, sq_norms: np.ndarray, alpha: np.ndarray, offset: float,
                     q: np.ndarray, kernel: str, sigma: float) -> float:
    """One prediction with nothing but numpy (what the plaintext server's inner loop costs)."""
    if kernel == "gaussian":
        d = sq_norms - 2.0 * (X @ q) + q @ q
        return float(alpha @ np.exp(d * (-1.0 / (2.0 * sigma * sigma))) + offset)
    d = np.abs(X - q).sum(axis=1)
    return float(alpha @ np.exp(d * (-1.0 / sigma)) + offset)


def run(sizes: Sequence[int], kernel: str = "gaussian", sigma: float | None = None, lam: float | None = None,
        n_queries: int = 1000, repeats: int = 50, seed: int = 0, cm_size: int = 29,
        blas_threads: int | None = 1, progress: bool = True) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    from secureml.data import load_qm9
    from secureml.models.krr import KernelRidge
    from secureml.representations import CoulombMatrix

    sigma = sigma if sigma is not None else (74.0 if kernel == "gaussian" else 3000.0)
    lam = lam if lam is not None else (1e-8 if kernel == "gaussian" else 1e-10)
    sizes = sorted(set(int(s) for s in sizes))
    ds = load_qm9(n=n_queries + sizes[-1], seed=seed, properties=["U0_atomization"])
    cm = CoulombMatrix(cm_size)
    t0 = time.perf_counter()
    X_all = cm.transform(ds)
    rep_batch = (time.perf_counter() - t0) / len(ds)
    rep_one, _ = _median_time(lambda: cm.transform_one(ds.charges[0], ds.coordinates[0]), repeats)
    y_all = ds.properties["U0_atomization"]
    Q, yq = X_all[:n_queries], y_all[:n_queries]
    X_pool, y_pool = X_all[n_queries:], y_all[n_queries:]

    rows = []
    for n in tqdm(sizes, desc="plaintext KRR", unit="size", disable=not progress):
        est = KernelRidge(kernel, sigma, lam)
        t0 = time.perf_counter()
        est.fit(X_pool[:n], y_pool[:n])
        fit_s = time.perf_counter() - t0
        X, alpha, off = est.X_fit_, est.dual_coef_, est.y_offset_
        sq = np.einsum("ij,ij->i", X, X)
        it = iter(range(10**9))
        pick = lambda: Q[next(it) % n_queries]  # noqa: E731 -- cycle through distinct queries
        with threadpool_limits(limits=blas_threads):
            one_med, one_min = _median_time(lambda: est.predict(pick()[None, :]), repeats)
            core_med, core_min = _median_time(lambda: core_predict_one(X, sq, alpha, off, pick(), kernel, sigma), repeats)
            t0 = time.perf_counter()
            pred = est.predict(Q)
            batch = (time.perf_counter() - t0) / n_queries
        # The bare numpy path must agree with the estimator (it is what the ratios divide by).
        check = core_predict_one(X, sq, alpha, off, Q[0], kernel, sigma)
        assert abs(check - pred[0]) < 1e-6 * max(1.0, abs(pred[0])), (check, pred[0])
        rows.append({
            "n_train": n,
            "fit_seconds": fit_s,
            "predict_one_s": one_med,
            "predict_one_min_s": one_min,
            "core_one_s": core_med,
            "core_one_min_s": core_min,
            "batch_per_query_s": batch,
            "model_bytes": int(X.nbytes + alpha.nbytes),
            "test_mae": float(np.abs(pred - yq).mean()),
        })
        if progress:
            tqdm.write(f"N={n:6d}  fit {fit_s:7.2f} s  one query {one_med * 1e6:9.1f} us "
                       f"(core {core_med * 1e6:8.1f} us, batched {batch * 1e6:8.1f} us)  MAE {rows[-1]['test_mae']:.2f}")
    return {
        "benchmark": "plaintext exact KRR prediction",
        "kernel": kernel,
        "sigma": sigma,
        "lam": lam,
        "representation": cm.get_params(),
        "n_features": cm.n_features,
        "n_queries": n_queries,
        "repeats": repeats,
        "seed": seed,
        "blas_threads": blas_threads,
        "coulomb_matrix_seconds_per_molecule": {"single": rep_one, "batched": rep_batch},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "numpy": np.__version__},
        "results": rows,
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    r = summary["results"]
    n = [x["n_train"] for x in r]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, label in (("predict_one_s", "KernelRidge.predict, 1 query"), ("core_one_s", "bare numpy, 1 query"),
                       ("batch_per_query_s", f"batched ({summary['n_queries']} queries) per query")):
        ax.plot(n, [x[key] * 1e6 for x in r], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training molecules N")
    ax.set_ylabel("time per prediction (us)")
    ax.set_title(f"plaintext exact KRR ({summary['kernel']}, {summary['n_features']} features)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"training-set sizes (default {DEFAULT_SIZES})")
    p.add_argument("--kernel", choices=("gaussian", "laplacian"), default="gaussian")
    p.add_argument("--sigma", type=float, default=None, help="default 74 (gaussian) / 3000 (laplacian)")
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--queries", type=int, default=1000, help="test queries (batched timing and MAE)")
    p.add_argument("--repeats", type=int, default=50, help="timed single-query calls per size")
    p.add_argument("--cm-size", type=int, default=29)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads while timing predictions (default 1; 0 = library default)")
    p.add_argument("--out", default="plaintext_bench.json", help="JSON output (PNG written next to it)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    summary = run(sizes, args.kernel, args.sigma, args.lam, args.queries, args.repeats, args.seed, args.cm_size,
                  args.blas_threads or None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
