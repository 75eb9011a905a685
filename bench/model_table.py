"""The model table the README leads with: accuracy against the cost of one double-blind query.

Accuracy: QM9 U0 atomization energy, the fixed 2,000-molecule test sets of the measured learning
curves in docs/ (each row names its file). Cost of one double-blind query: the measured benches in
docs/ (two processes, TCP loopback, this 2-core machine) and, with ``--measure``, a fresh
measurement of the compact models' query cost here (it does not depend on the training-set size N,
so small models trained on the embedded set measure it exactly).

    python -m bench.model_table                      # table from docs/ + the measured compact cost
    python -m bench.model_table --no-measure         # table from docs/ only (seconds)

Writes docs/model-table/model_table.{json,csv,md,png}: best model first, MAE in kcal/mol beside
chemical accuracy (1 kcal/mol) and the published figures (Weinreich et al. 2023; qml-lightning).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from protocols.krr.runner import start_serve_process

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHEMICAL_ACCURACY = 1.0  # kcal/mol

# Published reference figures (ANCHORS.md): QM9 U0/H atomization, kcal/mol.
PUBLISHED = {
    "cm-gaussian": {"N=4096": 10.5, "source": "Weinreich et al. 2023, CM Gaussian KRR (read off the figure)",
                    "mpc_cost_n16384": "MP-SPDZ MASCOT: ~14 h and ~3.9 TB per query at N = 16,384"},
    "fchl19-krr": {"N=4096": 3.3, "source": "Weinreich et al. 2023, FCHL19 KRR"},
    "qml-lightning": {"N=16384": 0.49, "source": "qml-lightning, 16,384 features, H100 (ANCHORS.md)"},
}


#: the exact kernels' semi-honest query cost, measured with serve's defaults (the Gaussian at protocol
#: 20, whose bytes and rounds protocols 21-25 left unchanged: 16.8 MB, 20 rounds at N = 16,384 again in
#: docs/malicious/tail/final; `python -m bench.krr_cost --sizes 4096,16384 --features 351 --out docs/double-blind/v20` and,
#: protocol 24, `python -m bench.krr_cost --kernel laplacian --sizes 4096,16384 --features 351
#: --out docs/double-blind/v24/laplacian`)
GAUSSIAN_COST = "double-blind/v20/krr_cost.json"
LAPLACIAN_COST = "double-blind/v24/laplacian/krr_cost.json"


def _load(rel: str) -> Any:
    return json.loads((DOCS / rel).read_text())


def _lc(rel: str, n: int) -> float:
    for r in _load(rel)["results"]:
        if r["n_train"] == n:
            return float(r["mae"])
    raise KeyError(f"{rel}: no N = {n}")


def _exact_cost(rel: str, n: int) -> tuple[float, float]:
    for r in _load(rel):
        if r["N"] == n:
            return float(r["per_query_MB"]), float(r["wall_s"])
    raise KeyError(f"{rel}: no N = {n}")


def collect(measured: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per model kind and size, from the measured files in docs/."""
    rows: list[dict[str, Any]] = []
    local = {(r["n_features"], r["n_train"]): float(r["mae"]) for r in _load("compact-models/qm9_local_model.json")["runs"]}
    db = _load("compact-models/double_blind.json")["models"]

    def compact_cost(kind: str, features: int) -> tuple[float, float, str]:
        if measured and f"{kind}-{features}" in measured:
            m = measured[f"{kind}-{features}"]
            return m["MB"], m["s"], "measured here by bench/model_table.py --measure (resumed sessions, median)"
        if features == 4096:
            r = db[kind]["resumed"]
            return r["bytes"] / 1e6, r["total_s"], "docs/compact-models/double_blind.json (resumed sessions, median)"
        return float("nan"), float("nan"), "not measured"

    for feats, stacks in ((16384, 128), (4096, 32)):
        mb, s, src = compact_cost("local", feats)
        rows.append({
            "model": f"local-sorf, F = {feats:,}", "recipe": f"--recipe local-sorf --set nstacks={stacks}",
            "n_train": 16384, "mae_kcal_mol": local[(feats, 16384)], "query_MB": mb, "query_s": s,
            "mae_source": "docs/compact-models/qm9_local_model.json", "cost_source": src,
            "cost_grows_with_N": False,
        })
    for n in (16384, 4096):
        mb, s = _exact_cost(LAPLACIAN_COST, n)
        try:
            mae = _lc("models/lc_laplacian_canonical_dressed/learning_curve.json", n)
            src = "docs/models/lc_laplacian_canonical_dressed/learning_curve.json"
        except KeyError:
            continue  # that curve stops at N = 8,192
        rows.append({
            "model": "krr-laplacian, canonical CM + dressed atoms", "n_train": n,
            "recipe": "--kernel laplacian --cm-variant canonical --baseline dressed-atoms",
            "mae_kcal_mol": mae, "query_MB": mb, "query_s": s, "mae_source": src,
            "cost_source": f"docs/{LAPLACIAN_COST}", "cost_grows_with_N": True,
        })
    for n in (16384, 4096):
        mb, s = _exact_cost(GAUSSIAN_COST, n)
        rows.append({
            "model": "krr-gaussian, canonical CM + dressed atoms", "n_train": n,
            "recipe": "--kernel gaussian --cm-variant canonical --baseline dressed-atoms",
            "mae_kcal_mol": _lc("models/lc_canonical_dressed/learning_curve.json", n), "query_MB": mb, "query_s": s,
            "mae_source": "docs/models/lc_canonical_dressed/learning_curve.json",
            "cost_source": f"docs/{GAUSSIAN_COST}", "cost_grows_with_N": True,
        })
    rows.sort(key=lambda r: r["mae_kcal_mol"])
    return rows


