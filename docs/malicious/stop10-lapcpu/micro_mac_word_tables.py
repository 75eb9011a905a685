# the limb path (main's) against the mod-q path, alternating, outputs compared:
# PYTHONPATH=. nice python docs/malicious/stop10-lapcpu/micro_mac_word_tables.py
import time, os
import numpy as np
from protocols.krr import laplacian_malicious as lm
from protocols.mpc import fp48
from protocols.mpc.randomness import SecureRandom
rng = np.random.default_rng(0)
d, N, xb = 351, 16384, 15
XT = rng.integers(0, 1 << xb, (d, N)).astype(np.uint64); XT.flags.writeable = False
chi = fp48.uniform(SecureRandom(b"k" * 16), N)
delta = np.uint64(123456789); K = fp48.uniform(SecureRandom(b"j" * 16), d)
FAST = lm._FAST_MAX_N
def run(fast):
    lm._FAST_MAX_N = FAST if fast else 0
    t = time.process_time()
    out = [lm.mac_word_tables(XT[a:b], chi, xb, delta, K[a:b]) for a, b in lm._feature_blocks(d, xb)]
    return out, time.process_time() - t
for _ in range(3):
    o_old, t_old = run(False); o_new, t_new = run(True)
    print(f"old {t_old:.3f} s new {t_new:.3f} s ratio {t_new/t_old:.2f} equal {all((x == y).all() for x, y in zip(o_old, o_new))} load {os.getloadavg()[0]:.2f}")
