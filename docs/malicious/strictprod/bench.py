"""One products step (protocols.krr.strict_products) per layout, two in-process parties on the
checked OT extension (threads of one process), alternating layouts: per party thread CPU
(time.thread_time), wall, bytes and rounds of the step alone (the random OTs of b_C and q, made
before, are excluded), and the server's per-call preparation of P's plaintexts alone.

    PATH=/work/main/.venv/bin:$PATH PYTHONPATH=. nice python docs/malicious/strictprod/bench.py \
        --n 4096 --out docs/malicious/strictprod/bench_n4096.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from protocols.krr import strict_products as sp
from protocols.krr.chain import CLIENT
from protocols.mpc import authenticated as au
from protocols.mpc import he_matvec_checked as hmc
from protocols.testing import checked_ot, run_two_party

U64 = np.uint64


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def one(X, q, b_S, b_C, xb, M, layout):
    N, d = X.shape
    qbits = ((q[:, None] >> np.arange(xb, dtype=U64)[None, :]) & U64(1)).astype(np.uint8).ravel()
    rec = {}

    def timed(role, fn):
        def body(p):
            pads = fn(p)
            st0, c0, w0 = p.ch.stats(), time.thread_time(), time.perf_counter()
            out = pads()
            rec[role] = {"cpu_s": time.thread_time() - c0, "wall_s": time.perf_counter() - w0,
                         **{k: v - st0[k] for k, v in p.ch.stats().items()}}
            return out
        return body

    def server(p):
        qp = au.random_choices(p, CLIENT, n=d * xb)
        bp = au.random_choices(p, CLIENT, n=N * d)
        return lambda: sp.server(p, X=X, b_S=b_S, b_pads=bp, q_pads=qp, x_bits=xb, ring_bits=M, layout=layout)

    def client(p):
        qp = au.random_choices(p, CLIENT, n=d * xb, choices=qbits)
        bp = au.random_choices(p, CLIENT, n=N * d, choices=b_C)
        return lambda: sp.client(p, q=q, b_C=b_C, b_pads=bp, q_pads=qp, x_bits=xb, ring_bits=M, layout=layout)

    load0 = _load()
    s_S, s_C = run_two_party(timed("server", server), timed("client", client), seed=1, setup=checked_ot, timeout=600)
    ok = bool((((s_S + s_C) & U64((1 << M) - 1)) == sp.reference(X, q, b_S ^ b_C, M)).all())
    # the server's per-call preparation of P's plaintexts alone (random P of the layout's shape)
    w, L = sp._layout(layout, xb, M)
    P = np.random.default_rng(0).integers(0, 1 << w, (L * N, d)).astype(U64)
    c0 = time.thread_time()
    hmc.PreparedChecked(P, xb, M, w_bits=w)
    prep = time.thread_time() - c0
    return {"layout": layout, "exact": ok, "server": rec["server"], "client": rec["client"],
            "server_prepare_cpu_s": prep, "load_1min": [load0, _load()]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=351)
    ap.add_argument("--x-bits", type=int, default=15)
    ap.add_argument("--ring-bits", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    N, d, xb, M = a.n, a.d, a.x_bits, a.ring_bits
    X = rng.integers(0, 1 << xb, (N, d)).astype(U64)
    q = rng.integers(0, 1 << xb, d).astype(U64)
    b_S = rng.integers(0, 2, (N, d)).astype(np.uint8)
    b_C = (X < q[None, :]).astype(np.uint8) ^ b_S
    rows = []
    for r in range(a.rounds):
        for layout in sp.LAYOUTS:
            rows.append({"round": r, **one(X, q, b_S, b_C, xb, M, layout)})
            print(json.dumps(rows[-1]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"N": N, "d": d, "x_bits": xb, "ring_bits": M, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
