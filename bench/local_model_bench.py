"""Learning curve and timings of the qml-lightning-style local model on QM9 (U0 atomization energy).

Protocol (mirrors the qml-lightning reference run in /work/shared/ANCHORS.md):

* ``--n-pool`` (20,000) random QM9 molecules (``load_qm9(n, seed)``); the first ``--n-test``
  (2,000) of them are the fixed test set, training sets are the first N of the rest (nested);
* PCA bases fitted on *public* QM9 molecules outside that pool (``public_pca_dataset``), so no
  training or test molecule shapes the public feature map;
* FCHL19 with qml-lightning's QM9 settings, sigma 6, lambda 1e-8, npcas 128, per-element self
  energies; 16,384 features (nstacks 128) and 4,096 features (nstacks 32).

Writes ``local_model_bench.json`` and ``local_model_bench.png`` (MAE vs N, log axes, with the
reference points) to ``--out``. Run::

    .venv/bin/python -m bench.local_model_bench --out bench/results/local_model
    .venv/bin/python -m bench.local_model_bench --quick --out /tmp/lm   # a 1-minute smoke run

``--double-blind`` measures instead what one double-blind prediction with a compact model costs,
for both two-party paths (``--paths ot,lattice``: the client-malicious OT path and the semi-honest
lattice inner product, :mod:`protocols.krr.linear_he`), first and resumed sessions
(issue 4's target: under 20x the plaintext time and under 2 MB, session set-up included): two
processes on TCP loopback, the model owner's ``protocols.krr.serve`` and the query owner's
``protocols.krr.predict``, for the random-Fourier-feature model (sorted CM, F = 4,096, embedded
data) and the local FCHL19 + SORF model (F = 4,096, QM9, N = 4,096, MAE ~1 kcal/mol). Every
session's wall time is set against the plaintext prediction of the same model on the same
molecule, measured in the same process just before; the client process's CPU time is recorded
beside both (``client_cpu_s``, ``plaintext_cpu_s``: less sensitive to other load on a shared
machine), and ``--gap-ms`` of idle time follows each session (between-sessions work, e.g. the
lattice server's re-randomisation for the client's next query, ends before the next timed step).
``lattice_cpu`` in the JSON splits the lattice steps into offline (query-independent) and online
CPU time. ``--keep-alive`` (default) runs every path twice, on a new connection per session and
on a kept-alive one (``<model>/<path>/keep-alive``: the client's next session on the connection
the server kept, protocols.net.frontdoor step 8), alternating, so one run reports both;
``--no-keep-alive`` only the former. Writes ``double_blind.json``, ``.csv`` and ``.png``::

    .venv/bin/python -m bench.local_model_bench --double-blind --out bench/results/compact_cost
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# qml-lightning, unmodified, on an H100 (ANCHORS.md): MAE in kcal/mol by (features, N).
REFERENCE = {16384: {1024: 1.68, 4096: 0.93, 16384: 0.49}, 4096: {1024: 1.80, 4096: 1.03, 16384: 0.68}}
PROP = "U0_atomization"


def _parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from secureml.data import load_qm9
    from secureml.models.local import LocalRandomFeatureModel, public_pca_dataset
    from secureml.representations.fchl import FCHL19

    rep = FCHL19()
    t0 = time.perf_counter()
    pool = load_qm9(n=args.n_pool, seed=args.seed, properties=[PROP])
    pca_ds = public_pca_dataset(pool.names, rep.elements, n_molecules=args.pca_molecules,
                                environments=args.pca_environments, seed=args.seed)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    envs = rep.transform(pool, progress=True)
    t_rep = time.perf_counter() - t0
    pca_envs = rep.transform(pca_ds, progress=True)
    y = pool.properties[PROP]
    test_idx = np.arange(args.n_test)
    train_all = np.arange(args.n_test, len(pool))
    env_test, y_test = envs.subset(test_idx), y[test_idx]

    runs = []
    jobs = [(nst, n) for nst in args.nstacks for n in args.sizes if n <= len(train_all)]
    for nstacks, n in tqdm(jobs, desc="local-sorf fits", unit="fit"):
        idx = train_all[:n]
        env_tr = envs.subset(idx)
        model = LocalRandomFeatureModel(sigma=args.sigma, lam=args.lam, npcas=128, nstacks=nstacks,
                                        seed=args.seed, device=args.device, num_threads=args.threads)
        t0 = time.perf_counter()
        model.fit(env_tr, y[idx], pca_data=pca_envs)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(env_test)
        t_pred = time.perf_counter() - t0
        # Single-molecule latency: FCHL19 + features + dot product, one query at a time.
        single = []
        for i in range(args.n_single):
            mol = pool.subset([int(test_idx[i])])
            s0 = time.perf_counter()
            model.predict(rep.transform(mol))
            single.append(time.perf_counter() - s0)
        mae = float(np.abs(pred - y_test).mean())
        ref = REFERENCE.get(model.n_random_features, {}).get(n)
        runs.append({
            "n_train": n, "n_features": model.n_random_features, "nstacks": nstacks, "mae": mae,
            "rmse": float(np.sqrt(np.mean((pred - y_test) ** 2))),
            "reference_mae": ref, "ratio_to_reference": (mae / ref) if ref else None,
            "fit_seconds": t_fit,
            "fit_plus_fchl_seconds": t_fit + t_rep * n / len(pool),
            "predict_seconds_per_molecule_batch": t_pred / len(test_idx),
            "predict_seconds_per_molecule_single_incl_fchl": float(np.median(single)) if single else None,
            "ridge_shift": model.ridge_shift_,
        })
        tqdm.write(f"F={model.n_random_features:6d} N={n:6d}  MAE {mae:.3f} kcal/mol"
                   f"{f' (reference {ref})' if ref else ''}  fit {t_fit:.1f} s  "
                   f"predict {1e6 * t_pred / len(test_idx):.0f} us/molecule (batch)")
        del model, env_tr

    return {
        "benchmark": "local random-feature model (qml-lightning style), QM9 U0 atomization energy",
        "settings": {
            "n_pool": args.n_pool, "n_test": args.n_test, "seed": args.seed, "sigma": args.sigma,
            "lam": args.lam, "npcas": 128, "representation": rep.get_params(),
            "pca": {"molecules": len(pca_ds), "environments_per_element_min": args.pca_environments,
                    "source": "QM9 molecules outside the 20,000-molecule pool"},
            "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "blas_threads": os.environ.get("SECUREML_BLAS_THREADS", "1"),
            "torch_threads": args.threads or torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "load_seconds": t_load,
        "fchl_seconds_per_molecule": t_rep / len(pool),
        "runs": runs,
        "reference": {str(k): v for k, v in REFERENCE.items()},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    by_f: dict[int, list[dict]] = {}
    for r in result["runs"]:
        by_f.setdefault(r["n_features"], []).append(r)
    for (f, rs), color in zip(sorted(by_f.items(), reverse=True), ("C0", "C1", "C2", "C3")):
        rs = sorted(rs, key=lambda r: r["n_train"])
        ax.plot([r["n_train"] for r in rs], [r["mae"] for r in rs], "o-", color=color, label=f"secureml, F={f}")
        ref = REFERENCE.get(f)
        if ref:
            ax.plot(list(ref), list(ref.values()), "x--", color=color, alpha=0.6, label=f"qml-lightning (H100), F={f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training molecules N")
    ax.set_ylabel("MAE U0 atomization (kcal/mol)")
    ax.set_title("QM9, 2,000 test molecules")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# Double-blind cost of compact models (--double-blind)
# ------------------------------------------------------------------------------------------

def _db_models(args: argparse.Namespace) -> dict[str, tuple[Path, Any]]:
    """Fit (or reuse from --out) the two compact models; returns name -> (model file, test molecules)."""
    from secureml.data import embedded_split, load_embedded, load_qm9
    from secureml.models import build_model
    from secureml.models.pipeline import MolecularModel

    out: dict[str, tuple[Path, Any]] = {}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    n_test = max(args.sessions, args.fresh_sessions) + 4
    if "rff" in names:
        data = load_embedded()
        tr, te = embedded_split(args.seed)
        path = args.out / "rff_gaussian_4096.npz"
        if not path.exists():
            mm = build_model("rff-gaussian")
            mm.property_name = PROP
            mm.fit(data.subset(tr[:2048]))
            mm.save(path)
        out["rff"] = (path, data.subset(te[:n_test]))
    if "local" in names:
        pool = load_qm9(n=args.local_train + 500, seed=args.seed, properties=[PROP])
        path = args.out / f"local_sorf_4096_n{args.local_train}.npz"
        if not path.exists():
            mm = build_model("local-sorf", nstacks=32, sigma=args.sigma, lam=args.lam)
            mm.property_name = PROP
            mm.fit(pool.subset(np.arange(500, len(pool))))
            mm.save(path)
        # queries: embedded-set molecules outside the training pool (small enough for the public
        # feature bounds of the pre-SoftSpoken protocol too, so before/after runs see the same ones)
        emb = load_embedded()
        seen = set(pool.names)
        held_out = np.array([i for i, nm in enumerate(emb.names) if nm not in seen])
        out["local"] = (path, emb.subset(held_out[np.random.default_rng(args.seed).permutation(len(held_out))[:n_test]]))
        test = pool.subset(np.arange(500))
        mm = MolecularModel.load(path)
        out["local_mae"] = float(np.abs(mm.predict(test) - test.properties[PROP]).mean())  # type: ignore[assignment]
    return out


def _db_server(path: str, k: int | None, precompute: bool, n_sessions: int, q: Any,
               security: str | None = None, ot_pool: bool = True, cpus: set[int] | None = None,
               rounded: bool = False, precorrect: bool = False) -> None:
    """Model owner's process: serve ``n_sessions`` sessions of the model in ``path``
    (``security="semi-honest"``: the lattice inner product; default: the client-malicious OT path)."""
    torch.set_num_threads(1)
    if cpus:  # --pin-cpus: the model owner on its own core(s), as on its own machine
        os.sched_setaffinity(0, cpus)
    from protocols.krr import ServedModel, serve

    served = ServedModel.from_file(path, security=security)
    if k is not None:
        served.softspoken_k = k
    served.precompute_ot = precompute
    served.ot_pool = ot_pool  # "ot-inline": every OT extended and checked inside the session
    if rounded:  # "ot-rounded": pooled sessions send rounded corrections (serve --compact-corrections rounded)
        served.round_ot_corrections()
    served.ot_pool_precorrect = precorrect  # "ot-pre": corrections made in the refill (serve --compact-precorrect)
    q.put({"engine": "lattice" if served.public.lattice_linear else "ot", "security": served.public.security,
           "out_bits": served.compact.out_bits, "frac_bits": served.public.frac_bits,
           "weight_frac_bits": served.public.weight_frac_bits, "x_bits": served.public.x_bits,
           "n_features": served.public.n_features, "ot_round_bits": served.public.ot_round_bits})
    serve(served, "127.0.0.1", 0, max_sessions=n_sessions, on_ready=q.put, concurrency=1)


def _db_session(port: int, mm: Any, mol: Any, resume: bool, keep_alive: bool = False) -> dict[str, Any]:
    """One molecule: its plaintext prediction, then one double-blind session, both timed here
    (``keep_alive``: on the connection the server kept after this client's last session)."""
    from protocols.krr import Featurizer, molecules_featurizer, predict

    t0, c0 = time.perf_counter(), time.process_time()
    y_plain = float(mm.predict(mol)[0])
    t_plain, cpu_plain = time.perf_counter() - t0, time.process_time() - c0
    base = molecules_featurizer(mol)
    feat_s: list[float] = []

    def featurize(pp: Any, public_model: Any) -> np.ndarray:
        f0 = time.perf_counter()
        phi = base(pp, public_model)
        feat_s.append(time.perf_counter() - f0)
        return phi

    t0, c0 = time.perf_counter(), time.process_time()
    y, cost = predict(f"127.0.0.1:{port}", featurize=Featurizer(n_queries=base.n_queries, fn=featurize),
                      resume_ot=resume, keep_alive=keep_alive)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    ex = cost.extra
    # the OT path's pool refill for the next session runs after the prediction is in hand
    after = float(ex.get("after_reply_s") or 0.0)
    ot_b, ext_b = int(ex.get("ot_setup_bytes", 0)), int(ex.get("extend_bytes", 0))
    return {
        "plaintext_s": t_plain, "total_s": total, "ratio": total / t_plain,
        "prediction_s": total - after, "ratio_prediction": (total - after) / t_plain, "after_reply_s": after,
        "after_reply_bytes": int(ex.get("after_reply_bytes") or 0), "ot_pool_used": bool(ex.get("ot_pool_used")),
        # the client process's CPU time (all its threads): less sensitive to other load than wall time
        "plaintext_cpu_s": cpu_plain, "client_cpu_s": cpu,
        "setup_s": cost.offline_s, "online_s": cost.online_s, "features_s": feat_s[0] if feat_s else None,
        "ot_setup_s": ex.get("ot_setup_s"), "extend_s": ex.get("extend_s"), "resumed": ex.get("resumed"),
        "bytes": cost.total_bytes, "bytes_sent": cost.bytes_sent, "bytes_received": cost.bytes_received,
        "offline_bytes": cost.offline_bytes, "online_bytes": cost.total_bytes - cost.offline_bytes,
        "ot_setup_bytes": ot_b, "extend_bytes": ext_b,
        "handshake_bytes": cost.offline_bytes - ot_b - ext_b if ex.get("extend_bytes") is not None else None,
        "rounds": cost.rounds, "abs_error": abs(float(y[0]) - y_plain), "softspoken_k": ex.get("softspoken_k"),
        "out_bits": ex.get("out_bits"), "engine": ex.get("engine", "ot"), "keygen_s": ex.get("keygen_s"),
        "key_sent": ex.get("key_sent"), "prepared": ex.get("prepared"), "early_data": bool(ex.get("early_data")),
        "kept_alive": bool(ex.get("kept_alive")),
        # the client's work for its next session, done while it waited for this reply (offline)
        "prepare_next_s": ex.get("prepare_next_s"), "client_crypto_s": ex.get("client_crypto_s"),
    }


def lattice_cpu(path: Path, reps: int = 50) -> dict[str, Any]:
    """CPU time of each lattice step for the model in ``path`` (this process, one thread; median and
    min of ``reps``): what is query-independent (offline: key, masks, re-randomisations) and what
    remains online, so that precomputed sessions report both."""
    from protocols.krr import ServedModel, linear_he
    from protocols.mpc import rlwe_ip

    served = ServedModel.from_file(str(path), security="semi-honest")
    pm = linear_he.prepared(served)
    rng = rlwe_ip.SecureRandom()
    phi = np.zeros(pm.weights.w.shape[0], dtype=np.int64)

    def timed(fn: Any) -> dict[str, float]:
        ts = []
        for _ in range(reps):
            t0 = time.thread_time()
            fn()
            ts.append(time.thread_time() - t0)
        return {"median_ms": 1e3 * float(np.median(ts)), "min_ms": 1e3 * float(min(ts))}

    key = rlwe_ip.ClientKey(pm.rp)
    seed, c0 = key.encrypt(phi, pm.delta_bits, rng)
    c0l = pm.weights.ring.from_bytes(c0, "c0")
    out: dict[str, Any] = {"ring_degree": pm.rp.n, "q_bits": pm.rp.q_bits, "reps": reps, "clock": "thread_time"}
    out["offline_client_keygen"] = timed(lambda: rlwe_ip.ClientKey(pm.rp))
    out["offline_client_mask"] = timed(lambda: key.mask(seed, rng))
    out["offline_server_rerandomise"] = timed(lambda: rlwe_ip.server_prepare(pm.weights, seed, rng))
    out["online_client_encrypt_with_mask"] = timed(lambda: key.encrypt_with(key.mask(seed, rng), phi, pm.delta_bits))
    out["online_client_encrypt_with_mask"] = {k: v - out["offline_client_mask"][k]
                                              for k, v in out["online_client_encrypt_with_mask"].items()}
    preps = [rlwe_ip.server_prepare(pm.weights, seed, rng) for _ in range(reps + 1)]
    it = iter(preps)
    out["online_server_answer"] = timed(lambda: rlwe_ip.server_finish(pm.weights, next(it), key.pk0, c0l, pm.const,
                                                                      pm.delta_bits, rng))
    v = rlwe_ip.server_finish(pm.weights, preps[-1], key.pk0, c0l, pm.const, pm.delta_bits, rng)
    out["online_client_decrypt"] = timed(lambda: key.decrypt(v, preps[-1].top))
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    med = {k: float(np.median([r[k] for r in rows if r.get(k) is not None])) for k in keys}
    med["ratio_max"] = float(max(r["ratio"] for r in rows))
    med["ratio_prediction_max"] = float(max(r["ratio_prediction"] for r in rows))
    med["total_s_max"] = float(max(r["total_s"] for r in rows))
    med["total_s_min"] = float(min(r["total_s"] for r in rows))
    med["abs_error_max"] = float(max(r["abs_error"] for r in rows))
    med["kept_alive_sessions"] = sum(bool(r.get("kept_alive")) for r in rows)  # ran on a kept connection
    med["n"] = len(rows)
    return med


def double_blind(args: argparse.Namespace) -> dict[str, Any]:
    """Cold, fresh and resumed sessions for each compact model (see the module docstring)."""
    import multiprocessing as mp
    import tempfile

    from tqdm import tqdm

    from secureml.models.pipeline import MolecularModel

    models = _db_models(args)
    result: dict[str, Any] = {
        "benchmark": "double-blind prediction with compact models, two processes on TCP loopback",
        "includes": {
            "double_blind_total": "client wall time from connect to prediction: TCP connect, hello and "
                                  "public parameters, the client's own features (representation + feature "
                                  "map), OT session (base OTs or resumption), OT extension, online phase",
            "plaintext": "the full model's predict() on the same molecule in the same process: "
                         "representation + feature map + dot product",
        },
        "gap_ms": args.gap_ms,
        "machine": {"cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                    "processor": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
        "models": {},
    }
    if "local_mae" in models:
        result["local_model_mae_kcal_mol"] = models.pop("local_mae")
    ctx = mp.get_context("spawn")
    server_cpus: set[int] | None = None
    if args.pin_cpus:
        # client and servers on different cores: on a shared loopback machine a write wakes the peer on
        # the writer's own core and the scheduler preempts the writer inside the syscall (~1 ms per
        # write under load, cProfile); separate machines have no such coupling
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin-cpus needs two CPUs")
        os.sched_setaffinity(0, {cpus[0]})
        server_cpus = set(cpus[1:])
    result["pinned_cpus"] = {"client": None if server_cpus is None else sorted(os.sched_getaffinity(0)),
                             "servers": None if server_cpus is None else sorted(server_cpus)}
    base_paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    # --keep-alive: every path twice, on a new connection per session and on a kept-alive one
    # ("<path>/keep-alive"), sessions alternating, so that one run reports both under the same load
    paths = [p + suffix for p in base_paths for suffix in (("", "/keep-alive") if args.keep_alive else ("",))]
    result["keep_alive_compared"] = bool(args.keep_alive)
    from protocols.krr import linear_he

    for model_name, (path, test) in models.items():
        # every path's server runs at once and the sessions alternate between paths, so that all
        # paths see the same machine load (this machine is shared); the OT path keeps its old key
        # ("rff"), the others are "rff/lattice", "rff/lattice-prepared"
        servers: dict[str, dict[str, Any]] = {}
        n_sessions = 1 + 2 + args.fresh_sessions + args.sessions
        for kind in paths:
            q = ctx.Queue()
            security = "semi-honest" if kind.startswith("lattice") else None  # "lattice..." and ".../keep-alive"
            proc = ctx.Process(target=_db_server, args=(str(path), args.softspoken_k, args.precompute, n_sessions, q,
                                                        security, kind.split("/")[0] != "ot-inline", server_cpus,
                                                        kind.split("/")[0] in ("ot-rounded", "ot-pre-rounded"),
                                                        kind.split("/")[0] in ("ot-pre", "ot-pre-rounded")),
                              daemon=True)
            proc.start()
            servers[kind] = {"proc": proc, "plan": q.get(timeout=600), "port": q.get(timeout=600),
                             "cache": tempfile.mkdtemp(prefix="secureml-cache-")}
            if servers[kind]["plan"]["engine"] != kind.split("/")[0].split("-")[0]:
                raise SystemExit(f"{model_name}: asked for the {kind} path, the server runs {servers[kind]['plan']}")
        mm = MolecularModel.load(path)
        old_cache = os.environ.get("SECUREML_CACHE")

        def session(kind: str, i: int, resume: bool) -> dict[str, Any]:
            os.environ["SECUREML_CACHE"] = servers[kind]["cache"]  # first contact: a client new to the server
            # "lattice": all the crypto inside the session; "lattice-prepared" (the client's default,
            # linear_he.PREPARE_NEXT): the next session's query-independent work between sessions
            linear_he.PREPARE_NEXT = kind.split("/")[0] == "lattice-prepared"
            row = _db_session(servers[kind]["port"], mm, test.subset([i]), resume=resume,
                              keep_alive=kind.endswith("/keep-alive"))
            # idle time between queries: the between-sessions work (lattice-prepared: the server's
            # re-randomisation after its reply) ends before the next plaintext or session is timed
            time.sleep(args.gap_ms / 1e3)
            return row

        rows: dict[str, dict[str, Any]] = {k: {"fresh": [], "resumed": []} for k in paths}
        try:
            cold = {k: session(k, 0, True) for k in paths}
            for i in range(2):  # warm-up: imports, allocator, caches (not reported)
                for k in paths:
                    session(k, 1 + i, True)
            for i in tqdm(range(args.fresh_sessions), desc=f"{model_name}: fresh sessions", leave=False):
                for k in paths:
                    rows[k]["fresh"].append(session(k, 3 + i, False))
            for i in tqdm(range(args.sessions), desc=f"{model_name}: resumed sessions", leave=False):
                for k in paths:
                    rows[k]["resumed"].append(session(k, 3 + i, True))
        finally:
            linear_he.PREPARE_NEXT = False
            if old_cache is None:
                os.environ.pop("SECUREML_CACHE", None)
            else:
                os.environ["SECUREML_CACHE"] = old_cache
            for srv in servers.values():
                srv["proc"].join(60)
                if srv["proc"].is_alive():
                    srv["proc"].kill()
        if any(k.startswith("lattice") for k in paths):
            result.setdefault("lattice_cpu", {})[model_name] = lattice_cpu(path)
        for kind in paths:
            name = model_name if kind == "ot" else f"{model_name}/{kind}"
            fresh, resumed = rows[kind]["fresh"], rows[kind]["resumed"]
            result["models"][name] = {
                "model_file": path.name, "path": kind.split("/")[0], "keep_alive": kind.endswith("/keep-alive"),
                "public_params": servers[kind]["plan"],
                "cold": cold[kind], "fresh": _summary(fresh) if fresh else None, "resumed": _summary(resumed),
                "sessions": {"fresh": fresh, "resumed": resumed},
            }
            r = result["models"][name]["resumed"]
            tqdm.write(f"{name}: resumed {1e3 * r['total_s']:.1f} ms vs plaintext {1e3 * r['plaintext_s']:.2f} ms "
                       f"(ratio {r['ratio']:.1f}, max {r['ratio_max']:.1f}), {r['bytes'] / 1e6:.3f} MB; "
                       f"to the prediction {1e3 * r['prediction_s']:.1f} ms (ratio {r['ratio_prediction']:.1f}), "
                       f"after the reply {1e3 * r['after_reply_s']:.1f} ms; "
                       f"cold {1e3 * cold[kind]['total_s']:.0f} ms {cold[kind]['bytes'] / 1e6:.2f} MB")
    result["machine"]["load_average_end"] = os.getloadavg()
    return result


def _write_csv(result: dict[str, Any], path: Path) -> None:
    """One row per (model/path, session kind): medians, max ratio, bytes, rounds, max error."""
    import csv

    cols = ["total_s", "total_s_max", "plaintext_s", "ratio", "ratio_max", "prediction_s", "ratio_prediction",
            "after_reply_s", "after_reply_bytes", "features_s", "setup_s", "online_s",
            "prepare_next_s", "client_cpu_s", "plaintext_cpu_s", "bytes", "rounds", "abs_error_max", "n"]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["model", "path", "keep_alive", "session"] + cols)
        for name, m in result["models"].items():
            for kind in ("fresh", "resumed"):
                if m.get(kind):
                    out.writerow([name, m.get("path", "ot"), bool(m.get("keep_alive")), kind]
                                 + [m[kind].get(c) for c in cols])


def plot_double_blind(result: dict[str, Any], path: Path) -> None:
    """Median time per session, split into phases, next to 20x the plaintext prediction."""
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    names = list(result["models"])
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 4), squeeze=False)
    parts = [("features_s", "client features"), ("ot_setup_s", "OT session (base OTs / resume)"),
             ("extend_s", "OT extension (precomputed)"), ("online_s", "online (incl. extension if not precomputed)")]
    for ax, name in zip(axes[0], names):
        m = result["models"][name]
        kinds = [(k, m[k]) for k in ("fresh", "resumed") if m.get(k)]
        for x, (kind, s) in enumerate(kinds):
            bottom = 0.0
            for (key, label), color in zip(parts, ("C2", "C3", "C1", "C0")):
                v = 1e3 * float(s.get(key) or 0.0)
                ax.bar(x, v, bottom=bottom, color=color, label=label if x == 0 else None)
                bottom += v
            rest = 1e3 * s["total_s"] - bottom
            ax.bar(x, max(rest, 0.0), bottom=bottom, color="0.7", label="handshake, other" if x == 0 else None)
            ax.text(x, 1e3 * s["total_s"], f"{s['bytes'] / 1e6:.2f} MB\n{s['ratio']:.1f}x", ha="center",
                    va="bottom", fontsize=8)
        plain = 1e3 * float(np.median([s["plaintext_s"] for _, s in kinds]))
        ax.axhline(5 * plain, color="k", ls="--", lw=1, label="5x plaintext (first-session target)")
        ax.axhline(2 * plain, color="k", ls=":", lw=1, label="2x plaintext (resumed target)")
        ax.set_xticks(range(len(kinds)), [k for k, _ in kinds])
        ax.set_ylabel("ms per prediction (median)")
        ax.set_title(f"{name}: plaintext {plain:.1f} ms")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, max(25 * plain, ax.get_ylim()[1]))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_parse_ints, default=[1024, 4096, 16384], help="training sizes N")
    p.add_argument("--nstacks", type=_parse_ints, default=[128, 32], help="SORF stacks (F = 128 * nstacks)")
    p.add_argument("--n-pool", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--n-single", type=int, default=20, help="single-molecule latency samples")
    p.add_argument("--pca-molecules", type=int, default=2000)
    p.add_argument("--pca-environments", type=int, default=1024)
    p.add_argument("--sigma", type=float, default=6.0)
    p.add_argument("--lam", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the feature map (default: torch's setting)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--quick", action="store_true", help="small smoke run: N = 256, 1024; 3,000-molecule pool")
    p.add_argument("--out", type=Path, default=Path("bench/results/local_model"))
    g = p.add_argument_group("double-blind cost (--double-blind)")
    g.add_argument("--double-blind", action="store_true",
                   help="measure double-blind prediction cost of compact models instead of the learning curve")
    g.add_argument("--sessions", type=int, default=20,
                   help="resumed sessions per model (one molecule each; OT: resumed OT session, lattice: cached key)")
    g.add_argument("--fresh-sessions", type=int, default=5,
                   help="sessions per model without resumption, public map already cached (OT: fresh base OTs; "
                        "lattice: a fresh key made and sent, i.e. a client's first session)")
    g.add_argument("--models", default="rff,local", help="comma-separated: rff, local")
    g.add_argument("--paths", default="ot,lattice,lattice-prepared",
                   help="comma-separated two-party paths: ot (client-malicious, checked OT extension; resumed "
                        "sessions spend a checked random-OT pool refilled after each reply), ot-inline (the same "
                        "with every OT extended and checked inside the session), ot-rounded (the pooled path with rounded "
                        "corrections: serve --compact-corrections rounded), ot-pre (the pooled path whose refill also sends the "
                        "next session's corrections: serve --compact-precorrect), ot-pre-rounded (both), "
                        "lattice (semi-honest, one RLWE ciphertext each way), lattice-prepared (the same with "
                        "the next session's query-independent work done between sessions)")
    g.add_argument("--softspoken-k", type=int, default=None, help="SoftSpoken block size (default: the server's)")
    g.add_argument("--gap-ms", type=float, default=20.0,
                   help="idle time after each session (ms): between-sessions work finishes before the next "
                        "timed step, as between a client's queries")
    g.add_argument("--local-train", type=int, default=4096, help="training size of the local model")
    g.add_argument("--pin-cpus", action="store_true",
                   help="pin this (client) process to the first CPU and the servers to the others, as if on "
                   "separate machines (default: off, every process on every CPU)")
    g.add_argument("--keep-alive", action=argparse.BooleanOptionalAction, default=True,
                   help="also run every path on a kept-alive connection (its own server; reported as "
                   "'<model>/<path>/keep-alive', sessions alternating with the new-connection runs); "
                   "--no-keep-alive: new connections only (default: on)")
    g.add_argument("--precompute", action="store_true",
                   help="extend the OTs before the online phase (reports the online part apart)")
    args = p.parse_args(argv)
    if args.double_blind:
        torch.set_num_threads(args.threads or 1)
        args.out.mkdir(parents=True, exist_ok=True)
        result = double_blind(args)
        (args.out / "double_blind.json").write_text(json.dumps(result, indent=2))
        _write_csv(result, args.out / "double_blind.csv")
        plot_double_blind(result, args.out / "double_blind.png")
        print(f"wrote {args.out / 'double_blind.json'} and {args.out / 'double_blind.png'}")
        return 0
    if args.quick:
        args.sizes, args.nstacks, args.n_pool, args.n_test = [256, 1024], [32, 8], 3000, 500
        args.pca_molecules = 500
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "local_model_bench.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "local_model_bench.png")
    print(f"wrote {args.out / 'local_model_bench.json'} and {args.out / 'local_model_bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
