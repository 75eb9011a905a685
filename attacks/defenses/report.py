"""``secureml report defenses``: attack success beside chance against utility and cost, per defense.

Writes ``defenses.md`` (tables, the verdict per attack, the noise budget), ``defenses.json``,
``defenses.csv`` and ``defenses.png`` (one panel per attack: MAE against leakage above chance,
Pareto front marked) into the output folder.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from attacks.defenses import matrix as M
from attacks.targets import _ot_server_proc
from protocols.krr import ServedModel, predict
from protocols.krr.defense import OutputDefense
from secureml.models.pipeline import MolecularModel
from secureml.representations.coulomb import CoulombMatrix
from secureml.plot_style import PALETTE, log_axis, new_figure, save

#: "at chance": TPR at 1% FPR below 0.02 (the issue's bar); P@50 within two binomial standard
#: errors of the base rate; pool-membership AUC below 0.55
def at_chance(row: dict[str, Any]) -> bool:
    if row["attack"] == "mia":
        return row["value"] < 0.02
    if row["attack"] == "reconstruct-kink":
        return row["value"] == 0.0
    if row["attack"] == "rank-kink":
        b = row["chance"]
        return row["value"] <= b + 2 * math.sqrt(b * (1 - b) / 50)
    return row["value"] < 0.55


def noise_budget(seed: int = 0, quick: bool = True) -> dict[str, Any]:
    """MIA TPR at 1% FPR against the *effective* noise sd s_eff = s / sqrt(R) of R averaged answers:
    the smallest s_eff at chance fixes the budget R <= (s / s_eff)^2 per target molecule."""
    models = M.load_models(seed)
    out = []
    for sd in (1.0, 4.0, 16.0, 32.0, 64.0) if quick else (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0):
        r = M.attack_mia(models, M.Defense("noise", sd), True, seed)
        out.append({"sd": sd, "tpr_1pct": r["variants"]["1 query"]["tpr_1pct"],
                    "auc": r["variants"]["1 query"]["auc"], "mae": r["mae"]})
    ok = [p["sd"] for p in out if p["tpr_1pct"] < 0.02]
    base = out[0]["mae"]
    afford = [p for p in out if p["mae"] <= 1.1 * base]
    return {"curve": out, "s_eff_at_chance": min(ok) if ok else None,
            "largest_sd_within_10pct_mae": max(p["sd"] for p in afford) if afford else None,
            "its_tpr_1pct": max(afford, key=lambda p: p["sd"])["tpr_1pct"] if afford else None}


def protocol_costs(seed: int = 0) -> list[dict[str, Any]]:
    """Seconds and bytes per query through the real OT protocol (one 4-query session over TCP
    loopback per setting) for the Gaussian KRR of the matrix, undefended and with each output
    defense: the defended answers must equal the mechanism's (rounded: on the grid)."""
    models = M.load_models(seed)
    est = models.krr("gaussian")
    mm = MolecularModel(CoulombMatrix(size=29), est, "U0_atomization")
    Q = models.X[models.public[:4]]
    plain = est.predict(Q)
    rows = []
    for name, od in (("none", OutputDefense()), ("round 1", OutputDefense.from_options(round_to=1.0)),
                     ("noise 4", OutputDefense.from_options(noise=4.0)),
                     ("noise 4 + round 1", OutputDefense.from_options(round_to=1.0, noise=4.0))):
        # rounding exists in the semi-honest protocols only (docs/malicious.md): measure those
        served = ServedModel.from_molecular_model(mm, security="semi-honest")
        served.public.output_defense = od.to_dict()
        preds, secs, nbytes = _run_ot(served, Q)
        dev = np.abs(preds - plain)
        on_grid = bool(od.round_bits is None or np.all(preds / od.grid == np.round(preds / od.grid)))
        rows.append({"deployment": "ot", "defense": name, "s_per_query": secs / len(Q),
                     "bytes_per_query": nbytes / len(Q), "max_abs_dev_from_plain": float(dev.max()),
                     "on_grid": on_grid})
    return rows


