"""Sweeps on Dask: the same cells give the same results serially, on a LocalCluster and through a
tcp:// scheduler with two worker processes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from secureml.errors import SecureMLError
from secureml.sweep import map_cells

distributed = pytest.importorskip("distributed")


def _cell(seed: int) -> float:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(50, 50))
    return float(np.linalg.norm(a @ a.T, 1))  # deterministic per seed


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


def test_map_cells_serial_and_cluster_agree(cluster):
    cells = list(range(7))
    serial = map_cells(_cell, cells)
    seen = []
    remote = map_cells(_cell, cells, cluster.scheduler_address, progress=lambda c, r: seen.append(c))
    assert remote == serial and sorted(seen) == cells
    with pytest.raises(SecureMLError, match="--scheduler"):
        map_cells(_cell, cells, "nonsense")


def test_learning_curve_on_a_cluster_matches_serial(cluster, tmp_path):
    from secureml.cli import main

    base = ["learning-curve", "--data", "embedded", "--sizes", "48,96,160", "--model", "krr-gaussian",
            "--cv", "--cv-max-n", "96", "--no-reference"]
    assert main(base + ["--out", str(tmp_path / "s")]) == 0
    assert main(base + ["--out", str(tmp_path / "c"), "--scheduler", cluster.scheduler_address]) == 0
    a = json.loads((tmp_path / "s" / "learning_curve.json").read_text())["results"]
    b = json.loads((tmp_path / "c" / "learning_curve.json").read_text())["results"]
    assert [(r["model"], r["n_train"], r["params"]) for r in a] == [(r["model"], r["n_train"], r["params"]) for r in b]
    # BLAS thread counts differ between this process and single-threaded workers: summation order
    np.testing.assert_allclose([r["mae"] for r in a], [r["mae"] for r in b], rtol=1e-9)
    assert a[2]["params"]["sigma"] == a[1]["params"]["sigma"]  # N=160 reuses the N=96 choice


@pytest.mark.slow
def test_leakage_matrix_on_a_cluster_matches_serial(cluster):
    from attacks.report import leakage_matrix

    kw = dict(attacks=["whitebox", "mia"], deployments=("model-file", "api"))
    a = leakage_matrix(**kw)
    b = leakage_matrix(**kw, scheduler=cluster.scheduler_address)
    assert [(r["attack"], r["deployment"], r["status"], r.get("value")) for r in a] == \
           [(r["attack"], r["deployment"], r["status"], r.get("value")) for r in b]
