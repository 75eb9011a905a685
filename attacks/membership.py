"""Membership inference against KRR regressors: was this molecule in the training set?

* Loss threshold (Yeom et al., CSF 2018): score = -|f(x) - y|. Exact KRR with a tiny ridge
  interpolates its training labels, so members have residuals near zero.
* Shadow models (Shokri et al., S&P 2017), in the per-example calibrated form of Carlini et al.'s
  offline LiRA (S&P 2022): the attacker trains shadow models with the target's public
  hyperparameters on public molecules it owns, reads each candidate's residual under every shadow
  (where the candidate is a non-member), and scores how far below that non-member distribution the
  target's residual falls: score = (mean_k log|r_k| - log|r_target|) / std_k. The shadows also
  give a global threshold on log|r| (midpoint between shadow members and non-members), i.e. a
  decision rule whose true- and false-positive rates are reported as well.

Both need only predictions (any deployment) plus the candidates' labels, which are public for
QM9-like data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from attacks.metrics import roc_auc, tpr_at_fpr

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class MIAResult:
    scores: np.ndarray
    labels: np.ndarray  # 1 = member
    auc: float
    tpr_at_1fpr: float
    extra: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"auc": self.auc, "tpr_at_1pct_fpr": self.tpr_at_1fpr, **self.extra}


def _log_abs(r: np.ndarray) -> np.ndarray:
    # residuals of an interpolating model reach 1e-12; keep them ordered rather than -inf
    return np.log(np.abs(r) + 1e-12)


def loss_threshold_attack(predict: Predict, X: np.ndarray, y: np.ndarray, labels: np.ndarray) -> MIAResult:
    """Yeom et al.: lower loss = member. One query per candidate."""
    r = np.asarray(predict(X), dtype=np.float64) - y
    s = -_log_abs(r)
    return MIAResult(s, labels, roc_auc(s, labels), tpr_at_fpr(s, labels, 0.01),
                     {"queries": int(len(X)), "median_abs_residual_members": float(np.median(np.abs(r[labels == 1]))),
                      "median_abs_residual_nonmembers": float(np.median(np.abs(r[labels == 0])))})


def shadow_attack(predict: Predict, X: np.ndarray, y: np.ndarray, labels: np.ndarray,
                  shadow_X: np.ndarray, shadow_y: np.ndarray, make_model: Callable[[], Any],
                  n_shadows: int = 8, shadow_size: int | None = None, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> MIAResult:
    """Shadow-model attack (per-example calibrated, offline LiRA style).

    ``shadow_X, shadow_y``: the attacker's own labelled molecules (disjoint from the candidates).
    ``make_model()``: an unfitted estimator with the target's public hyperparameters.
    """
    rng = np.random.default_rng(seed)
    m = shadow_size or len(shadow_X) // 2
    out_logs = np.empty((n_shadows, len(X)))
    shadow_in, shadow_out = [], []
    for k in range(n_shadows):
        perm = rng.permutation(len(shadow_X))
        tr, ho = perm[:m], perm[m:]
        est = make_model().fit(shadow_X[tr], shadow_y[tr])
        out_logs[k] = _log_abs(est.predict(X) - y)
        # member / non-member residuals of the shadow itself: they place a global threshold
        sub_in = tr[: min(len(tr), 200)]
        shadow_in.append(_log_abs(est.predict(shadow_X[sub_in]) - shadow_y[sub_in]))
        shadow_out.append(_log_abs(est.predict(shadow_X[ho[:200]]) - shadow_y[ho[:200]]))
        if progress:
            progress(1)
    target_log = _log_abs(np.asarray(predict(X), dtype=np.float64) - y)
    mu, sd = out_logs.mean(0), out_logs.std(0) + 1e-3
    s = (mu - target_log) / sd
    s_in, s_out = np.concatenate(shadow_in), np.concatenate(shadow_out)
    # threshold that best separates shadow members from shadow non-members
    cand = np.sort(np.concatenate([s_in, s_out]))
    acc = [(np.mean(s_in <= c) + np.mean(s_out > c)) / 2 for c in cand]
    thr = float(cand[int(np.argmax(acc))])
    pred_member = target_log <= thr
    lab = labels.astype(bool)
    return MIAResult(s, labels, roc_auc(s, labels), tpr_at_fpr(s, labels, 0.01), {
        "queries": int(len(X)), "n_shadows": n_shadows, "shadow_size": m,
        "shadow_threshold_log_abs_residual": thr,
        "threshold_tpr": float(pred_member[lab].mean()), "threshold_fpr": float(pred_member[~lab].mean()),
        "threshold_accuracy": float((pred_member == lab).mean()),
    })
