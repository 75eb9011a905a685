"""The closed-form KKT gradient, the multiclass variant (Buzaglo et al. 2023), victim caching and the
MNIST sweep: tiny real models, seeded, CPU, a few seconds each."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attacks.kkt.attack import (AttackError, KKTConfig, kkt_loss_grad, kkt_loss_grad_outputs, kkt_residual,
                                multiclass_signs, pair_coefficients, reconstruct)
from attacks.kkt.metrics import match
from attacks.kkt.model import HomogeneousMLP, train_multiclass
from secureml.errors import DataError, ModelError



def _autograd_loss(weights, x, coef, sign):
    ws = [w.clone().requires_grad_(True) for w in weights]
    x = x.clone().requires_grad_(True)
    coef = coef.clone().requires_grad_(True)
    a = x
    for w in ws[:-1]:
        a = torch.relu(a @ w.T)
    out = a @ ws[-1].T
    g = torch.autograd.grad((coef[:, None] * sign * out).sum(), ws, create_graph=True)
    res = sum(((w - gg) ** 2).sum() for w, gg in zip(ws, g))
    gx, gc = torch.autograd.grad(res, [x, coef])
    return res.detach(), gx, gc


@pytest.mark.parametrize("out_dim,depth", [(1, 2), (3, 2), (1, 3)])
def test_closed_form_kkt_gradient_matches_autograd(out_dim, depth):
    gen = torch.Generator().manual_seed(out_dim * 10 + depth)
    dims = [6] + [9] * depth + [out_dim]
    weights = [torch.randn(b, a, generator=gen, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    coef = torch.rand(5, generator=gen, dtype=torch.float64)
    sign = torch.randn(5, out_dim, generator=gen, dtype=torch.float64)
    r1, gx1, gc1 = kkt_loss_grad(weights, x, coef, sign)
    r2, gx2, gc2 = _autograd_loss(weights, x, coef, sign)
    assert float(r1) == pytest.approx(float(r2), rel=1e-12)
    assert torch.allclose(gx1, gx2, rtol=1e-10, atol=1e-12)
    assert torch.allclose(gc1, gc2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_closed_form_gradient_in_the_coefficient_matrix_matches_autograd(depth):
    gen = torch.Generator().manual_seed(depth)
    dims = [6] + [9] * depth + [4]
    weights = [torch.randn(b, a, generator=gen, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    C = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    r1, gx1, gC1 = kkt_loss_grad_outputs(weights, x, C)
    ws = [w.clone().requires_grad_(True) for w in weights]
    xa, Ca = x.clone().requires_grad_(True), C.clone().requires_grad_(True)
    a = xa
    for w in ws[:-1]:
        a = torch.relu(a @ w.T)
    g = torch.autograd.grad((Ca * (a @ ws[-1].T)).sum(), ws, create_graph=True)
    r2 = sum(((w - gg) ** 2).sum() for w, gg in zip(ws, g))
    gx2, gC2 = torch.autograd.grad(r2, [xa, Ca])
    assert float(r1) == pytest.approx(float(r2), rel=1e-12)
    assert torch.allclose(gx1, gx2, rtol=1e-10, atol=1e-12)
    assert torch.allclose(gC1, gC2, rtol=1e-10, atol=1e-12)


def test_pair_coefficients_are_margin_terms():
    lam = torch.tensor([[9.0, 0.2, 0.3], [0.5, 0.1, 7.0]])  # the own-class entries (9, 7) are ignored
    C = pair_coefficients(lam, torch.tensor([0, 2]))
    assert torch.allclose(C, torch.tensor([[0.5, -0.2, -0.3], [-0.5, -0.1, 0.6]]))
    assert torch.allclose(C.sum(1), torch.zeros(2))  # sum_k lambda_jk (e_y - e_k) sums to zero


def test_multiclass_signs_pick_strongest_other_class():
    out = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    s = multiclass_signs(out, torch.tensor([0, 2]))
    assert s.tolist() == [[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]]


def _three_classes(seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.0, 1.0, (9, 40))
    mu = z.mean(0)
    return z - mu, mu, np.arange(9) % 3, rng


def test_multiclass_kkt_attack_reconstructs_and_beats_random():
    z, mu, lab, rng = _three_classes(0)
    model = HomogeneousMLP(40, (100, 100), seed=0, out_dim=3)
    rep = train_multiclass(model, z, lab, steps=300, lr=1e-3, weight_decay=1e-3, lbfgs_steps=200)
    assert rep.accuracy == 1.0 and rep.min_margin > 0
    from attacks.kkt.datasets import BinaryTask
    from attacks.kkt.experiments import true_kkt_floor

    floor = true_kkt_floor(model, BinaryTask(X=z, y=lab.astype(float), raw=z, mean=mu, lower=-mu, upper=1 - mu),
                           1e-3, lab)
    assert floor < 0.01  # the trained network is a stationary point: the training set fits the equation
    cfg = KKTConfig(n_candidates=18, steps=1000, init_scale=0.01, lambda_min=0.05, task="multiclass", seed=0)
    rec = reconstruct(model, -mu, 1 - mu, cfg)
    assert rec.residual < 0.2 * rec.initial_residual
    assert sorted(set(rec.y.tolist())) == [0, 1, 2]
    _, ncc = match(z, rec.x, "ncc")
    _, ncc_random = match(z, rng.uniform(0.0, 1.0, (1000, 40)) - mu, "ncc")  # 55x more guesses, no model
    assert ncc.max() > 0.9 and ncc.max() > ncc_random.max() + 0.25
    assert (ncc > ncc_random.max()).sum() >= 2
    assert kkt_residual(model, rec.x, rec.lam, rec.y) > 0  # class indices accepted for a multi-output net


def test_multiclass_errors():
    with pytest.raises(ModelError):
        train_multiclass(HomogeneousMLP(4, (5,), out_dim=1), np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ModelError):
        train_multiclass(HomogeneousMLP(4, (5,), out_dim=2), np.zeros((2, 4)), np.array([0, 1]), weight_decay=0)
    with pytest.raises(AttackError):  # a binary attack on a 3-output network
        reconstruct(HomogeneousMLP(4, (5,), out_dim=3), 0.0, 1.0, KKTConfig(n_candidates=2, steps=1))
    with pytest.raises(AttackError):
        reconstruct(HomogeneousMLP(4, (5,)), 0.0, 1.0, KKTConfig(n_candidates=2, steps=1, task="multiclass"))


def test_mnist_multiclass_split_is_balanced():
    from attacks.kkt.datasets import mnist_task

    task, held = mnist_task(50, seed=0, split="multiclass")
    assert np.bincount(task.classes, minlength=10).tolist() == [5] * 10
    assert np.array_equal(task.y, task.classes.astype(float)) and len(held) == 4950
    with pytest.raises(DataError):
        mnist_task(5, seed=0, split="multiclass")


def test_mnist_victim_cache_and_sweep(tmp_path):
    """One victim, trained once and reused; each sweep row carries the attack beside its baselines."""
    from attacks.kkt.experiments import Settings, parse_grid, run_sweep, train_victim
    from attacks.kkt.datasets import mnist_task

    s = Settings(width=24, train_steps=40, lbfgs_steps=10, steps=20, device="cpu")
    task, _ = mnist_task(10, s.seed)
    cache = tmp_path / "victim.pt"
    m1, rep1, t1 = train_victim(task, s, cache=cache)
    m2, rep2, t2 = train_victim(task, s, cache=cache)
    assert t1 > 0 and t2 == 0.0 and rep1 == pytest.approx(rep2)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    _, _, t3 = train_victim(task, Settings(**{**s.__dict__, "weight_decay": 2e-3}), cache=cache)
    assert t3 > 0  # other training settings: retrained, not silently reused
    grid = parse_grid("lambda_min=0.05,0.2; lr=0.01")
    assert grid == {"lambda_min": [0.05, 0.2], "lr": [0.01]}
    out = run_sweep(tmp_path, s, grid, n_train=10, cache=cache, progress=False)
    assert len(out["rows"]) == 2 and out["best"] in out["rows"]
    saved = json.loads((tmp_path / "sweep.json").read_text())
    for row in saved["rows"]:
        assert {"n_beats_heldout", "noise_n_ssim_gt_0.4", "heldout_n_ssim_gt_0.4"} <= set(row)
    assert (tmp_path / "sweep.csv").read_text().startswith("lambda_min,lr,")
    with pytest.raises(AttackError):
        parse_grid("width=3")


def test_mnist_multiclass_end_to_end(tmp_path):
    from attacks.kkt.experiments import Settings, run_digits

    s = Settings(width=24, train_steps=40, lbfgs_steps=10, steps=20, device="cpu")
    out = run_digits(tmp_path, s, n_train=20, split="multiclass", progress=False, dataset="mnist", n_pairs=30)
    saved = json.loads((tmp_path / "mnist_multiclass.json").read_text())
    assert saved["split"] == "multiclass" and saved["true_data_kkt_residual"] is not None
    assert {"baseline_noise", "baseline_heldout", "baseline_pairs"} <= set(saved)
    assert out["attack"]["n_candidates"] == 40
    assert (tmp_path / "mnist_multiclass_gallery.png").stat().st_size > 0


def test_contrast_data_sources():
    from attacks.kkt.datasets import breast_cancer_task, correlated_task

    task, held = breast_cancer_task(10, seed=0)
    assert task.X.shape == (20, 30) and len(held) == 569 - 20  # real data: every other sample is a non-member
    assert np.allclose(task.X.mean(0), 0.0, atol=1e-9)
    ind, _ = correlated_task(200, 64, 0.0, seed=0)
    cor, _ = correlated_task(200, 64, 0.9, seed=0)
    lag1 = [np.corrcoef(t.X[:, 10], t.X[:, 11])[0, 1] for t in (ind, cor)]
    assert abs(lag1[0]) < 0.2 and 0.8 < lag1[1] < 0.97  # AR(1): neighbouring features correlate with rho
    with pytest.raises(DataError):
        correlated_task(5, 10, 1.0)


def test_spatial_generator_baseline_and_contrast_end_to_end(tmp_path):
    from attacks.kkt.experiments import Settings, run_contrast, run_spatial

    s = Settings(width=16, train_steps=30, lbfgs_steps=5, steps=20, device="cpu")
    sp = run_spatial(tmp_path, s, sizes=(4, 100), generators=("rect",), n_per_class=3, progress=False, n_fresh=30)
    for r in sp["runs"]:
        assert r["advantage_over_generator"] == pytest.approx(r["generator_error_mean"] - r["error_mean"])
        assert 0 <= r["n_beats_generator"] <= 3
    # no model needed for this: 100-pixel rectangles are matched far better by fresh images than 2x2 ones
    assert sp["runs"][1]["generator_error_mean"] < sp["runs"][0]["generator_error_mean"]
    assert (tmp_path / "spatial.csv").read_text().startswith("generator,blob_size")
    ct = run_contrast(tmp_path, s, rhos=(0.5,), n_features=40, n_per_class=4, progress=False)
    assert [r["data"] for r in ct["rows"]] == ["breast_cancer", "ar1_rho0.5"]
    assert all({"reference_ncc_median", "noise_ncc_median", "n_beats_reference"} <= set(r) for r in ct["rows"])
    assert (tmp_path / "contrast.png").stat().st_size > 0
