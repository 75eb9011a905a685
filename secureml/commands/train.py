"""``secureml train``: fit a model on your own molecules, the embedded set or QM9; print its test MAE with units; save it."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from secureml.errors import ModelError


# -- helpers shared with ``secureml learning-curve`` -----------------------------------------------
def add_data_arguments(p: argparse.ArgumentParser, default_n: str = "4096") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="embedded", metavar="embedded|qm9|PATH",
                   help="embedded: the shipped QM9 subset (<= 7 heavy atoms, fixed seeded 80/20 split); "
                        "qm9: random molecules from all of QM9 (qm9pack); PATH: your own molecules -- extended "
                        "xyz with properties, .npz, .sdf with SD property fields, .csv with a SMILES column, or "
                        "a folder of .xyz files with --labels (default: %(default)s)")
    g.add_argument("--labels", default=None, metavar="FILE",
                   help="property table for --data PATH: 'name value...' lines, optional header naming the "
                        "columns; names may carry a folder prefix (qm7/0001.xyz)")
    g.add_argument("--property", default="U0_atomization",
                   help="property to learn: a name from the data (see `secureml data info`) or a 1-based "
                        "column number of --labels (default: %(default)s)")
    g.add_argument("--unit", default=None,
                   help="unit of --property in your data (Hartree, eV, kJ/mol, kcal/mol, or any label); "
                        "energies are converted to kcal/mol for training, orbital energies (a property "
                        "named homo, lumo or gap) to eV (default: the known unit of "
                        "QM9/xTB property names, else unknown)")
    g.add_argument("--geometry", choices=("xtb", "mmff", "none"), default="xtb",
                   help="CSV of SMILES only: relaxation after RDKit ETKDG (default: %(default)s, as predict --smiles)")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="--data PATH only: seeded share of your molecules held out for the test MAE "
                        "(default: %(default)s)")
    g.add_argument("--n-test", type=int, default=1000,
                   help="qm9 only: size of the fixed test set (default 1000); the embedded set uses its own 20%% split")
    g.add_argument("--max-heavy-atoms", type=int, default=None,
                   help="qm9 only: keep molecules with at most this many non-hydrogen atoms")
    g.add_argument("--seed", type=int, default=0, help="seed of the data split and of random models (default 0)")


def load_own_data(args: argparse.Namespace) -> Any:
    """The user's molecules from ``--data PATH`` with ``--property`` in training units.

    Returns the dataset with only the chosen property (renamed to its name in the file if given
    as a column number); sets ``args.property`` and ``args.unit_in``/``args.property_unit``.
    """
    from secureml.data.readers import read_molecules, select_property
    from secureml.data.units import known_unit, to_training_unit

    ds = read_molecules(args.data, labels=getattr(args, "labels", None), geometry=getattr(args, "geometry", "xtb"))
    name, values = select_property(ds, args.property, source=str(args.data))
    unit_in = args.unit or known_unit(name)
    values, unit = to_training_unit(values, unit_in, name)
    if not np.isfinite(values).all():
        from secureml.errors import DataError

        raise DataError(f"{args.data}: property {name!r} has NaN/inf for {int((~np.isfinite(values)).sum())} molecules")
    ds.properties = {name: values}
    args.property, args.unit_in, args.property_unit = name, unit_in, unit
    return ds


def is_path_data(data: str) -> bool:
    return data not in ("embedded", "qm9")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--rep", choices=("cm",), default="cm",
                   help="representation for exact KRR: cm = Coulomb matrix (default)")
    g.add_argument("--cm-size", type=int, default=29, help="Coulomb matrix padding size (29 covers QM9)")
    g.add_argument("--cm-variant", choices=("sorted", "unsorted", "canonical", "eigenspectrum"), default="sorted",
                   help="Coulomb matrix variant (default sorted by row norm)")
    g.add_argument("--cm-grid-bits", type=int, default=None,
                   help="round Coulomb-matrix entries to multiples of 2^-B, the double-blind protocol's "
                   "fixed-point grid, so served and plaintext predictions agree (-1: no rounding; "
                   "default 16 for the Gaussian kernel, 8 for the Laplacian, whose protocol cost grows with B)")
    g.add_argument("--kernel", choices=("gaussian", "laplacian"), default="gaussian",
                   help="KRR kernel (default gaussian)")
    g.add_argument("--sigma", type=float, default=None,
                   help="kernel width (default: the recipe's, 74 gaussian / 3000 laplacian for the CM)")
    g.add_argument("--lam", type=float, default=None, help="ridge regularisation (default 1e-8 / 1e-10)")
    g.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="extra option for the model recipe (repeatable), e.g. --set n_features=4096")
    g.add_argument("--cv", action="store_true",
                   help="choose sigma (and lam) by k-fold cross-validation on the training set (KRR only)")
    g.add_argument("--cv-folds", type=int, default=5, help="folds for --cv (default 5)")
    g.add_argument("--sigmas", default=None,
                   help="comma-separated sigma grid for --cv (default: log grid around the median distance)")
    g.add_argument("--lams", default=None, help="comma-separated lambda grid for --cv (default: --lam)")
    g.add_argument("--baseline", choices=("mean", "dressed-atoms"), default="mean",
                   help="what the estimator learns the residual of. mean (default): the property itself "
                        "(exact KRR subtracts the training mean). dressed-atoms: first a per-element linear "
                        "fit y ~ sum_Z n_Z e_Z (atoms of each element times a fitted energy e_Z, least "
                        "squares on the training molecules); the estimator learns the rest and every "
                        "prediction adds sum_Z n_Z e_Z back. The e_Z are saved in the model file; a saved "
                        "model refuses a query with an element no training molecule had (learning-curve "
                        "gives it e_Z = 0 with a warning)")


def parse_floats(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ModelError(f"{what}: expected comma-separated numbers, got {text!r}") from exc


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (ints, floats, true/false recognised)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ModelError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        v: Any = value
        low = value.lower()
        if low in ("true", "false"):
            v = low == "true"
        else:
            for conv in (int, float):
                try:
                    v = conv(value)
                    break
                except ValueError:
                    continue
        out[key.strip().replace("-", "_")] = v
    return out


def load_split(args: argparse.Namespace, n_train: int | None) -> tuple[Any, Any]:
    """(training set, test set) as MolecularDatasets for ``--data``; training sets are nested in n."""
    from secureml.data import embedded_split, load_embedded, load_qm9
    from secureml.errors import DataError

    if is_path_data(args.data):
        ds = load_own_data(args)
        frac = float(getattr(args, "test_fraction", 0.2))
        if not 0 < frac < 1:
            raise DataError(f"--test-fraction must be between 0 and 1, got {frac}")
        n_test = max(1, int(round(frac * len(ds))))
        if len(ds) - n_test < 2:
            raise DataError(f"{args.data}: {len(ds)} molecules are too few to train and test (need at least 3)")
        perm = np.random.default_rng(args.seed).permutation(len(ds))
        train_idx = perm[n_test:] if n_train is None else perm[n_test:n_test + n_train]
        if n_train is not None and n_train > len(ds) - n_test:
            raise DataError(f"--n-train {n_train}: only {len(ds) - n_test} molecules remain after the "
                            f"{n_test}-molecule test set")
        return ds.subset(train_idx), ds.subset(perm[:n_test])
    if args.data == "embedded":
        full = load_embedded()
        train, test = embedded_split(args.seed, n_train)
        return full.subset(train), full.subset(test)
    if n_train is None:
        raise DataError("--data qm9 needs --n (training-set size)")
    # The first n_test molecules of the seeded permutation are the test set, the next n_train the
    # training set: the test set stays fixed and training sets are nested as n_train grows.
    props = [args.property] if args.property else None
    ds = load_qm9(n=args.n_test + n_train, max_heavy_atoms=args.max_heavy_atoms, seed=args.seed, properties=props)
    idx = np.arange(len(ds))
    return ds.subset(idx[args.n_test:]), ds.subset(idx[: args.n_test])


def model_from_args(args: argparse.Namespace, name: str | None = None) -> Any:
    """An unfitted MolecularModel from ``--model`` (a registered recipe) or --rep/--kernel."""
    from secureml.models import build_model

    options = parse_options(getattr(args, "options", []))
    name = name or getattr(args, "model", None) or f"krr-{args.kernel}"
    if name.startswith("krr-"):
        options.setdefault("cm_size", args.cm_size)
        options.setdefault("cm_variant", args.cm_variant)
        if args.cm_grid_bits is not None:
            options.setdefault("cm_grid_bits", args.cm_grid_bits)
    if args.sigma is not None:
        options["sigma"] = args.sigma
    if args.lam is not None:
        options["lam"] = args.lam
    options.setdefault("seed", args.seed)
    options.setdefault("baseline", getattr(args, "baseline", "mean"))
    return build_model(name, **options)


def cross_validate(model: Any, train: Any, args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Set the KRR estimator's sigma/lam by CV on ``train``; returns the search result."""
    from secureml.models.krr import KernelRidge, search_hyperparameters

    est = model.estimator
    if not isinstance(est, KernelRidge):
        raise ModelError("--cv is implemented for exact KRR models only")
    X = model.representation.fit(train).transform(train)
    y = np.asarray(train.properties[args.property], dtype=np.float64)
    # Search on what the estimator will be fitted on: the residual of the baseline (fitted once on
    # the whole training set -- a handful of parameters -- rather than per fold).
    y = y - model.fit_baseline(train, y)
    lams = parse_floats(args.lams, "--lams") or [float(est.lam)]
    result = search_hyperparameters(
        X, y, est.kernel, parse_floats(args.sigmas, "--sigmas"), lams,
        cv=args.cv_folds, seed=args.seed, progress=progress,
    )
    est.set_params(sigma=result["sigma"], lam=result["lam"])
    return result


