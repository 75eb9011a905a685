"""The main demonstration: the two-party story on the embedded data set.

1. The model owner trains exact KRR on Coulomb matrices of embedded QM9 molecules: the Gaussian
   kernel (the published study's setting), then the Laplacian kernel (L1 distance, more accurate
   on Coulomb matrices).
2. It starts ``secureml serve`` as a separate process (a real TCP server).
3. The query owner sends held-out molecules through the double-blind protocol.
4. Each prediction is printed next to the plaintext prediction and the reference value, with the
   cost of the protocol and its ratio to the plaintext prediction time.
5. The same with the compact local model (FCHL19 + random features), whose double-blind cost does
   not grow with the training set and which reaches about 1 kcal/mol.
6. A short leakage summary (what the deployments still leak) closes the demo.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _start_server(model_path: Path, sessions: int = 1, security: str | None = None
                  ) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "secureml.cli", "serve", "--model", str(model_path), "--port", "0",
           "--max-sessions", str(sessions)] + (["--security", security] if security else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "serving" in line and " on " in line:
            return proc, int(line.rsplit(":", 1)[1])
    proc.kill()
    raise RuntimeError("the model owner's server did not start")


def _serve_and_query(model_path: Path, queries, sessions: int = 1, security: str | None = None):
    """Start the server, run ``sessions`` sessions with the same queries; returns each (preds, cost)."""
    from protocols.krr import molecules_featurizer, predict

    proc, port = _start_server(model_path, sessions, security)
    try:
        return [predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(queries)) for _ in range(sessions)]
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _report(model, queries, preds, cost, prop: str) -> None:
    import time as _t

    t0 = _t.perf_counter()
    reps = 10
    for _ in range(reps):
        plain = model.predict(queries)
    t_plain = (_t.perf_counter() - t0) / reps
    ref = queries.properties[prop]
    from secureml.data.units import known_unit

    print(f"\n{prop} in {known_unit(prop) or 'unknown units'}")
    print(f"{'molecule':<22}{'reference':>12}{'plaintext':>12}{'double-blind':>14}{'|diff|':>10}")
    for i in range(len(queries)):
        name = (queries.smiles[i] if queries.smiles else queries.names[i])[:21]
        print(f"{name:<22}{ref[i]:12.3f}{plain[i]:12.3f}{preds[i]:14.3f}{abs(preds[i] - plain[i]):10.2e}")
    online_mb = (cost.bytes_sent + cost.bytes_received - cost.offline_bytes) / 1e6
    print(f"cost ({len(queries)} queries): {cost.wall_s:.2f} s (set-up {cost.offline_s:.2f} s, online "
          f"{cost.online_s:.2f} s), {(cost.bytes_sent + cost.bytes_received) / 1e6:.1f} MB "
          f"({online_mb:.1f} MB online), {cost.rounds} rounds")
    print(f"plaintext prediction (representation included): {t_plain * 1e3:.1f} ms -> "
          f"ratio {cost.wall_s / t_plain:,.0f}x (online only: {cost.online_s / t_plain:,.0f}x)")


def _demo_kernels() -> dict[str, tuple[float, float, int]]:
    """kernel -> (sigma, lambda, Coulomb-matrix grid bits): the `secureml train` recipes' defaults,
    so that the demo, `train` and the docs use one setting per kernel."""
    from secureml.models import KRR_DEFAULTS

    return {k: (float(v["sigma"]), float(v["lam"]), int(v["grid_bits"])) for k, v in KRR_DEFAULTS.items()}


def run_demo(seed: int = 0, n_train: int = 2000, n_queries: int = 3,
             kernels: tuple[str, ...] = ("gaussian", "laplacian"), out_dir: str | None = None) -> int:
    from secureml.data import embedded_split, load_embedded
    from secureml.models.krr import KernelRidge
    from secureml.models.pipeline import MolecularModel
    from secureml.representations import CoulombMatrix

    data = load_embedded()
    train_idx, test_idx = embedded_split(seed, n_train=n_train)  # nested, seeded split (docs/data.md)
    train = data.subset(train_idx)
    test = data.subset(test_idx)
    prop = "U0_atomization"
    # a run folder the user can find again (model files, nothing left in the system temp folder)
    work = Path(out_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S"))
    work.mkdir(parents=True, exist_ok=True)
    queries = test.subset(np.arange(n_queries))
    model = None
    for kernel in kernels:
        sigma, lam, grid = _demo_kernels()[kernel]
        print(f"== Model owner: trains {kernel.capitalize()} KRR on {len(train)} embedded QM9 molecules "
              f"(Coulomb matrix on the 2^-{grid} grid, sigma={sigma:g}, lambda={lam:g}) ==")
        t0 = time.perf_counter()
        exact = MolecularModel(CoulombMatrix(size=23, grid_bits=grid), KernelRidge(kernel, sigma=sigma, lam=lam),
                               prop).fit(train)
        print(f"   trained in {time.perf_counter() - t0:.1f} s; test MAE {exact.score_mae(test):.2f} kcal/mol "
              f"on {len(test)} held-out molecules")
        model_path = exact.save(work / f"model_{kernel}.npz")
        print(f"   model file: {model_path}")
        print("== Model owner: starts `secureml serve --security semi-honest` (separate process); "
              "query owner connects ==")
        print("   (exact kernels have no client-malicious protocol yet: docs/malicious.md)")
        (preds, cost), = _serve_and_query(model_path, queries, security="semi-honest")
        _report(exact, queries, preds, cost, prop)
        print("the server saw no query; the query owner saw only the predictions.\n")
        model = model or exact

    from secureml.models.local import LocalRandomFeatureModel
    from secureml.representations.fchl import FCHL19

    print("== Compact local model (FCHL19 + structured random features, qml-lightning style) ==")
    t0 = time.perf_counter()
    local = MolecularModel(FCHL19(), LocalRandomFeatureModel(nstacks=32, seed=seed), prop).fit(
        train.subset(np.arange(min(1024, len(train)))))
    print(f"   trained on {min(1024, len(train))} molecules in {time.perf_counter() - t0:.1f} s; "
          f"test MAE {local.score_mae(test):.2f} kcal/mol (4,096 features; cost independent of N)")
    local_path = local.save(work / "local_model.npz")
    # two sessions: a first contact (public feature map download, base OTs), then a returning
    # client that resumes its OT session from a ticket
    first, again = _serve_and_query(local_path, queries, sessions=2)
    print("first session of this client (downloads the public feature map, runs the base OTs):")
    _report(local, queries, *first, prop)
    print("\nthe same client again (OT session resumed from its ticket, feature map cached):")
    _report(local, queries, *again, prop)
    from attacks.report import leakage_summary

    print("\n== What each deployment still leaks (exact model; full matrix: `secureml report leakage`) ==")
    if model is not None:
        print(leakage_summary(model=model, seed=seed))
    return 0
