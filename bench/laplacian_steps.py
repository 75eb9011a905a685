"""Where the Laplacian protocol's L1 step sends its bytes: column OTs, random OTs, products.

    python -m bench.laplacian_steps --sizes 16384 --features 351 --out docs/double-blind/laplacian-v7

Both parties of :func:`protocols.krr.laplacian.l1_shares` run in one process (two threads, an
in-process channel counted like TCP; SoftSpoken OT extension with the exact kernels' k), on the
synthetic model of ``bench.krr_cost`` encoded on its 2^-8 grid. Bytes are both directions, per step
and per element (training point x feature); the shares are checked against the exact L1 distances.
Writes ``laplacian_steps.json`` and ``.csv``.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model, synthetic_queries


def _both(fn0: Any, fn1: Any, k: int, seed: int) -> list[Any]:
    """fn0(party 0) and fn1(party 1) in two threads over an in-process channel pair, OT set up
    (seeded parties: reproducible, insecure, a benchmark only)."""
    import threading

    from protocols.mpc.party import Party
    from protocols.net.transport import local_channel_pair

    chans = local_channel_pair(timeout=1800)
    out: list[Any] = [None, None]
    err: list[BaseException | None] = [None, None]

    def body(i: int, fn: Any) -> None:
        try:
            p = Party(chans[i], i, seed=seed + i)
            p.setup_ot(k)
            out[i] = fn(p)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            err[i] = exc
            chans[i].close()

    ts = [threading.Thread(target=body, args=(i, f), daemon=True) for i, f in enumerate((fn0, fn1))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for e in err:
        if e is not None:
            raise e
    return out


def measure(N: int, d: int, sigma: float = 1000.0, frac_bits: int = LAPLACIAN_GRID_BITS, seed: int = 0) -> dict[str, Any]:
    """One query's L1 step at N x d: bytes per step (both directions) and CPU seconds (both parties)."""
    from protocols.krr import laplacian
    from protocols.krr.params import PublicParams
    from protocols.krr.registry import EXACT_SOFTSPOKEN_K

    model, rng = synthetic_model(N, d, sigma, seed, "laplacian")
    Q = synthetic_queries(model, rng, 1)
    pp = PublicParams(kind="krr-laplacian", n_train=N, n_features=d, frac_bits=frac_bits, feature_lo=0.0,
                      feature_hi=128.0, sigma=sigma, weight_bits=30, ot_engine="softspoken")
    # (this bench runs the SoftSpoken extension: its digit plan; bench.laplacian_profile runs silent OT)
    XT = np.ascontiguousarray(pp.encode_features(model.X_train).T)
    q = pp.encode_features(Q)[0]
    steps = {"column_ot": 0, "random_ot": 0}
    real = {"column_ot": laplacian.column_ot, "random_ot": laplacian._rot_bits}

    def counted(step: str):
        def call(party: Any, *a: Any, **kw: Any) -> Any:
            b0 = party.ch.bytes_sent + party.ch.bytes_received
            out = real[step](party, *a, **kw)
            if party.role == 0:  # one side counts both directions
                steps[step] += party.ch.bytes_sent + party.ch.bytes_received - b0
            return out
        return call

    total: dict[str, int] = {}

    def server(p: Any) -> np.ndarray:
        b0 = p.ch.bytes_sent + p.ch.bytes_received
        out = laplacian.l1_shares(p, pp, N, XT=XT)
        total["l1"] = p.ch.bytes_sent + p.ch.bytes_received - b0
        return out

    laplacian.column_ot, laplacian._rot_bits = counted("column_ot"), counted("random_ot")
    try:
        c0 = time.process_time()
        L_S, L_C = _both(server, lambda p: laplacian.l1_shares(p, pp, N, q=q), EXACT_SOFTSPOKEN_K, seed)
        cpu = time.process_time() - c0
    finally:
        laplacian.column_ot, laplacian._rot_bits = real["column_ot"], real["random_ot"]
    exact = np.abs(XT.T.astype(np.int64) - q.astype(np.int64)).sum(axis=1).astype(np.uint64)
    if not np.array_equal((L_S + L_C) & np.uint64((1 << pp.ring_bits) - 1), exact):
        raise AssertionError("L1 shares do not sum to the exact distances")
    by_step = {**steps, "products": total["l1"] - steps["column_ot"] - steps["random_ot"], "l1_total": total["l1"]}
    row: dict[str, Any] = {"N": N, "d": d, "frac_bits": frac_bits, "x_bits": pp.x_bits, "ring_bits": pp.ring_bits,
                           "digits": "+".join(str(b - a) for a, b in laplacian.digit_levels(pp.x_bits, pp.ot_engine)),
                           "cpu_s_both_parties_incl_setup": cpu}
    for k, v in by_step.items():
        row[f"{k}_MB"] = v / 1e6
        row[f"{k}_bytes_per_element"] = v / (N * d)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096", help="comma-separated training sizes N (default: 4096)")
    ap.add_argument("--features", type=int, default=351, help="representation width d (default: 351)")
    ap.add_argument("--frac-bits", type=int, default=LAPLACIAN_GRID_BITS,
                    help=f"fractional bits of the encoding (default: {LAPLACIAN_GRID_BITS}, the model's grid)")
    ap.add_argument("--out", default="results/laplacian_steps", help="output folder (default: results/laplacian_steps)")
    args = ap.parse_args(argv)
    rows = [measure(int(n), args.features, frac_bits=args.frac_bits) for n in args.sizes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "laplacian_steps.json").write_text(json.dumps(rows, indent=2))
    with open(out / "laplacian_steps.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"N={r['N']} d={r['d']} digits {r['digits']}: L1 step {r['l1_total_MB']:.1f} MB "
              f"({r['l1_total_bytes_per_element']:.1f} B/element): column OTs {r['column_ot_bytes_per_element']:.1f}, "
              f"random OTs {r['random_ot_bytes_per_element']:.1f}, products {r['products_bytes_per_element']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
