"""`secureml serve --round-to/--noise` as a real subprocess, queried by `secureml predict` over TCP:
the client gets the defended answers."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from secureml.data import embedded_split, load_embedded, write_extxyz
from secureml.models.krr import KernelRidge
from secureml.models.pipeline import MolecularModel
from secureml.representations import CoulombMatrix
from tests.protocols.krr.test_service_e2e import _start


def test_cli_serve_rounds_answers_inside_the_protocol(tmp_path):
    data = load_embedded()
    tr, te = embedded_split(0)
    model = MolecularModel(CoulombMatrix(size=23), KernelRidge("gaussian", sigma=50.0, lam=1e-6), "U0_atomization")
    model.fit(data.subset(tr[:60]))
    path = model.save(tmp_path / "model.npz")
    test = data.subset(te[:2])
    write_extxyz(test, tmp_path / "q.xyz")
    proc, port = _start([sys.executable, "-m", "secureml.cli", "serve", "--model", str(path), "--port", "0",
                         "--max-sessions", "1", "--round-to", "4"])
    try:
        out = subprocess.run([sys.executable, "-m", "secureml.cli", "predict", "--server", f"127.0.0.1:{port}",
                              "--xyz", str(tmp_path / "q.xyz"), "--json", str(tmp_path / "out.json")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        got = np.array([r["prediction"] for r in json.loads((tmp_path / "out.json").read_text())["predictions"]])
        want = model.predict(test)
        assert np.all(got % 4.0 == 0) and np.all(np.abs(got - want) <= 2.0 + 1e-2)
        proc.wait(timeout=60)
    finally:
        proc.kill()
