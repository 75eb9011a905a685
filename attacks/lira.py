"""Likelihood-ratio membership inference (LiRA; Carlini et al., S&P 2022) against KRR regressors.

The attacker knows a population of labelled molecules (here: QM9 from qm9pack) from which the
target's training set was drawn, and the target's public hyperparameters (kernel, sigma, lambda,
representation). It trains ``n_shadows`` shadow models, each on a random half of the population,
so every candidate is *in* about half of the shadows and *out* of the other half. The statistic of a
candidate under a model is the log absolute residual ``s = log(|f(x) - y| + eps)`` (the regression
analogue of LiRA's logit-scaled confidence: it is close to Gaussian per example). Per candidate:

* online LiRA: ``score = log N(s_target; mu_in, sd_in) - log N(s_target; mu_out, sd_out)``
* offline LiRA: ``score = (mu_out - s_target) / sd_out`` (only the "out" shadows; one-sided)

with a global (pooled) standard deviation when the shadows per side are few, as the paper
recommends below ~64 shadows. The baseline attack is the loss threshold (Yeom et al. 2018,
``score = -s_target``), chance is TPR = FPR. Reported: AUC and TPR at 0.1% and 1% FPR, and the
whole ROC curve (to be drawn on log-log axes, the paper's way of showing the low-FPR regime).

Shadow fits share one population kernel matrix: the target's kernel is public, so the attacker
computes K over the population once and each shadow is a Cholesky solve on a sub-block.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from attacks import scenario
from attacks.metrics import roc_auc, roc_curve, tpr_at_fpr
from attacks.targets import make_target
from secureml.data import load_qm9
from secureml.models.krr import kernel_matrix
from secureml.plot_style import PALETTE, new_figure, save

EPS = 1e-12  # residuals of an interpolating KRR reach 1e-10: keep them finite and ordered
FPRS = (0.001, 0.01)


def log_abs_residual(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.log(np.abs(np.asarray(pred, dtype=np.float64) - y) + EPS)


@dataclass
class ShadowStats:
    """Each shadow's statistic on every candidate and whether the candidate was in its training set."""

    stats: np.ndarray  # (n_shadows, n_candidates)
    inside: np.ndarray  # (n_shadows, n_candidates) bool
    seconds: float
    kernel_seconds: float


