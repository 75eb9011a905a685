"""`secureml bench cost`: every engine on the same model and the same queries, side by side.

Engines (each runs as two real processes on TCP loopback, except plaintext):
  plaintext      the model owner predicts in the clear (the denominator of every ratio)
  ot             secureml's double-blind exact KRR, semi-honest protocols (protocols.krr, bench/krr_cost.py;
                 Gaussian cross term by lattice HE, step 9 by lattice HE from N ~ 925 on: protocol 19;
                 `serve`'s client-malicious default costs more: ot-cm)
  ot-cm          the same model served as `secureml serve` does by default: client-malicious (a
                 deviating client learns f(q') or an abort: docs/malicious.md; Gaussian with the
                 checked lattice cross term, Laplacian with its chain check)
  ot-vole        the same with the OT-based vector OLE for the cross term (protocol 2's)
  fhe            SEAL CKKS, client holds the key (protocols.baselines.fhe); keys and the encoded
                 model are set-up: its per-query cost is the "online" columns
  crypten        CrypTen with its trusted-first-party provider (trusted dealer)
  generic        generic MPC, Beaver triples from OT (protocols.baselines.generic_mpc)
  spu-cheetah    SecretFlow SPU 0.9.5, CHEETAH (lattice HE + silent OT, no dealer), 128-bit ring,
                 40 fractional bits (bench/spu_engine.py; needs `make spu`)
  spu-cheetah64  the same, 64-bit ring, 18 fractional bits (SPU's fast, imprecise setting)
  spu-semi2k     SPU SEMI2K, 128-bit ring: needs a trusted first party for its triples (trusted dealer)
  mp-spdz        MP-SPDZ's semi protocol (OT triples, no dealer) on the same model, 16/48-bit sfix,
                 only where MP_SPDZ_HOME points at a built MP-SPDZ (bench/mpspdz_engine.py);
                 skipped with a one-line note otherwise
For each training size N: wall time (set-up/offline and online), bytes each way (keys included),
online bytes, rounds, peak memory, |prediction - plaintext|. With ``--link lan|wan`` every engine
runs through an emulated link (bench/netem.py: a relay process, 1 Gbit/s and 0.5 ms RTT, or
100 Mbit/s and 40 ms RTT) and the times are measured; without it the LAN/WAN columns are computed
from bytes and rounds. Writes JSON, CSV, plots and a Markdown report. Slow engines stop at the first
N whose run exceeds --engine-budget seconds.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = {
    "ot": "bench.krr_cost",
    "ot-cm": "bench.krr_cost",
    "ot-vole": "bench.krr_cost",
    "fhe": "protocols.baselines.fhe",
    "crypten": "protocols.baselines.crypten_engine",
    "generic": "protocols.baselines.generic_mpc",
    "spu-cheetah": "bench.spu_engine",
    "spu-cheetah64": "bench.spu_engine",
    "spu-semi2k": "bench.spu_engine",
    "mp-spdz": "bench.mpspdz_engine",
}
# engines whose correlated randomness comes from a trusted party (marked in every output)
TRUSTED_DEALER = {"crypten", "spu-semi2k"}
NETWORKS = {"LAN": (1e9, 0.5e-3), "WAN": (100e6, 40e-3)}
FRAC_BITS_DEFAULT = "8,10,12,14,16"
DEFAULT_ENGINES = "plaintext,ot,fhe,crypten,generic"
#: --quick leaves the FHE baseline out unless --engines names it: its set-up (keys, encoding,
#: noise calibration) alone takes 40-120 s per model on this machine, the whole quick budget
QUICK_ENGINES = "plaintext,ot,crypten,generic"
#: --quick: small sizes, and an engine whose run takes longer than this stops after its first N
#: (the FHE baseline's set-up is flat in N, ~40-80 s per model here: one size shows it)
QUICK_SIZES = (32, 128, 512)
QUICK_ENGINE_BUDGET = 20.0
QUICK_FRAC_BITS = "8,12,16"


from secureml.plot_style import log_axis, new_figure, save, series
from secureml.runs import output_folder
from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries  # noqa: F401 (public here too)


def network_time(wall_s: float, total_bytes: int, rounds: int, bandwidth: float, latency: float) -> float:
    """Loopback wall time plus what a real link adds: serialisation and one latency per round."""
    return wall_s + total_bytes * 8 / bandwidth + rounds * latency


def _relay(link: str):
    """``relay`` hook for the baselines' process pair: a bench.netem relay in front of the server."""
    from bench.netem import Relay

    def hook(port: int):
        r = Relay(("127.0.0.1", port), link)
        return r.port, r.close

    return hook


