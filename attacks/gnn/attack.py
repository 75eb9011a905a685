"""Scoring function, REINFORCE policy and baselines for extracting an encoder's pretraining molecules.

Scoring function (learned once on the attacker's own shadow encoders, then applied unchanged to
the target, hence "model-independent"): logistic regression on four features of a candidate x
built from scaffold S and motifs M, under an encoder E and a reference encoder R pretrained by
the attacker with the same recipe on other public molecules:

* -loss_E(x): E's own pretraining loss on x (members were fitted, so their loss is low);
* loss_R(x) - loss_E(x): the same, calibrated by how hard x is for an encoder that never saw it
  (difficulty calibration, as in LiRA-style membership inference);
* cos(h_E(S), h_E(x)) and cos(mean h_E(M), h_E(x)): agreement of the merged molecule's embedding
  with its scaffold's and its motifs' embeddings -- Huang et al.'s scaffold/motif signal; the
  regression learns how to mix the two (and the loss terms).

Training data: shadow encoder A (members: its pretraining set) with shadow B as reference; at
attack time E is the target and R is shadow A. The policy is tabular REINFORCE over the actions
of :class:`attacks.gnn.space.Space` (scaffold, one or two substituents, atom, motif), started
from the auxiliary prior, with a batch-mean baseline, an entropy bonus and a penalty for
re-generating a molecule it already has (extraction wants new molecules).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attacks.gnn.model import Pretrained, embed, molecule_loss
from attacks.gnn.space import Action, Space
from attacks.metrics import roc_auc

ScoreFn = Callable[[list[str], list[Action]], np.ndarray]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


class Features:
    """Membership features of candidates under one (encoder, reference) pair, with caches."""

    def __init__(self, encoder: Pretrained, reference: Pretrained, space: Space, negatives_ref: Sequence[str]) -> None:
        self.E, self.R, self.space = encoder, reference, space
        self.neg_ref = list(negatives_ref)  # public molecules: NT-Xent negatives for graphcl losses
        self._emb: dict[str, np.ndarray] = {}

    def _embed(self, smiles: list[str]) -> np.ndarray:
        new = [s for s in dict.fromkeys(smiles) if s not in self._emb]
        if new:
            for s, e in zip(new, embed(self.E, new)):
                self._emb[s] = e
        return np.stack([self._emb[s] for s in smiles])

    def __call__(self, smiles: list[str], actions: list[Action]) -> np.ndarray:
        lE = molecule_loss(self.E, smiles, reference=self.neg_ref)
        lR = molecule_loss(self.R, smiles, reference=self.neg_ref)
        hx = self._embed(smiles)
        hs = self._embed([self.space.scaffolds[a.scaffold] for a in actions])
        hm = np.stack([self._embed([self.space.motifs[m] for _, m in a.subs]).mean(0) for a in actions])
        return np.stack([-lE, lR - lE, _cos(hs, hx), _cos(hm, hx)], 1)


@dataclass
class LearnedScore:
    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: float
    shadow_auc: float

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return ((feats - self.mean) / self.std) @ self.w + self.b


def fit_score(feats: np.ndarray, labels: np.ndarray) -> LearnedScore:
    """Logistic regression (L2, C = 1) on standardised features; deterministic (lbfgs)."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = feats.mean(0), feats.std(0) + 1e-9
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((feats - mu) / sd, labels)
    s = LearnedScore(mu, sd, lr.coef_[0], float(lr.intercept_[0]), 0.0)
    s.shadow_auc = roc_auc(s(feats), labels)
    return s


# ---------------------------------------------------------------- search

class Evaluator:
    """Scores molecules once each (cache by SMILES) and counts the unique molecules scored."""

    def __init__(self, space: Space, score: ScoreFn, budget: int) -> None:
        self.space, self.score, self.budget = space, score, budget
        self.cache: dict[str, float] = {}

    @property
    def used(self) -> int:
        return len(self.cache)

    def __call__(self, actions: list[Action]) -> list[float | None]:
        smi = [self.space.smiles(a) for a in actions]
        todo: dict[str, Action] = {}
        for s, a in zip(smi, actions):
            if s is not None and s not in self.cache and s not in todo and self.used + len(todo) < self.budget:
                todo[s] = a
        if todo:
            vals = self.score(list(todo), list(todo.values()))
            for s, v in zip(todo, vals):
                self.cache[s] = float(v)
        return [None if s is None else self.cache.get(s) for s in smi]

    def top(self, k: int) -> list[str]:
        return [s for s, _ in sorted(self.cache.items(), key=lambda kv: -kv[1])[:k]]


