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


def random_pair_ssim(images: np.ndarray, classes: np.ndarray, same: bool = True, n_pairs: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """SSIM of random pairs of distinct images of the same class (``same``) or of different classes.

    The chance level of "SSIM > 0.4": two unrelated images of one digit often exceed it, so a
    reconstruction that only looks like *some* digit of the right class scores as high.
    ``images``: (n, h, w) in [0, 1]; ``classes``: (n,).
    """
    imgs = np.asarray(images, dtype=np.float64)
    c = np.asarray(classes)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(c), 20 * n_pairs)
    j = rng.integers(0, len(c), 20 * n_pairs)
    ok = (i != j) & ((c[i] == c[j]) if same else (c[i] != c[j]))
    i, j = i[ok][:n_pairs], j[ok][:n_pairs]
    if len(i) == 0:
        raise ValueError("no such pairs: need at least two images of one class (or two classes)")
    return ssim_scores(imgs[i], imgs[j])
