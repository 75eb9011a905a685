"""CKKS engine: correctness vs plaintext, documented error with flooding, transcript, bad input."""
from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.baselines.fhe import engine, params as fparams
from protocols.baselines.fhe import client as fclient
from protocols.baselines.fhe import server as fserver
from protocols.net.transport import FrameTooLarge, local_channel_pair
from secureml.errors import DataError, ModelError, ProtocolError

# Small ring and representation so that one session takes ~1-3 s on a shared core.
FAST = {"poly_degree": 16384}


def _model(N=24, d=12, sigma=40.0, seed=0, offset=-321.0, lam_scale=300.0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 50, (N, d)) * (rng.random((N, d)) < 0.7)
    alpha = rng.normal(0, lam_scale, N)
    return KernelModelParams(X, alpha, offset, "gaussian", sigma)


MODEL = None


def _shared_model():
    """One model for most tests, so its encoding and noise calibration are cached across them."""
    global MODEL
    if MODEL is None:
        MODEL = _model(seed=3)
    return MODEL


def _queries(model, k=2, seed=1):
    rng = np.random.default_rng(seed)
    idx = rng.choice(model.n_train, k, replace=False)
    return model.X_train[idx] + rng.normal(0, 2.0, (k, model.n_features))


def _session(model, Q, record=False, server_opts=None, client_ch_hook=None):
    c0, c1 = local_channel_pair(timeout=120)
    if record:
        c0.record()
        c1.record()
    box: dict = {}

    def server():
        try:
            box["cost"] = engine.serve_one(model, c0, **(server_opts if server_opts is not None else FAST))
        except Exception as exc:  # surfaced by the assertions
            box["error"] = exc
            c0.close()

    t = threading.Thread(target=server)
    t.start()
    try:
        if client_ch_hook is not None:
            client_ch_hook(c1)
            return None, None, c1, box
        preds, cost = engine.predict(c1, Q)
    finally:
        t.join(120)
    return preds, cost, c1, box


def test_exp_polynomial_and_range_plan():
    assert fparams.EXP_POLY_REL_ERROR < 2e-9
    model = _model()
    p = fparams.plan(model, flood_bits=0, **FAST)
    # the rigorous range: every admissible query keeps t / 2^k inside [-1, 0]
    radius = np.sqrt(((model.X_train - np.asarray(p.center)) ** 2).sum(1)).max()
    T = (radius + p.query_radius) ** 2 / (2 * model.sigma**2)
    assert T / 2**p.k <= 1.0 and (p.k == 0 or T / 2 ** (p.k - 1) > 1.0)
    assert p.depth == 4 + p.k and len(p.coeff_bits) == p.depth + 2
    assert sum(p.coeff_bits) <= fparams.MAX_BITS_128[p.poly_degree]
    assert fparams.FHEParams.from_dict(p.to_dict()) == p


def test_prediction_matches_plaintext_without_flooding():
    model = _shared_model()
    Q = _queries(model, 2)
    preds, cost, _, box = _session(model, Q, server_opts={**FAST, "flood_bits": 0})
    assert "error" not in box, box.get("error")
    ref = model.predict(Q)
    # documented error without flooding: polynomial (~1e-9 relative on each kernel value, x 2^k)
    # plus CKKS noise at a 40-bit scale: well below 1e-4 of sum|alpha| here
    assert np.max(np.abs(preds - ref)) < 1e-6 * np.abs(model.dual_coef).sum()
    assert cost.extra["sigma_y"] == 0.0
    s = box["cost"]
    assert s.bytes_received == cost.bytes_sent and s.bytes_sent == cost.bytes_received
    # key material is counted in the client's traffic
    assert cost.bytes_sent > cost.extra["key_bytes"] > 0


def test_flooded_prediction_within_documented_error():
    model = _shared_model()
    Q = _queries(model, 2, seed=4)
    preds, cost, _, box = _session(model, Q, server_opts={**FAST, "flood_bits": 12})
    assert "error" not in box, box.get("error")
    sigma_y = cost.extra["sigma_y"]
    s = box["cost"].extra
    assert s["noise_bound_B0"] > 0 and s["flood_sigma_int"] > 2**12 * s["noise_bound_B0"] / 3
    ref = model.predict(Q)
    assert sigma_y > 0
    # documented bound: 6 sigma_y (flooding) + the unflooded error (tiny here)
    assert np.all(np.abs(preds - ref) <= 6 * sigma_y + 1e-6 * np.abs(model.dual_coef).sum())


def test_noise_bound_covers_the_actual_ckks_error():
    model = _shared_model()
    p = fparams.plan(model, flood_bits=0, **FAST)
    sm = fserver.prepare(model, p)
    B0 = engine.calibrate(sm)
    import tenseal.sealapi as seal

    from protocols.baselines.fhe import seal_backend as sb

    keys = fclient.keygen(sm.ctx, p)
    ev = fserver.Evaluator(
        sm,
        sb.from_bytes(seal.RelinKeys, sm.ctx, keys.relin, "relin key"),
        sb.from_bytes(seal.GaloisKeys, sm.ctx, keys.galois, "Galois key") if keys.galois else None,
    )
    pk = sb.from_bytes(seal.PublicKey, sm.ctx, keys.public, "public key")
    for q in _queries(model, 2, seed=6):
        cts = [sb.from_bytes(seal.Ciphertext, sm.ctx, b, "ct") for b in fclient.encrypt_query(sm.ctx, p, keys, q)]
        c00, c1, scale = fserver.finalize(sm, ev.evaluate(cts), pk, 0.0)
        y = fclient.decrypt_result(sm.ctx, keys, c00, c1, scale)
        e0 = abs(y - fserver.exact_circuit_value(sm, q) - model.y_offset) * 2 * scale / sm.ctx.poly_degree
        assert e0 < B0


