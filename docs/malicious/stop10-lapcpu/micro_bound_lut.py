# bound_lut sender, 351 step-5 tables: the general path (sender_pads given) against the one-word path, alternating, bytes compared:
# PYTHONPATH=. nice python docs/malicious/stop10-lapcpu/micro_bound_lut.py
import sys, time, os
import numpy as np
from protocols.mpc import authenticated as au, fp48
class Ch:
    def __init__(self): self.out = []
    def send_array(self, a, owned=False): self.out.append(np.array(a, copy=True))
    def flush(self): pass
class P:
    role = 0
    def __init__(self): self.ch = Ch()
rng = np.random.default_rng(0)
d, xb = 351, 15
m0 = rng.integers(0, 256, (d, xb, 16), dtype=np.uint8); m1 = rng.integers(0, 256, (d, xb, 16), dtype=np.uint8)
W = rng.integers(0, fp48.P, (d, 1 << xb), dtype=np.uint64)
def run(new):
    p = P(); t = time.process_time()
    for j0 in range(0, d, 32):
        j1 = min(d, j0 + 32)
        if new:
            au.bound_lut(p, 1, (0, xb), pads=(m0[j0:j1], m1[j0:j1]), tables=W[j0:j1, :, None], widths=(6,))
        else:  # the general path (lut_sender_pads, then pack and XOR bytes)
            au.bound_lut(p, 1, (0, xb), pads=(m0[j0:j1], m1[j0:j1]), tables=W[j0:j1, :, None], widths=(6,),
                         sender_pads=au.lut_sender_pads((m0[j0:j1], m1[j0:j1]), (0, xb), w=1, widths=(6,)))
    return p.ch.out, time.process_time() - t
for _ in range(3):
    a, ta = run(False); b, tb = run(True)
    print(f"general {ta:.3f} s word path {tb:.3f} s ratio {tb/ta:.2f} same bytes {all(x.dtype == y.dtype and x.shape == y.shape and (x == y).all() for x, y in zip(a, b))} load {os.getloadavg()[0]:.2f}")
