"""Candidate ranking (in the spirit of Huang et al., NeurIPS 2024): which of my molecules were
used to train this model?

The attacker holds an auxiliary pool of molecules, some of which are training molecules, and
ranks the pool by a score computed from the model's predictions only; precision@K is the fraction
of training molecules among the K best-ranked, against the pool's base rate (random ranking).
Huang et al. rank generated molecules by an embedding similarity learned with reinforcement
learning against GNNs; for kernel models simpler, sharper scores exist:

* ``label``: -|f(x) - y| with the pool's public labels (QM9 labels are public).
* ``kink`` (label-free, Laplacian kernel): exp(-|x - q|_1/sigma) is not differentiable where a
  query coordinate equals a training coordinate, so at a training molecule x every coordinate line
  through x has a kink: the three-point filter f(x - h e_k) + f(x + h e_k) - 2 cosh(h/sigma) f(x)
  is ~2 a_i sinh(h/sigma) there and ~0 at a non-member. Score: the filter's magnitude summed over
  a few axes where x's own value is distinctive (2 queries per axis, plus f(x)).
* ``reference`` (label-free, any kernel): |f(x) - g(x)| where g is the attacker's own model fitted
  on public data; members sit exactly on their label, so their disagreement with g is g's error
  alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from attacks.metrics import precision_at_k, roc_auc

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class RankingResult:
    scores: np.ndarray
    labels: np.ndarray
    precision: dict[int, float]
    baseline: float  # base rate of members in the pool = expected precision of a random ranking
    auc: float
    queries: int

    def summary(self) -> dict[str, Any]:
        return {"precision_at_k": {str(k): v for k, v in self.precision.items()},
                "random_precision": self.baseline, "auc": self.auc, "queries": self.queries}


def _result(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...], queries: int) -> RankingResult:
    return RankingResult(scores, labels, {k: precision_at_k(scores, labels, k) for k in ks},
                         float(np.mean(labels)), roc_auc(scores, labels), queries)


def label_score(predict: Predict, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    r = np.asarray(predict(X), dtype=np.float64) - y
    return -np.log(np.abs(r) + 1e-12), len(X)


def kink_score(predict: Predict, X: np.ndarray, sigma: float, n_axes: int = 4, h: float = 1e-3,
               lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, int]:
    """Label-free score for Laplacian-kernel models (see module docstring)."""
    n, d = X.shape
    # axes where each candidate's value is far from every other candidate's: a training
    # molecule sharing that value with x (zero padding, equal diagonal entries) would also kink there
    srt = np.sort(X, axis=0)
    pos = np.stack([np.searchsorted(srt[:, k], X[:, k]) for k in range(d)], 1)
    left = np.abs(X - np.take_along_axis(srt, np.clip(pos - 1, 0, n - 1), 0))
    right = np.abs(np.take_along_axis(srt, np.clip(pos + 1, 0, n - 1), 0) - X)
    iso = np.where(pos > 0, left, np.inf)
    iso = np.minimum(iso, np.where(pos < n - 1, right, np.inf))
    iso[X == 0] = 0.0
    axes = np.argsort(-iso, axis=1)[:, :n_axes]
    Q = np.repeat(X, 1 + 2 * n_axes, axis=0).reshape(n, 1 + 2 * n_axes, d)
    rows = np.arange(n)[:, None]
    Q[rows, 1 + 2 * np.arange(n_axes)[None, :], axes] -= h
    Q[rows, 2 + 2 * np.arange(n_axes)[None, :], axes] += h
    Q = Q.reshape(-1, d)
    if lo is not None or hi is not None:
        Q = np.clip(Q, lo, hi)
    f = np.asarray(predict(Q), dtype=np.float64).reshape(n, 1 + 2 * n_axes)
    filt = f[:, 1::2] + f[:, 2::2] - 2.0 * math.cosh(h / sigma) * f[:, :1]
    return np.log(np.abs(filt).sum(1) + 1e-300), len(Q)


def reference_score(predict: Predict, X: np.ndarray, reference: Any) -> tuple[np.ndarray, int]:
    """-|f(x) - g(x)|: at a member f(x) is its label, so the gap is g's error alone; at a
    non-member it is the difference of two independent-ish errors, larger on average."""
    f = np.asarray(predict(X), dtype=np.float64)
    g = np.asarray(reference.predict(X), dtype=np.float64)
    return -np.abs(f - g), len(X)


def rank_candidates(predict: Predict, X: np.ndarray, labels: np.ndarray, score: str = "label", *,
                    y: np.ndarray | None = None, sigma: float | None = None, reference: Any = None,
                    ks: tuple[int, ...] = (50, 100, 200), lo: float | None = None,
                    hi: float | None = None) -> RankingResult:
    """Rank the pool ``X`` by ``score`` and report precision@K against ``labels`` (1 = member)."""
    if score == "label":
        if y is None:
            raise ValueError("the label score needs the pool's labels y")
        s, q = label_score(predict, X, y)
    elif score == "kink":
        if sigma is None:
            raise ValueError("the kink score needs the kernel width sigma")
        s, q = kink_score(predict, X, sigma, lo=lo, hi=hi)
    elif score == "reference":
        if reference is None:
            raise ValueError("the reference score needs a fitted reference model")
        s, q = reference_score(predict, X, reference)
    else:
        raise ValueError(f"unknown score {score!r} (label, kink, reference)")
    return _result(s, labels, ks, q)
