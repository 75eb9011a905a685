"""Bytes of protocols.krr.strict_products at a given size, from the plan functions (no run): the
vector COT's corrections (step 1) and the checked lattice matvec of P q (step 2) per layout --
"wide" (the default: one matvec of N rows, M-bit matrix entries, he_matvec_checked's w_bits),
"stacked" (one matvec on the L N rows of P's x_bits-bit limbs) and "per_limb" (L matvecs of N
rows, each with its own key, ciphertexts and proof; not built). "design" is the N-row plan with an
x_bits-wide matrix: the figure docs/malicious.md's design counted for R q'.

    PYTHONPATH=. python docs/malicious/strictprod/costs.py --out docs/malicious/strictprod/costs.json
"""
from __future__ import annotations

import argparse
import json

from protocols.krr import strict_products as sp
from protocols.mpc import bfv_proof, he_matvec_checked as hmc, rlwe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=351)
    ap.add_argument("--x-bits", type=int, default=15)
    ap.add_argument("--ring-bits", type=int, default=25)
    ap.add_argument("--out")
    a = ap.parse_args()
    N, d, xb, M = a.n, a.d, a.x_bits, a.ring_bits
    ring = rlwe.modulus()
    lat = sp.lattice_bytes(N, d, xb, M)
    out = {"N": N, "d": d, "x_bits": xb, "ring_bits": M, "limbs": list(sp.limb_bits(xb, M)),
           "vole_bytes_per_element": sp.vole_bytes_per_element(M),
           "vole_bytes": sp.vole_bytes_per_element(M) * N * d}
    out.update({f"lattice_{k}": v for k, v in lat.items()})
    plans = {"wide": hmc.make_plan(N, d, xb, M, ring, w_bits=M),
             "stacked": hmc.make_plan(sp.limb_bits(xb, M)[1] * N, d, xb, M, ring, w_bits=sp.limb_bits(xb, M)[0]),
             "design": hmc.make_plan(N, d, xb, M, ring)}
    out["plans"] = {k: {"n_i": p.n_i, "outputs": p.outputs, "word_bytes": p.word_bytes, "flood_bits": p.flood_bits}
                    for k, p in plans.items()}
    dp = plans["design"]  # the same accounting as sp.lattice_bytes (binding.cross_term_bytes's)
    out["lattice_design_x_bits_matrix"] = (dp.bytes_estimate(ring) + 4 * bfv_proof.witness_count(ring, dp.blocks)
                                           + d * xb * -(-dp.mac_bits(ring) // 8))
    out["total_wide"] = out["vole_bytes"] + lat["wide"]
    out["total_stacked"] = out["vole_bytes"] + lat["stacked"]
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
