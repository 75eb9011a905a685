"""Benchmark of the OT engine between two processes over TCP on loopback.

The OT-extension *sender* runs in this process, the *receiver* in a child process (spawned); each
is single-threaded and, with ``--pin``, pinned to its own CPU core, so rates are "per core".
Reported, for n = 2^min .. 2^max OTs:

* base-OT set-up time (128 Chou-Orlandi OTs, both directions of key material);
* random OTs per second (on demand: extension + hashing);
* COTs per second, 64-bit scalar correlations, on demand;
* offline/online split: ``precompute(n)`` time, then online COTs per second from the pool;
* bits sent per COT (both directions, framing included) next to the theory
  (IKNP: 128 bits from the receiver + ``bits`` from the sender, +1 online with precomputation);
* optionally (``--triples N``) H4's 64-bit Beaver-triple benchmark (bench.triples_bench).

    python -m bench.ot_bench --min-log2 20 --max-log2 24 --pin --out bench_results/ot_bench.json

Writes JSON (``--out``) and a PNG plot next to it, and prints a table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from protocols.ot.iknp import OTExtensionReceiver, OTExtensionSender, cot_theory_bits
from protocols.net.transport import Channel, TCPChannel, connect, listen

U64 = np.uint64


def _single_thread(cpu: int | None) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})
        except OSError:
            pass


def _receiver_main(port: int, chunk: int, cpu: int | None) -> None:
    """Child process: OT-extension receiver, driven by JSON commands from the sender."""
    _single_thread(cpu)
    ch = connect("127.0.0.1", port, timeout=30.0, channel_timeout=600.0)
    r = OTExtensionReceiver(ch, chunk=chunk)
    rng = np.random.default_rng()
    while True:
        cmd = ch.recv_json()
        op, n = cmd["op"], int(cmd.get("n", 0))
        c = (rng.integers(0, 256, max(n, 1), dtype=np.uint8) & 1)[:n] if n else None
        ch.send_json("go")  # barrier: both sides start timing together
        t0, p0 = time.perf_counter(), time.process_time()
        if op == "setup":
            r.setup()
        elif op == "random_ot":
            r.random_ot(c)
        elif op == "cot":
            r.cot_recv(c, 1, int(cmd["bits"]))
        elif op == "precompute":
            r.precompute(n)
        elif op == "quit":
            break
        ch.send_json({"wall": time.perf_counter() - t0, "cpu": time.process_time() - p0})
    ch.close()


def _timed(ch: Channel, cmd: dict[str, Any], fn) -> dict[str, float]:
    """Run one operation on both sides; returns wall/cpu seconds of both and bytes moved."""
    ch.send_json(cmd)
    ch.recv_json()
    b0, r0 = ch.bytes_sent, ch.bytes_received
    t0, p0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - p0
    b1, r1 = ch.bytes_sent, ch.bytes_received
    peer = ch.recv_json()
    return {
        "wall_s": max(wall, peer["wall"]),
        "sender_cpu_s": cpu,
        "receiver_cpu_s": peer["cpu"],
        # CPU seconds of the busier party: what one dedicated core per party would need.
        "max_party_cpu_s": max(cpu, peer["cpu"]),
        "bytes_sender_to_receiver": b1 - b0,
        "bytes_receiver_to_sender": r1 - r0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    _single_thread(0 if args.pin else None)
    srv = listen()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(
        target=_receiver_main, args=(srv.getsockname()[1], args.chunk, 1 if args.pin else None)
    )
    proc.start()
    ch = TCPChannel.accept(srv, timeout=60.0)
    ch.timeout = 600.0
    srv.close()
    s = OTExtensionSender(ch, chunk=args.chunk)
    res: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "pinned": args.pin},
        "chunk": args.chunk,
        "bits": args.bits,
    }
    setup = _timed(ch, {"op": "setup"}, s.setup)
    res["base_ot_setup"] = setup
    rows = []
    sizes = [1 << k for k in range(args.min_log2, args.max_log2 + 1)]
    steps = tqdm(total=len(sizes) * 3, desc="ot_bench", disable=args.quiet)
    rng = np.random.default_rng(0)
    for n in sizes:
        row: dict[str, Any] = {"n": n}
        rot = _timed(ch, {"op": "random_ot", "n": n}, lambda: s.random_ot(n))
        row["random_ot"] = rot | {"per_s": n / rot["wall_s"], "per_cpu_s": n / rot["max_party_cpu_s"]}
        steps.update()
        delta = rng.integers(0, 2**64, n, dtype=U64, endpoint=False)
        cot = _timed(ch, {"op": "cot", "n": n, "bits": args.bits}, lambda: s.cot_send(delta, args.bits))
        bits_sent = 8 * (cot["bytes_sender_to_receiver"] + cot["bytes_receiver_to_sender"]) / n
        row["cot"] = cot | {
            "per_s": n / cot["wall_s"],
            "per_cpu_s": n / cot["max_party_cpu_s"],
            "bits_per_cot": bits_sent,
            "theory_bits_per_cot": cot_theory_bits(args.bits),
            "ratio_to_theory": bits_sent / cot_theory_bits(args.bits),
        }
        steps.update()
        pre = _timed(ch, {"op": "precompute", "n": n}, lambda: s.precompute(n))
        onl = _timed(ch, {"op": "cot", "n": n, "bits": args.bits}, lambda: s.cot_send(delta, args.bits))
        on_bits = 8 * (onl["bytes_sender_to_receiver"] + onl["bytes_receiver_to_sender"]) / n
        off_bits = 8 * (pre["bytes_sender_to_receiver"] + pre["bytes_receiver_to_sender"]) / n
        row["precomputed_cot"] = {
            "offline": pre | {
                "per_s": n / pre["wall_s"],
                "per_cpu_s": n / pre["max_party_cpu_s"],
                "bits_per_ot": off_bits,
                "theory": 128,
            },
            "online": onl | {
                "per_s": n / onl["wall_s"],
                "per_cpu_s": n / onl["max_party_cpu_s"],
                "bits_per_cot": on_bits,
                "theory_bits_per_cot": cot_theory_bits(args.bits, precomputed=True) - 128,
            },
        }
        steps.update()
        rows.append(row)
    steps.close()
    ch.send_json({"op": "quit"})
    ch.recv_json()
    ch.close()
    proc.join(60)
    res["sizes"] = rows
    if args.triples:
        res["beaver_triples"] = _triples(args.triples)
    return res


def _triples(n: int) -> dict[str, Any]:
    """Hook: H4's Beaver-triple benchmark (64-bit), run as its own two-process benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "triples.json"
        cmd = [sys.executable, "-m", "bench.triples_bench", "--triples", str(n),
               "--bool-triples", "0", "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            return {"error": (proc.stderr or proc.stdout)[-2000:]}
        return json.loads(out.read_text())


def _table(res: dict[str, Any]) -> str:
    lines = [
        f"base-OT setup (128 OTs): {res['base_ot_setup']['wall_s'] * 1e3:.1f} ms",
        "rates: wall clock / per CPU-second of the busier party (one core each)",
        f"{'n':>10} {'randOT/s':>19} {'COT/s':>19} {'bits/COT':>9} {'theory':>7} "
        f"{'offline OT/s':>19} {'online COT/s':>19} {'online bits':>11}",
    ]

    def pair(d: dict[str, Any]) -> str:
        return f"{d['per_s']:.3g} / {d['per_cpu_s']:.3g}"

    for r in res["sizes"]:
        c, p = r["cot"], r["precomputed_cot"]
        lines.append(
            f"{r['n']:>10} {pair(r['random_ot']):>19} {pair(c):>19} "
            f"{c['bits_per_cot']:>9.2f} {c['theory_bits_per_cot']:>7} "
            f"{pair(p['offline']):>19} {pair(p['online']):>19} "
            f"{p['online']['bits_per_cot']:>11.2f}"
        )
    if "beaver_triples" in res:
        lines.append(f"beaver triples: {json.dumps(res['beaver_triples'])[:300]}")
    return "\n".join(lines)


def _plot(res: dict[str, Any], path: Path) -> None:
    """Rates vs n (wall clock and per CPU-second), saved as PNG next to the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    n = [r["n"] for r in res["sizes"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    series = {
        "random OT": lambda r: r["random_ot"],
        "COT (on demand)": lambda r: r["cot"],
        "COT offline (precompute)": lambda r: r["precomputed_cot"]["offline"],
        "COT online": lambda r: r["precomputed_cot"]["online"],
    }
    for i, (label, get) in enumerate(series.items()):
        color = f"C{i}"
        ax.plot(n, [get(r)["per_s"] for r in res["sizes"]], "o-", color=color, label=f"{label}, wall")
        ax.plot(n, [get(r)["per_cpu_s"] for r in res["sizes"]], "s--", color=color, alpha=0.6,
                label=f"{label}, per CPU-s")
    ax.axhline(2e6, color="k", lw=0.8, ls=":", label="target 2M/s per core")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of OTs")
    ax.set_ylabel("OTs per second")
    ax.set_title("IKNP OT extension, two processes over TCP loopback")
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.ot_bench",
        description="OT-engine benchmark: two processes over TCP loopback (sender here, "
        "receiver in a child).  Reports base-OT setup time, random OT and COT rates, the "
        "offline/online split and bits per COT against the IKNP theory.",
    )
    ap.add_argument("--min-log2", type=int, default=20, help="smallest n = 2^k OTs (default 20)")
    ap.add_argument("--max-log2", type=int, default=24, help="largest n = 2^k OTs (default 24)")
    ap.add_argument("--bits", type=int, default=64, help="COT correlation width in bits (default 64)")
    ap.add_argument("--chunk", type=int, default=1 << 20, help="OTs per extension piece (default 2^20)")
    ap.add_argument("--pin", action="store_true", help="pin sender to CPU 0 and receiver to CPU 1")
    ap.add_argument("--triples", type=int, default=0,
                    help="also run bench.triples_bench with this many 64-bit Beaver triples")
    ap.add_argument("--out", default="bench_results/ot_bench.json", help="JSON output path")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.min_log2 > args.max_log2 or args.min_log2 < 7:
        ap.error("need 7 <= --min-log2 <= --max-log2")
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    _plot(res, out.with_suffix(".png"))
    print(_table(res))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
