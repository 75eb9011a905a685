"""DP-SGD (Opacus) for the KKT reconstruction's networks, and the attack against them.

Victim: the bias-free ReLU MLP of :mod:`attacks.kkt` (8x8 digits, even vs odd, n training images),
trained with the logistic loss and weight decay. Non-private: :func:`attacks.kkt.model.train_classifier`
(Adam + L-BFGS to a stationary point, where the KKT equation holds exactly -- what the attack uses).
Private: DP-SGD (Abadi et al., CCS 2016) through Opacus 1.6 -- per-example gradients clipped to
``max_grad_norm``, Gaussian noise, Poisson sampling, the accountant (RDP) calibrating the noise
multiplier to (epsilon, delta) for the number of epochs -- on the same architecture and loss.

Metric: the KKT attack's reconstructions matched to training images by NCC (median NCC and the
number above 0.9), beside the nearest *held-out* digit of the same classes (a sample of the
distribution: beating it means information about that very training image).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn
from attacks.kkt.attack import reconstruct
from attacks.kkt.datasets import digits_task
from attacks.kkt.experiments import Settings
from attacks.kkt.metrics import match
from attacks.kkt.model import HomogeneousMLP, train_classifier


def make_private(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epsilon: float, delta: float = 1e-5,
                 epochs: int = 60, batch_size: int = 25, lr: float = 0.5, max_grad_norm: float = 1.0,
                 weight_decay: float = 1e-3, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Opacus's (model, optimizer, Poisson loader, engine) calibrated to (epsilon, delta) over
    ``epochs``: each step adds N(0, (noise_multiplier * max_grad_norm)^2) to the sum of clipped
    per-example gradients, then divides by the expected batch size."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    model.to(torch.float32)
    ds = TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    engine = PrivacyEngine(accountant="rdp")
    model_p, opt_p, loader_p = engine.make_private_with_epsilon(
        module=model, optimizer=opt, data_loader=loader, target_epsilon=epsilon, target_delta=delta,
        epochs=epochs, max_grad_norm=max_grad_norm)
    return model_p, opt_p, loader_p, engine


def train_dpsgd(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epsilon: float, delta: float = 1e-5,
                epochs: int = 60, batch_size: int = 25, lr: float = 0.5, max_grad_norm: float = 1.0,
                weight_decay: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Train ``model`` in place with DP-SGD to (epsilon, delta)-DP; returns the accounting."""
    model_p, opt_p, loader_p, engine = make_private(
        model, X, y, epsilon=epsilon, delta=delta, epochs=epochs, batch_size=batch_size, lr=lr,
        max_grad_norm=max_grad_norm, weight_decay=weight_decay, seed=seed)
    for _ in range(epochs):
        for xb, yb in loader_p:
            if len(xb) == 0:
                continue
            opt_p.zero_grad()
            loss = nn.functional.softplus(-yb * model_p(xb).reshape(-1)).mean()
            loss.backward()
            opt_p.step()
    return {"epsilon": float(engine.get_epsilon(delta)), "delta": delta,
            "noise_multiplier": float(opt_p.noise_multiplier), "max_grad_norm": max_grad_norm,
            "epochs": epochs, "batch_size": batch_size}


def kkt_against_dpsgd(epsilons: tuple[float | None, ...] = (None, 8.0, 1.0), *, n_train: int = 50,
                      width: int = 256, attack_steps: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """The KKT attack on a non-private victim (epsilon None) and on DP-SGD victims."""
    task, held = digits_task(n_train, seed, "parity")
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed + 5)
    test_idx = rng.choice(len(d.target), 400, replace=False)
    Xte = d.data[test_idx] / 16.0 - task.mean
    yte = np.where(d.target[test_idx] % 2 == 0, 1.0, -1.0)
    s = Settings(width=width, steps=attack_steps, seed=seed, device="cpu")
    _, ref = match(task.X, held - task.mean, "ncc")
    rows = []
    for eps in epsilons:
        t0 = time.perf_counter()
        model = HomogeneousMLP(task.X.shape[1], (width,) * 2, seed=seed)
        if eps is None:
            rep = train_classifier(model, task.X, task.y, steps=1000, lr=1e-3, weight_decay=1e-3,
                                   lbfgs_steps=300, device="cpu")
            acct: dict[str, Any] = {"epsilon": None}
            train_loss = rep.loss
        else:
            acct = train_dpsgd(model, task.X, task.y, epsilon=eps, seed=seed)
            model.to(torch.float64)
            with torch.no_grad():
                train_loss = float(nn.functional.softplus(-torch.tensor(task.y) * model(torch.tensor(task.X)).reshape(-1)).mean())
        model.to(torch.float64)
        with torch.no_grad():
            acc = float(((model(torch.tensor(Xte)).reshape(-1).numpy() > 0) == (yte > 0)).mean())
        rec = reconstruct(model, task.lower, task.upper, s.attack_config(task.n, "binary"), device="cpu")
        _, ncc = match(task.X, rec.x, "ncc")
        rows.append({"attack": "kkt", "epsilon": eps, **acct, "test_accuracy": acc, "train_loss": train_loss,
                     "ncc_median": float(np.median(ncc)), "n_ncc_gt_0.9": int((ncc > 0.9).sum()),
                     "n_beats_heldout": int((ncc > ref).sum()), "heldout_ncc_median": float(np.median(ref)),
                     "n_train": n_train, "width": width, "attack_steps": attack_steps,
                     "seconds": time.perf_counter() - t0})
    return rows
