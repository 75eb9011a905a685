"""Differentially private pretraining (DP-SGD) of the GIN encoder, and the extraction attack against it.

Defense (Abadi et al., CCS 2016), the owner's side: every step samples each private molecule
with probability q = batch / n (Poisson), computes each sampled molecule's gradient of its own
pretraining loss *alone* (a batch of one graph: batch norm normalises over that molecule's atoms
only, so no gradient mixes molecules), clips it to L2 norm C, sums, adds N(0, (sigma C)^2 I) and
divides by the expected batch size; Adam takes the noisy mean (post-processing). sigma is
calibrated to (epsilon, delta) over all steps by Opacus's RDP accountant. Batch norm's running
statistics are *not* privatised by this, so after training they are recomputed from public
molecules only (the attacker's kind of data), which makes the released checkpoint a function of
the noisy gradients and public data alone.

Only families whose loss is a sum over molecules qualify (``attrmask``, ``edgepred``); GraphCL's
contrastive loss couples the molecules of a batch.

The attack is unchanged (:mod:`attacks.gnn.experiment`): the attacker's shadow encoders keep the
ordinary recipe (it is not told how the owner trained). Utility: the encoder's own pretraining
loss on unseen molecules of the owner's distribution (lower = better), beside the non-private
encoder's.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from attacks.gnn import experiment
from attacks.gnn.model import Pretrained, batch_loss, collate, featurise, molecule_loss
from attacks.gnn.space import Space, generated_corpus, library_corpus, unique_valid
from secureml.errors import DataError


def dp_noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """sigma for (epsilon, delta)-DP after ``steps`` Poisson-subsampled Gaussian steps (Opacus RDP)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant="rdp"))


def dp_epsilon(sigma: float, delta: float, sample_rate: float, steps: int) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, sample_rate, steps)]
    return float(acc.get_epsilon(delta))


