"""Every script in examples/ runs, small, from a clean checkout, as a user would run it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def test_every_example_is_covered() -> None:
    assert EXAMPLES == ["compare_engines.py", "evaluate_defense.py", "serve_your_model.py"]


@pytest.mark.parametrize("script,expect", [
    ("serve_your_model.py", "kcal/mol double-blind"),
    ("evaluate_defense.py", "membership AUC"),
    ("compare_engines.py", "generic"),
])
def test_example_runs(script: str, expect: str, tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--small"], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert expect in out.stdout
    assert not list(tmp_path.iterdir()), "examples leave no files behind"
