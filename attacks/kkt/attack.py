"""The KKT reconstruction attack (Haim et al. 2022) and its regression variant (Buzaglo et al. 2023).

Threat model: gray-box. The attacker holds the trained parameters theta of a bias-free ReLU MLP, knows
the architecture, the task (binary classification or regression) and the range of the input features
(e.g. pixel values in [0, 1], or the public feature standardisation). It never sees a training point.

If training reached a KKT point of margin maximisation (or a stationary point of a weight-decayed
objective), then

    binary:      theta = sum_i lambda_i y_i grad_theta Phi(theta; x_i),   lambda_i >= 0
    regression:  theta = sum_i lambda_i     grad_theta Phi(theta; x_i),   lambda_i real

and the attack searches for m candidates x_j and multipliers lambda_j that satisfy the equation:

    minimise  ||theta - sum_j lambda_j y_j grad_theta Phi(x_j)||^2 / ||theta||^2
              + sum_j relu(lambda_min - lambda_j)               (binary only: keeps lambda_j active)
              + w_prior * sum_j ||relu(x_j - hi)||^2 + ||relu(lo - x_j)||^2     (data-range prior)

starting from small random noise. Candidates that end up with a small residual contribution tend to
lie on training points (the support vectors of the margin problem).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from attacks.kkt.model import HomogeneousMLP, resolve_device
from secureml.errors import SecureMLError


class AttackError(SecureMLError, ValueError):
    """Bad attack configuration (sizes, bounds, task)."""


@dataclass
class KKTConfig:
    """Hyper-parameters of the reconstruction.

    Attributes:
        n_candidates: number m of candidate inputs (Haim et al.: 2x the training-set size).
        steps: optimisation steps (Adam on x and lambda).
        lr_x, lr_lambda: Adam learning rates of candidates and multipliers.
        lambda_min: lower bound on the binary multipliers (penalty), relative to ||theta|| = 1.
        init_scale: std of the Gaussian initialisation of the candidates.
        prior_weight: weight of the data-range penalty.
        task: "binary" (labels of candidates: half +1, half -1), "regression" (lambda unconstrained) or
            "multiclass" (Buzaglo et al. 2023: candidate j gets class j mod K; see ``multiclass_pairs``).
        multiclass_pairs: "all" (default): the full KKT form of multiclass margin maximisation, one
            multiplier lambda_jk >= 0 per competing class k != y_j and the terms lambda_jk grad
            (Phi_{y_j} - Phi_k)(x_j), with sum_k lambda_jk >= lambda_min; "strongest": a single term per
            candidate against its strongest other class (re-chosen every step). The single term cannot
            express a trained network: on the 100-image MNIST victim the true training set itself only
            fits it to a residual of 0.26 (all pairs: 0.0023), because the strongest competitor
            carries a median 31% of the competing softmax mass.
        closed_form: compute the loss gradient with :func:`kkt_loss_grad` (exact, about 1.3x faster
            than autograd's double backward on the CPU and far lighter on memory) instead of autograd.
        reseed_every: every so many steps (during the first ``reseed_until`` fraction of the run),
            candidates that duplicate another one (NCC > ``reseed_ncc``) are re-initialised from
            noise. Without it many candidates collapse onto the same dominant training point. 0 = off.
        seed: seed of the initialisation.
        lr_schedule: "constant" (default) or "cosine": both learning rates decay to 0 along a half
            cosine over the run. Why: with a constant rate Adam's residual spikes late in long runs
            (e.g. 0.007 -> 0.14 at step 1,400 of the multiclass MNIST run), which scatters candidates.
        snapshot_at: steps after which a copy of the candidates is kept (``Reconstruction.snapshots``):
            one long run then also says what shorter runs of the same trajectory would have found.
        optimizer: "adam" (default) or "sgd" (with ``momentum``): Haim et al.'s reconstruction optimiser
            is SGD with momentum 0.9, on a smoothed-ReLU copy of the network (``smooth_relu``).
        momentum: momentum of "sgd" (ignored by Adam).
        smooth_relu: 0 (default) = attack the exact ReLU network; beta > 0 = the candidates' gradient is
            taken through a copy whose ReLUs are softplus(beta z) / beta (Haim et al.'s smoothing; their
            best MNIST run used about 150), beta at the scale of the victim as given (before the
            attack's normalisation to norm(theta) = 1). Why: with the exact ReLU the KKT sum depends on x only
            through the activations, the masks being piecewise constant, so no gradient tells a
            candidate that moving would switch a unit on or off. The smooth copy needs autograd's
            double backward (the closed form of :func:`kkt_loss_grad` assumes exact masks), so
            ``closed_form`` is ignored. ``Reconstruction.residual`` is that of the exact network; the
            ``history`` records the smooth copy's residual, which the optimiser sees.
    """

    n_candidates: int = 200
    steps: int = 3000
    lr_x: float = 0.01
    lr_lambda: float = 0.01
    lambda_min: float = 0.05
    init_scale: float = 1e-2
    prior_weight: float = 1.0
    task: str = "binary"
    reseed_every: int = 250
    reseed_ncc: float = 0.9
    reseed_until: float = 0.6
    seed: int = 0
    closed_form: bool = True
    multiclass_pairs: str = "all"
    lr_schedule: str = "constant"
    snapshot_at: tuple[int, ...] = ()
    optimizer: str = "adam"
    momentum: float = 0.9
    smooth_relu: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reconstruction:
    """The attack's output: candidates, multipliers, their labels, and the residual history."""

    x: np.ndarray
    lam: np.ndarray
    y: np.ndarray
    residual: float
    history: list[tuple[int, float]] = field(default_factory=list)
    initial_residual: float = float("nan")
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)


def _flat_params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach() for p in model.parameters()]


