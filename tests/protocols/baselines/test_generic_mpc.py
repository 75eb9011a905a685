"""Generic-MPC engine (every product a Beaver product from OT triples): correctness, cost accounting,
transcript, bad input, two processes."""
from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

from protocols.baselines import generic_mpc as gm
from protocols.common import KernelModelParams
from protocols.mpc.fixed_point import FixedPointFormat
from protocols.net.transport import local_channel_pair
from secureml.errors import ModelError, ProtocolError


def _model(N=20, d=10, sigma=40.0, seed=0, offset=-321.0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.7)
    alpha = rng.normal(0, 300.0, N)
    return KernelModelParams(X, alpha, offset, "gaussian", sigma)


def _session(model, Q, record=False, **opts):
    c0, c1 = local_channel_pair(timeout=120)
    if record:
        c1.record()
    box: dict = {}

    def server():
        try:
            box["cost"] = gm.serve_one(model, c0, **opts)
        except Exception as exc:
            box["error"] = exc
            c0.close()

    t = threading.Thread(target=server)
    t.start()
    try:
        preds, cost = gm.predict(c1, Q)
    finally:
        t.join(120)
    return preds, cost, c1, box


@pytest.mark.parametrize("frac_bits", [16, 20])
def test_prediction_within_documented_error(frac_bits):
    model = _model()
    rng = np.random.default_rng(1)
    Q = np.vstack([model.X_train[:1] + rng.normal(0, 2.0, (1, model.n_features)),
                   model.X_train.mean(0, keepdims=True) + 200.0])  # the second is far: clipped kernels
    preds, cost, _, box = _session(model, Q, frac_bits=frac_bits)
    assert "error" not in box, box.get("error")
    from secureml.models.krr import kernel_matrix

    err = np.abs(preds - model.predict(Q))
    Kq = kernel_matrix(Q, model.X_train, "gaussian", model.sigma)
    for i in range(len(Q)):
        bound = gm.documented_error(model.dual_coef, frac_bits, kernel=Kq[i])
        assert err[i] <= bound, (err[i], bound)
        assert bound < 0.02 * np.abs(model.dual_coef).sum()
    # all arithmetic triples were made offline, exactly as many as the circuit needs
    assert cost.extra["beaver_triples"] == 2 * gm.triples_per_query(model.n_train, model.n_features)
    assert cost.extra["triples_on_demand"] == 0
    assert cost.offline_bytes > 0.9 * cost.extra["beaver_triples"] * 2000  # ~2.6 kB per OT triple
    s = box["cost"]
    assert s.bytes_sent == cost.bytes_received and s.rounds == cost.rounds


def test_client_transcript_hides_the_query():
    model = _model(seed=2)
    q = model.X_train[3] + 0.37
    _, _, c1, box = _session(model, q[None], record=True)
    assert "error" not in box
    sent = b"".join(payload for direction, payload in c1.transcript if direction == "send")
    fmt = FixedPointFormat(frac_bits=gm.DEFAULT_FRAC_BITS)
    c = model.sigma * np.sqrt(2.0 ** (gm.EXP_K + 1))
    for v in q:
        assert struct.pack("<d", float(v)) not in sent
    for u in fmt.encode(q / c):
        if u not in (0,):
            assert struct.pack("<Q", int(u)) not in sent


def test_bad_hello_and_laplacian_are_refused():
    model = _model()
    c0, c1 = local_channel_pair(timeout=30)
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", _catch(gm.serve_one, model, c0)))
    t.start()
    c1.send_json({"protocol": gm.PROTOCOL_NAME, "version": 99, "n_queries": 1, "n_features": 10})
    reply = c1.recv_json()
    t.join(30)
    assert reply["ok"] is False and "version" in reply["error"]
    assert isinstance(box["r"], ProtocolError)
    lap = KernelModelParams(model.X_train, model.dual_coef, 0.0, "laplacian", 100.0)
    with pytest.raises(ModelError):
        gm.serve_one(lap, c0)


def _catch(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return exc
    return None


def test_run_local_two_processes():
    model = _model(N=12, d=6, seed=3)
    Q = model.X_train[:1] + 0.5
    pred, cc, sc = gm.run_local(model, Q)
    assert abs(pred[0] - model.predict(Q)[0]) <= gm.documented_error(model.dual_coef)
    assert cc.bytes_sent == sc.bytes_received and sc.offline_s > 0 and sc.online_s > 0
