"""The kink attack at N >= 1,000: a fast exact plaintext oracle and the scaling experiment.

The kink attack (:func:`attacks.reconstruction.kink_attack`) only ever asks queries that differ
from one base point q0 in one coordinate (the line scans) or two (the membership stencils). The
plaintext API's answer is y_offset + sum_i a_i exp(-||q - x_i||_1 / sigma); computing it from
scratch costs O(N d) per query, which at N = 1,000 (about 16 M queries, d = 435) is hours on this
CPU. :class:`SparseLaplacianOracle` is the same function evaluated with the identity

    ||q - x_i||_1 = ||q0 - x_i||_1 + sum_{k : q_k != q0_k} (|q_k - x_ik| - |q0_k - x_ik|),

i.e. O(N) per query for the attack's queries (any query is still answered exactly: rows that
differ from q0 in many coordinates just take longer). It is a faster implementation of the
*victim's* predict, used to measure the attack at scale; the attacker still only sees answers,
and the number of queries it asks is counted exactly as before. Agreement with the model's own
predict is tested (tests/attacks/test_kink_scale.py).

Threat model: as in docs/attacks.md section 3 -- a black-box client of the plaintext API with
unbounded float64 queries, who knows the kernel family, the feature range and N.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from attacks import reconstruction, whitebox
from attacks.chem import canonical_smiles
from attacks.experiments import cm_range
from attacks.scenario import build


class SparseLaplacianOracle:
    """Exact answers of a fitted Laplacian KRR, fast for queries near a base point q0.

    ``X_fit``, ``dual_coef``, ``y_offset``, ``sigma``: the model (secureml KernelRidge fields);
    ``base``: q0. ``block``: queries per block (the (block x N) distance block stays ~64 MB).
    """

    def __init__(self, X_fit: np.ndarray, dual_coef: np.ndarray, y_offset: float, sigma: float,
                 base: np.ndarray, block: int | None = None) -> None:
        self.X = np.ascontiguousarray(X_fit, dtype=np.float64)
        self.XT = np.ascontiguousarray(self.X.T)  # (d, N): one row per axis, gathered per query
        self.coef = np.asarray(dual_coef, dtype=np.float64)
        self.offset = float(y_offset)
        self.sigma = float(sigma)
        self.base = np.asarray(base, dtype=np.float64)
        self.A = np.ascontiguousarray(np.abs(self.base[:, None] - self.XT))  # |q0_k - x_ik|, (d, N)
        self.D0 = self.A.sum(0)  # ||q0 - x_i||_1
        self.block = int(block or max(1, (1 << 23) // max(1, len(self.X))))
        self.order = np.argsort(self.XT, axis=1, kind="stable")  # per axis: training points by x_ik
        self.xs = np.take_along_axis(self.XT, self.order, axis=1)
        self.queries = 0

    @classmethod
    def from_estimator(cls, est: Any, base: np.ndarray, block: int | None = None) -> "SparseLaplacianOracle":
        if getattr(est, "kernel", None) != "laplacian":
            raise reconstruction.AttackError("the sparse oracle evaluates L1 Laplacian models only")
        return cls(est.X_fit_, est.dual_coef_, est.y_offset_, est.sigma, base, block)

    def __call__(self, Q: np.ndarray) -> np.ndarray:
        Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
        out = np.empty(len(Q))
        diff = Q != self.base[None, :]
        n_diff = diff.sum(1)
        line = np.flatnonzero(n_diff == 1)
        if line.size:
            axis = np.argmax(diff[line], axis=1)
            for k in np.unique(axis):
                r = line[axis == k]
                out[r] = self._line(int(k), Q[r, k])
        rest = np.flatnonzero(n_diff != 1)
        for s in range(0, rest.size, self.block):
            r = rest[s:s + self.block]
            out[r] = self._block(Q[r])
        self.queries += len(Q)
        return out

    def _line(self, k: int, t: np.ndarray) -> np.ndarray:
        """Queries q0 + (t - q0_k) e_k: f(t) = sum_i w_i exp(-|t - x_ik| / sigma) with
        w_i = a_i exp(-(||q0 - x_i||_1 - |q0_k - x_ik|) / sigma), by prefix sums over the points
        sorted by x_ik: O(N log N + T) instead of O(N T). The exponents are taken relative to the
        axis's largest coordinate (and t itself), so nothing overflows; where the coordinates or
        t span more than 20 sigma the rounding of the sums would grow by e^20, and the direct
        evaluation is used instead."""
        xs = self.xs[k]
        lo_v, hi_v = min(xs[0], float(t.min())), max(xs[-1], float(t.max()))
        if (hi_v - lo_v) / self.sigma > 20.0:
            Q = np.repeat(self.base[None, :], len(t), axis=0)
            Q[:, k] = t
            return np.concatenate([self._block(Q[s:s + self.block]) for s in range(0, len(t), self.block)])
        o = self.order[k]
        w = self.coef[o] * np.exp(-(self.D0[o] - self.A[k, o]) / self.sigma)
        m = xs[-1]
        left = np.concatenate([[0.0], np.cumsum(w * np.exp((xs - m) / self.sigma))])  # points x <= t
        right = np.concatenate([np.cumsum((w * np.exp((m - xs) / self.sigma))[::-1])[::-1], [0.0]])
        j = np.searchsorted(xs, t, side="right")  # points [0, j) lie at x <= t
        return (np.exp((m - t) / self.sigma) * left[j]
                + np.exp((t - m) / self.sigma) * right[j]) + self.offset

    def _block(self, Q: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(Q != self.base[None, :])  # row-major: grouped by row
        D = np.repeat(self.D0[None, :], len(Q), axis=0)
        if rows.size:
            counts = np.bincount(rows, minlength=len(Q))
            start = np.concatenate([[0], np.cumsum(counts)[:-1]])
            # slot j = the j-th differing coordinate of every row that has one; the attack's
            # queries have 1 or 2, so this loop is short (a far query costs d slots of 1 row)
            for j in range(int(counts.max())):
                r = np.flatnonzero(counts > j)
                c = cols[start[r] + j]
                D[r] += np.abs(Q[r, c][:, None] - self.XT[c]) - self.A[c]
        D *= -1.0 / self.sigma
        np.exp(D, out=D)
        return D @ self.coef + self.offset


def smiles_recovered(scn: Any, centres: np.ndarray) -> tuple[float, float]:
    """Exact molecules: each training point's nearest reconstruction inverted to (Z, xyz) and a
    stereo-free canonical SMILES (:func:`attacks.whitebox.molecules_from_features`), compared with
    the training molecule's; and the chance baseline, the fraction of training molecules whose SMILES
    is among the attacker's public molecules (the no-model guess)."""
    truth = [canonical_smiles(scn.data.smiles[i]) for i in scn.train]
    public = {canonical_smiles(scn.data.smiles[i]) for i in scn.public}
    base = float(np.mean([t in public for t in truth]))
    if len(centres) == 0:
        return 0.0, base
    m = reconstruction.match_points(scn.X_train, centres, 1.0)
    size = int(scn.model.representation.get_params()["size"])
    got = whitebox.molecules_from_features(centres[m["nearest"]], size).smiles
    return float(np.mean([a != "" and a == b for a, b in zip(got, truth)])), base


