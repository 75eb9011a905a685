"""Scores for membership inference and candidate ranking (no scikit-learn needed at run time)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). Higher score = member."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) over every threshold, starting at (0, 0)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s)) if s.size > 1 else np.zeros(0, dtype=int)
    idx = np.concatenate([distinct, [s.size - 1]])
    tps = np.cumsum(y)[idx]
    fps = (idx + 1) - tps
    tpr = np.concatenate([[0.0], tps / max(y.sum(), 1)])
    fpr = np.concatenate([[0.0], fps / max((~y).sum(), 1)])
    return fpr, tpr


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr_target: float = 0.01) -> float:
    """Largest true-positive rate over thresholds whose false-positive rate is <= ``fpr_target``."""
    fpr, tpr = roc_curve(scores, labels)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of members among the ``k`` highest-scoring candidates (ties broken by index)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    k = min(int(k), s.size)
    if k <= 0:
        return float("nan")
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())
