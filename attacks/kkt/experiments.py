"""The four KKT experiments: digits, spatial correlation, tabular contrast, molecules.

Each ``run_*`` trains the victim model(s), runs the attack, scores the reconstructions, writes a JSON
summary and PNG figures into ``out_dir`` and returns the summary dict.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from attacks.kkt.attack import KKTConfig, Reconstruction, reconstruct
from attacks.kkt.datasets import BinaryTask, digits_task, spatial_task, tabular_task
from attacks.kkt.metrics import match, minmax, ncc_matrix, ssim_scores
from attacks.kkt.model import HomogeneousMLP, TrainReport, resolve_device, train_classifier, train_regressor


@dataclass
class Settings:
    """Victim model, its training, and the attack (one place for the CLI and the experiments).

    CPU defaults are small (widths 256, a few thousand attack steps); Haim et al. used D-1000-1000-1,
    50k steps and a hyper-parameter sweep, which the GPU path can afford (``--width 1000`` ...).
    """

    width: int = 256
    depth: int = 2
    init_scale: float = 1.0
    weight_decay: float = 1e-3
    train_steps: int = 1000
    train_lr: float = 1e-3
    lbfgs_steps: int = 300
    candidates_per_point: float = 2.0
    steps: int = 3000
    lr: float = 0.01
    lambda_min: float = 0.05
    init_noise: float = 1e-2
    prior_weight: float = 1.0
    seed: int = 0
    device: str = "auto"

    def attack_config(self, n_train: int, task: str = "binary") -> KKTConfig:
        return KKTConfig(n_candidates=max(2, int(round(self.candidates_per_point * n_train))), steps=self.steps,
                         lr_x=self.lr, lr_lambda=self.lr, lambda_min=self.lambda_min,
                         init_scale=self.init_noise, prior_weight=self.prior_weight, task=task, seed=self.seed)


def _json(obj):
    if isinstance(obj, dict):
        return {str(k): _json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(_json(data), indent=2))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def attack_task(task: BinaryTask, s: Settings, *, regression_targets: np.ndarray | None = None,
                progress: bool = False) -> tuple[HomogeneousMLP, TrainReport, Reconstruction, dict]:
    """Train a victim on ``task`` (binary, or regression on ``regression_targets``) and attack it."""
    dev = resolve_device(s.device)
    model = HomogeneousMLP(task.X.shape[1], (s.width,) * s.depth, init_scale=s.init_scale, seed=s.seed)
    t0 = time.perf_counter()
    if regression_targets is None:
        rep = train_classifier(model, task.X, task.y, steps=s.train_steps, lr=s.train_lr,
                               weight_decay=s.weight_decay, lbfgs_steps=s.lbfgs_steps, device=dev,
                               progress=progress)
        kind = "binary"
    else:
        rep = train_regressor(model, task.X, regression_targets, steps=s.train_steps, lr=s.train_lr,
                              weight_decay=s.weight_decay, lbfgs_steps=s.lbfgs_steps, device=dev,
                              progress=progress)
        kind = "regression"
    t1 = time.perf_counter()
    rec = reconstruct(model, task.lower, task.upper, s.attack_config(task.n, kind), device=dev,
                      progress=progress)
    t2 = time.perf_counter()
    return model, rep, rec, {"train_s": t1 - t0, "attack_s": t2 - t1, "device": str(dev)}


def membership_gain(train: np.ndarray, recon: np.ndarray, reference: np.ndarray) -> dict:
    """How many training points the attack recovers better than the nearest *non-member* does.

    ``reference`` are fresh samples of the same distribution: beating them means the reconstruction
    carries information about that very training point, not just about the distribution.
    """
    _, s_rec = match(train, recon, "ncc")
    _, s_ref = match(train, reference, "ncc")
    return {"ncc_median": float(np.median(s_rec)), "ncc_q90": float(np.quantile(s_rec, 0.9)),
            "n_ncc_gt_0.9": int((s_rec > 0.9).sum()), "reference_ncc_median": float(np.median(s_ref)),
            "n_beats_reference": int((s_rec > s_ref).sum()), "n": int(len(train))}
