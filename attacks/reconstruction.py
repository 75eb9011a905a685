"""Query-only reconstruction of a kernel model's training representations.

A kernel model answers f(q) = b + sum_i a_i k(x_i, q). Barzilai et al. (2025, "Querying kernel
methods suffices for reconstructing their training data") show that answers at enough chosen
queries (more than n (d + 2) for strictly positive-definite kernels) determine the training points
x_i, and recover them by fitting a kernel expansion with free centres and coefficients to the
answers. Two attacks live here:

* :func:`fit_centres` / :func:`expansion_attack` -- that generic fit: free centres C (m, d),
  coefficients eliminated by (ridge) least squares at every step (variable projection), Adam then
  L-BFGS on C in torch. The same fitter inverts random-feature weights (:mod:`attacks.whitebox`).
* :func:`kink_attack` -- an exact attack on the L1 Laplacian kernel exp(-|x - q|_1 / sigma), the
  usual kernel for Coulomb matrices. That kernel factorises over coordinates, so along a line that
  moves one coordinate t of the query, f is a sum of terms c_i exp(-|x_ik - t| / sigma): smooth
  except for a kink at every training coordinate x_ik. The three-point filter
  F(t) = f(t - h) + f(t + h) - 2 cosh(h / sigma) f(t) annihilates exp(+-t / sigma), so on a grid
  of step h it is zero except in the cells holding a kink, and two neighbouring filter values give
  the kink's position and weight in closed form. A training point's weight on every axis, divided
  by exp(-|x_ik - q0_k| / sigma), is the same number s_i = a_i k(x_i, q0) (its "signature"), which
  ties the coordinates found on different axes into points. Coordinates shared by several points
  (zero padding, the few discrete diagonal values of a Coulomb matrix) give merged kinks whose
  weight is a sum of signatures; a two-axis membership test (15 queries per point and kink)
  splits them.

The Gaussian kernel has no kinks: along a line its answers are a wide Gaussian blur of the points,
and recovering them is a deconvolution that float64 answers do not support at the widths that
make a good model (measured in docs/attacks.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from secureml.errors import SecureMLError

Oracle = Callable[[np.ndarray], np.ndarray]


class AttackError(SecureMLError):
    """An attack cannot run on this target/model (wrong kernel, missing access, bad settings)."""


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def match_points(true_X: np.ndarray, rec_X: np.ndarray, rel_tol: float = 1e-3) -> dict[str, Any]:
    """How many true points have a reconstructed point within ``rel_tol`` (relative L2 error).

    Returns fraction_recovered (of the true points), precision (fraction of reconstructed points that
    are within tolerance of some true point), the per-point relative errors and the nearest index.
    """
    T = np.atleast_2d(np.asarray(true_X, dtype=np.float64))
    R = np.atleast_2d(np.asarray(rec_X, dtype=np.float64))
    if R.size == 0:
        return {"fraction_recovered": 0.0, "precision": 0.0, "n_true": len(T), "n_reconstructed": 0,
                "rel_errors": np.full(len(T), np.inf), "nearest": np.full(len(T), -1)}
    d2 = (T * T).sum(1)[:, None] - 2 * T @ R.T + (R * R).sum(1)[None, :]
    d = np.sqrt(np.maximum(d2, 0.0))
    nearest = d.argmin(1)
    rel = d[np.arange(len(T)), nearest] / np.maximum(np.linalg.norm(T, axis=1), 1e-300)
    rel_r = d.min(0) / np.maximum(np.linalg.norm(T[d.argmin(0)], axis=1), 1e-300)
    return {
        "fraction_recovered": float(np.mean(rel < rel_tol)),
        "precision": float(np.mean(rel_r < rel_tol)),
        "n_true": int(len(T)),
        "n_reconstructed": int(len(R)),
        "rel_errors": rel,
        "nearest": nearest,
    }


# ---------------------------------------------------------------------------------------------
# the generic fit (variable projection over free centres)
# ---------------------------------------------------------------------------------------------
def kernel_design(Q: Any, kernel: str, sigma: float) -> Callable[[Any], Any]:
    """centres (m, d) -> kernel matrix (n_queries, m) as a differentiable torch function."""
    import torch

    if kernel == "gaussian":
        q2 = (Q * Q).sum(1, keepdim=True)

        def design(C: Any) -> Any:
            d2 = q2 - 2.0 * Q @ C.T + (C * C).sum(1)[None, :]
            return torch.exp(-torch.clamp(d2, min=0.0) / (2.0 * sigma**2))
    elif kernel == "laplacian":
        def design(C: Any) -> Any:
            return torch.exp(-torch.cdist(Q, C, p=1) / sigma)
    else:
        raise AttackError(f"unknown kernel {kernel!r}")
    return design


@dataclass
class FitResult:
    centres: np.ndarray
    coef: np.ndarray
    intercept: float
    loss: float  # final relative squared residual ||A c - t||^2 / ||t||^2
    history: list[float] = field(default_factory=list)


def fit_centres(design: Callable[[Any], Any], target: np.ndarray, C0: np.ndarray, *,
                intercept: bool = False, adam_steps: int = 500, lr: float = 0.5,
                lbfgs_steps: int = 100, ridge: float = 1e-12, device: str = "cpu",
                progress: Callable[[int], None] | None = None) -> FitResult:
    """Fit target ~= design(C) @ coef (+ intercept) over free centres C, coef by least squares.

    The coefficients are linear given C, so they are solved exactly at every step (ridge
    ``ridge`` relative to the mean squared column norm keeps the solve defined when centres
    collide) and only C is optimised: Adam for ``adam_steps`` (robust far from a solution), then
    L-BFGS for ``lbfgs_steps`` (fast close to one). float64 throughout: the attack lives on small
    differences between answers.
    """
    import torch

    t = torch.as_tensor(np.asarray(target, dtype=np.float64), device=device)
    tn = (t * t).sum().clamp_min(1e-300)
    C = torch.tensor(np.asarray(C0, dtype=np.float64), device=device, requires_grad=True)

    def solve(Cc: Any) -> tuple[Any, Any, Any]:
        A = design(Cc)
        if intercept:
            A = torch.cat([A, torch.ones(A.shape[0], 1, dtype=A.dtype, device=A.device)], 1)
        G = A.T @ A
        reg = ridge * torch.diagonal(G).mean().clamp_min(1e-300)
        G = G + reg * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
        coef = torch.linalg.solve(G, A.T @ t)
        r = A @ coef - t
        return (r * r).sum() / tn, coef, A

    history: list[float] = []
    opt = torch.optim.Adam([C], lr=lr)
    for step in range(adam_steps):
        opt.zero_grad()
        loss, _, _ = solve(C)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if progress:
            progress(1)
    if lbfgs_steps > 0:
        lb = torch.optim.LBFGS([C], lr=1.0, max_iter=lbfgs_steps, line_search_fn="strong_wolfe",
                               tolerance_grad=1e-14, tolerance_change=1e-18, history_size=20)

        def closure() -> Any:
            lb.zero_grad()
            loss, _, _ = solve(C)
            loss.backward()
            return loss

        lb.step(closure)
        if progress:
            progress(lbfgs_steps)
    with torch.no_grad():
        loss, coef, _ = solve(C)
    history.append(float(loss))
    coef_np = coef.cpu().numpy()
    icpt = float(coef_np[-1]) if intercept else 0.0
    return FitResult(C.detach().cpu().numpy(), coef_np[:-1] if intercept else coef_np, icpt, float(loss), history)


def random_queries(pool: np.ndarray, n_queries: int, noise: float, rng: np.random.Generator,
                   lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Queries near the data: public representations plus Gaussian noise, clipped to [lo, hi]."""
    Q = pool[rng.integers(0, len(pool), n_queries)] + rng.normal(0.0, noise, (n_queries, pool.shape[1]))
    if lo is not None or hi is not None:
        Q = np.clip(Q, lo, hi)
    return Q


