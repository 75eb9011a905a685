"""Per-index cost of the LPN step's code columns (keystream -> columns -> gather -> XOR), variants
alternated in one process.  `nice python docs/double-blind/v38/columns_bench.py [--rounds 5]`.

Each variant computes out ^= XOR_l table[col(l, j)] over 2^21 rows x d = 10 in blocks of 2^13 rows
(the engine's block), table 2 MB; the figure is ns per index (rows * d), median over rounds.
  old   k = 124,000: 4-byte CTR words, multiply-cast uint32 * k -> uint64, >> 32 (protocol 37)
  s4    k = 2^17:    4-byte CTR words, one casting right shift uint32 >> 15 -> intp
  s8    k = 2^17:    8-byte CTR words straight into the index buffer, one in-place uint64 >> 47
  f8    k = 2^17:    as s8, but one CTR call and one shift per block for all d columns (block-major
                     keystream), d gathers into one (d, m) buffer, XOR-reduced over d
  f8t   as f8, one take call for all d columns too
  b4    k = 124,000, old's columns (the same code), the d streams' words of a block in one (d, m)
        buffer: one casting multiply and one shift per block instead of d each
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

D, M, ROWS = 10, 1 << 13, 1 << 21
U64 = np.uint64
ZEROS = bytes(8 * D * M + 16)


def stream(seed: bytes, blk: int):
    return Cipher(algorithms.AES(seed), modes.CTR(blk.to_bytes(16, "big"))).encryptor()


def run_old(table, out, seed):
    k = table.shape[0]
    tc = table.view(np.complex128).reshape(-1)
    streams = [stream(seed, l * ROWS // 4) for l in range(D)]
    raw = np.empty(4 * M + 16, np.uint8)
    idx = np.empty(M, np.intp)
    g = np.empty(M, np.complex128)
    words, u, zeros = raw[: 4 * M].view(np.uint32), idx.view(U64), memoryview(ZEROS)[: 4 * M]
    acc = out.reshape(-1)
    for a in range(0, ROWS, M):
        blk = acc[2 * a : 2 * a + 2 * M]
        for enc in streams:
            enc.update_into(zeros, memoryview(raw))
            np.multiply(words, U64(k), out=u, casting="unsafe")
            np.right_shift(u, U64(32), out=u)
            tc.take(idx, out=g, mode="clip")
            blk ^= g.view(U64)


def run_s4(table, out, seed):
    tc = table.view(np.complex128).reshape(-1)
    streams = [stream(seed, l * ROWS // 4) for l in range(D)]
    raw = np.empty(4 * M + 16, np.uint8)
    idx = np.empty(M, np.intp)
    g = np.empty(M, np.complex128)
    words, u, zeros = raw[: 4 * M].view(np.uint32), idx.view(U64), memoryview(ZEROS)[: 4 * M]
    acc = out.reshape(-1)
    for a in range(0, ROWS, M):
        blk = acc[2 * a : 2 * a + 2 * M]
        for enc in streams:
            enc.update_into(zeros, memoryview(raw))
            np.right_shift(words, np.uint32(15), out=u, casting="unsafe")
            tc.take(idx, out=g, mode="clip")
            blk ^= g.view(U64)


def run_s8(table, out, seed):
    tc = table.view(np.complex128).reshape(-1)
    streams = [stream(seed, l * ROWS // 2) for l in range(D)]
    raw = np.empty(8 * M + 16, np.uint8)
    u = raw[: 8 * M].view(U64)
    idx = u.view(np.intp)
    g = np.empty(M, np.complex128)
    zeros = memoryview(ZEROS)[: 8 * M]
    acc = out.reshape(-1)
    for a in range(0, ROWS, M):
        blk = acc[2 * a : 2 * a + 2 * M]
        for enc in streams:
            enc.update_into(zeros, memoryview(raw))
            np.right_shift(u, U64(47), out=u)
            tc.take(idx, out=g, mode="clip")
            blk ^= g.view(U64)


def run_f8(table, out, seed, one_take=False):
    tc = table.view(np.complex128).reshape(-1)
    enc = stream(seed, 0)
    raw = np.empty(8 * D * M + 16, np.uint8)
    u = raw[: 8 * D * M].view(U64)
    idx = u.view(np.intp).reshape(D, M)
    g = np.empty((D, M), np.complex128)
    gu = g.view(U64).reshape(D, M, 2)
    zeros = memoryview(ZEROS)[: 8 * D * M]
    acc = out.reshape(-1)
    for a in range(0, ROWS, M):
        blk = acc[2 * a : 2 * a + 2 * M].reshape(M, 2)
        enc.update_into(zeros, memoryview(raw))
        np.right_shift(u, U64(47), out=u)
        if one_take:
            tc.take(idx, out=g, mode="clip")
            for l in range(D):
                blk ^= gu[l]
        else:
            for l in range(D):
                tc.take(idx[l], out=g[l], mode="clip")
                blk ^= gu[l]


def run_b4(table, out, seed):
    """old's code (same columns), the d streams' words of a block in one (d, m) buffer: one casting
    multiply and one shift per block instead of d each."""
    k = table.shape[0]
    tc = table.view(np.complex128).reshape(-1)
    streams = [stream(seed, l * ROWS // 4) for l in range(D)]
    raw = np.empty(4 * D * M + 16, np.uint8)
    words = raw[: 4 * D * M].view(np.uint32)
    idx = np.empty((D, M), np.intp)
    u = idx.view(U64)
    g = np.empty(M, np.complex128)
    zeros = memoryview(ZEROS)[: 4 * M]
    acc = out.reshape(-1)
    for a in range(0, ROWS, M):
        blk = acc[2 * a : 2 * a + 2 * M]
        for l, enc in enumerate(streams):
            enc.update_into(zeros, memoryview(raw)[4 * M * l :])
        np.multiply(words.reshape(D, M), U64(k), out=u, casting="unsafe")
        np.right_shift(u, U64(32), out=u)
        for l in range(D):
            tc.take(idx[l], out=g, mode="clip")
            blk ^= g.view(U64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    seed = bytes(range(16))
    variants = {
        "old": (124_000, run_old),
        "s4": (1 << 17, run_s4),
        "s8": (1 << 17, run_s8),
        "f8": (1 << 17, run_f8),
        "f8t": (1 << 17, lambda t, o, s: run_f8(t, o, s, one_take=True)),
        "b4": (124_000, run_b4),
    }
    tables = {k: rng.integers(0, 2**63, (k, 2), dtype=U64) for k in {v[0] for v in variants.values()}}
    out = np.zeros((ROWS, 2), U64)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for name, (k, fn) in variants.items():
            t0 = time.perf_counter()
            fn(tables[k], out, seed)
            times[name].append(time.perf_counter() - t0)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    for name, ts in times.items():
        print(f"{name:4s} {1e9 * statistics.median(ts) / (ROWS * D):6.2f} ns/index "
              f"(min {1e9 * min(ts) / (ROWS * D):.2f}, rounds {len(ts)})")
    print(f"load {load}")


if __name__ == "__main__":
    main()
