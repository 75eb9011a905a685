"""Run folders (secureml.runs): a new folder per run, never an existing one; --out is respected."""
from __future__ import annotations

from secureml.runs import new_run_folder, output_folder


def test_runs_in_the_same_second_get_distinct_folders(tmp_path):
    a, b, c = (new_run_folder(tmp_path / "kind", "x-") for _ in range(3))
    assert len({a, b, c}) == 3 and all(p.is_dir() and p.parent == tmp_path / "kind" for p in (a, b, c))
    assert all(p.name.startswith("x-") for p in (a, b, c))


def test_out_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_folder(tmp_path / "mine", "leakage") == tmp_path / "mine"
    fresh = output_folder(None, "leakage")
    assert fresh.resolve().parent == tmp_path / "results" / "leakage" and fresh.is_dir()
