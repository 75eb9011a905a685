"""The leakage report: attacks x deployments on the embedded data, next to what each query costs.

:func:`leakage_matrix` runs every attack against every deployment (model file, plaintext API,
OT service, FHE service) with the same settings and returns one row per (attack, deployment);
:func:`write_report` saves them as JSON, CSV and a Markdown table plus a PNG;
:func:`leakage_summary` turns rows (or a saved report) into the few lines ``secureml demo`` prints.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from attacks import experiments, scenario
from attacks.reconstruction import AttackError
from attacks.targets import DEPLOYMENTS, EngineUnavailable, make_target
from secureml.data import embedded_split
from secureml.sweep import map_cells
from secureml.plot_style import MARKERS, PALETTE, new_figure, save

# (attack id, description, scenario key, experiment, options)
_SCENARIOS: dict[str, dict[str, Any]] = {
    "gauss-full": {"kernel": "gaussian"},
    "gauss-1000": {"kernel": "gaussian", "n_train": 1000},
    "lap-1000": {"kernel": "laplacian", "n_train": 1000},
    "lap-32": {"kernel": "laplacian", "n_train": 32},
    "gauss-32": {"kernel": "gaussian", "n_train": 32},
}

ATTACKS: list[tuple[str, str, str, Callable[..., dict[str, Any]], dict[str, Any]]] = [
    ("whitebox", "white-box extraction, Gaussian CM KRR (N=3,137)", "gauss-full", experiments.whitebox_krr, {}),
    ("mia", "membership inference, Gaussian KRR (N=1,000)", "gauss-1000", experiments.mia, {}),
    ("rank-label", "candidate ranking by |f(x) - y|, Gaussian KRR (N=1,000)", "gauss-1000", experiments.rank,
     {"score": "label"}),
    ("rank-kink", "label-free candidate ranking (kinks), Laplacian KRR (N=1,000)", "lap-1000", experiments.rank,
     {"score": "kink"}),
    ("reconstruct-kink", "query-only reconstruction, Laplacian KRR (N=32)", "lap-32",
     experiments.query_reconstruction, {"method": "kink"}),
    ("reconstruct-fit", "query-only reconstruction (free-centre fit), Gaussian KRR (N=32)", "gauss-32",
     experiments.query_reconstruction, {"method": "expansion", "budget": 2048, "adam_steps": 200,
                                         "lbfgs_steps": 50}),
    ("reconstruct-barzilai", "query-only reconstruction (Barzilai et al. 2025: query design, restarts), "
     "Gaussian KRR (N=32)", "gauss-32", experiments.barzilai_reconstruction, {"restarts": 2}),
]

# --quick: the same attacks on smaller models and budgets (about a minute on a laptop CPU)
QUICK_SCENARIOS: dict[str, dict[str, Any]] = {
    "gauss-full": {"kernel": "gaussian", "n_train": 300},
    "gauss-1000": {"kernel": "gaussian", "n_train": 300},
    "lap-1000": {"kernel": "laplacian", "n_train": 300},
    "lap-32": {"kernel": "laplacian", "n_train": 8},
    "gauss-32": {"kernel": "gaussian", "n_train": 8},
}
QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "mia": {"n_each": 100, "n_shadows": 2},
    "rank-label": {"pool_size": 300, "n_members": 30, "ks": (15, 30)},
    "rank-kink": {"pool_size": 300, "n_members": 30, "ks": (15, 30)},
    "reconstruct-kink": {"depth": 3},
    "reconstruct-fit": {"budget": 256, "adam_steps": 50, "lbfgs_steps": 10},
    "reconstruct-barzilai": {"budget": 1024, "restarts": 1, "adam_steps": 60, "lbfgs_steps": 20},
}

COLUMNS = ["attack", "deployment", "status", "metric", "value", "baseline", "advantage", "queries",
           "protocol_queries", "seconds_per_query", "bytes_per_query", "attacker_seconds", "total_seconds",
           "total_bytes", "max_abs_deviation", "note"]
UNITS = {"seconds_per_query": "s", "bytes_per_query": "B", "attacker_seconds": "s", "total_seconds": "s",
         "total_bytes": "B", "max_abs_deviation": "kcal/mol"}


def _baseline(res: dict[str, Any]) -> float | None:
    for k in ("random_baseline", "random_precision"):
        if k in res:
            return float(res[k])
    if res.get("attack") == "mia":
        return 0.5
    return None


def _model_file_bytes(model: Any) -> int:
    """Size of the model file the white-box attacker downloads."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return int(Path(model.save(Path(d) / "m.npz")).stat().st_size)


