"""`secureml attack` and `secureml report leakage` end to end (small settings)."""
from __future__ import annotations

import json

from secureml.cli import main


def test_attack_cli_writes_json(tmp_path, capsys):
    rc = main(["attack", "rank", "--n-train", "200", "--budget", "400", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "rank_api.json").read_text())
    assert res["precision_at_k"]["50"] > 0.9 and res["random_precision"] == 0.25
    assert res["cost"]["queries"] == 400


def test_attack_runs_never_overwrite_each_other(tmp_path, monkeypatch, capsys):
    """Without --out every run gets its own results/attacks/NAME-DEPLOYMENT-<time>/ folder."""
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["attack", "rank", "--n-train", "40", "--budget", "60"]) == 0
    runs = sorted((tmp_path / "results" / "attacks").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("rank-api-") for r in runs)
    assert all((r / "rank_api.json").is_file() for r in runs)


def test_attack_cli_budget_is_enforced(tmp_path, capsys):
    rc = main(["attack", "reconstruct", "--n-train", "4", "--budget", "1000", "--out", str(tmp_path)])
    assert rc == 2
    assert "budget" in capsys.readouterr().err


def test_whitebox_on_api_is_not_applicable(tmp_path, capsys):
    rc = main(["attack", "whitebox", "--target", "api", "--n-train", "20", "--out", str(tmp_path)])
    assert rc == 2
    assert "model file" in capsys.readouterr().err


def test_report_leakage_small(tmp_path, capsys):
    rc = main(["report", "leakage", "--quick", "--attacks", "mia,whitebox", "--deployments", "model-file,api",
               "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "leakage.json").read_text())
    cells = {(r["attack"], r["deployment"]): r for r in rows}
    assert cells[("whitebox", "model-file")]["value"] > 0.95
    assert cells[("whitebox", "api")]["status"] == "n/a"
    assert cells[("mia", "api")]["value"] > 0.95
    # every ok cell: leakage beside its chance baseline, and the attacker's total cost
    mia = cells[("mia", "api")]
    assert mia["baseline"] == 0.5 and abs(mia["advantage"] - (mia["value"] - 0.5)) < 1e-12
    assert mia["total_bytes"] == mia["queries"] * 8 * 436  # raw float64 payload of the plaintext API
    assert cells[("whitebox", "model-file")]["total_bytes"] > 1e5  # the downloaded model file
    assert cells[("whitebox", "model-file")]["total_seconds"] > 0
    assert (tmp_path / "leakage.png").stat().st_size > 1000 and (tmp_path / "leakage.csv").exists()
    assert "model file" in capsys.readouterr().out


def test_reconstruct_runs_the_measured_assembly_by_default(tmp_path, capsys):
    """The CLI runs the strongest kink assembly unless --membership picks another, and says which."""
    import pytest

    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    assert "(default measure)" in " ".join(capsys.readouterr().out.split())
    out = {}
    for extra in ([], ["--membership", "grouped"]):
        d = tmp_path / (extra[-1] if extra else "default")
        rc = main(["attack", "reconstruct", "--n-train", "6", "--grid-step", "2", "--depth", "3",
                   "--out", str(d), *extra])
        assert rc == 0
        out[extra[-1] if extra else "default"] = json.loads((d / "reconstruct_api.json").read_text())
    assert out["default"]["membership"] == "measure" and out["grouped"]["membership"] == "grouped"
    assert out["default"]["fraction_recovered_rel0.001"] == 1.0
    assert out["default"]["random_baseline"] == 0.0
