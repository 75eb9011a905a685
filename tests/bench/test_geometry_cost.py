"""bench/geometry_cost.py: the SMILES-geometry accuracy study runs end to end on a small split."""
from __future__ import annotations

import json

import numpy as np

from bench.geometry_cost import main


def test_geometry_cost_script_runs_small(tmp_path):
    out = tmp_path / "gc"
    assert main(["--n-train", "60", "--n-test", "2", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n_train"] == 60 and report["n_test"] == 2
    assert set(report["results"]) == {"qm9", "qm9_xtb", "etkdg", "mmff", "xtb"}
    assert all(np.isfinite(r["mae"]) for r in report["results"].values())
    assert out.with_suffix(".png").stat().st_size > 1000
