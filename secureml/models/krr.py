"""Exact kernel ridge regression (KRR) with Gaussian and Laplacian kernels.

    fit:      alpha = (K + lam I)^-1 (y - mean(y)),   K_ij = k(x_i, x_j)   (Cholesky solve)
    predict:  f(q)  = mean(y) + sum_i alpha_i k(x_i, q)

    gaussian:  k(x, x') = exp(-||x - x'||_2^2 / (2 sigma^2))
    laplacian: k(x, x') = exp(-||x - x'||_1 / sigma)

These are exactly the formulas that :class:`protocols.common.KernelModelParams` evaluates and
that the two-party protocols compute under encryption, so a fitted :class:`KernelRidge` can be
handed to any engine via ``KernelModelParams.from_estimator``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from secureml.errors import ModelError
from secureml.models.io import register_estimator

KERNELS = ("gaussian", "laplacian")
# Rows of A per block when building kernel matrices: with 16,384 columns a block of 1,024 rows
# is a 128 MB temporary, small next to the N x N matrix itself.
_BLOCK_ROWS = 1024


def _check_kernel(kernel: str, sigma: float) -> None:
    if kernel not in KERNELS:
        raise ModelError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    if not (isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma) and sigma > 0):
        raise ModelError(f"sigma must be a positive finite number, got {sigma!r}")


def distance_matrix(
    A: np.ndarray, B: np.ndarray, kernel: str, out: np.ndarray | None = None, sq_b: np.ndarray | None = None
) -> np.ndarray:
    """The distance each kernel exponentiates: squared L2 (gaussian) or L1 (laplacian).

    Computed in row blocks; the Gaussian case uses ||a||^2 - 2 a.b + ||b||^2 so the work is one
    BLAS matrix product per block (clipped at 0 against rounding). ``sq_b`` may pass the squared
    row norms of B when they are cached (a fitted model's training set).
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ModelError(f"feature arrays do not match: {A.shape} vs {B.shape}")
    if out is None:
        out = np.empty((A.shape[0], B.shape[0]), dtype=np.float64)
    if kernel == "gaussian":
        if sq_b is None:
            sq_b = np.einsum("ij,ij->i", B, B)
        for s in range(0, A.shape[0], _BLOCK_ROWS):
            a = A[s : s + _BLOCK_ROWS]
            blk = out[s : s + a.shape[0]]
            np.matmul(a, B.T, out=blk)
            blk *= -2.0
            blk += np.einsum("ij,ij->i", a, a)[:, None]
            blk += sq_b[None, :]
            np.maximum(blk, 0.0, out=blk)
    elif kernel == "laplacian":
        for s in range(0, A.shape[0], _BLOCK_ROWS):
            a = A[s : s + _BLOCK_ROWS]
            out[s : s + a.shape[0]] = cdist(a, B, "cityblock")
    else:
        raise ModelError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    return out


def kernel_from_distance(D: np.ndarray, kernel: str, sigma: float, inplace: bool = False) -> np.ndarray:
    """Apply exp(-D / (2 sigma^2)) (gaussian) or exp(-D / sigma) (laplacian) to distances D."""
    _check_kernel(kernel, sigma)
    scale = 1.0 / (2.0 * sigma * sigma) if kernel == "gaussian" else 1.0 / sigma
    K = D if inplace else D.copy()
    K *= -scale
    np.exp(K, out=K)
    return K


def kernel_matrix(
    A: np.ndarray, B: np.ndarray, kernel: str = "gaussian", sigma: float = 100.0, sq_b: np.ndarray | None = None
) -> np.ndarray:
    """K[i, j] = k(A[i], B[j]) for the Gaussian or Laplacian kernel (vectorised, row-blocked)."""
    _check_kernel(kernel, sigma)
    return kernel_from_distance(distance_matrix(A, B, kernel, sq_b=sq_b), kernel, sigma, inplace=True)


def _cholesky_solve(K: np.ndarray, y: np.ndarray, lam: float, overwrite: bool) -> np.ndarray:
    """alpha = (K + lam I)^-1 y by Cholesky; ModelError if K + lam I is not positive definite."""
    A = K if overwrite else K.copy()
    A.flat[:: A.shape[0] + 1] += lam
    try:
        factor = scipy.linalg.cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError as exc:
        raise ModelError(
            f"kernel matrix + {lam:g} I is not positive definite (duplicate training points or "
            f"too wide a kernel); increase lam or decrease sigma"
        ) from exc
    return scipy.linalg.cho_solve(factor, y, check_finite=False)


@register_estimator
class KernelRidge(RegressorMixin, BaseEstimator):
    """Exact KRR, scikit-learn compatible (works in ``GridSearchCV``, ``clone``, pipelines).

    Args:
        kernel: ``"gaussian"`` or ``"laplacian"``.
        sigma: kernel width, in the units of the features (Coulomb matrix: e^2/Angstrom).
        lam: ridge regularisation added to the kernel diagonal.

    Fitted attributes: ``X_fit_`` (N, d) training features, ``dual_coef_`` (N,) weights alpha,
    ``y_offset_`` the training mean that is subtracted before the solve and added back.
    """

    def __init__(self, kernel: str = "gaussian", sigma: float = 100.0, lam: float = 1e-8) -> None:
        self.kernel = kernel
        self.sigma = sigma
        self.lam = lam

    def fit(self, X: Any, y: Any) -> "KernelRidge":
        """Solve (K + lam I) alpha = y - mean(y) by Cholesky factorisation."""
        _check_kernel(self.kernel, self.sigma)
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ModelError(f"lam must be a non-negative finite number, got {self.lam!r}")
        X = check_array(X, dtype=np.float64, ensure_min_samples=1)
        y = column_or_1d(check_array(y, dtype=np.float64, ensure_2d=False), warn=True)
        if y.shape[0] != X.shape[0]:
            raise ModelError(f"{X.shape[0]} feature rows but {y.shape[0]} targets")
        self.X_fit_ = np.ascontiguousarray(X)
        self.n_features_in_ = X.shape[1]
        self.y_offset_ = float(y.mean())
        K = kernel_matrix(self.X_fit_, self.X_fit_, self.kernel, float(self.sigma))
        self.dual_coef_ = _cholesky_solve(K, y - self.y_offset_, float(self.lam), overwrite=True)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """y_offset_ + k(X, X_fit_) @ dual_coef_, evaluated in row blocks of X."""
        check_is_fitted(self, ("X_fit_", "dual_coef_", "y_offset_"))
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ModelError(
                f"X has {X.shape[1]} features, but this model was fitted with {self.n_features_in_}"
            )
        # Block over queries so that the (queries x N) kernel block stays ~100 MB.
        rows = max(1, (1 << 24) // max(1, self.X_fit_.shape[0]))
        out = np.empty(X.shape[0], dtype=np.float64)
        sq = self._train_sq_norms() if self.kernel == "gaussian" else None
        for s in range(0, X.shape[0], rows):
            K = kernel_matrix(X[s : s + rows], self.X_fit_, self.kernel, float(self.sigma), sq_b=sq)
            out[s : s + rows] = K @ self.dual_coef_
        return out + self.y_offset_

    def _train_sq_norms(self) -> np.ndarray:
        # Cached ||x_i||^2 of the training rows: saves an O(N d) pass per prediction call.
        cached = getattr(self, "_sq_norms", None)
        if cached is None or cached.shape[0] != self.X_fit_.shape[0] or getattr(self, "_sq_src", None) is not self.X_fit_:
            self._sq_norms = np.einsum("ij,ij->i", self.X_fit_, self.X_fit_)
            self._sq_src = self.X_fit_
        return self._sq_norms

    # -- model files (secureml.models.io) --------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted model: hyperparameters and fitted arrays."""
        check_is_fitted(self, ("X_fit_", "dual_coef_", "y_offset_"))
        return {
            "kernel": self.kernel,
            "sigma": float(self.sigma),
            "lam": float(self.lam),
            "X_fit_": self.X_fit_,
            "dual_coef_": self.dual_coef_,
            "y_offset_": float(self.y_offset_),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "KernelRidge":
        try:
            est = cls(kernel=str(state["kernel"]), sigma=float(state["sigma"]), lam=float(state["lam"]))
            X = np.ascontiguousarray(state["X_fit_"], dtype=np.float64)
            alpha = np.ascontiguousarray(state["dual_coef_"], dtype=np.float64).ravel()
            offset = float(state["y_offset_"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"incomplete KernelRidge state: {exc!r}") from exc
        _check_kernel(est.kernel, est.sigma)
        if X.ndim != 2 or X.shape[0] != alpha.shape[0]:
            raise ModelError(f"KernelRidge state: X_fit_ {X.shape} does not match dual_coef_ {alpha.shape}")
        if not (np.isfinite(X).all() and np.isfinite(alpha).all() and math.isfinite(offset)):
            raise ModelError("KernelRidge state contains NaN or inf")
        est.X_fit_, est.dual_coef_, est.y_offset_ = X, alpha, offset
        est.n_features_in_ = X.shape[1]
        return est


def from_sklearn_kernel_ridge(krr: Any, y_offset: float = 0.0) -> KernelRidge:
    """The secureml :class:`KernelRidge` equal to a fitted ``sklearn.kernel_ridge.KernelRidge``.

    scikit-learn's ``rbf`` kernel exp(-gamma ||x - y||^2) is the Gaussian kernel with
    sigma = 1 / sqrt(2 gamma); its ``laplacian`` exp(-gamma ||x - y||_1) the Laplacian with
    sigma = 1 / gamma. scikit-learn fits no intercept: ``y_offset`` is what the caller subtracted
    from the targets (0 if nothing).
    """
    for attr in ("X_fit_", "dual_coef_"):
        if not hasattr(krr, attr):
            raise ModelError(f"expected a fitted sklearn KernelRidge (no {attr}); call fit() first")
    X = np.ascontiguousarray(krr.X_fit_, dtype=np.float64)
    alpha = np.asarray(krr.dual_coef_, dtype=np.float64)
    if alpha.ndim == 2:
        if alpha.shape[1] != 1:
            raise ModelError(f"one target only: dual_coef_ has shape {alpha.shape}")
        alpha = alpha[:, 0]
    gamma = krr.gamma if krr.gamma is not None else 1.0 / X.shape[1]  # scikit-learn's default
    if krr.kernel == "rbf":
        kernel, sigma = "gaussian", float(1.0 / np.sqrt(2.0 * gamma))
    elif krr.kernel == "laplacian":
        kernel, sigma = "laplacian", float(1.0 / gamma)
    else:
        raise ModelError(f"sklearn kernel {krr.kernel!r} cannot be served; use 'rbf' or 'laplacian'")
    return KernelRidge.from_state({"kernel": kernel, "sigma": sigma, "lam": float(krr.alpha),
                                   "X_fit_": X, "dual_coef_": alpha, "y_offset_": float(y_offset)})


def search_hyperparameters(
    X: np.ndarray,
    y: np.ndarray,
    kernel: str = "gaussian",
    sigmas: Iterable[float] = (),
    lams: Iterable[float] = (1e-8,),
    cv: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Pick (sigma, lam) by k-fold cross-validated mean absolute error.

    The distance matrix of all of X is computed once; each sigma exponentiates it once, and every
    fold and lambda then only slices it and runs a Cholesky solve -- so a grid costs
    n_sigma * n_lam * cv Cholesky factorisations of size ~(1 - 1/cv) N and nothing more.

    Returns a dict with the best ``sigma``, ``lam``, its ``mae`` (mean over folds) and ``grid``:
    one entry per (sigma, lam) with ``mae`` and ``mae_std`` (inf where K + lam I was not positive
    definite).
    """
    X = check_array(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    sigmas = [float(s) for s in sigmas] or default_sigmas(X, kernel)
    lams = [float(v) for v in lams]
    if not lams:
        raise ModelError("need at least one lambda")
    if cv < 2 or cv > X.shape[0]:
        raise ModelError(f"cv must be between 2 and the number of samples ({X.shape[0]}), got {cv}")
    for s in sigmas:
        _check_kernel(kernel, s)
    D = distance_matrix(X, X, kernel)
    folds = list(KFold(n_splits=cv, shuffle=True, random_state=seed).split(X))
    errors = np.full((len(sigmas), len(lams), cv), np.inf)
    steps = [(i, s) for i, s in enumerate(sigmas)]
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="CV sigma grid", unit="sigma")
    for i, sigma in steps:
        K = kernel_from_distance(D, kernel, sigma)
        for f, (tr, te) in enumerate(folds):
            Ktr = K[np.ix_(tr, tr)]
            Kte = K[np.ix_(te, tr)]
            offset = y[tr].mean()
            for j, lam in enumerate(lams):
                try:
                    alpha = _cholesky_solve(Ktr, y[tr] - offset, lam, overwrite=False)
                except ModelError:
                    continue  # stays inf: this (sigma, lam) is not usable
                errors[i, j, f] = np.abs(Kte @ alpha + offset - y[te]).mean()
    mae = errors.mean(axis=2)
    best = np.unravel_index(np.argmin(mae), mae.shape)
    if not np.isfinite(mae[best]):
        raise ModelError("no (sigma, lam) in the grid gave a positive-definite kernel matrix")
    grid = [
        {"sigma": s, "lam": v, "mae": float(mae[i, j]), "mae_std": float(errors[i, j].std())}
        for i, s in enumerate(sigmas)
        for j, v in enumerate(lams)
    ]
    return {
        "kernel": kernel,
        "sigma": sigmas[best[0]],
        "lam": lams[best[1]],
        "mae": float(mae[best]),
        "cv": cv,
        "seed": seed,
        "grid": grid,
    }


def default_sigmas(X: np.ndarray, kernel: str, n: int = 9) -> list[float]:
    """A log grid of widths around the median pairwise distance of (a sample of) X.

    The kernel exponent is distance / (2 sigma^2) or distance / sigma, so a grid centred on the
    median distance spans near-identity to near-constant kernels.
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(0)
    sample = X[rng.choice(X.shape[0], size=min(X.shape[0], 500), replace=False)]
    d = distance_matrix(sample, sample, kernel)
    med = float(np.median(d[np.triu_indices(d.shape[0], 1)])) if d.shape[0] > 1 else 1.0
    med = max(med, 1e-12)
    centre = math.sqrt(med / 2.0) if kernel == "gaussian" else med
    return [float(centre * f) for f in np.logspace(-2, 1, n)]
