"""The sparse Laplacian oracle equals the model's predict; the kink attack through it recovers points."""
import numpy as np

from attacks import kink_scale, reconstruction
from secureml.models.krr import KernelRidge


def _model(n: int = 12, d: int = 6, seed: int = 0) -> KernelRidge:
    rng = np.random.default_rng(seed)
    X = np.round(rng.uniform(0.0, 10.0, (n, d)), 3)
    y = rng.normal(size=n)
    return KernelRidge(kernel="laplacian", sigma=5.0, lam=1e-10).fit(X, y)


def test_sparse_oracle_matches_predict() -> None:
    est = _model()
    rng = np.random.default_rng(1)
    base = np.zeros(6)
    orc = kink_scale.SparseLaplacianOracle.from_estimator(est, base, block=7)
    Q = np.zeros((40, 6))
    Q[np.arange(40), rng.integers(0, 6, 40)] = rng.uniform(-2, 12, 40)  # one coordinate moved
    Q[30:, 2] = 4.2  # two coordinates moved (membership stencils)
    Q[-1] = rng.uniform(0, 10, 6)  # all moved
    Q[-2] = 0.0  # the base point itself
    assert np.allclose(orc(Q), est.predict(Q), rtol=1e-12, atol=1e-12)
    assert orc.queries == 40


def test_kink_attack_through_sparse_oracle_recovers_points() -> None:
    est = _model()
    orc = kink_scale.SparseLaplacianOracle.from_estimator(est, np.zeros(6))
    res = reconstruction.kink_attack(orc, 6, 0.0, 10.0, h=0.5, refine=8, depth=3, n_hint=12)
    m = reconstruction.match_points(est.X_fit_, res.centres, 1e-3)
    assert m["fraction_recovered"] >= 0.9
    assert res.n_queries == orc.queries


def test_bench_writes_curve_with_baseline(tmp_path) -> None:
    import json

    from bench import kink_scale as bench_kink

    bench_kink.main(["--ns", "8", "--settings", "1.0,3", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kink_scale.json").read_text())
    assert (tmp_path / "kink_scale.csv").exists() and (tmp_path / "kink_scale.png").exists()
    (r,) = rows
    assert r["n_train"] == 8 and r["queries"] > 0
    # the attack beats the no-model guess (nearest public molecule) on the embedded data
    assert r["fraction_recovered_rel0.01"] > r["baseline_nearest_public_rel0.01"]
    # and whole molecules (exact SMILES) beat the SMILES of the public molecules
    assert r["membership"] == "measure" and r["fraction_molecules_exact"] > r["baseline_public_smiles"]


def _merged_model(n: int, seed: int = 0) -> KernelRidge:
    """Coordinates shared by many points (discrete 'diagonal' values, zero padding, values on a
    coarse grid): merged kinks whose number grows with N, as on Coulomb matrices."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, 8))
    X[:, :2] = rng.choice([0.0, 0.5, 3.0, 5.0], (n, 2))
    X[:, 2:6] = np.where(rng.random((n, 4)) < 0.5, 0.0, np.round(rng.uniform(1, 9, (n, 4)), 1))
    X[:, 6:] = np.round(rng.uniform(0.0, 10.0, (n, 2)), 4)
    return KernelRidge(kernel="laplacian", sigma=20.0, lam=1e-10).fit(X, rng.normal(size=n))


def test_grouped_membership_is_cheaper_and_as_good_as_pairwise() -> None:
    runs = {}
    for n in (48, 96):
        est = _merged_model(n)
        for mem in ("pairwise", "grouped"):
            orc = kink_scale.SparseLaplacianOracle.from_estimator(est, np.zeros(8))
            res = reconstruction.kink_attack(orc, 8, 0.0, 10.0, h=0.5, refine=8, depth=3, n_hint=n, membership=mem)
            assert res.n_queries == orc.queries  # every query counted, the tests' included
            frac = reconstruction.match_points(est.X_fit_, res.centres, 1e-3)["fraction_recovered"]
            runs[n, mem] = (res.membership_queries, frac)
    for n in (48, 96):
        assert runs[n, "grouped"][1] >= runs[n, "pairwise"][1] - 0.05
    # the pairwise test grows ~N^2 here (merged kinks x points per axis), the grouped one slower
    assert runs[96, "grouped"][0] < 0.6 * runs[96, "pairwise"][0]
    assert runs[96, "pairwise"][0] / runs[48, "pairwise"][0] > 3.5
    assert runs[96, "grouped"][0] / runs[48, "grouped"][0] < 3.0


def test_unknown_membership_mode_is_refused() -> None:
    import pytest

    est = _model()
    orc = kink_scale.SparseLaplacianOracle.from_estimator(est, np.zeros(6))
    with pytest.raises(reconstruction.AttackError, match="membership"):
        reconstruction.kink_attack(orc, 6, 0.0, 10.0, h=0.5, refine=8, depth=3, n_hint=12, membership="magic")


def test_measured_positions_place_merged_coordinates_with_linear_queries() -> None:
    """membership="measure": 3 queries per unknown (point, axis) + 3 per point, however many points
    share a value; every point the signatures find comes out exact, and at least as many points as
    the grouped test recovers."""
    d = 8
    per_point = {}
    for n in (48, 96, 192):
        est = _merged_model(n)
        got = {}
        for mem in ("grouped", "measure"):
            orc = kink_scale.SparseLaplacianOracle.from_estimator(est, np.zeros(d))
            res = reconstruction.kink_attack(orc, d, 0.0, 10.0, h=0.5, refine=8, depth=3, n_hint=n, membership=mem)
            assert res.n_queries == orc.queries
            got[mem] = (res, reconstruction.match_points(est.X_fit_, res.centres, 1e-3)["fraction_recovered"])
        res, frac = got["measure"]
        assert frac >= got["grouped"][1]
        assert res.unassigned == 0
        assert res.membership_queries <= 3 * len(res.centres) * (d + 1)
        # each reconstruction is one of the training points (nothing half-placed)
        assert reconstruction.match_points(res.centres, est.X_fit_, 1e-3)["fraction_recovered"] == 1.0
        per_point[n] = res.membership_queries / n
        if n == 192:
            assert res.membership_queries < 0.1 * got["grouped"][0].membership_queries
    assert per_point[192] <= 1.2 * per_point[48]  # linear in N, not N^2


def test_rounded_answers_cost_the_attack_points() -> None:
    """run(round_to=...): the API's answers rounded to a grid (an output defense); the attacker is
    told the grid. Exact answers recover every point at N = 8, answers rounded to 1e-3 none."""
    exact = kink_scale.run(8, settings=((1.0, 3),))[0]
    rounded = kink_scale.run(8, settings=((1.0, 3),), round_to=1e-3)[0]
    assert exact["round_to"] == 0.0 and rounded["round_to"] == 1e-3
    assert exact["fraction_recovered_rel0.001"] == 1.0
    assert rounded["fraction_recovered_rel0.001"] == 0.0
