"""Cost of protocols.mpc.gf2_auth: bytes and CPU per committed bit on each client-malicious OT engine,
bytes and CPU of the authenticated random OT, and CPU per 1M products of the QuickSilver sums.

Both parties run as threads of this process over the in-process channel (framed and counted as
TCP); CPU is each party's thread time (``time.thread_time``; the faster of two runs), bytes are both
parties' ``bytes_sent`` over the call (the engines' set-up and one unmeasured commit of n bits run
before; the silent engine's iteration flights during the call are counted). The QuickSilver sums run
single-threaded on random data of the real shapes, prover and verifier alternately, ``--reps`` times
each (median reported).

    nice python -m bench.gf2_auth_cost --n 4194304 --out docs/malicious/gf2auth/cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np

from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.registry import _setup_exact_ot
from protocols.mpc import gf2_auth as g
from bench.laplacian_malicious_steps import _two_threads


def _checked_iknp(p) -> None:
    """The checked IKNP extension where the client chooses (a client-malicious session's direction;
    the other keeps the TCCR hash, as protocols.krr.registry._setup_exact_ot leaves it)."""
    p.setup_ot()
    if p.role == SERVER:
        p.ot_sender.checked = True
    else:
        p.ot_receiver.checked = True
    p.ot_sender.tccr_hash = p.ot_receiver.tccr_hash = True


def _setup(engine: str):
    if engine == "iknp":
        return _checked_iknp
    pp = SimpleNamespace(ot_engine=engine, checked_ot=True)

    def setup(p):
        _setup_exact_ot(p, pp, "laplacian")
        if engine != "silent":
            if p.role == SERVER:
                p.ot_sender.checked = True
            else:
                p.ot_receiver.checked = True
    return setup


def commit_cost(engine: str, n: int) -> dict:
    bits = np.random.default_rng(1).integers(0, 2, n, dtype=np.uint8)

    def measured(fn):
        def body(p):
            fn(p, 4096)  # warm-up: engines set up, first pieces / iteration batches paid
            fn(p, n, False)  # and the allocator's first touch of n-sized arrays (not measured)
            runs = []
            for _ in range(2):  # (commit, random OT, commit without pads) twice: the faster of each
                b0, t0 = p.ch.bytes_sent, time.thread_time()
                out = fn(p, n)
                b1, t1 = p.ch.bytes_sent, time.thread_time()
                g.auth_random_ot(p, CLIENT, out)
                t3, b3 = time.thread_time(), p.ch.bytes_sent
                del out
                fn(p, n, False)
                runs.append((b1 - b0, t1 - t0, b3 - b1, t3 - t1, time.thread_time() - t3))
            return (runs[1][0], min(r[1] for r in runs), runs[1][2], min(r[3] for r in runs),
                    min(r[4] for r in runs))
        return body

    def server(p, k, pads=True):
        return g.commit_bits(p, CLIENT, n=k, pads=pads)

    def client(p, k, pads=True):
        return g.commit_bits(p, CLIENT, n=k, bits=bits[:k] if k < n else bits, pads=pads)

    (bs, cs, rbs, rcs, ns), (bc, cc, rbc, rcc, nc) = _two_threads(measured(server), measured(client), _setup(engine))
    m = 1e6 / n
    return {"engine": engine, "n": n, "bytes_per_bit": (bs + bc) / n, "server_to_client_bytes": bs,
            "client_to_server_bytes": bc, "cpu_s_per_1M_server": cs * m, "cpu_s_per_1M_client": cc * m,
            "nopads_cpu_s_per_1M_server": ns * m, "nopads_cpu_s_per_1M_client": nc * m,
            "rot_bytes_per_element": (rbs + rbc) / n, "rot_cpu_s_per_1M_server": rcs * m,
            "rot_cpu_s_per_1M_client": rcc * m}


def products_cost(m: int, reps: int) -> dict:
    rng = np.random.default_rng(2)
    chi = g.expand_chi(bytes(32), m)
    x, y = rng.integers(0, 2, m, dtype=np.uint8), rng.integers(0, 2, m, dtype=np.uint8)
    kx, ky = (rng.integers(0, 65536, (m, g.SLOTS), dtype=np.uint16) for _ in range(2))
    delta = np.array([0x1234, 0x5678, 0x9ABC], dtype=np.uint16)
    mx = kx ^ ((np.uint16(0) - x.astype(np.uint16))[:, None] & delta)
    my = ky ^ ((np.uint16(0) - y.astype(np.uint16))[:, None] & delta)
    tp, tv, tw = [], [], []
    for _ in range(reps):  # alternately
        pr, v = g.Prover(), g.Verifier(delta)
        t = time.process_time()
        pr.add_products(chi, x, mx, y, my)
        tp.append(time.process_time() - t)
        t = time.process_time()
        v.add_products(chi, kx, ky)
        tv.append(time.process_time() - t)
        t = time.process_time()
        g.weighted(chi, mx)
        tw.append(time.process_time() - t)
    scale = 1e6 / m
    return {"products": m, "reps": reps, "prover_cpu_s_per_1M": statistics.median(tp) * scale,
            "verifier_cpu_s_per_1M": statistics.median(tv) * scale,
            "weighted_cpu_s_per_1M": statistics.median(tw) * scale}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 22, help="committed bits per engine")
    ap.add_argument("--products", type=int, default=1 << 22)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--engines", default="iknp,softspoken,silent")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = {"load_before": os.getloadavg()[0], "commit": [], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for e in a.engines.split(","):
        res["commit"].append(commit_cost(e, a.n))
        print(json.dumps(res["commit"][-1]))
    res["quicksilver"] = products_cost(a.products, a.reps)
    print(json.dumps(res["quicksilver"]))
    res["load_after"] = os.getloadavg()[0]
    print("load (1 min) before / after:", res["load_before"], res["load_after"])
    if a.out:
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