def kkt_terms(model: nn.Module, x: torch.Tensor, coef: torch.Tensor,
              create_graph: bool = True) -> list[torch.Tensor]:
    """sum_j coef_j grad_theta Phi(theta; x_j), one tensor per parameter (differentiable in x, coef)."""
    params = list(model.parameters())
    out = model(x)
    return list(torch.autograd.grad((coef * out).sum(), params, create_graph=create_graph))


def _kkt_core(weights: list[torch.Tensor], x: torch.Tensor, coef: torch.Tensor, out_sign: torch.Tensor):
    """Shared forward/backward of :func:`kkt_loss_grad`; also returns activations, masks and R_l."""
    L = len(weights)
    acts, masks = [x], []
    a = x
    for W in weights[:-1]:
        z = a @ W.T
        D = (z > 0).to(x.dtype)
        a = z * D
        masks.append(D)
        acts.append(a)
    deltas: list[torch.Tensor] = [out_sign.to(x.dtype)] * L
    for li in range(L - 2, -1, -1):
        deltas[li] = masks[li] * (deltas[li + 1] @ weights[li + 1])
    res = x.new_zeros(())
    R = []
    for li, W in enumerate(weights):
        diff = (deltas[li] * coef[:, None]).T @ acts[li] - W
        res = res + (diff ** 2).sum()
        R.append(2.0 * diff)
    gcoef = torch.zeros_like(coef)
    ga: torch.Tensor | None = None
    for li in range(L - 1, -1, -1):
        P = deltas[li] @ R[li]
        gcoef = gcoef + (P * acts[li]).sum(1)
        g_here = coef[:, None] * P if ga is None else coef[:, None] * P + ga
        ga = (g_here * masks[li - 1]) @ weights[li - 1] if li > 0 else g_here
    assert ga is not None
    return res, ga, gcoef, acts, masks, R


