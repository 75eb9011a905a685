"""Bias-free (positively homogeneous) ReLU MLPs and the training regimes the KKT attack relies on.

A ReLU MLP without biases is positively homogeneous in its parameters: scaling every layer by ``c``
scales the output by ``c**L``. For such networks trained with an exponentially tailed loss (logistic)
to near-zero loss, gradient flow converges in direction to a KKT point of the margin-maximisation
problem (Lyu & Li 2020, Ji & Telgarsky 2020), which is what Haim et al. (2022) exploit. With explicit
weight decay any stationary point of the regularised objective satisfies the same stationarity
equation exactly (Buzaglo et al. 2023), whichever optimiser found it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from secureml.errors import ModelError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/None -> the CUDA device when present, else CPU; anything else is passed to torch."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class HomogeneousMLP(nn.Module):
    """``x -> W_L relu(... relu(W_1 x))``: a bias-free ReLU MLP with one scalar output.

    Args:
        in_dim: input dimension D.
        hidden: widths of the hidden layers, e.g. ``(1000, 1000)`` for D-1000-1000-1.
        init_scale: multiplies the default (He-uniform) initialisation; small values push training
            towards the feature-learning regime in which the KKT directional limit is approached.
        seed: seed of the initialisation.
        smooth_beta: 0 (default) = the exact ReLU; > 0 = softplus(beta z) / beta in its place, a smooth
            copy used only by the attack (Haim et al. reconstruct through a smoothed ReLU so that the
            gradient in the candidates sees the units' switching; the victim itself is never smoothed).
            A sequence gives one beta per hidden layer (the attack rescales beta with each layer's
            share of the parameter normalisation, see :func:`attacks.kkt.attack.reconstruct`).
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (1000, 1000), init_scale: float = 1.0,
                 seed: int = 0, out_dim: int = 1, smooth_beta: float | tuple[float, ...] = 0.0) -> None:
        super().__init__()
        if in_dim < 1 or not hidden or min(hidden) < 1 or out_dim < 1:
            raise ModelError(f"bad MLP shape: in_dim={in_dim}, hidden={hidden}, out_dim={out_dim}")
        dims = [in_dim, *hidden, out_dim]
        gen = torch.Generator().manual_seed(seed)
        layers = []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            lin = nn.Linear(a, b, bias=False)
            # He-uniform for hidden ReLU layers; the linear output layer(s) get half the variance
            bound = math.sqrt(3.0 / a) if k == len(dims) - 2 or b == 1 else math.sqrt(6.0 / a)
            with torch.no_grad():
                lin.weight.copy_((torch.rand(b, a, generator=gen) * 2 - 1) * bound * init_scale)
            layers.append(lin)
        self.layers = nn.ModuleList(layers)
        self.in_dim = in_dim
        self.hidden = tuple(hidden)
        self.out_dim = out_dim
        betas = (tuple(float(b) for b in smooth_beta) if isinstance(smooth_beta, (tuple, list))
                 else (float(smooth_beta),) * len(hidden))
        if len(betas) != len(hidden) or min(betas) < 0 or (0 in betas and max(betas) > 0):
            raise ModelError(f"smooth_beta must be 0 (exact ReLU) or > 0 for each of {len(hidden)} hidden layers, "
                             f"not {smooth_beta}")
        self.smooth_beta = betas if betas[0] > 0 else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One output per row of ``x``: shape (n,) for a scalar network, (n, out_dim) otherwise."""
        h = x
        for k, lin in enumerate(self.layers[:-1]):
            z = lin(h)
            # softplus(beta z) / beta -> relu(z) as beta grows; torch switches to z itself above beta z > 20
            h = torch.nn.functional.softplus(z, beta=self.smooth_beta[k]) if self.smooth_beta else torch.relu(z)
        out = self.layers[-1](h)
        return out.squeeze(-1) if self.out_dim == 1 else out

    @property
    def depth(self) -> int:
        """Number of weight layers L (the degree of homogeneity in the parameters)."""
        return len(self.layers)

    def param_norm(self) -> float:
        return float(torch.sqrt(sum((p.detach() ** 2).sum() for p in self.parameters())))

    def normalize_(self, target_norm: float = 1.0) -> float:
        """Rescale every layer by the same factor so that ||theta|| = ``target_norm``.

        The KKT condition is a statement about the direction of theta, so the attacker may pick the
        scale; a fixed scale makes ``lambda_min`` comparable between models. Returns the factor.
        """
        c = target_norm / self.param_norm()
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(c)
        return c


@dataclass
class TrainReport:
    """What training reached: final loss, accuracy, margins, stationarity and the loss curve."""

    loss: float
    accuracy: float
    min_margin: float
    steps: int
    grad_norm: float
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "min_margin": self.min_margin,
                "steps": self.steps, "grad_norm": self.grad_norm}


def _as_tensor(a: np.ndarray | torch.Tensor, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a, dtype=dtype, device=device)


def train_classifier(model: HomogeneousMLP, X: np.ndarray, y: np.ndarray, *, steps: int = 20000,
                     lr: float = 0.05, weight_decay: float = 0.0, target_loss: float = 0.0,
                     normalized: bool = True, lbfgs_steps: int = 300, device: str | torch.device | None = None,
                     dtype: torch.dtype = torch.float64, progress: bool = False) -> TrainReport:
    """Full-batch gradient descent on the logistic loss, labels ``y`` in {-1, +1}.

    With ``weight_decay == 0`` this is the regime of Haim et al.: train to near-zero loss
    (``target_loss``) so that theta is close to a KKT point of margin maximisation. ``normalized``
    divides the step by the current loss: for a homogeneous net this follows the same gradient-flow
    trajectory (only time is reparametrised) but reaches tiny losses in far fewer steps.
    Training runs in ``dtype`` (float64 by default: float32 line searches stall long before the
    gradient is small compared with wd * theta, which is what the KKT residual measures).
    With ``weight_decay > 0`` the objective is loss + wd/2 ||theta||^2, minimised with Adam (``lr``)
    then full-batch L-BFGS; every stationary point satisfies the KKT equation exactly, with
    lambda_i = sigmoid(-y_i f(x_i)) / (n wd).
    """
    dev = resolve_device(device)
    model.to(dev, dtype)
    Xt, yt = _as_tensor(X, dev, dtype), _as_tensor(y, dev, dtype)
    if set(np.unique(np.asarray(y)).tolist()) - {-1.0, 1.0}:
        raise ModelError("binary labels must be -1 or +1")
    params = list(model.parameters())
    if weight_decay:
        history = _adam_lbfgs(model, lambda: nn.functional.softplus(-yt * model(Xt)).mean(), weight_decay,
                              steps, lr, lbfgs_steps, progress)
        grads = torch.autograd.grad(nn.functional.softplus(-yt * model(Xt)).mean()
                                    + 0.5 * weight_decay * sum((p ** 2).sum() for p in params), params)
        with torch.no_grad():
            margins = yt * model(Xt)
        return TrainReport(loss=float(nn.functional.softplus(-margins).mean()),
                           accuracy=float((margins > 0).float().mean()), min_margin=float(margins.min()),
                           steps=steps + lbfgs_steps,
                           grad_norm=float(torch.sqrt(sum((g ** 2).sum() for g in grads))), history=history)
    history: list[float] = []
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="train", leave=False)
    loss_v, gnorm = float("nan"), float("nan")
    step = 0
    for step in it:
        out = model(Xt)
        loss = nn.functional.softplus(-yt * out).mean()
        grads = torch.autograd.grad(loss, params)
        loss_v = float(loss.detach())
        gnorm = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
        if step % 50 == 0:
            history.append(loss_v)
        if loss_v < target_loss:
            break
        scale = lr / max(loss_v, 1e-12) if normalized else lr
        scale = min(scale, lr * 1e6)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(scale * g)
    with torch.no_grad():
        out = model(Xt)
        margins = yt * out
        loss_v = float(nn.functional.softplus(-margins).mean())
        acc = float((margins > 0).float().mean())
    return TrainReport(loss=loss_v, accuracy=acc, min_margin=float(margins.min()), steps=step + 1,
                       grad_norm=gnorm, history=history)


def train_multiclass(model: HomogeneousMLP, X: np.ndarray, labels: np.ndarray, *, steps: int = 1000,
                     lr: float = 1e-3, weight_decay: float = 1e-3, lbfgs_steps: int = 300,
                     device: str | torch.device | None = None, dtype: torch.dtype = torch.float64,
                     progress: bool = False) -> TrainReport:
    """Cross-entropy + wd/2 ||theta||^2 for a network with ``out_dim`` = number of classes.

    Stationarity (Buzaglo et al. 2023, multiclass): wd * theta = (1/n) sum_i sum_k (e_{y_i} - p_i)_k
    grad Phi_k(x_i), i.e. theta is a combination of per-class output gradients at the training points;
    the attack uses the form theta = sum_i lambda_i grad (Phi_{y_i} - Phi_{j_i})(x_i) with j_i the
    strongest competing class. ``min_margin`` is the smallest Phi_y - max_{k != y} Phi_k.
    """
    if weight_decay <= 0:
        raise ModelError("the multiclass attack needs weight_decay > 0 (stationarity)")
    lab = np.asarray(labels)
    if model.out_dim < 2 or lab.min() < 0 or lab.max() >= model.out_dim:
        raise ModelError(f"labels must be 0..{model.out_dim - 1} and the network must have >= 2 outputs")
    dev = resolve_device(device)
    model.to(dev, dtype)
    Xt = _as_tensor(X, dev, dtype)
    yt = torch.as_tensor(lab, dtype=torch.long, device=dev)
    params = list(model.parameters())

    def data_loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(Xt), yt)

    history = _adam_lbfgs(model, data_loss, weight_decay, steps, lr, lbfgs_steps, progress)
    obj = data_loss() + 0.5 * weight_decay * sum((p ** 2).sum() for p in params)
    grads = torch.autograd.grad(obj, params)
    with torch.no_grad():
        out = model(Xt)
        true = out.gather(1, yt[:, None]).squeeze(1)
        other = out.scatter(1, yt[:, None], -float("inf")).max(1).values
        margins = true - other
    return TrainReport(loss=float(data_loss().detach()), accuracy=float((margins > 0).double().mean()),
                       min_margin=float(margins.min()), steps=steps + lbfgs_steps,
                       grad_norm=float(torch.sqrt(sum((g ** 2).sum() for g in grads))), history=history)


def train_regressor(model: HomogeneousMLP, X: np.ndarray, y: np.ndarray, *, steps: int = 3000,
                    lr: float = 1e-3, weight_decay: float = 1e-4, lbfgs_steps: int = 300,
                    device: str | torch.device | None = None, dtype: torch.dtype = torch.float64,
                    progress: bool = False) -> TrainReport:
    """Squared loss + wd/2 ||theta||^2: Adam, then full-batch L-BFGS to reach a stationary point.

    Stationarity (Buzaglo et al. 2023) reads wd * theta = sum_i (y_i - f(x_i)) grad f(x_i), i.e.
    theta = sum_i lambda_i grad f(x_i) with real, unconstrained lambda_i. Stationarity does not depend
    on the optimiser, so Adam is used for speed and L-BFGS polishes the gradient to near zero.
    ``min_margin`` in the report is the largest absolute residual; ``accuracy`` is R^2.
    """
    if weight_decay <= 0:
        raise ModelError("the regression attack needs weight_decay > 0 (no stationarity without it)")
    dev = resolve_device(device)
    model.to(dev, dtype)
    Xt, yt = _as_tensor(X, dev, dtype), _as_tensor(y, dev, dtype)
    params = list(model.parameters())

    def data_loss() -> torch.Tensor:
        return 0.5 * ((model(Xt) - yt) ** 2).mean()

    history = _adam_lbfgs(model, data_loss, weight_decay, steps, lr, lbfgs_steps, progress)
    obj = data_loss() + 0.5 * weight_decay * sum((p ** 2).sum() for p in params)
    grads = torch.autograd.grad(obj, params)
    with torch.no_grad():
        pred = model(Xt)
        res = pred - yt
        r2 = 1.0 - float((res ** 2).sum() / ((yt - yt.mean()) ** 2).sum())
    return TrainReport(loss=float(0.5 * (res ** 2).mean()), accuracy=r2,
                       min_margin=float(res.abs().max()), steps=steps + lbfgs_steps,
                       grad_norm=float(torch.sqrt(sum((g ** 2).sum() for g in grads))), history=history)


def _adam_lbfgs(model: nn.Module, data_loss, weight_decay: float, steps: int, lr: float, lbfgs_steps: int,
                progress: bool) -> list[float]:
    """Minimise data_loss() + wd/2 ||theta||^2: Adam for ``steps``, then full-batch L-BFGS."""
    params = list(model.parameters())

    def objective() -> torch.Tensor:
        return data_loss() + 0.5 * weight_decay * sum((p ** 2).sum() for p in params)

    opt = torch.optim.Adam(params, lr=lr)
    history: list[float] = []
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="train", leave=False)
    for step in it:
        opt.zero_grad()
        obj = objective()
        obj.backward()
        opt.step()
        if step % 50 == 0:
            history.append(float(obj.detach()))
    if lbfgs_steps:
        lb = torch.optim.LBFGS(params, lr=1.0, max_iter=lbfgs_steps, tolerance_grad=1e-12,
                               tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            lb.zero_grad()
            o = objective()
            o.backward()
            return o

        lb.step(closure)
        history.append(float(objective().detach()))
    return history
