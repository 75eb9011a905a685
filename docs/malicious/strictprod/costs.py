"""Bytes of protocols.krr.strict_products at a given size, from the plan functions (no run):
the vector COT's corrections, and the checked lattice matvec of P q for three limb layouts --
"stacked" (built: one matvec on the L N rows of P's x_bits-bit limbs), "per_limb" (L matvecs of N
rows, each with its own key, ciphertexts and proof), and "wide_matrix" (NOT built: one matvec of
N rows whose matrix entries are M bits wide while the query stays x_bits wide -- what
he_matvec_checked would need a separate matrix width for; its noise bound below is _noise's with
the matrix width in place of x_bits in the two matrix terms). "design" is the N-row plan at
x_bits, the figure docs/malicious.md's design counted for R q' (an x_bits-wide R).

    PYTHONPATH=. python docs/malicious/strictprod/costs.py --out docs/malicious/strictprod/costs.json
"""
from __future__ import annotations

import argparse
import json
import math

from protocols.krr import strict_products as sp
from protocols.mpc import bfv_proof, he_matvec_checked as hmc, rlwe


def _extra(ring, plan, d, xb):  # binding.cross_term_bytes's correction: witness OTs at 16 B, q's MACs
    return 4 * bfv_proof.witness_count(ring, plan.blocks) + d * xb * -(-plan.mac_bits(ring) // 8)


def wide_matrix_bytes(N: int, d: int, xb: int, wb: int, M: int) -> tuple[int, hmc.CheckedPlan]:
    ring = rlwe.modulus()
    best = None
    for n_i in range(1, min(d, ring.n) + 1):
        n = ring.n
        n_o = n // n_i
        blocks, outputs = -(-d // n_i), -(-N // n_o)
        bound = bfv_proof.NOISE_BOUND * ((1 << wb) - 1) * n_o * n_i * blocks
        bound += bfv_proof.NOISE_BOUND * n + rlwe.CBD_ETA * (n + 1)
        m_max = (1 << M) + d * ((1 << wb) - 1) * ((1 << xb) - 1)
        bound += -(-m_max // (1 << M)) + 1
        F = math.ceil(math.log2(bound)) + hmc.STAT_SECURITY + math.ceil(math.log2(max(2, outputs * n_o)))
        if m_max + (1 << M) * (bound + (1 << F)) >= ring.Q // 2:
            continue
        kk, r, w = hmc.reply_format(ring, m_max, M, bound + (1 << F))
        plan = hmc.CheckedPlan(N, d, xb, M, n_i, n_o, blocks, outputs, bound, F, kk, r, w)
        cost = plan.bytes_estimate(ring) + _extra(ring, plan, d, xb)
        if best is None or cost < best[0]:
            best = (cost, plan)
    return best


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
    w, L = sp.limb_bits(xb, M)
    wide, wplan = wide_matrix_bytes(N, d, xb, M, M)
    dplan = hmc.make_plan(N, d, xb, M, ring)
    splan = hmc.make_plan(L * N, d, w, M, ring)
    out = {
        "N": N, "d": d, "x_bits": xb, "ring_bits": M, "limbs": [w, L],
        "vole_bytes_per_element": sp.vole_bytes_per_element(M),
        "vole_bytes": sp.vole_bytes_per_element(M) * N * d,
        "lattice_stacked": lat["stacked"], "lattice_per_limb": lat["per_limb"],
        "lattice_wide_matrix_not_built": wide,
        "lattice_design_x_bits_matrix": dplan.bytes_estimate(ring) + _extra(ring, dplan, d, xb),
        "plan_stacked": {"n_i": splan.n_i, "outputs": splan.outputs, "word_bytes": splan.word_bytes,
                         "flood_bits": splan.flood_bits},
        "plan_wide_matrix": {"n_i": wplan.n_i, "outputs": wplan.outputs, "word_bytes": wplan.word_bytes,
                             "flood_bits": wplan.flood_bits},
    }
    out["total_stacked"] = out["vole_bytes"] + out["lattice_stacked"]
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
