"""Protocol 39's one-call OT hash against TCCR, ns per row (per OT), old and new alternating in one run:

    PYTHONPATH=. nice python docs/double-blind/v39/hash_bench.py [LOG2_ROWS ...] [--out FILE.json]

For each size and round: the receiver's random-OT bits (TCCR ``tccr_bits`` vs CCR ``ccr_bits``), the
sender's two bits per OT (``tccr_bits`` of q and of q ^ Delta vs ``ccr_pair(..., "bits")``), and the same
for one-word pads (``tccr_word`` vs ``ccr_word`` / ``ccr_pair(..., "word")``). Best of 7 calls per
measurement, 5 rounds of the pairs alternating; prints the median of the rounds and writes every
round with the 1-minute load before and after."""
from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from protocols.ot.crypto import FixedKeyAES, tune_allocator

tune_allocator()
U64 = np.uint64
TAG = FixedKeyAES.TAG_OT


def best(f, n: int = 7) -> float:
    b = 1e9
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        b = min(b, time.perf_counter() - t0)
    return b


def load() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def main() -> None:
    args = sys.argv[1:]
    out = None
    if "--out" in args:
        i = args.index("--out")
        out = args[i + 1]
        del args[i : i + 2]
    sizes = [int(a) for a in args] or [17, 20]
    tccr = FixedKeyAES(b"tccr-bench-key!!")
    ccr = FixedKeyAES(b"ccr-bench-key!!!")
    rng = np.random.default_rng(1)
    rounds = []
    for lg in sizes:
        k = 1 << lg
        q = rng.integers(0, 2**64 - 1, size=(k, 2), dtype=U64, endpoint=True)
        s = rng.integers(0, 2**64 - 1, size=2, dtype=U64, endpoint=True)
        cases = {
            "bits, receiver (1 hash)": (lambda: tccr.tccr_bits(q, 5, TAG), lambda: ccr.ccr_bits(q)),
            "bits, sender (2 hashes)": (lambda: (tccr.tccr_bits(q, 5, TAG), tccr.tccr_bits(q, 5, TAG, xor=s)),
                                        lambda: ccr.ccr_pair(q, s, "bits")),
            "word, receiver (1 hash)": (lambda: tccr.tccr_word(q, 5, TAG), lambda: ccr.ccr_word(q)),
            "word, sender (2 hashes)": (lambda: (tccr.tccr_word(q, 5, TAG), tccr.tccr_word(q, 5, TAG, xor=s)),
                                        lambda: ccr.ccr_pair(q, s, "word")),
        }
        for r in range(5):
            for name, (old, new) in cases.items():
                l0 = load()
                a, b = (old, new) if r % 2 == 0 else (new, old)  # alternate which goes first
                ta, tb = best(a), best(b)
                t_old, t_new = (ta, tb) if r % 2 == 0 else (tb, ta)
                rounds.append({"log2_rows": lg, "case": name, "round": r, "tccr_ns": 1e9 * t_old / k,
                               "ccr_ns": 1e9 * t_new / k, "load_before": l0, "load_after": load()})
        for name in cases:
            rs = [x for x in rounds if x["log2_rows"] == lg and x["case"] == name]
            o = statistics.median(x["tccr_ns"] for x in rs)
            n = statistics.median(x["ccr_ns"] for x in rs)
            ld = [x["load_before"] for x in rs] + [x["load_after"] for x in rs]
            print(f"2^{lg} rows  {name:26s} TCCR {o:6.2f}  CCR {n:6.2f} ns/row  ({n / o:.2f}x)  "
                  f"load {min(ld):.2f}-{max(ld):.2f}")
    if out:
        with open(out, "w") as f:
            json.dump(rounds, f, indent=1)


if __name__ == "__main__":
    main()
