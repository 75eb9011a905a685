"""Bytes of the "Laplacian chain without the bit" design against the semi-honest chain and the measured
sessions (docs/malicious.md, section "Design: the Laplacian chain without the bit (not built)").

Per element (one training entry x one feature), N = 16,384, d = 351, 15-bit entries, M = 25:
  * semi-honest chain (protocols/krr/laplacian.py): column tables 2^m0 + sum_k 2^(m_k + 1) bits; one
    random OT per digit step (1 derandomisation bit + 0.70 bits of silent-OT iteration traffic); two
    (M-1)-bit product COTs, the first without a derandomisation bit (protocol 28's reserved COTs).
  * design: the same tables (bound table OTs: same entries, no per-column key layer); per digit step the
    random OT as before, its lambda-bit MAC correction D, and one committed bit s (1.70 bits); one
    product COT with the client's choice (1 + 2 (M-1) + 0.70 bits); per query the checked lattice R q'
    (the plan's own estimate: he_matvec_checked.make_plan + witness + query MACs, as
    protocols.krr.binding.cross_term_bytes counts it), step 4' (the client's share b committed: M bit
    MACs of 6 bytes and their silent OTs, one more 6-byte correction per point), the per-column MAC words
    (6 bytes per candidate) and the check's constant-size messages.
Run: PYTHONPATH=. python docs/malicious/lapqs/costs.py --out docs/malicious/lapqs/costs.json
"""
from __future__ import annotations

import argparse
import json
import math

N, D, M = 16_384, 351, 25
ELEMENTS = N * D
OT_BITS = 1.70  # a silent COT with a chosen choice bit: d + 0.70 bits of LPN-iteration traffic
LPN_BITS = 0.70
SH_SESSION = 99_702_005  # semi-honest Laplacian session, silent OT (docs/malicious.md, protocol 36)
CM_SESSION = 177_564_780  # client-malicious Laplacian session now (protocol 36)
MAC_WORD = 6  # bytes of an F_q MAC word / correction (commit_fp48)


def sh_chain_bits(digits: tuple[int, ...]) -> float:
    tables = (1 << digits[0]) + sum(1 << (m + 1) for m in digits[1:])
    rots = (len(digits) - 1) * OT_BITS
    products = ((M - 1) + LPN_BITS) + (1 + (M - 1) + LPN_BITS)
    return tables + rots + products


def design_chain_bits(digits: tuple[int, ...], lam: int) -> dict:
    steps = len(digits) - 1
    tables = (1 << digits[0]) + sum(1 << (m + 1) for m in digits[1:])
    rots = steps * OT_BITS
    auth = steps * lam
    s_commit = steps * OT_BITS
    product = 1 + 2 * (M - 1) + LPN_BITS
    return {"tables": tables, "random_ots": rots, "auth_rot_corrections": auth, "s_commitments": s_commit,
            "product_cot": product, "total": tables + rots + auth + s_commit + product}


def soundness_log2(lam: int) -> float | None:
    """log2 of the chain check's soundness error: 5 / 2^w per slot of w bits (2 for the degree-2
    identity in Delta, 2 for the tensor chi, 1 for gamma); slots of 16 bits, one slot of lam bits below 16."""
    if lam == 0:
        return None  # the random OT's output is not bound: not sound
    w = 16 if lam >= 16 else lam
    return round((lam // w) * (math.log2(5) - w), 1)


def lattice_bytes() -> int:
    from protocols.mpc import bfv_proof, he_matvec_checked, rlwe
    ring = rlwe.modulus()
    plan = he_matvec_checked.make_plan(N, D, 24, M - 1, ring)  # R entries < 2^24 (>= q's 15 bits), mod 2^(M-1)
    witness_bits = (2 + bfv_proof.NOISE_BITS * (plan.blocks + 1)) * ring.n
    return int(plan.bytes_estimate(ring) + 4 * witness_bits + D * 15 * -(-plan.mac_bits(ring) // 8))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    lat = lattice_bytes()
    step4b = N * (M * (MAC_WORD + OT_BITS / 8) + MAC_WORD)  # b's M bits + the product OT's second correction
    rows = []
    base = sh_chain_bits((3, 3, 3, 3, 3))
    for digits in ((3, 3, 3, 3, 3), (4, 4, 4, 3)):
        for lam in (0, 8, 16, 32, 48):
            c = design_chain_bits(digits, lam)
            steps = len(digits) - 1
            words = D * ((1 << digits[0]) + sum(1 << m for m in digits[1:])) * MAC_WORD
            extra_el = (c["total"] - base) / 8 * ELEMENTS
            total = CM_SESSION + extra_el + lat + step4b + words + 64
            rows.append({"digits": digits, "lambda": lam, "bits_per_element": c,
                         "sh_chain_bits_per_element": base, "extra_chain_bytes": round(extra_el),
                         "lattice_Rq_bytes": lat, "step4b_bytes": round(step4b), "mac_word_bytes": words,
                         "session_bytes": round(total), "x_semi_honest": round(total / SH_SESSION, 3),
                         "budget_2x": 2 * SH_SESSION, "over_budget": round(total - 2 * SH_SESSION),
                         "soundness_log2": soundness_log2(lam),
                         "digit_steps": steps})
    out = {"elements": ELEMENTS, "semi_honest_session": SH_SESSION, "client_malicious_now": CM_SESSION,
           "rows": rows}
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
