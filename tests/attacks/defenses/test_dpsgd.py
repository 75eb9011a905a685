"""DP-SGD through Opacus: the accountant meets its target and the gradient noise has the stated scale."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from attacks.defenses.dpsgd import make_private, train_dpsgd
from attacks.kkt.model import HomogeneousMLP


def test_dp_sgd_noise_has_the_stated_scale():
    """With all-zero inputs every per-example gradient of a bias-free ReLU net is zero, so the
    step's gradient is pure noise: N(0, (sigma C / B)^2) per entry (Opacus, mean reduction)."""
    X = np.zeros((40, 6))
    y = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    model = HomogeneousMLP(6, (256,), seed=0)  # 1,792 noise draws
    m, opt, loader, engine = make_private(model, X, y, epsilon=2.0, epochs=5, batch_size=20, max_grad_norm=1.0,
                                          weight_decay=0.0)
    xb, yb = next(iter(loader))
    opt.zero_grad()
    torch.nn.functional.softplus(-yb * m(xb).reshape(-1)).mean().backward()
    opt.pre_step()  # clip, add noise, scale (what step() does before updating)
    g = torch.cat([p.grad.reshape(-1) for p in m.parameters()]).detach().numpy()
    sd = opt.noise_multiplier * 1.0 / opt.expected_batch_size
    assert stats.kstest(g / sd, "norm").pvalue > 1e-3
    assert stats.kstest(g / (1.5 * sd), "norm").pvalue < 1e-3  # a wrong scale is caught


@pytest.mark.slow  # a few epochs of Opacus training; the noise test above covers the mechanism
def test_dp_sgd_accountant_meets_its_target():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    y = np.where(X[:, 0] > 0, 1.0, -1.0)
    acct = train_dpsgd(HomogeneousMLP(6, (16,), seed=0), X, y, epsilon=4.0, epochs=3, batch_size=10)
    assert 3.0 < acct["epsilon"] <= 4.0 + 1e-6 and acct["noise_multiplier"] > 0.3
