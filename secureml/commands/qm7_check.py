"""``secureml qm7-check``: the qml/qmllib QM7 accuracy check on a real QM7 copy.

qmllib's test suite (``tests/test_energy_krr_cmat.py``) fixes a protocol and a bound: the first
1,000 QM7 files by name, shuffled with numpy's legacy generator seeded 666, 700 training / 300 test
molecules, sorted Coulomb matrix of size 23, Laplacian kernel with sigma = 10^4.2, lambda = 1e-10,
test MAE below 6 kcal/mol on the PBE0 atomization energies of ``hof_qm7.txt``. This command runs
that protocol with secureml's own reader (:func:`secureml.data.formats.read_qm7`), Coulomb matrix
and :class:`~secureml.models.krr.KernelRidge`.

QM7 comes as a folder of ``.xyz`` files plus ``hof_qm7.txt`` (``name energy [energy2]``), e.g. in
the source distribution of qmllib (MIT), which ``--qmllib-sdist`` reads directly::

    pip download --no-deps --no-binary :all: qmllib==1.2.0 -d /tmp/qmllib
    secureml qm7-check --qmllib-sdist /tmp/qmllib/qmllib-1.2.0.tar.gz
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from secureml.errors import DataError

QML_SIGMA = 10**4.2
QML_LAMBDA = 1e-10
QML_BOUND = 6.0  # kcal/mol, qmllib's assertion


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qm7-check",
        help="qml's QM7 check (CM + Laplacian KRR, 700/300, MAE < 6 kcal/mol) on a real QM7 copy",
        description="Run qmllib's QM7 Coulomb-matrix + Laplacian-KRR test protocol with secureml's "
                    "reader, representation and KRR: first --n-points files by name, legacy numpy "
                    "shuffle seeded --seed, --n-train / --n-test split, sorted CM of size --cm-size, "
                    "sigma 10^4.2, lambda 1e-10. Prints the test MAE and whether it is below --bound; "
                    "exit status 1 if it is not. Writes qm7_check.json, qm7_check.csv (test "
                    "predictions) and qm7_check.png to --out.",
        epilog="examples:\n"
               "  secureml qm7-check --xyz-dir qm7/ --energies hof_qm7.txt\n"
               "  pip download --no-deps --no-binary :all: qmllib==1.2.0 -d /tmp/qmllib\n"
               "  secureml qm7-check --qmllib-sdist /tmp/qmllib/qmllib-1.2.0.tar.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("data (either --xyz-dir with --energies, or --qmllib-sdist)")
    src.add_argument("--xyz-dir", help="folder with one .xyz file per QM7 molecule")
    src.add_argument("--energies", help="property file, lines 'name energy [...]' (qml's hof_qm7.txt)")
    src.add_argument("--qmllib-sdist", metavar="TAR_GZ",
                     help="a qmllib source distribution (.tar.gz); its tests/assets/qm7 and hof_qm7.txt are used")
    p.add_argument("--n-points", type=int, default=1000, help="first N files by name (default 1000)")
    p.add_argument("--n-train", type=int, default=700, help="training molecules (default 700)")
    p.add_argument("--n-test", type=int, default=300, help="test molecules (default 300)")
    p.add_argument("--seed", type=int, default=666, help="legacy numpy shuffle seed (default 666, qml's)")
    p.add_argument("--cm-size", type=int, default=23, help="Coulomb-matrix size (default 23, QM7)")
    p.add_argument("--sigma", type=float, default=QML_SIGMA, help="Laplacian width (default 10^4.2)")
    p.add_argument("--lam", type=float, default=QML_LAMBDA, help="ridge regularisation (default 1e-10)")
    p.add_argument("--splits", type=int, default=0,
                   help="also report the MAE over this many other random splits (seeds 0..K-1) of the same molecules")
    p.add_argument("--bound", type=float, default=QML_BOUND, help="MAE bound in kcal/mol (default 6, qmllib's)")
    p.add_argument("--out", default=None, help="folder for qm7_check.json/.csv/.png (default: print only)")
    p.set_defaults(func=run)


def extract_qmllib_assets(sdist: str | Path, dest: str | Path) -> tuple[Path, Path]:
    """Extract ``tests/assets/qm7/*.xyz`` and ``tests/assets/hof_qm7.txt`` of a qmllib sdist.

    Returns (xyz folder, property file). Only those regular files are extracted, each by its
    base name, so member paths in the archive cannot write outside ``dest``.
    """
    sdist, dest = Path(sdist), Path(dest)
    if not sdist.is_file():
        raise DataError(f"{sdist}: no such file")
    xyz_dir = dest / "qm7"
    xyz_dir.mkdir(parents=True, exist_ok=True)
    prop = None
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for m in tar:
                parts = PurePosixPath(m.name).parts
                in_qm7 = parts[-3:-1] == ("assets", "qm7")
                is_prop = parts[-2:] == ("assets", "hof_qm7.txt")
                if not m.isfile() or not (in_qm7 or is_prop):
                    continue
                fh = tar.extractfile(m)
                if fh is None:
                    continue
                if parts[-1] == "hof_qm7.txt":
                    prop = dest / "hof_qm7.txt"
                    prop.write_bytes(fh.read())
                elif parts[-1].endswith(".xyz"):
                    (xyz_dir / parts[-1]).write_bytes(fh.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{sdist}: cannot read the archive: {exc}") from exc
    if prop is None or not any(xyz_dir.iterdir()):
        raise DataError(f"{sdist}: no tests/assets/qm7/*.xyz and tests/assets/hof_qm7.txt inside (not a qmllib sdist?)")
    return xyz_dir, prop


def qm7_check(
    xyz_dir: str | Path, energies: str | Path, n_points: int = 1000, n_train: int = 700, n_test: int = 300,
    seed: int = 666, cm_size: int = 23, sigma: float = QML_SIGMA, lam: float = QML_LAMBDA, splits: int = 0,
) -> dict[str, Any]:
    """qml's QM7 protocol with secureml's reader, sorted CM and Laplacian :class:`KernelRidge`.

    Returns a dict with ``mae``, ``rmse``, the test ``names``/``reference``/``predicted`` values,
    the settings, and with ``splits`` > 0 the MAEs of that many other random splits.
    """
    from secureml.data.formats import read_qm7
    from secureml.models.krr import KernelRidge
    from secureml.representations.coulomb import CoulombMatrix

    if min(n_points, n_train, n_test) < 1 or n_train + n_test > n_points:
        raise DataError(f"need 1 <= n_train + n_test <= n_points, got {n_train} + {n_test} > {n_points}")
    t0 = time.perf_counter()
    data = read_qm7(xyz_dir, energies)
    if len(data) < n_points:
        raise DataError(f"{energies}: {len(data)} molecules, fewer than --n-points {n_points}")
    # qml sorts the property file's keys, which are file names ("0001.xyz"): sort by the same key.
    keys = [n if n.endswith(".xyz") else f"{n}.xyz" for n in data.names]
    data = data.subset(sorted(range(len(data)), key=keys.__getitem__)[:n_points])
    X = CoulombMatrix(cm_size, "sorted").transform(data)
    y = np.asarray(data.properties["energy"], dtype=np.float64)
    # np.random.seed(s); np.random.shuffle(a) -- the legacy generator qml's test uses.
    order = np.arange(n_points)
    np.random.RandomState(seed).shuffle(order)
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    est = KernelRidge("laplacian", sigma, lam).fit(X[tr], y[tr])
    pred = est.predict(X[te])
    err = pred - y[te]
    other = []
    for s in range(splits):
        p = np.random.default_rng(s).permutation(n_points)
        e = KernelRidge("laplacian", sigma, lam).fit(X[p[:n_train]], y[p[:n_train]])
        other.append(float(np.abs(e.predict(X[p[n_train : n_train + n_test]]) - y[p[n_train : n_train + n_test]]).mean()))
    return {
        "xyz_dir": str(xyz_dir), "energies": str(energies),
        "n_points": n_points, "n_train": n_train, "n_test": n_test, "seed": seed, "cm_size": cm_size,
        "kernel": "laplacian", "sigma": sigma, "lam": lam,
        "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs_error": float(np.abs(err).max()),
        "other_splits_mae": other,
        "names": [data.names[i] for i in te], "reference": y[te].tolist(), "predicted": pred.tolist(),
        "seconds": time.perf_counter() - t0,
    }


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="secureml-qm7-") as tmp:
        if args.qmllib_sdist:
            if args.xyz_dir or args.energies:
                raise DataError("give either --qmllib-sdist or --xyz-dir with --energies, not both")
            xyz_dir, energies = extract_qmllib_assets(args.qmllib_sdist, tmp)
            source = f"{args.qmllib_sdist} (tests/assets)"
        elif args.xyz_dir and args.energies:
            xyz_dir, energies = Path(args.xyz_dir), Path(args.energies)
            source = f"{xyz_dir} + {energies}"
        else:
            raise DataError("qm7-check needs --xyz-dir and --energies, or --qmllib-sdist")
        res = qm7_check(xyz_dir, energies, args.n_points, args.n_train, args.n_test, args.seed,
                        args.cm_size, args.sigma, args.lam, args.splits)
    res.update(source=source, bound=args.bound, passed=res["mae"] < args.bound)
    if args.qmllib_sdist:  # the extracted copy is gone; name the archive instead
        res.update(xyz_dir=None, energies=None)
    print(f"QM7 check ({source}): {res['n_train']} train / {res['n_test']} test of the first {res['n_points']} "
          f"files, sorted CM {res['cm_size']}, Laplacian sigma {res['sigma']:.6g}, lambda {res['lam']:g}")
    print(f"test MAE {res['mae']:.3f} kcal/mol (RMSE {res['rmse']:.3f}); bound {args.bound:g}: "
          + ("PASS" if res["passed"] else "FAIL"))
    if res["other_splits_mae"]:
        o = np.array(res["other_splits_mae"])
        print(f"{len(o)} other random splits: MAE mean {o.mean():.2f}, min {o.min():.2f}, max {o.max():.2f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "qm7_check.json").write_text(json.dumps(res, indent=2))
        with open(out / "qm7_check.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "reference_kcal_mol", "predicted_kcal_mol"])
            w.writerows(zip(res["names"], res["reference"], res["predicted"]))
        _plot(res, out / "qm7_check.png")
        print(f"wrote {out / 'qm7_check.json'}, .csv and .png", file=sys.stderr)
    return 0 if res["passed"] else 1


def _plot(res: dict[str, Any], path: Path) -> None:
    from secureml.plot_style import PALETTE, new_figure, save

    ref, pred = np.array(res["reference"]), np.array(res["predicted"])
    fig, ax = new_figure("square")
    ax.plot(ref, pred, ".", alpha=0.6, color=PALETTE[0])
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("reference (kcal/mol)")
    ax.set_ylabel("predicted (kcal/mol)")
    ax.set_title(f"QM7 check: MAE {res['mae']:.2f} kcal/mol (bound {res['bound']:g})")
    save(fig, path)
