"""Hot loops of the "Laplacian chain without the bit" design (docs/malicious.md, section "Design: the
Laplacian chain without the bit (not built)"), at full scale, CPU seconds per party.

A prototype, not package code: numpy only, both parties' work run one after the other in one process
(``time.process_time`` around each party's part), on random data of the real shapes:
N = 16,384 training points, d = 351 features, five 3-bit digits -> 4 digit steps, i.e.
4 x 5,750,784 = 23,003,136 AND gates c_C^(k-1) * s.

What it measures (each a function below, named after the design's step):
  * ``qs_gf16``   -- the batched QuickSilver check of the 23M degree-2 relations
                     f = c*s + c' + w + gamma*s, summed with chi per element against the per-column MAC
                     words, in ``slots`` independent GF(2^16) slots of the 128-bit COT MACs (log/antilog
                     tables, zero by a sentinel log): prover (client) and verifier (server), honest run
                     checked to pass and one wrong product bit checked to fail.
  * ``clmul64``   -- the same products in one GF(2^64) slot by a 4-bit-window carry-less multiply
                     (numpy has no clmul): throughput per product, measured on one digit step's 5.75M
                     products and scaled by the 3 products per gate and party (stated as scaled).
  * ``tables``    -- the server's per-column check tables: for every column j, digit step k and candidate v,
                     g_j(v) = sum_i beta_i A_ij(v) and sum_i beta_i s_ij(v) in every slot, from XOR histograms
                     of beta over the digit values (sort per column and digit once per model, then reduceat).
  * ``derand``    -- the commitments' derandomisation (server: K ^= d & Delta for the s bits) and the
                     authenticated random OT's correction D = L0 ^ L1 ^ (m0 ^ m1) Delta (server) and
                     MAC M_w = L_c ^ c D (client), lambda = 16 * slots bits, 4 x 5.75M each.
Run (from the repository root, quiet machine, one at a time):
    nice python docs/malicious/lapqs/proto.py --out docs/malicious/lapqs/proto.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

N, D, STEPS, DIGIT_BITS = 16_384, 351, 4, 3
POLY16 = 0x1100B  # x^16 + x^12 + x^3 + x + 1, primitive
ORDER = 65535


def gf16_tables() -> tuple[np.ndarray, np.ndarray, int]:
    """LOG (65536,) int32 with LOG[0] = ZERO, EXP (3 ZERO + 1,) uint16: EXP[i] = g^i for i < ZERO,
    0 from ZERO on -- so EXP[LOG[a] + LOG[b] (+ LOG[c])] is the product, 0 if any factor is 0, no branch."""
    exp = np.zeros(ORDER, dtype=np.int64)
    x = 1
    for i in range(ORDER):  # one-off, 65,535 steps
        exp[i] = x
        x <<= 1
        if x & 0x10000:
            x ^= POLY16
    log = np.zeros(65536, dtype=np.int32)
    log[exp] = np.arange(ORDER, dtype=np.int32)
    zero = 3 * ORDER  # any sum with a zero's log lands at >= zero
    log[0] = zero
    EXP = np.zeros(3 * zero + 1, dtype=np.uint16)
    EXP[: 3 * ORDER] = np.tile(exp, 3).astype(np.uint16)
    return log, EXP, zero


LOG, EXP, ZERO = gf16_tables()


def gmul(a, b):
    """GF(2^16) product, elementwise."""
    return EXP[LOG[a] + LOG[b]]


def xorsum(a: np.ndarray) -> int:
    return int(np.bitwise_xor.reduce(a, axis=None)) if a.size else 0


def qs_gf16(rng: np.random.Generator, slots: int, cheat: bool = False) -> dict:
    """One batched check of all 4 digit steps' relations, every slot; returns CPU seconds per party and
    whether the verifier accepted. Party data are generated outside the timed regions."""
    n = N * D
    t_prover = t_verifier = 0.0
    accept = True
    for slot in range(slots):
        delta = int(rng.integers(1, 65536))
        gamma = int(rng.integers(1, 65536))
        lg = int(LOG[gamma])
        U = V = 0  # prover's sums (the masks of a real proof cancel: left out)
        B0 = B1 = KJ = 0  # verifier's sums
        # committed bit c^(k-1) with its MAC/key; c^0 first (the first digit step's multiplicand)
        c = rng.integers(0, 2, n, dtype=np.uint8)
        Kc = rng.integers(0, 65536, n, dtype=np.uint16)
        Mc = Kc ^ (c.astype(np.uint16) * np.uint16(delta))
        t = time.process_time()
        lMc = LOG[Mc]  # prover's logs of c's MACs, reused as the next step's multiplicand
        t_prover += time.process_time() - t
        t = time.process_time()
        lKc = LOG[Kc]
        t_verifier += time.process_time() - t
        for k in range(STEPS):
            # ---- data of this digit step (not timed): s committed, w authenticated, c' = A ^ w ^ c s committed
            s = rng.integers(0, 2, n, dtype=np.uint8)
            w = rng.integers(0, 2, n, dtype=np.uint8)
            A = rng.integers(0, 2, n, dtype=np.uint8)  # the column-OT entry at the committed digit
            cn = A ^ w ^ (c & s)
            if cheat and slot == 0 and k == 2:
                cn = cn.copy()
                cn[12345] ^= 1  # one wrong product bit
            Ks, Kw, Kn = (rng.integers(0, 65536, n, dtype=np.uint16) for _ in range(3))
            dl = np.uint16(delta)
            Ms, Mw, Mn = Ks ^ (s * dl), Kw ^ (w * dl), Kn ^ (cn * dl)
            lchi = rng.integers(0, ORDER, n, dtype=np.int32)  # chi = g^lchi, uniform on GF(2^16)*
            # per-column MAC words of g_j = sum_i chi_i (A_i + gamma s_i), W_j = K_j + g_j Delta
            # (the server's tables -- timed in tables(); here computed directly for the check)
            g = (EXP[lchi + LOG[A.astype(np.uint16)]] ^ EXP[lchi + lg + LOG[s.astype(np.uint16)]]).reshape(D, N)
            gj = np.bitwise_xor.reduce(g, axis=1)
            Kj = rng.integers(0, 65536, D, dtype=np.uint16)
            Wj = Kj ^ gmul(gj, np.full(D, delta, dtype=np.uint16))
            # ---- prover (client): U = sum chi Mc Ms, V = sum chi (c Ms + s Mc + Mc' + Mw + gamma Ms) + sum W_j
            t = time.process_time()
            lMs = LOG[Ms]
            U ^= xorsum(EXP[lMc + lMs + lchi])
            a1 = Mn ^ Mw
            a1 ^= Ms & np.uint16(0) - c.astype(np.uint16)  # c * Ms (c as a 0/0xFFFF mask)
            a1 ^= Mc & np.uint16(0) - s.astype(np.uint16)  # s * Mc
            a1 ^= EXP[lMs + lg]  # gamma * Ms
            V ^= xorsum(EXP[LOG[a1] + lchi]) ^ xorsum(Wj)
            lMn = LOG[Mn]
            t_prover += time.process_time() - t
            # ---- verifier (server): sum chi Kc Ks, sum chi (Kc' + Kw + gamma Ks), sum K_j
            t = time.process_time()
            lKs = LOG[Ks]
            B0 ^= xorsum(EXP[lKc + lKs + lchi])
            b1 = Kn ^ Kw
            b1 ^= EXP[lKs + lg]
            B1 ^= xorsum(EXP[LOG[b1] + lchi])
            KJ ^= xorsum(Kj)
            lKn = LOG[Kn]
            t_verifier += time.process_time() - t
            c, Mc, Kc, lMc, lKc = cn, Mn, Kn, lMn, lKn
        # ---- the check: sum chi B + (sum K_j) Delta == U + V Delta
        t = time.process_time()
        lhs = B0 ^ int(gmul(np.uint16(B1 ^ KJ), np.uint16(delta)))
        ok = lhs == (U ^ int(gmul(np.uint16(V), np.uint16(delta))))
        t_verifier += time.process_time() - t
        accept &= bool(ok)
    return {"prover_cpu_s": t_prover, "verifier_cpu_s": t_verifier, "accepted": accept, "slots": slots,
            "gates": STEPS * N * D}


# ---- GF(2^64) by a 4-bit-window carry-less multiply (x^64 + x^4 + x^3 + x + 1) --------------------
U64 = np.uint64


def clmul64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b in GF(2^64), elementwise, uint64 arrays of one chunk."""
    n = a.shape[0]
    # window table T[v] = a * v (v < 16) as (lo, hi) with hi < 2^3
    Tlo = np.zeros((16, n), dtype=U64)
    Thi = np.zeros((16, n), dtype=U64)
    for bit in range(4):
        step = 1 << bit
        lo = a << U64(bit)
        hi = a >> U64(64 - bit) if bit else np.zeros(n, dtype=U64)
        for v in range(step, 2 * step):
            Tlo[v] = Tlo[v - step] ^ lo
            Thi[v] = Thi[v - step] ^ hi
    rlo = np.zeros(n, dtype=U64)
    rhi = np.zeros(n, dtype=U64)
    cols = np.arange(n)
    for w in range(15, -1, -1):  # Horner over b's nibbles, top first: r = r << 4 ^ T[nibble]
        if w != 15:
            rhi = (rhi << U64(4)) | (rlo >> U64(60))
            rlo = rlo << U64(4)
        idx = ((b >> U64(4 * w)) & U64(15)).astype(np.intp)
        rlo ^= Tlo[idx, cols]
        rhi ^= Thi[idx, cols]
    # reduce: x^64 = x^4 + x^3 + x + 1
    for _ in range(2):
        f = rhi
        rhi = (f >> U64(60)) ^ (f >> U64(61)) ^ (f >> U64(63))
        rlo = rlo ^ f ^ (f << U64(1)) ^ (f << U64(3)) ^ (f << U64(4))
    return rlo


