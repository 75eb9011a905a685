"""Protocol 33's note on the shared tail (not built): bytes per training point of steps 10-11 for
every split point L of the distance (x_lo = L low bits in the chain, x_hi = d_bits - L bits in the
G table), one table or the rank-2 split, with tail_plan's own formulas (_lift, _chain_shape; g and
V = 40, or fewer; "True" = the output bound taken as max(S + 26, T + 2) instead of S + T + 26).
Rows: (bytes per point, L, hb, lut, h0 (0: one table), sizes). At L = pp.lo_bits = 19 it gives
tail_plan's 1,297 B for the Laplacian (split h0 = 3) and 1,144 B for the Gaussian (L = 40).
    PYTHONPATH=. python docs/malicious/p34/tail_plans.py > docs/malicious/p34/tail_plans.log   # from the checkout root
"""
import math
from bench.synthetic import LAPLACIAN_GRID_BITS, synthetic_model
from protocols.krr import ServedModel, gaussian_malicious as gm
from protocols.krr.chain import digit_plan
from protocols.krr.params import KERNEL_FRAC_BITS
def lift(count, amax):
    l = amax.bit_length(); nb = 1
    while count*amax << 40 > (1 << (8*nb)) - (1 << (l+1)): nb += 1
    return l, nb
def chain(N, Lb, head, amax, minb, w, g, V, fixout):
    out = w+g+V; B=amax; m=0; scale=head; shifts=[]
    digits = digit_plan(0, Lb, 1)
    for _ in digits:
        pre = B << V; m = max(m, pre.bit_length()); t = scale+V-out; shifts.append(t); B=(pre>>t)+1; scale=out
    NK = N*len(digits); car = sum(1 for t in shifts if t)
    flood = 40 + max(1,(N*car-1).bit_length())
    nb = -(-minb//8)
    need_out = (out+flood+26) if not fixout else max(out+26, flood+2)
    while (NK << (m+41)) > (1<<(8*nb)) - (1<<(m+1)) or 8*nb < need_out: nb += 1
    return len(digits), m, nb
def plans(pp, g=40, V=40, fixout=False):
    N=pp.n_train; w=pp.weight_frac_bits; tcut=(KERNEL_FRAC_BITS+4)*math.log(2)
    res=[]
    for Lb in range(pp.lo_bits, pp.d_bits):
        step = pp.c*(1<<Lb); lut=min(math.ceil(math.log2(tcut/step+1)), pp.d_bits-Lb); hb=pp.d_bits-Lb
        if hb>12: continue
        gmax = math.ceil(math.exp(step)*2.0**g*(1+2**-40))+1; wmax = 1<<(pp.weight_bits-1)
        l, gb = lift(N, wmax*gmax)
        K, m, cb = chain(N, Lb, w+g, wmax*gmax, 8*gb, w, g, V, fixout)
        res.append((hb*0+ (1<<hb)*gb + K*cb, Lb, hb, lut, 0, f"single RG={gb} K={K} R={cb}"))
        a2 = wmax*((1<<g)+1)*gmax; l2, g2 = lift(N, a2); _, ab = lift(2*N, 1<<g); bl, bb = lift(2*N, wmax*gmax)
        K2, m2, cb2 = chain(N, Lb, w+2*g, a2, 8*g2, w, g, V, fixout)
        for h0 in range(1, min(lut, hb-1)+1):
            c = (1<<h0)*(2*ab+g2) + (1<<(hb-h0))*(2*bb+g2) + K2*cb2
            res.append((c, Lb, hb, lut, h0, f"split RG={g2} a={ab} b={bb} K={K2} R={cb2}"))
    return sorted(res)
for kernel in ("laplacian","gaussian"):
    model, rng = synthetic_model(16384, 351, 1000.0, seed=0, kernel=kernel)
    kw = {"frac_bits": LAPLACIAN_GRID_BITS} if kernel=="laplacian" else {}
    pp = ServedModel(model, security="client-malicious", **kw).public
    for g,V,fix in ((40,40,False),(40,40,True),(36,36,True),(32,32,True)):
        r = plans(pp,g,V,fix)
        print(kernel, g, V, fix, "best:", r[:4])
model, rng = synthetic_model(16384, 351, 1000.0, seed=0, kernel="laplacian")
pp = ServedModel(model, security="client-malicious", frac_bits=LAPLACIAN_GRID_BITS).public
for Lb in (19,21,22):
    step = pp.c*(1<<Lb); gmax = math.ceil(math.exp(step)*2.0**40*(1+2**-40))+1; wmax=1<<(pp.weight_bits-1)
    print(Lb, step, math.log2(gmax), chain(16384, Lb, 56, wmax*gmax, 8*19, 16,40,40,True))
