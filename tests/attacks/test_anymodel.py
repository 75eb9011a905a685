"""Any model file, any element: white-box extraction of sulfur molecules, model files from any data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from attacks import chem, scenario, whitebox
from secureml.cli import main
from secureml.data import MolecularDataset, smiles_to_molecule, write_npz

# QM7-like sulfur molecules, including the thiophene/thiazole aldehydes whose bond orders RDKit
# assigns as charge-separated resonance forms in some atom orders
SULFUR_SMILES = ["CS", "CSC", "OCCS", "CC(=O)S", "c1ccsc1", "O=Cc1ccsc1", "O=Cc1cncs1", "Cc1cc(=O)[nH]s1",
                 "CS(C)=O", "NCCS", "CCSC", "c1cscn1"]
OTHERS = ["CCO", "CC(=O)N", "c1ccncc1", "OCC#N", "CC(F)F", "CCCO", "CN(C)C", "O=CC=O"]


@pytest.fixture(scope="module")
def sulfur_set(tmp_path_factory) -> tuple[MolecularDataset, Path]:
    mols = [smiles_to_molecule(s, relax="mmff") for s in SULFUR_SMILES + OTHERS]
    rng = np.random.default_rng(0)
    ds = MolecularDataset([m[0] for m in mols], [m[1] for m in mols],
                          {"energy": rng.normal(-1000, 100, len(mols))},
                          [f"m{i}" for i in range(len(mols))], [""] * len(mols),
                          {"source": "RDKit ETKDG + MMFF test molecules"})
    path = tmp_path_factory.mktemp("sulfur") / "sulfur.npz"
    write_npz(ds, path)
    return ds, path


def test_sulfur_element_set_comes_from_the_model(sulfur_set):
    ds, _ = sulfur_set
    scn = scenario.build_on(ds, "gaussian", n_train=16, seed=0)
    assert 16 in chem.model_elements(scn.model)  # from the stored diagonals, no fixed list
    # with a QM9-only element list, sulfur rows fail, and the reason names the element set
    m = chem.features_to_matrices(scn.model.estimator.X_fit_)
    s_rows = [i for i, t in enumerate(scn.train) if 16 in ds.charges[t]]
    rec = chem.invert_coulomb_matrix(m[s_rows[0]], elements=(1, 6, 7, 8, 9))
    assert not rec.valid and "Z = 16" in rec.reason and "element set" in rec.reason
    assert chem.invert_coulomb_matrix(m[s_rows[0]], elements=chem.model_elements(scn.model)).valid


def test_sulfur_whitebox_extraction_exact(sulfur_set):
    ds, _ = sulfur_set
    scn = scenario.build_on(ds, "laplacian", n_train=18, seed=1)  # 2^-8 grid, the Laplacian recipe's
    ext = whitebox.extract_krr_molecules(scn.model)
    res = whitebox.score_extraction(ext, ds.subset(scn.train))
    n_s = sum(16 in ds.charges[t] for t in scn.train)
    assert n_s >= 8
    assert res["fraction_smiles_exact"] == 1.0 and res["fraction_formula"] == 1.0
    assert res["smiles_reference"] == "bond perception on the true geometry"
    base = whitebox.random_baseline(ds.subset(scn.public), ds.subset(scn.train), truth_smiles=res["reference_smiles"])
    assert base == 0.0  # the two public molecules are not training molecules


def test_bond_perception_prefers_neutral_structures():
    """The same molecule in every atom order gives one SMILES (no [O-]/[S+] resonance forms)."""
    z, x = smiles_to_molecule("O=Cc1cncs1", relax="mmff")
    rng = np.random.default_rng(0)
    names = set()
    with chem.quiet_stdout():
        for _ in range(6):
            p = rng.permutation(len(z))
            names.add(chem.molecule_smiles(z[p], x[p]))
    assert names == {chem.canonical_smiles("O=Cc1cncs1")}


def test_attack_cli_on_a_model_file_from_other_data(sulfur_set, tmp_path, capsys):
    """`secureml attack --model` takes a model file not trained on the embedded split."""
    ds, data_path = sulfur_set
    scn = scenario.build_on(ds, "gaussian", n_train=14, seed=2)
    model_path = tmp_path / "sulfur_model.npz"
    scn.model.save(model_path)
    rc = main(["attack", "whitebox", "--model", str(model_path), "--data", str(data_path), "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "whitebox_model-file.json").read_text())
    assert res["value"] == 1.0 and res["n_molecules"] == 14 and 16 in res["elements"]
    # no --data and no provenance naming the data: a clear one-line error
    assert main(["attack", "whitebox", "--model", str(model_path), "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err


def test_embedded_model_file_any_seed(tmp_path):
    """A `secureml train` model file: members found by its rows, whatever seed made the split."""
    assert main(["train", "--data", "embedded", "--n", "60", "--seed", "3", "--cm-size", "23",
                 "--out", str(tmp_path / "m.npz")]) == 0
    scn = scenario.from_model(str(tmp_path / "m.npz"))
    from secureml.data import embedded_split

    assert np.array_equal(np.sort(scn.train), np.sort(embedded_split(3, 60)[0]))
    assert len(np.intersect1d(scn.train, scn.public)) == 0


def test_real_qm7_sulfur_extraction():
    """Real QM7 (qmllib's copy, SECUREML_QMLLIB_SDIST or .venv/data): every sulfur molecule of 500."""
    sdist = os.environ.get("SECUREML_QMLLIB_SDIST") or ".venv/data/qmllib-1.2.0.tar.gz"
    if not Path(sdist).is_file():
        pytest.skip("no qmllib sdist (make data, or set SECUREML_QMLLIB_SDIST)")
    ds = scenario.load_data(sdist)
    s_idx = np.flatnonzero([16 in c for c in ds.charges])[:60]
    rest = np.flatnonzero([16 not in c for c in ds.charges])[:140]
    sub = ds.subset(np.r_[s_idx, rest])
    scn = scenario.build_on(sub, "laplacian", n_train=150, seed=0)
    res = whitebox.score_extraction(whitebox.extract_krr_molecules(scn.model), sub.subset(scn.train))
    assert res["fraction_smiles_exact"] == 1.0
