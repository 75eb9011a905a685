"""The kink attack streams its line-scan queries in bounded chunks and refuses plans over budget."""
import numpy as np
import pytest

from attacks import reconstruction
from secureml.models.krr import KernelRidge


def _model(n: int = 10, d: int = 6, seed: int = 3) -> KernelRidge:
    rng = np.random.default_rng(seed)
    X = np.round(rng.uniform(0.0, 10.0, (n, d)), 3)
    return KernelRidge(kernel="laplacian", sigma=5.0, lam=1e-10).fit(X, rng.normal(size=n))


def _run(est: KernelRidge, **kw: object) -> tuple[reconstruction.KinkResult, list[int]]:
    batches: list[int] = []

    def oracle(Q: np.ndarray) -> np.ndarray:
        batches.append(len(Q))
        return est.predict(Q)

    res = reconstruction.kink_attack(oracle, 6, 0.0, 10.0, h=0.5, refine=8, depth=3, n_hint=10,
                                     max_batch=64, **kw)
    return res, batches


def test_chunk_rows_fit_the_memory_budget() -> None:
    # the Coulomb-matrix width of the defense matrix: one oracle batch per chunk, under 256 MiB
    rows = reconstruction.line_chunk_rows(435, 65536)
    assert rows == 65536 and rows * 435 * 8 <= reconstruction.QUERY_MEM
    assert reconstruction.line_chunk_rows(6, 64, 8 * 6 * 130) == 128  # a multiple of the batch
    assert reconstruction.line_chunk_rows(6, 64, 8 * 6 * 50) == 50  # below one batch: what fits
    assert reconstruction.line_chunk_rows(10**6, 64, 1) == 1


@pytest.mark.parametrize("mem_rows", [130, 50])
def test_chunked_run_is_bit_identical_to_unchunked(mem_rows: int) -> None:
    est = _model()
    ref, ref_batches = _run(est, query_mem=2**40)
    res, batches = _run(est, query_mem=8 * 6 * mem_rows)
    chunk = reconstruction.line_chunk_rows(6, 64, 8 * 6 * mem_rows)
    assert ref.peak_line_rows > chunk  # the reference really built more rows at once
    assert 0 < res.peak_line_rows <= chunk
    assert res.n_queries == ref.n_queries == sum(batches) == sum(ref_batches)
    assert res.membership_queries == ref.membership_queries
    assert (res.n_kinks, res.n_merged, res.unassigned) == (ref.n_kinks, ref.n_merged, ref.unassigned)
    assert res.sigma == ref.sigma and res.offset == ref.offset
    assert np.array_equal(res.centres, ref.centres) and np.array_equal(res.coef, ref.coef)
    assert np.array_equal(res.signatures, ref.signatures)
    assert reconstruction.match_points(est.X_fit_, res.centres, 1e-3)["fraction_recovered"] >= 0.9
    if chunk % 64 == 0:
        assert batches == ref_batches  # same oracle batches, hence the same answers on any backend


def test_query_budget_refuses_with_the_count() -> None:
    est = _model()
    ref, _ = _run(est)
    asked: list[int] = []
    with pytest.raises(reconstruction.AttackError, match=r"queries would bring the total to [\d,]+, over max_queries=1,000"):
        reconstruction.kink_attack(lambda Q: asked.append(len(Q)) or est.predict(Q), 6, 0.0, 10.0, h=0.5,
                                   refine=8, depth=3, n_hint=10, max_queries=1000)
    assert sum(asked) <= 1000  # refused before asking, not after
    res, _ = _run(est, max_queries=ref.n_queries)  # exactly the budget: runs
    assert res.n_queries == ref.n_queries