class TabularPolicy(torch.nn.Module):
    """Independent softmax logits: scaffold, substituent count per scaffold, (atom, motif) per scaffold."""

    def __init__(self, space: Space) -> None:
        super().__init__()
        self.space = space
        M = len(space.motifs)
        self.ls = torch.nn.Parameter(torch.tensor(np.log(space.scaffold_prior), dtype=torch.float32))
        self.ln = torch.nn.Parameter(torch.tensor(np.tile(np.log(space.n_prior), (len(space.scaffolds), 1)),
                                                  dtype=torch.float32))
        lm = torch.tensor(np.log(space.motif_prior), dtype=torch.float32)
        self.lpm = torch.nn.ParameterList([
            torch.nn.Parameter(lm.repeat(len(p), 1).clone()) for p in space.positions])
        self.M = M

    def sample(self, n: int, gen: torch.Generator) -> tuple[list[Action], torch.Tensor, torch.Tensor]:
        acts, logps, ents = [], [], []
        ps = F.softmax(self.ls, 0)
        s_idx = torch.multinomial(ps, n, replacement=True, generator=gen)
        for s in s_idx.tolist():
            pos = self.space.positions[s]
            lp = F.log_softmax(self.ls, 0)[s]
            ent = -(ps * torch.log(ps + 1e-12)).sum()
            pn = F.softmax(self.ln[s], 0) if len(pos) > 1 else torch.tensor([1.0, 0.0])
            k = int(torch.multinomial(pn, 1, generator=gen)) + 1
            lp = lp + torch.log(pn[k - 1] + 1e-12)
            logits = self.lpm[s].reshape(-1)
            subs = []
            used = torch.zeros(len(pos), dtype=torch.bool)
            for _ in range(k):
                masked = logits.masked_fill(used.repeat_interleave(self.M), float("-inf"))
                pr = F.softmax(masked, 0)
                j = int(torch.multinomial(pr, 1, generator=gen))
                lp = lp + torch.log(pr[j] + 1e-12)
                ent = ent - (pr * torch.log(pr + 1e-12)).nan_to_num().sum()
                pi, mi = divmod(j, self.M)
                used[pi] = True
                subs.append((int(pos[pi]), mi))
            acts.append(Action(s, tuple(subs)))
            logps.append(lp)
            ents.append(ent)
        return acts, torch.stack(logps), torch.stack(ents)


def reinforce(space: Space, ev: Evaluator, batch: int = 16, lr: float = 0.2, entropy: float = 0.002,
              repeat_penalty: float = 1.0, max_steps: int = 10_000, seed: int = 0, scan_per_scaffold: int = 3,
              scan_weight: float = 3.0, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train the policy on the evaluator's score until the unique-molecule budget is spent.

    Before any update, ``scan_per_scaffold`` prior molecules of every scaffold are scored and the
    scaffold logits shifted by ``scan_weight`` x their standardised mean score: the first action
    (which scaffold) decides most of what can be found, and a few hundred policy-gradient steps
    cannot learn it from scratch over a hundred scaffolds.
    """
    gen = torch.Generator().manual_seed(seed)
    pol = TabularPolicy(space)
    if scan_per_scaffold > 0:
        rng = np.random.default_rng(seed)
        means = np.zeros(len(space.scaffolds))
        for k in range(len(space.scaffolds)):
            one = Space.__new__(Space)
            one.__dict__.update(space.__dict__)
            one.scaffold_prior = np.eye(len(space.scaffolds))[k]
            vals = [v for v in ev(one.sample_prior(scan_per_scaffold, rng)) if v is not None]
            means[k] = np.mean(vals) if vals else np.nan
        ok = np.isfinite(means)
        if ok.sum() > 1:
            z = np.where(ok, (means - np.nanmean(means)) / (np.nanstd(means) + 1e-9), -3.0)
            with torch.no_grad():
                pol.ls += torch.tensor(scan_weight * z, dtype=torch.float32)
        if progress:
            progress(ev.used)
    opt = torch.optim.Adam(pol.parameters(), lr=lr)
    hist = []
    for step in range(max_steps):
        if ev.used >= ev.budget:
            break
        before = set(ev.cache)
        before_n = ev.used
        acts, logp, ent = pol.sample(batch, gen)
        vals = ev(acts)
        scored = [v for v in ev.cache.values()]
        mu, sd = float(np.mean(scored)) if scored else 0.0, float(np.std(scored)) + 1e-9 if scored else 1.0
        r = []
        seen = set()
        for a, v in zip(acts, vals):
            smi = space.smiles(a)
            if v is None:  # invalid (valence) or budget exhausted
                r.append(-3.0)
                continue
            z = (v - mu) / sd
            if smi in before or smi in seen:  # already generated: worth less to an extractor
                z -= repeat_penalty
            seen.add(smi)
            r.append(z)
        rt = torch.tensor(r, dtype=torch.float32)
        adv = rt - rt.mean()
        loss = -(adv * logp).mean() - entropy * ent.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append({"step": step, "mean_reward": float(rt.mean()), "unique": ev.used})
        if progress:
            progress(ev.used - before_n)
        if ev.used == before_n and step > 50:  # the policy has collapsed onto molecules it has seen
            break
    return {"steps": len(hist), "history": hist}


def random_search(space: Space, ev: Evaluator, seed: int = 0, progress: Callable[[int], None] | None = None,
                  chunk: int = 256) -> None:
    """Score ``budget`` unique molecules drawn from the auxiliary prior (no policy)."""
    rng = np.random.default_rng(seed)
    stall = 0
    while ev.used < ev.budget and stall < 20:
        n0 = ev.used
        ev(space.sample_prior(chunk, rng))
        stall = stall + 1 if ev.used == n0 else 0
        if progress:
            progress(ev.used - n0)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
