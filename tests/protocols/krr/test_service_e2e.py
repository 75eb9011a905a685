"""End to end: `secureml serve` as a real subprocess, queried by `secureml predict` and by the API."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, predict, serve
from protocols.krr.runner import start_serve_process
from secureml.data import embedded_split, load_embedded, write_extxyz
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.representations import CoulombMatrix


def _start(cmd, head: list[str] | None = None):
    """Start a server process; the lines it printed before "serving" go to ``head``."""
    return start_serve_process(cmd, head=head)


@pytest.mark.parametrize("kernel,sigma,grid,cross,security", [
    ("gaussian", 50.0, None, "he", "default"), ("gaussian", 50.0, None, "ot", "semi-honest"),
    ("laplacian", 1000.0, 8, "he", "default")])
def test_cli_serve_and_predict(tmp_path, kernel, sigma, grid, cross, security):
    """The default serves the Gaussian kernel client-malicious (checked lattice cross term), and the
    Laplacian kernel too (protocol 17: its start-up line states the one-bit abort leakage; one
    query: its check sends 2^15 x 16 bytes per feature)."""
    data = load_embedded()
    tr, te = embedded_split(0)
    train, test = data.subset(tr[:150]), data.subset(te[:1 if kernel == "laplacian" else 2])
    model = MolecularModel(CoulombMatrix(size=23, grid_bits=grid), KernelRidge(kernel, sigma=sigma, lam=1e-6),
                           "U0_atomization")
    model.fit(train)
    path = model.save(tmp_path / "model.npz")
    write_extxyz(test, tmp_path / "queries.xyz")
    head: list[str] = []
    proc, port = _start([sys.executable, "-m", "secureml.cli", "serve", "--model", str(path),
                         "--port", "0", "--max-sessions", "1", "--cross-term", cross]
                        + ([] if security == "default" else ["--security", security]), head)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "secureml.cli", "predict", "--server", f"127.0.0.1:{port}",
             "--xyz", str(tmp_path / "queries.xyz"), "--cost", "--json", str(tmp_path / "out.json")],
            capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert "cost:" in out.stdout
        got = [r["prediction"] for r in json.loads((tmp_path / "out.json").read_text())["predictions"]]
        np.testing.assert_allclose(got, model.predict(test), atol=1e-2)
        proc.wait(timeout=60)
        log = "".join(head) + proc.stdout.read()
        assert "session peer=" in log  # one line per prediction session, no data
        if security == "auto":
            assert "served semi-honest" in log and "docs/malicious.md" in log
        if security == "default":
            assert "served semi-honest" not in log
        if kernel == "laplacian":
            assert "security=client-malicious" in log and "bound chain" in log and "one bit" not in log
    finally:
        proc.kill()


def test_server_survives_garbage_and_disconnects():
    rng = np.random.default_rng(0)
    params = KernelModelParams(rng.uniform(0, 20, (12, 4)), rng.normal(0, 10, 12), 1.0, "gaussian", 10.0)
    served = ServedModel(params)
    ready = threading.Event()
    port_box = []
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0),
                          kwargs=dict(on_ready=lambda p: (port_box.append(p), ready.set()), stop=stop,
                                      session_timeout=10))
    th.start()
    assert ready.wait(30)
    port = port_box[0]
    try:
        # 1. garbage bytes, 2. an oversized frame header, 3. a client that leaves mid-handshake
        for payload in (b"\x00garbage" * 10, b"\xff" * 8 + b"x", b""):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(payload)
            s.close()
        Q = np.clip(params.X_train[:1] + 0.3, 0, 31)
        preds, cost = predict(f"127.0.0.1:{port}", Q)
        np.testing.assert_allclose(preds, params.predict(Q), atol=1e-2)
    finally:
        stop.set()
        th.join(30)


def test_cli_serve_compact_model_without_resumption(tmp_path):
    """`secureml serve --no-resume --precompute-ot`: every session runs its own base OTs."""
    from protocols.krr import molecules_featurizer
    from secureml.models.random_features import RandomFourierRidge

    data = load_embedded()
    tr, te = embedded_split(0)
    model = MolecularModel(CoulombMatrix(size=23), RandomFourierRidge(n_features=256, sigma=50.0, lam=1e-6, seed=0),
                           "U0_atomization").fit(data.subset(tr[:200]))
    path = model.save(tmp_path / "rff.npz")
    test = data.subset(te[:2])
    proc, port = _start([sys.executable, "-m", "secureml.cli", "serve", "--model", str(path), "--port", "0",
                         "--max-sessions", "2", "--no-resume", "--precompute-ot"])
    try:
        runs = [predict(f"127.0.0.1:{port}", featurize=molecules_featurizer(test)) for _ in range(2)]
        for preds, cost in runs:
            np.testing.assert_allclose(preds, model.predict(test), atol=1e-2)
        assert runs[1][1].extra.get("resumed") is False  # the server refused to keep OT state
        proc.wait(timeout=60)
    finally:
        proc.kill()