def leakage_matrix(*, attacks: Iterable[str] | None = None, deployments: Iterable[str] = DEPLOYMENTS,
                   protocol_sample: dict[str, int] | None = None, seed: int = 0,
                   scenarios: dict[str, Any] | None = None, quick: bool = False,
                   progress: Callable[[str], None] | None = None,
                   scheduler: str = "serial") -> list[dict[str, Any]]:
    """Run the matrix; one row per (attack, deployment) with status ok / n/a / not served / error.

    Each ok row carries the leakage (``value``), its chance ``baseline`` and ``advantage`` = value -
    baseline, and the attacker's total cost: ``total_seconds`` = its own computation plus the
    queries' time through the deployment (extrapolated from the protocol sample for services) and
    ``total_bytes`` = the model file (white box), the raw float64 query/answer payload (plaintext
    API) or the measured protocol traffic per query times the queries (services).
    ``quick``: smaller models and budgets (:data:`QUICK_SCENARIOS`, :data:`QUICK_OPTIONS`).
    ``scheduler`` (:func:`secureml.sweep.map_cells`): cells are independent; off this process
    each worker builds (and caches) the seeded scenarios it needs, so the rows are the same.
    """
    sample = {"ot": 4, "fhe": 2, **(protocol_sample or {})}
    wanted = set(attacks) if attacks is not None else None
    cells = [(aid, dep, sample, seed, quick) for aid, *_ in ATTACKS if wanted is None or aid in wanted
             for dep in deployments]
    if scheduler != "serial":
        return map_cells(_leakage_cell, cells, scheduler,
                         (lambda c, r: progress(f"{c[0]} @ {c[1]}")) if progress else None)
    cache: dict[str, Any] = dict(scenarios or {})
    rows: list[dict[str, Any]] = []
    for aid, dep, _, _, _ in cells:
        if progress:
            progress(f"{aid} @ {dep}")
        rows.append(_leakage_row(aid, dep, sample, seed, cache, quick))
    return rows


_WORKER_SCENARIOS: dict[str, Any] = {}


def _leakage_cell(cell: tuple[str, str, dict[str, int], int, bool]) -> dict[str, Any]:
    aid, dep, sample, seed, quick = cell
    return _leakage_row(aid, dep, sample, seed, _WORKER_SCENARIOS.setdefault(f"seed{seed}-{quick}", {}), quick)