def pretrain_dp(smiles: Sequence[str], family: str, public: Sequence[str], epsilon: float, delta: float = 1e-5,
                dim: int = 64, n_layers: int = 5, epochs: int = 100, batch_size: int = 16, lr: float = 1e-3,
                max_grad_norm: float = 1.0, seed: int = 0) -> tuple[Pretrained, dict[str, Any]]:
    """DP-SGD pretraining (module docstring, steps 1-4 each iteration); returns the model and its
    accounting (epsilon reached, sigma, steps)."""
    if family not in ("attrmask", "edgepred"):
        raise DataError(f"DP pretraining needs a per-molecule loss: attrmask or edgepred, not {family!r}")
    torch.manual_seed(seed)
    graphs = [featurise(s) for s in smiles]
    n = len(graphs)
    q = min(1.0, batch_size / n)
    steps = max(1, int(round(epochs / q)))
    sigma = dp_noise_multiplier(epsilon, delta, q, steps)
    model = Pretrained(family, dim, n_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device("cpu")
    model.train()
    for _ in range(steps):
        # 1. Poisson sampling
        pick = (torch.rand(n, generator=gen) < q).nonzero().flatten().tolist()
        acc = [torch.zeros_like(p) for p in params]
        for i in pick:
            # 2. the molecule's own gradient, clipped to max_grad_norm
            model.zero_grad()
            batch_loss(model, collate([graphs[i]]), gen, dev).backward()
            g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            norm = torch.sqrt(sum((x * x).sum() for x in g))
            f = min(1.0, max_grad_norm / (float(norm) + 1e-12))
            for a, x in zip(acc, g):
                a.add_(x, alpha=f)
        # 3. Gaussian noise on the sum, divided by the expected batch size
        for p, a in zip(params, acc):
            p.grad = (a + torch.randn(a.shape, generator=gen) * sigma * max_grad_norm) / (q * n)
        # 4. the optimiser step on the noisy mean
        opt.step()
    _public_batchnorm(model, public)
    model.eval()
    return model, {"epsilon": dp_epsilon(sigma, delta, q, steps), "delta": delta, "noise_multiplier": sigma,
                   "max_grad_norm": max_grad_norm, "sample_rate": q, "steps": steps, "epochs": epochs}


@torch.no_grad()
def _public_batchnorm(model: Pretrained, public: Sequence[str]) -> None:
    """Replace batch norm's running statistics by ones computed on public molecules only."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the public batches
    model.train()
    graphs = [featurise(s) for s in public]
    for k in range(0, len(graphs), 64):
        model.encoder.nodes(collate(graphs[k:k + 64]))
    model.eval()


def attack_dp(epsilons: Sequence[float | None] = (None, 8.0, 1.0), family: str = "attrmask", seed: int = 0,
              quick: bool = True, budget: int | None = None) -> list[dict[str, Any]]:
    """The extraction attack against non-private (None) and DP-SGD-pretrained targets.

    quick: the fast test's world (six ring scaffolds, six substituents, 30 private molecules, GIN
    3 x 16, 30 epochs, budget 150; seconds per target). Otherwise the library world of
    docs/gnn-extraction.md (MOSES vocabulary 10 x 10, 100 molecules, GIN 5 x 64; minutes).
    """
    if quick:
        sc = ["c1ccccc1", "c1ccncc1", "c1ccsc1", "C1CCCCC1", "C1CCNCC1", "c1cncnc1"]
        mo = ["*C", "*Cl", "*F", "*OC", "*N", "*C(F)(F)F"]
        corpus = library_corpus(sc, mo, n_private=30, owner_scaffolds=1, seed=seed,
                                scaffold_freq=np.ones(len(sc)), motif_freq=np.array([16.0, 8, 4, 2, 1, 1]))
        rec = dict(dim=16, n_layers=3, epochs=30, batch_size=10, lr=3e-3)
        budget, ks = budget or 150, (10, 20, 30)
    else:
        corpus = generated_corpus(n_private=100, n_scaffolds=10, n_motifs=10, owner_scaffolds=2, seed=seed)
        rec = dict(dim=64, n_layers=5, epochs=200 if family == "attrmask" else 150, batch_size=16, lr=1e-3)
        budget, ks = budget or 1000, (50, 100, 200)
    space = Space(corpus)
    members = set(corpus.private)
    # unseen molecules of the owner's distribution (its scaffolds, the prior's substituents): utility
    own = {corpus.decomposition[s][0] for s in corpus.private}
    sub = Space.__new__(Space)
    sub.__dict__.update(space.__dict__)
    p = np.array([space.scaffold_prior[k] if s in own else 0.0 for k, s in enumerate(space.scaffolds)])
    sub.scaffold_prior = p / p.sum()
    taken = members | {s for sh in corpus.shadows for s in sh}
    held = [s for s in unique_valid(space, sub.sample_prior(2000, np.random.default_rng(seed + 5))) if s not in taken]
    held = held[:200]
    public = [s for sh in corpus.shadows for s in sh]  # the attacker-side kind of data
    rows = []
    for eps in epsilons:
        t0 = time.perf_counter()
        acct: dict[str, Any] = {"epsilon": None}
        trainer = None
        if eps is not None:
            def trainer(private: Sequence[str], eps: float = eps) -> Pretrained:
                m, a = pretrain_dp(private, family, public, eps, seed=seed, **rec)
                acct.update(a)
                return m
        w = experiment.prepare(family, corpus=corpus, n_score_neg=3 * len(members), seed=seed, log=lambda s: None,
                               progress=False, target_trainer=trainer, **rec)
        r = experiment.run_methods(w, budget=budget, seed=seed, fcd_on=False, progress=False, log=lambda s: None,
                                   ks=ks, chance_draws=2000,
                                   methods=["random generation", "scoring w/o policy", "attack (policy + scoring)"])
        by = {row["method"]: row for row in r["rows"]}
        util = float(np.mean(molecule_loss(w.target, held)))
        mem_loss = float(np.mean(molecule_loss(w.target, sorted(members))))
        k = ks[1]
        rows.append({"attack": "gnn-extract", "family": family, **acct, "quick": quick,
                     "heldout_loss": util, "member_loss": mem_loss,
                     "auc_learned_score": w.diagnostics["target_auc_learned_score"],
                     f"P@{k} attack": by["attack (policy + scoring)"][f"P@{k}"],
                     f"P@{k} score only": by["scoring w/o policy"][f"P@{k}"],
                     f"P@{k} random generation": by["random generation"][f"P@{k}"],
                     "k": k, "chance": r["chance_precision"], "budget": budget, "n_private": len(members),
                     "seconds": time.perf_counter() - t0})
    return rows
