"""CPU time of a pooled session's corrections alone (protocols.ot.pool): the server's
``cot_send_pooled`` (select the pads by d, correct, trim to bytes) and the client's
``derandomise``, exact against rounded corrections (public L of protocols.krr.linear.round_bits),
for one query of the RFF benchmark model (4,096 features, x_bits 20, out_bits 49, L = 17). No
channel: the messages are handed over in memory; median process time of ``--reps`` repetitions.

    python -m bench.pool_corrections --reps 20
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from protocols.mpc.gilboa import bit_groups, choice_bits, rounded_groups
from protocols.ot import pool as P
from protocols.ot.iknp import _check_bits


class _Memory:
    """A stand-in channel: d comes from the caller, the corrections are kept."""

    def __init__(self, d: np.ndarray) -> None:
        self.d, self.last = d, None

    def recv_array(self, dtype: Any, shape: Any) -> np.ndarray:
        return self.d

    def send_array(self, a: np.ndarray, owned: bool = False) -> None:
        self.last = a

    def flush(self) -> None:
        pass


def once(rounded: bool, n: int = 4096, x_bits: int = 20, out_bits: int = 49, L: int = 17,
         seed: int = 0) -> tuple[float, float, int]:
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 2**40, n, dtype=np.uint64)
    y = rng.integers(0, 2**x_bits, n, dtype=np.uint64)
    if rounded:
        rg = rounded_groups(x_bits, out_bits, L)
        groups, kept = [(a, b, bits) for a, b, bits, _ in rg], [kb for *_, kb in rg]
        drops: list[Any] | None = [np.maximum(0, L - np.arange(a, b)).astype(np.uint64) for a, b, _ in groups]
    else:
        groups, kept, drops = bit_groups(x_bits, out_bits), None, None
    widths = [bits for *_, bits in groups]
    m = n * x_bits
    h0 = rng.integers(0, 2**64, m, dtype=np.uint64)
    h1 = rng.integers(0, 2**64, m, dtype=np.uint64)
    ch = _Memory(np.zeros((m + 7) // 8, np.uint8))  # d = 0: r = b
    t0 = time.process_time()
    P.cot_send_pooled(ch, P.SenderPool(b"x" * 16, 0, h0, h1), [np.tile(w, b - a) for a, b, _ in groups], widths,
                      *((drops, kept) if rounded else ()))
    server = time.process_time() - t0
    b = np.concatenate([choice_bits(y, a, bb).ravel() for a, bb, _ in groups])
    segs = P._segments([(bb - a) * n for a, bb, _ in groups])
    wd = [_check_bits(x) for x in widths]
    t0 = time.process_time()
    P.derandomise(h0, b, ch.last, segs, wd, drops, P._sent_widths(wd, drops, kept))
    client = time.process_time() - t0
    return server, client, int(ch.last.size)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    for rep in range(3):
        for rounded in (False, True):
            res = [once(rounded, seed=i) for i in range(args.reps)]
            print(f"{'rounded' if rounded else 'exact  '} server {1e3 * np.median([r[0] for r in res]):.2f} ms, "
                  f"client {1e3 * np.median([r[1] for r in res]):.2f} ms, corrections {res[0][2]} B")


if __name__ == "__main__":
    main()
