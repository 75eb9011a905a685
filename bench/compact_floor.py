"""Where a resumed client-malicious compact session's bytes go, and the floor of each design
(issue 12/15: <= 2x the semi-honest lattice path in traffic). Deterministic: byte counts from the
protocol code's own width rules, no session is run (the measured totals are in
docs/compact-models/v30/, bench.local_model_bench).

Per query of F' features and x_bits bits per encoded feature (one OT per bit):
  * pooled OT path (protocols.krr.linear + protocols.ot.pool): d = b ^ r (one bit per OT) up, one
    correction per OT down -- exact (protocols.mpc.gilboa.bit_groups: ceil((out_bits - i) / 8)
    bytes for bit i), bit-packed exact (out_bits - i bits, no byte rounding: a floor of the exact
    design), rounded (protocols.mpc.gilboa.rounded_groups at the public L of
    protocols.krr.linear.round_bits: ceil((out_bits - max(i, L)) / 8) bytes); after the reply
    the refill extends as many checked random OTs (SoftSpoken k = 4: 128 / 4 = 32 bits each);
  * radix-2^m table OTs (1-of-2^m on m bits of phi'): 2^m - 1 corrections of the kept width per
    m bits (m = 1 is Gilboa);
  * the checked lattice path in the style of protocols.mpc.he_matvec_checked /
    protocols.mpc.bfv_proof: every bit of phi' and of the witness (s: 2 bits per coefficient, every
    noise polynomial: NOISE_BITS per coefficient) committed by a random OT of the checked extension
    and a MAC mod each of the ring's k primes (7 bytes each), plus the ciphertexts (7 bytes per
    residue) and one reply.

    python -m bench.compact_floor --out docs/compact-models/v30/floor.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from protocols.krr import linear as lin
from protocols.krr.params import PublicParams
from protocols.mpc import bfv_proof
from protocols.mpc.gilboa import bit_groups, rounded_groups
from protocols.mpc.he_matvec_checked import _OT_BYTES
from protocols.mpc.rlwe import N_DEFAULT, N_PRIMES

#: the two benchmark models' public plans (bench.local_model_bench's public_params)
MODELS = {
    "rff": dict(n_features=4096, frac_bits=24, weight_frac_bits=11, feature_lo=-2.0**-5, feature_hi=2.0**-5,
                output_bits=49),
    "local": dict(n_features=4101, frac_bits=27, weight_frac_bits=15, feature_lo=0.0, feature_hi=2.0,
                  output_bits=56),
}
#: measured bytes of a resumed semi-honest lattice session (docs/compact-models.md, protocol 24+)
LATTICE_BYTES = {"rff": 91_138, "local": 197_800}
SOFTSPOKEN_BITS_PER_OT = 32


def breakdown(name: str) -> dict[str, Any]:
    spec = MODELS[name]
    pp = PublicParams(kind="linear", n_train=1, **spec)
    n, xb, ob = pp.n_features, pp.x_bits, spec["output_bits"]
    m = n * xb
    d_bytes = (m + 7) // 8
    exact = n * sum((b - a) * ((w + 7) // 8) for a, b, w in bit_groups(xb, ob))
    packed = (n * sum(ob - i for i in range(xb)) + 7) // 8
    L = lin.round_bits(pp, ob)
    rounded = n * sum((b - a) * ((kb + 7) // 8) for a, b, _, kb in rounded_groups(xb, ob, L))
    # the unaligned L (no byte rounding of the kept width), bit-packed: the floor of rounding
    terms, scale = m, 2.0 ** (pp.frac_bits + pp.weight_frac_bits)
    l_max = int(math.floor(math.log2(lin.DEFAULT_TOL / 12 * scale / math.sqrt(terms / 12.0))))
    rounded_packed = (n * sum(ob - max(i, l_max) for i in range(xb)) + 7) // 8
    kept = ob - L
    table = {mm: n * math.ceil(xb / mm) * (2**mm - 1) * ((kept + 7) // 8) + (n * math.ceil(xb / mm) * mm + 7) // 8
             for mm in (1, 2, 3, 4)}
    refill = m * SOFTSPOKEN_BITS_PER_OT // 8
    # checked lattice (bfv_proof): one block of N_DEFAULT coefficients holds the F' inputs
    blocks = -(-n // N_DEFAULT)
    witness_bits = (2 + bfv_proof.NOISE_BITS * (blocks + 1)) * N_DEFAULT
    per_commit = _OT_BYTES + 7 * N_PRIMES
    checked_lattice = {
        "committed_bits": m + witness_bits,
        "commitments_bytes": (m + witness_bits) * per_commit,
        "ciphertexts_bytes": (blocks + 1) * N_PRIMES * N_DEFAULT * 7,
        "reply_bytes": N_PRIMES * (N_DEFAULT + 1) * 7,
    }
    checked_lattice["total_bytes"] = sum(v for k, v in checked_lattice.items() if k.endswith("_bytes"))
    lat = LATTICE_BYTES[name]
    out = {
        "public": {"n_features": n, "x_bits": xb, "out_bits": ob, "frac_bits": pp.frac_bits,
                   "weight_frac_bits": pp.weight_frac_bits, "ots_per_query": m, "round_bits": L,
                   "round_bits_unaligned": l_max},
        "lattice_semi_honest_bytes": lat, "target_2x_bytes": 2 * lat,
        "pooled": {"d_bytes": d_bytes, "corrections_exact": exact, "corrections_exact_bitpacked": packed,
                   "corrections_rounded": rounded, "corrections_rounded_bitpacked_unaligned": rounded_packed,
                   "refill_extension_bytes": refill},
        "table_ot_corrections_by_radix": table,
        "checked_lattice_bfv_proof": checked_lattice,
    }
    best = d_bytes + min(rounded, rounded_packed)
    out["floor_ot_online_bytes"] = best
    out["floor_ot_online_ratio"] = best / lat
    out["floor_ot_with_refill_ratio"] = (best + refill) / lat
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = {name: breakdown(name) for name in MODELS}
    for name, r in res.items():
        p = r["pooled"]
        print(f"{name}: {r['public']['ots_per_query']} OTs; d {p['d_bytes']} B; corrections exact "
              f"{p['corrections_exact']} B, bit-packed {p['corrections_exact_bitpacked']} B, rounded (L = "
              f"{r['public']['round_bits']}) {p['corrections_rounded']} B, rounded bit-packed "
              f"{p['corrections_rounded_bitpacked_unaligned']} B; refill {p['refill_extension_bytes']} B; "
              f"floor online {r['floor_ot_online_bytes']} B = {r['floor_ot_online_ratio']:.2f}x the lattice "
              f"{r['lattice_semi_honest_bytes']} B (2x: {r['target_2x_bytes']} B); table OTs "
              f"{r['table_ot_corrections_by_radix']}; checked lattice {r['checked_lattice_bfv_proof']['total_bytes']} B")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
