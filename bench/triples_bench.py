"""Benchmark: OT-based Beaver triples (64-bit), AND triples and Gilboa matvec between two processes.

Two real processes talk over TCP on loopback (optionally TLS).  Party 0 is this process, party 1
a child started with multiprocessing.  Reports base-OT set-up time, 64-bit Beaver triples per
second and bytes per triple next to the theoretical figure, boolean AND triples per second, and
optionally one Gilboa matrix-vector product (vector OLE) with its traffic.

    python -m bench.triples_bench --triples 65536 --bool-triples 1048576 --matvec 4096 351 24

Writes a JSON file (``--out``) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from typing import Any

import numpy as np

KAPPA_BYTES = 16  # IKNP: one 128-bit column entry per OT from the receiver


def gilboa_theory_bytes(y_bits: int = 64, width: int = 1, exact_bits: bool = False) -> float:
    """Bytes of one Gilboa product (y_bits COTs): IKNP columns + corrections of 64 - i bits."""
    if exact_bits:
        corr = sum(64 - i for i in range(y_bits)) / 8
    else:
        corr = sum((64 - i + 7) // 8 for i in range(y_bits))
    return y_bits * KAPPA_BYTES + width * corr


def triple_theory_bytes(exact_bits: bool = False) -> float:
    """Bytes per 64-bit Beaver triple: two Gilboa products (one per cross term)."""
    return 2 * gilboa_theory_bytes(64, 1, exact_bits)


def _party(role: int, port: int, args: dict[str, Any], out: "mp.Queue | None") -> dict[str, Any]:
    from protocols.mpc.gilboa import matvec
    from protocols.mpc.party import Party
    from protocols.net.transport import TCPChannel, connect
    from protocols.mpc.triples import beaver_triples, bool_triples

    if role == 0:
        srv = args["_server"]
        ch = TCPChannel.accept(srv, timeout=120)
    else:
        ch = connect("127.0.0.1", port, timeout=30, channel_timeout=120)
    p = Party(ch, role)
    res: dict[str, Any] = {"role": role}

    def mark() -> tuple[float, int, int]:
        return time.perf_counter(), ch.bytes_sent, ch.bytes_received

    def since(m: tuple[float, int, int]) -> dict[str, float]:
        t, s, r = mark()
        return {"s": t - m[0], "sent": s - m[1], "recv": r - m[2]}

    m = mark()
    p.setup_ot()  # 2 x 128 base OTs (one IKNP instance per direction)
    res["setup"] = since(m)
    if args["triples"]:
        beaver_triples(p, 1024)  # warm-up (allocations, AES contexts)
        m = mark()
        beaver_triples(p, args["triples"])
        res["triples"] = since(m)
    if args["bool_triples"]:
        m = mark()
        bool_triples(p, args["bool_triples"])
        res["bool_triples"] = since(m)
    if args["matvec"]:
        n, d, bits = args["matvec"]
        rng = np.random.default_rng(role)
        m = mark()
        if role == 0:
            X = rng.integers(0, 2**64, size=(n, d), dtype=np.uint64)
            matvec(p, 1, X=X, y_bits=bits)
        else:
            y = rng.integers(0, 2**bits, size=d, dtype=np.uint64)
            matvec(p, 1, y=y, y_bits=bits, n=n)
        res["matvec"] = since(m)
    ch.close()
    if out is not None:
        out.put(res)
    return res


def _child(port: int, args: dict[str, Any], out: "mp.Queue") -> None:
    try:
        _party(1, port, args, out)
    except BaseException as exc:  # report instead of dying silently
        out.put({"role": 1, "error": repr(exc)})


def run(args: dict[str, Any]) -> dict[str, Any]:
    from protocols.net.transport import listen

    srv = listen("127.0.0.1", 0)
    port = srv.getsockname()[1]
    ctx = mp.get_context("spawn")
    q: "mp.Queue" = ctx.Queue()
    proc = ctx.Process(target=_child, args=(port, args, q), daemon=True)
    proc.start()
    try:
        r0 = _party(0, port, {**args, "_server": srv}, None)
        r1 = q.get(timeout=600)
    finally:
        proc.join(30)
        srv.close()
    if "error" in r1:
        raise RuntimeError(f"party 1 failed: {r1['error']}")
    return summarize(args, r0, r1)


def summarize(args: dict[str, Any], r0: dict[str, Any], r1: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "setup_s": max(r0["setup"]["s"], r1["setup"]["s"]),
        "setup_bytes": r0["setup"]["sent"] + r1["setup"]["sent"],
    }
    if "triples" in r0:
        n = args["triples"]
        wall = max(r0["triples"]["s"], r1["triples"]["s"])
        total = r0["triples"]["sent"] + r1["triples"]["sent"]
        out["triples"] = {
            "n": n,
            "seconds": wall,
            "per_second": n / wall,
            "bytes_per_triple": total / n,
            "theory_bytes_per_triple": triple_theory_bytes(),
            "theory_exact_bits_bytes_per_triple": triple_theory_bytes(exact_bits=True),
        }
    if "bool_triples" in r0:
        n = args["bool_triples"]
        wall = max(r0["bool_triples"]["s"], r1["bool_triples"]["s"])
        total = r0["bool_triples"]["sent"] + r1["bool_triples"]["sent"]
        out["bool_triples"] = {
            "n": n,
            "seconds": wall,
            "per_second": n / wall,
            "bytes_per_triple": total / n,
            "theory_bytes_per_triple": 2 * KAPPA_BYTES,
        }
    if "matvec" in r0:
        n, d, bits = args["matvec"]
        wall = max(r0["matvec"]["s"], r1["matvec"]["s"])
        total = r0["matvec"]["sent"] + r1["matvec"]["sent"]
        out["matvec"] = {
            "n": n,
            "d": d,
            "y_bits": bits,
            "seconds": wall,
            "bytes": total,
            "theory_bytes": d * gilboa_theory_bytes(bits, width=n),
        }
    return out


def print_table(s: dict[str, Any]) -> None:
    print(f"base-OT set-up (both directions): {s['setup_s'] * 1e3:.0f} ms, {s['setup_bytes'] / 1e3:.1f} kB")
    if "triples" in s:
        t = s["triples"]
        print(
            f"Beaver triples (64-bit): {t['n']} in {t['seconds']:.2f} s = {t['per_second']:,.0f}/s; "
            f"{t['bytes_per_triple']:.0f} B/triple (theory {t['theory_bytes_per_triple']:.0f}, "
            f"{t['theory_exact_bits_bytes_per_triple']:.0f} with bit-exact corrections)"
        )
    if "bool_triples" in s:
        t = s["bool_triples"]
        print(
            f"AND triples: {t['n']} in {t['seconds']:.2f} s = {t['per_second']:,.0f}/s; "
            f"{t['bytes_per_triple']:.1f} B/triple (theory {t['theory_bytes_per_triple']})"
        )
    if "matvec" in s:
        t = s["matvec"]
        print(
            f"Gilboa matvec {t['n']}x{t['d']} ({t['y_bits']}-bit vector): {t['seconds']:.2f} s, "
            f"{t['bytes'] / 1e6:.1f} MB (theory {t['theory_bytes'] / 1e6:.1f} MB)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.triples_bench",
        description="Two processes over TCP loopback: OT-based Beaver triples per second, bytes "
        "per triple vs theory, AND triples, and one Gilboa matrix-vector product.",
    )
    ap.add_argument("--triples", type=int, default=1 << 16, help="64-bit Beaver triples (default 65536; 0 skips)")
    ap.add_argument("--bool-triples", type=int, default=1 << 20, help="AND triples (default 2^20; 0 skips)")
    ap.add_argument(
        "--matvec", type=int, nargs=3, metavar=("N", "D", "BITS"), default=None,
        help="also time one Gilboa matvec: N x D matrix (party 0) times a BITS-bit vector (party 1)",
    )
    ap.add_argument("--out", default="bench_results/triples_bench.json", help="JSON output path")
    a = ap.parse_args(argv)
    args = {"triples": a.triples, "bool_triples": a.bool_triples, "matvec": a.matvec}
    summary = run(args)
    print_table(summary)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
