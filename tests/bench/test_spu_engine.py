"""SPU as a peer engine (bench/spu_engine.py): ring helpers here; a real two-process run when .venv-spu exists."""
from __future__ import annotations

import numpy as np
import pytest

from bench import spu_engine
from bench.cost import synthetic_model, synthetic_queries


def test_fm128_ring_arithmetic_carries_between_words() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, (50, 2), dtype=np.uint64)
    b = rng.integers(0, 2**64, (50, 2), dtype=np.uint64)
    to_int = lambda w: [int(x[0]) | int(x[1]) << 64 for x in w]  # noqa: E731
    assert to_int(spu_engine._add(a, b)) == [(x + y) % 2**128 for x, y in zip(to_int(a), to_int(b))]
    assert to_int(spu_engine._sub(a, b)) == [(x - y) % 2**128 for x, y in zip(to_int(a), to_int(b))]


def _have_spu() -> bool:
    try:
        spu_engine.spu_python()
        return True
    except RuntimeError:
        return False


@pytest.mark.skipif(not _have_spu(), reason="SPU venv absent (make spu)")
def test_spu_cheetah_two_processes_match_plaintext() -> None:
    model, rng = synthetic_model(64, 20, 74.0)
    Q = synthetic_queries(model, rng)
    preds, client, server = spu_engine.run_local(model, Q, protocol="CHEETAH", field="FM128", frac_bits=40)
    # SPU's exp is an approximation: compare with the scale of the weighted kernel sum
    d2 = ((model.X_train - Q[0]) ** 2).sum(axis=1)
    scale = np.sum(np.abs(model.dual_coef * np.exp(-d2 / (2 * model.sigma**2))))
    assert np.max(np.abs(preds - model.predict(Q))) < 1e-3 * scale
    assert client.bytes_sent > 0 and client.bytes_received > 0 and client.wall_s > 0
    assert client.extra["trusted_dealer"] is False


def test_missing_spu_venv_gives_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("SECUREML_SPU_PYTHON", "/nonexistent/python")
    with pytest.raises(RuntimeError, match="make spu"):
        spu_engine.spu_python()
