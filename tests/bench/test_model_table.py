"""The README's model table: best model first, every number from a measured file in docs/."""
from __future__ import annotations

import json

from bench import model_table


def test_model_table_from_docs(tmp_path) -> None:
    assert model_table.main(["--no-measure", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "model_table.json").read_text())
    rows = rep["rows"]
    maes = [r["mae_kcal_mol"] for r in rows]
    assert maes == sorted(maes) and rows[0]["model"].startswith("local-sorf")
    assert rows[0]["mae_kcal_mol"] < model_table.CHEMICAL_ACCURACY < rows[-1]["mae_kcal_mol"]
    assert rep["unit"] == "kcal/mol"
    for name in ("model_table.csv", "model_table.md", "model_table.png"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "model_table.md").read_text()
    assert "MAE (kcal/mol)" in md and "chemical accuracy" in md


def test_keep_measured_reuses_the_last_runs_measurement(tmp_path) -> None:
    prev = {"local-16384": {"MB": 3.5, "s": 0.05, "sessions": 5, "features": 16384, "n_train_for_cost": 256}}
    (tmp_path / "model_table.json").write_text(json.dumps({"measured_here": prev}))
    assert model_table.main(["--keep-measured", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "model_table.json").read_text())
    assert rep["measured_here"] == prev and rep["command"].endswith("--keep-measured")
    row = next(r for r in rep["rows"] if r["model"] == "local-sorf, F = 16,384")
    assert (row["query_MB"], row["query_s"]) == (3.5, 0.05)
