"""The defense matrix: mechanisms as the attacker meets them, adaptive attackers, the report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from attacks.defenses import matrix as M
from attacks.defenses import report as R


@pytest.fixture(scope="module")
def models():
    return M.load_models(0)


def test_oracle_mechanisms():
    f = lambda Q: Q[:, 0] * 1.0  # noqa: E731 - exact answers = first feature
    Q = np.linspace(-5, 5, 400)[:, None] + 0.123
    rounded = M.Oracle(f, M.Defense("round", 1.0))(Q)
    assert np.all(rounded == np.floor(Q[:, 0] + 0.5))
    noisy = M.Oracle(f, M.Defense("noise", 4.0), seed=1)
    one = noisy(Q) - Q[:, 0]
    avg = noisy.repeated(Q, 16) - Q[:, 0]
    assert 3.5 < one.std() < 4.5 and 0.8 < avg.std() < 1.2  # averaging R answers: sd / sqrt(R)
    prf = M.Oracle(f, M.Defense("prf-noise", 4.0))
    a, b = prf(Q), prf(Q)
    assert np.array_equal(a, b) and 3.0 < (a - Q[:, 0]).std() < 5.0  # repeats give the same answer
    assert not np.array_equal(prf(Q + 0.5), prf(Q) + 0.5)  # another cell: other noise


def test_pareto_front():
    pts = [(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (0.5, 9.0), (2.0, 1.0)]
    assert sorted(M.pareto(pts)) == [0, 3, 4]


def test_attacks_see_leakage_and_the_defenses_cut_it(models, tmp_path):
    none = M.attack_mia(models, M.Defense("none"), True)
    assert none["value"] == 1.0 and none["auc"] > 0.99  # interpolating KRR: every member found
    ridge = M.attack_mia(models, M.Defense("ridge", 1.0), True)
    assert ridge["value"] < 0.05 and ridge["mae"] > none["mae"]  # chance, at a utility cost
    noise = M.attack_mia(models, M.Defense("noise", 16.0), True)
    v = noise["variants"]
    # the averaging attacker gains on fresh noise (16 repeats: sd 16 -> 4)
    assert v["avg 16 repeats"]["tpr_1pct"] > v["1 query"]["tpr_1pct"] and noise["attacker"] == "avg 16 repeats"
    rows = []
    for r, d in ((none, M.Defense("none")), (ridge, M.Defense("ridge", 1.0)), (noise, M.Defense("noise", 16.0))):
        r = dict(r, defense=d.label, family=d.family, strength=d.strength, deployments=list(d.deployments))
        r["above_chance"] = r["value"] - r["chance"]
        r["mae_increase_pct"] = 100 * (r["mae"] / none["mae"] - 1)
        rows.append(r)
    paths = R.write({"rows": rows, "noise_budget": None, "protocol_costs": [], "quick": True, "seed": 0,
                     "seconds": 1.0}, tmp_path)
    md = paths["md"].read_text()
    assert "## mia" in md and "Verdict:" in md and paths["png"].stat().st_size > 1000
    assert json.loads(paths["json"].read_text())["rows"][0]["value"] == 1.0
    assert paths["csv"].read_text().count("\n") == 4


def test_kink_reconstruction_row_runs_the_strongest_assembly(models):
    """The matrix's reconstruction row is the measured assembly: every one of the 32 training points
    undefended (the grouped test found 20), none through answers rounded to 2^-7 kcal/mol."""
    none = M.attack_reconstruct_kink(models, M.Defense("none"), True)
    assert "measure assembly" in none["attacker"]
    assert none["value"] == 1.0 and none["chance"] == 0.0
    rounded = M.attack_reconstruct_kink(models, M.Defense("round", 2.0 ** -7), True)
    assert rounded["value"] == 0.0