def kkt_loss_grad(weights: list[torch.Tensor], x: torch.Tensor, coef: torch.Tensor, out_sign: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual ||theta - G||^2 with G = sum_j coef_j grad_theta (out_sign_j . Phi(x_j)), and its exact
    gradients with respect to ``x`` and ``coef``, for a bias-free ReLU MLP given by ``weights``
    (``[W_1, ..., W_L]``, shapes (out, in)).

    Why closed form: for such a network the per-sample output gradient of layer l is the outer
    product delta_l(x) a_{l-1}(x)^T, where the backward signal delta_l depends on x only through the
    ReLU masks (piecewise constant), so G_l = (c * Delta_l)^T A_{l-1} and its derivative in x needs
    one ordinary backward pass through the activations -- no double backward, no graph kept.
    Steps: (1) forward pass keeping activations A_l and masks D_l; (2) Delta_L = out_sign,
    Delta_l = D_l * (Delta_{l+1} W_{l+1}); (3) R_l = 2 (G_l - W_l); (4) P_l = Delta_l R_l gives
    d/dcoef_j = sum_l <P_l[j], A_{l-1}[j]> and the direct term coef_j P_l[j] on A_{l-1}; (5) those
    terms are back-propagated through the masks to x.
    Cost: about 4 (d_in + sum of hidden products) multiply-adds per candidate per hidden unit pair,
    i.e. 8 matrix products of size m x width x width for D-1000-1000-1.
    """
    res, ga, gcoef, _, _, _ = _kkt_core(weights, x, coef, out_sign)
    return res, ga, gcoef


def kkt_loss_grad_outputs(weights: list[torch.Tensor], x: torch.Tensor, coef: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual ||theta - sum_j sum_k C_jk grad_theta Phi_k(x_j)||^2 for a coefficient *matrix* C
    (m x K, one entry per candidate and output), and its exact gradients in ``x`` and in C.

    Why: the multiclass KKT form has one multiplier per (sample, competing class) (Buzaglo et al.
    2023), so the attack needs d/dC_jk, not only the derivative along one fixed sign pattern.
    Steps: (1)-(5) of :func:`kkt_loss_grad` with Delta_L = C and coef = 1 give the residual and d/dx;
    (6) d/dC_jk = sum_l delta_l^(k)(x_j) . (R_l a_{l-1}(x_j)), accumulated *forward* through the masks:
    H_1 = A_0 R_1^T, H_l = A_{l-1} R_l^T + (H_{l-1} * D_{l-1}) W_l^T, and d/dC = H_L (m x K). This costs
    L more matrix products of size m x in_l x out_l instead of K backward passes.
    """
    ones = torch.ones(len(x), dtype=x.dtype, device=x.device)
    res, ga, _, acts, masks, R = _kkt_core(weights, x, ones, coef)
    H = acts[0] @ R[0].T
    for li in range(1, len(weights)):
        H = acts[li] @ R[li].T + (H * masks[li - 1]) @ weights[li].T
    return res, ga, H


def pair_coefficients(lam: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """C = sum_{k != y_j} lambda_jk (e_{y_j} - e_k) row by row: the multiclass margin terms
    lambda_jk grad (Phi_{y_j} - Phi_k)(x_j) as one coefficient per (candidate, output)."""
    lam = lam.scatter(1, cls[:, None], 0.0)
    C = -lam
    return C.scatter(1, cls[:, None], lam.sum(1, keepdim=True))


def multiclass_signs(out: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """+1 at each candidate's class, -1 at its strongest other class (Buzaglo et al.'s margin term)."""
    other = out.scatter(1, cls[:, None], -float("inf")).argmax(1)
    s = torch.zeros_like(out)
    s.scatter_(1, cls[:, None], 1.0)
    s.scatter_(1, other[:, None], -1.0)
    return s


def kkt_residual(model: nn.Module, x: np.ndarray | torch.Tensor, lam: np.ndarray | torch.Tensor,
                 y: np.ndarray | torch.Tensor | None = None) -> float:
    """Relative KKT residual ||theta - sum_j lambda_j y_j grad Phi(x_j)||^2 / ||theta||^2.

    ``y`` None means the regression form (no labels). For a network with several outputs ``y`` are
    class indices and the term is lambda_j grad (Phi_{y_j} - Phi_{k_j})(x_j) (see :func:`multiclass_signs`).
    """
    p0 = next(model.parameters())
    dev, dt = p0.device, p0.dtype
    xt = torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x), dtype=dt, device=dev)
    coef = torch.as_tensor(lam if isinstance(lam, torch.Tensor) else np.asarray(lam), dtype=dt, device=dev)
    theta = _flat_params(model)
    den = sum((p ** 2).sum() for p in theta)
    if isinstance(model, HomogeneousMLP):
        with torch.no_grad():
            if model.out_dim > 1:
                if y is None:
                    raise AttackError("a multiclass residual needs the candidates' classes")
                cls = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, device=dev).long()
                if coef.ndim == 2:  # one multiplier per (candidate, competing class)
                    num, _, _ = kkt_loss_grad_outputs([lin.weight.detach() for lin in model.layers], xt,
                                                      pair_coefficients(coef, cls))
                    return float(num / den)
                sign = multiclass_signs(model(xt), cls)
            elif y is not None:
                sign = torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y), dtype=dt, device=dev)[:, None]
            else:
                sign = torch.ones(len(xt), 1, dtype=dt, device=dev)
            num, _, _ = kkt_loss_grad([lin.weight.detach() for lin in model.layers], xt, coef, sign)
        return float(num / den)
    if y is not None:
        coef = coef * torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y), dtype=dt, device=dev)
    grads = kkt_terms(model, xt, coef, create_graph=False)
    num = sum(((p - g) ** 2).sum() for p, g in zip(theta, grads))
    return float(num / den)


