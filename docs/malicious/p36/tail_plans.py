"""Protocol 36's three changes to the shared tail, one at a time, on bench.malicious_steps' model
(N = 16,384, d = 351, sigma 74) and bench.malicious_cost's Laplacian (sigma 1000, 2^-8 grid):
tail_plan's bytes per point of steps 10-11 with the split point L free or pinned to pp.lo_bits
(protocol 34's Gaussian rule), the output scale w + g + V (OUTPUT_NOISE_BITS = None: no drop) or
T - 1 + 17, and the weights on the e1 table only or on either.
    PYTHONPATH=. python docs/malicious/p36/tail_plans.py > docs/malicious/p36/tail_plans.log   # from the checkout root
"""
import itertools
from unittest import mock

from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model
from protocols.krr import ServedModel, gaussian_malicious as gm

for kernel, sigma in (("gaussian", 74.0), ("laplacian", 1000.0)):
    model, _ = synthetic_model(16384, 351, sigma, seed=0, kernel=kernel)
    kw = {"frac_bits": LAPLACIAN_GRID_BITS} if kernel == "laplacian" else {}
    pp = ServedModel(model, security="client-malicious", **kw).public
    for free_l, noise, side in itertools.product((False, True), (None, 17), ("e1", "auto")):
        with mock.patch.object(gm, "ALPHA_SIDE", side), mock.patch.object(gm, "OUTPUT_NOISE_BITS", noise or 10**6):
            if free_l:
                tp = gm.tail_plan(pp)
            else:  # protocol 34's Gaussian: L = pp.lo_bits only
                tp = min(gm._plans_at(pp, pp.lo_bits, pp.d_bits - pp.lo_bits),
                         key=lambda t: (t.g_bytes_per_point() + t.chain_bytes_per_point(), t.split, t.alpha_e0))
        print(f"{kernel:9s} L {'free  ' if free_l else 'pinned'} scale {'T-1+17' if noise else 'w+g+V '} alpha {side:4s}: "
              f"{tp.g_bytes_per_point() + tp.chain_bytes_per_point():5d} B/pt = G {tp.g_bytes_per_point()} + chain "
              f"{tp.chain_bytes_per_point()}  (L {tp.lo_bits}, h0 {tp.split}, alpha_e0 {tp.alpha_e0}, S {tp.scale_bits}, "
              f"D0 {tp.head_shift}, m {tp.mask_bits}, R {tp.ring_bits}, RG {tp.g_ring_bits}, T {tp.flood_bits})")
