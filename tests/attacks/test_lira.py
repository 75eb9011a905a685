"""LiRA membership inference: shadow statistics, scores against chance, the CLI (small populations)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from attacks import lira
from secureml.cli import main


@pytest.fixture(scope="module")
def pop():
    return lira.population(400, seed=0)


def test_lira_scores_separate_known_distributions():
    """Synthetic statistics with known in/out Gaussians: LiRA finds members, shuffled labels are chance."""
    rng = np.random.default_rng(0)
    n, k = 2000, 16
    member = rng.random(n) < 0.5
    inside = rng.random((k, n)) < 0.5
    mu_out = rng.normal(0, 3, n)  # per-example difficulty: what a global threshold cannot see
    stats = np.where(inside, mu_out - 1.0, mu_out) + rng.normal(0, 0.3, (k, n))
    target = np.where(member, mu_out - 1.0, mu_out) + rng.normal(0, 0.3, n)
    sc = lira.lira_scores(target, lira.ShadowStats(stats, inside, 0.0, 0.0))
    ev = lira.evaluate(sc, member.astype(int))
    assert ev["lira_online"]["auc"] > 0.95 and ev["lira_online"]["tpr_at_0.01_fpr"] > 0.3
    assert ev["loss_threshold"]["auc"] < 0.7  # the per-example calibration is what wins here
    fake = rng.permutation(member).astype(int)
    assert abs(lira.evaluate(sc, fake)["lira_online"]["auc"] - 0.5) < 0.05


def test_lira_on_interpolating_krr_and_strong_ridge(pop):
    res = lira.run(pop, lams=(1e-8, 10.0), n_shadows=8)  # 16 in the CLI default; 8 keep the acceptance run short
    tiny, big = res["rows"]
    assert tiny["n_members"] == 200 and tiny["n_nonmembers"] == 200
    assert tiny["lira_online"]["auc"] > 0.99 and tiny["lira_online"]["tpr_at_0.01_fpr"] > 0.9
    assert big["lira_online"]["auc"] < 0.75  # a strong ridge is the lever that protects
    assert tiny["chance"]["tpr_at_0.001_fpr"] == 0.001


def test_roc_points_are_monotone():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 2, 500)
    pts = lira.roc_points({"a": lab + rng.normal(0, 1, 500)}, lab)["a"]
    assert np.all(np.diff(pts["tpr"]) >= 0) and np.all(np.diff(pts["fpr"]) > 0)


def test_lira_cli_writes_roc_files(tmp_path):
    rc = main(["attack", "lira", "--population", "200", "--shadows", "8", "--lams", "1e-8",
               "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "lira.json").read_text())
    assert res["rows"][0]["lira_online"]["auc"] > 0.95
    assert (tmp_path / "lira_roc.png").stat().st_size > 1000
    assert len((tmp_path / "lira.csv").read_text().splitlines()) == 5  # header + 3 attacks + chance
    assert main(["attack", "lira", "--lams", "x", "--out", str(tmp_path)]) == 2
