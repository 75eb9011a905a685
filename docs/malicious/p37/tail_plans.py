"""Protocol 37's changes to the split G tables and the chain ring, one at a time, on
bench.malicious_steps' model (N = 16,384, d = 351, sigma 74): bytes per point of steps 10-11 from
tail_plan's formulas, first at protocol 36's plan shape (L = 41, h0 = 3, alpha on e0), then the
cheapest plans that protocol 37's tail_plan weighs (h0 may now pass lut), and the Laplacian's
(bench.malicious_cost, sigma 1000: one G table, unchanged).
    PYTHONPATH=. python docs/malicious/p37/tail_plans.py > docs/malicious/p37/tail_plans.log   # from the checkout root
"""
import math

from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model
from protocols.krr import ServedModel, gaussian_malicious as gm

model, _ = synthetic_model(16384, 351, 74.0, seed=0)
pp = ServedModel(model, security="client-malicious").public
options = []
for L in range(pp.lo_bits, pp.d_bits):
    if L > pp.lo_bits and pp.g_frac_bits + pp.c * (1 << L) / math.log(2) >= 63.9:
        break
    options += gm._plans_at(pp, L, pp.d_bits - L if L > pp.lo_bits else gm._high_bits(pp))
p36 = next(t for t in options if (t.lo_bits, t.split, t.alpha_e0) == (41, 3, True))
a, b, g, cut = p36.a_bytes, p36.b_bytes, p36.g_bytes, p36.g_cut // 8
n0, n1 = 1 << p36.split, 1 << (p36.hb - p36.split)
K = len(p36.digits)
print(f"protocol 36 shape (L 41, hb {p36.hb}, h0 {p36.split}, alpha on e0; words {a}, {b}, {g} B; cut {cut} B):")
rows = [("protocol 36", n0 * (2 * a + g) + n1 * (2 * b + g), K * 26),
        ("+ free entry 0 on both tables", (n0 - 1) * (2 * a + g) + (n1 - 1) * (2 * b + g), K * 26),
        ("+ c words without their low bytes", (n0 - 1) * (2 * a + g - cut) + (n1 - 1) * (2 * b + g - cut), K * 26),
        ("+ one-sided chain wrap bound", p36.g_bytes_per_point(), p36.chain_bytes_per_point())]
for name, gb, cb in rows:
    print(f"  {name:36s} G {gb:5d} + chain {cb:5d} = {gb + cb:5d} B/pt")
print("protocol 37's tail_plan, cheapest options (h0 up to hb - 1):")
for t in sorted(options, key=lambda t: t.g_bytes_per_point() + t.chain_bytes_per_point())[:8]:
    print(f"  L {t.lo_bits} hb {t.hb} h0 {t.split} (lut {t.lut_bits}) alpha_e0 {t.alpha_e0!s:5s}: G {t.g_bytes_per_point():5d}"
          f" + chain {t.chain_bytes_per_point():5d} = {t.g_bytes_per_point() + t.chain_bytes_per_point():5d} B/pt "
          f"(A~ {t.a_bytes} B, B~ {t.b_bytes} B, RG {t.g_ring_bits}, cut {t.g_cut}, R {t.ring_bits}, m {t.mask_bits}, "
          f"T {t.flood_bits}, K' {t.carries})")
lap, _ = synthetic_model(16384, 351, 1000.0, seed=0, kernel="laplacian")
lp = ServedModel(lap, security="client-malicious", frac_bits=LAPLACIAN_GRID_BITS).public
t = gm.tail_plan(lp)
print(f"Laplacian: L {t.lo_bits} split {t.split}: G {t.g_bytes_per_point()} + chain {t.chain_bytes_per_point()} = "
      f"{t.g_bytes_per_point() + t.chain_bytes_per_point()} B/pt (R {t.ring_bits})")
