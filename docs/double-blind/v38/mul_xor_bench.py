"""LocalLinearCode.mul_xor per row, this tree against another checkout's (e.g. a `git archive` of the
base), alternated in one process: `nice python docs/double-blind/v38/mul_xor_bench.py OTHER_TREE [ROUNDS]`.
b11's code (k = 124,000, d = 10), 2^21 rows from row 2^20, the engine's 2^13-row blocks; ns per row,
median over rounds."""
from __future__ import annotations

import importlib.util
import statistics
import sys
import time

import numpy as np


def load(path: str):
    spec = importlib.util.spec_from_file_location(f"ferret_{abs(hash(path))}", f"{path}/protocols/ot/ferret.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    other, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 7
    mods = {"this": load("."), "other": load(other)}
    p = mods["this"].FERRET_B11
    rng = np.random.default_rng(3)
    table = rng.integers(0, 2**63, (p.k, 2), dtype=np.uint64)
    rows, j0 = 1 << 21, 1 << 20
    outs, times = {}, {name: [] for name in mods}
    for _ in range(rounds):
        for name, mod in mods.items():
            code = mod.LocalLinearCode(p.n, p.k, p.d, bytes(range(16)))
            out = np.zeros((rows, 2), dtype=np.uint64)
            t0 = time.perf_counter()
            code.mul_xor(table, j0, out)
            times[name].append(time.perf_counter() - t0)
            outs[name] = out
    assert np.array_equal(outs["this"], outs["other"])  # the same code, the same A v
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[0]
    for name, ts in times.items():
        print(f"{name:5s} {1e9 * statistics.median(ts) / rows:6.2f} ns/row (min {1e9 * min(ts) / rows:.2f})")
    print(f"load {load1}")


if __name__ == "__main__":
    main()