def _run_ot(served: Any, Q: np.ndarray) -> tuple[np.ndarray, float, int]:
    """One real session: the server in a spawned process, the client here, TCP loopback."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_ot_server_proc, args=(served, q, 1), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=120)
        t0 = time.perf_counter()
        preds, cost = predict(f"127.0.0.1:{port}", Q)
        secs = time.perf_counter() - t0
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
    return np.asarray(preds), secs, cost.bytes_sent + cost.bytes_received


def run(attacks: Iterable[str] | None = None, quick: bool = True, seed: int = 0, with_protocol: bool = True,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    attacks = list(attacks or M.ATTACKS)
    kkt = []
    if "kkt" in attacks:  # DP-SGD victims of the KKT reconstruction (minutes each on a CPU)
        from attacks.defenses.dpsgd import kkt_against_dpsgd

        kkt = kkt_against_dpsgd((None, 8.0, 1.0), n_train=50, width=128 if quick else 256,
                                attack_steps=1000 if quick else 3000, seed=seed)
        attacks.remove("kkt")
        if progress:
            progress("kkt")
    gnn = []
    if "gnn-extract" in attacks:  # DP-SGD-pretrained GIN encoders against the extraction attack
        from attacks.gnn.defense import attack_dp

        gnn = attack_dp((None, 8.0, 1.0), family="attrmask", seed=seed, quick=quick)
        attacks.remove("gnn-extract")
        if progress:
            progress("gnn-extract")
    rows = M.run_matrix(attacks, quick=quick, seed=seed, progress=progress) if attacks else []
    budget = noise_budget(seed, quick) if any(r["attack"] == "mia" for r in rows) else None
    if progress:
        progress("noise budget")
    costs = protocol_costs(seed) if with_protocol and rows else []
    if progress and with_protocol:
        progress("protocol costs")
    return {"rows": rows, "noise_budget": budget, "protocol_costs": costs, "kkt": kkt, "gnn": gnn, "quick": quick,
            "seed": seed, "seconds": time.perf_counter() - t0}


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "--"
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) >= 10 ** -nd or v == 0 else f"{v:.1e}"
    return str(v)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for attack in dict.fromkeys(r["attack"] for r in rows):
        rs = [r for r in rows if r["attack"] == attack and "skipped" not in r]
        base = next((r for r in rs if r["family"] == "none"), None)
        if base is not None and at_chance(base):
            out[attack] = "the undefended attack itself is at chance in this setting: nothing to defend here"
            continue
        good = [r for r in rs if at_chance(r) and r.get("mae_increase_pct", 0.0) <= 10.0]
        if good:
            # least utility cost (to the 1%), then defenses that hold for any number of queries before
            # fresh noise (whose row holds only for the repeats the attacker used)
            best = min(good, key=lambda r: (round(r.get("mae_increase_pct", 0.0)), r["family"].startswith("noise")))
            out[attack] = (f"at chance within +10% MAE: **{best['defense']}** ({best['metric']} "
                           f"{_f(best['value'])}, chance {_f(best['chance'])}, MAE {_f(best['mae'], 2)} kcal/mol, "
                           f"{best.get('mae_increase_pct', 0.0):+.1f}%; attacker: {best['attacker']})")
        else:
            out[attack] = "**no defense setting tried reaches chance within +10% MAE** (curve in the table and plot)"
    return out


def markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    lines = [f"# Defenses against the attacks ({'quick' if res['quick'] else 'full'} run, seed {res['seed']}, "
             f"{res['seconds']:.0f} s)", ""]
    lines += ["Leakage is the best adaptive variant's (column 'attacker'); MAE on the 784 public molecules, "
              "kcal/mol; deployments where the defense exists ('simulated': not built, measured to decide).", ""]
    for attack, verdict in verdicts(rows).items():
        lines += [f"## {attack}", "", f"Verdict: {verdict}", ""]
        rs = [r for r in rows if r["attack"] == attack]
        metric = next((r["metric"] for r in rs if "metric" in r), "")
        extra = {"mia": "AUC | TPR@0.1% |", "rank-kink": "AUC |", "extract": "rel. weight error |"}.get(attack, "")
        lines += [f"| defense | deployments | {metric} | chance | above chance | {extra} attacker | queries / target | MAE | MAE change |",
                  "|---|---|---|---|---|---|---|---|---|" + "---|" * extra.count("|")]
        for r in rs:
            if "skipped" in r:
                lines.append(f"| {r['defense']} | -- | skipped: {r['skipped']} |")
                continue
            ex = (f"{_f(r['auc'])} | {_f(r['tpr_01pct'])} |" if attack == "mia" else
                  f"{_f(r['auc'])} |" if attack == "rank-kink" else
                  f"{_f(r.get('rel_weight_error'))} |" if attack == "extract" else "")
            q = r.get("queries_per_target", r.get("queries_total", ""))
            vs = "" if r.get("reference", "none") == "none" else \
                f" vs dressed ({r.get('mae_vs_recipe_pct', 0.0):+.1f}% vs none)"
            lines.append(f"| {r['defense']} | {', '.join(r['deployments'])} | {_f(r['value'])} | {_f(r['chance'])} | "
                         f"{_f(r['above_chance'])} | {ex} {r['attacker']} | {q} | {_f(r['mae'], 2)} | "
                         f"{r.get('mae_increase_pct', 0.0):+.1f}%{vs} |")
        lines.append("")
    if res.get("kkt"):
        lines += ["## kkt (DP-SGD through Opacus)", "",
                  "KKT reconstruction (attacks.kkt) of a bias-free ReLU MLP on 50 8x8 digits (even vs odd); "
                  "reconstructions matched to training images by NCC, beside the nearest held-out digit.", "",
                  "| training | epsilon (delta 1e-5) | noise multiplier | test accuracy | NCC median | NCC > 0.9 | "
                  "beat the nearest held-out digit |", "|---|---|---|---|---|---|---|"]
        for r in res["kkt"]:
            name = "non-private (Adam + L-BFGS, weight decay 1e-3)" if r["epsilon"] is None else "DP-SGD (Opacus)"
            lines.append(f"| {name} | {_f(r['epsilon'], 2)} | {_f(r.get('noise_multiplier'), 2)} | "
                         f"{_f(r['test_accuracy'])} | {_f(r['ncc_median'])} | {r['n_ncc_gt_0.9']} / {r['n_train']} | "
                         f"{r['n_beats_heldout']} / {r['n_train']} |")
        lines.append("")
    if res.get("gnn"):
        g = res["gnn"]
        k = g[0]["k"]
        lines += ["## gnn-extract (DP-SGD pretraining of the GIN encoder)", "",
                  f"Extraction from a pretrained {g[0]['family']} GIN (attacks.gnn; {g[0]['n_private']} private "
                  f"molecules, budget {g[0]['budget']} distinct scored molecules, "
                  f"{'the fast test world' if g[0]['quick'] else 'the library world'}); DP-SGD with per-molecule "
                  "clipping (C = 1), Poisson sampling, Opacus RDP accounting, batch-norm statistics recomputed on "
                  "public molecules. Utility: the encoder's own pretraining loss on 200 unseen molecules of the "
                  "owner's distribution (lower is better).", "",
                  f"| pretraining | epsilon (delta 1e-5) | noise multiplier | P@{k} attack | P@{k} score only | "
                  f"P@{k} random generation | chance | membership AUC (learned score) | held-out loss | member loss |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in g:
            name = "non-private" if r["epsilon"] is None else "DP-SGD"
            lines.append(f"| {name} | {_f(r['epsilon'], 2)} | {_f(r.get('noise_multiplier'), 2)} | "
                         f"{_f(r[f'P@{k} attack'], 2)} | {_f(r[f'P@{k} score only'], 2)} | "
                         f"{_f(r[f'P@{k} random generation'], 2)} | {_f(r['chance'], 3)} | "
                         f"{_f(r['auc_learned_score'])} | {_f(r['heldout_loss'], 2)} | {_f(r['member_loss'], 2)} |")
        lines.append("")
    nb = res.get("noise_budget")
    if nb:
        lines += ["## Fresh noise: what the query budget must be", "",
                  "Membership TPR at 1% FPR of a single answer with noise sd s (averaging R answers to the "
                  "same query gives sd s / sqrt(R), so this is also the curve of the averaging attacker):", "",
                  "| noise sd (kcal/mol) | TPR@1%FPR | AUC | MAE |", "|---|---|---|---|"]
        for p in nb["curve"]:
            lines.append(f"| {p['sd']:g} | {_f(p['tpr_1pct'])} | {_f(p['auc'])} | {_f(p['mae'], 2)} |")
        s = nb["s_eff_at_chance"]
        lines += ["", (f"Chance (TPR < 0.02) needs an effective sd of {s:g} kcal/mol: with per-answer noise s a "
                       f"client may ask each molecule at most (s / {s:g})^2 times." if s else
                       "No sd tried reaches chance.")]
        a = nb.get("largest_sd_within_10pct_mae")
        if a is not None:
            lines += [f"Within +10% MAE the largest sd tried is {a:g} kcal/mol, whose *single* answer already gives "
                      f"TPR {_f(nb['its_tpr_1pct'])}: " + (
                          "no query budget brings fresh noise to chance at an affordable MAE (even one answer "
                          "per molecule leaks)." if nb["its_tpr_1pct"] >= 0.02 else
                          f"a budget of (sd / {s:g})^2 answers per molecule keeps it at chance.")]
        lines.append("")
    if res.get("protocol_costs"):
        lines += ["## Cost per query through the OT protocol (Gaussian KRR, N = 1,000, d = 435; one 4-query session over TCP loopback)", "",
                  "| output defense | s / query | bytes / query | max abs. deviation from plaintext (kcal/mol) | on the grid |",
                  "|---|---|---|---|---|"]
        for c in res["protocol_costs"]:
            lines.append(f"| {c['defense']} | {c['s_per_query']:.2f} | {c['bytes_per_query'] / 1e6:.1f} MB | "
                         f"{_f(c['max_abs_dev_from_plain'])} | {c['on_grid']} |")
        lines += ["", "Plaintext API: ~1e-4 s per query. FHE (noise only; rounding is not available in CKKS): "
                  "~28.5 s per query at N = 1,000 (docs/attacks.md section 6, not re-measured here).", ""]
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path, costs: list[dict[str, Any]] | None = None) -> None:
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    ncol = len(attacks) + (1 if costs else 0)
    fig, axes = new_figure(ncols=ncol, figsize=(5.2 * ncol, 4.2), squeeze=False)
    if costs:  # cost per query of each output defense through the OT protocol, beside the API and FHE
        ax = axes[0][-1]
        names = [c["defense"] for c in costs]
        ax.barh(names, [c["s_per_query"] for c in costs], color=PALETTE[0], label="OT (measured)")
        ax.barh(["API"], [1e-4], color=PALETTE[7], label="plaintext API")
        ax.barh(["FHE, noise"], [28.5], color=PALETTE[3], label="FHE (docs/attacks.md)")
        log_axis(ax.xaxis)
        ax.set_xlabel("seconds per query (N = 1,000)")
        ax.set_title("cost per query")
        ax.legend(fontsize=7)
    families = ("none", "dressed", "round", "noise", "noise+round", "prf-noise", "ridge", "dressed+ridge", "dp")
    # the shared palette, then two greys for the last families (nine in all)
    colors = dict(zip(families, (PALETTE[7], PALETTE[1], PALETTE[0], PALETTE[3], PALETTE[4], "#999999",
                                 PALETTE[2], PALETTE[5], "#882255")))
    for ax, attack in zip(axes[0][:len(attacks)], attacks):
        rs = [r for r in rows if r["attack"] == attack and "skipped" not in r]
        pts = [(r["mae"], max(r["above_chance"], 0.0)) for r in rs]
        for r, (x, y) in zip(rs, pts):
            ax.scatter(x, y, color=colors.get(r["family"], "y"), s=28, zorder=3)
            ax.annotate(r["defense"], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        front = sorted((pts[i] for i in M.pareto(pts)))
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        log_axis(ax.xaxis)
        ax.set_xlabel("MAE of the defended answers (kcal/mol)")
        ax.set_ylabel(f"{rs[0]['metric']} above chance" if rs else "")
        ax.set_title(attack)
        ax.legend(fontsize=7)
    for fam, c in colors.items():
        axes[0][0].scatter([], [], color=c, label=fam)
    # one legend for every panel, below them: it cannot hide a point or the front
    for ax in axes[0][:len(attacks)]:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 10), frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save(fig, path)


def write(res: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "defenses.md", "json": out / "defenses.json", "csv": out / "defenses.csv",
             "png": out / "defenses.png"}
    # the numbers first: a rendering error must not lose a run
    paths["json"].write_text(json.dumps(res, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    paths["md"].write_text(markdown(res))
    cols = ["attack", "defense", "family", "strength", "deployments", "metric", "value", "chance", "above_chance",
            "auc", "tpr_01pct", "rel_weight_error", "attacker", "mae", "reference", "mae_increase_pct",
            "mae_vs_recipe_pct", "skipped"]
    with paths["csv"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in res["rows"]:
            w.writerow({**r, "deployments": " ".join(r.get("deployments", []))})
    if res.get("gnn"):  # the GNN extraction rows have their own columns
        paths["gnn_csv"] = out / "defenses_gnn.csv"
        with paths["gnn_csv"].open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(res["gnn"][0]), extrasaction="ignore")
            w.writeheader()
            w.writerows(res["gnn"])
    if res["rows"] or res.get("protocol_costs"):
        _plot(res["rows"], paths["png"], res.get("protocol_costs"))
    else:
        del paths["png"]
    return paths