def check_elements_covered(train: Any, test: Any) -> None:
    """DataError before fitting if test molecules have elements that no training molecule has:
    a dressed-atom model has no energy for them and would refuse them after the fit."""
    from secureml.data.formats import symbol
    from secureml.errors import DataError
    from secureml.models.baseline import dataset_elements

    missing = sorted(set(dataset_elements(test)) - set(dataset_elements(train)))
    if missing:
        n_bad = sum(bool(set(np.asarray(z).tolist()) & set(missing)) for z in test.charges)
        raise DataError(
            f"dressed-atom baseline: no training molecule contains {', '.join(symbol(z) for z in missing)}, "
            f"which {n_bad} test molecules do; use a larger --n (or --baseline mean)")


def evaluate(model: Any, test: Any) -> dict[str, Any]:
    """Test-set errors and prediction time per molecule (representation included)."""
    y = np.asarray(test.properties[model.property_name], dtype=np.float64)
    t0 = time.perf_counter()
    pred = model.predict(test)
    dt = time.perf_counter() - t0
    err = pred - y
    return {
        "n_test": len(test),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "max_abs_error": float(np.abs(err).max()),
        "predict_seconds_per_molecule": dt / max(1, len(test)),
    }


# -- the command -----------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on QM9, the embedded set or your own molecules; print its test MAE; save it",
        description="Train a model on the embedded set, on QM9 or on your own molecules (--data PATH), "
                    "print test-set errors with units and save the model as one .npz file (representation "
                    "settings, kernel, hyperparameters, training representations, weights, property and "
                    "unit, elements, data provenance). The best model kind is --recipe local-sorf "
                    "(0.4 kcal/mol on QM9 at N = 16,384; README).",
        epilog="examples: secureml train --data mine.xyz --property U0_atomization --out model.npz; "
               "secureml train --data qm7/ --labels hof_qm7.txt --property energy --cm-size 23 --out qm7.npz; "
               "secureml train --data mols.sdf --property energy --unit Hartree --recipe local-sorf "
               "--set pca_fit_data=train --out mine.npz; "
               "secureml train --data qm9 --n-train 4096 --cm-variant canonical --baseline dressed-atoms --out qm9.npz",
    )
    add_data_arguments(p)
    p.add_argument("--n-train", "--n", dest="n", type=int, default=None,
                   help="training-set size (qm9: default 4096; embedded: all 3,137 training molecules; "
                        "PATH: all but the test fraction)")
    add_model_arguments(p)
    p.add_argument("--recipe", "--model", dest="model", default=None,
                   help="registered model recipe instead of --rep/--kernel (krr-gaussian, krr-laplacian, "
                        "rff-gaussian, local-sorf ...); see `secureml learning-curve --list` (default: krr-KERNEL)")
    p.add_argument("--out", default=None,
                   help="model file to write (.npz; metrics beside it, .json), or a run folder to create "
                        "(model.npz, metrics.json, metrics.csv, parity.png); default: runs/train-<time>/")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the metrics JSON here (default: next to the model file)")
    p.add_argument("--sign-key", default=None,
                   help="Ed25519 private key (from `secureml keys signing`): sign the model file, so "
                   "`secureml serve --verify-key` accepts it")
    p.set_defaults(func=run)


