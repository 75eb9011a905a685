"""``secureml data info|export|label`` end to end (in-process)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from secureml.cli import main
from secureml.data import embedded_split, load_embedded, read_extxyz


def test_info_json(capsys):
    assert main(["data", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embedded"]["molecules"] == 3921
    assert info["embedded"]["split"] == {"train": 3137, "test": 784, "rule": "seeded 80/20 permutation (seed 0)"}
    assert info["properties"]["U0_atomization"]["unit"] == "kcal/mol"
    assert info["qm9"]["qm9pack_version"] == "1.0.3" and info["qm9"]["molecules"] == 130_831


def test_info_text_and_no_action(capsys):
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "3137 train / 784 test" in out and "cache folder" in out
    assert main(["data"]) == 0
    assert "ACTION" in capsys.readouterr().out


def test_export_embedded_test_split(tmp_path):
    out = tmp_path / "test.xyz"
    assert main(["data", "export", "--subset", "embedded", "--split", "test", "--n", "7",
                 "--properties", "U0_atomization,gap", "--out", str(out)]) == 0
    ds = read_extxyz(out)
    emb = load_embedded()
    _, test = embedded_split()
    assert len(ds) == 7 and set(ds.properties) == {"U0_atomization", "gap"}
    index = [emb.names.index(n) for n in ds.names]
    assert set(index) <= set(test.tolist())
    np.testing.assert_allclose(ds.properties["U0_atomization"], emb.properties["U0_atomization"][index])


def test_export_errors(tmp_path, capsys):
    out = str(tmp_path / "x.xyz")
    assert main(["data", "export", "--properties", "nope", "--out", out]) == 2
    assert "unknown properties" in capsys.readouterr().err
    assert main(["data", "export", "--n", "5000", "--out", out]) == 2
    assert main(["data", "export", "--subset", "qm9", "--split", "test", "--out", out]) == 2


def test_label_smiles_and_xyz(tmp_path, capsys):
    out = tmp_path / "lab.xyz"
    assert main(["data", "label", "--smiles", "C", "O", "--out", str(out)]) == 0
    ds = read_extxyz(out)
    assert ds.names == ["C", "O"] and ds.smiles == ["C", "O"]
    assert ds.properties["xtb_energy"][0] < ds.properties["xtb_energy"][1] + 10  # both finite energies
    assert ds.properties["xtb_dipole"][0] < 0.01 < ds.properties["xtb_dipole"][1]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["labelled"] == 2 and summary["failed"] == []
    # the written geometries relabelled from --xyz give the same properties
    out2 = tmp_path / "again.xyz"
    assert main(["data", "label", "--xyz", str(out), "--out", str(out2)]) == 0
    again = read_extxyz(out2)
    np.testing.assert_allclose(again.properties["xtb_energy"], ds.properties["xtb_energy"], atol=1e-6)
    # a bad SMILES: clear error without --keep-going, recorded and skipped with it
    assert main(["data", "label", "--smiles", "C", "C1CC", "--out", str(out)]) == 2
    assert "C1CC" in capsys.readouterr().err
    assert main(["data", "label", "--smiles", "C", "C1CC", "--keep-going", "--out", str(out)]) == 1
    assert json.loads(out.with_suffix(".json").read_text())["failed"][0]["input"] == "C1CC"


def test_every_command_help_shows_defaults() -> None:
    """`--help` of every command builds, and options state their defaults."""
    import contextlib
    import io

    from secureml.cli import _command_modules, main

    for name in _command_modules():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: 0.2)" in buf.getvalue() and "(default: embedded)" in buf.getvalue()
