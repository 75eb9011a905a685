"""Each attack as one function: scenario + target in, JSON-ready dict out.

Used by ``secureml attack``, ``secureml report leakage`` and the tests. Settings (sizes, budgets)
are arguments with defaults that run in seconds to a minute on a laptop CPU; docs/attacks.md
lists the exact commands behind every figure.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from attacks import barzilai, membership, ranking, reconstruction, whitebox
from attacks.chem import canonical_smiles
from attacks.reconstruction import AttackError
from attacks.scenario import Scenario
from attacks.targets import Target
from secureml.models.krr import KernelRidge

# Coulomb-matrix entries lie in [0, 0.5 * 9**2.4] (fluorine's diagonal) for QM9-type molecules:
# physics, so public even when a deployment announces no bounds.
CM_RANGE = (0.0, 0.5 * 9**2.4 + 1.0)


def cm_range(scn: Scenario) -> tuple[float, float]:
    """Physical range of CM entries for the heaviest element in the attacker's own molecules
    (QM9: fluorine, 98.4; QM7: sulfur, 389)."""
    zmax = max([9] + [int(np.max(c)) for c in scn.data.subset(scn.public[:2000]).charges if len(c)])
    return 0.0, 0.5 * zmax**2.4 + 1.0

Progress = Callable[[int], None] | None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Drop arrays so the dict is JSON-ready."""
    return {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}


# ---------------------------------------------------------------------------------------------
def whitebox_krr(target: Target, scn: Scenario, progress: Progress = None) -> dict[str, Any]:
    """Molecules from the training representations stored in an exact KRR model file."""
    if not target.white_box:
        raise AttackError(f"white-box extraction needs the model file; the {target.name} deployment "
                          "gives only predictions")
    ext = whitebox.extract_krr_molecules(target.model, progress)
    res = whitebox.score_extraction(ext, scn.data.subset(scn.train))
    base = whitebox.random_baseline(scn.data.subset(scn.public), scn.data.subset(scn.train),
                                    truth_smiles=res["reference_smiles"])
    return {"attack": "whitebox", **_clean(res), "random_baseline": base, "queries": 0,
            "metric": "fraction_smiles_exact", "value": res["fraction_smiles_exact"]}


def whitebox_rf(scn_factory: Callable[[int, int], Scenario], n_train: int = 4,
                features: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192), centres_per_point: int = 4,
                adam_steps: int = 600, lbfgs_steps: int = 150, rel_tol: float = 1e-2, seed: int = 0,
                progress: Progress = None) -> dict[str, Any]:
    """Training points from random-feature weights, against the number of features F.

    ``scn_factory(n_train, F)`` returns a scenario whose model is a fitted RandomFourierRidge.
    Also scores membership from the weights over a pool of the members plus 500 public molecules.
    """
    rows = []
    for F in features:
        scn = scn_factory(n_train, F)
        est = scn.model.estimator
        d = scn.X.shape[1]
        t0 = time.perf_counter()
        fit = whitebox.invert_random_features(est, centres_per_point * n_train, scn.X[scn.public],
                                              adam_steps=adam_steps, lbfgs_steps=lbfgs_steps, seed=seed)
        inv = whitebox.score_rf_inversion(fit, scn.X_train, rel_tol)
        pool = np.concatenate([scn.X_train, scn.X[scn.public[:500]]])
        lab = np.r_[np.ones(n_train), np.zeros(min(500, len(scn.public)))]
        s = whitebox.pool_membership_from_weights(est, pool)
        rows.append({"n_features": F, "features_over_nd": F / (n_train * (d + 1)), **inv,
                     "pool_membership_precision_at_n": float(lab[np.argsort(-s)[:n_train]].mean()),
                     "seconds": time.perf_counter() - t0})
        if progress:
            progress(1)
    return {"attack": "rf-whitebox", "n_train": n_train, "curve": rows, "queries": 0,
            "metric": "fraction_recovered", "value": rows[-1]["fraction_recovered"]}


# ---------------------------------------------------------------------------------------------
def _molecule_recovery(centres: np.ndarray, scn: Scenario, rel_tol: float) -> dict[str, Any]:
    """Turn each training point's nearest reconstructed centre into a molecule; compare SMILES."""
    m = reconstruction.match_points(scn.X_train, centres, rel_tol)
    size = int(scn.model.representation.get_params()["size"])
    ext = whitebox.molecules_from_features(centres[m["nearest"]], size)
    truth = [canonical_smiles(scn.data.smiles[i]) for i in scn.train]
    ok = np.array([a != "" and a == b for a, b in zip(ext.smiles, truth)])
    return {"fraction_molecules_exact": float(ok.mean())}