def clmul64_ref(a: int, b: int) -> int:
    r = 0
    for i in range(64):
        if (b >> i) & 1:
            r ^= a << i
    for i in range(127, 63, -1):
        if (r >> i) & 1:
            r ^= ((1 << 64) | 0b11011) << (i - 64)
    return r


def clmul_bench(rng: np.random.Generator, chunk: int = 1 << 16) -> dict:
    """One digit step's worth of products (N d = 5.75M), chunked; checked against a Python reference."""
    a = rng.integers(0, 2**63, 8, dtype=np.int64).astype(U64) * U64(2) + U64(1)
    b = rng.integers(0, 2**63, 8, dtype=np.int64).astype(U64) * U64(3)
    got = clmul64(a, b)
    assert all(int(g) == clmul64_ref(int(x), int(y)) for g, x, y in zip(got, a, b)), "clmul64 wrong"
    n = N * D
    t = time.process_time()
    acc = U64(0)
    for p in range(0, n, chunk):
        m = min(chunk, n - p)
        x = rng.integers(0, 2**63, m, dtype=np.int64).astype(U64)  # generation inside: subtracted below
        y = rng.integers(0, 2**63, m, dtype=np.int64).astype(U64)
        acc ^= np.bitwise_xor.reduce(clmul64(x, y))
    total = time.process_time() - t
    t = time.process_time()
    for p in range(0, n, chunk):
        m = min(chunk, n - p)
        rng.integers(0, 2**63, m, dtype=np.int64).astype(U64)
        rng.integers(0, 2**63, m, dtype=np.int64).astype(U64)
    gen = time.process_time() - t
    per = (total - gen) / n
    return {"products": n, "cpu_s": total - gen, "ns_per_product": per * 1e9,
            "scaled_per_party_cpu_s": per * 3 * STEPS * n}