def _leakage_row(aid: str, dep: str, sample: dict[str, int], seed: int, cache: dict[str, Any],
                 quick: bool = False) -> dict[str, Any]:
    """One (attack, deployment) cell; ``cache`` holds the scenarios built so far."""
    _, desc, skey, fn, opts = next(a for a in ATTACKS if a[0] == aid)
    if skey not in cache:
        cache[skey] = scenario.build(seed=seed, **(QUICK_SCENARIOS if quick else _SCENARIOS)[skey])
    scn = cache[skey]
    opts = {**opts, **(QUICK_OPTIONS.get(aid, {}) if quick else {})}
    row: dict[str, Any] = {"attack": aid, "description": desc, "deployment": dep}
    try:
        target = make_target(dep, scn.model, protocol_sample=sample.get(dep, 0))
        t0 = time.perf_counter()
        res = fn(target, scn, **opts)
        wall = time.perf_counter() - t0
    except EngineUnavailable as exc:
        row.update(status="not served", note=str(exc).split(";")[0][:160])
        return row
    except AttackError as exc:
        row.update(status="n/a", note=str(exc)[:160])
        return row
    cost = target.cost()
    base = _baseline(res)
    n_q = int(res.get("queries", cost["queries"]))
    # the attacker's own computation: the call's wall time minus the time spent answering
    attacker_s = max(wall - target._cost.wall_s - target._cost.protocol_wall_s, 0.0)
    query_s = float(cost["seconds_per_query"]) * n_q
    if dep == "model-file":
        total_b = float(_model_file_bytes(scn.model))
    elif dep == "api":
        total_b = float(n_q * 8 * (scn.X.shape[1] + 1))  # float64 features out, one float64 back
    else:
        total_b = float(cost["bytes_per_query"]) * n_q
    row.update(status="ok", metric=res["metric"], value=float(res["value"]), baseline=base,
               advantage=float(res["value"]) - base if base is not None else None,
               attacker_seconds=attacker_s, total_seconds=attacker_s + query_s, total_bytes=total_b,
               queries=n_q,
               protocol_queries=int(cost["protocol_queries"]),
               seconds_per_query=float(cost["seconds_per_query"]),
               bytes_per_query=float(cost["bytes_per_query"]),
               extrapolated_seconds=float(cost["seconds_per_query"]) * int(res.get("queries", 0)),
               max_abs_deviation=float(cost.get("max_abs_deviation", 0.0)),
               refused=int(cost.get("refused", 0)), detail=res)
    if row["refused"]:
        row["note"] = f"{row['refused']} queries refused by the service (outside its public input range)"
    return row


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)


