"""Run controls of the KKT attack (re-seeding flag, snapshots, attack seed), best-over-runs pooling
(Haim et al.'s reporting) and the multiclass all-pairs form: tiny real models, seeded, CPU, seconds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from attacks.kkt.aggregate import CandidateSet, best_over_runs, load_candidate_sets, run_best_over_runs, task_of
from attacks.kkt.attack import AttackError, KKTConfig, reconstruct
from attacks.kkt.model import HomogeneousMLP, train_multiclass
from tests.attacks.kkt.victims import tiny_parity_victim


def _victim(seed: int = 0):
    model, x, mu = tiny_parity_victim(seed)
    return model, mu


def test_reseed_every_zero_disables_reseeding():
    model, mu = _victim()
    base = dict(n_candidates=10, steps=40, init_scale=0.01, seed=0, reseed_ncc=-1.0)  # every pair counts as a duplicate
    off = reconstruct(model, -mu, 1 - mu, KKTConfig(**base, reseed_every=0))
    never = reconstruct(model, -mu, 1 - mu, KKTConfig(**base, reseed_every=5, reseed_until=0.0))
    on = reconstruct(model, -mu, 1 - mu, KKTConfig(**base, reseed_every=5))
    assert np.array_equal(off.x, never.x)  # 0 = the same trajectory as a run whose re-seeding window is empty
    assert not np.allclose(off.x, on.x)  # with re-seeding active the candidates are re-drawn
    with pytest.raises(AttackError):
        reconstruct(model, -mu, 1 - mu, KKTConfig(**base, reseed_every=-1))


def test_cosine_schedule_changes_the_steps_and_ends_at_zero_rate():
    model, mu = _victim()
    cfg = dict(n_candidates=6, steps=20, init_scale=0.01, seed=0, reseed_every=0, snapshot_at=(1, 19))
    const = reconstruct(model, -mu, 1 - mu, KKTConfig(**cfg))
    cos = reconstruct(model, -mu, 1 - mu, KKTConfig(**cfg, lr_schedule="cosine"))
    assert np.array_equal(const.snapshots[1], cos.snapshots[1])  # the first step uses the full rate
    assert not np.allclose(const.x, cos.x)
    # the last cosine step has rate lr * (1 - cos(pi / 20)) / 2 ~ 6e-4 lr: the candidates barely move
    assert np.abs(cos.x - cos.snapshots[19]).max() < 0.05 * np.abs(const.x - const.snapshots[19]).max()
    with pytest.raises(AttackError):
        reconstruct(model, -mu, 1 - mu, KKTConfig(**cfg, lr_schedule="linear"))


def test_snapshot_equals_shorter_run():
    model, mu = _victim()
    cfg = dict(n_candidates=6, init_scale=0.01, seed=3, reseed_every=0)
    seen = []
    long = reconstruct(model, -mu, 1 - mu, KKTConfig(**cfg, steps=30, snapshot_at=(10, 30, 99)),
                       on_snapshot=lambda step, xs: seen.append((step, xs.shape)))
    short = reconstruct(model, -mu, 1 - mu, KKTConfig(**cfg, steps=10))
    assert sorted(long.snapshots) == [10, 30]  # steps beyond the run are ignored
    assert seen == [(10, (6, 30)), (30, (6, 30))]  # handed out as the run goes
    assert np.array_equal(long.snapshots[10], short.x) and np.array_equal(long.snapshots[30], long.x)


def test_cli_flags_reach_the_attack_config():
    from attacks.kkt.experiments import Settings
    from secureml.cli import build_parser

    args = build_parser().parse_args(["reconstruct", "mnist", "--reseed-every", "0", "--attack-seed", "7",
                                      "--snapshots", "300,1000", "--multiclass-pairs", "strongest",
                                      "--lr-schedule", "cosine"])
    assert (args.reseed_every, args.attack_seed, args.snapshots, args.multiclass_pairs, args.lr_schedule) == (
        0, 7, "300,1000", "strongest", "cosine")
    cfg = Settings(reseed_every=0, seed=1, attack_seed=7, snapshot_at=(300,), lr_schedule="cosine").attack_config(10)
    assert (cfg.reseed_every, cfg.seed, cfg.snapshot_at, cfg.lr_schedule) == (0, 7, (300,), "cosine")
    assert Settings(seed=4).attack_config(10).seed == 4  # no attack seed: the victim's seed
    assert build_parser().parse_args(["reconstruct", "mnist"]).reseed_every == 250
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["reconstruct", "best-over-runs", "--help"])
    assert e.value.code == 0


def _digit_sets():
    from attacks.kkt.datasets import digits_task

    task, held = digits_task(20, 0, "parity")
    rng = np.random.default_rng(0)
    meta = {"dataset": "digits8", "split": "parity", "n_train": 20, "seed": 0}

    def cands(copy_idx):
        x = rng.normal(0.0, 0.3, (40, task.raw.shape[1])) + task.mean
        # exact copies in the centred space, up to the positive scale the KKT equation cannot fix
        x[: len(copy_idx)] = 2.0 * task.X[copy_idx] + task.mean
        return CandidateSet(f"run{copy_idx[0]}", x, task.raw, meta)

    return task, held, [cands(np.arange(0, 5)), cands(np.arange(5, 12))]


def test_best_over_runs_pools_and_credits_each_run():
    task, held, sets = _digit_sets()
    res = best_over_runs(task, held, sets, seed=0)
    per = [r["n_beats_heldout"] for r in res["runs"]]
    assert per[0] >= 5 and per[1] >= 7  # copies are closer than any held-out digit
    assert res["pooled"]["n_beats_heldout"] >= 12  # the pool keeps each image's best candidate
    assert res["pooled"]["candidates"] == 80
    assert res["source_counts"]["run0"] >= 5 and res["source_counts"]["run5"] >= 7
    assert res["pooled"]["noise_n_beats_heldout"] == 0  # 80 noise candidates never beat 1,700+ real digits
    src = np.asarray(res["per_image"]["source"])
    assert (src[:5] == 0).all() and (src[5:12] == 1).all()


def test_best_over_runs_drops_a_diverged_run():
    task, held, sets = _digit_sets()
    nan = CandidateSet("diverged", np.full_like(sets[0].x, np.nan), sets[0].train, sets[0].meta)
    res = best_over_runs(task, held, [*sets, nan], seed=0)
    ref = best_over_runs(task, held, sets, seed=0)
    assert res["pooled"]["n_beats_heldout"] == ref["pooled"]["n_beats_heldout"] >= 12
    assert res["pooled"]["candidates_dropped_nonfinite"] == 40 and res["source_counts"]["diverged"] == 0
    assert res["runs"][2]["n_beats_heldout"] == 0
    with pytest.raises(AttackError):
        best_over_runs(task, held, [nan], seed=0)


def test_best_over_runs_refuses_different_training_sets():
    task, held, sets = _digit_sets()
    other = CandidateSet("other", sets[0].x, sets[0].train, {**sets[0].meta, "seed": 1})
    with pytest.raises(AttackError):
        task_of([sets[0], other])
    bad = CandidateSet("bad", sets[0].x, sets[0].train[::-1], sets[0].meta)
    with pytest.raises(AttackError):
        task_of([sets[0], bad])


def test_sweep_over_attack_seeds_then_best_over_runs(tmp_path):
    """Several attack seeds on one victim (sweep), saved candidates, pooled: per image the pooled
    match is at least as close as every single run's, so the pooled count is >= each run's."""
    from attacks.kkt.experiments import Settings, parse_grid, run_digits, run_sweep

    s = Settings(width=24, train_steps=40, lbfgs_steps=10, steps=15, device="cpu", reseed_every=0)
    cache = tmp_path / "victim.pt"
    run_sweep(tmp_path / "sweep", s, parse_grid("attack_seed=1,2"), n_train=10, dataset="digits8", cache=cache,
              progress=False)
    run_digits(tmp_path / "single", s, n_train=10, progress=False, n_pairs=20, cache=cache)
    assert len(list((tmp_path / "sweep" / "sweep_candidates").glob("row_*.npz"))) == 2
    sets = load_candidate_sets([tmp_path / "sweep", tmp_path / "single"])
    assert len(sets) == 3 and sets[0].meta["settings"]["attack_seed"] == 1
    out = run_best_over_runs(tmp_path / "best", [tmp_path / "sweep", tmp_path / "single"], n_pairs=20)
    assert out["pooled"]["n_beats_heldout"] >= max(r["n_beats_heldout"] for r in out["runs"])
    assert out["pooled"]["candidates"] == sum(r["candidates"] for r in out["runs"])
    saved = json.loads((tmp_path / "best" / "best_over_runs.json").read_text())
    assert {"runs", "pooled", "heldout", "baseline_pairs", "source_counts"} <= set(saved)
    assert (tmp_path / "best" / "best_over_runs.csv").read_text().startswith("run,candidates,n_beats_heldout")
    assert (tmp_path / "best" / "best_over_runs_gallery.png").stat().st_size > 0
    with pytest.raises(AttackError):
        load_candidate_sets([tmp_path / "best"])  # a folder without saved candidates


def test_multiclass_all_pairs_fits_where_one_competitor_cannot():
    """The true training set of a 3-class stationary network fits the all-pairs KKT form with its exact
    multipliers; the attack with all pairs reaches a far lower residual than with one competitor."""
    rng = np.random.default_rng(0)
    z = rng.uniform(0.0, 1.0, (9, 40))
    mu = z.mean(0)
    lab = np.arange(9) % 3
    model = HomogeneousMLP(40, (60, 60), seed=0, out_dim=3)
    train_multiclass(model, z - mu, lab, steps=200, lr=1e-3, weight_decay=1e-3, lbfgs_steps=100)
    from attacks.kkt.datasets import BinaryTask
    from attacks.kkt.experiments import multiclass_floor, true_kkt_floor

    task = BinaryTask(X=z - mu, y=lab.astype(float), raw=z, mean=mu, lower=-mu, upper=1 - mu)
    fl = multiclass_floor(model, task, 1e-3, lab)
    assert fl["residual_all_pairs"] == pytest.approx(true_kkt_floor(model, task, 1e-3, lab), rel=1e-6)
    assert fl["residual_all_pairs"] < 0.01 < fl["residual_strongest_only"]
    base = dict(n_candidates=18, steps=400, init_scale=0.01, lambda_min=0.05, task="multiclass", seed=0)
    full = reconstruct(model, -mu, 1 - mu, KKTConfig(**base))
    one = reconstruct(model, -mu, 1 - mu, KKTConfig(**base, multiclass_pairs="strongest"))
    assert full.lam.shape == (18, 3) and (full.lam >= 0).all()
    assert (full.lam[np.arange(18), full.y] == 0).all()  # no multiplier against the candidate's own class
    assert full.residual < 0.5 * one.residual
    with pytest.raises(AttackError):
        reconstruct(model, -mu, 1 - mu, KKTConfig(**base, multiclass_pairs="some"))
