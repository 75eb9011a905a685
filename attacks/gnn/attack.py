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
attack time E is the target and R is shadow A. The policy that searches the action space with
this score is in :mod:`attacks.gnn.policy`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from attacks.gnn.model import Pretrained, embed, molecule_loss
from attacks.gnn.space import Action, Space, log_prior
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


class PriorWeighted:
    """score(x) standardised, plus ``beta`` x log prior(x): a member-likelihood for search and ranking.

    The owner's molecules come from the same distribution as the attacker's auxiliary data (the
    paper's setting), so at equal score a molecule the prior finds likely is the better bet:
    ranking by score alone over a whole action space puts implausible molecules with extreme
    scores first (docs/gnn-extraction.md, "ceiling"). The score is standardised by the median and
    MAD of the first batch it sees (the policy's scaffold scan: prior molecules), so ``beta`` means
    the same for every encoder and scoring function.
    """

    def __init__(self, score: ScoreFn, space: Space, beta: float = 1.0) -> None:
        self.score, self.space, self.beta = score, space, beta
        self.med: float | None = None
        self.mad = 1.0

    def __call__(self, smiles: list[str], actions: list[Action]) -> np.ndarray:
        s = np.asarray(self.score(smiles, actions), dtype=np.float64)
        if self.med is None:
            self.med = float(np.median(s))
            self.mad = float(np.median(np.abs(s - self.med))) * 1.4826 + 1e-9
        lp = np.array([log_prior(self.space, a) for a in actions])
        return (s - self.med) / self.mad + self.beta * lp


# ---------------------------------------------------------------- search

class Evaluator:
    """Scores molecules once each (cache by SMILES) and counts the unique molecules scored."""

    def __init__(self, space: Space, score: ScoreFn, budget: int) -> None:
        self.space, self.score, self.budget = space, score, budget
        self.cache: dict[str, float] = {}
        self.actions: dict[str, Action] = {}

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
                self.actions[s] = todo[s]
        return [None if s is None else self.cache.get(s) for s in smi]

    def top(self, k: int) -> list[str]:
        """The ``k`` best-scored molecules (ties broken by SMILES, so the order is reproducible)."""
        return [s for s, _ in sorted(self.cache.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    def top_actions(self, k: int) -> list[Action]:
        return [self.actions[s] for s in self.top(k)]


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