def tables(rng: np.random.Generator, slots: int) -> dict:
    """Server: per column j, digit step k >= 1 and candidate v the two check sums
    sum_i beta_i A_ij(v) and sum_i beta_i s_ij(v) (A = [x < v + c_S] ^ r_A, s = eq(v) ^ delta), every
    slot. XOR histograms of beta over the digit values: H(u) = sum_{x_i = u} beta_i and
    H'(u) = sum_{x_i = u, c_S,i = 1} beta_i; then sum beta A(v) = XOR_{u < v} H(u) ^ H'(v) ^ sum beta r_A
    (c_S = 0: threshold v; c_S = 1: v + 1, i.e. the extra [x = v] term), sum beta s(v) = H(v) ^ sum beta delta.
    The per-column sort of each digit (model data) is done once per model, outside the timing."""
    XT = rng.integers(0, 1 << 15, (D, N), dtype=np.int64)
    m = 1 << DIGIT_BITS
    prep = []
    t = time.process_time()
    for k in range(1, STEPS + 1):
        dig = (XT >> (DIGIT_BITS * k)) & (m - 1)
        order = np.argsort(dig, axis=1, kind="stable").astype(np.int16)
        counts = np.stack([np.count_nonzero(dig == u, axis=1) for u in range(m)], axis=1)
        prep.append((dig, order, counts))
    t_model = time.process_time() - t
    cpu = 0.0
    out = 0
    rows = np.arange(D)[:, None]
    for slot in range(slots):
        beta = rng.integers(1, 65536, N, dtype=np.uint16)
        for k in range(STEPS):
            dig, order, counts = prep[k]
            cS = rng.integers(0, 2, (D, N), dtype=np.uint8)
            rA = rng.integers(0, 2, (D, N), dtype=np.uint8)
            dl = rng.integers(0, 2, (D, N), dtype=np.uint8)
            t = time.process_time()
            bsorted = beta[order]  # (D, N) beta in digit order per column
            starts = np.concatenate([np.zeros((D, 1), np.int64), np.cumsum(counts, axis=1)[:, :-1]], axis=1)
            flat = (starts + rows * N).ravel()
            nonempty = (counts > 0).ravel()
            H = np.zeros(D * m, dtype=np.uint16)
            H[nonempty] = np.bitwise_xor.reduceat(bsorted.ravel(), flat[nonempty])
            sel = bsorted & (np.uint16(0) - cS[rows, order].astype(np.uint16))  # beta where c_S = 1
            Hp = np.zeros(D * m, dtype=np.uint16)
            Hp[nonempty] = np.bitwise_xor.reduceat(sel.ravel(), flat[nonempty])
            H, Hp = H.reshape(D, m), Hp.reshape(D, m)
            lt = np.zeros((D, m), dtype=np.uint16)
            np.bitwise_xor.accumulate(H[:, :-1], axis=1, out=lt[:, 1:])
            gA = lt ^ Hp ^ np.bitwise_xor.reduce(beta[None, :] & (np.uint16(0) - rA.astype(np.uint16)), axis=1)[:, None]
            gS = H ^ np.bitwise_xor.reduce(beta[None, :] & (np.uint16(0) - dl.astype(np.uint16)), axis=1)[:, None]
            cpu += time.process_time() - t
            out ^= int(gA[0, 3]) ^ int(gS[5, 2])
            if slot == 0 and k == 0:  # spot check against the definition on two columns
                for j in (0, 7):
                    for v in (0, 3, 7):
                        thr = v + cS[j].astype(np.int64)
                        A = ((dig[j] < thr).astype(np.uint8) ^ rA[j]).astype(bool)
                        S = ((dig[j] == v).astype(np.uint8) ^ dl[j]).astype(bool)
                        assert xorsum(beta[A]) == int(gA[j, v]) and xorsum(beta[S]) == int(gS[j, v]), "tables"
    return {"server_cpu_s": cpu, "model_prep_cpu_s": t_model, "slots": slots}