def query_reconstruction(target: Target, scn: Scenario, *, method: str = "auto", budget: int = 4096,
                         h: float = 1.0, refine: int = 8, depth: int = 4, rel_tols: tuple[float, ...] = (1e-3, 1e-2),
                         seed: int = 0, progress: Progress = None, membership: str = "measure",
                         **fit_opts: Any) -> dict[str, Any]:
    """Query-only reconstruction of the target's training points (Barzilai et al. 2025).

    ``method``: ``kink`` (exact, Laplacian kernel), ``expansion`` (free-centre fit, any kernel),
    ``auto`` (kink for Laplacian models, expansion otherwise). ``budget``: queries for the
    expansion fit; the kink attack's query count follows from ``h``, ``refine`` and ``depth``.
    ``membership``: the kink attack's assembly of shared coordinates (``measure``, the strongest;
    ``grouped``; ``pairwise``; :func:`attacks.reconstruction.kink_attack`).
    """
    pub = target.public
    kernel = pub.get("kernel")
    if method == "auto":
        method = "kink" if kernel == "laplacian" else "expansion"
    n_hint = pub.get("n_train")
    t0 = time.perf_counter()
    if method == "kink":
        if kernel != "laplacian":
            raise AttackError("the kink attack needs an L1 Laplacian kernel (the Gaussian has no kinks)")
        lo, hi = cm_range(scn)
        res = reconstruction.kink_attack(target.predict, int(pub["n_features"]), lo, hi, h=h, refine=refine,
                                         depth=depth, n_hint=n_hint, membership=membership, progress=progress)
        centres, n_queries = res.centres, res.n_queries
        extra = {"membership": membership, "membership_queries": int(res.membership_queries), "kinks": res.n_kinks, "merged_kinks": res.n_merged, "unassigned_coordinates": res.unassigned,
                 "sigma_estimated": res.sigma, "h": h, "refine": refine, "depth": depth}
    elif method == "expansion":
        lo = pub.get("feature_lo", cm_range(scn)[0])
        hi = pub.get("feature_hi", cm_range(scn)[1])
        n_c = int(fit_opts.pop("n_centres", n_hint or 16))
        fit = reconstruction.expansion_attack(
            target.predict, scn.X[scn.public], budget, n_c, str(kernel), float(pub["sigma"]), seed=seed,
            lo=lo, hi=hi, progress=progress, **fit_opts)
        centres, n_queries = fit.centres, budget
        extra = {"final_relative_loss": fit.loss, "n_centres": n_c}
    else:
        raise AttackError(f"unknown reconstruction method {method!r} (kink, expansion, auto)")
    out: dict[str, Any] = {"attack": "reconstruct", "method": method, "kernel": kernel,
                           "n_train": int(len(scn.train)), "queries": int(n_queries),
                           "n_features": int(scn.X.shape[1]), "seconds": time.perf_counter() - t0, **extra}
    for tol in rel_tols:
        m = reconstruction.match_points(scn.X_train, centres, tol)
        out[f"fraction_recovered_rel{tol:g}"] = m["fraction_recovered"]
        out[f"precision_rel{tol:g}"] = m["precision"]
    # random baseline: the attacker's public molecules as "reconstructions"
    base = reconstruction.match_points(scn.X_train, scn.X[scn.public], max(rel_tols))
    out["random_baseline"] = base["fraction_recovered"]
    out.update(_molecule_recovery(centres, scn, max(rel_tols)))
    out["metric"] = f"fraction_recovered_rel{min(rel_tols):g}"
    out["value"] = out[out["metric"]]
    return out


def barzilai_reconstruction(target: Target, scn: Scenario, *, budget: int | None = None, restarts: int = 3,
                            estimate_sigma: bool = False, adam_steps: int = 300, lbfgs_steps: int = 100,
                            rel_tol: float = 1e-2, seed: int = 0, progress: Progress = None) -> dict[str, Any]:
    """Barzilai et al. 2025-style query reconstruction of a Gaussian model's training representations.

    ``budget``: queries (default 4 n (d + 2)); the width is the published one unless
    ``estimate_sigma``. Chance baseline: the nearest of the attacker's public molecules.
    """
    pub = target.public
    if pub.get("kernel") != "gaussian":
        raise AttackError("this attack is written for the Gaussian kernel (the kink attack covers the Laplacian)")
    n = int(pub.get("n_train") or len(scn.train))
    d = int(scn.X.shape[1])
    q = int(budget or 4 * n * (d + 2))
    lo, hi = pub.get("feature_lo", cm_range(scn)[0]), pub.get("feature_hi", cm_range(scn)[1])
    pool = scn.X[scn.public]
    res = barzilai.attack(target.predict, pool, q, n, sigma=None if estimate_sigma else float(pub["sigma"]),
                          restarts=restarts, adam_steps=adam_steps, lbfgs_steps=lbfgs_steps, lo=lo, hi=hi,
                          seed=seed, progress=progress)
    sc = barzilai.score(res, scn.X_train, pool, rel_tol)
    return {"attack": "barzilai", "kernel": "gaussian", "n_train": n, "n_features": d,
            "sigma_published": float(pub["sigma"]), "sigma_estimated": estimate_sigma, **sc,
            "random_baseline": sc["baseline_nearest_public"], "queries": q,
            "queries_over_n_d_plus_2": q / (n * (d + 2)),
            "metric": f"fraction_recovered_rel{rel_tol:g}", "value": sc["fraction_recovered"]}