def run_engine(name: str, model, Q: np.ndarray, link: str | None = None, **opts: Any) -> dict[str, Any]:
    if name in ("ot", "ot-cm", "ot-vole"):
        from bench.krr_cost import serve_and_predict

        # Laplacian models sit on the 2^-8 grid: encoded on it, as a trained model's grid_bits
        frac = LAPLACIAN_GRID_BITS if model.kernel == "laplacian" else None
        preds, client, _ = serve_and_predict(model, Q, "ot" if name == "ot-vole" else "he", link, frac_bits=frac,
                                             security="client-malicious" if name == "ot-cm" else "semi-honest")
        server = client
    elif name.startswith("spu-"):
        from bench import spu_engine

        cfg = {k: v for k, v in spu_engine.CONFIGS[name].items() if k != "trusted_dealer"}
        preds, client, server = spu_engine.run_local(model, Q, link=link, **cfg, **opts)
    else:
        mod = importlib.import_module(ENGINES[name])
        if link:
            opts["relay"] = _relay(link)
        preds, client, server = mod.run_local(model, Q, **opts)  # every engine: (preds, client, server)
    return {
        "preds": np.asarray(preds, dtype=float),
        "wall_s": client.wall_s, "offline_s": client.offline_s, "online_s": client.online_s,
        "client_to_server_MB": client.bytes_sent / 1e6, "server_to_client_MB": client.bytes_received / 1e6,
        "online_MB": (client.bytes_sent + client.bytes_received - client.offline_bytes) / 1e6,
        "rounds": client.rounds, "peak_rss_MB": max(client.peak_rss_mb, server.peak_rss_mb),
        "trusted_dealer": name in TRUSTED_DEALER, "link": link or "loopback",
        # CPU seconds of each party (all threads), where the engine reports them: load-independent
        "client_cpu_s": client.extra.get("client_cpu_s"), "server_cpu_s": client.extra.get("server_cpu_s"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="secureml bench cost", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", default="32,128,512,2048,8192,16384", help="training sizes N")
    ap.add_argument("--features", type=int, default=351, help="representation width d (CM size 26: 351)")
    ap.add_argument("--kernel", choices=("gaussian", "laplacian"), default="gaussian",
                    help="kernel (the Laplacian is served by the OT engine only; the others refuse it)")
    ap.add_argument("--sigma", type=float, default=None,
                    help="kernel width (default: the published study's 74, Gaussian; 1000, Laplacian)")
    ap.add_argument("--engines", default=None,
                    help="comma-separated: plaintext, ot, ot-cm (client-malicious, serve's default), ot-vole, fhe, crypten, generic, spu-cheetah, "
                         "spu-cheetah64, spu-semi2k (SPU engines: SecretFlow SPU in .venv-spu, `make spu`), "
                         "mp-spdz (only with MP_SPDZ_HOME set; skipped with a note otherwise) "
                         f"(default: {DEFAULT_ENGINES}; --quick: {QUICK_ENGINES})")
    ap.add_argument("--link", choices=("lan", "wan"), default=None,
                    help="run every engine through an emulated network link (bench/netem.py relay: lan = "
                         "1 Gbit/s, 0.5 ms RTT; wan = 100 Mbit/s, 40 ms RTT); measured, not computed")
    ap.add_argument("--engine-budget", type=float, default=180.0,
                    help="stop an engine after the first N whose run took longer than this (s)")
    ap.add_argument("--frac-bits", default=FRAC_BITS_DEFAULT,
                    help=f"precision sweep for the OT engine (--quick: {QUICK_FRAC_BITS})")
    ap.add_argument("--precision-n", type=int, default=512, help="N of the precision sweep")
    ap.add_argument("--quick", action="store_true",
                    help=f"N = {', '.join(map(str, QUICK_SIZES))}, engines {QUICK_ENGINES} (name fhe in --engines "
                         f"to add it: it then runs at the first N only, as any engine over {QUICK_ENGINE_BUDGET:.0f} s), "
                         f"precision at {QUICK_FRAC_BITS} bits: about 1.5 minutes")
    ap.add_argument("--no-precision", action="store_true", help="skip the OT engine's precision sweep")
    ap.add_argument("--out", default=None, help="output folder (default: a new results/bench-cost/<time>/ per run)")
    ap.add_argument("--seed", type=int, default=0)
    from secureml.sweep import add_scheduler_argument

    add_scheduler_argument(ap)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.sigma is None:
        args.sigma = 1000.0 if args.kernel == "laplacian" else 74.0
    if args.quick:
        args.engine_budget = min(args.engine_budget, QUICK_ENGINE_BUDGET)
        if args.frac_bits == FRAC_BITS_DEFAULT:
            args.frac_bits = QUICK_FRAC_BITS
    sizes = list(QUICK_SIZES) if args.quick else [int(s) for s in args.sizes.split(",")]
    if args.engines is None:
        args.engines = QUICK_ENGINES if args.quick else DEFAULT_ENGINES
    engines = [e for e in args.engines.split(",") if e]
    out = output_folder(args.out, "bench-cost")
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    do_precision = "ot" in engines and args.kernel == "gaussian" and not args.no_precision
    n_prec = len(args.frac_bits.split(",")) if do_precision else 0
    # one step per engine run (engine x N) and per precision point: the bar moves after every run,
    # and its description names the run in progress (the slow ones take a minute)
    bar = tqdm(total=len(sizes) * sum(e != "plaintext" for e in engines) + n_prec, desc="cost runs", unit="run")
    try:
        if args.scheduler == "serial":
            for N in sizes:
                rows += size_cell((args, N, engines, skipped), bar=bar)[0]
        else:
            # each N on its own worker: the per-engine budget cannot stop larger sizes early here,
            # and cells sharing a machine compete for its cores (compare times within one scheduler)
            from secureml.sweep import map_cells

            for cell_rows, cell_skipped in map_cells(size_cell, [(args, N, engines, {}) for N in sizes],
                                                     args.scheduler):
                rows += cell_rows
                bar.update(sum(e != "plaintext" for e in engines))
                for k, v in cell_skipped.items():
                    skipped.setdefault(k, v)
        # the Laplacian protocol is exact on its grid: the precision sweep is a Gaussian-kernel matter
        precision = precision_sweep(args, bar=bar) if do_precision else []
    finally:
        bar.close()
    write_outputs(out, rows, precision, skipped, args)
    print(f"results in {out}/ (report.md, cost.json, cost.csv, *.png)")
    return 0


def size_cell(job: tuple[argparse.Namespace, int, list[str], dict[str, str]], bar: Any = None
              ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every engine at one training size N (an independent sweep cell); ``skipped`` engines are
    left out and engines over budget are added to it.  Returns (rows, skipped). ``bar``: a tqdm
    bar to advance by one per engine (serial runs)."""
    from tqdm import tqdm

    args, N, engines, skipped = job
    rows: list[dict[str, Any]] = []
    if "mp-spdz" in engines and "mp-spdz" not in skipped:
        from bench.mpspdz_engine import skip_note

        note = skip_note()
        if note is not None:  # optional engine: one line, not a failure
            skipped["mp-spdz"] = note
            tqdm.write(note)
    model, rng = synthetic_model(N, args.features, args.sigma, args.seed, args.kernel)
    Q = synthetic_queries(model, rng)
    t0 = time.perf_counter()
    model.predict(Q)  # warm-up: caches training norms, as a deployed server would
    reps = max(5, int(2e7 // (N * args.features)))
    for _ in range(reps):
        plain = model.predict(Q)
    t_plain = (time.perf_counter() - t0) / reps
    if "plaintext" in engines:
        rows.append({"engine": "plaintext", "N": N, "wall_s": t_plain, "offline_s": 0.0,
                     "online_s": t_plain, "client_to_server_MB": 0.0, "server_to_client_MB": 0.0,
                     "rounds": 0, "abs_error": 0.0, "ratio_vs_plaintext": 1.0})
    for eng in engines:
        if eng == "plaintext":
            continue
        if eng in skipped:
            if bar is not None:
                bar.update(1)
            continue
        if bar is not None:
            bar.set_description(f"N={N} {eng}")
        try:
            r = run_engine(eng, model, Q, link=args.link)
        except Exception as exc:  # report and move on: one broken engine must not sink the run
            skipped[eng] = f"N={N}: {type(exc).__name__}: {exc}"
            tqdm.write(f"{eng}: stopped ({skipped[eng]})")
            if bar is not None:
                bar.update(1)
            continue
        err = float(np.max(np.abs(r.pop("preds") - plain)))
        row = {"engine": eng, "N": N, **r, "abs_error": err, "ratio_vs_plaintext": r["wall_s"] / t_plain}
        total = int((r["client_to_server_MB"] + r["server_to_client_MB"]) * 1e6)
        if not args.link:  # computed estimates; with --link the wall time itself is measured on the link
            for net, (bw, lat) in NETWORKS.items():
                row[f"{net}_s"] = network_time(r["wall_s"], total, r["rounds"], bw, lat)
        rows.append(row)
        cpu = "" if r.get("client_cpu_s") is None else f" (CPU {r['client_cpu_s'] + r['server_cpu_s']:.2f} s)"
        tqdm.write(f"N={N:6d} {eng:8s} {r['wall_s']:8.2f} s{cpu}  {total / 1e6:9.1f} MB  "
                   f"{r['rounds']:5d} rounds  err {err:.1e}  x{row['ratio_vs_plaintext']:,.0f}")
        if r["wall_s"] > args.engine_budget:
            skipped[eng] = f"stopped after N={N}: {r['wall_s']:.0f} s > budget {args.engine_budget:.0f} s"
        if bar is not None:
            bar.update(1)
    return rows, skipped


def precision_sweep(args: argparse.Namespace, bar: Any = None) -> list[dict[str, Any]]:
    """|double-blind - plaintext| against the fixed-point precision (cf. the study's Fig. on bits)."""
    from protocols.krr.runner import run_local

    model, rng = synthetic_model(args.precision_n, args.features, args.sigma, args.seed + 1)
    Q = np.clip(model.X_train[:2] + rng.normal(0, 1.0, (2, args.features)) * (model.X_train[:2] > 0), 0, 127)
    plain = model.predict(Q)
    res = []
    for f in [int(x) for x in args.frac_bits.split(",")]:
        if bar is not None:
            bar.set_description(f"precision: {f} fractional bits")
        preds, cost, _ = run_local(model, Q, frac_bits=f)
        res.append({"frac_bits": f, "max_abs_error": float(np.max(np.abs(preds - plain))),
                    "total_MB": cost.total_bytes / 1e6})
        if bar is not None:
            bar.update(1)
    return res


def engine_label(engine: str) -> str:
    """Legend and report name: trusted-dealer engines say so (they are not dealer-free)."""
    return f"{engine} (trusted dealer)" if engine in TRUSTED_DEALER else engine


def plot_cost(rows: list[dict[str, Any]], path: Path) -> None:
    """Three panels (time, traffic, ratio to plaintext) against N on log axes, one legend outside
    the panels (it cannot hide a line), ticks at the measured N only, trusted-dealer engines drawn
    dashed with open markers and named so in the legend."""
    order = [e for e in ["plaintext", "ot", "ot-cm", "ot-vole", "fhe", "generic", "spu-cheetah", "spu-cheetah64",
                         "crypten", "spu-semi2k"] if any(r["engine"] == e for r in rows)]
    order += sorted({r["engine"] for r in rows} - set(order))
    sizes = sorted({r["N"] for r in rows})
    fig, ax = new_figure("wide", ncols=3)
    panels = (("wall_s", "seconds per prediction (loopback)"), ("MB", "MB per prediction (both ways)"),
              ("ratio_vs_plaintext", "time / plaintext time"))
    for i, e in enumerate(order):
        rs = sorted((r for r in rows if r["engine"] == e), key=lambda r: r["N"])
        style = series(i)
        if e in TRUSTED_DEALER:
            style.update(linestyle="--", markerfacecolor="none")
        for a, (key, _) in zip(ax, panels):
            if e == "plaintext" and key != "wall_s":
                continue  # no traffic; the ratio is 1 by definition
            ys = [r["client_to_server_MB"] + r["server_to_client_MB"] if key == "MB" else r[key] for r in rs]
            a.plot([r["N"] for r in rs], ys, label=engine_label(e), **style)
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    for a, (_, title) in zip(ax, panels):
        a.set_xscale("log")
        a.xaxis.set_major_locator(FixedLocator(sizes))
        a.xaxis.set_minor_locator(NullLocator())
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        a.xaxis.set_major_formatter(fmt)
        if len(sizes) > 4:  # long size lists: slanted labels never overlap
            a.tick_params(axis="x", labelrotation=45)
        log_axis(a.yaxis)
        a.set_xlabel("training size N")
        a.set_title(title)
    handles, labels = ax[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), bbox_to_anchor=(0.5, -0.02),
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save(fig, path)


def write_outputs(out: Path, rows, precision, skipped, args) -> None:
    (out / "cost.json").write_text(json.dumps({"rows": rows, "precision": precision, "skipped": skipped,
                                               "features": args.features, "sigma": args.sigma,
                                               "kernel": args.kernel}, indent=2))
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "engine", k != "N", k))
    with open(out / "cost.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    plot_cost(rows, out / "cost.png")
    if precision:
        fig, a = new_figure("square")
        a.semilogy([p["frac_bits"] for p in precision], [max(p["max_abs_error"], 1e-12) for p in precision],
                   **series(0))
        a.set_xticks([p["frac_bits"] for p in precision])
        a.set_xlabel("fractional bits of the representation")
        a.set_ylabel("max |double-blind - plaintext| (kcal/mol)")
        a.set_title(f"precision of the OT engine (N = {args.precision_n})")
        save(fig, out / "precision.png")
    lines = ["# Cost of double-blind KRR prediction, engine by engine", "",
             f"{args.kernel.capitalize()} kernel, sigma {args.sigma}, d = {args.features}, one query, two processes "
             + (f"through an emulated {args.link.upper()} link (bench/netem.py; times measured)." if args.link else
                "on TCP loopback (LAN/WAN columns computed: bytes/bandwidth + rounds x latency)."),
             "Engines marked * use a trusted dealer (CrypTen's trusted first party, SPU SEMI2K's trusted "
             "first party): a weaker trust model than the dealer-free engines.", "",
             "| engine | N | wall s | CPU s (both) | setup s | online s | MB c->s | MB s->c | online MB | rounds | LAN s | WAN s | |err| | x plaintext |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["engine"] + ("*" if r.get("trusted_dealer") else "")
        cpu = "" if r.get("client_cpu_s") is None else f"{r['client_cpu_s'] + r['server_cpu_s']:.3g}"
        lines.append(f"| {name} | {r['N']} | {r['wall_s']:.4g} | {cpu} | {r['offline_s']:.3g} | {r['online_s']:.4g} | "
                     f"{r['client_to_server_MB']:.3g} | {r['server_to_client_MB']:.3g} | {r.get('online_MB', 0):.3g} | {r['rounds']} | "
                     f"{r.get('LAN_s', r['wall_s']):.4g} | {r.get('WAN_s', r['wall_s']):.4g} | {r['abs_error']:.1e} | "
                     f"{r['ratio_vs_plaintext']:,.0f} |")
    if skipped:
        lines += ["", "Engines stopped early:", *[f"- **{k}**: {v}" for k, v in skipped.items()]]
    if getattr(args, "quick", False) and "fhe" not in args.engines.split(","):
        lines += ["", "`--quick` leaves out **fhe** (its set-up alone takes 40-120 s per model here); "
                  "`--quick --engines plaintext,ot,fhe,crypten,generic` adds it at the first N."]
    lines += ["", "![cost](cost.png)"]
    if precision:
        lines += ["", "| frac bits | max abs error | MB |", "|---|---|---|",
                  *[f"| {p['frac_bits']} | {p['max_abs_error']:.2e} | {p['total_MB']:.1f} |" for p in precision],
                  "", "![precision](precision.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
