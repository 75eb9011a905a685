"""Haim et al.'s optimiser for the KKT attack: SGD with momentum on a smoothed-ReLU copy of the victim
(``--optimizer sgd --momentum 0.9 --smooth-relu BETA``). Tiny real models, seeded, CPU, seconds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.kkt.attack import AttackError, KKTConfig, reconstruct
from attacks.kkt.metrics import ncc_matrix
from attacks.kkt.model import HomogeneousMLP
from secureml.errors import ModelError
from tests.attacks.kkt.victims import tiny_parity_victim


def _victim(seed: int = 0):
    model, x, mu = tiny_parity_victim(seed)
    return model, x


def test_smooth_copy_tends_to_relu_and_survives_normalisation():
    model, x = _victim()
    xt = torch.as_tensor(x, dtype=torch.float64)

    def copy(src: HomogeneousMLP, beta) -> HomogeneousMLP:
        m = HomogeneousMLP(30, (40, 40), smooth_beta=beta).double()
        m.load_state_dict(src.state_dict())
        return m

    with torch.no_grad():
        exact = model.double()(xt)
        err_sharp = float((copy(model, 1e4)(xt) - exact).abs().max())
        soft = copy(model, 3.0)(xt)
        assert err_sharp < 1e-3 * float(exact.abs().max()) < float((soft - exact).abs().max())
        # beta / c**l on the normalised copy is the same smoothing: the outputs scale by exactly c**L
        norm = copy(model, 0.0)
        c = norm.normalize_(1.0)
        scaled = copy(norm, (3.0 / c, 3.0 / c ** 2))(xt)
        assert torch.allclose(scaled, soft * c ** 3, rtol=1e-9, atol=1e-14)
        assert not torch.allclose(copy(norm, 3.0)(xt), soft * c ** 3, rtol=1e-3)


def test_sgd_momentum_on_the_smooth_copy_recovers_the_training_points():
    model, x = _victim()
    lo, hi = x.min(0) - 0.5, x.max(0) + 0.5
    base = dict(n_candidates=16, steps=400, lr_x=0.3, lr_lambda=0.3, init_scale=0.01, reseed_every=0, seed=0)
    haim = reconstruct(model, lo, hi, KKTConfig(**base, optimizer="sgd", momentum=0.9, smooth_relu=150.0))
    again = reconstruct(model, lo, hi, KKTConfig(**base, optimizer="sgd", momentum=0.9, smooth_relu=150.0))
    assert np.array_equal(haim.x, again.x)  # seeded: the same run twice
    no_mom = reconstruct(model, lo, hi, KKTConfig(**base, optimizer="sgd", momentum=0.0, smooth_relu=150.0))
    exact = reconstruct(model, lo, hi, KKTConfig(**base, optimizer="sgd", momentum=0.9))
    # the residual is measured on the exact ReLU network in every case
    assert haim.residual < 0.05 * haim.initial_residual
    assert haim.residual < 0.2 * min(no_mom.residual, exact.residual)
    rng = np.random.default_rng(1)
    chance = ncc_matrix(x, rng.uniform(lo, hi, (1000, 30))).max(1)
    got = ncc_matrix(x, haim.x).max(1)
    assert (got > 0.95).sum() >= 6 and (got > chance + 0.25).sum() >= 6
    assert (got > 0.95).sum() > (ncc_matrix(x, exact.x).max(1) > 0.95).sum()


def test_bad_optimiser_settings_are_refused():
    model, x = _victim()
    for bad in (dict(optimizer="rmsprop"), dict(optimizer="sgd", momentum=1.0), dict(smooth_relu=-1.0)):
        with pytest.raises(AttackError):
            reconstruct(model, -1.0, 1.0, KKTConfig(n_candidates=4, steps=1, **bad))
    with pytest.raises(ModelError):
        HomogeneousMLP(30, (40, 40), smooth_beta=(1.0,))


def test_cli_flags_reach_the_attack_config(capsys):
    from attacks.kkt.experiments import Settings, parse_grid
    from secureml.cli import build_parser

    args = build_parser().parse_args(["reconstruct", "mnist", "--optimizer", "sgd", "--momentum", "0.8",
                                      "--smooth-relu", "150", "--lr-lambda", "0.01"])
    assert (args.optimizer, args.momentum, args.smooth_relu, args.lr_lambda) == ("sgd", 0.8, 150.0, 0.01)
    cfg = Settings(optimizer="sgd", momentum=0.8, smooth_relu=150.0, lr=1.0, lr_lambda=0.01).attack_config(10)
    assert (cfg.optimizer, cfg.momentum, cfg.smooth_relu, cfg.lr_x, cfg.lr_lambda) == ("sgd", 0.8, 150.0, 1.0, 0.01)
    assert Settings(lr=0.3).attack_config(10).lr_lambda == 0.3  # no --lr-lambda: the same rate as the candidates
    d = build_parser().parse_args(["reconstruct", "mnist"])
    assert (d.optimizer, d.momentum, d.smooth_relu, d.lr_lambda) == ("adam", 0.9, 0.0, None)
    assert parse_grid("smooth_relu=50,150;momentum=0.9;lr_lambda=0.01") == {
        "smooth_relu": [50.0, 150.0], "momentum": [0.9], "lr_lambda": [0.01]}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reconstruct", "mnist", "--help"])
    out = capsys.readouterr().out
    assert "--smooth-relu BETA" in out and "(default adam)" in out
