"""Query budgets through the real server over TCP: enforced across sessions and across a server
restart (a new server process state, the same ledger file), with a clear refusal for the client."""
from __future__ import annotations

import inspect
import queue
import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, predict, serve
from protocols.net.frontdoor import admit_hook
from secureml.errors import SecureMLError
from secureml.serving.ledger import QueryLedger

pytestmark = pytest.mark.skipif("admit" not in inspect.signature(serve).parameters,
                                reason="this build's server has no admission hook (front door)")


def _model() -> ServedModel:
    rng = np.random.default_rng(0)
    return ServedModel(KernelModelParams(rng.uniform(0, 20, (10, 4)), rng.normal(0, 10, 10), 1.0, "gaussian", 10.0))


class _Server:
    """``serve`` in a thread with a ledger opened on ``path`` (a fresh ledger object: a restart)."""

    def __init__(self, path, budget: int) -> None:
        self.stop, ports = threading.Event(), queue.Queue()
        self.th = threading.Thread(target=serve, args=(_model(), "127.0.0.1", 0), daemon=True,
                                   kwargs=dict(admit=admit_hook(QueryLedger(path, budget=budget)),
                                               stop=self.stop, on_ready=ports.put))
        self.th.start()
        self.address = f"127.0.0.1:{ports.get(timeout=60)}"

    def close(self) -> None:
        self.stop.set()
        self.th.join(30)


def test_budget_enforced_across_sessions_and_a_server_restart(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Q = np.full((3, 4), 5.0)
    srv = _Server(path, budget=5)
    try:
        preds, _ = predict(srv.address, Q)  # 3 of 5
        assert preds.shape == (3,)
        with pytest.raises(SecureMLError, match="budget exhausted"):
            predict(srv.address, Q)  # 3 more: refused whole, nothing charged
    finally:
        srv.close()
    srv = _Server(path, budget=5)  # restart: the count survives in the ledger file
    try:
        predict(srv.address, Q[:2])  # 5 of 5
        with pytest.raises(SecureMLError, match="used 5 of 5"):
            predict(srv.address, Q[:1])
    finally:
        srv.close()
    assert QueryLedger(path, budget=5).usage("ip:127.0.0.1")["used"] == 5


def test_a_new_model_at_a_cached_address_is_asked_for_its_parameters(tmp_path):
    """The client caches a server's public parameters per address (early data); when another model
    answers at that address (a restart with a new model, or a reused port), a query of the new
    model's width must not fail on the stale parameters."""
    from protocols.krr import client as client_mod

    srv = _Server(tmp_path / "ledger.sqlite", budget=100)
    try:
        # as if a 512-feature lattice-served compact model had answered at this port before (the
        # cache holds lattice servers' parameters only)
        stale = _model().public.to_dict()
        stale["n_features"] = 512
        client_mod._EARLY_PARAMS[srv.address] = stale
        preds, _ = predict(srv.address, np.full((2, 4), 5.0))
        assert preds.shape == (2,)
    finally:
        srv.close()
