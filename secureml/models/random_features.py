"""Random-feature ridge regression on global representations, and the shared ridge solver.

``RandomFourierRidge`` replaces exact kernel ridge regression by a linear model on an explicit
random feature map phi(x) = sqrt(2/F) cos(x W + b) whose inner products approximate the kernel
(Rahimi & Recht 2007):

* Gaussian kernel exp(-|x - x'|_2^2 / (2 sigma^2)): W entries ~ N(0, 1/sigma^2);
* Laplacian kernel exp(-|x - x'|_1 / sigma): the kernel factorises over coordinates and the
  Fourier transform of exp(-|t|/sigma) is a Cauchy density, so W entries ~ Cauchy(0, 1/sigma).

The model is then w = (Phi^T Phi + lambda I)^-1 Phi^T (y - mean y), so a prediction costs one
F-long dot product whatever the training-set size. The map (W, b) is drawn from ``seed`` alone;
it never sees the labels, so a client can compute phi(x) from public parameters and only ``coef_``
(and ``y_offset_``) are the model owner's secret.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import torch
from scipy.linalg import blas
from sklearn.base import BaseEstimator, RegressorMixin
from threadpoolctl import ThreadpoolController

from secureml.errors import ModelError
from secureml.models import register_model
from secureml.models.io import register_estimator
from secureml.models.pipeline import MolecularModel
from secureml.representations.coulomb import CoulombMatrix

__all__ = ["RandomFourierRidge", "ridge_solve", "solve_regularised", "NormalEquations"]

_KERNELS = ("gaussian", "laplacian")


# ---------------------------------------------------------------------------------------------
# Ridge solver shared by RandomFourierRidge and LocalRandomFeatureModel.
# ---------------------------------------------------------------------------------------------

_CONTROLLER: ThreadpoolController | None = None


def _blas_limits() -> Any:
    """Thread limit for the CPU BLAS/LAPACK calls of the ridge solve (a context manager).

    ``SECUREML_BLAS_THREADS`` (default 1). On a shared, oversubscribed machine multi-threaded
    OpenBLAS spins and waits: measured here a 4096 Cholesky took 7-9 s with 2 threads and
    1.4-1.8 s with 1, and a 60 x 16384 Gram matrix 0.8 s vs 3 ms. Raise it on a dedicated machine.
    One controller, made at first use: ``threadpool_limits()`` rescans every loaded library on each
    call (3-25 ms here with torch loaded, more than a one-molecule prediction), the controller's
    ``limit`` takes ~0.04 ms. The BLAS libraries it must know (numpy's, scipy's, torch's) are all
    loaded by this module's imports, before any first use.
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=int(os.environ.get("SECUREML_BLAS_THREADS", "1")), user_api="blas")


def _gram(Z: torch.Tensor, transpose: bool) -> torch.Tensor | np.ndarray:
    """Z^T Z (``transpose``) or Z Z^T in float64.

    On the CPU BLAS dsyrk computes only the upper triangle (half the flops of a GEMM) into a
    Fortran-ordered numpy array; on a GPU a full torch matrix is returned.
    """
    Z = Z.to(torch.float64)
    if Z.device.type == "cpu":
        # Z^T of a C-ordered Z is Fortran-ordered: BLAS reads it without a copy.
        zt = np.ascontiguousarray(Z.numpy()).T
        with _blas_limits():
            return blas.dsyrk(1.0, zt, trans=0 if transpose else 1, lower=0)
    return Z.T @ Z if transpose else Z @ Z.T


def _mirror_upper(a: np.ndarray, block: int = 2048) -> None:
    """Copy the upper triangle of square ``a`` onto its lower triangle, block by block (no n^2 temporaries)."""
    n = a.shape[0]
    for j in range(0, n, block):
        k = min(j + block, n)
        a[k:, j:k] = a[j:k, k:].T
        d = a[j:k, j:k]
        d[...] = np.triu(d) + np.triu(d, 1).T


def _restore_upper(a: np.ndarray, block: int = 2048) -> None:
    """Inverse of :func:`_mirror_upper`: rebuild the upper triangle from the lower one."""
    n = a.shape[0]
    for j in range(0, n, block):
        k = min(j + block, n)
        a[j:k, k:] = a[k:, j:k].T
        d = a[j:k, j:k]
        d[...] = np.tril(d) + np.tril(d, -1).T


