"""Which cross term `serve --cross-term auto` picks for a client-malicious Gaussian model, beside
the bytes each one really sends.

    python -m bench.cross_term_choice --sizes 32,64,128,150,256,1024 --features 351 --out docs/malicious/cross_term_choice

Per N (synthetic CM-like model, d features in [0, 73.5], sigma 74): the estimates
:func:`protocols.krr.binding.cross_term_bytes` compares (the checked lattice plan's
``bytes_estimate`` + the query's MACs mod p; the Gilboa vector OLE's words), the choice, and step 2
(the cross term on the query's random OTs) run for real over an in-process channel pair: bytes
in both directions, 8-byte frame headers included. Whole sessions add the same steps around
either cross term, so step 2 is where the two differ (up to how the OT extension batches).

Writes ``cross_term_choice.json`` and ``cross_term_choice.csv`` to ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

U64 = np.uint64


def step2_bytes(pp: Any, Xe: np.ndarray, q: np.ndarray, seed: int = 1) -> int:
    """Bytes (both directions) of the cross term alone, ``pp.cross_term`` ("he" or "ot"), run for
    real between two in-process parties with the checked OT extension."""
    from bench.malicious_cost import _pair
    from protocols.krr import binding
    from protocols.mpc import authenticated as au
    from protocols.mpc import he_matvec_checked
    from protocols.mpc.party import Party

    N, d, xb, M = pp.n_train, pp.n_features, pp.x_bits, pp.ring_bits
    qbits = ((q[:, None] >> np.arange(xb, dtype=U64)[None, :]) & U64(1)).astype(np.uint8).ravel()

    def party(ch: Any, role: int) -> Party:
        p = Party(ch, role, seed=seed + role)  # seeded: the byte count does not depend on it
        if role == 0:
            p.ot_sender.checked = True
        else:
            p.ot_receiver.checked = True
        return p

    def server(ch: Any) -> int:
        p = party(ch, 0)
        pads = au.random_choices(p, 1, n=d * xb)  # shared by both cross terms: not counted
        before = p.ch.bytes_sent + p.ch.bytes_received
        if pp.cross_term == "he":
            binding._lattice_cross_term(p, pads, pp, prepared=he_matvec_checked.prepare(Xe, xb, M))
        else:
            binding._cross_term(p, pads, N, d, xb, M, X=Xe)
        return p.ch.bytes_sent + p.ch.bytes_received - before

    def client(ch: Any) -> None:
        p = party(ch, 1)
        pads = au.random_choices(p, 1, n=d * xb, choices=qbits)
        if pp.cross_term == "he":
            binding._lattice_cross_term(p, pads, pp, q=q, qbits=qbits)
        else:
            binding._cross_term(p, pads, N, d, xb, M, qbits=qbits)

    return int(_pair(server, client, timeout=600.0)[0])


def public_params(n: int, d: int, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """A synthetic client-malicious Gaussian model's public parameters, encoded X and one query."""
    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel

    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 73.5, (n, d))
    pp = ServedModel(KernelModelParams(X, rng.normal(0, 50, n), 1.0, "gaussian", 74.0),
                     security="client-malicious").public
    return pp, pp.encode_features(X), pp.encode_features(np.clip(X[:1] + 0.5, 0, 73.5))[0]


def main(argv: list[str] | None = None) -> int:
    from protocols.krr import binding

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,128,150,256,1024", help="training set sizes N (comma list; default %(default)s)")
    ap.add_argument("--features", type=int, default=351, help="features d (default %(default)s)")
    ap.add_argument("--out", default="results/cross_term_choice", help="output folder (default %(default)s)")
    args = ap.parse_args(argv)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        pp, Xe, q = public_params(n, args.features)
        est = binding.cross_term_bytes(pp)
        row: dict[str, Any] = {"n_train": n, "n_features": args.features, "x_bits": pp.x_bits,
                               "ring_bits": pp.ring_bits, "auto_choice": binding.cheaper_cross_term(pp),
                               "estimate_he_bytes": est["he"], "estimate_ot_bytes": est["ot"]}
        for cross in ("he", "ot"):
            pp.cross_term = cross
            row[f"wire_{cross}_bytes"] = step2_bytes(pp, Xe, q)
        row["wire_cheaper"] = "he" if row["wire_he_bytes"] <= row["wire_ot_bytes"] else "ot"
        rows.append(row)
        print(f"N = {n:>6}: auto {row['auto_choice']}; lattice estimate {est['he'] / 1e6:.2f} MB, wire "
              f"{row['wire_he_bytes'] / 1e6:.2f} MB; OT estimate {est['ot'] / 1e6:.2f} MB, wire "
              f"{row['wire_ot_bytes'] / 1e6:.2f} MB", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_term_choice.json").write_text(json.dumps(rows, indent=1))
    with open(out / "cross_term_choice.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out / 'cross_term_choice.json'} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
