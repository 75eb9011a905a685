# main's _tree_pads_sender against this branch's, alternating (outputs compared):
# git show 1e4e4f7:protocols/ot/crypto.py > DIR/crypto_old.py; PYTHONPATH=. nice python docs/malicious/stop10-lapcpu/micro_tree_pads.py DIR
import sys, time, os
sys.path.insert(0, sys.argv[1])  # a folder holding main's protocols/ot/crypto.py as crypto_old.py
import numpy as np
import crypto_old
from protocols.mpc import authenticated as au
rng = np.random.default_rng(0)
aes = au._lut_aes()
def case(k, m, nblk, reps):
    p0 = rng.integers(0, 2**63, (k, m, 2), dtype=np.uint64); p1 = rng.integers(0, 2**63, (k, m, 2), dtype=np.uint64)
    lows = au._lut_lows(k, 0)
    def run(old):
        f = crypto_old.FixedKeyAES._tree_pads_sender if old else type(aes)._tree_pads_sender
        t = time.process_time(); outs = [f(aes, p0, p1, lows, m, nblk) for _ in range(reps)]; return outs[0], time.process_time() - t
    for _ in range(3):
        a, ta = run(True); b, tb = run(False)
        print(f"k={k} m={m} nblk={nblk} x{reps}: old {ta:.3f} new {tb:.3f} ratio {tb/ta:.2f} equal {(a == b).all()} load {os.getloadavg()[0]:.2f}")
case(32, 15, 1, 11); case(31, 15, 1, 1); case(16384, 5, 3, 3); case(100, 12, 2, 3); case(3, 4, 1, 1)