# -- measuring the compact models' query cost ---------------------------------------------------------
def _serve(model_path: Path) -> tuple[subprocess.Popen, int]:
    return start_serve_process([sys.executable, "-m", "secureml.cli", "serve", "--model", str(model_path),
                                "--port", "0"], timeout=300, cwd=ROOT)


def measure_compact(features: int, sessions: int = 5, n_train: int = 256, seed: int = 0) -> dict[str, float]:
    """Median bytes and client wall time of one double-blind local-sorf query with F features
    (resumed sessions, after one warm-up that fetches the public map and the OT ticket)."""
    import statistics
    import tempfile

    import numpy as np

    from protocols.krr import molecules_featurizer, predict
    from secureml.data import embedded_split, load_embedded
    from secureml.models import build_model

    data = load_embedded()
    tr, te = embedded_split(seed)
    model = build_model("local-sorf", nstacks=features // 128, pca_fit_data="train", seed=seed)
    # cover every element of the embedded set (the server calibrates its public bounds on it)
    pick = list(tr[:n_train]) + [i for i in tr[n_train:] if 9 in data.charges[i]][:16]
    model.fit(data.subset(pick), "U0_atomization")
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "local.npz")
        proc, port = _serve(path)
        try:
            mb, secs = [], []
            for k in range(sessions + 1):
                q = data.subset(te[k:k + 1])
                _, cost = predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(q))
                if k:  # the first session fetches the public feature map and the OT ticket
                    mb.append((cost.bytes_sent + cost.bytes_received) / 1e6)
                    secs.append(cost.wall_s)
        finally:
            proc.kill()
    return {"MB": float(statistics.median(mb)), "s": float(statistics.median(secs)), "sessions": sessions,
            "features": features, "n_train_for_cost": n_train, "cpu_count": os.cpu_count() or 0,
            "load_average": list(np.round(os.getloadavg(), 2))}