def _output_paths(out: str | None) -> tuple[Path, Path | None]:
    """(model file, run folder or None) for ``--out``."""
    if out is None:
        folder = Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
        return folder / "model.npz", folder
    path = Path(out)
    if path.suffix == ".npz":
        return path, None
    return path / "model.npz", path


def _parity_plot(y: np.ndarray, pred: np.ndarray, name: str, unit: str, mae: float, path: Path) -> None:
    from secureml.plot_style import new_figure, save

    fig, ax = new_figure(size="square")
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, label="prediction = reference")
    ax.scatter(y, pred, s=8, alpha=0.7, label=f"test molecules (MAE {mae:.2f} {unit})".rstrip())
    ax.set_xlabel(f"reference {name} ({unit or 'unit unknown'})")
    ax.set_ylabel(f"predicted {name} ({unit or 'unit unknown'})")
    ax.legend(loc="upper left")
    save(fig, path)


def run(args: argparse.Namespace) -> int:
    from secureml.data.units import fmt, known_unit
    from secureml.models.baseline import energies_by_symbol

    n = args.n if args.n is not None else (4096 if args.data == "qm9" else None)
    sign_key = None  # loaded first: a bad key fails before minutes of training
    if getattr(args, "sign_key", None):
        from secureml.models.signing import load_private_key

        sign_key = load_private_key(args.sign_key)
    print(f"loading {args.data} data ...", file=sys.stderr)
    train, test = load_split(args, n)
    unit = getattr(args, "property_unit", None)
    if unit is None:
        unit = args.unit or known_unit(args.property)
    model = model_from_args(args)
    model.property_name = args.property
    model.property_unit = unit
    if model.baseline == "dressed-atoms":
        check_elements_covered(train, test)
    cv_result = None
    if args.cv:
        cv_result = cross_validate(model, train, args)
        print(f"cross-validation chose sigma={cv_result['sigma']:g} lam={cv_result['lam']:g} "
              f"(CV MAE {fmt(cv_result['mae'], unit)})", file=sys.stderr)
    from secureml.data.formats import symbol

    elements = sorted({int(z) for c in train.charges for z in np.unique(c)})
    print(f"fitting {getattr(args, 'model', None) or 'krr-' + args.kernel} on {len(train)} molecules "
          f"(elements {' '.join(symbol(z) for z in elements)}) ...", file=sys.stderr)
    t0 = time.perf_counter()
    model.fit(train, args.property)
    model.property_unit = unit
    fit_s = time.perf_counter() - t0
    missing = sorted({int(z) for c in test.charges for z in np.unique(c)} - set(elements))
    if missing:
        keep = [i for i, c in enumerate(test.charges) if not set(np.unique(c).tolist()) & set(missing)]
        print(f"note: {len(test) - len(keep)} test molecules contain {', '.join(symbol(z) for z in missing)}, "
              "which no training molecule has; they are left out of the test errors", file=sys.stderr)
        test = test.subset(keep)
    metrics = evaluate(model, test)
    model.provenance["test_mae"] = metrics["mae"]
    model.provenance["data"] = args.data
    model_path, folder = _output_paths(args.out)
    out = model.save(model_path, sign_key=sign_key)
    est = model.estimator
    params = est.get_params() if hasattr(est, "get_params") else {}
    report = {
        "model_file": str(out),
        "data": str(args.data),
        "property": args.property,
        "unit": unit,
        "unit_in_data": getattr(args, "unit_in", unit),
        "n_train": len(train),
        "elements": [symbol(z) for z in elements],
        "fit_seconds_total": fit_s,
        "representation": model.representation.get_params(),
        "estimator": {"class": type(est).__name__, **{k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))}},
        "baseline": model.baseline,
        "element_energies": None if model.element_energies_ is None else energies_by_symbol(model.element_energies_),
        **metrics,
        "cv": cv_result,
    }
    json_path = Path(args.json) if args.json else (folder / "metrics.json" if folder else out.with_suffix(".json"))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    if folder is not None:
        y = np.asarray(test.properties[args.property], dtype=np.float64)
        pred = model.predict(test)
        rows = "molecule,reference,prediction,unit\n" + "".join(
            f"{nm},{a:.6f},{b:.6f},{unit}\n" for nm, a, b in zip(test.names or range(len(test)), y, pred))
        (folder / "test_predictions.csv").write_text(rows)
        (folder / "metrics.csv").write_text(
            "property,unit,n_train,n_test,mae,rmse,max_abs_error\n"
            f"{args.property},{unit},{len(train)},{metrics['n_test']},{metrics['mae']:.6g},{metrics['rmse']:.6g},"
            f"{metrics['max_abs_error']:.6g}\n")
        _parity_plot(y, pred, args.property, unit, metrics["mae"], folder / "parity.png")
    print(f"{args.property}: test MAE {fmt(metrics['mae'], unit)}, RMSE {fmt(metrics['rmse'], unit)} "
          f"(n_train={len(train)}, n_test={metrics['n_test']}, fit {fit_s:.1f} s)")
    if model.element_energies_ is not None:
        print(f"dressed-atom energies ({unit or 'unit unknown'}): "
              + ", ".join(f"{k} {v:.3f}" for k, v in energies_by_symbol(model.element_energies_).items()))
    print(f"model saved to {out}; metrics in {json_path}" + (f"; run folder {folder}" if folder else ""))
    return 0


__all__ = ["register", "run", "load_split", "model_from_args", "evaluate", "cross_validate", "load_own_data"]
