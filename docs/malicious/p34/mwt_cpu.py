# CPU of step 5's table builder alone (N = 16,384, d = 351, B = 15), protocol 32 (mod 2^64 - 59) or 33
# (mod 2^48 - 59): python docs/malicious/p34/mwt_cpu.py CHECKOUT_ROOT, alternately; output: mwt_cpu.log
import sys, time, numpy as np
root = sys.argv[1]
sys.path.insert(0, root)
from protocols.krr import laplacian_malicious as lm
p33 = hasattr(lm, "fp48")
P = (1 << 48) - 59 if p33 else (1 << 64) - 59
rng = np.random.default_rng(0)
N, d, B = 16384, 351, 15
XT = rng.integers(0, 1 << B, (d, N)).astype(np.uint64)
chi = rng.integers(0, P, N, dtype=np.uint64)
delta = np.uint64(12345678901 % P)
K = rng.integers(0, P, d, dtype=np.uint64)
t0 = time.process_time()
for j0, j1 in lm._feature_blocks(d, B):
    W = lm.mac_word_tables(XT[j0:j1], chi, B, delta, K[j0:j1])
print(("p33" if p33 else "p32"), f"{time.process_time() - t0:.2f} s CPU", open("/proc/loadavg").read().split()[0], flush=True)
