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