def train_shadows(K: np.ndarray, y: np.ndarray, lam: float, n_shadows: int, seed: int = 0,
                  fraction: float = 0.5, progress: Callable[[int], None] | None = None) -> ShadowStats:
    """``n_shadows`` KRR models on random ``fraction`` subsets of the population (kernel K, labels y).

    Every candidate ends up in about half the shadows; the mean-offset, solve and predict steps are
    those of :class:`secureml.models.krr.KernelRidge` (offset = mean of the training labels).
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    m = int(round(fraction * n))
    stats = np.empty((n_shadows, n))
    inside = np.zeros((n_shadows, n), dtype=bool)
    t0 = time.perf_counter()
    for k in range(n_shadows):
        idx = np.sort(rng.permutation(n)[:m])
        inside[k, idx] = True
        Kin = K[np.ix_(idx, idx)]
        Kin[np.diag_indices_from(Kin)] += lam
        off = float(y[idx].mean())
        alpha = cho_solve(cho_factor(Kin, lower=True, overwrite_a=True, check_finite=False), y[idx] - off,
                          check_finite=False)
        stats[k] = log_abs_residual(K[:, idx] @ alpha + off, y)
        if progress:
            progress(1)
    return ShadowStats(stats, inside, time.perf_counter() - t0, 0.0)


@dataclass
class LiRAResult:
    scores: dict[str, np.ndarray]  # attack name -> score per candidate (higher = member)
    labels: np.ndarray  # 1 = member of the target
    summary: dict[str, Any] = field(default_factory=dict)


def _gauss_logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def lira_scores(target_stat: np.ndarray, shadows: ShadowStats, global_variance: bool | None = None
                ) -> dict[str, np.ndarray]:
    """Online and offline LiRA scores and the loss-threshold baseline, per candidate."""
    s, inside = shadows.stats, shadows.inside
    n_in = inside.sum(0)
    n_out = (~inside).sum(0)
    if not (n_in > 0).any() or not (n_out > 0).any():
        raise ValueError("the shadows need both members and non-members of the population")
    mu_in = np.where(inside, s, 0.0).sum(0) / np.maximum(n_in, 1)
    mu_out = np.where(~inside, s, 0.0).sum(0) / np.maximum(n_out, 1)
    # with few shadows a candidate may never be in (or out): shift the other side by the typical gap
    both = (n_in > 0) & (n_out > 0)
    gap = float(np.median(mu_in[both] - mu_out[both])) if both.any() else 0.0
    mu_in = np.where(n_in > 0, mu_in, mu_out + gap)
    mu_out = np.where(n_out > 0, mu_out, mu_in - gap)
    var_in = np.where(inside, (s - mu_in) ** 2, 0.0).sum(0) / np.maximum(n_in - 1, 1)
    var_out = np.where(~inside, (s - mu_out) ** 2, 0.0).sum(0) / np.maximum(n_out - 1, 1)
    if global_variance is None:
        global_variance = s.shape[0] < 64  # Carlini et al.: per-example variances need many shadows
    if global_variance:
        var_in = np.full_like(var_in, np.median(var_in[n_in > 1]) if (n_in > 1).any() else np.median(var_out))
        var_out = np.full_like(var_out, np.median(var_out[n_out > 1]) if (n_out > 1).any() else np.median(var_in))
    sd_in, sd_out = np.sqrt(var_in) + 1e-6, np.sqrt(var_out) + 1e-6
    online = _gauss_logpdf(target_stat, mu_in, sd_in) - _gauss_logpdf(target_stat, mu_out, sd_out)
    offline = (mu_out - target_stat) / sd_out
    return {"lira_online": online, "lira_offline": offline, "loss_threshold": -target_stat}


def evaluate(scores: dict[str, np.ndarray], labels: np.ndarray, fprs: tuple[float, ...] = FPRS) -> dict[str, Any]:
    """AUC and TPR at each FPR per attack, next to chance (TPR = FPR, AUC 0.5)."""
    out: dict[str, Any] = {"chance": {"auc": 0.5, **{f"tpr_at_{f:g}_fpr": f for f in fprs}}}
    n_neg = int((np.asarray(labels) == 0).sum())
    for name, sc in scores.items():
        out[name] = {"auc": roc_auc(sc, labels), **{f"tpr_at_{f:g}_fpr": tpr_at_fpr(sc, labels, f) for f in fprs}}
    out["false_positives_allowed"] = {f"{f:g}": int(np.floor(f * n_neg)) for f in fprs}
    return out


def roc_points(scores: dict[str, np.ndarray], labels: np.ndarray, n_points: int = 200) -> dict[str, dict[str, list]]:
    """ROC curves thinned to ~n_points on a log FPR grid (for JSON/CSV next to the plot)."""
    out = {}
    n_neg = max(int((np.asarray(labels) == 0).sum()), 1)
    grid = np.unique(np.r_[np.geomspace(1.0 / n_neg, 1.0, n_points), 1.0])
    for name, sc in scores.items():
        fpr, tpr = roc_curve(sc, labels)
        # TPR at each grid FPR: the best threshold whose FPR does not exceed it
        j = np.searchsorted(fpr, grid, side="right") - 1
        out[name] = {"fpr": grid.tolist(), "tpr": np.maximum.accumulate(tpr)[j].tolist()}
    return out


def plot_roc(curves: dict[str, dict[str, dict[str, list]]], path: str, title: str) -> None:
    """Log-log ROC curves, one colour per attack, one line style per setting; the diagonal is chance."""
    fig, ax = new_figure(figsize=(6, 5))
    styles = ["-", "--", ":", "-."]
    colours = {"lira_online": PALETTE[0], "lira_offline": PALETTE[1], "loss_threshold": PALETTE[2]}
    lo = 1.0
    for k, (setting, per_attack) in enumerate(curves.items()):
        for name, c in per_attack.items():
            f = np.asarray(c["fpr"])
            lo = min(lo, float(f[f > 0].min()))
            ax.plot(f, np.maximum(c["tpr"], 1e-5), styles[k % len(styles)], color=colours.get(name, None),
                    label=f"{name}, {setting}", lw=1.2)
    g = np.geomspace(lo, 1, 50)
    ax.plot(g, g, color="grey", lw=0.8, label="chance (TPR = FPR)")
    for f in FPRS:
        ax.axvline(f, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(1e-3, 1.05)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
    save(fig, path)


def population(n: int, seed: int = 0) -> Any:
    """The attacker's population: ``n`` QM9 molecules (qm9pack, seeded), U0 atomization energy."""
    return load_qm9(n=int(n), seed=seed, properties=["U0_atomization"])


