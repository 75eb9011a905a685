"""bench.barzilai_curve merges `secureml attack barzilai --curve` runs into one JSON/CSV/PNG."""
import csv
import json

from bench import barzilai_curve


def _run_csv(path, n, restarts_col):
    keys = ["data", "n_train", "d", "sigma_true", "sigma_estimated", "query_factor", "queries_over_n_d_plus_2",
            "fraction_recovered", "rel_tol", "baseline_nearest_public", "queries"] + (["restarts"] if restarts_col else [])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for f, rec in ((1.0, 0.0), (4.0, 0.5)):
            row = {"data": "uniform [0,4]^5", "n_train": n, "d": 5, "sigma_true": 1.0, "sigma_estimated": False,
                   "query_factor": f, "queries_over_n_d_plus_2": f, "fraction_recovered": rec, "rel_tol": 0.01,
                   "baseline_nearest_public": 0.0, "queries": int(f * n * 7)}
            if restarts_col:
                row["restarts"] = 8
            w.writerow(row)


def test_merge_labels_restarts_and_keeps_baseline(tmp_path) -> None:
    _run_csv(tmp_path / "a.csv", 32, False)
    _run_csv(tmp_path / "b.csv", 64, True)
    barzilai_curve.main([f"{tmp_path / 'a.csv'}:3", str(tmp_path / "b.csv"), "--out", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "barzilai_curve.json").read_text())
    assert {(r["n_train"], r["restarts"]) for r in rows} == {(32, 3), (64, 8)}
    assert all(r["baseline_nearest_public"] == 0.0 for r in rows)
    assert (tmp_path / "out" / "barzilai_curve.csv").exists() and (tmp_path / "out" / "barzilai_curve.png").exists()
