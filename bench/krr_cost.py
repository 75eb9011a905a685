"""Cost of double-blind exact KRR over OT (Gaussian or Laplacian kernel): two processes on TCP loopback.

    python -m bench.krr_cost --sizes 256,1024,4096,16384 --features 435 --queries 1 --out results/krr_cost
    python -m bench.krr_cost --kernel laplacian --sigma 1000 --sizes 256,1024,4096,16384 --features 351
    python -m bench.krr_cost --cross-term ot --sizes 16384 --features 351     # the OT vector OLE instead
    python -m bench.krr_cost --link wan --sizes 16384 --features 351          # through an emulated WAN
    python -m bench.krr_cost --kernel laplacian --ot-engine softspoken,silent --sizes 4096,16384 --features 351
    python -m bench.krr_cost --inner-product ot,he --sizes 4096,16384 --features 351  # step 9: OT vs lattice
    python -m bench.krr_cost --kernel laplacian --security semi-honest,client-malicious --repeat 3 --sizes 16384 --features 351
    python -m bench.krr_cost --kernel laplacian --security semi-honest,client-malicious,client-malicious-unbound --sizes 16384 --features 351

For each training size N: the model owner's server runs in its own process, the query owner's
client in this one. Reports wall time (set-up/offline = base OTs; online = the rest), bytes each
way, rounds (the client's channel count from its hello to its output, the OT engine's set-up
included, a fresh OT session: no resumed ticket; the server's channel is not pipelined, as in
`secureml serve`: bench.malicious_cost's in-process sessions use the same schedule by default), |prediction - plaintext|, the server's one-off per-model preparation (encoding, and the
lattice cross term's NTT plaintexts; before any client connects, not in the wall time), and the ratio to the plaintext prediction time measured
in the same run. ``--security`` runs each protocol mode (comma-separated: compared in one run, the
modes alternating) and ``--repeat`` repeats every configuration, so that ratios come from pairs
measured next to each other on this shared machine. ``client-malicious-unbound`` (Laplacian kernel)
is client-malicious with ``laplacian_chain = "unbound"`` (the one-bit protocol
protocols.krr.laplacian_malicious); plain ``client-malicious`` runs the default bound chain
(protocols.krr.laplacian_strict); the ``chain`` column says which ran. Peak RSS of both processes:
the server's own process, and the client's (this process) with its high-water mark reset before
every session (/proc/self/clear_refs), so alternating runs do not inherit each other's peak.
Writes JSON + CSV and a log-log plot.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries  # one definition for both benchmarks


#: --security modes -> (PublicParams.security, PublicParams.laplacian_chain or None: the default)
SECURITY_MODES = {"semi-honest": ("semi-honest", None), "client-malicious": ("client-malicious", None),
                  "client-malicious-unbound": ("client-malicious", "unbound")}


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS mark (VmHWM), so the next session's client peak is its own."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def model_for(N: int, d: int, sigma: float, kernel: str, seed: int = 0):
    """The synthetic CM-like model (Laplacian: entries on the 2^-8 grid, as ``secureml train`` makes them)."""
    return synthetic_model(N, d, sigma, seed, kernel)


def _server(params, cross_term: str, q: mp.Queue, frac_bits: int | None = None, ot_engine: str = "silent",
            inner_product: str = "auto", security: str = "semi-honest") -> None:
    from protocols.common import peak_rss_mb
    from protocols.krr import ServedModel, gaussian, gaussian_malicious, laplacian, laplacian_malicious, serve  # noqa: F401
    from protocols.krr import laplacian_strict

    security, chain = SECURITY_MODES[security]
    sm = ServedModel(params, frac_bits=frac_bits, security=security)
    if sm.public.security != security:  # ServedModel falls back to semi-honest where the plan does not fit
        raise SystemExit(f"this model cannot be served {security}")
    sm.public.cross_term = cross_term
    sm.public.ot_engine = ot_engine
    if chain is not None and params.kernel == "laplacian":
        sm.public.laplacian_chain = chain
    if security == "semi-honest":  # the client-malicious protocols have their own step 9
        sm.public.inner_product = inner_product
    sm.public.validate()
    prepare = {("gaussian", "semi-honest"): gaussian.prepare_server,
               ("laplacian", "semi-honest"): laplacian.prepare_server,
               ("gaussian", "client-malicious"): gaussian_malicious.prepare_server,
               ("laplacian", "client-malicious"): {"bound": laplacian_strict.prepare_server,
                                                   "unbound": laplacian_malicious.prepare_server}
               [sm.public.laplacian_chain]}[params.kernel, security]
    t0 = time.perf_counter()
    if (params.kernel, security) == ("gaussian", "client-malicious"):
        prepare = functools.partial(prepare, reply_pads=1)  # as `secureml serve` (stop 11)
    prepare(params, sm.public)  # once per served model, before any client (encoding; lattice plaintexts)
    q.put(time.perf_counter() - t0)
    c0 = time.process_time()
    serve(sm, "127.0.0.1", 0, max_sessions=1, on_ready=q.put)
    q.put(time.process_time() - c0)  # the server's CPU seconds for the session (load-independent)
    q.put(peak_rss_mb())  # the server process's peak RSS (its own address space)


def serve_and_predict(params, Q: np.ndarray, cross_term: str = "he", link: str | None = None,
                      timeout: float = 1800.0, frac_bits: int | None = None, ot_engine: str = "silent",
                      inner_product: str = "auto", security: str = "semi-honest"):
    """Server process (prepared before it accepts) + this process as client, optionally through an
    emulated link: (predictions, client CostReport, server's one-off preparation seconds)."""
    from protocols.krr import predict

    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_server, args=(params, cross_term, q, frac_bits, ot_engine, inner_product, security))
    proc.start()
    relay = None
    try:
        t_prepare = q.get(timeout=600)
        port = q.get(timeout=120)
        if link:  # through the emulated link (bench/netem.py): a relay process in front of the server
            from bench.netem import Relay

            relay = Relay(("127.0.0.1", port), link)
            port = relay.port
        c0 = time.process_time()
        reset_peak_rss()
        preds, cost, pp = predict(f"127.0.0.1:{port}", Q, timeout=timeout, with_params=True)
        cost.extra["client_cpu_s"] = time.process_time() - c0
        cost.extra["frac_bits"], cost.extra["x_bits"] = pp.frac_bits, pp.x_bits
        cost.extra["lattice_sum"] = pp.lattice_sum
        cost.extra["server_cpu_s"] = q.get(timeout=120)
        cost.extra["server_peak_rss_MB"] = q.get(timeout=120)
        cost.extra["chain"] = (pp.laplacian_chain if pp.security == "client-malicious" and params.kernel == "laplacian"
                               else "-")
    finally:
        if relay is not None:
            relay.close()
        proc.join(600)
        if proc.is_alive():
            proc.kill()
    return preds, cost, t_prepare


