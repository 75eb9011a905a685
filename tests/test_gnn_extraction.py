"""GNN training-data extraction (attacks.gnn): chemistry helpers, pretraining, and a real tiny attack."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

# find_spec, not importorskip: importing torch-geometric at collection costs every test run seconds
if importlib.util.find_spec("torch_geometric") is None or importlib.util.find_spec("rdkit") is None:
    pytest.skip("torch-geometric and RDKit are installed by the Makefile", allow_module_level=True)
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


def test_gnn_pretraining_lowers_member_loss() -> None:
    from attacks.gnn.model import molecule_loss, pretrain
    from attacks.gnn.space import library_corpus

    c = library_corpus(SCAFFOLDS, MOTIFS, n_private=30, owner_scaffolds=1, seed=0,
                       scaffold_freq=np.ones(len(SCAFFOLDS)), motif_freq=np.array([16.0, 8, 4, 2, 1, 1]))
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


def _synthetic_space():  # type: ignore[no-untyped-def]
    from attacks.gnn.space import Space, library_corpus

    world = library_corpus(SCAFFOLDS[:3], MOTIFS[:3], n_private=10, owner_scaffolds=1, seed=0,
                           scaffold_freq=np.array([1.0, 2.0, 3.0]), motif_freq=np.array([4.0, 2.0, 1.0]))
    return world, Space(world)


def test_gnn_policy_log_prob_is_a_distribution_over_paths() -> None:
    """Summed over every (scaffold, count, ordered (atom, motif) path), exp(log_prob) is 1 -- also
    after the logits moved -- so the policy gradient uses the probabilities the sampler draws from."""
    import itertools

    import torch

    from attacks.gnn.policy import TabularPolicy
    from attacks.gnn.space import Action

    _, space = _synthetic_space()
    pol = TabularPolicy(space)
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    paths = []
    for s, pos in enumerate(space.positions):
        sites = [(int(p), m) for p in pos for m in range(len(space.motifs))]
        paths += [Action(s, (a,)) for a in sites]
        if len(pos) > 1:
            paths += [Action(s, (a, b)) for a, b in itertools.permutations(sites, 2) if a[0] != b[0]]
    total = float(torch.exp(pol.log_prob(paths)).sum().detach())
    assert abs(total - 1.0) < 1e-4, total


def test_gnn_policy_moves_to_the_rewarded_scaffold() -> None:
    """A score that rewards one scaffold (pyridine, a third of the prior) only: with REINFORCE and
    with PPO more of a 60-molecule budget lands there than random generation puts (0.42); larger
    budgets exhaust pyridine's ~90 molecules, and the duplicate penalty then pushes the policy on."""
    from attacks.gnn.attack import Evaluator, random_search
    from attacks.gnn.policy import policy_search

    _, space = _synthetic_space()

    def score(smiles, actions):  # type: ignore[no-untyped-def]
        return np.array([1.0 if a.scaffold == 1 else 0.0 for a in actions])

    ev = Evaluator(space, score, 60)
    random_search(space, ev, seed=0)
    base = np.mean([a.scaffold == 1 for a in ev.actions.values()])
    assert base < 0.45, base
    for algo in ("reinforce", "ppo"):
        ev = Evaluator(space, score, 60)
        policy_search(space, ev, algo=algo, seed=0, scan_per_scaffold=0, batch=8, lr=0.3)
        share = np.mean([a.scaffold == 1 for a in ev.actions.values()])
        assert share > base + 0.1, (algo, share, base)  # measured (seeds 0-2): 0.58-0.75 vs 0.42-0.45


def test_gnn_krr_service_scores_separate_members() -> None:
    """The generator's score from a served Laplacian KRR (Morgan count fingerprints, logP): the
    label score ranks every member above every non-member (the model interpolates its training
    labels); the label-free kink score is above chance."""
    from attacks.gnn.krr_target import ServiceScore, train_service
    from attacks.gnn.space import Space, library_corpus, unique_valid
    from attacks.metrics import roc_auc

    world = library_corpus(SCAFFOLDS, MOTIFS, n_private=30, owner_scaffolds=1, seed=0,
                           scaffold_freq=np.ones(len(SCAFFOLDS)), motif_freq=np.array([16.0, 8, 4, 2, 1, 1]))
    space = Space(world)
    members = set(world.private)
    neg = [s for s in unique_valid(space, space.sample_prior(600, np.random.default_rng(1))) if s not in members][:120]
    svc = train_service(world.private, "api")
    mols = sorted(members) + neg
    lab = np.r_[np.ones(len(members)), np.zeros(len(neg))]
    assert roc_auc(ServiceScore(svc, "label")(mols, [None] * len(mols)), lab) == 1.0
    kink = ServiceScore(svc, "kink", public=world.shadows[0])(mols, [None] * len(mols))
    assert roc_auc(kink, lab) > 0.7
    assert svc.queries == len(mols) * (1 + 1 + 2 * 4)


@pytest.mark.slow  # importing Opacus and its sigma search take ~25 s on the shared CPUs
def test_gnn_dp_pretraining_meets_its_accounting() -> None:
    """DP-SGD pretraining calibrates sigma to the target epsilon (Opacus RDP) and keeps no private
    batch-norm statistics: they equal a recomputation from the public molecules alone."""
    import torch

    from attacks.gnn.defense import _public_batchnorm, dp_epsilon, pretrain_dp

    world, _ = _synthetic_space()
    model, acct = pretrain_dp(world.private, "attrmask", world.shadows[0], epsilon=4.0, dim=8, n_layers=2,
                              epochs=2, batch_size=5)
    assert 3.5 < acct["epsilon"] <= 4.0 + 1e-6 and acct["noise_multiplier"] > 0.5
    assert abs(dp_epsilon(acct["noise_multiplier"], 1e-5, acct["sample_rate"], acct["steps"]) - acct["epsilon"]) < 1e-9
    bn = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    _public_batchnorm(model, world.shadows[0])
    again = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.allclose(a, b) for a, b in zip(bn, again))
