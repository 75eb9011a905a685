"""The main demonstration: the two-party story on the embedded data set.

1. The model owner trains exact KRR on Coulomb matrices of embedded QM9 molecules: the Gaussian
   kernel (the published study's setting), then the Laplacian kernel (L1 distance, more accurate
   on Coulomb matrices).
2. It starts ``secureml serve`` as a separate process (a real TCP server), both models in the
   default client-malicious mode (the Laplacian protocol's aborts may tell a deviating client one
   bit each, bounded by ``--max-aborts``: docs/malicious.md).
3. The query owner sends held-out molecules through the double-blind protocol.
4. Each prediction is printed next to the plaintext prediction and the reference value, with the
   cost of the protocol and its ratio to the plaintext prediction time.
5. The same with the compact local model (FCHL19 + random features), whose double-blind cost does
   not grow with the training set and which reaches about 1 kcal/mol.
6. The exact Gaussian model again, served with its answers rounded to 1 kcal/mol inside the
   protocol (`secureml serve --security semi-honest --round-to 1`), beside the undefended one: what each leaks
   (membership inference) and costs (accuracy, protocol time and traffic); docs/defenses.md.
7. A short leakage summary (what the deployments still leak) closes the demo.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _start_server(model_path: Path, sessions: int = 1, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "secureml.cli", "serve", "--model", str(model_path), "--port", "0",
           "--max-sessions", str(sessions), *extra]
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


def _serve_and_query(model_path: Path, queries, sessions: int = 1, extra: tuple[str, ...] = ()):
    """Start the server, run ``sessions`` sessions with the same queries; returns each (preds, cost)."""
    from protocols.krr import molecules_featurizer, predict

    proc, port = _start_server(model_path, sessions, extra)
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
        # the default (client-malicious): both kernels have that protocol
        mode = "client-malicious"
        print(f"== Model owner: starts `secureml serve --security {mode}` (separate process); "
              "query owner connects ==")
        print("   (client-malicious, the default: whatever a modified client sends, it learns at most "
              "each prediction" + ("; the Laplacian kernel's comparison chain is committed and checked, so no "
                                   "abort depends on the training data" if kernel == "laplacian" else "")
              + "; docs/malicious.md)")
        (preds, cost), = _serve_and_query(model_path, queries, extra=("--security", mode))
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
    if model is not None:
        _defended_beside_undefended(model, work / "model_gaussian.npz", train, test, queries, prop, seed)
    from attacks.report import leakage_summary

    print("\n== What each deployment still leaks (exact model; full matrix: `secureml report leakage`) ==")
    if model is not None:
        print(leakage_summary(model=model, seed=seed))
    return 0


def _defended_beside_undefended(model, model_path: Path, train, test, queries, prop: str, seed: int) -> None:
    """Serve the same model undefended and with ``--round-to 1``; print leakage and cost of each."""
    from attacks.metrics import roc_auc, tpr_at_fpr
    from protocols.krr.defense import OutputDefense

    print("\n== Defended beside undefended: the Gaussian model served again with `--round-to 1` "
          "(answers rounded inside the protocol; docs/defenses.md) ==")
    # rounding runs in the semi-honest protocol (the client-malicious Gaussian one has noise only)
    semi = ("--security", "semi-honest")
    runs = {"undefended": _serve_and_query(model_path, queries, extra=semi)[0],
            "--round-to 1": _serve_and_query(model_path, queries, extra=(*semi, "--round-to", "1"))[0]}
    ref = queries.properties[prop]
    print(f"{'molecule':<22}{'reference':>12}{'undefended':>12}{'rounded':>10}")
    for i in range(len(queries)):
        name = (queries.smiles[i] if queries.smiles else queries.names[i])[:21]
        print(f"{name:<22}{ref[i]:12.3f}{runs['undefended'][0][i]:12.3f}{runs['--round-to 1'][0][i]:10.1f}")
    # membership inference (loss threshold) on 300 members + 300 held-out molecules; the rounding
    # mechanism in the clear is exactly what the protocol returns (tests/protocols/krr/test_defense.py)
    rng = np.random.default_rng(seed)
    n = min(300, len(train), len(test))
    mem, non = train.subset(rng.choice(len(train), n, replace=False)), test.subset(np.arange(n))
    y = np.r_[mem.properties[prop], non.properties[prop]]
    f = np.r_[model.predict(mem), model.predict(non)]
    lab = np.r_[np.ones(n), np.zeros(n)]
    print(f"\n{'served as':<14}{'MIA AUC':>9}{'TPR@1%FPR':>11}{'test MAE':>10}{'s / query':>11}{'MB / query':>12}")
    for name, od in (("undefended", OutputDefense()), ("--round-to 1", OutputDefense.from_options(round_to=1.0))):
        ans = od.apply(f, np.random.default_rng(seed))
        score = -np.log(np.abs(ans - y) + 1e-12)
        mae = float(np.mean(np.abs(od.apply(model.predict(test), np.random.default_rng(seed)) - test.properties[prop])))
        cost = runs[name][1]
        print(f"{name:<14}{roc_auc(score, lab):9.3f}{tpr_at_fpr(score, lab, 0.01):11.2f}{mae:10.2f}"
              f"{cost.wall_s / len(queries):11.2f}{(cost.bytes_sent + cost.bytes_received) / len(queries) / 1e6:12.1f}")
    print("Rounding to 1 kcal/mol costs no accuracy and no measurable time; it stops the label-free kink "
          "ranking (docs/defenses.md), but members still sit within half a grid step of their labels while "
          "non-members sit ~MAE away, so label-based membership inference survives it. What reaches chance "
          "there is training: a dressed-atom baseline with ridge 1e-2 (TPR 0.017 at a *lower* MAE in "
          "docs/defenses.md), or a DP model; `secureml report defenses` measures them all.")
