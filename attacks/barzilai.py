"""Query-only reconstruction of Gaussian-kernel regression training data (Barzilai et al. 2025 style).

Barzilai et al. ("Querying kernel methods suffices for reconstructing their training data", 2025)
show that a kernel model f(q) = b + sum_i c_i k(q, x_i) is identified by its answers: for strictly
positive-definite kernels more than n (d + 2) queries determine the training points, and they
recover them by fitting a model of the same form to the answers. This module is that recipe for
the Gaussian kernel, with the three parts their attack needs besides the fit itself:

* **query design** (:func:`design_queries`): queries spread over the data region at the kernel's
  own scale -- the attacker's public points plus noise of norm ``noise_scale * sigma``, and random
  convex mixtures of two public points plus the same noise (covers the space *between* points,
  where the kernel bumps of neighbouring training points overlap and are told apart);
* **sigma estimation** (:func:`estimate_sigma`) when the width is not published: for each width on
  a log grid, a ridge fit with the public points as *fixed* centres; the width with the lowest error
  on held-out queries wins (cheap: a least-squares solve per width);
* **optimisation with restarts** (:func:`attack`): ``restarts`` free-centre fits (variable
  projection: centres optimised, coefficients and offset solved exactly at every step; Adam, then
  L-BFGS) from different random public points; the fit with the lowest error on held-out queries
  is kept. More centres than training points (``overparam``) make the landscape far easier;
  spurious centres end with negligible coefficients and are dropped by :func:`prune`.

Scored like every reconstruction here: a training point is recovered when a reconstructed centre
lies within a relative L2 error ``rel_tol`` of it; the chance baseline is the attacker's own public
points used as the reconstruction (the nearest public point).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from attacks.reconstruction import AttackError, FitResult, fit_centres, kernel_design, match_points
from secureml.models.krr import KernelRidge
from secureml.plot_style import PALETTE, new_figure, save

Oracle = Callable[[np.ndarray], np.ndarray]


def design_queries(pool: np.ndarray, n_queries: int, sigma: float, rng: np.random.Generator,
                   noise_scale: float = 1.0, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Queries around and between the attacker's public points at the kernel's scale."""
    n_near = n_queries // 2
    near = pool[rng.integers(0, len(pool), n_near)]
    a = pool[rng.integers(0, len(pool), n_queries - n_near)]
    b = pool[rng.integers(0, len(pool), n_queries - n_near)]
    w = rng.random((n_queries - n_near, 1))
    Q = np.concatenate([near, w * a + (1 - w) * b])
    # noise of norm ~ noise_scale * sigma: per coordinate sigma / sqrt(d), or in 435 dimensions every
    # query would land ~sqrt(d) widths from all data and be answered by the offset alone
    Q = Q + rng.normal(0.0, noise_scale * sigma / np.sqrt(pool.shape[1]), Q.shape)
    if lo is not None or hi is not None:
        Q = np.clip(Q, lo, hi)
    return Q


def _gauss(A: np.ndarray, B: np.ndarray, sigma: float) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] - 2 * A @ B.T + (B * B).sum(1)[None, :]
    return np.exp(-np.maximum(d2, 0.0) / (2 * sigma**2))


def estimate_sigma(Q: np.ndarray, y: np.ndarray, pool: np.ndarray, grid: np.ndarray | None = None,
                   n_centres: int = 200, ridge: float = 1e-8, seed: int = 0) -> tuple[float, dict[str, list]]:
    """Width with the lowest held-out error of a fixed-centre ridge fit (public points as centres).

    Returns (sigma, {"sigma": grid, "val_rel_error": errors}). The grid defaults to 40 widths over
    three decades around the median distance between public points.
    """
    rng = np.random.default_rng(seed)
    C = pool[rng.choice(len(pool), min(n_centres, len(pool)), replace=False)]
    if grid is None:
        sub = pool[rng.choice(len(pool), min(200, len(pool)), replace=False)]
        d = np.sqrt(np.maximum((sub * sub).sum(1)[:, None] - 2 * sub @ sub.T + (sub * sub).sum(1)[None, :], 0))
        med = float(np.median(d[np.triu_indices(len(sub), 1)]))
        grid = np.geomspace(med / 100, med * 10, 40)
    perm = rng.permutation(len(Q))
    tr, va = perm[: int(0.8 * len(Q))], perm[int(0.8 * len(Q)):]
    errs = []
    for s in grid:
        A = np.hstack([_gauss(Q, C, float(s)), np.ones((len(Q), 1))])
        At = A[tr]
        G = At.T @ At
        G[np.diag_indices_from(G)] += ridge * np.trace(G) / len(G)
        coef = np.linalg.solve(G, At.T @ y[tr])
        r = A[va] @ coef - y[va]
        errs.append(float(np.linalg.norm(r) / max(np.linalg.norm(y[va] - y[va].mean()), 1e-300)))
    best = float(grid[int(np.argmin(errs))])
    return best, {"sigma": [float(s) for s in grid], "val_rel_error": errs}


