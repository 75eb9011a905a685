"""Benchmark of the OT engine between two processes over TCP on loopback.

The OT-extension *sender* runs in this process, the *receiver* in a child process (spawned); each
is single-threaded and, with ``--pin``, pinned to its own CPU core, so rates are "per core".
Reported, for n = 2^min .. 2^max OTs:

* base-OT set-up time (128 Chou-Orlandi OTs, both directions of key material);
* random OTs per second (on demand: extension + hashing);
* COTs per second, 64-bit scalar correlations, on demand;
* offline/online split: ``precompute(n)`` time, then online COTs per second from the pool;
* bits sent per COT (both directions, framing included) next to the theory
  (IKNP: 128 bits from the receiver + ``bits`` from the sender, +1 online with precomputation;
  SoftSpoken k: 128/k instead of 128; silent OT: ~0.21 (b13) or 0.70 (b11) amortised + 1 for a chosen choice bit, protocol 28);
* for the silent engine, random COTs with random choices (no message but the iterations');
* optionally (``--triples N``) H4's 64-bit Beaver-triple benchmark (bench.triples_bench).

``--engines`` runs several OT-extension engines one after the other in one run (a fresh pair of
processes each): ``iknp``, ``softspoken4`` (SoftSpoken k = 4, the exact protocols' engine),
``ferret`` (protocols.ot.ferret, silent OT, LPN set b13), ``ferret-b11`` (its set b11, k = 124,000).

    python -m bench.ot_bench --min-log2 20 --max-log2 24 --pin --out bench_results/ot_bench.json
    python -m bench.ot_bench --engines softspoken4,ferret --sizes 1048576,4194304,16777216 \
        --out bench_results/ot_bench_silent.json

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

from protocols.ot.ferret import (FERRET_B11, FERRET_B11_SETUP, FERRET_MAIN, FERRET_SETUP, FerretReceiver,
                                 FerretSender, ferret_bits_per_cot)
from protocols.ot.iknp import OTExtensionReceiver, OTExtensionSender, cot_theory_bits
from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender, softspoken_bits_per_ot
from protocols.net.transport import Channel, TCPChannel, connect, listen

U64 = np.uint64


ENGINES = ("iknp", "softspoken4", "ferret", "ferret-b11")


# COTs per cot_send / cot_recv call: SoftSpoken's receiver runs up to 32 MB of extension messages
# ahead of the sender's corrections (IKNP's _LOOKAHEAD_BYTES); at 64-bit corrections and 2^24 COTs
# in one call both writers filled their queues and TCP buffers and waited for each other (seen
# 2026-12-04, reported); calls of 2^22 COTs stay below that, as the protocols' calls do
_COT_CALL = 1 << 22


def _cot_send(s, delta: np.ndarray, bits: int) -> None:
    for a in range(0, delta.shape[0], _COT_CALL):
        s.cot_send(delta[a : a + _COT_CALL], bits)


def _engine(name: str, role: str, ch: Channel, chunk: int):
    """The OT-extension engine ``name`` for ``role`` ("sender" / "receiver") on ch."""
    if name == "iknp":
        return (OTExtensionSender if role == "sender" else OTExtensionReceiver)(ch, chunk=chunk)
    if name == "softspoken4":
        return (SoftSpokenSender if role == "sender" else SoftSpokenReceiver)(ch, k=4, chunk=chunk)
    if name in ("ferret", "ferret-b11"):
        p, b = (FERRET_MAIN, FERRET_SETUP) if name == "ferret" else (FERRET_B11, FERRET_B11_SETUP)
        return (FerretSender if role == "sender" else FerretReceiver)(ch, chunk=chunk, params=p, bootstrap=b)
    raise ValueError(f"unknown engine {name!r}; one of {ENGINES}")


def _extension_bits(name: str) -> float:
    """Theory: extension traffic per COT with a chosen choice bit, before the correction."""
    if name == "iknp":
        return 128.0
    if name == "softspoken4":
        return float(softspoken_bits_per_ot(4))
    return ferret_bits_per_cot(FERRET_MAIN if name == "ferret" else FERRET_B11)


def _single_thread(cpu: int | None) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})
        except OSError:
            pass


def _receiver_main(port: int, chunk: int, cpu: int | None, engine: str = "iknp") -> None:
    """Child process: OT-extension receiver, driven by JSON commands from the sender."""
    _single_thread(cpu)
    ch = connect("127.0.0.1", port, timeout=30.0, channel_timeout=600.0)
    r = _engine(engine, "receiver", ch, chunk)
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
            for a in range(0, n, _COT_CALL):
                r.cot_recv(c[a : a + _COT_CALL], 1, int(cmd["bits"]))
        elif op == "precompute":
            r.precompute(n)
        elif op == "silent":
            r.random_cots(n)
        elif op == "drain":
            r._take(r.available)
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
    res: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "pinned": args.pin,
                    "load_avg_1min": os.getloadavg()[0]},
        "chunk": args.chunk,
        "bits": args.bits,
        "engines": {},
    }
    for name in args.engines:
        res["engines"][name] = _run_engine(args, name)
    first = res["engines"][args.engines[0]]
    res["base_ot_setup"], res["sizes"] = first["setup"], first["sizes"]  # the single-engine layout
    if args.triples:
        res["beaver_triples"] = _triples(args.triples)
    return res


def _run_engine(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from tqdm import tqdm

    _single_thread(0 if args.pin else None)
    srv = listen()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(
        target=_receiver_main, args=(srv.getsockname()[1], args.chunk, 1 if args.pin else None, name)
    )
    proc.start()
    ch = TCPChannel.accept(srv, timeout=60.0)
    ch.timeout = 600.0
    srv.close()
    s = _engine(name, "sender", ch, args.chunk)
    silent = name.startswith("ferret")
    # set-up: base OTs (and, for the silent engine, its SoftSpoken bootstrap and set-up iteration)
    setup = _timed(ch, {"op": "setup"}, s.setup)
    rows = []
    sizes = args.sizes
    steps = tqdm(total=len(sizes) * (4 if silent else 3), desc=f"ot_bench {name}", disable=args.quiet)
    rng = np.random.default_rng(0)
    theory = _extension_bits(name) + args.bits
    def drain() -> None:
        """Silent engine: empty the COT buffer, so the next timed operation pays for every
        iteration its COTs need (ceil(n / usable) of them: conservative below whole iterations)."""
        if silent:
            _timed(ch, {"op": "drain"}, lambda: s._take(s.available))

    for n in sizes:
        row: dict[str, Any] = {"n": n}
        if silent:
            drain()
            it0, x0 = s.iterations, s.ots_extended
            sil = _timed(ch, {"op": "silent", "n": n}, lambda: s.random_cots(n))
            b = 8 * (sil["bytes_sender_to_receiver"] + sil["bytes_receiver_to_sender"]) / n
            made = s.ots_extended - x0  # rows of the batches run (lazy: at most one batch beyond n)
            row["silent_random_cot"] = sil | {
                "per_s": n / sil["wall_s"], "per_cpu_s": n / sil["max_party_cpu_s"], "bits_per_cot": b,
                "iterations": s.iterations - it0,
                # steady state: every COT the iterations made, per second
                "generated_per_s": made / sil["wall_s"], "generated_per_cpu_s": made / sil["max_party_cpu_s"]}
            steps.update()
        drain()
        rot = _timed(ch, {"op": "random_ot", "n": n}, lambda: s.random_ot(n))
        row["random_ot"] = rot | {"per_s": n / rot["wall_s"], "per_cpu_s": n / rot["max_party_cpu_s"]}
        steps.update()
        delta = rng.integers(0, 2**64, n, dtype=U64, endpoint=False)
        drain()
        cot = _timed(ch, {"op": "cot", "n": n, "bits": args.bits}, lambda: _cot_send(s, delta, args.bits))
        bits_sent = 8 * (cot["bytes_sender_to_receiver"] + cot["bytes_receiver_to_sender"]) / n
        row["cot"] = cot | {
            "per_s": n / cot["wall_s"],
            "per_cpu_s": n / cot["max_party_cpu_s"],
            "bits_per_cot": bits_sent,
            "theory_bits_per_cot": theory,
            "ratio_to_theory": bits_sent / theory,
        }
        steps.update()
        drain()
        pre = _timed(ch, {"op": "precompute", "n": n}, lambda: s.precompute(n))
        onl = _timed(ch, {"op": "cot", "n": n, "bits": args.bits}, lambda: _cot_send(s, delta, args.bits))
        on_bits = 8 * (onl["bytes_sender_to_receiver"] + onl["bytes_receiver_to_sender"]) / n
        off_bits = 8 * (pre["bytes_sender_to_receiver"] + pre["bytes_receiver_to_sender"]) / n
        row["precomputed_cot"] = {
            "offline": pre | {
                "per_s": n / pre["wall_s"],
                "per_cpu_s": n / pre["max_party_cpu_s"],
                "bits_per_ot": off_bits,
                "theory": _extension_bits(name) - (1 if silent else 0),
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
    return {"setup": setup, "sizes": rows, "theory_extension_bits_per_cot": _extension_bits(name)}


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
    lines = [f"machine: {res['machine']}",
             "rates: wall clock / per CPU-second of the busier party (one core each)"]

    def pair(d: dict[str, Any]) -> str:
        return f"{d['per_s']:.3g} / {d['per_cpu_s']:.3g}"

    for name, er in res["engines"].items():
        lines.append(f"[{name}] set-up: {er['setup']['wall_s'] * 1e3:.1f} ms, "
                     f"{er['setup']['bytes_sender_to_receiver'] + er['setup']['bytes_receiver_to_sender']:,} bytes")
        lines.append(f"{'n':>10} {'silent COT/s':>19} {'randOT/s':>19} {'COT/s':>19} {'bits/COT':>9} {'theory':>7} "
                     f"{'offline OT/s':>19} {'online COT/s':>19} {'online bits':>11}")
        for r in er["sizes"]:
            c, p = r["cot"], r["precomputed_cot"]
            sil = pair(r["silent_random_cot"]) if "silent_random_cot" in r else "-"
            lines.append(
                f"{r['n']:>10} {sil:>19} {pair(r['random_ot']):>19} {pair(c):>19} "
                f"{c['bits_per_cot']:>9.2f} {c['theory_bits_per_cot']:>7.2f} "
                f"{pair(p['offline']):>19} {pair(p['online']):>19} "
                f"{p['online']['bits_per_cot']:>11.2f}"
            )
    if "beaver_triples" in res:
        lines.append(f"beaver triples: {json.dumps(res['beaver_triples'])[:300]}")
    return "\n".join(lines)


def _csv(res: dict[str, Any], path: Path) -> None:
    """One row per (engine, n): rates (per second, wall and per busier-party CPU second), bits per COT."""
    cols = ["engine", "n", "silent_cot_per_s", "random_ot_per_s", "cot_per_s", "cot_per_cpu_s",
            "cot_bits_per_cot", "cot_theory_bits", "offline_per_s", "online_cot_per_s", "online_bits_per_cot"]
    out = [",".join(cols)]
    for name, er in res["engines"].items():
        for r in er["sizes"]:
            sil = r.get("silent_random_cot", {}).get("per_s", "")
            out.append(",".join(str(x) for x in [
                name, r["n"], sil, r["random_ot"]["per_s"], r["cot"]["per_s"], r["cot"]["per_cpu_s"],
                r["cot"]["bits_per_cot"], r["cot"]["theory_bits_per_cot"],
                r["precomputed_cot"]["offline"]["per_s"], r["precomputed_cot"]["online"]["per_s"],
                r["precomputed_cot"]["online"]["bits_per_cot"]]))
    path.write_text("\n".join(out) + "\n")


def _plot(res: dict[str, Any], path: Path) -> None:
    """COT rates and bits per COT vs n, one colour per engine, saved as PNG next to the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    from secureml.plot_style import pyplot
    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.4))
    for i, (name, er) in enumerate(res["engines"].items()):
        n = [r["n"] for r in er["sizes"]]
        color = f"C{i}"
        ax.plot(n, [r["cot"]["per_s"] for r in er["sizes"]], "o-", color=color, label=f"{name}: COT, wall")
        ax.plot(n, [r["random_ot"]["per_s"] for r in er["sizes"]], "s--", color=color, alpha=0.6,
                label=f"{name}: random OT, wall")
        if "silent_random_cot" in er["sizes"][0]:
            ax.plot(n, [r["silent_random_cot"]["per_s"] for r in er["sizes"]], "^:", color=color,
                    label=f"{name}: silent random COT")
        bx.plot(n, [r["cot"]["bits_per_cot"] - res["bits"] for r in er["sizes"]], "o-", color=color,
                label=f"{name} (measured)")
        bx.axhline(er["theory_extension_bits_per_cot"], color=color, lw=0.8, ls=":")
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_xlabel("number of OTs")
    ax.set_yscale("log")
    ax.set_ylabel("OTs per second (wall clock)")
    ax.set_title("two processes over TCP loopback")
    bx.set_yscale("log")
    bx.set_ylabel(f"bits per COT beyond the {res['bits']}-bit correction (dotted: theory)")
    ax.legend(fontsize=6)
    bx.legend(fontsize=6)
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
    ap.add_argument("--engines", default="iknp",
                    help=f"comma-separated OT engines, one after the other: {', '.join(ENGINES)} (default iknp)")
    ap.add_argument("--sizes", default="",
                    help="comma-separated numbers of OTs (default: 2^min-log2 .. 2^max-log2)")
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
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in args.engines if e not in ENGINES]
    if bad or not args.engines:
        ap.error(f"--engines: unknown {bad}; choose from {', '.join(ENGINES)}")
    try:
        args.sizes = ([int(x) for x in args.sizes.split(",") if x.strip()] if args.sizes
                      else [1 << k for k in range(args.min_log2, args.max_log2 + 1)])
    except ValueError:
        ap.error("--sizes: comma-separated integers")
    if min(args.sizes) < 128:
        ap.error("--sizes: at least 128 OTs each")
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    _plot(res, out.with_suffix(".png"))
    _csv(res, out.with_suffix(".csv"))
    print(_table(res))
    print(f"wrote {out}, {out.with_suffix('.png')} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