def test_client_sends_ciphertexts_only():
    model = _shared_model()
    Q = _queries(model, 1, seed=8)
    p = fparams.plan(model, flood_bits=0, **FAST)
    _, _, c1, box = _session(model, Q, record=True, server_opts={**FAST, "flood_bits": 0})
    assert "error" not in box, box.get("error")
    sent = b"".join(payload for direction, payload in c1.transcript if direction == "send")
    packed = fclient.packed_query(p, Q[0])[: p.d_pad]
    for v in list(Q[0]) + list(packed[: p.n_features + 1]):
        if v == 0.0:
            continue
        assert struct.pack("<d", float(v)) not in sent
    # the only plaintext JSON the client sends: hello and the ready flag
    texts = [payload for direction, payload in c1.transcript if direction == "send" and payload[:1] == b"{"]
    assert len(texts) == 2 and all(b"%.3" not in t for t in texts)
    # the ciphertext stream is incompressible (random-looking)
    import zlib

    assert len(zlib.compress(sent[-200000:], 9)) > 0.9 * len(sent[-200000:])


def test_query_outside_the_ball_is_refused_before_anything_private_moves():
    model = _shared_model()
    far = model.X_train[:1] + 1e4
    c0, c1 = local_channel_pair(timeout=30)
    box: dict = {}

    def server():
        try:
            engine.serve_one(model, c0, flood_bits=0, **FAST)
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=server)
    t.start()
    with pytest.raises(DataError, match="outside the model's declared input ball"):
        engine.predict(c1, far)
    t.join(30)
    # the server learns only the fixed code, never the client's reason
    assert isinstance(box.get("error"), ProtocolError) and str(box["error"]) == "client rejected its query"


def _handshake(ch):
    ch.send_json({"protocol": fparams.PROTOCOL_NAME, "version": 1, "n_queries": 1, "n_features": 12})
    reply = ch.recv_json()
    assert reply["ok"]
    ch.send_json({"ready": True})


def test_bad_and_oversized_messages_give_clear_errors():
    model = _shared_model()
    opts = {"flood_bits": 0, **FAST}

    def garbage_keys(ch):
        _handshake(ch)
        ch.send_array(np.frombuffer(b"\x00" * 1000, dtype=np.uint8))

    _, _, _, box = _session(model, None, server_opts=opts, client_ch_hook=garbage_keys)
    assert isinstance(box["error"], ProtocolError) and "invalid relin key" in str(box["error"])

    def oversized(ch):
        _handshake(ch)
        ch.send_array(np.zeros(1 << 27, dtype=np.uint8))  # 128 MiB, far above any key of this ring

    _, _, _, box = _session(model, None, server_opts=opts, client_ch_hook=oversized)
    assert isinstance(box["error"], FrameTooLarge)

    replies: dict = {}

    def wrong_version(ch):
        ch.send_json({"protocol": fparams.PROTOCOL_NAME, "version": 99, "n_queries": 1, "n_features": 12})
        replies["reply"] = ch.recv_json()

    _, _, _, box = _session(model, None, server_opts=opts, client_ch_hook=wrong_version)
    assert replies["reply"]["ok"] is False and "version" in replies["reply"]["error"]
    assert isinstance(box["error"], ProtocolError)


def test_laplacian_kernel_is_refused_with_a_reason():
    m = _model()
    lap = KernelModelParams(m.X_train, m.dual_coef, m.y_offset, "laplacian", 100.0)
    with pytest.raises(ModelError, match="Laplacian kernel needs"):
        fparams.plan(lap)


def test_run_local_two_processes():
    model = _model(N=16, seed=11)
    Q = _queries(model, 1, seed=12)
    pred, ccost, scost = engine.run_local(model, Q, flood_bits=0, **FAST)
    assert abs(pred[0] - model.predict(Q)[0]) < 1e-6 * np.abs(model.dual_coef).sum()
    assert ccost.bytes_sent == scost.bytes_received > ccost.extra["key_bytes"]
    assert scost.extra["blocks"] == 1 and scost.online_s > 0 and scost.offline_s > 0


def test_output_noise_inside_encryption():
    """Output defense in the FHE engine (noise only): the client decrypts y + N(0, sd^2), fresh for
    every answer, and never the exact value."""
    model = _shared_model()
    Q = np.repeat(_queries(model, 1, seed=9), 6, axis=0)
    preds, cost, _, box = _session(model, Q, server_opts={**FAST, "flood_bits": 0, "output_noise": 5.0})
    assert "error" not in box, box.get("error")
    dev = preds - model.predict(Q)
    assert len(np.unique(np.round(preds, 6))) == 6  # fresh noise on each repeat
    assert np.all(np.abs(dev) < 6 * 5.0) and np.std(dev) > 0.5  # sd 5: not the exact value