def fit_centres_and_width(Q: np.ndarray, y: np.ndarray, C0: np.ndarray, sigma0: float, *, adam_steps: int = 400,
                          lbfgs_steps: int = 100, lr: float | None = None, ridge: float = 1e-12
                          ) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Variable projection over free centres *and* log sigma (the width when it is not published).

    Coefficients and offset are solved exactly at every step, as in
    :func:`attacks.reconstruction.fit_centres`; Adam on (C, log sigma), then L-BFGS on both.
    Returns (centres, coef, intercept, sigma, relative loss).
    """
    import torch

    Qt = torch.as_tensor(np.asarray(Q, dtype=np.float64))
    t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    tn = (t * t).sum().clamp_min(1e-300)
    q2 = (Qt * Qt).sum(1, keepdim=True)
    C = torch.tensor(np.asarray(C0, dtype=np.float64), requires_grad=True)
    log_s = torch.tensor(float(np.log(sigma0)), dtype=torch.float64, requires_grad=True)

    def solve() -> tuple[Any, Any]:
        d2 = torch.clamp(q2 - 2.0 * Qt @ C.T + (C * C).sum(1)[None, :], min=0.0)
        A = torch.cat([torch.exp(-d2 / (2.0 * torch.exp(2 * log_s))), torch.ones(len(Qt), 1, dtype=Qt.dtype)], 1)
        G = A.T @ A
        G = G + ridge * torch.diagonal(G).mean().clamp_min(1e-300) * torch.eye(G.shape[0], dtype=G.dtype)
        coef = torch.linalg.solve(G, A.T @ t)
        r = A @ coef - t
        return (r * r).sum() / tn, coef

    opt = torch.optim.Adam([{"params": [C], "lr": lr if lr is not None else 0.05 * sigma0},
                            {"params": [log_s], "lr": 0.02}])
    for _ in range(adam_steps):
        opt.zero_grad()
        loss, _ = solve()
        loss.backward()
        opt.step()
    if lbfgs_steps > 0:
        lb = torch.optim.LBFGS([C, log_s], lr=1.0, max_iter=lbfgs_steps, line_search_fn="strong_wolfe",
                               tolerance_grad=1e-14, tolerance_change=1e-18, history_size=20)

        def closure() -> Any:
            lb.zero_grad()
            loss, _ = solve()
            loss.backward()
            return loss

        lb.step(closure)
    with torch.no_grad():
        loss, coef = solve()
    c = coef.numpy()
    return C.detach().numpy(), c[:-1], float(c[-1]), float(torch.exp(log_s.detach())), float(loss)


@dataclass
class BarzilaiResult:
    centres: np.ndarray
    coef: np.ndarray
    intercept: float
    sigma: float
    train_loss: float
    val_rel_error: float
    n_queries: int
    restart_losses: list[float] = field(default_factory=list)
    sigma_curve: dict[str, list] | None = None
    seconds: float = 0.0


def prune(res: BarzilaiResult, keep_fraction: float = 1e-3) -> np.ndarray:
    """Centres whose |coefficient| is at least ``keep_fraction`` of the largest (spurious ones vanish)."""
    a = np.abs(res.coef)
    return res.centres[a >= keep_fraction * a.max()] if a.size else res.centres


def attack(oracle: Oracle, pool: np.ndarray, n_queries: int, n_centres: int, *, sigma: float | None = None,
           restarts: int = 4, overparam: float = 2.0, adam_steps: int = 400, lbfgs_steps: int = 100,
           lr: float | None = None, noise_scale: float = 1.0, lo: float | None = None, hi: float | None = None,
           seed: int = 0, progress: Callable[[int], None] | None = None) -> BarzilaiResult:
    """Query ``oracle`` ``n_queries`` times (one batch) and fit the best of ``restarts`` free-centre models.

    ``n_centres``: the training-set size (published by the services) -- ``overparam`` times as many
    centres are fitted. ``sigma``: the kernel width if published, else estimated from the answers.
    """
    import torch

    if n_queries < 8 or n_centres < 1:
        raise AttackError("the attack needs >= 8 queries and >= 1 centre")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # the design needs a scale before sigma is known: the median public-point spacing, shrunk
    scale = sigma
    if scale is None:
        sub = pool[rng.choice(len(pool), min(200, len(pool)), replace=False)]
        d = np.sqrt(np.maximum((sub * sub).sum(1)[:, None] - 2 * sub @ sub.T + (sub * sub).sum(1)[None, :], 0))
        scale = float(np.median(d[np.triu_indices(len(sub), 1)])) / 4
    Q = design_queries(pool, n_queries, scale, rng, noise_scale, lo, hi)
    y = np.asarray(oracle(Q), dtype=np.float64)
    ok = np.isfinite(y)
    Q, y = Q[ok], y[ok]
    if len(y) < 8:
        raise AttackError("fewer than 8 queries were answered")
    perm = rng.permutation(len(Q))
    n_val = max(len(Q) // 10, 1)
    va, tr = perm[:n_val], perm[n_val:]
    m = max(int(round(overparam * n_centres)), 1)

    def one_fit(s: float, steps: int, lb: int, free_width: bool = False) -> tuple[float, Any]:
        C0 = pool[rng.choice(len(pool), m, replace=m > len(pool))] + \
            rng.normal(0, 0.1 * s / np.sqrt(pool.shape[1]), (m, pool.shape[1]))
        if free_width:
            C, coef, icpt, s, loss = fit_centres_and_width(Q[tr], y[tr], C0, s, adam_steps=steps, lbfgs_steps=lb,
                                                           lr=lr)
            fit = FitResult(C, coef, icpt, loss, [])
            if progress:
                progress(steps + lb)
        else:
            design = kernel_design(torch.as_tensor(Q[tr]), "gaussian", float(s))
            fit = fit_centres(design, y[tr], C0, intercept=True, adam_steps=steps, lbfgs_steps=lb,
                              lr=lr if lr is not None else 0.05 * float(s), progress=progress)
        fit.sigma = float(s)
        with torch.no_grad():
            pv = kernel_design(torch.as_tensor(Q[va]), "gaussian", float(s))(
                torch.as_tensor(fit.centres)).numpy() @ fit.coef + fit.intercept
        return float(np.linalg.norm(pv - y[va]) / max(np.linalg.norm(y[va] - y[va].mean()), 1e-300)), fit

    curve = None
    free = sigma is None
    if sigma is None:
        # coarse: fixed public centres over three decades; fine: short free-centre fits around it
        # (fixed centres favour too wide a kernel, since they sit between the training points)
        s0, curve = estimate_sigma(Q, y, pool, seed=seed)
        fine = s0 * np.geomspace(0.1, 1.5, 8)
        fine_err = [one_fit(float(s), max(adam_steps // 3, 50), lbfgs_steps // 3)[0] for s in fine]
        sigma = float(fine[int(np.argmin(fine_err))])
        curve = {**curve, "fine_sigma": fine.tolist(), "fine_val_rel_error": fine_err}
    best: BarzilaiResult | None = None
    losses = []
    for _ in range(restarts):
        # unknown width: the restarts start from the grid's best and optimise it with the centres
        val, fit = one_fit(float(sigma), adam_steps, lbfgs_steps, free_width=free)
        losses.append(val)
        if best is None or val < best.val_rel_error:
            best = BarzilaiResult(fit.centres, fit.coef, fit.intercept, fit.sigma, fit.loss, val, int(len(ok)))
    assert best is not None
    best.restart_losses = losses
    best.sigma_curve = curve
    best.seconds = time.perf_counter() - t0
    return best


def score(res: BarzilaiResult, true_X: np.ndarray, pool: np.ndarray, rel_tol: float = 1e-2) -> dict[str, Any]:
    """Recovered fraction (pruned centres) beside the chance baseline (nearest public point)."""
    m = match_points(true_X, prune(res), rel_tol)
    base = match_points(true_X, pool, rel_tol)
    return {"fraction_recovered": m["fraction_recovered"], "precision": m["precision"],
            "median_rel_error": float(np.median(m["rel_errors"])), "rel_tol": rel_tol,
            "baseline_nearest_public": base["fraction_recovered"],
            "baseline_median_rel_error": float(np.median(base["rel_errors"])),
            "queries": res.n_queries, "sigma_used": res.sigma, "val_rel_error": res.val_rel_error,
            "restart_val_errors": res.restart_losses, "seconds": res.seconds}


# ---------------------------------------------------------------------------------------------
# experiments: recovered fraction against queries and N
# ---------------------------------------------------------------------------------------------
def synthetic_model(n_train: int, d: int = 5, sigma: float = 1.0, lam: float = 1e-8, seed: int = 0,
                    n_public: int = 2000, box: float = 4.0) -> tuple[Any, np.ndarray, np.ndarray]:
    """A Gaussian KRR (the project's) on n points uniform in [0, box]^d with random labels, and
    ``n_public`` fresh points from the same distribution (the attacker's)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, box, (n_train, d))
    y = rng.normal(0, 1, n_train)
    est = KernelRidge("gaussian", sigma, lam).fit(X, y)
    return est, X, rng.uniform(0, box, (n_public, d))


def sweep(n_trains: tuple[int, ...] = (4, 8, 16, 32), query_factors: tuple[float, ...] = (0.5, 1, 2, 4, 8),
          d: int = 5, sigma: float = 1.0, estimate: bool = True, restarts: int = 4, seed: int = 0,
          progress: Callable[[int], None] | None = None, **fit: Any) -> list[dict[str, Any]]:
    """Recovered fraction for each N and each budget of ``factor x n (d + 2)`` queries (synthetic data)."""
    rows = []
    for n in n_trains:
        est, X, pool = synthetic_model(n, d, sigma, seed=seed)
        for f in query_factors:
            q = max(int(round(f * n * (d + 2))), 8)
            res = attack(est.predict, pool, q, n, sigma=None if estimate else sigma, restarts=restarts,
                         seed=seed, **fit)
            rows.append({"data": f"uniform [0,4]^{d}", "n_train": n, "d": d, "sigma_true": sigma,
                         "sigma_estimated": estimate, "restarts": restarts, "query_factor": f, "queries_over_n_d_plus_2": q / (n * (d + 2)),
                         **score(res, X, pool)})
            if progress:
                progress(1)
    return rows


def plot_sweep(rows: list[dict[str, Any]], path: str) -> None:
    """Recovered fraction against queries / (n (d + 2)), one line per N, chance dashed."""
    fig, ax = new_figure(figsize=(5.5, 4))
    for k, n in enumerate(sorted({r["n_train"] for r in rows})):
        rr = sorted((r for r in rows if r["n_train"] == n), key=lambda r: r["queries"])
        ax.plot([r["queries_over_n_d_plus_2"] for r in rr], [r["fraction_recovered"] for r in rr], "o-",
                color=PALETTE[k % len(PALETTE)], label=f"N = {n}")
        ax.plot([r["queries_over_n_d_plus_2"] for r in rr], [r["baseline_nearest_public"] for r in rr], ":",
                color=PALETTE[k % len(PALETTE)], lw=0.8)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("queries / (N (d + 2))  (Barzilai et al.: > 1 suffices in exact arithmetic)")
    ax.set_ylabel(f"training points recovered (rel. L2 < {rows[0]['rel_tol']:g})")
    est = "estimated" if rows[0]["sigma_estimated"] else "known"
    ax.set_title(f"Gaussian KRR, {rows[0]['data']}, sigma {rows[0]['sigma_true']:g} ({est}); "
                 "dotted: nearest public point", fontsize=7)
    ax.legend(fontsize=7)
    save(fig, path)