def solve_regularised(A: torch.Tensor | np.ndarray, rhs: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Solve (A + lam I) x = rhs for a symmetric positive semi-definite A, by Cholesky in float64.

    ``A`` is either a Fortran-ordered numpy array whose upper triangle is valid (CPU; it is
    overwritten in place, so an F x F system needs no second F x F buffer) or a full torch matrix.
    If rounding makes the matrix numerically indefinite (tiny lam on a rank-deficient Gram
    matrix), the diagonal shift is raised tenfold, at most six times, with a floor of 1e-14 times
    the mean diagonal. Returns x (torch, on rhs's device) and the shift actually used.
    """
    n = A.shape[0]
    shift = float(lam)
    if isinstance(A, np.ndarray):
        a = A if A.flags.f_contiguous else np.asfortranarray(A)
        diag = np.diagonal(a).copy()
        scale = float(diag.mean()) if n else 1.0
        _mirror_upper(a)  # the strict lower triangle backs up the upper one for retries
        b = rhs.detach().cpu().numpy().astype(np.float64)
        for attempt in range(7):
            if attempt:
                _restore_upper(a)
            np.fill_diagonal(a, diag + shift)
            with _blas_limits():
                c, info = scipy.linalg.lapack.dpotrf(a, lower=0, clean=0, overwrite_a=1)
                if info == 0:
                    x = scipy.linalg.cho_solve((c, False), b, check_finite=False)
                    return torch.from_numpy(np.asarray(x)).to(rhs.device), shift
            shift = max(shift * 10.0, 1e-14 * max(scale, 1e-300))
    else:
        scale = float(torch.diagonal(A).mean()) if n else 1.0
        base = torch.diagonal(A).clone()
        for _ in range(7):
            torch.diagonal(A).copy_(base + shift)
            L, info = torch.linalg.cholesky_ex(A, upper=False)
            if int(info) == 0:
                x = torch.cholesky_solve(rhs.to(A).reshape(n, -1), L).reshape(rhs.shape)
                return x, shift
            shift = max(shift * 10.0, 1e-14 * max(scale, 1e-300))
    raise ModelError(f"ridge system is not positive definite even with a diagonal shift of {shift:g}")


def ridge_solve(Z: torch.Tensor, y: torch.Tensor, lam: float, solver: str = "auto") -> tuple[torch.Tensor, float]:
    """Ridge weights w = argmin |Z w - y|^2 + lam |w|^2 in float64; returns (w, shift used).

    ``solver="primal"`` factorises the F x F matrix Z^T Z + lam I; ``"dual"`` the N x N matrix
    Z Z^T + lam I and returns w = Z^T alpha. Both give the same w (push-through identity
    (Z^T Z + lam I)^-1 Z^T = Z^T (Z Z^T + lam I)^-1); ``"auto"`` factorises the smaller one.
    """
    n, f = Z.shape
    if solver == "auto":
        solver = "dual" if n < f else "primal"
    Z = Z.to(torch.float64)
    y = y.to(dtype=torch.float64, device=Z.device)
    if solver == "primal":
        return solve_regularised(_gram(Z, transpose=True), Z.T @ y, lam)
    if solver == "dual":
        alpha, shift = solve_regularised(_gram(Z, transpose=False), y, lam)
        return Z.T @ alpha.to(Z.device), shift
    raise ModelError(f"unknown ridge solver {solver!r}; use 'auto', 'primal' or 'dual'")


class NormalEquations:
    """Streaming accumulator of Z^T Z and Z^T y over row batches (primal ridge without holding Z)."""

    def __init__(self, n_features: int, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # Fortran order: dsyrk updates it in place and LAPACK factorises it without a copy.
            self.A: np.ndarray | torch.Tensor = np.zeros((n_features, n_features), order="F")
        else:
            self.A = torch.zeros(n_features, n_features, dtype=torch.float64, device=self.device)
        self.b = torch.zeros(n_features, dtype=torch.float64, device=self.device)
        self.n = 0

    def add(self, Z: torch.Tensor, y: torch.Tensor) -> None:
        """Add the rows Z (batch, F) with targets y (batch,)."""
        Z = Z.to(dtype=torch.float64, device=self.device)
        y = y.to(dtype=torch.float64, device=self.device)
        if isinstance(self.A, np.ndarray):
            with _blas_limits():
                out = blas.dsyrk(1.0, np.ascontiguousarray(Z.numpy()).T, trans=0, beta=1.0, c=self.A,
                                 overwrite_c=1, lower=0)
            if out is not self.A and not np.shares_memory(out, self.A):
                self.A = out  # f2py had to copy; keep its result
        else:
            self.A.addmm_(Z.T, Z)
        self.b += Z.T @ y
        self.n += Z.shape[0]

    def solve(self, lam: float) -> tuple[torch.Tensor, float]:
        """Weights of (A + lam I) w = b; consumes the accumulated matrix."""
        return solve_regularised(self.A, self.b, lam)


# ---------------------------------------------------------------------------------------------
# Random Fourier / Cauchy features on global representations.
# ---------------------------------------------------------------------------------------------

@register_estimator
class RandomFourierRidge(RegressorMixin, BaseEstimator):
    """Ridge regression on random Fourier (Gaussian) or Cauchy (Laplacian) features.

    Args:
        kernel: ``"gaussian"`` (exp(-|d|_2^2 / 2 sigma^2)) or ``"laplacian"`` (exp(-|d|_1 / sigma)).
        sigma: kernel width, in the units of the representation.
        n_features: number F of random features.
        lam: ridge regularisation, on the same scale as in exact KRR ((K + lam I) alpha = y).
        seed: seed of the random map (W, b).
        solver: ``"auto"``, ``"primal"`` (F x F Cholesky) or ``"dual"`` (N x N); same weights.

    Attributes after ``fit``: ``W_`` (d, F), ``b_`` (F,), ``coef_`` (F,), ``y_offset_``,
    ``n_features_in_``, ``ridge_shift_`` (diagonal shift actually used).
    """

    def __init__(self, kernel: str = "gaussian", sigma: float = 100.0, n_features: int = 4096,
                 lam: float = 1e-8, seed: int = 0, solver: str = "auto") -> None:
        self.kernel = kernel
        self.sigma = sigma
        self.n_features = n_features
        self.lam = lam
        self.seed = seed
        self.solver = solver

    # -- the public map ------------------------------------------------------------------------
    def _draw_map(self, d: int) -> None:
        if self.kernel not in _KERNELS:
            raise ModelError(f"unknown kernel {self.kernel!r}; use one of {_KERNELS}")
        if not self.sigma > 0:
            raise ModelError(f"sigma must be positive, got {self.sigma}")
        if int(self.n_features) < 1:
            raise ModelError(f"n_features must be >= 1, got {self.n_features}")
        rng = np.random.default_rng(self.seed)
        f = int(self.n_features)
        if self.kernel == "gaussian":
            self.W_ = rng.normal(0.0, 1.0 / self.sigma, (d, f))
        else:
            self.W_ = rng.standard_cauchy((d, f)) / self.sigma
        self.b_ = rng.uniform(0.0, 2.0 * np.pi, f)

    def features(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """phi(X) = sqrt(2/F) cos(X W + b), shape (n, F): what a client computes from (W_, b_)."""
        if not hasattr(self, "W_"):
            raise ModelError("RandomFourierRidge is not fitted: call fit() first")
        X = self._check_X(X)
        if X.shape[1] != self.W_.shape[0]:
            raise ModelError(f"model expects {self.W_.shape[0]} input features, got {X.shape[1]}")
        f = self.W_.shape[1]
        out = np.empty((X.shape[0], f))
        norm = math.sqrt(2.0 / f)
        with _blas_limits():
            for s in range(0, X.shape[0], batch_size):  # bounds the (batch, F) temporary
                block = X[s:s + batch_size] @ self.W_
                block += self.b_
                np.cos(block, out=block)
                out[s:s + batch_size] = block * norm
        return out

    @staticmethod
    def _check_X(X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ModelError(f"expected a 2-D array (n_samples, n_features), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ModelError("input representations contain NaN or infinite values")
        return X

    # -- estimator API -------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> "RandomFourierRidge":
        X = self._check_X(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if y.shape[0] != X.shape[0]:
            raise ModelError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
        if not np.all(np.isfinite(y)):
            raise ModelError("training targets contain NaN or infinite values")
        self.n_features_in_ = X.shape[1]
        self._draw_map(X.shape[1])
        Z = torch.from_numpy(self.features(X))
        self.y_offset_ = float(y.mean())
        w, self.ridge_shift_ = ridge_solve(Z, torch.from_numpy(y - self.y_offset_), self.lam, self.solver)
        self.coef_ = w.cpu().numpy()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ModelError("RandomFourierRidge is not fitted: call fit() first")
        return self.features(X) @ self.coef_ + self.y_offset_

    # -- model files (secureml.models.io) ------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Hyperparameters and fitted arrays for a single-.npz model file."""
        if not hasattr(self, "coef_"):
            raise ModelError("cannot save an unfitted RandomFourierRidge")
        return {
            "kernel": self.kernel, "sigma": float(self.sigma), "n_features": int(self.n_features),
            "lam": float(self.lam), "seed": int(self.seed), "solver": self.solver,
            "W": self.W_, "b": self.b_, "coef": self.coef_, "y_offset": float(self.y_offset_),
            "ridge_shift": float(self.ridge_shift_),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RandomFourierRidge":
        try:
            est = cls(kernel=str(state["kernel"]), sigma=float(state["sigma"]),
                      n_features=int(state["n_features"]), lam=float(state["lam"]),
                      seed=int(state["seed"]), solver=str(state["solver"]))
            est.W_ = np.asarray(state["W"], dtype=np.float64)
            est.b_ = np.asarray(state["b"], dtype=np.float64)
            est.coef_ = np.asarray(state["coef"], dtype=np.float64)
            est.y_offset_ = float(state["y_offset"])
            est.ridge_shift_ = float(state.get("ridge_shift", est.lam))
        except KeyError as exc:
            raise ModelError(f"RandomFourierRidge state is missing {exc}") from None
        if est.W_.ndim != 2 or est.W_.shape[1] != est.b_.shape[0] or est.coef_.shape != est.b_.shape:
            raise ModelError("RandomFourierRidge state has inconsistent array shapes")
        est.n_features_in_ = est.W_.shape[0]
        return est


# ---------------------------------------------------------------------------------------------
# Learning-curve / train recipes: Coulomb matrix + random-feature ridge.
# ---------------------------------------------------------------------------------------------
# Widths as for exact KRR on the sorted Coulomb matrix: the random features approximate that
# kernel, so its cross-validated width carries over (secureml.models._KRR_DEFAULTS when present).
_RFF_DEFAULTS = {
    "gaussian": {"sigma": 100.0, "lam": 1e-8},
    "laplacian": {"sigma": 10 ** 4.2, "lam": 1e-10},
}
try:
    from secureml.models import _KRR_DEFAULTS as _krr_defaults

    _RFF_DEFAULTS = {k: dict(_krr_defaults.get(k, v)) for k, v in _RFF_DEFAULTS.items()}
except ImportError:  # the exact-KRR recipes define no defaults table
    pass


def _rff_recipe(kernel: str) -> Any:
    def build(sigma: float | None = None, lam: float | None = None, n_features: int = 4096,
              cm_size: int = 29, cm_variant: str = "sorted", seed: int = 0, solver: str = "auto",
              **options: Any) -> Any:
        if options:
            raise ModelError(f"model 'rff-{kernel}' does not take option(s) {', '.join(sorted(options))}")
        d = _RFF_DEFAULTS[kernel]
        est = RandomFourierRidge(
            kernel=kernel, sigma=float(d["sigma"] if sigma is None else sigma),
            lam=float(d["lam"] if lam is None else lam), n_features=int(n_features), seed=int(seed),
            solver=str(solver),
        )
        return MolecularModel(CoulombMatrix(size=int(cm_size), variant=str(cm_variant)), est)

    kind = "Fourier" if kernel == "gaussian" else "Cauchy"
    build.__doc__ = f"Coulomb matrix + ridge on random {kind} features ({kernel} kernel), fixed prediction cost."
    return build


for _k in ("gaussian", "laplacian"):
    register_model(f"rff-{_k}", n_features=4096, cm_size=29, cm_variant="sorted",
                   **_RFF_DEFAULTS[_k])(_rff_recipe(_k))
