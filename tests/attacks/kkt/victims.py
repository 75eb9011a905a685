"""A tiny trained victim shared by the KKT tests: 8 points in 30 dimensions, D-40-40-1, parity labels."""
from __future__ import annotations

import numpy as np

from attacks.kkt.model import HomogeneousMLP, train_classifier


def tiny_parity_victim(seed: int = 0) -> tuple[HomogeneousMLP, np.ndarray, np.ndarray]:
    """(model, centred training points, their mean): trained to near-zero loss in ~1 s."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.0, 1.0, (8, 30))
    mu = z.mean(0)
    y = np.where(np.arange(8) % 2 == 0, 1.0, -1.0)
    model = HomogeneousMLP(30, (40, 40), seed=seed)
    train_classifier(model, z - mu, y, steps=100, lr=1e-3, weight_decay=1e-3, lbfgs_steps=30)
    return model, z - mu, mu
