"""FixedKeyAES.tccr_bits on 2^LOG2_ROWS rows (default 20), ns per row, for the tree given as argv[1]
(run it against a `git archive` of the base commit and against this tree, alternately):

    python docs/double-blind/v33/tccr_bits_bench.py /tmp/base 17; python docs/double-blind/v33/tccr_bits_bench.py . 17

Prints the best of 7 and the number of 1 bits (the same in both trees: same outputs)."""
import time, numpy as np, sys
sys.path.insert(0, sys.argv[1])
from protocols.ot.crypto import FixedKeyAES, tune_allocator
tune_allocator()
aes = FixedKeyAES(b'a'*16)
rng = np.random.default_rng(1)
k = 1 << int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
q = rng.integers(0, 2**63, size=(k, 2), dtype=np.uint64)
def t(f, n=7):
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    return best
r = aes.tccr_bits(q, 2**40 - 5, 1)
print(sys.argv[1], 'tccr_bits %.2f ns/row' % (1e9 * t(lambda: aes.tccr_bits(q, 2**40 - 5, 1)) / k), int(r.sum()))
