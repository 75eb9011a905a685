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
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from attacks import experiments, scenario
from attacks.reconstruction import AttackError
from attacks.targets import DEPLOYMENTS, EngineUnavailable, make_target
from secureml.data import embedded_split
from secureml.sweep import map_cells

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
]

COLUMNS = ["attack", "deployment", "status", "metric", "value", "baseline", "queries", "protocol_queries",
           "seconds_per_query", "bytes_per_query", "extrapolated_seconds", "max_abs_deviation", "note"]


def _baseline(res: dict[str, Any]) -> float | None:
    for k in ("random_baseline", "random_precision"):
        if k in res:
            return float(res[k])
    if res.get("attack") == "mia":
        return 0.5
    return None


def leakage_matrix(*, attacks: Iterable[str] | None = None, deployments: Iterable[str] = DEPLOYMENTS,
                   protocol_sample: dict[str, int] | None = None, seed: int = 0,
                   scenarios: dict[str, Any] | None = None,
                   progress: Callable[[str], None] | None = None,
                   scheduler: str = "serial") -> list[dict[str, Any]]:
    """Run the matrix; one row per (attack, deployment) with status ok / n/a / not served / error.

    ``scheduler`` (:func:`secureml.sweep.map_cells`): cells are independent; off this process
    each worker builds (and caches) the seeded scenarios it needs, so the rows are the same.
    """
    sample = {"ot": 4, "fhe": 2, **(protocol_sample or {})}
    wanted = set(attacks) if attacks is not None else None
    cells = [(aid, dep, sample, seed) for aid, *_ in ATTACKS if wanted is None or aid in wanted
             for dep in deployments]
    if scheduler != "serial":
        return map_cells(_leakage_cell, cells, scheduler,
                         (lambda c, r: progress(f"{c[0]} @ {c[1]}")) if progress else None)
    cache: dict[str, Any] = dict(scenarios or {})
    rows: list[dict[str, Any]] = []
    for aid, dep, _, _ in cells:
        if progress:
            progress(f"{aid} @ {dep}")
        rows.append(_leakage_row(aid, dep, sample, seed, cache))
    return rows


_WORKER_SCENARIOS: dict[str, Any] = {}


def _leakage_cell(cell: tuple[str, str, dict[str, int], int]) -> dict[str, Any]:
    aid, dep, sample, seed = cell
    return _leakage_row(aid, dep, sample, seed, _WORKER_SCENARIOS.setdefault(f"seed{seed}", {}))


def _leakage_row(aid: str, dep: str, sample: dict[str, int], seed: int, cache: dict[str, Any]) -> dict[str, Any]:
    """One (attack, deployment) cell; ``cache`` holds the scenarios built so far."""
    _, desc, skey, fn, opts = next(a for a in ATTACKS if a[0] == aid)
    if skey not in cache:
        cache[skey] = scenario.build(seed=seed, **_SCENARIOS[skey])
    scn = cache[skey]
    row: dict[str, Any] = {"attack": aid, "description": desc, "deployment": dep}
    try:
        target = make_target(dep, scn.model, protocol_sample=sample.get(dep, 0))
        res = fn(target, scn, **opts)
    except EngineUnavailable as exc:
        row.update(status="not served", note=str(exc).split(";")[0][:160])
        return row
    except AttackError as exc:
        row.update(status="n/a", note=str(exc)[:160])
        return row
    cost = target.cost()
    row.update(status="ok", metric=res["metric"], value=float(res["value"]), baseline=_baseline(res),
               queries=int(res.get("queries", cost["queries"])),
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
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    deps = list(dict.fromkeys(r["deployment"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    width = 0.8 / max(len(deps), 1)
    for j, dep in enumerate(deps):
        vals, qs, secs = [], [], []
        for a in attacks:
            r = next((x for x in rows if x["attack"] == a and x["deployment"] == dep), {})
            ok = r.get("status") == "ok"
            vals.append(r.get("value", np.nan) if ok else np.nan)
            qs.append(max(r.get("queries", 0), 1) if ok else np.nan)
            secs.append(r.get("seconds_per_query", np.nan) if ok and r.get("queries") else np.nan)
        x = np.arange(len(attacks)) + j * width
        axes[0].bar(x, vals, width, label=dep)
        axes[1].bar(x, qs, width, label=dep)
        axes[2].bar(x, secs, width, label=dep)
    for ax, title in zip(axes, ("leakage metric (see table)", "queries used", "seconds per query")):
        ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2)
        ax.set_xticklabels(attacks, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
    for aid, label in (("rank-label", "ranking P@50"), ("reconstruct-kink", "reconstruct")):
        cells = [(d, by.get((aid, d))) for d in deps]
        ok = [(d, r) for d, r in cells if r and r.get("status") == "ok"]
        if ok:
            txt = "  ".join(f"{d} {r['value']:.2f}" for d, r in ok)
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


def scenario_for(model: Any, seed: int) -> Any:
    """Wrap an already-trained MolecularModel (trained on the embedded split) as a Scenario."""
    params = model.representation.get_params()
    if params.get("name") != "coulomb_matrix":
        raise AttackError("the attack scenarios use Coulomb-matrix models trained on the embedded data")
    data, X, y = scenario.embedded_features(int(params["size"]), str(params.get("variant", "sorted")),
                                            params.get("grid_bits"))
    n = int(model.estimator.X_fit_.shape[0])
    train, test = embedded_split(seed=seed, n_train=n)
    if not np.allclose(X[train[: min(n, 16)]], model.estimator.X_fit_[: min(n, 16)]):
        raise AttackError("the model was not trained on the embedded split with this seed")
    return scenario.Scenario(data, X, y, np.asarray(train), np.asarray(test), model)
