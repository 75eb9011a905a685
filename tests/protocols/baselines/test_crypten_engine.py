"""CrypTen engine: torch 2.13 import shim, exp accuracy, two-process prediction, bad input."""
from __future__ import annotations

import importlib
import sys
import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.net.transport import local_channel_pair
from secureml.errors import ModelError, ProtocolError

ce = pytest.importorskip("protocols.baselines.crypten_engine")


def _crypten_or_skip():
    try:
        return ce.import_crypten()
    except ce.CrypTenUnavailable as exc:  # not installed here: the engine says how to install it
        pytest.skip(str(exc))


def _model(N=24, d=12, sigma=40.0, seed=0, offset=-321.0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.7)
    alpha = rng.normal(0, 300.0, N)
    return KernelModelParams(X, alpha, offset, "gaussian", sigma)


def test_torch_onnx_shim_aliases_the_moved_module():
    _crypten_or_skip()
    new = importlib.import_module(ce._ONNX_NEW)
    assert sys.modules[ce._ONNX_OLD] is new
    # re-installing after the alias disappeared restores it; with the alias present it is a no-op
    saved = sys.modules.pop(ce._ONNX_OLD)
    try:
        assert ce.install_torch_onnx_shim() is True
        assert importlib.import_module(ce._ONNX_OLD).registry is new.registry
        assert ce.install_torch_onnx_shim() is False
    finally:
        sys.modules[ce._ONNX_OLD] = saved


def test_default_exp_is_off_and_range_reduced_exp_is_accurate():
    crypten = _crypten_or_skip()
    import torch

    crypten.init()  # one party, in-process: fixed-point arithmetic only
    try:
        crypten.cfg.encoder.precision_bits = 24
        x = torch.linspace(-4.0, 0.0, 801, dtype=torch.float64)
        default = crypten.cryptensor(x).exp().get_plain_text().double()
        rel = ((default - torch.exp(x)).abs() / torch.exp(x)).max().item()
        assert rel > 0.01  # CrypTen's own exp: several percent off at kernel-sized arguments
        t = torch.linspace(-16.0, 0.0, 1601, dtype=torch.float64)
        ours = ce.encrypted_exp(crypten.cryptensor(t / 2**ce.EXP_K), ce.EXP_K).get_plain_text().double()
        assert (ours - torch.exp(t)).abs().max().item() < 1e-5
    finally:
        crypten.cfg.encoder.precision_bits = 16
        crypten.uninit()


def test_prediction_within_documented_error_two_processes():
    _crypten_or_skip()
    model = _model()
    rng = np.random.default_rng(1)
    Q = model.X_train[:2] + rng.normal(0, 2.0, (2, model.n_features))
    pred, cc, sc = ce.run_local(model, Q)
    ref = model.predict(Q)
    from secureml.models.krr import kernel_matrix

    Kq = kernel_matrix(Q, model.X_train, "gaussian", model.sigma)
    for i in range(len(Q)):
        bound = ce.documented_error(model.dual_coef, ce.DEFAULT_PRECISION_BITS, kernel=Kq[i])
        assert abs(pred[i] - ref[i]) <= bound, (pred[i] - ref[i], bound)
        assert bound < 0.05 * np.abs(model.dual_coef).sum()
    assert ce.failure_probability(model.n_train) < 1e-6
    assert cc.extra["crypten_bytes"] > 0 and sc.extra["provider"] == "TFP"
    # N*d Beaver squares: every party opens its share of each (x - q) entry
    assert cc.extra["crypten_bytes"] >= 2 * 8 * model.n_train * model.n_features


def test_bad_hello_and_laplacian_are_refused():
    _crypten_or_skip()
    model = _model()
    c0, c1 = local_channel_pair(timeout=30)
    box: dict = {}

    def server():
        try:
            ce.serve_one(model, c0)
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=server)
    t.start()
    c1.send_json({"protocol": ce.PROTOCOL_NAME, "version": 99, "n_queries": 1, "n_features": 12})
    reply = c1.recv_json()
    t.join(30)
    assert reply["ok"] is False and "version" in reply["error"]
    assert isinstance(box["error"], ProtocolError)
    lap = KernelModelParams(model.X_train, model.dual_coef, 0.0, "laplacian", 100.0)
    with pytest.raises(ModelError):
        ce.serve_one(lap, c0)
