"""Differentially private random-feature ridge regression (private KRR) by output perturbation.

Exact KRR cannot be released privately as it is: its model *is* its training set (X_fit_). The
standard route to private kernel methods (Chaudhuri, Monteleoni & Sarwate, JMLR 12, 2011, section
6; Rubinstein, Bartlett, Huang & Taft, J. Privacy and Confidentiality 4, 2012) replaces the
kernel by a *public*, data-independent random feature map phi (Rahimi & Recht 2007) and privatises
the finite weight vector. That is what this module does, for :class:`RandomFourierRidge`.

Mechanism (output perturbation, Chaudhuri et al. 2011, Theorem 6 / Corollary 8 for a strongly
convex regulariser; Gaussian noise calibrated with the analytic Gaussian mechanism of Balle & Wang,
ICML 2018, Theorem 8):
  1. Labels: centred on a public value c and clipped, y~ = clip(y - c, -Y, Y). (Y and c are public
     and chosen without looking at the training labels; c defaults to the public embedded data's
     mean when the model is trained through :func:`dp_rff_model`.)
  2. Features: phi(x) = sqrt(2/F) cos(W x + b), so ||phi(x)||_2 <= B = sqrt(2) for every x.
  3. Objective J(w) = (1/n) sum_i (w.phi_i - y~_i)^2 + L ||w||^2 with L = lambda / n (the same
     minimiser as the ridge solve (Phi^T Phi + lambda I) w = Phi^T y~). J is 2L-strongly convex;
     J(w*) <= J(0) <= Y^2 gives ||w*|| <= R = Y / sqrt(L); on that ball the per-example loss is
     G-Lipschitz with G = 2 (B R + Y) B.
  4. Sensitivity: replacing one of the n examples changes J by a (2G/n)-Lipschitz term, so the
     minimiser moves by at most Delta = (2G / n) / (2L) = G / (n L) = G / lambda (L2).
  5. Release w~ = w* + N(0, s^2 I_F), s the smallest scale with (epsilon, delta)-DP for L2
     sensitivity Delta (analytic Gaussian mechanism; valid for every epsilon > 0).
  The offset c is public; predictions are c + w~.phi(x). Neighbouring data sets: one example
  replaced (n public). Everything downstream -- serving, any number of queries -- is
  post-processing: the guarantee does not weaken with the query count, unlike fresh output noise.

What it costs: prediction noise w~.phi - w*.phi ~ N(0, s^2 ||phi||^2), and s grows as
Y sqrt(n) / (epsilon lambda^1.5): privacy needs a large ridge, which costs accuracy (measured in
docs/defenses.md).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr

from secureml.errors import ModelError
from secureml.models.io import register_estimator
from secureml.models.random_features import RandomFourierRidge
from secureml.models.random_features import ridge_solve
from secureml.models.pipeline import MolecularModel
from secureml.representations.coulomb import CoulombMatrix

FEATURE_NORM_BOUND = math.sqrt(2.0)  # ||phi(x)||_2 for phi = sqrt(2/F) cos(.): sum of F terms <= 2/F


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """delta achieved by N(0, sigma^2) noise at L2 sensitivity Delta (Balle & Wang 2018, Thm 8)."""
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return float(ndtr(a - b) - math.exp(min(epsilon + float(log_ndtr(-a - b)), 0.0)))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest sigma with (epsilon, delta)-DP for the Gaussian mechanism (bisection, rel. 1e-10)."""
    if not (epsilon > 0 and 0 < delta < 1 and sensitivity >= 0):
        raise ModelError("need epsilon > 0, 0 < delta < 1 and a non-negative sensitivity")
    if sensitivity == 0:
        return 0.0
    lo, hi = 1e-12 * sensitivity, sensitivity
    while gaussian_delta(hi, sensitivity, epsilon) > delta:
        hi *= 2.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if gaussian_delta(mid, sensitivity, epsilon) > delta:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-10:
            break
    return hi


def ridge_sensitivity(n: int, lam: float, label_bound: float, feature_bound: float = FEATURE_NORM_BOUND) -> float:
    """L2 sensitivity of the ridge minimiser (step 4 of the module docstring)."""
    if n < 1 or not lam > 0 or not label_bound > 0:
        raise ModelError("need n >= 1, lambda > 0 and a positive label bound")
    L = lam / n
    R = label_bound / math.sqrt(L)
    G = 2.0 * (feature_bound * R + label_bound) * feature_bound
    return G / (n * L)


