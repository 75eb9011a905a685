"""Load and denial-of-service benchmark of `secureml serve` on loopback.

Three phases against one real server process (`secureml serve`, default settings unless given):

1. baseline: one honest client alone, ``--reps`` times (latency of a session);
2. under attack: ``--idle`` connections that never send and ``--slow`` connections that send one
   byte per second stay open while the honest client runs ``--reps`` sessions again; reported:
   the delay beyond its baseline (the issue's bound: 1 s);
3. many clients: ``--clients`` honest clients (separate processes) start at once, each one
   session; reported: every prediction correct or not, p50 / p99 latency and throughput
   (sessions per second), and the server's peak memory (RSS of the server and its workers,
   sampled every 0.1 s).

    python -m bench.serving_load --out bench_results/serving_load.json
    python -m bench.serving_load --workers 2 --concurrency 4 --out bench_results/serving_load_w2.json

Writes JSON and CSV (one row per client session) next to a PNG of the latencies.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.serving_fuzz import small_model, start_server


def _rss_mb(pid: int) -> float:
    """RSS of a process and its children (MB), from /proc."""
    total = 0
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _one(args: tuple[int, np.ndarray]) -> tuple[float, np.ndarray | None, str]:
    from protocols.krr import predict

    port, Q = args
    t0 = time.perf_counter()
    try:
        preds, _ = predict(f"127.0.0.1:{port}", Q, timeout=120)
        return time.perf_counter() - t0, preds, ""
    except Exception as exc:  # noqa: BLE001 - counted, reported
        return time.perf_counter() - t0, None, f"{type(exc).__name__}: {exc}"


def hold_connections(port: int, idle: int, slow: int, stop: threading.Event, every: float = 1.0
                     ) -> tuple[list[socket.socket], threading.Thread]:
    """``idle`` silent connections and ``slow`` ones that send one byte every ``every`` seconds until
    ``stop`` is set (what an idle or slow peer does to a server); returns (sockets, trickle thread)."""
    socks = []
    for _ in range(idle):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    slow_socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(slow)]

    def trickle() -> None:
        while not stop.wait(every):
            for s in slow_socks:
                try:
                    s.send(b"\x00")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    return socks + slow_socks, t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200, help="training points of the served model")
    ap.add_argument("--idle", type=int, default=100)
    ap.add_argument("--slow", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="serve --workers")
    ap.add_argument("--concurrency", type=int, default=None, help="serve --concurrency (default: serve's)")
    ap.add_argument("--out", default="bench_results/serving_load.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="serving_load_"))
    model, test = small_model(work / "model.npz", n=args.n_train)
    Q = model.representation.transform(test)
    expected = model.estimator.predict(Q)
    # the client processes all come from 127.0.0.1, one identity on an open server: they stand for
    # distinct clients here, so the per-identity session bound (default 2) is off
    extra = ["--workers", str(args.workers), "--max-sessions-per-client", "0"]
    if args.concurrency:
        extra += ["--concurrency", str(args.concurrency)]
    proc, port = start_server(work / "model.npz", work / "server.log", extra)
    peak = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            peak[0] = max(peak[0], _rss_mb(proc.pid))

    threading.Thread(target=sample, daemon=True).start()
    rows: list[dict[str, Any]] = []
    try:
        idle_rss = _rss_mb(proc.pid)
        base = []
        for i in range(args.reps):
            dt, p, err = _one((port, Q))
            assert not err and np.allclose(p, expected, atol=1e-2), err
            base.append(dt)
            rows.append({"phase": "baseline", "client": i, "latency_s": dt, "correct": True, "error": ""})
        stop = threading.Event()
        held, trickler = hold_connections(port, args.idle, args.slow, stop)
        time.sleep(2.0)
        attacked = []
        try:
            for i in range(args.reps):
                dt, p, err = _one((port, Q))
                ok = not err and bool(np.allclose(p, expected, atol=1e-2))
                attacked.append(dt if ok else float("inf"))
                rows.append({"phase": "idle+slow", "client": i, "latency_s": dt, "correct": ok, "error": err})
        finally:
            stop.set()
            for s in held:
                s.close()
        time.sleep(1.0)
        ctx = mp.get_context("spawn")
        t0 = time.perf_counter()
        with ctx.Pool(args.clients) as pool:
            results = pool.map(_one, [(port, Q)] * args.clients)
        span = time.perf_counter() - t0
        lat = []
        correct = 0
        for i, (dt, p, err) in enumerate(results):
            ok = not err and bool(np.allclose(p, expected, atol=1e-2))
            correct += ok
            lat.append(dt)
            rows.append({"phase": "concurrent", "client": i, "latency_s": dt, "correct": ok, "error": err})
    finally:
        sampling.set()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    summary = {
        "n_train": args.n_train, "features": int(Q.shape[1]), "workers": args.workers,
        "concurrency": args.concurrency, "cpus": os.cpu_count(),
        "baseline_median_s": float(np.median(base)), "baseline_max_s": float(np.max(base)),
        "idle_connections": args.idle, "slow_connections": args.slow,
        "attacked_median_s": float(np.median(attacked)), "attacked_max_s": float(np.max(attacked)),
        "delay_beyond_baseline_s": float(np.max(attacked) - np.max(base)),
        "clients": args.clients, "clients_correct": int(correct),
        "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
        "max_s": float(np.max(lat)), "throughput_sessions_per_s": args.clients / span,
        "server_rss_idle_MB": idle_rss, "server_rss_peak_MB": peak[0],
        "errors": sorted({r["error"] for r in rows if r["error"]}),
        "command": "python -m bench.serving_load " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "sessions": rows}, indent=2))
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["phase", "client", "latency_s", "correct", "error"])
        w.writeheader()
        w.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        from secureml.plot_style import pyplot
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for phase in ("baseline", "idle+slow", "concurrent"):
            v = sorted(r["latency_s"] for r in rows if r["phase"] == phase)
            ax.plot(v, np.linspace(0, 1, len(v)), "o-", ms=3, label=phase)
        ax.set_xlabel("session latency (s)")
        ax.set_ylabel("fraction of sessions")
        ax.set_title(f"N={args.n_train}, {args.clients} concurrent clients, workers={args.workers}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except ImportError:
        pass
    print(json.dumps(summary, indent=2))
    return 0 if correct == args.clients and summary["delay_beyond_baseline_s"] <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
