"""``secureml learning-curve``: test MAE against training-set size, on log axes (PNG + JSON + CSV)."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from secureml.commands.train import (
    add_data_arguments,
    add_model_arguments,
    cross_validate,
    evaluate,
    load_split,
    model_from_args,
)
from secureml.errors import DataError
from secureml.sweep import add_scheduler_argument, map_cells
from secureml.models.baseline import dataset_elements, energies_by_symbol, fit_element_energies
from secureml.runs import output_folder

# Plaintext Coulomb-matrix + Gaussian-KRR curve of Weinreich, von Rudorff, von Lilienfeld,
# Mach. Learn.: Sci. Technol. 4, 025017 (2023), QM9 atomization enthalpy, read off its figure.
PUBLISHED_CM_GAUSSIAN = {1024: 27.0, 2048: 20.0, 4096: 10.5}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "learning-curve",
        help="test MAE vs training-set size for one or more models (PNG + JSON + CSV)",
        description="Fit each model on nested training sets of growing size and evaluate it on one "
                    "fixed test set. Writes learning_curve.json, learning_curve.csv and "
                    "learning_curve.png (MAE vs N, log-log) to --out.",
        epilog="example: secureml learning-curve --data qm9 --sizes 1024,2048,4096,8192 "
               "--model krr-gaussian --model krr-laplacian --n-test 2000 --out results/lc",
    )
    add_data_arguments(p)
    p.add_argument("--n-train", "--sizes", dest="sizes", default="256,512,1024,2048",
                   help="comma-separated training-set sizes (default 256,512,1024,2048)")
    p.add_argument("--recipe", "--model", dest="model", action="append", default=None, metavar="NAME",
                   help="registered model recipe (repeatable; default krr-gaussian); see --list")
    add_model_arguments(p)
    p.add_argument("--cv-max-n", type=int, default=4096,
                   help="with --cv, cross-validate only up to this size and reuse the last choice above it")
    p.add_argument("--list", action="store_true", help="list the registered model recipes and exit")
    p.add_argument("--no-reference", action="store_true",
                   help="do not draw the published CM + Gaussian KRR curve on the plot")
    p.add_argument("--out", default=None, help="output folder (default: a new results/learning-curve/<time>/ per run)")
    add_scheduler_argument(p)
    p.set_defaults(func=run)


def list_models() -> int:
    from secureml.models import available_models

    for name, spec in sorted(available_models().items()):
        defaults = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.defaults.items())
        print(f"{name:18s} {spec.description}" + (f"  [{defaults}]" if defaults else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return list_models()
    from tqdm import tqdm

    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError as exc:
        raise DataError(f"--sizes expects comma-separated integers, got {args.sizes!r}") from exc
    if not sizes or sizes[0] < 2:
        raise DataError("--sizes needs training-set sizes of at least 2")
    models = args.model or [f"krr-{args.kernel}"]
    out = output_folder(args.out, "learning-curve")

    print(f"loading {args.data} data ...", file=sys.stderr)
    pool, test = load_split(args, sizes[-1] if args.data == "qm9" else None)
    if sizes[-1] > len(pool):
        raise DataError(f"largest size {sizes[-1]} exceeds the {len(pool)} training molecules available")
    # Cells (model, N) are independent, except that with --cv sizes above --cv-max-n reuse the
    # hyperparameters chosen at the largest cross-validated size: those run in a second wave.
    first, second = [], []
    for name in models:
        cv_sizes = [n for n in sizes if n <= args.cv_max_n] if args.cv else sizes
        if not cv_sizes:  # nothing small enough: the smallest size cross-validates for the rest
            cv_sizes = sizes[:1]
        first += [(name, n) for n in cv_sizes]
        second += [(name, n) for n in sizes if n not in cv_sizes]
    done: dict[tuple[str, int], tuple[dict[str, Any], Any]] = {}
    bar = tqdm(total=len(first) + len(second), desc="learning curve", unit="fit")

    from secureml.data.units import known_unit

    unit_label = getattr(args, "property_unit", None) or args.unit or known_unit(args.property)

    def report(job: Any, result: Any) -> None:
        row = result[0]
        bar.update(1)
        bar.write(f"{row['model']:16s} N={row['n_train']:6d}  MAE {row['mae']:8.3f} {unit_label}  "
                  f"fit {row['fit_seconds']:7.1f} s")

    for res in map_cells(_fit_cell, [(args, name, n, pool, test, None) for name, n in first],
                         args.scheduler, report):
        done[(res[0]["model"], res[0]["n_train"])] = res
    chosen = {name: done[max(k for k in done if k[0] == name)][1] for name in models} if args.cv else {}
    for res in map_cells(_fit_cell, [(args, name, n, pool, test, chosen.get(name)) for name, n in second],
                         args.scheduler, report):
        done[(res[0]["model"], res[0]["n_train"])] = res
    bar.close()
    rows: list[dict[str, Any]] = [done[(name, n)][0] for name in models for n in sizes]

    unit = unit_label
    summary = {
        "data": args.data,
        "property": args.property,
        "unit": unit,
        "seed": args.seed,
        "n_test": len(test),
        "sizes": sizes,
        "models": models,
        "baseline": args.baseline,
        "cm_variant": args.cm_variant,
        "results": rows,
        "published_cm_gaussian": PUBLISHED_CM_GAUSSIAN,
    }
    (out / "learning_curve.json").write_text(json.dumps(summary, indent=2))
    with open(out / "learning_curve.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "n_train", "mae", "rmse", "max_abs_error", "fit_seconds", "predict_seconds_per_molecule"])
        for r in rows:
            w.writerow([r["model"], r["n_train"], r["mae"], r["rmse"], r["max_abs_error"], r["fit_seconds"],
                        r["predict_seconds_per_molecule"]])
    plot(summary, out / "learning_curve.png", reference=not args.no_reference and args.data == "qm9")
    print(f"wrote {out / 'learning_curve.png'}, .json and .csv")
    return 0


def _fit_cell(job: tuple[Any, str, int, Any, Any, dict[str, Any] | None]) -> tuple[dict[str, Any], Any]:
    """One (model, N) cell: fit on the first N of the pool, score on the test set.

    ``fixed``: hyperparameters chosen by a smaller size's cross-validation (None: cross-validate
    here when --cv is on).  Returns (result row, the CV result or None).
    """
    args, name, n, pool, test, fixed = job
    train = pool.subset(np.arange(n))  # nested: first n of a seeded permutation
    model = model_from_args(args, name)  # --baseline is a model option (MolecularModel.baseline)
    model.property_name = args.property
    cv_result = None
    if args.cv:
        if fixed is None:
            cv_result = cross_validate(model, train, args, progress=False)
        else:
            model.estimator.set_params(sigma=fixed["sigma"], lam=fixed["lam"])
    t0 = time.perf_counter()
    model.fit(train, args.property)
    fit_s = time.perf_counter() - t0
    if model.element_energies_ is not None:
        model.element_energies_ = cover_elements(model.element_energies_, test)
    # Learning curves score every test molecule, as the published curves do, even one with an
    # element a small training set lacks (a saved model would refuse it by name).
    model.elements_ = None
    metrics = evaluate(model, test)
    est = model.estimator
    params = est.get_params() if hasattr(est, "get_params") else {}
    row = {
        "model": name,
        "n_train": n,
        **metrics,
        "fit_seconds": fit_s,
        "params": {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "cv_mae": None if cv_result is None else cv_result["mae"],
        **({"dressed_atom_kcal_mol": energies_by_symbol(model.element_energies_)}
           if model.element_energies_ is not None else {}),
    }
    return row, cv_result


def cover_elements(energies: dict[int, float], test: Any) -> dict[int, float]:
    """``energies`` plus e_Z = 0, with a warning, for elements of ``test`` that no training
    molecule had.

    A saved model refuses such queries (MolecularModel.baseline_energy raises DataError); a
    learning curve at small N instead reports them, predicted badly as by any model that never
    saw the element, so that every point of the curve uses the same test set.
    """
    import logging

    missing = sorted(set(dataset_elements(test)) - set(energies))
    if missing:
        logging.getLogger(__name__).warning(
            "dressed-atom baseline: no training molecule contains Z=%s; its atom energy is set to 0", missing)
    return {**energies, **{z: 0.0 for z in missing}}


def dressed_atom_residuals(train: Any, test: Any, prop: str) -> tuple[Any, Any, dict[str, float]]:
    """(train, test) with the dressed-atom baseline fitted on ``train`` subtracted from ``prop``,
    and the energies ``{symbol: e_Z}``; elements only ``test`` has get e_Z = 0 (see
    :func:`cover_elements`).

    The command itself uses ``MolecularModel(baseline="dressed-atoms")``; this view of the same
    computation (:mod:`secureml.models.baseline`) stays for callers that want the residuals.
    """
    from secureml.models.baseline import baseline_from_energies

    y = np.asarray(train.properties[prop], dtype=np.float64)
    energies = cover_elements(fit_element_energies(train, y), test)
    out = []
    for ds in (train, test):
        res = ds.subset(np.arange(len(ds)))
        base = baseline_from_energies(ds.charges, energies, ds.names or None)
        res.properties = dict(res.properties, **{prop: np.asarray(ds.properties[prop], dtype=np.float64) - base})
        out.append(res)
    return out[0], out[1], energies_by_symbol(energies)


def plot(summary: dict[str, Any], path: Path, reference: bool = True) -> None:
    """MAE vs training-set size, log-log, one line per model (shared plot style, units on axes)."""
    from secureml.data.units import known_unit
    from secureml.plot_style import log_axis, new_figure, save, series

    fig, ax = new_figure("normal")
    cm = summary.get("cm_variant", "sorted")
    for i, name in enumerate(summary["models"]):
        pts = [(r["n_train"], r["mae"]) for r in summary["results"] if r["model"] == name]
        ax.plot(*zip(*pts), **series(i),
                label=name + (f" ({cm} CM)" if cm != "sorted" and name.startswith("krr-") else ""))
    if reference and summary["property"] in ("U0_atomization", "H_atomization"):
        ref = sorted((int(k), v) for k, v in summary["published_cm_gaussian"].items())
        ax.plot([k for k, _ in ref], [v for _, v in ref], "k--", alpha=0.5,
                label="published CM + Gaussian (Weinreich 2023)")
    ax.set_xscale("log", base=2)
    sizes = sorted({r["n_train"] for r in summary["results"]})
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    log_axis(ax.yaxis)  # labels at 1, 2, 5 x 10^k: several ticks even over a short range
    unit = summary.get("unit") or known_unit(summary["property"]) or "unit unknown"
    ax.set_xlabel("training molecules N")
    ax.set_ylabel(f"test MAE, {summary['property']} ({unit})")
    extra = ", dressed-atom baseline" if summary.get("baseline") == "dressed-atoms" else ""
    ax.set_title(f"{summary['data']}: learning curve (test set {summary['n_test']}{extra})")
    ax.legend()
    save(fig, path)
