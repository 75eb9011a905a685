"""One extraction experiment: pretrain target and shadow encoders, learn the score, run every method.

Rows of the result table (the shape of Huang et al.'s Table 1):

* ``random aux``: K molecules drawn from the attacker's auxiliary data (disjoint from the private
  set by construction, so its precision is the floor 0 unless MOSES repeats a molecule);
* ``random generation``: the first K distinct valid molecules the auxiliary prior generates (the
  chance level of the action space);
* ``QED-guided`` / ``SA-guided``: the same REINFORCE policy and budget, rewarded by drug-likeness
  (QED) or synthetic accessibility (-SA score) instead of the membership score;
* ``scoring w/o policy``: the learned score ranks ``budget`` molecules drawn from the prior;
* ``scoring w/o policy, prior-weighted``: the same molecules ranked by the attack's objective
  (standardised score + ``beta`` log prior), to separate what the objective does from what the
  policy does;
* ``attack (policy + scoring)``: REINFORCE (moving baseline, normalised advantages, KL to the
  prior; :mod:`attacks.gnn.policy`) on the prior-weighted score, same budget;
* ``attack, PPO policy``: the same with PPO's clipped objective;
* ``attack, first policy (v1)``: the first REINFORCE (batch-mean baseline, raw score), kept to
  show what the changes bought.

Every method scores the same number of distinct molecules (``budget``) and outputs its top K.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from attacks.gnn.attack import Evaluator, Features, PriorWeighted, ScoreFn, fit_score, random_search
from attacks.gnn.policy import policy_search, reinforce_v1
from attacks.gnn.data import Corpus, build_corpus, focus
from attacks.gnn.model import Pretrained, cached_pretrain, n_parameters
from attacks.gnn.space import Action, Space, unique_valid
from attacks.metrics import roc_auc, tpr_at_fpr
from secureml.plot_style import PALETTE, new_figure, save

KS = (50, 100, 200)


def qed_score(smiles: list[str], actions: list[Action]) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import QED

    return np.array([QED.qed(Chem.MolFromSmiles(s)) for s in smiles])


def sa_score(smiles: list[str], actions: list[Action]) -> np.ndarray:
    """Negative Ertl-Schuffenhauer SA score (RDKit Contrib): higher = easier to make."""
    from rdkit import Chem
    from rdkit.Contrib.SA_Score import sascorer

    return np.array([-sascorer.calculateScore(Chem.MolFromSmiles(s)) for s in smiles])


def fcd(gen: Sequence[str], ref: Sequence[str]) -> float:
    """Frechet ChemNet Distance (fcd_torch; its wheel ships the ChemNet weights, no download)."""
    from fcd_torch import FCD

    if len(gen) < 2 or len(ref) < 2:
        return float("nan")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return float(FCD(device=dev, n_jobs=1)(list(gen), list(ref)))


def precision(top: Sequence[str], members: set[str], ks: Sequence[int] = KS) -> dict[str, float]:
    return {f"P@{k}": (sum(s in members for s in top[:k]) / k) if len(top) >= k else float("nan") for k in ks}


def chance_rate(space: Space, members: set[str], n: int = 20_000, seed: int = 0) -> float:
    """Fraction of members among the distinct valid molecules of ``n`` prior draws (a space-level
    member density; the ``random generation`` row is the chance level of P@K itself)."""
    mols = unique_valid(space, space.sample_prior(n, np.random.default_rng(seed + 99)))
    return float(np.mean([s in members for s in mols])) if mols else float("nan")


@dataclass
class World:
    """Everything an extraction run shares between methods: data, encoders, the learned score."""

    family: str
    corpus: Corpus
    space: Space
    members: set[str]
    target: Pretrained
    target_score: ScoreFn
    diagnostics: dict[str, Any]
    seconds: dict[str, float]
    setting: dict[str, Any]


def prepare(family: str = "attrmask", n_private: int = 500, n_scaffolds: int = 100, n_motifs: int = 30,
            n_scan: int = 300_000, dim: int = 64, n_layers: int = 5, epochs: int = 150, lr: float = 2e-3,
            batch_size: int = 64, n_score_neg: int = 1500, seed: int = 0, corpus: Corpus | None = None,
            owner_scaffolds: int = 0, log: Callable[[str], None] = print, progress: bool = True,
            target_trainer: Callable[[Sequence[str]], Pretrained] | None = None) -> World:
    """Pretrain the target and two shadow encoders, fit the learned score on the shadows.

    ``target_trainer`` replaces the owner's pretraining (a defense: e.g. DP-SGD); the attacker's
    shadows keep the ordinary recipe (it does not know how the owner trained).
    """
    torch.manual_seed(seed)
    corpus = corpus or build_corpus(n_private=n_private, n_shadows=2, n_scaffolds=n_scaffolds, n_motifs=n_motifs,
                                    n_scan=n_scan, seed=seed, progress=progress)
    if owner_scaffolds:
        corpus = focus(corpus, owner_scaffolds, seed=seed)
    space = Space(corpus)
    members = set(corpus.private)
    rng = np.random.default_rng(seed)
    neg_ref = [corpus.aux[i] for i in rng.choice(len(corpus.aux), size=min(256, len(corpus.aux)), replace=False)]
    log(f"space: {len(space.scaffolds)} scaffolds x {len(space.motifs)} motifs, {space.size():,} action sets; "
        f"private {len(members)}, shadows {[len(s) for s in corpus.shadows]}")

    t0 = time.perf_counter()
    rec = dict(dim=dim, n_layers=n_layers, epochs=epochs, lr=lr, progress=progress, batch_size=batch_size)
    target = target_trainer(corpus.private) if target_trainer else \
        cached_pretrain(corpus.private, family, "target", seed=seed, **rec)
    shA = cached_pretrain(corpus.shadows[0], family, "shadow0", seed=seed + 1, **rec)
    shB = cached_pretrain(corpus.shadows[1], family, "shadow1", seed=seed + 2, **rec)
    t_pre = time.perf_counter() - t0

    # learned score: shadow A plays the target (members = its pretraining set), shadow B the reference
    t0 = time.perf_counter()
    prior = unique_valid(space, space.sample_prior(4 * n_score_neg, np.random.default_rng(seed + 1)))
    knownA = set(corpus.shadows[0])
    negs = [(s, a) for s, a in prior.items() if s not in knownA][:n_score_neg]
    posA = [(s, _action_of(space, corpus, s)) for s in corpus.shadows[0]]
    posA = [(s, a) for s, a in posA if a is not None]
    fA = Features(shA, shB, space, neg_ref)
    X = fA([s for s, _ in posA + negs], [a for _, a in posA + negs])
    y = np.r_[np.ones(len(posA)), np.zeros(len(negs))]
    score = fit_score(X, y)
    fT = Features(target, shA, space, neg_ref)

    def target_score(smiles: list[str], actions: list[Action]) -> np.ndarray:
        return score(fT(smiles, actions))

    # diagnostics on the target: members vs prior molecules that are not members (no labels are
    # used to fit anything here; the attacker could not compute this)
    posT = [(s, _action_of(space, corpus, s)) for s in corpus.private]
    posT = [(s, a) for s, a in posT if a is not None]
    negT = [(s, a) for s, a in prior.items() if s not in members][:n_score_neg]
    lab = np.r_[np.ones(len(posT)), np.zeros(len(negT))]
    sm = [s for s, _ in posT + negT]
    XT = fT(sm, [a for _, a in posT + negT])
    sT = score(XT)
    diag = {
        "shadow_auc_fit": score.shadow_auc,
        "target_auc_learned_score": roc_auc(sT, lab),
        "target_tpr_at_1pct_fpr": tpr_at_fpr(sT, lab, 0.01),
        "target_auc_raw_loss": roc_auc(XT[:, 0], lab),
        "target_auc_calibrated_loss": roc_auc(XT[:, 1], lab),
        "target_auc_scaffold_cos": roc_auc(XT[:, 2], lab),
        "target_auc_motif_cos": roc_auc(XT[:, 3], lab),
        "score_weights": dict(zip(["-loss", "ref-loss", "cos_scaffold", "cos_motif"], score.w.tolist())),
    }
    log("membership signal on the target: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                                          for k, v in diag.items()}))
    t_score = time.perf_counter() - t0
    setting = {"n_private": len(members), "n_scaffolds": len(space.scaffolds), "n_motifs": len(space.motifs),
               "owner_scaffolds": sorted({corpus.decomposition[s][0] for s in corpus.private})
               if owner_scaffolds else None, "action_sets": space.size(), "n_scanned": corpus.n_scanned,
               "dim": dim, "n_layers": n_layers, "epochs": epochs, "lr": lr, "batch_size": batch_size,
               "seed": seed, "encoder_parameters": n_parameters(target)}
    return World(family, corpus, space, members, target, target_score, diag,
                 {"pretraining_3_encoders": t_pre, "score_fit_and_diagnostics": t_score}, setting)


METHODS = ("random aux", "random generation", "QED-guided", "SA-guided", "scoring w/o policy",
           "scoring w/o policy, prior-weighted", "attack, first policy (v1)", "attack, PPO policy",
           "attack (policy + scoring)")
#: the prior weight of the attack's objective (:class:`attacks.gnn.attack.PriorWeighted`), chosen on
#: the library world's exhaustively scored space (docs/gnn-extraction.md); 0 = the score alone
BETA = 3.0


def run(family: str = "attrmask", n_private: int = 500, n_scaffolds: int = 100, n_motifs: int = 30,
        n_scan: int = 300_000, dim: int = 64, n_layers: int = 5, epochs: int = 150, lr: float = 2e-3,
        batch_size: int = 64,
        budget: int = 4000, n_score_neg: int = 1500, seed: int = 0, fcd_on: bool = True,
        methods: Sequence[str] | None = None, corpus: Corpus | None = None, owner_scaffolds: int = 0,
        log: Callable[[str], None] = print, progress: bool = True, world: World | None = None,
        ks: Sequence[int] = KS) -> dict[str, Any]:
    t_all = time.perf_counter()
    w = world or prepare(family, n_private, n_scaffolds, n_motifs, n_scan, dim, n_layers, epochs, lr, batch_size,
                         n_score_neg, seed, corpus, owner_scaffolds, log, progress)
    res = run_methods(w, budget=budget, seed=seed, fcd_on=fcd_on, methods=methods, log=log, progress=progress, ks=ks)
    res["seconds"]["total"] = time.perf_counter() - t_all
    return res


def run_methods(w: World, budget: int = 4000, seed: int = 0, fcd_on: bool = True,
                methods: Sequence[str] | None = None, log: Callable[[str], None] = print, progress: bool = True,
                ks: Sequence[int] = KS, score: ScoreFn | None = None, algo: str = "reinforce",
                chance_draws: int = 20_000, beta: float = BETA) -> dict[str, Any]:
    """Every method of the table on one prepared world; ``score`` replaces the learned score
    (e.g. a served KRR model's kink score) for the two score-driven rows."""
    space, members, corpus = w.space, w.members, w.corpus
    target_score = score or w.target_score
    rng = np.random.default_rng(seed)
    chance = chance_rate(space, members, n=chance_draws, seed=seed)
    rows: list[dict[str, Any]] = []
    ref_fcd = list(corpus.private)
    wanted = set(methods or METHODS)

    def finish(name: str, top: list[str], secs: float, extra: dict[str, Any] | None = None) -> None:
        row = {"method": name, **precision(top, members, ks), "FCD": fcd(top[:200], ref_fcd) if fcd_on else None,
               "seconds": secs, "n_out": len(top), **(extra or {})}
        log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
        row["top"] = top  # the output molecules, best first (members marked in "top_is_member")
        row["top_is_member"] = [s in members for s in top]
        rows.append(row)

    K = max(ks)
    if "random aux" in wanted:
        t0 = time.perf_counter()
        top = [corpus.aux[i] for i in rng.choice(len(corpus.aux), size=min(K, len(corpus.aux)), replace=False)]
        finish("random aux", top, time.perf_counter() - t0)
    if "random generation" in wanted:
        t0 = time.perf_counter()
        top = list(unique_valid(space, space.sample_prior(4 * K, np.random.default_rng(seed + 7))))[:K]
        finish("random generation", top, time.perf_counter() - t0)
    for name, fn, how in (("QED-guided", qed_score, "reinforce"), ("SA-guided", sa_score, "reinforce"),
                          ("attack (policy + scoring)", target_score, algo),
                          ("attack, PPO policy", target_score, "ppo"),
                          ("attack, first policy (v1)", target_score, "v1")):
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        # the attack ranks by the prior-weighted score; the QED/SA baselines by their own reward
        f = PriorWeighted(fn, space, beta) if fn is target_score and how != "v1" else fn
        ev = Evaluator(space, f, budget)
        with _bar(budget, name, progress) as bar:
            if how == "v1":
                info = reinforce_v1(space, ev, seed=seed, progress=bar)
            else:
                info = policy_search(space, ev, algo=how, seed=seed, progress=bar)
        top = ev.top(K)
        finish(name, top, time.perf_counter() - t0,
               {"scored": ev.used, "members_scored": sum(s in members for s in ev.cache),
                "policy_steps": info["steps"]})
    for name, f in (("scoring w/o policy", target_score),
                    ("scoring w/o policy, prior-weighted", PriorWeighted(target_score, space, beta))):
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        ev = Evaluator(space, f, budget)
        with _bar(budget, name, progress) as bar:
            random_search(space, ev, seed=seed, progress=bar)
        finish(name, ev.top(K), time.perf_counter() - t0,
               {"scored": ev.used, "members_scored": sum(s in members for s in ev.cache)})
    rows.sort(key=lambda r: METHODS.index(r["method"]))
    return {
        "family": w.family, "chance_precision": chance, "member_density_prior_20k": chance, "rows": rows,
        "diagnostics": w.diagnostics, "setting": {**w.setting, "budget": budget},
        "seconds": dict(w.seconds),
    }


def _action_of(space: Space, corpus: Corpus, smiles: str) -> Action | None:
    d = corpus.decomposition.get(smiles)
    if d is None or d[0] not in space.scaffolds:
        return None
    try:
        return Action(space.scaffolds.index(d[0]), tuple((p, space.motifs.index(m)) for p, m in d[1]))
    except ValueError:
        return None


class _bar:
    def __init__(self, total: int, desc: str, on: bool) -> None:
        self.b = None
        if on:
            from tqdm import tqdm

            self.b = tqdm(total=total, desc=desc, unit="mol")

    def __enter__(self) -> Callable[[int], None]:
        return (lambda n: self.b.update(n)) if self.b is not None else (lambda n: None)

    def __exit__(self, *exc: Any) -> None:
        if self.b is not None:
            self.b.close()


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """JSON, CSV (the table) and a PNG of precision@K per method."""
    out.mkdir(parents=True, exist_ok=True)
    fam = result["family"]
    paths = {"json": out / f"gnn_extract_{fam}.json", "csv": out / f"gnn_extract_{fam}.csv",
             "png": out / f"gnn_extract_{fam}.png"}
    paths["json"].write_text(json.dumps(result, indent=1, default=float))
    cols = ["method", "P@50", "P@100", "P@200", "FCD", "seconds"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in result["rows"]]
    paths["csv"].write_text("\n".join(lines) + "\n")
    fig, ax = new_figure(figsize=(7.5, 3.8))
    rows = result["rows"]
    x = np.arange(len(rows))
    for j, k in enumerate(KS):
        ax.bar(x + (j - 1) * 0.27, [r[f"P@{k}"] for r in rows], 0.27, label=f"P@{k}", color=PALETTE[j])
    ax.axhline(result["chance_precision"], color="k", lw=0.8, ls="--", label="member density of the space (prior)")
    ax.set_xticks(x, [r["method"].replace(" (", "\n(") for r in rows], fontsize=7)
    ax.set_ylabel("precision (members among output)")
    ax.set_title(f"extraction from a {fam} GIN ({result['setting']['n_private']} private molecules)")
    ax.legend(fontsize=7)
    save(fig, paths["png"])
    return paths