# ---------------------------------------------------------------------------------------------
def _candidates(scn: Scenario, n_each: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members (from the training set) and non-members (public molecules), and a shadow pool."""
    rng = np.random.default_rng(seed)
    n_each = min(n_each, len(scn.train), len(scn.public) // 2)
    mem = rng.choice(scn.train, n_each, replace=False)
    pub = rng.permutation(scn.public)
    non, shadow = pub[:n_each], pub[n_each:]
    return np.concatenate([mem, non]), np.r_[np.ones(n_each), np.zeros(n_each)].astype(int), shadow


def mia(target: Target, scn: Scenario, *, n_each: int = 300, n_shadows: int = 4, seed: int = 0,
        progress: Progress = None) -> dict[str, Any]:
    """Loss-threshold and shadow-model membership inference; AUC and TPR at 1% FPR."""
    idx, lab, shadow = _candidates(scn, n_each, seed)
    X, y = scn.X[idx], scn.y[idx]
    answers = target.predict(X)  # one query per candidate, shared by both attacks
    answers = np.where(np.isfinite(answers), answers, np.inf)  # refused -> "not a member"

    def cached(_: np.ndarray) -> np.ndarray:
        return answers

    est = target.estimator
    pub = target.public
    t0 = time.perf_counter()
    lt = membership.loss_threshold_attack(cached, X, y, lab)
    sh = membership.shadow_attack(
        cached, X, y, lab, scn.X[shadow], scn.y[shadow],
        lambda: KernelRidge(str(pub.get("kernel", "gaussian")), float(pub.get("sigma", est.sigma)),
                            float(getattr(est, "lam", 1e-8))),
        n_shadows=n_shadows, shadow_size=min(len(shadow) // 2, len(scn.train)), seed=seed, progress=progress)
    return {"attack": "mia", "n_members": int(lab.sum()), "n_nonmembers": int((1 - lab).sum()),
            "queries": int(len(X)), "loss_threshold": lt.summary(), "shadow": sh.summary(),
            "seconds": time.perf_counter() - t0,
            "metric": "auc_loss_threshold", "value": lt.auc}


def rank(target: Target, scn: Scenario, *, score: str = "auto", pool_size: int = 1000, n_members: int = 100,
         ks: tuple[int, ...] = (50, 100, 200), seed: int = 0) -> dict[str, Any]:
    """Candidate ranking by a prediction-only score; precision@K vs the random ranking."""
    rng = np.random.default_rng(seed)
    pub = target.public
    if score == "auto":
        score = "label"
    n_members = min(n_members, len(scn.train))
    n_non = min(pool_size - n_members, len(scn.public))
    pool = np.concatenate([rng.choice(scn.train, n_members, replace=False),
                           rng.choice(scn.public, n_non, replace=False)])
    lab = np.r_[np.ones(n_members), np.zeros(n_non)].astype(int)

    def predict(Q: np.ndarray) -> np.ndarray:
        a = target.predict(Q)
        return np.where(np.isfinite(a), a, np.inf)

    lo, hi = pub.get("feature_lo"), pub.get("feature_hi")
    if score == "kink" and pub.get("kernel") != "laplacian":
        raise AttackError("the kink score needs an L1 Laplacian kernel")
    reference = None
    if score == "reference":
        # the attacker's own model, same public hyperparameters, on public molecules outside the pool

        rest = np.setdiff1d(scn.public, pool)
        if rest.size < 50:
            raise AttackError("the reference score needs public molecules outside the pool; use a smaller pool")
        reference = KernelRidge(str(pub.get("kernel", "gaussian")), float(pub["sigma"]),
                                float(getattr(target.estimator, "lam", 1e-8))).fit(scn.X[rest], scn.y[rest])
    t0 = time.perf_counter()
    res = ranking.rank_candidates(predict, scn.X[pool], lab, score, y=scn.y[pool],
                                  sigma=float(pub.get("sigma", 1.0)), reference=reference, ks=ks, lo=lo, hi=hi)
    return {"attack": "rank", "score": score, "pool_size": int(len(pool)), "n_members": n_members,
            **res.summary(), "seconds": time.perf_counter() - t0,
            "metric": f"precision_at_{ks[0]}", "value": res.precision[ks[0]]}