def fit_multipliers(model: nn.Module, x: np.ndarray, y: np.ndarray | None = None,
                    nonneg: bool = True) -> tuple[np.ndarray, float]:
    """Best multipliers for given points (NNLS for the binary form, least squares otherwise).

    Applied to the true training set, the residual says how close the trained model is to the KKT
    condition: a floor for what the attack can reach. Returns (lambda, relative residual).
    """
    from scipy.optimize import nnls

    p0 = next(model.parameters())
    xt = torch.as_tensor(np.asarray(x), dtype=p0.dtype, device=p0.device)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def phi(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    per = torch.func.vmap(torch.func.grad(phi), in_dims=(None, 0))(params, xt)
    G = torch.cat([per[k].reshape(len(xt), -1) for k in params], dim=1).T.double().cpu().numpy()
    if y is not None:
        G = G * np.asarray(y, dtype=float)[None, :]
    theta = torch.cat([v.reshape(-1) for v in params.values()]).double().cpu().numpy()
    if nonneg:
        lam, _ = nnls(G, theta, maxiter=50 * G.shape[1])
    else:
        lam = np.linalg.lstsq(G, theta, rcond=None)[0]
    res = float(np.sum((theta - G @ lam) ** 2) / np.sum(theta ** 2))
    return lam, res


def reconstruct(model: HomogeneousMLP, lower: np.ndarray | float, upper: np.ndarray | float,
                config: KKTConfig | None = None, *, device: str | torch.device | None = None,
                progress: bool = False, record_every: int = 100,
                on_snapshot: Callable[[int, np.ndarray], None] | None = None) -> Reconstruction:
    """Run the KKT attack on ``model`` (its parameters are normalised to ||theta|| = 1 on a copy).

    Args:
        model: the trained homogeneous MLP (gray-box access: its parameters).
        lower, upper: per-feature (or scalar) data range of the model's inputs, for the prior.
        config: hyper-parameters (defaults: :class:`KKTConfig`).
        device: torch device ("auto": CUDA when present).
        on_snapshot: called with (step, candidates) at every ``config.snapshot_at`` step, e.g. to save
            them while a long run is still going.

    For ``task="multiclass"`` the returned ``y`` holds each candidate's class index.
    """
    cfg = config or KKTConfig()
    if cfg.task not in ("binary", "regression", "multiclass"):
        raise AttackError(f"task must be 'binary', 'regression' or 'multiclass', not {cfg.task!r}")
    if cfg.n_candidates < 1 or cfg.steps < 0:
        raise AttackError("n_candidates must be >= 1 and steps >= 0")
    if cfg.reseed_every < 0:
        raise AttackError("reseed_every must be >= 0 (0 = no re-seeding)")
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise AttackError(f"lr_schedule must be 'constant' or 'cosine', not {cfg.lr_schedule!r}")
    if cfg.multiclass_pairs not in ("all", "strongest"):
        raise AttackError(f"multiclass_pairs must be 'all' or 'strongest', not {cfg.multiclass_pairs!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise AttackError(f"optimizer must be 'adam' or 'sgd', not {cfg.optimizer!r}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise AttackError(f"momentum must be in [0, 1), not {cfg.momentum}")
    if cfg.smooth_relu < 0:
        raise AttackError(f"smooth_relu must be >= 0 (0 = exact ReLU), not {cfg.smooth_relu}")
    if (cfg.task == "multiclass") != (model.out_dim > 1):
        raise AttackError(f"task {cfg.task!r} does not fit a network with {model.out_dim} output(s)")
    dev = resolve_device(device)
    closed = cfg.closed_form and not cfg.smooth_relu
    net = HomogeneousMLP(model.in_dim, model.hidden, out_dim=model.out_dim)
    net.load_state_dict(model.state_dict())
    net.to(dev)
    c = net.normalize_(1.0)
    # The smooth copy shares the normalised weights. beta is meant at the victim's own scale (Haim et al.
    # smooth the trained model as it is): normalising scales layer l's pre-activations by c**l, so the
    # same smoothing there is softplus with beta / c**l.
    att = net
    if cfg.smooth_relu:
        betas = tuple(cfg.smooth_relu / c ** (k + 1) for k in range(len(model.hidden)))
        att = HomogeneousMLP(model.in_dim, model.hidden, out_dim=model.out_dim, smooth_beta=betas)
        att.load_state_dict(net.state_dict())
        att.to(dev)
    for p in att.parameters():
        p.requires_grad_(not closed)
    d, m = model.in_dim, cfg.n_candidates
    lo = torch.as_tensor(np.broadcast_to(np.asarray(lower, dtype=np.float32), (d,)).copy(), device=dev)
    hi = torch.as_tensor(np.broadcast_to(np.asarray(upper, dtype=np.float32), (d,)).copy(), device=dev)
    if bool((hi <= lo).any()):
        raise AttackError("upper bound must exceed lower bound for every feature")
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    x = (torch.randn(m, d, generator=gen) * cfg.init_scale).to(dev).requires_grad_(True)
    signed = cfg.task != "regression"  # lambda_j >= lambda_min
    if cfg.task == "binary":
        yc = torch.where(torch.arange(m) % 2 == 0, 1.0, -1.0).to(dev)
    elif cfg.task == "multiclass":
        yc = (torch.arange(m) % model.out_dim).to(dev)
    else:
        yc = torch.ones(m, device=dev)
    pairs = cfg.task == "multiclass" and cfg.multiclass_pairs == "all"
    other = None
    if pairs:
        # lambda_jk >= 0 for k != y_j (the own-class column stays 0); the total starts at 2 lambda_min.
        K = model.out_dim
        other = torch.ones(m, K, device=dev).scatter(1, yc[:, None], 0.0)
        lam = other * ((float(cfg.lambda_min) * 2 if cfg.lambda_min > 0 else 0.1) / (K - 1))
    elif signed:
        lam = torch.full((m,), float(cfg.lambda_min) * 2 if cfg.lambda_min > 0 else 0.1, device=dev)
    else:
        lam = (torch.randn(m, generator=gen) * 0.1).to(dev)
    lam0 = lam.clone()
    lam.requires_grad_(True)
    theta = _flat_params(net)
    weights = [lin.weight.detach() for lin in net.layers]
    groups = [{"params": [x], "lr": cfg.lr_x}, {"params": [lam], "lr": cfg.lr_lambda}]
    opt: torch.optim.Optimizer = (torch.optim.SGD(groups, momentum=cfg.momentum) if cfg.optimizer == "sgd"
                                  else torch.optim.Adam(groups))
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.steps, 1))
             if cfg.lr_schedule == "cosine" else None)
    history: list[tuple[int, float]] = []
    snaps: dict[int, np.ndarray] = {}
    keep = {int(k) for k in cfg.snapshot_at if 0 < int(k) <= cfg.steps}
    it = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="reconstruct", leave=False)
    initial = float("nan")
    for step in it:
        opt.zero_grad(set_to_none=True)
        if closed:
            with torch.no_grad():
                if pairs:
                    residual, gx, gC = kkt_loss_grad_outputs(weights, x, pair_coefficients(lam, yc))
                    # C_jy = sum_k lambda_jk, C_jk = -lambda_jk: d/dlambda_jk = d/dC_jy - d/dC_jk
                    glam = (gC.gather(1, yc[:, None]) - gC) * other
                    glam = glam - (lam.sum(1, keepdim=True) < cfg.lambda_min).to(glam.dtype) * other
                else:
                    sign = multiclass_signs(net(x), yc) if cfg.task == "multiclass" else yc[:, None]
                    residual, gx, glam = kkt_loss_grad(weights, x, lam, sign)
                    if signed:
                        glam = glam - (lam < cfg.lambda_min).to(glam.dtype)
                if cfg.prior_weight:
                    gx = gx + 2.0 * cfg.prior_weight * (torch.relu(x - hi) - torch.relu(lo - x))
                x.grad, lam.grad = gx, glam
        else:
            if pairs:
                grads = kkt_terms(att, x, pair_coefficients(lam, yc))
            elif cfg.task == "multiclass":
                with torch.no_grad():
                    coef_sign = multiclass_signs(att(x), yc)
                grads = kkt_terms(att, x, lam[:, None] * coef_sign)
            else:
                grads = kkt_terms(att, x, lam * yc)
            residual = sum(((p - g) ** 2).sum() for p, g in zip(theta, grads))
            loss = residual
            if pairs:
                loss = loss + torch.relu(cfg.lambda_min - lam.sum(1)).sum()
            elif signed:
                loss = loss + torch.relu(cfg.lambda_min - lam).sum()
            if cfg.prior_weight:
                loss = loss + cfg.prior_weight * ((torch.relu(x - hi) ** 2).sum() + (torch.relu(lo - x) ** 2).sum())
            loss.backward(inputs=[x, lam])  # theta is fixed: skip accumulating its gradient
        opt.step()
        if sched is not None:
            sched.step()
        if pairs:
            with torch.no_grad():  # projection onto lambda_jk >= 0 (the KKT multipliers' sign)
                lam.clamp_(min=0.0).mul_(other)
        r = float(residual.detach())
        if step == 0:
            initial = r
        if cfg.reseed_every and step and step % cfg.reseed_every == 0 and step < cfg.reseed_until * cfg.steps:
            _reseed_duplicates(x, lam, lam0, yc, opt, cfg, gen)
        if step + 1 in keep:
            snaps[step + 1] = x.detach().cpu().numpy().copy()
            if on_snapshot is not None:
                on_snapshot(step + 1, snaps[step + 1])
        if step % record_every == 0 or step == cfg.steps - 1:
            history.append((step, r))
            if progress:
                it.set_postfix(residual=f"{r:.4f}")
    lam_final = lam.detach()
    final = kkt_residual(net, x.detach(), lam_final, None if cfg.task == "regression" else yc)
    if cfg.steps == 0:
        initial = final
    return Reconstruction(x=x.detach().cpu().numpy(), lam=lam_final.cpu().numpy(), y=yc.cpu().numpy(),
                          residual=final, history=history, initial_residual=initial, snapshots=snaps)


def _reseed_duplicates(x: torch.Tensor, lam: torch.Tensor, lam0: torch.Tensor, yc: torch.Tensor,
                       opt: torch.optim.Optimizer, cfg: KKTConfig, gen: torch.Generator) -> int:
    """Re-initialise candidates that nearly duplicate an earlier candidate with the same label.

    Uses only the candidates themselves (no training data). Returns how many were re-seeded.
    """
    with torch.no_grad():
        c = x - x.mean(1, keepdim=True)
        c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = c @ c.T
        same = yc[:, None] == yc[None, :]
        dup = torch.triu((sim > cfg.reseed_ncc) & same, diagonal=1).any(0)
        rows = torch.nonzero(dup).squeeze(1)
        if len(rows) == 0:
            return 0
        x[rows] = (torch.randn(len(rows), x.shape[1], generator=gen) * cfg.init_scale).to(x.device)
        lam[rows] = lam0[rows]
        for p in (x, lam):
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in st:
                    st[key][rows] = 0.0
    return int(len(rows))
