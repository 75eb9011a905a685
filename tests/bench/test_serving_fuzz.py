"""The mutational fuzzer against a real `secureml serve` process: no hang, no traceback, the
honest client always served correctly (200 cases here; 10,000 in the slow test)."""
from __future__ import annotations

import pytest

from bench.serving_fuzz import mutate, run_fuzz


def test_mutations_cover_every_kind():
    import random

    frames = [b"\x00\x00\x00\x02{}", b"\x00\x00\x00\x03abc", b"\x00\x00\x00\x01z"]
    rng = random.Random(0)
    kinds = {mutate(frames, rng)[0] for _ in range(400)}
    assert len(kinds) == 11


def _check(res):
    assert res["hangs"] == 0, res
    assert res["tracebacks"] == 0, res
    assert res["server_alive_at_end"] and res["honest_all_correct"], res
    assert sum(res["outcomes"].values()) == res["cases"]


def test_fuzz_200_cases(tmp_path):
    _check(run_fuzz(200, seed=1, check_every=100, workdir=tmp_path))


@pytest.mark.slow
def test_fuzz_10000_cases(tmp_path):
    _check(run_fuzz(10_000, seed=0, workdir=tmp_path))