def expansion_attack(oracle: Oracle, pool: np.ndarray, n_queries: int, n_centres: int, kernel: str,
                     sigma: float, *, offset: float | None = None, noise: float = 5.0, seed: int = 0,
                     adam_steps: int = 300, lbfgs_steps: int = 100, lr: float = 0.5,
                     lo: float | None = None, hi: float | None = None,
                     progress: Callable[[int], None] | None = None) -> FitResult:
    """Barzilai-style reconstruction: query near public data, fit free centres to the answers.

    ``pool``: public representations the attacker owns (never the training set) -- queries are
    drawn around them and the centres start at random members. ``offset``: the model's constant
    b if known (else it is fitted as an intercept).
    """
    rng = np.random.default_rng(seed)
    Q = random_queries(pool, n_queries, noise, rng, lo, hi)
    y = np.asarray(oracle(Q), dtype=np.float64)
    import torch

    Qt = torch.as_tensor(Q)
    design = kernel_design(Qt, kernel, sigma)
    C0 = pool[rng.choice(len(pool), n_centres, replace=n_centres > len(pool))]
    target = y - offset if offset is not None else y
    return fit_centres(design, target, C0, intercept=offset is None, adam_steps=adam_steps,
                       lbfgs_steps=lbfgs_steps, lr=lr, progress=progress)