@register_estimator
class DPRandomFeatureRidge(RandomFourierRidge):
    """:class:`RandomFourierRidge` released with (epsilon, delta)-differential privacy.

    Args (beyond RandomFourierRidge's): ``epsilon``, ``delta``; ``label_bound`` Y (labels are
    clipped to c +- Y); ``label_center`` c (public; required); ``noise_seed`` (None: fresh
    noise from the OS -- a reproducible seed is for experiments only, since whoever knows it can
    subtract the noise).

    After ``fit``: ``privacy_`` = {epsilon, delta, sensitivity, noise_sd, label_bound,
    label_center, n, mechanism}; ``coef_`` is the private release (``y_offset_`` = c).
    """

    def __init__(self, kernel: str = "gaussian", sigma: float = 100.0, n_features: int = 4096,
                 lam: float = 1.0, seed: int = 0, solver: str = "auto", epsilon: float = 1.0,
                 delta: float = 1e-5, label_bound: float = 100.0, label_center: float | None = None,
                 noise_seed: int | None = None) -> None:
        super().__init__(kernel, sigma, n_features, lam, seed, solver)
        self.epsilon = epsilon
        self.delta = delta
        self.label_bound = label_bound
        self.label_center = label_center
        self.noise_seed = noise_seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "DPRandomFeatureRidge":
        if self.label_center is None:
            raise ModelError("DP training needs a public label_center (e.g. the mean of public data)")
        y = np.asarray(y, dtype=np.float64).ravel()
        c, Y = float(self.label_center), float(self.label_bound)
        y_clipped = np.clip(y - c, -Y, Y)
        X = self._check_X(X)
        if y.shape[0] != X.shape[0] or not np.all(np.isfinite(y)):
            raise ModelError("labels must be finite, one per training example")
        self.n_features_in_ = X.shape[1]
        self._draw_map(X.shape[1])  # public: drawn from `seed`, never from the data
        # non-private minimiser on the clipped labels, no mean removal (the offset c is public)
        self.coef_ = self._exact_solve(X, y_clipped)
        n = int(np.asarray(X).shape[0])
        sens = ridge_sensitivity(n, float(self.lam), Y)
        sd = analytic_gaussian_sigma(float(self.epsilon), float(self.delta), sens)
        rng = np.random.default_rng(self.noise_seed)
        self.nonprivate_norm_ = float(np.linalg.norm(self.coef_))
        self.coef_ = self.coef_ + rng.normal(0.0, sd, self.coef_.shape)
        self.y_offset_ = c
        self.privacy_ = {"epsilon": float(self.epsilon), "delta": float(self.delta), "sensitivity": sens,
                         "noise_sd": sd, "label_bound": Y, "label_center": c, "n": n,
                         "mechanism": "output perturbation, analytic Gaussian (Chaudhuri et al. 2011; "
                                      "Balle & Wang 2018)"}
        return self

    def _exact_solve(self, X: np.ndarray, y_centred: np.ndarray) -> np.ndarray:
        """w* = (Phi^T Phi + lambda I)^-1 Phi^T y~ with no mean removal (the offset is public)."""
        import torch


        Z = torch.from_numpy(self.features(np.asarray(X, dtype=np.float64)))
        w, self.ridge_shift_ = ridge_solve(Z, torch.from_numpy(np.asarray(y_centred, dtype=np.float64)),
                                           float(self.lam), self.solver)
        if self.ridge_shift_ < float(self.lam) * (1 - 1e-12):
            raise ModelError("the ridge solve used less regularisation than the privacy bound assumes")
        # (a larger shift, added by the solver for stability, only shrinks the sensitivity)
        return w.cpu().numpy()

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update({"epsilon": float(self.epsilon), "delta": float(self.delta),
                      "label_bound": float(self.label_bound),
                      "label_center": float(self.label_center if self.label_center is not None else 0.0),
                      "privacy": dict(getattr(self, "privacy_", {}))})
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "DPRandomFeatureRidge":
        base = RandomFourierRidge.from_state(state)
        est = cls(base.kernel, base.sigma, base.n_features, base.lam, base.seed, base.solver,
                  float(state.get("epsilon", 1.0)), float(state.get("delta", 1e-5)),
                  float(state.get("label_bound", 100.0)), float(state.get("label_center", 0.0)))
        for k in ("W_", "b_", "coef_", "y_offset_", "ridge_shift_", "n_features_in_"):
            setattr(est, k, getattr(base, k))
        est.privacy_ = dict(state.get("privacy", {}))
        return est


def dp_rff_model(epsilon: float, delta: float = 1e-5, *, lam: float = 1.0, label_bound: float = 100.0,
                 label_center: float, sigma: float = 100.0, n_features: int = 4096, cm_size: int = 29,
                 seed: int = 0, noise_seed: int | None = None) -> Any:
    """A MolecularModel (sorted Coulomb matrix + DP random-feature ridge), ready to ``fit``."""
    est = DPRandomFeatureRidge("gaussian", sigma, n_features, lam, seed, "auto", epsilon, delta,
                               label_bound, label_center, noise_seed)
    return MolecularModel(CoulombMatrix(size=cm_size), est, "U0_atomization")
