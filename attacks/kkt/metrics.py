"""Matching reconstructions to training points (NCC / L2) and scoring them (SSIM, L2)."""
from __future__ import annotations

import numpy as np


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation between every row of ``a`` (n, d) and of ``b`` (m, d), in [-1, 1].

    Invariant to a positive scale and an offset of either row, which the KKT equation cannot fix.
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def l2_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between every row of ``a`` and of ``b``."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def match(train: np.ndarray, recon: np.ndarray, metric: str = "ncc") -> tuple[np.ndarray, np.ndarray]:
    """For each training row, the index of its nearest reconstruction and the score.

    ``metric`` "ncc": highest NCC (score = NCC); "l2": smallest distance (score = distance).
    """
    if metric == "ncc":
        s = ncc_matrix(train, recon)
        idx = s.argmax(1)
    elif metric == "l2":
        s = l2_matrix(train, recon)
        idx = s.argmin(1)
    else:
        raise ValueError(f"metric must be 'ncc' or 'l2', not {metric!r}")
    return idx, s[np.arange(len(train)), idx]


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale each row (image) to [0, 1]: the attacker's own normalisation of a reconstruction."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / np.maximum(hi - lo, 1e-12)).reshape(x.shape)


def ssim_scores(train_images: np.ndarray, recon_images: np.ndarray, normalize_train: bool = False) -> np.ndarray:
    """SSIM of each training image (values in [0, 1]) with its paired, min-max-normalised reconstruction.

    Both inputs have shape (n, h, w); pairs are rows with the same index. ``normalize_train`` also
    min-max-normalises the training images (for centred images). Uses
    ``skimage.metrics.structural_similarity`` with the largest odd window that fits (7 for 8x8 images).
    """
    from skimage.metrics import structural_similarity

    t = minmax(train_images) if normalize_train else np.asarray(train_images, dtype=np.float64)
    r = minmax(recon_images)
    win = min(7, min(t.shape[1:]) - (1 - min(t.shape[1:]) % 2))
    return np.array([structural_similarity(a, b, data_range=1.0, win_size=win) for a, b in zip(t, r)])