# ---------------------------------------------------------------------------------------------
# exact attack on the Laplacian (L1) kernel: kinks along coordinate lines
# ---------------------------------------------------------------------------------------------
@dataclass
class KinkResult:
    centres: np.ndarray  # (n_found, d) reconstructed training representations
    coef: np.ndarray  # their dual coefficients a_i
    signatures: np.ndarray  # s_i = a_i k(x_i, q0)
    sigma: float
    offset: float
    n_queries: int
    n_kinks: int
    n_merged: int  # kinks that stayed unresolved at the finest grid
    unassigned: int  # (point, axis) coordinates the assembly could not place (set to the base point)


def _kink_filter(phi: np.ndarray, h: float, sigma: float) -> np.ndarray:
    """F_j = phi_{j-1} + phi_{j+1} - 2 cosh(h/sigma) phi_j at the interior grid points."""
    return phi[..., :-2] + phi[..., 2:] - 2.0 * math.cosh(h / sigma) * phi[..., 1:-1]


def _solve_cell(fa: np.ndarray, fb: np.ndarray, h: float | np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """One kink in a cell of width h from the filter values at its two ends.

    A term c exp(-|t - u| / sigma) with u = t_j + delta gives F_j = -2c sinh((h - delta)/sigma) and
    F_{j+1} = -2c sinh(delta/sigma); with r = F_{j+1}/F_j, tanh(delta/sigma) =
    r sinh(H) / (1 + r cosh(H)) where H = h/sigma.
    """
    H = np.asarray(h, dtype=np.float64) / sigma
    r = fb / fa
    a = np.arctanh(np.clip(r * np.sinh(H) / (1.0 + r * np.cosh(H)), -1 + 1e-16, 1 - 1e-16))
    delta = a * sigma
    c = -(fa + fb) / (2.0 * (np.sinh(H - a) + np.sinh(a)))
    return delta, c


def kink_attack(oracle: Oracle, n_features: int, lo: float, hi: float, *, h: float = 1.0,
                refine: int = 16, depth: int = 2, sigma: float | None = None,
                offset: float | None = None, n_hint: int | None = None, noise: float = 0.0,
                far: float = 1e7, max_batch: int = 65536,
                progress: Callable[[int], None] | None = None) -> KinkResult:
    """Reconstruct the training points of a Laplacian-kernel model from its answers alone.

    Args:
        oracle: query -> answer (the target's ``predict``).
        n_features: representation width d.
        lo, hi: range the training coordinates lie in (public: feature bounds, or the physics of
            the representation; for Coulomb matrices [0, 0.5 * 9^2.4]).
        h: coarse grid step; ``refine``: subdivision of a cell holding several kinks;
            ``depth``: how many times to subdivide. Queries ~ d (hi - lo) / h + kinks * refine * depth.
        sigma: kernel width if public (else estimated from the answers below ``lo``).
        offset: the model's constant b if known (else one far query reads it: all kernels ~ 0 there).
        n_hint: number of training points if public (the OT protocol publishes it).
        noise: absolute error of the answers (0 for float64 APIs); sets the detection threshold.

    Steps:
        1. b from a far query; sigma from two grid points below ``lo`` (all kinks lie above).
        2. every coordinate axis k: query q0 + t e_k on the grid t in [lo - 2h, hi + 2h].
        3. filter; runs of non-zero values = cells with kinks; each run is re-queried on a grid
           ``refine`` times finer, ``depth`` times; at the finest grid a run of one or two values
           of one sign is one kink (closed form), anything else a merged kink.
        4. weight -> signature s = c exp(-|u - lo| / sigma); signatures that recur on several axes
           at several distinct positions are the training points.
        5. each axis: singleton kinks go to the point with the same signature; the remaining points
           are tested against the remaining (merged) kinks (:func:`_assemble`).
        6. a_i = s_i exp(|x_i - q0|_1 / sigma).
    """
    d = int(n_features)
    n_q = 0

    def ask(Q: np.ndarray) -> np.ndarray:
        nonlocal n_q
        out = np.empty(len(Q))
        for s in range(0, len(Q), max_batch):
            out[s:s + max_batch] = np.asarray(oracle(Q[s:s + max_batch]), dtype=np.float64)
        n_q += len(Q)
        if progress:
            progress(len(Q))
        return out

    base = np.full(d, float(lo))
    if offset is None:
        offset = float(ask(np.full((1, d), float(far)))[0])

    def line_queries(axes: np.ndarray, grids: list[np.ndarray]) -> np.ndarray:
        sizes = [len(g) for g in grids]
        Q = np.repeat(base[None, :], sum(sizes), axis=0)
        rows = np.arange(sum(sizes))
        Q[rows, np.repeat(axes, sizes)] = np.concatenate(grids)
        return Q

    # step 2: coarse grid on every axis
    t = np.arange(lo - 2 * h, hi + 2 * h + 1e-9, h)
    phi = (ask(line_queries(np.arange(d), [t] * d)) - offset).reshape(d, len(t))
    # step 1: all kinks lie at >= lo, so below lo every term is C e^{t/sigma}
    if sigma is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            est = h / np.log(phi[:, 1] / phi[:, 0])
        est = est[np.isfinite(est) & (est > 0)]
        if est.size == 0:
            raise AttackError("cannot estimate the kernel width: answers below the data range are flat")
        sigma = float(np.median(est))
    scale = float(np.abs(phi).max()) or 1.0
    thresh = max(1e-9 * scale, 20.0 * noise)

    kinks_axis: list[int] = []
    kinks_u: list[float] = []
    kinks_c: list[float] = []
    kinks_single: list[bool] = []
    n_merged = 0

    # segments to analyse: (axis, grid, phi on grid, level)
    segments = [(k, t, phi[k], 0) for k in range(d)]
    while segments:
        pending_axes: list[int] = []
        pending_grids: list[np.ndarray] = []
        pending_levels: list[int] = []
        for axis, grid, vals, level in segments:
            hh = grid[1] - grid[0]
            F = _kink_filter(vals, hh, sigma)
            nz = np.abs(F) > thresh
            if not nz.any():
                continue
            # runs of consecutive non-zero filter values
            edges = np.diff(np.concatenate([[0], nz.astype(np.int8), [0]]))
            starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            for j0, j1 in zip(starts, stops):
                run = F[j0:j1]
                centre = grid[1 + j0]
                if len(run) == 1:
                    kinks_axis.append(axis)
                    kinks_u.append(float(centre))
                    kinks_c.append(float(-run[0] / (2.0 * math.sinh(hh / sigma))))
                    kinks_single.append(True)
                elif level < depth:
                    # not yet at the finest grid: two kinks can hide in one run, so always zoom in
                    a, b = grid[j0], grid[min(j1 + 1, len(grid) - 1)]
                    pending_axes.append(axis)
                    pending_grids.append(np.linspace(a, b, int(round((b - a) / (hh / refine))) + 1))
                    pending_levels.append(level + 1)
                elif len(run) == 2 and np.sign(run[0]) == np.sign(run[1]):
                    delta, c = _solve_cell(run[:1], run[1:], hh, sigma)
                    kinks_axis.append(axis)
                    kinks_u.append(float(centre + delta[0]))
                    kinks_c.append(float(c[0]))
                    kinks_single.append(True)
                else:
                    # unresolved: keep the total weight at the weighted centre of the run
                    w = np.abs(run)
                    kinks_axis.append(axis)
                    kinks_u.append(float(np.sum(grid[1 + j0:1 + j1] * w) / w.sum()))
                    kinks_c.append(float(-run.sum() / (2.0 * math.sinh(hh / sigma))))
                    kinks_single.append(False)
                    n_merged += 1
        segments = []
        if pending_axes:
            vals = ask(line_queries(np.asarray(pending_axes), pending_grids)) - offset
            pos = 0
            for axis, grid, level in zip(pending_axes, pending_grids, pending_levels):
                segments.append((axis, grid, vals[pos:pos + len(grid)], level))
                pos += len(grid)

    ax = np.asarray(kinks_axis, dtype=int)
    u = np.asarray(kinks_u)
    c = np.asarray(kinks_c)
    single = np.asarray(kinks_single, dtype=bool)
    W = c * np.exp(-np.abs(u - lo) / sigma)
    h_fine = h / refine**depth
    sig = _signatures(ax, u, W, single, n_hint)
    centres, unassigned = _assemble(ax, u, W, sig, d, base, sigma, ask, offset, h_test_max=max(h, h_fine))
    coef = sig * np.exp(np.abs(centres - base).sum(1) / sigma)
    return KinkResult(centres, coef, sig, float(sigma), float(offset), n_q, int(len(u)), n_merged, unassigned)


def _group(values: np.ndarray, rtol: float) -> np.ndarray:
    """Labels grouping sorted-adjacent values whose relative gap is below rtol."""
    if values.size == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(values)
    v = values[order]
    gap = np.abs(np.diff(v)) > rtol * np.maximum(np.abs(v[1:]), np.abs(v[:-1]))
    labels_sorted = np.concatenate([[0], np.cumsum(gap)])
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels


def _signatures(ax: np.ndarray, u: np.ndarray, W: np.ndarray, single: np.ndarray,
                n_hint: int | None, rtol: float = 1e-7) -> np.ndarray:
    """Signatures of the training points among the kink weights (step 4)."""
    keep = single & np.isfinite(W) & (W != 0)
    labels = _group(W[keep], rtol)
    if labels.size == 0:
        return np.zeros(0)
    n_groups = int(labels.max()) + 1
    kw, ku, kax = W[keep], u[keep], ax[keep]
    # per group (vectorised: at N = 1,000 there are ~10^5 groups, a Python loop over them is O(n^2)):
    # distinct axes, distinct positions, mean weight. A merged weight (e.g. all zero-padded points on
    # padding axes) recurs at one position; a real point's weight at several coordinate values.
    ga = np.unique(labels.astype(np.int64) * (int(kax.max()) + 1) + kax)
    axes_per = np.bincount(ga // (int(kax.max()) + 1), minlength=n_groups)
    gl = np.unique(np.stack([labels.astype(np.float64), np.round(ku, 9)], axis=1), axis=0)
    locs_per = np.bincount(gl[:, 0].astype(np.int64), minlength=n_groups)
    mean_w = np.bincount(labels, weights=kw, minlength=n_groups) / np.bincount(labels, minlength=n_groups)
    # a real point's weight recurs at many coordinate values (one per non-shared entry); a sum of
    # weights (a merged kink) only where the same subset of points shares a value, i.e. rarely
    cand = np.flatnonzero((axes_per >= 2) & (locs_per >= 3))
    if cand.size == 0:
        return np.zeros(0)
    cut = max(3.0, 0.15 * float(np.percentile(locs_per[cand], 90)))
    cand = cand[locs_per[cand] >= cut]
    cand = cand[np.argsort(-locs_per[cand], kind="stable")]
    if n_hint is not None:
        cand = cand[:n_hint]
    return mean_w[cand]


def _assemble(ax: np.ndarray, u: np.ndarray, W: np.ndarray, sig: np.ndarray, d: int, base: np.ndarray,
              sigma: float, ask: Callable[[np.ndarray], np.ndarray], offset: float, h_test_max: float = 1.0,
              rtol: float = 1e-6) -> tuple[np.ndarray, int]:
    """Coordinates of every signature on every axis (step 5).

    Singletons: a kink whose weight equals one signature gives that point its coordinate.
    Merged kinks (several points sharing a value) are split by a membership test that costs 15
    queries per (point, kink): a 5 x 3 grid moving axis k around the kink u and another axis l
    around the point's known, isolated coordinate x_il. The three-point filter along l keeps only
    point i; the filter along k then sums to 4 sinh^2(h/sigma) s_i exp((|u - q0_k| +
    |x_il - q0_l|)/sigma) if point i has a kink within h of u, and 0 otherwise; the two non-zero
    values also give the point's exact coordinate (closed form, as on the coarse scan).
    """
    n = len(sig)
    X = np.full((n, d), np.nan)
    sing = np.zeros((n, d), dtype=bool)  # coordinate set by a singleton kink (usable for tests)
    if n == 0:
        return np.repeat(base[None, :], 0, axis=0), 0
    order = np.argsort(ax, kind="stable")
    ax, u, W = ax[order], u[order], W[order]
    bounds = np.searchsorted(ax, np.arange(d + 1))
    leftovers: list[tuple[int, np.ndarray, np.ndarray]] = []  # (axis, kink positions, points)
    for k in range(d):
        ku, kw = u[bounds[k]:bounds[k + 1]], W[bounds[k]:bounds[k + 1]]
        if ku.size == 0:
            continue
        free = np.ones(n, dtype=bool)
        open_k = np.ones(ku.size, dtype=bool)
        close = np.abs(kw[:, None] - sig[None, :]) <= rtol * np.abs(sig)[None, :]
        for j in np.flatnonzero(close.any(1)):
            cands = np.flatnonzero(close[j] & free)
            if cands.size:
                i = cands[np.argmin(np.abs(kw[j] - sig[cands]))]
                X[i, k] = ku[j]
                sing[i, k] = True
                free[i] = False
                open_k[j] = False
        rest_k, rest_p = np.flatnonzero(open_k), np.flatnonzero(free)
        if rest_p.size and rest_k.size == 1:
            X[rest_p, k] = ku[rest_k[0]]
        elif rest_p.size and rest_k.size > 1:
            leftovers.append((k, ku[rest_k], rest_p))

    if leftovers:
        # isolation of each known coordinate from every other kink on its axis
        iso = np.zeros((n, d))
        for k in range(d):
            ku = np.sort(u[bounds[k]:bounds[k + 1]])
            known = sing[:, k]
            if ku.size == 0 or not known.any():
                continue
            pos = np.searchsorted(ku, X[known, k])
            left = np.abs(X[known, k] - ku[np.clip(pos - 1, 0, ku.size - 1)])
            right = np.abs(ku[np.clip(pos + 1, 0, ku.size - 1)] - X[known, k])
            # the point's own kink is at distance ~0: the neighbours are pos-1 and pos+1
            left[pos == 0] = np.inf
            right[pos >= ku.size - 1] = np.inf
            iso[known, k] = np.minimum(left, right)
        # one test per (point, leftover kink): collect the parameters, then build and evaluate
        # all 15-query stencils as arrays
        t_i, t_k, t_l, t_u, t_h = [], [], [], [], []
        for k, kus, pts in leftovers:
            # each kink's stencil must not reach the next kink, or a member of that one leaks in
            srt = np.sort(kus)
            nb = np.full(kus.size, np.inf)
            if kus.size > 1:
                gaps = np.diff(srt)
                nb = np.minimum(np.concatenate([[np.inf], gaps]),
                                np.concatenate([gaps, [np.inf]]))[np.searchsorted(srt, kus)]
            cand_iso = iso[pts].copy()
            cand_iso[:, k] = 0.0
            ls = np.argmax(cand_iso, axis=1)
            best_iso = cand_iso[np.arange(pts.size), ls]
            usable = (best_iso > 0) & np.isfinite(X[pts, ls])
            for i, l, bi in zip(pts[usable], ls[usable], best_iso[usable]):
                t_i.append(np.full(kus.size, i))
                t_k.append(np.full(kus.size, k))
                t_l.append(np.full(kus.size, l))
                t_u.append(kus)
                t_h.append(np.minimum(np.minimum(h_test_max, 0.45 * nb), 0.45 * bi))
        if t_i:
            ti, tk, tl = np.concatenate(t_i), np.concatenate(t_k), np.concatenate(t_l)
            tu, th = np.concatenate(t_u), np.concatenate(t_h)
            n_t = ti.size
            xl = X[ti, tl]
            offs_k = np.repeat([-2.0, -1.0, 0.0, 1.0, 2.0], 3)  # 5 positions along k ...
            offs_l = np.tile([-1.0, 0.0, 1.0], 5)  # ... times 3 along l
            # built and asked in chunks: at N = 1,000 there are millions of tests, and the dense
            # (15 n_t x d) query matrix would not fit in memory
            v = np.empty((n_t, 5, 3))
            chunk = max(1, (1 << 22) // (15 * d))
            for s0 in range(0, n_t, chunk):
                sl = slice(s0, min(n_t, s0 + chunk))
                m_t = sl.stop - sl.start
                Q = np.repeat(base[None, :], 15 * m_t, axis=0)
                rows = np.arange(15 * m_t)
                Q[rows, np.repeat(tk[sl], 15)] = (tu[sl, None] + th[sl, None] * offs_k[None, :]).ravel()
                Q[rows, np.repeat(tl[sl], 15)] = (xl[sl, None] + th[sl, None] * offs_l[None, :]).ravel()
                v[sl] = (ask(Q) - offset).reshape(m_t, 5, 3)
            ch = 2.0 * np.cosh(th / sigma)[:, None]
            g = v[:, :, 0] + v[:, :, 2] - ch * v[:, :, 1]  # along l: only point i survives
            fk = g[:, :-2] + g[:, 2:] - ch * g[:, 1:-1]  # along k at u - h, u, u + h
            pred = 4.0 * np.sinh(th / sigma) ** 2 * sig[ti] * np.exp(
                (np.abs(tu - base[tk]) + np.abs(xl - base[tl])) / sigma)
            ratio = np.where(pred != 0, fk.sum(1) / np.where(pred != 0, pred, 1.0), 0.0)
            # position inside the stencil from the two filter values around the kink
            j0 = np.where(np.abs(fk[:, 0]) > np.abs(fk[:, 2]), 0, 1)
            fa = fk[np.arange(n_t), j0]
            fb = fk[np.arange(n_t), j0 + 1]
            one = (fa != 0) & (fb != 0) & (np.sign(fa) == np.sign(fb))
            pos = tu.copy()
            if one.any():
                delta, _ = _solve_cell(fa[one], fb[one], th[one], sigma)
                pos[one] = tu[one] + (j0[one] - 1) * th[one] + delta
            # decide per (point, axis): a member gives ratio ~1 (the filter sum does not depend on
            # where in the stencil the kink sits), a non-member ~0
            key = ti * d + tk
            order = np.lexsort((-ratio, key))
            key_s, ratio_s = key[order], ratio[order]
            first = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
            second_abs = np.zeros(first.size)
            for g_idx, start in enumerate(first):
                stop = first[g_idx + 1] if g_idx + 1 < first.size else key_s.size
                if stop - start > 1:
                    second_abs[g_idx] = np.abs(ratio_s[start + 1:stop]).max()
            win = order[first]
            ok = (ratio[win] > 0.5) & (ratio[win] > 3.0 * second_abs)
            X[ti[win[ok]], tk[win[ok]]] = pos[win[ok]]
    unassigned = int(np.isnan(X).sum())
    X = np.where(np.isnan(X), base[None, :], X)
    return X, unassigned
