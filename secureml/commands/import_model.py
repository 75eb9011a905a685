"""``secureml import-model``: a KRR model trained with scikit-learn or qmllib -> a servable model file."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-model",
        help="turn a scikit-learn KernelRidge or qmllib KRR model into a model file `secureml serve` serves",
        description="Import a Coulomb-matrix KRR model trained elsewhere. --sklearn: a fitted "
                    "sklearn.kernel_ridge.KernelRidge saved with joblib (kernel rbf or laplacian; the file is a "
                    "pickle: load only files you trust). --qmllib: an .npz with X (training representations, "
                    "qmllib's lower-triangle Coulomb matrices), alphas, sigma and kernel (gaussian|laplacian).",
        epilog="example: secureml import-model --sklearn krr.joblib --cm-size 23 --property energy "
               "--unit kcal/mol --y-offset -1520.3 --elements H,C,N,O,S --out model.npz",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sklearn", metavar="JOBLIB", help="fitted sklearn KernelRidge (joblib/pickle file)")
    src.add_argument("--qmllib", metavar="NPZ", help="qmllib KRR arrays: X, alphas, sigma, kernel")
    p.add_argument("--cm-size", type=int, required=True, help="Coulomb-matrix size the features were computed with")
    p.add_argument("--cm-variant", choices=("sorted", "unsorted", "canonical", "eigenspectrum"), default="sorted",
                   help="Coulomb-matrix variant (default: %(default)s; qmllib 'row-norm' = sorted)")
    p.add_argument("--property", default="", help="name of the predicted property (default: none)")
    p.add_argument("--unit", default="", help="unit of the predictions, e.g. kcal/mol (default: unknown)")
    p.add_argument("--y-offset", type=float, default=0.0,
                   help="constant added to every prediction (the mean you subtracted before fitting; default 0)")
    p.add_argument("--elements", default=None,
                   help="comma-separated elements of the training molecules (e.g. H,C,N,O,S): queries with "
                        "others are refused by name (default: not checked)")
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from secureml.data.formats import parse_element
    from secureml.errors import ModelError
    from secureml.models.imports import from_qmllib, from_sklearn
    from secureml.representations import CoulombMatrix

    rep = CoulombMatrix(size=args.cm_size, variant=args.cm_variant)
    elements = [parse_element(e.strip(), "--elements") for e in args.elements.split(",")] if args.elements else None
    if args.sklearn:
        import joblib

        try:
            krr = joblib.load(args.sklearn)
        except Exception as exc:  # joblib/pickle raise many types for a wrong file
            raise ModelError(f"{args.sklearn}: cannot load a scikit-learn model ({type(exc).__name__}: {exc})") from None
        model = from_sklearn(krr, rep, args.property, args.unit, args.y_offset, elements)
    else:
        try:
            with np.load(args.qmllib, allow_pickle=False) as f:
                X, alphas, sigma, kernel = f["X"], f["alphas"], float(f["sigma"]), str(f["kernel"])
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{args.qmllib}: expected an .npz with X, alphas, sigma, kernel ({exc})") from None
        model = from_qmllib(X, alphas, kernel, sigma, rep, args.y_offset, args.property, args.unit, elements)
    out = model.save(args.out)
    est = model.estimator
    print(f"imported {est.kernel} KRR (N={est.X_fit_.shape[0]}, sigma {est.sigma:g}) predicting "
          f"{args.property or 'an unnamed property'} ({args.unit or 'unit unknown'}) -> {out}")
    return 0
