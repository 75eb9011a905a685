"""Kink attack at N >= 1,000: recovered fraction against queries and N, beside the chance baseline.

    PYTHONPATH=$PWD .venv/bin/python -m bench.kink_scale --ns 128,512,1000 --out docs/attacks

Writes kink_scale.json / kink_scale.csv (one row per (N, grid setting); rewritten after every row,
so a run cut short keeps what it measured) and kink_scale.png. See attacks/kink_scale.py for the
exact sparse oracle and docs/attacks.md section 3 for the numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from attacks import kink_scale, reconstruction
from secureml.plot_style import legend_outside, log_axis, new_figure, save, series

SETTINGS = ((4.0, 1), (1.0, 2), (1.0, 3), (1.0, 4))


def _write(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kink_scale.json").write_text(json.dumps(rows, indent=1))
    fields = list(dict.fromkeys(k for r in rows for k in r))  # older rows lack the newer columns
    with open(out / "kink_scale.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Left: recovered fraction against queries, one line per (N, assembly); right: against N at
    the finest grid (step 1, 4 levels), beside the chance baselines."""
    fig, (ax, ax2) = new_figure("wide", ncols=2, figsize=(11.0, 4.4))
    ns = sorted({r["n_train"] for r in rows})
    mems = [m for m in reconstruction.MEMBERSHIP if any(r.get("membership", "grouped") == m for r in rows)]
    rounds = sorted({r.get("round_to", 0.0) for r in rows})
    for i, (n, rt) in enumerate((n, rt) for n in ns for rt in rounds):
        for mem in mems:
            # in order of resolution (finer grids can need fewer queries: fewer unresolved merged kinks)
            rr = sorted((r for r in rows if r["n_train"] == n and r.get("membership", "grouped") == mem
                         and r.get("round_to", 0.0) == rt), key=lambda r: -r["finest_step"])
            if not rr:
                continue
            faint = {} if mem == "measure" else {"alpha": 0.35}
            tag = f", answers rounded to {rt:g}" if rt else ""
            ax.plot([r["queries"] for r in rr], [r["fraction_recovered_rel0.001"] for r in rr],
                    label=f"N = {n:,}, {mem}{tag}: rel. error < 1e-3", **{**series(i), **faint})
            if mem == "measure":
                for r in rr:
                    ax.annotate(f"{r['depth']} lv", (r["queries"], r["fraction_recovered_rel0.001"]), fontsize=7,
                                textcoords="offset points", xytext=(4, -9))
    base = max(max(r["baseline_nearest_public_rel0.01"], r["baseline_nearest_public_rel0.001"]) for r in rows)
    ax.axhline(base, color="0.4", linewidth=1, label=f"chance: nearest public molecule ({base:.2f})")
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel("queries to the plaintext API (lv: refinement levels of 8x)")
    ax.set_ylabel("training points recovered (fraction)")
    ax.set_title("Kink attack, Laplacian KRR on Coulomb matrices (d = 435)")
    ax.legend(fontsize=7, loc="center left")
    for j, mem in enumerate(mems):
        rr = sorted((r for r in rows if r.get("membership", "grouped") == mem and r["h"] == 1.0 and r["depth"] == 4
                     and r.get("round_to", 0.0) == rounds[0]),
                    key=lambda r: r["n_train"])
        if not rr:
            continue
        x = [r["n_train"] for r in rr]
        ax2.plot(x, [r["fraction_recovered_rel0.001"] for r in rr], label=f"{mem}: rel. error < 1e-3", **series(j))
        ax2.plot(x, [r["fraction_recovered_rel0.01"] for r in rr], label=f"{mem}: rel. error < 1e-2",
                 **{**series(j), "linestyle": ":"})
        if any("fraction_molecules_exact" in r for r in rr):
            sm = [r for r in rr if "fraction_molecules_exact" in r]
            ax2.plot([r["n_train"] for r in sm], [r["fraction_molecules_exact"] for r in sm],
                     label=f"{mem}: exact SMILES", **{**series(j), "linestyle": "--", "marker": "x"})
    ax2.axhline(base, color="0.4", linewidth=1, label="chance (nearest public molecule / its SMILES)")
    ax2.set_xscale("log")
    log_axis(ax2.xaxis)
    ax2.set_xlabel("training molecules N (step 1, 4 levels)")
    ax2.set_ylabel("training points recovered (fraction)")
    ax2.set_title("against N")
    legend_outside(ax2)
    save(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ns", default="128,512,1000", help="training set sizes N, comma-separated")
    p.add_argument("--settings", default=";".join(f"{h},{d}" for h, d in SETTINGS),
                   help="grid settings 'coarse step,levels' separated by ';' (refinement 8x per level)")
    p.add_argument("--out", default="docs/attacks", help="output folder")
    p.add_argument("--membership", default="measure", choices=reconstruction.MEMBERSHIP,
                   help="assembly of shared coordinates: measure each unknown (point, axis) directly, "
                        "group tests + bisection, or one test per (point, kink)")
    p.add_argument("--rel-thresh", type=float, default=1e-11,
                   help="kink detection threshold, relative to the largest answer of the coarse scan")
    p.add_argument("--round-to", type=float, default=0.0,
                   help="the API rounds its answers to multiples of this (kcal/mol; 0 = exact float64)")
    p.add_argument("--append", action="store_true", help="keep the rows already in OUT/kink_scale.json")
    a = p.parse_args(argv)
    out = Path(a.out)
    settings = tuple((float(s.split(",")[0]), int(s.split(",")[1])) for s in a.settings.split(";"))
    rows: list[dict[str, Any]] = []
    if a.append and (out / "kink_scale.json").exists():
        rows = json.loads((out / "kink_scale.json").read_text())
    for n in (int(x) for x in a.ns.split(",")):
        for st in settings:
            row = kink_scale.run(n, settings=(st,), membership=a.membership, rel_thresh=a.rel_thresh,
                                 round_to=a.round_to)[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(rows, out)
            plot(rows, out / "kink_scale.png")


if __name__ == "__main__":
    main()
