"""Structured orthogonal random features (SORF) in torch.

A SORF block replaces the dense Gaussian matrix of random Fourier features by a product of
three random-sign diagonals and three orthonormal Walsh-Hadamard transforms,

    W_block = (sqrt(d) / sigma) * H D3 H D2 H D1,       H = hadamard(d) / sqrt(d),

(Yu et al., "Orthogonal Random Features", NeurIPS 2016). Every block is exactly orthogonal up to
the scale, so each of its rows has norm sqrt(d)/sigma -- the expected norm of a row of a Gaussian
random-feature matrix for the kernel exp(-|x - x'|^2 / (2 sigma^2)). ``n_stacks`` independent
blocks are stacked side by side to give ``n_stacks * d`` features.

Everything that defines the map (the sign diagonals, the bias, sigma) is public: a client can
rebuild it from the stored diagonals. The transform can be evaluated two ways that give the same
numbers up to rounding: by fast Walsh-Hadamard transforms (O(d log d) per block and vector, what a
GPU kernel does) or by materialising the (d, n_stacks * d) matrix once and using one GEMM, which
is faster on a CPU because BLAS beats the memory-bound butterfly passes for d = 128.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from secureml.errors import ModelError

__all__ = [
    "fwht",
    "hadamard",
    "sorf_diagonals",
    "sorf_transform",
    "sorf_matrix",
    "random_bias",
    "cos_features",
    "default_device",
]


def default_device() -> str:
    """``"cuda"`` if torch sees a GPU, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_power_of_two(d: int, what: str) -> None:
    if d < 1 or d & (d - 1):
        raise ModelError(f"{what} must be a power of two for the Walsh-Hadamard transform, got {d}")


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform along the last axis (Sylvester ordering).

    Equals ``x @ scipy.linalg.hadamard(d) / sqrt(d)`` (the Sylvester matrix is symmetric), in
    log2(d) vectorised butterfly passes.
    """
    d = x.shape[-1]
    _check_power_of_two(d, "the last dimension")
    shape = x.shape
    y = x.reshape(-1, d)
    h = 1
    while h < d:
        # Pair entry (block, 0, r) with (block, 1, r): indices j and j + h of each 2h-long block.
        y = y.view(-1, d // (2 * h), 2, h)
        y = torch.stack((y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]), dim=2)
        h *= 2
    return y.reshape(shape) / math.sqrt(d)


def sorf_diagonals(n_stacks: int, d: int, seed: int | np.random.Generator = 0,
                   n_blocks: int = 3) -> np.ndarray:
    """Random Rademacher (+-1) diagonals, shape ``(n_blocks, n_stacks, d)``, dtype int8.

    Drawn with numpy so the same seed gives the same map on every device.
    """
    _check_power_of_two(d, "the SORF input width (npcas)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.where(rng.random((n_blocks, n_stacks, d)) < 0.5, -1, 1).astype(np.int8)


def random_bias(n_features: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Uniform phases in [0, 2 pi), shape ``(n_features,)``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.uniform(0.0, 2.0 * np.pi, n_features)


def sorf_transform(x: torch.Tensor, diagonals: torch.Tensor, sigma: float) -> torch.Tensor:
    """Apply the stacked SORF map with Walsh-Hadamard transforms.

    Args:
        x: (n, d) inputs.
        diagonals: (n_blocks, n_stacks, d) signs (any numeric dtype).
        sigma: kernel width; the output is scaled by sqrt(d)/sigma.

    Returns:
        (n, n_stacks * d) projections ``x @ sorf_matrix(diagonals, sigma)``.
    """
    n, d = x.shape
    n_blocks, n_stacks, d2 = diagonals.shape
    if d2 != d:
        raise ModelError(f"SORF diagonals have width {d2}, inputs have {d}")
    diag = diagonals.to(dtype=x.dtype, device=x.device)
    v = x.unsqueeze(1).expand(n, n_stacks, d)
    for k in range(n_blocks):  # D1 -> H -> D2 -> H -> D3 -> H
        v = fwht(v * diag[k])
    return v.reshape(n, n_stacks * d) * (math.sqrt(d) / sigma)


def hadamard(d: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Orthonormal Sylvester-Hadamard matrix hadamard(d) / sqrt(d), built by Kronecker doubling."""
    _check_power_of_two(d, "the Hadamard size")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(d)


def sorf_matrix(diagonals: torch.Tensor, sigma: float,
                dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Materialise the SORF map as a dense (d, n_stacks * d) matrix M with ``x @ M == sorf_transform(x)``.

    Block s is diag(D1_s) H diag(D2_s) H diag(D3_s) H (times sqrt(d)/sigma), formed with batched
    d x d products -- the structured matrix itself, not a fresh Gaussian draw. A second,
    independent route to the same numbers as the butterfly transform (the tests compare them).
    """
    n_blocks, n_stacks, d = diagonals.shape
    H = hadamard(d, dtype, device)
    D = diagonals.to(dtype=dtype, device=device)
    A = D[0][:, :, None] * H  # row i of block s: D1_s[i] * H[i, :]
    for k in range(1, n_blocks):
        A = (A * D[k][:, None, :]) @ H
    return A.permute(1, 0, 2).reshape(d, n_stacks * d) * (math.sqrt(d) / sigma)


def cos_features(coefficients: torch.Tensor, bias: torch.Tensor, n_features: int | None = None) -> torch.Tensor:
    """sqrt(2/F) * cos(coefficients + bias), in place on ``coefficients`` (saves a (n, F) copy)."""
    f = coefficients.shape[-1] if n_features is None else n_features
    return coefficients.add_(bias).cos_().mul_(math.sqrt(2.0 / f))
