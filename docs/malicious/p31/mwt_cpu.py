# CPU of step 5's table builder alone (N = 16,384, d = 351, B = 15): python docs/malicious/p31/mwt_cpu.py CHECKOUT_ROOT
# (run alternately on a protocol-29 checkout and this one; output: mwt_cpu.log)
import sys, time, numpy as np
root = sys.argv[1]
sys.path.insert(0, root)
from protocols.krr import laplacian_malicious as lm
rng = np.random.default_rng(0)
N, d, B = 16384, 351, 15
XT = rng.integers(0, 1 << B, (d, N)).astype(np.uint64)
chi = rng.integers(0, (1 << 64) - 59, N, dtype=np.uint64)
delta = np.uint64(12345678901234567)
p31 = hasattr(lm, "fp64")
K = rng.integers(0, (1 << 64) - 59, d, dtype=np.uint64)
t0 = time.process_time()
for j0, j1 in lm._feature_blocks(d, B):
    if p31:
        W = lm.mac_word_tables(XT[j0:j1], chi, B, delta, K[j0:j1]); t = W[:, :, None]
    else:
        W = lm.mac_word_tables(XT[j0:j1], chi, B, delta, (K[j0:j1], K[j0:j1])); t = np.stack(W, axis=-1)
print(("p31" if p31 else "p29"), f"{time.process_time() - t0:.2f} s CPU", flush=True)
