"""The light install (``pip install secureml``: no torch, TenSEAL, tblite, scikit-image, dscribe,
qmllib, pandas) trains a Coulomb-matrix model on the user's file, serves it and predicts, with
units. Each CLI runs in its own process in which importing those packages fails, as it would if
they were not installed; the server and client talk over real TCP."""
from __future__ import annotations

import configparser
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from secureml.data import embedded_split, load_embedded, write_extxyz

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tenseal", "tblite", "skimage", "dscribe", "qmllib", "crypten", "numba", "pandas")
RUNNER = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError("No module named " + repr(name) + " (light install)", name=name)
sys.meta_path.insert(0, Block())
from secureml.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, *args]


def test_core_requirements_are_light() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    core = cfg["options"]["install_requires"].lower()
    for pkg in ("torch", "tenseal", "tblite", "scikit-image", "dscribe", "qmllib", "pandas"):
        assert pkg not in core, pkg
    extras = cfg["options.extras_require"]
    assert "torch" in extras["local"] and "tenseal" in extras["full"]


def test_light_install_trains_serves_and_predicts(tmp_path) -> None:
    data = load_embedded()
    tr, te = embedded_split(0)
    write_extxyz(data.subset(tr[:100]), tmp_path / "mine.xyz")
    write_extxyz(data.subset(te[:2]), tmp_path / "q.xyz")
    out = subprocess.run(_cli("train", "--data", str(tmp_path / "mine.xyz"), "--out", str(tmp_path / "m.npz")),
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "kcal/mol" in out.stdout
    srv = subprocess.Popen(_cli("serve", "--model", str(tmp_path / "m.npz"), "--port", "0", "--max-sessions", "1",
                                "--security", "semi-honest"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        port = None
        deadline = time.time() + 60
        while time.time() < deadline and port is None:
            line = srv.stdout.readline()
            if "serving" in line:
                port = int(line.rsplit(":", 1)[1])
            elif not line and srv.poll() is not None:
                break
        assert port, srv.stdout.read()
        out = subprocess.run(_cli("predict", "--server", f"127.0.0.1:{port}", "--xyz", str(tmp_path / "q.xyz"),
                                  "--json", str(tmp_path / "p.json")),
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        srv.wait(timeout=60)
    finally:
        srv.kill()
    got = json.loads((tmp_path / "p.json").read_text())
    assert [r["unit"] for r in got["predictions"]] == ["kcal/mol"] * 2
    assert np.isfinite([r["prediction"] for r in got["predictions"]]).all()
    # a command that needs a heavy package says which one, in one line
    bad = subprocess.run(_cli("reconstruct", "digits"), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "needs torch" in bad.stderr and "secureml[full]" in bad.stderr
