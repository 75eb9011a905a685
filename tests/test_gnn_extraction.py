"""GNN training-data extraction (attacks.gnn): chemistry helpers, pretraining, and a real tiny attack."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("torch_geometric")
pytest.importorskip("rdkit")
HAVE_MOSES = importlib.util.find_spec("moses") is not None  # only its data files are read

from attacks.gnn.data import attach, decompose  # noqa: E402

needs_moses = pytest.mark.skipif(not HAVE_MOSES, reason="molsets is installed by the Makefile (--no-deps)")


def test_gnn_decompose_attach_round_trip() -> None:
    smi = "COc1ccccc1NC(=O)c1ccc(Cl)cc1"
    scaffold, subs = decompose(smi)
    assert scaffold == "O=C(Nc1ccccc1)c1ccccc1"
    assert sorted(m for _, m in subs) == ["*Cl", "*OC"]
    assert attach(scaffold, subs) == "COc1ccccc1NC(=O)c1ccc(Cl)cc1"


def test_gnn_attach_rejects_bad_valence() -> None:
    # the carbonyl carbon of the amide has no hydrogen: nothing may be attached there
    scaffold = "O=C(Nc1ccccc1)c1ccccc1"
    from rdkit import Chem

    m = Chem.MolFromSmiles(scaffold)
    full = [a.GetIdx() for a in m.GetAtoms() if a.GetTotalNumHs() == 0]
    assert full and all(attach(scaffold, [(p, "*C")]) is None for p in full)
    assert attach(scaffold, [(2, "*C")]) is not None  # the NH takes a methyl


# the fast test's world: no MOSES; six small ring scaffolds, six substituents with a skewed prior
SCAFFOLDS = ["c1ccccc1", "c1ccncc1", "c1ccsc1", "C1CCCCC1", "C1CCNCC1", "c1cncnc1"]
MOTIFS = ["*C", "*Cl", "*F", "*OC", "*N", "*C(F)(F)F"]


def test_gnn_tiny_encoder_is_extracted_above_random(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A 3 x 16 attribute-masking GIN pretrained for seconds on a 30-molecule library (one owner
    scaffold of six) is attacked: the learned score (fitted on two shadow encoders only) and the
    policy both output members well above random generation, at the same budget of 150 distinct
    scored molecules. Seeded end to end; measured on seeds 0-2: score P@20 0.45-0.60, policy
    P@20 0.45-0.75 and P@30 0.30-0.67, random generation P@20 <= 0.05 (chance 0.06)."""
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    import torch

    from attacks.gnn import experiment
    from attacks.gnn.space import library_corpus

    torch.set_num_threads(1)  # the same arithmetic whatever the machine's core count
    world = library_corpus(SCAFFOLDS, MOTIFS, n_private=30, owner_scaffolds=1, seed=0,
                           scaffold_freq=np.ones(len(SCAFFOLDS)), motif_freq=np.array([16.0, 8, 4, 2, 1, 1]))
    w = experiment.prepare("attrmask", dim=16, n_layers=3, epochs=30, batch_size=10, lr=3e-3, n_score_neg=90, seed=0,
                           corpus=world, log=lambda s: None, progress=False)
    r = experiment.run_methods(w, budget=150, fcd_on=False, progress=False, log=lambda s: None, ks=(10, 20, 30),
                               methods=["random generation", "scoring w/o policy", "attack (policy + scoring)"],
                               chance_draws=2000)
    rows = {row["method"]: row for row in r["rows"]}
    rnd, score, attack = rows["random generation"], rows["scoring w/o policy"], rows["attack (policy + scoring)"]
    assert r["chance_precision"] < 0.1, r["chance_precision"]
    assert score["P@20"] >= rnd["P@20"] + 0.25, (score["P@20"], rnd["P@20"])
    assert attack["P@20"] >= rnd["P@20"] + 0.3, (attack["P@20"], rnd["P@20"])
    assert attack["P@30"] >= rnd["P@30"] + 0.2, (attack["P@30"], rnd["P@30"])
    from rdkit import Chem

    for row in rows.values():
        assert len(set(row["top"])) == len(row["top"]) and all(Chem.MolFromSmiles(s) is not None for s in row["top"])


@pytest.fixture(scope="module")
def tiny_world():  # type: ignore[no-untyped-def]
    from attacks.gnn.space import generated_corpus

    return generated_corpus(n_private=30, n_scaffolds=6, n_motifs=6, n_scan=600, owner_scaffolds=2, seed=0)


@needs_moses
def test_gnn_pretraining_lowers_member_loss(tiny_world, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from attacks.gnn.model import molecule_loss, pretrain

    c = tiny_world
    model = pretrain(c.private, "attrmask", dim=16, n_layers=3, epochs=30, batch_size=10, lr=3e-3, seed=0)
    lm = molecule_loss(model, c.private)
    ln = molecule_loss(model, c.shadows[0])
    assert np.isfinite(lm).all() and lm.mean() < ln.mean()


@needs_moses
@pytest.mark.slow  # ~60 s: MOSES vocabulary, three 3 x 32 encoders; the fast test above asserts extraction
def test_gnn_tiny_encoder_leaks_membership_and_attack_runs(tiny_world, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A tiny encoder pretrained for seconds separates its pretraining molecules from generated
    non-members under the learned score (fitted on shadow encoders only), and every method outputs
    distinct valid molecules (the MOSES-vocabulary path of the CLI's library world)."""
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    from rdkit import Chem

    from attacks.gnn import experiment

    r = experiment.run("attrmask", corpus=tiny_world, dim=32, n_layers=3, epochs=60, batch_size=10, lr=3e-3,
                       budget=80, n_score_neg=90, fcd_on=False, progress=False, log=lambda s: None,
                       methods=["random generation", "scoring w/o policy", "attack (policy + scoring)"])
    d = r["diagnostics"]
    assert d["target_auc_raw_loss"] > 0.65, d
    assert d["target_auc_learned_score"] > 0.6, d
    for row in r["rows"]:
        top = row["top"]
        assert len(set(top)) == len(top) and all(Chem.MolFromSmiles(s) is not None for s in top)
        assert 0.0 <= row["P@50"] <= 1.0
