"""The optional MP-SPDZ engine of `secureml bench cost`: its program text and its skip note."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from bench import cost, mpspdz_engine
from bench.mpspdz_engine import MPSPDZUnavailable, parse_party_output, program_text, skip_note


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_program_reveals_only_the_prediction_and_only_to_the_client(kernel):
    text = program_text(64, 5, kernel, k=2, frac_bits=16, total_bits=48)
    assert "sfix.set_precision(16, 48)" in text and "N, D, K = 64, 5, 2" in text
    assert "X.input_from(0)" in text and "alpha.input_from(0)" in text and "q.input_from(1)" in text
    # one output, to party 1; no plain reveal() (the published program printed every distance)
    assert text.count("reveal_to(1)") == 1 and "print_ln_to(1," in text
    assert ".reveal()" not in text and "print_ln(" not in text
    assert ("dot_product(da, da)" in text) == (kernel == "gaussian")
    assert ("if_else(-diff, diff)" in text) == (kernel == "laplacian")
    compile(text, "<mpc>", "exec")  # .mpc programs are Python: at least it parses


def test_program_refuses_bad_arguments():
    with pytest.raises(ValueError):
        program_text(4, 3, "polynomial")
    with pytest.raises(ValueError):
        program_text(4, 3, "gaussian", frac_bits=48, total_bits=48)


def test_scale_constant_keeps_the_exponent_free_of_tiny_constants():
    assert mpspdz_engine.scale_constant("gaussian", 74.0) == pytest.approx(74.0 * 2 ** 0.5)
    assert mpspdz_engine.scale_constant("laplacian", 1000.0) == 1000.0


def test_skip_note_without_mp_spdz_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MP_SPDZ_HOME", raising=False)
    note = skip_note()
    assert note == "mp-spdz skipped: MP_SPDZ_HOME is not set (point it at a built MP-SPDZ)"
    monkeypatch.setenv("MP_SPDZ_HOME", str(tmp_path))  # no compile.py there
    assert "no compile.py" in skip_note()
    (tmp_path / "compile.py").write_text("")
    assert skip_note() is None
    model = argparse.Namespace(X_train=np.zeros((2, 3)), kernel="gaussian", sigma=1.0)
    with pytest.raises(MPSPDZUnavailable, match="semi-party.x is not built"):
        mpspdz_engine.run_local(model, np.zeros((1, 3)))


def test_bench_cost_skips_mp_spdz_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("MP_SPDZ_HOME", raising=False)
    args = argparse.Namespace(features=64, sigma=100.0, seed=0, kernel="gaussian", link=None, engine_budget=60.0)
    rows, skipped = cost.size_cell((args, 1024, ["plaintext", "mp-spdz"], {}))
    assert [r["engine"] for r in rows] == ["plaintext"]
    assert skipped == {"mp-spdz": "mp-spdz skipped: MP_SPDZ_HOME is not set (point it at a built MP-SPDZ)"}
    assert capsys.readouterr().out.count("mp-spdz skipped") == 1


def test_parse_party_output_reads_cost_and_predictions():
    text = ("secureml-prediction -1234.5\nsecureml-prediction 7.25\nThe following benchmarks are including "
            "preprocessing (offline phase).\nTime = 12.5 seconds \nData sent = 100.5 MB in ~4321 rounds "
            "(party 0 only; use '-v' for more details)\nGlobal data sent = 201 MB (all parties)\n")
    got = parse_party_output(text)
    assert got == {"predictions": [-1234.5, 7.25], "global_MB": 201.0, "party_MB": 100.5, "rounds": 4321,
                   "time_s": 12.5}