def run(data: Any = None, *, kernel: str = "gaussian", sigma: float | None = None,
        lams: tuple[float, ...] = (1e-8, 1e-4, 1e-2), n_population: int = 5000, n_shadows: int = 16,
        deployment: str = "api", protocol_sample: int = 2, seed: int = 0,
        progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """LiRA against the project's KRR at each ridge ``lams``; members: a seeded half of the population.

    ``data``: the population (default: :func:`population` of ``n_population`` QM9 molecules). The
    target is queried once per candidate (every molecule of the population) through ``deployment``.
    Returns per-lambda AUC / TPR at 0.1% and 1% FPR for online and offline LiRA and the loss
    threshold, the test MAE of each target (its utility), ROC points and the attacker's cost.
    """
    data = population(n_population, seed) if data is None else data
    n_pop = len(data)
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    K = None
    for lam in lams:
        scn = scenario.build_on(data, kernel, n_train=n_pop // 2, seed=seed, sigma=sigma, lam=lam)
        est = scn.model.estimator
        labels = np.zeros(n_pop, dtype=int)
        labels[scn.train] = 1
        target = make_target(deployment, scn.model, protocol_sample=protocol_sample)
        t0 = time.perf_counter()
        answers = target.predict(scn.X)  # one query per candidate
        query_s = time.perf_counter() - t0
        answers = np.where(np.isfinite(answers), answers, np.inf)  # refused -> looks like a non-member
        if K is None:  # the public kernel over the population, shared by every shadow and lambda
            tk = time.perf_counter()
            K = kernel_matrix(scn.X, scn.X, kernel, float(est.sigma))
            k_s = time.perf_counter() - tk
        sh = train_shadows(K, scn.y, float(est.lam), n_shadows, seed=seed + 1000, progress=progress)
        stat = log_abs_residual(answers, scn.y)
        scores = lira_scores(stat, sh)
        ev = evaluate(scores, labels)
        mae = float(np.mean(np.abs(answers[scn.public] - scn.y[scn.public])))
        cost = target.cost()
        rows.append({"lam": float(est.lam), "sigma": float(est.sigma), "kernel": kernel,
                     "n_members": int(labels.sum()), "n_nonmembers": int(n_pop - labels.sum()),
                     "n_shadows": n_shadows, "target_test_mae_kcal_mol": mae,
                     "median_abs_residual_members": float(np.median(np.abs(answers[scn.train] - scn.y[scn.train]))),
                     "median_abs_residual_nonmembers": float(np.median(np.abs(answers[scn.public] - scn.y[scn.public]))),
                     **{k: v for k, v in ev.items()},
                     "queries": int(n_pop), "query_seconds": query_s,
                     "shadow_seconds": sh.seconds + k_s, "deployment_cost": cost})
        curves[f"lambda {est.lam:g}"] = roc_points(scores, labels)
    return {"attack": "lira", "deployment": deployment, "population": n_pop, "population_source":
            data.provenance.get("source", "") if hasattr(data, "provenance") else "", "rows": rows, "roc": curves,
            "metric": "tpr_at_0.001_fpr (online LiRA, smallest lambda)",
            "value": rows[0]["lira_online"]["tpr_at_0.001_fpr"], "queries": int(n_pop) * len(lams)}


def write_outputs(res: dict[str, Any], out_dir: Any) -> dict[str, Any]:
    """lira.json (everything), lira.csv (one line per lambda x attack), lira_roc.csv, lira_roc.png."""
    import csv
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "lira.json", "csv": out / "lira.csv", "roc_csv": out / "lira_roc.csv",
             "png": out / "lira_roc.png"}
    paths["json"].write_text(json.dumps(res, indent=1))
    with paths["csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lambda", "attack", "auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr", "members", "nonmembers",
                    "shadows", "target_test_mae_kcal_mol"])
        for r in res["rows"]:
            for name in ("lira_online", "lira_offline", "loss_threshold", "chance"):
                e = r[name]
                w.writerow([r["lam"], name, e["auc"], e["tpr_at_0.001_fpr"], e["tpr_at_0.01_fpr"], r["n_members"],
                            r["n_nonmembers"], r["n_shadows"], r["target_test_mae_kcal_mol"]])
    with paths["roc_csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["setting", "attack", "fpr", "tpr"])
        for setting, per in res["roc"].items():
            for name, c in per.items():
                for f, t in zip(c["fpr"], c["tpr"]):
                    w.writerow([setting, name, f, t])
    plot_roc(res["roc"], str(paths["png"]),
             f"LiRA vs loss threshold, {res['rows'][0]['kernel']} KRR, {res['population']} QM9 molecules "
             f"(half members), {res['rows'][0]['n_shadows']} shadows")
    return paths