# -- output -------------------------------------------------------------------------------------------
def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | N | MAE (kcal/mol) | vs chemical accuracy (1 kcal/mol) | one double-blind query | train with |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        mae = r["mae_kcal_mol"]
        acc = "within" if mae <= CHEMICAL_ACCURACY else f"{mae / CHEMICAL_ACCURACY:.1f}x above"
        cost = ("not measured" if r["query_MB"] != r["query_MB"]
                else f"{r['query_MB']:.1f} MB, {r['query_s'] * 1000:.0f} ms" if r["query_s"] < 1
                else f"{r['query_MB']:.0f} MB, {r['query_s']:.1f} s")
        lines.append(f"| {r['model']} | {r['n_train']:,} | **{mae:.2f}** | {acc} | {cost}"
                     f"{'' if r['cost_grows_with_N'] else ' (any N)'} | `{r['recipe']}` |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from secureml.plot_style import legend_outside, log_axis, new_figure, save, series

    fig, ax = new_figure("wide")
    kinds = list(dict.fromkeys(r["model"] for r in rows))
    for i, kind in enumerate(kinds):
        pts = [r for r in rows if r["model"] == kind and r["query_MB"] == r["query_MB"]]
        if not pts:
            continue
        st = series(i)
        ax.plot([p["query_MB"] for p in pts], [p["mae_kcal_mol"] for p in pts], color=st["color"],
                marker=st["marker"], linestyle="none", markersize=8, label=kind)
        for p in pts:
            ax.annotate(f"N={p['n_train']:,}", (p["query_MB"], p["mae_kcal_mol"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
    ax.axhline(CHEMICAL_ACCURACY, color="0.3", linestyle="--", linewidth=1, label="chemical accuracy (1 kcal/mol)")
    ax.axhline(PUBLISHED["cm-gaussian"]["N=4096"], color=series(5)["color"], linestyle=":", linewidth=1,
               label="published CM Gaussian KRR, N = 4,096 (10.5)")
    ax.axhline(PUBLISHED["qml-lightning"]["N=16384"], color=series(4)["color"], linestyle=":", linewidth=1,
               label="qml-lightning, N = 16,384 (0.49)")
    ax.set_xscale("log")
    mbs = [r["query_MB"] for r in rows if r["query_MB"] == r["query_MB"]]
    ax.set_xlim(min(mbs) / 2, max(mbs) * 4)  # room for the point labels
    log_axis(ax.yaxis)
    ax.set_xlabel("traffic of one double-blind query (MB, both directions)")
    ax.set_ylabel("test MAE, QM9 U0 atomization (kcal/mol)")
    ax.set_title("Accuracy against cost per query (lower left is better)")
    legend_outside(ax)
    save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DOCS / "model-table"), help="output folder (default: %(default)s)")
    ap.add_argument("--no-measure", action="store_true",
                    help="use only the measured files in docs/ (no fresh compact-model cost measurement)")
    ap.add_argument("--sessions", type=int, default=5, help="sessions per measured cost (default: %(default)s)")
    ap.add_argument("--keep-measured", action="store_true",
                    help="reuse the compact-model cost measured by the last run (its model_table.json in --out, "
                         "load average included) instead of measuring again: for a table whose docs/ files changed "
                         "while the machine is loaded")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    measured: dict[str, Any] = {}
    if args.keep_measured:
        measured = json.loads((out / "model_table.json").read_text()).get("measured_here", {})
    elif not args.no_measure:
        from tqdm import tqdm

        for feats in tqdm((16384,), desc="measuring local-sorf query cost", unit="model"):
            measured[f"local-{feats}"] = measure_compact(feats, sessions=args.sessions)
    rows = collect(measured)
    report = {"property": "U0_atomization", "unit": "kcal/mol", "chemical_accuracy_kcal_mol": CHEMICAL_ACCURACY,
              "test_set": "QM9, fixed 2,000 molecules (seed 0)", "rows": rows, "published": PUBLISHED,
              "measured_here": measured,
              "command": "python -m bench.model_table" + (" --no-measure" if args.no_measure else "")
              + (" --keep-measured" if args.keep_measured else "")}
    (out / "model_table.json").write_text(json.dumps(report, indent=2))
    with open(out / "model_table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "model_table.md").write_text(markdown(rows))
    plot(rows, out / "model_table.png")
    print(markdown(rows))
    print(f"written to {out}/model_table.{{json,csv,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