def run(n_train: int, settings: tuple[tuple[float, int], ...] = ((4.0, 1), (1.0, 2), (1.0, 3), (1.0, 4)),
        refine: int = 8, seed: int = 0, rel_tols: tuple[float, ...] = (1e-3, 1e-2),
        membership: str = "measure", rel_thresh: float = 1e-11, round_to: float = 0.0) -> list[dict[str, Any]]:
    """Recovered fraction against queries for one N: the kink attack at growing resolution.

    Steps: 1. fit the project's Laplacian KRR (default sigma, lambda) on the first ``n_train``
    molecules of the embedded split (:func:`attacks.scenario.build`); 2. for each (coarse step h,
    depth), run :func:`kink_attack` against the sparse oracle with q0 = (lo, ..., lo); 3. score
    every training point's nearest reconstruction (relative L2 error) and the chance baseline: the
    nearest of the attacker's public molecules (the no-model guess), at the same tolerances; exact
    molecules (SMILES) beside their own baseline (:func:`smiles_recovered`).

    ``rel_thresh``: the line-scan filter values count as a kink above this fraction of the largest
    answer (float64 rounding of the answers is ~1e-16 of it; 1e-9, the library default, hides the
    kinks of points with small signatures at the finest grid step). ``round_to``: the API rounds
    every answer to a multiple of it (an output defense, in the model's unit); the attacker is told
    the grid and treats half of it as the answers' noise.
    """
    scn = build("laplacian", n_train=n_train, seed=seed)
    est = scn.model.estimator
    lo, hi = cm_range(scn)
    d = scn.X.shape[1]
    base_rows: dict[str, Any] = {}
    for tol in rel_tols:
        m = reconstruction.match_points(scn.X_train, scn.X[scn.public], tol)
        base_rows[f"baseline_nearest_public_rel{tol:g}"] = m["fraction_recovered"]
    rows = []
    for h, depth in settings:
        exact = SparseLaplacianOracle.from_estimator(est, np.full(d, float(lo)))
        orc: Any = exact
        if round_to > 0:
            def orc(Q: np.ndarray, _e: SparseLaplacianOracle = exact) -> np.ndarray:
                return np.round(_e(Q) / round_to) * round_to
        t0 = time.perf_counter()
        res = reconstruction.kink_attack(orc, d, lo, hi, h=h, refine=refine, depth=depth, n_hint=n_train,
                                         membership=membership, rel_thresh=rel_thresh, noise=round_to / 2)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"n_train": n_train, "n_features": d, "membership": membership, "rel_thresh": rel_thresh,
                               "round_to": round_to,
                               "h": h, "refine": refine, "depth": depth,
                               "finest_step": h / refine ** depth, "queries": int(res.n_queries),
                               "queries_over_n_d_plus_2": res.n_queries / (n_train * (d + 2)),
                               "membership_queries": int(res.membership_queries), "kinks": res.n_kinks, "merged_kinks": res.n_merged,
                               "unassigned_coordinates": res.unassigned, "sigma_estimated": res.sigma,
                               "seconds": seconds}
        for tol in rel_tols:
            row[f"fraction_recovered_rel{tol:g}"] = reconstruction.match_points(
                scn.X_train, res.centres, tol)["fraction_recovered"]
        row["fraction_molecules_exact"], row["baseline_public_smiles"] = smiles_recovered(scn, res.centres)
        row.update(base_rows)
        rows.append(row)
    return rows