def derand(rng: np.random.Generator, slots: int) -> dict:
    """Per digit step and element: the s commitment's key K ^= d & Delta (server; the client's MAC is
    its COT output as is) and the authenticated random OT (server D = L0 ^ L1 ^ (m0 ^ m1) Delta,
    K_w = L0 ^ m0 Delta; client M_w = L_c ^ c D), lambda = 16 slots bits in one uint64 word."""
    n = N * D
    lam_mask = np.uint64((1 << (16 * slots)) - 1)
    Delta = np.uint64(int(rng.integers(1, 2**62)) & int(lam_mask))
    ts = tc = 0.0
    for _ in range(STEPS):
        d = rng.integers(0, 2, n, dtype=np.uint8)
        K = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
        L0 = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
        L1 = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
        m0 = rng.integers(0, 2, n, dtype=np.uint8)
        m1 = rng.integers(0, 2, n, dtype=np.uint8)
        c = rng.integers(0, 2, n, dtype=np.uint8)
        t = time.process_time()
        K ^= Delta & (np.uint64(0) - d.astype(np.uint64))
        delta = (m0 ^ m1).astype(np.uint64)
        Dc = (L0 ^ L1 ^ (Delta & (np.uint64(0) - delta))) & lam_mask
        Kw = (L0 ^ (Delta & (np.uint64(0) - m0.astype(np.uint64)))) & lam_mask
        ts += time.process_time() - t
        t = time.process_time()
        Lc = np.where(c.astype(bool), L1, L0)  # the client's hash output (from its own COT MAC)
        Mw = (Lc ^ (Dc & (np.uint64(0) - c.astype(np.uint64)))) & lam_mask
        tc += time.process_time() - t
        w = np.where(c.astype(bool), m1, m0).astype(np.uint64)
        assert np.array_equal(Mw, Kw ^ (Delta & (np.uint64(0) - w))), "authenticated ROT"
    return {"server_cpu_s": ts, "client_cpu_s": tc, "lambda_bits": 16 * slots}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip", default="", help="comma list of parts to skip")
    a = ap.parse_args()
    rng = np.random.default_rng(20261205)
    res: dict = {"N": N, "d": D, "digit_steps": STEPS, "load_before": open("/proc/loadavg").read().split()[:3]}
    skip = set(a.skip.split(","))
    if "qs" not in skip:
        res["qs_gf16"] = qs_gf16(rng, a.slots)
        bad = qs_gf16(np.random.default_rng(7), 1, cheat=True)
        res["qs_gf16_one_wrong_product_accepted"] = bad["accepted"]
        assert res["qs_gf16"]["accepted"] and not bad["accepted"]
        res["load_after_qs"] = open("/proc/loadavg").read().split()[:3]
    if "clmul" not in skip:
        res["clmul64"] = clmul_bench(rng)
    if "tables" not in skip:
        res["tables"] = tables(rng, a.slots)
    if "derand" not in skip:
        res["derand"] = derand(rng, a.slots)
    res["load_after"] = open("/proc/loadavg").read().split()[:3]
    res["nice"] = os.nice(0)
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
