"""Barzilai et al. 2025 on Gaussian KRR: recovered fraction against queries and N, several runs in one figure.

    PYTHONPATH=$PWD .venv/bin/python -m bench.barzilai_curve --out docs/attacks \
        RUN.csv[:restarts] [RUN.csv[:restarts] ...]

Each RUN.csv is what `secureml attack barzilai --curve [--ns ...] [--restarts R] --out DIR` writes
(DIR/barzilai_curve_known.csv); ``:restarts`` labels runs written before the CSV had that column.
Writes barzilai_curve.json / .csv (all rows, with the chance baseline: the nearest of the
attacker's 2,000 public points) and barzilai_curve.png (one line per (N, restarts)).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from secureml.plot_style import legend_outside, log_axis, new_figure, save, series


def load(spec: str) -> list[dict[str, Any]]:
    path, _, restarts = spec.partition(":")
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                try:
                    row[k] = float(v) if any(c in v for c in ".eE") or k != "n_train" else int(v)
                except (TypeError, ValueError):
                    row[k] = v
            if restarts:
                row["restarts"] = int(restarts)
            row["n_train"] = int(float(r["n_train"]))
            row["restarts"] = int(float(row.get("restarts", 0) or 0))
            rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = new_figure("normal")
    keys = sorted({(r["n_train"], r["restarts"]) for r in rows})
    for i, (n, rs) in enumerate(keys):
        rr = sorted((r for r in rows if (r["n_train"], r["restarts"]) == (n, rs)),
                    key=lambda r: r["queries_over_n_d_plus_2"])
        ax.plot([r["queries_over_n_d_plus_2"] for r in rr], [r["fraction_recovered"] for r in rr],
                label=f"N = {n}, {rs} restarts", **series(i))
    base = max(r["baseline_nearest_public"] for r in rows)
    ax.axhline(base, color="0.4", linewidth=1, label=f"chance: nearest public point ({base:.2f})")
    ax.axvline(1.0, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("queries / (N (d + 2))  (> 1 suffices in exact arithmetic)")
    ax.set_ylabel(f"training points recovered (rel. L2 < {rows[0]['rel_tol']:g})")
    ax.set_title(f"Barzilai-style fit, Gaussian KRR, {rows[0]['data']}, sigma known")
    legend_outside(ax)
    save(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="CSV files of `secureml attack barzilai --curve`, each optionally :RESTARTS")
    p.add_argument("--out", default="docs/attacks", help="output folder")
    a = p.parse_args(argv)
    rows = [r for spec in a.runs for r in load(spec)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "barzilai_curve.json").write_text(json.dumps(rows, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "barzilai_curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "barzilai_curve.png")
    for r in rows:
        print(f"N {r['n_train']:3d}  restarts {r['restarts']}  {r['queries_over_n_d_plus_2']:.0f} N(d+2)  "
              f"recovered {r['fraction_recovered']:.2f}  (nearest public point {r['baseline_nearest_public']:.2f})")


if __name__ == "__main__":
    main()
