"""A chemist's own files, end to end: an xyz folder + property table and an SDF file are trained on
with `secureml train --data PATH`, served by `secureml serve` in its own process and queried with
`secureml predict` over TCP; every output carries the property and its unit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from protocols.krr.runner import start_serve_process
from secureml.data import embedded_split, load_embedded
from secureml.data.formats import symbol
from secureml.models.pipeline import MolecularModel

CLI = [sys.executable, "-m", "secureml.cli"]


def _run(args, **kw):
    out = subprocess.run(CLI + args, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _serve(model_path):
    return start_serve_process(CLI + ["serve", "--model", str(model_path), "--port", "0", "--max-sessions", "1",
                                      "--security", "semi-honest"])


def _xyz_text(z, x, comment=""):
    return "\n".join([str(len(z)), comment] + [f"{symbol(a)} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f}" for a, p in zip(z, x)]) + "\n"


@pytest.fixture(scope="module")
def molecules():
    data = load_embedded()
    tr, te = embedded_split(0)
    return data.subset(tr[:120]), data.subset(te[:3])


def _predict_and_check(tmp_path, model_path, query_path, prop, unit):
    proc, port = _serve(model_path)
    try:
        out = _run(["predict", "--server", f"127.0.0.1:{port}", "--molecules", str(query_path),
                    "--json", str(tmp_path / "pred.json")])
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert f"{prop} ({unit})" in out.stdout and unit in out.stdout.splitlines()[1]
    got = json.loads((tmp_path / "pred.json").read_text())
    assert got["model"]["property"] == prop and got["model"]["unit"] == unit
    assert all(r["unit"] == unit and r["property"] == prop for r in got["predictions"])
    return np.array([r["prediction"] for r in got["predictions"]])


def test_xyz_folder_with_labels_in_hartree(tmp_path, molecules):
    train, test = molecules
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = ["name energy_total"]
    for i in range(len(train)):
        (folder / f"{i:04d}.xyz").write_text(_xyz_text(train.charges[i], train.coordinates[i]))
        # the property in Hartree, names with a folder prefix as QM7's energies file has them
        lines.append(f"mine/{i:04d}.xyz {train.properties['U0_atomization'][i] / 627.5094740631:.10f}")
    (tmp_path / "energies.txt").write_text("\n".join(lines) + "\n")
    out = _run(["train", "--data", str(folder), "--labels", str(tmp_path / "energies.txt"),
                "--property", "energy_total", "--unit", "Hartree", "--out", str(tmp_path / "run")])
    assert "test MAE" in out.stdout and "kcal/mol" in out.stdout
    run = tmp_path / "run"
    for f in ("model.npz", "metrics.json", "metrics.csv", "parity.png", "test_predictions.csv"):
        assert (run / f).is_file(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["unit"] == "kcal/mol" and metrics["unit_in_data"] == "Hartree"
    model = MolecularModel.load(run / "model.npz")
    assert model.property_unit == "kcal/mol" and model.elements_ == sorted({int(z) for c in train.charges for z in c})
    q = tmp_path / "query.xyz"
    q.write_text(_xyz_text(test.charges[0], test.coordinates[0]))
    got = _predict_and_check(tmp_path, run / "model.npz", q, "energy_total", "kcal/mol")
    np.testing.assert_allclose(got, model.predict(test.subset([0])), atol=1e-2)


def test_sdf_with_sd_fields(tmp_path, molecules):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    train, test = molecules

    def write(ds, path):
        w = Chem.SDWriter(str(path))
        for i in range(len(ds)):
            m = Chem.MolFromXYZBlock(_xyz_text(ds.charges[i], ds.coordinates[i]))
            rdDetermineBonds.DetermineConnectivity(m)
            m.SetProp("_Name", f"cmpd-{i}")
            m.SetProp("gap_eV", f"{ds.properties['gap'][i]:.6f}")
            w.write(m)
        w.close()

    write(train, tmp_path / "train.sdf")
    write(test, tmp_path / "query.sdf")
    out = _run(["train", "--data", str(tmp_path / "train.sdf"), "--property", "gap_eV", "--unit", "eV",
                "--kernel", "laplacian", "--out", str(tmp_path / "gap.npz")])
    # a HOMO-LUMO gap is an orbital energy: learned and predicted in eV (the field's unit), and said so
    assert "gap_eV: test MAE" in out.stdout and " eV" in out.stdout and "kcal/mol" not in out.stdout
    model = MolecularModel.load(tmp_path / "gap.npz")
    assert model.property_unit == "eV"
    got = _predict_and_check(tmp_path, tmp_path / "gap.npz", tmp_path / "query.sdf", "gap_eV", "eV")
    assert len(got) == 3
    np.testing.assert_allclose(got, model.predict(tmp_path / "query.sdf"), atol=0.005)


def test_query_with_an_unseen_element_is_refused_by_name(tmp_path, molecules):
    """A chlorine molecule sent to a model trained on H, C, N, O (F) gets a message naming Cl --
    not "outside the public bound" -- and the server goes on serving."""
    train, test = molecules
    from secureml.data import write_extxyz

    write_extxyz(train, tmp_path / "train.xyz")
    _run(["train", "--data", str(tmp_path / "train.xyz"), "--out", str(tmp_path / "m.npz")])
    (tmp_path / "ccl.xyz").write_text("2\n\nC 0 0 0\nCl 0 0 1.78\n")
    q = tmp_path / "ok.xyz"
    q.write_text(_xyz_text(test.charges[0], test.coordinates[0]))
    proc = subprocess.Popen(CLI + ["serve", "--model", str(tmp_path / "m.npz"), "--port", "0", "--max-sessions", "2",
                                   "--security", "semi-honest"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        port = int(next(line for line in proc.stdout if "serving" in line).rsplit(":", 1)[1])
        bad = subprocess.run(CLI + ["predict", "--server", f"127.0.0.1:{port}", "--xyz", str(tmp_path / "ccl.xyz")],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2
        assert "contains Cl: the served model never saw it in training" in bad.stderr, bad.stderr
        assert "public bound" not in bad.stderr
        ok = subprocess.run(CLI + ["predict", "--server", f"127.0.0.1:{port}", "--xyz", str(q)],
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and "kcal/mol" in ok.stdout, ok.stderr
        proc.wait(timeout=60)
    finally:
        proc.kill()


def test_local_sorf_with_sulfur_trains_serves_and_predicts(tmp_path):
    """The compact local model on molecules with S and Cl (the user's CSV of SMILES), served and
    queried double-blind with a sulfur molecule."""
    rows = ["name,smiles,energy_ev"]
    smiles = ["CS", "CCS", "CSC", "OCCS", "CSSC", "CCl", "ClCCl", "CCCl", "ClC=C", "SCCCl", "CC(S)C", "CCSC",
              "ClCC=O", "CN", "CO", "CC", "CCO", "CSCCl", "NCCS", "OCCCl", "CCCS", "SCC=O", "CC(Cl)C", "C=CCS"]
    counts = {"C": -6.5, "S": -4.0, "Cl": -3.0, "O": -4.4, "N": -4.5}
    for i, s in enumerate(smiles):
        e = sum(v * s.count(k) for k, v in counts.items()) - 0.1 * i  # a made-up label, in eV
        rows.append(f"m{i},{s},{e:.4f}")
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    out = _run(["train", "--data", str(tmp_path / "mine.csv"), "--property", "energy_ev", "--unit", "eV",
                "--geometry", "mmff", "--recipe", "local-sorf", "--set", "nstacks=2", "--set", "npcas=16",
                "--set", "pca_fit_data=train", "--out", str(tmp_path / "s.npz")])
    assert "kcal/mol" in out.stdout
    model = MolecularModel.load(tmp_path / "s.npz")
    assert {16, 17} <= set(model.elements_)
    from secureml.data.geometry import smiles_to_molecule

    z, x = smiles_to_molecule("CCSC", relax="mmff")
    (tmp_path / "q.xyz").write_text(_xyz_text(z, x))
    got = _predict_and_check(tmp_path, tmp_path / "s.npz", tmp_path / "q.xyz", "energy_ev", "kcal/mol")
    np.testing.assert_allclose(got, model.predict(tmp_path / "q.xyz"), atol=0.05)