def write_report(rows: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """leakage.json (everything), leakage.csv and leakage.md (the table), leakage.png (plots)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "leakage.json", "csv": out / "leakage.csv", "md": out / "leakage.md",
             "png": out / "leakage.png"}
    paths["json"].write_text(json.dumps(rows, indent=1, default=_json_default))
    with paths["csv"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    head = [f"{c} ({UNITS[c]})" if c in UNITS else c for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in COLUMNS) + " |")
    paths["md"].write_text("\n".join(lines) + "\n")
    _plot(rows, paths["png"])
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Same leakage, at what cost: one column per attack; leakage above chance against the
    attacker's total seconds (top) and total bytes (bottom), one marker per deployment."""
    from matplotlib.ticker import NullFormatter

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    marks = {d: (MARKERS[i], PALETTE[i]) for i, d in enumerate(("model-file", "api", "ot", "fhe"))}
    fig, axes = new_figure(nrows=2, ncols=max(len(attacks), 1), figsize=(3.1 * max(len(attacks), 1), 6.2),
                           squeeze=False)
    for j, a in enumerate(attacks):
        cells = [r for r in rows if r["attack"] == a]
        ok = [r for r in cells if r.get("status") == "ok" and r.get("advantage") is not None]
        metric = ok[0]["metric"] if ok else ""
        base = ok[0]["baseline"] if ok else 0.0
        for i, (key, unit) in enumerate((("total_seconds", "attacker's total time (s)"),
                                         ("total_bytes", "attacker's total traffic / download (bytes)"))):
            ax = axes[i, j]
            for r in ok:
                m, c = marks.get(r["deployment"], ("x", "k"))
                x = max(float(r[key]), 1e-6 if key == "total_seconds" else 1.0)
                ax.plot([x], [r["advantage"]], m, color=c, ms=8, alpha=0.85, label=r["deployment"])
                ax.annotate(r["deployment"], (x, r["advantage"]), fontsize=6, textcoords="offset points", xytext=(4, 3))
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log")
            xs = [max(float(r[key]), 1e-6 if key == "total_seconds" else 1.0) for r in ok]
            if xs:  # at least three decades, so close points do not collapse the log axis
                lo, hi = min(xs) / 3, max(xs) * 3
                ax.set_xlim(lo, max(hi, lo * 1e3))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(-0.05 - 0.0, max(1.0 - (base or 0.0), 0.1) + 0.05)
            ax.set_xlabel(unit, fontsize=7)
            if i == 0:
                ax.set_title(f"{a}\n{metric} (chance {base:.3g})" if ok else f"{a}\n(not applicable)", fontsize=7)
            ax.set_ylabel("leakage above chance", fontsize=7)
            ax.tick_params(labelsize=6)
            na = [r["deployment"] for r in cells if r.get("status") != "ok"]
            if na and i == 1:
                ax.text(0.98, 0.5, "n/a: " + ", ".join(na), transform=ax.transAxes, fontsize=6, ha="right")
    fig.suptitle("same leakage, at what cost? (dashed: chance; bytes: model file, raw API payload, or "
                 "measured protocol traffic x queries)", fontsize=8)
    save(fig, path)


def leakage_summary(results: list[dict[str, Any]] | str | Path | None = None, *, model: Any = None,
                    seed: int = 0) -> str:
    """A few lines on what each deployment leaks, for ``secureml demo``.

    ``results``: rows from :func:`leakage_matrix` or the path of a saved leakage.json. Without
    them, a quick run (~30 s): white-box extraction and membership inference against the model
    file, the plaintext API and the OT service (one query through the real protocol).
    """
    if isinstance(results, (str, Path)):
        rows = json.loads(Path(results).read_text())
    elif results is not None:
        rows = list(results)
    else:
        scns: dict[str, Any] = {}
        if model is not None:
            # the caller's model (e.g. the demo's) is the one attacked by both
            scns["gauss-full"] = scns["gauss-1000"] = scenario_for(model, seed)
        rows = leakage_matrix(attacks=["whitebox", "mia"], deployments=("model-file", "api", "ot"),
                              protocol_sample={"ot": 1}, seed=seed, scenarios=scns)
    by = {(r["attack"], r["deployment"]): r for r in rows}
    lines = ["What each deployment leaks (secureml attacks, embedded data):"]
    wb = by.get(("whitebox", "model-file"))
    if wb and wb.get("status") == "ok":
        d = wb["detail"]
        lines.append(f"  model file : {100 * d['fraction_smiles_exact']:.2f}% of {d['n_molecules']} training molecules "
                     f"rebuilt exactly from the file (median RMSD {d['median_rmsd_angstrom']:.1e} A)")
    deps = [d for d in DEPLOYMENTS if any(k[1] == d for k in by)]
    mia_cells = [(d, by.get(("mia", d))) for d in deps]
    if any(r and r.get("status") == "ok" for _, r in mia_cells):
        txt = "  ".join(f"{d} {r['value']:.3f}" for d, r in mia_cells if r and r.get("status") == "ok")
        lines.append(f"  membership : loss-threshold AUC  {txt}")
    for aid, label in (("rank-label", "ranking"), ("reconstruct-kink", "reconstruct")):
        cells = [(d, by.get((aid, d))) for d in deps]
        ok = [(d, r) for d, r in cells if r and r.get("status") == "ok"]
        if ok:
            base = ok[0][1].get("baseline")
            txt = "  ".join(f"{d} {r['value']:.2f}" for d, r in ok) + f"  [{ok[0][1]['metric']}; chance {base:.2g}]"
            na = [d for d, r in cells if r and r.get("status") != "ok"]
            lines.append(f"  {label:<11}: {txt}" + (f"  ({', '.join(na)}: not served)" if na else ""))
    svc = [(d, by.get(("mia", d))) for d in ("ot", "fhe")]
    for d, r in svc:
        if r and r.get("status") == "ok" and r.get("protocol_queries"):
            lines.append(f"  {d} service: same answers as the API (max |diff| {r['max_abs_deviation']:.1e} kcal/mol "
                         f"over {r['protocol_queries']} real protocol runs) at {r['seconds_per_query']:.2g} s and "
                         f"{r['bytes_per_query'] / 1e6:.3g} MB per query: it hides the query and the model, "
                         "not what predictions reveal")
    return "\n".join(lines)


def scenario_for(model: Any, seed: int = 0) -> Any:
    """Wrap an already-trained MolecularModel as a Scenario (any data: see :func:`attacks.scenario.from_model`)."""
    return scenario.from_model(model)


_scenario_for = scenario_for  # the name before the report was parallelised