def run_one(N: int, d: int, k: int, sigma: float, seed: int = 0, kernel: str = "gaussian",
            cross_term: str = "he", link: str | None = None, frac_bits: int | None = None,
            ot_engine: str = "silent", inner_product: str = "auto", security: str = "semi-honest") -> dict:
    params, rng = model_for(N, d, sigma, kernel, seed)
    Q = synthetic_queries(params, rng, k)
    if frac_bits is None and kernel == "laplacian":
        # the model's own grid, as a served `secureml train` model encodes it (its grid_bits)
        frac_bits = LAPLACIAN_GRID_BITS
    preds, cost, t_prepare = serve_and_predict(params, Q, cross_term, link, frac_bits=frac_bits, ot_engine=ot_engine,
                                               inner_product=inner_product, security=security)
    t0 = time.perf_counter()
    params.predict(Q)  # warm-up: caches training norms, as a deployed server would
    reps = max(5, int(2e7 // (N * d)))
    for _ in range(reps):
        plain = params.predict(Q)
    t_plain = (time.perf_counter() - t0) / reps
    return {
        "kernel": kernel, "security": security, "chain": cost.extra.get("chain"), "N": N, "d": d, "queries": k, "sigma": sigma, "link": link or "loopback",
        "cross_term": cross_term if kernel == "gaussian" else "ot",
        "ot_engine": ot_engine if kernel == "laplacian" else "softspoken", "frac_bits": cost.extra.get("frac_bits"),
        "inner_product": ("he" if cost.extra.get("lattice_sum") else "ot") if security == "semi-honest" else "checked",
        "x_bits": cost.extra.get("x_bits"),
        "server_prepare_s": t_prepare,
        "wall_s": cost.wall_s, "offline_s": cost.offline_s, "online_s": cost.online_s,
        "client_cpu_s": cost.extra.get("client_cpu_s"), "server_cpu_s": cost.extra.get("server_cpu_s"),
        "online_MB": (cost.bytes_sent + cost.bytes_received - cost.offline_bytes) / 1e6,
        "client_sent_MB": cost.bytes_sent / 1e6, "client_received_MB": cost.bytes_received / 1e6,
        "total_MB": (cost.bytes_sent + cost.bytes_received) / 1e6, "rounds": cost.rounds,
        "client_peak_rss_MB": cost.peak_rss_mb, "server_peak_rss_MB": cost.extra.get("server_peak_rss_MB"),
        "total_bytes": cost.bytes_sent + cost.bytes_received,
        "max_abs_error": float(np.max(np.abs(preds - plain))),
        "plaintext_s": t_plain, "ratio_time": cost.wall_s / t_plain,
        "per_query_s": cost.wall_s / k, "per_query_MB": (cost.bytes_sent + cost.bytes_received) / 1e6 / k,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--sizes", default="256,1024,4096", help="comma-separated training sizes N")
    ap.add_argument("--features", type=int, default=435, help="representation width d")
    ap.add_argument("--queries", type=int, default=1, help="queries per session (batching)")
    ap.add_argument("--kernel", choices=("gaussian", "laplacian"), default="gaussian")
    ap.add_argument("--sigma", type=float, default=None,
                    help="kernel width (default 74 Gaussian, 1000 Laplacian: ANCHORS.md's peer settings)")
    ap.add_argument("--cross-term", choices=("he", "ot"), default="he",
                    help="Gaussian kernel's X q: lattice HE (default) or the OT vector OLE")
    ap.add_argument("--link", choices=("lan", "wan"), default=None,
                    help="run through an emulated link (bench/netem.py relay: lan 1 Gbit/s 0.5 ms RTT, "
                         "wan 100 Mbit/s 40 ms RTT); default: plain loopback")
    ap.add_argument("--frac-bits", type=int, default=None,
                    help="fractional bits of the encoding (default: Laplacian the model's 2^-8 grid, as a "
                         "trained model's grid_bits; Gaussian the automatic precision)")
    ap.add_argument("--ot-engine", default="silent",
                    help="Laplacian kernel's OT extension, comma-separated to compare in one run: silent "
                         "(protocols.ot.ferret) and/or softspoken (k = 4) (default silent)")
    ap.add_argument("--inner-product", default="auto",
                    help="step 9's inner product in Z_2^128, comma-separated to compare in one run: he "
                         "(lattice, protocols.mpc.rlwe_ip128), ot (Gilboa over random OT), auto (fewer bytes "
                         "for the public N) (default auto)")
    ap.add_argument("--security", default="semi-honest",
                    help="protocol mode, comma-separated to compare in one run (alternating): semi-honest, "
                         "client-malicious (the default of `secureml serve`; Laplacian: the bound chain) and/or "
                         "client-malicious-unbound (Laplacian: the one-bit chain) (default semi-honest)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every configuration this many times, alternating (ratios from neighbouring runs)")
    ap.add_argument("--out", default="results/krr_cost", help="output folder (JSON, CSV, PNG)")
    args = ap.parse_args(argv)
    from protocols.krr.params import INNER_PRODUCTS, OT_ENGINES

    engines = [e.strip() for e in args.ot_engine.split(",") if e.strip()]
    if not engines or any(e not in OT_ENGINES for e in engines):
        ap.error(f"--ot-engine: choose from {', '.join(OT_ENGINES)}")
    if args.kernel != "laplacian":
        engines = engines[:1]  # the Gaussian kernel runs on SoftSpoken whatever this says
    ips = [e.strip() for e in args.inner_product.split(",") if e.strip()]
    if not ips or any(e not in INNER_PRODUCTS for e in ips):
        ap.error(f"--inner-product: choose from {', '.join(INNER_PRODUCTS)}")
    securities = [e.strip() for e in args.security.split(",") if e.strip()]
    if not securities or any(e not in SECURITY_MODES for e in securities):
        ap.error(f"--security: choose from {', '.join(SECURITY_MODES)}")
    if args.kernel != "laplacian" and "client-malicious-unbound" in securities:
        ap.error("--security client-malicious-unbound is the Laplacian kernel's")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.sigma is None:
        args.sigma = 1000.0 if args.kernel == "laplacian" else 74.0
    from tqdm import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(int(s), e, i, sec) for s in args.sizes.split(",") for _ in range(args.repeat)
            for e in engines for i in ips for sec in securities]
    for N, eng, ip, sec in tqdm(runs, desc="sessions"):
        r = run_one(N, args.features, args.queries, args.sigma, kernel=args.kernel, cross_term=args.cross_term,
                    link=args.link, frac_bits=args.frac_bits, ot_engine=eng, inner_product=ip, security=sec)
        rows.append(r)
        tqdm.write(f"N={N:6d} {sec:>24} chain {r['chain']:>7} {r['ot_engine']:>10} step 9 {r['inner_product']} wall {r['wall_s']:7.2f} s (setup {r['offline_s']:.2f}; CPU client "
                   f"{r['client_cpu_s']:.2f} s, server {r['server_cpu_s']:.2f} s) "
                   f"{r['total_MB']:9.1f} MB (client sent {r['client_sent_MB']:.1f}, received "
                   f"{r['client_received_MB']:.1f}) {r['rounds']:4d} rounds  err {r['max_abs_error']:.1e}  "
                   f"peak RSS client {r['client_peak_rss_MB']:.0f} MB, server {r['server_peak_rss_MB']:.0f} MB  "
                   f"x{r['ratio_time']:,.0f} plaintext")
    (out / "krr_cost.json").write_text(json.dumps(rows, indent=2))
    with open(out / "krr_cost.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for eng, ip, sec in [(e, i, s) for e in engines for i in ips for s in securities]:
        sel = [r for r in rows if (r["ot_engine"] == eng or len(engines) == 1) and r["security"] == sec and
               (ip == "auto" or sec != "semi-honest" or r["inner_product"] == ip)]
        sel = [min((r for r in sel if r["N"] == n), key=lambda r: r["wall_s"]) for n in sorted({r["N"] for r in sel})]
        Ns = [r["N"] for r in sel]
        tags = ([eng] if len(engines) > 1 else []) + ([f"step 9 {ip}"] if len(ips) > 1 else []) + \
            ([sec] if len(securities) > 1 else [])
        label = f"OT double-blind ({', '.join(tags)})" if tags else "OT double-blind"
        ax[0].loglog(Ns, [r["wall_s"] for r in sel], "o-", label=label)
        ax[1].loglog(Ns, [r["total_MB"] for r in sel], "o-", label=label)
    Ns = sorted({r["N"] for r in rows})
    ax[0].loglog(Ns, [min(r["plaintext_s"] for r in rows if r["N"] == n) for n in Ns], "s--", label="plaintext")
    ax[0].set_xlabel("training size N")
    ax[0].set_ylabel("seconds per session")
    ax[0].legend()
    ax[1].legend()
    ax[1].set_xlabel("training size N")
    ax[1].set_ylabel("MB (both directions)")
    fig.tight_layout()
    fig.savefig(out / "krr_cost.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
