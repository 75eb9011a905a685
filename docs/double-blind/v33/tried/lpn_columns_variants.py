# Tried and not kept (branch lapsh, docs/double-blind.md 'Semi-honest Laplacian CPU'); run from the repository root:
#   python docs/double-blind/v33/tried/lpn_columns_variants.py
import time, numpy as np
rng = np.random.default_rng(1)
k = 124000; m = 8192; N=400
raw = rng.integers(0, 256, size=4*m+16, dtype=np.uint8)
words = raw[:4*m].view(np.uint32)
ix = np.empty(m, np.intp)
K = np.uint64(k); S = np.uint64(32)
def cur():
    u = ix.view(np.uint64)
    np.multiply(words, K, out=u, casting='unsafe'); np.right_shift(u, S, out=u)
M32 = np.uint64(0xFFFFFFFF)
def pairs():
    v = raw[:4*m].view(np.uint64)
    x = ix.view(np.uint64).reshape(m//2, 2)
    e = x[:, 0]; o = x[:, 1]
    np.bitwise_and(v, M32, out=e); np.multiply(e, K, out=e); np.right_shift(e, S, out=e)
    np.right_shift(v, S, out=o); np.multiply(o, K, out=o); np.right_shift(o, S, out=o)
tmp = np.empty(m, np.uint64)
def cast_first():
    u = ix.view(np.uint64)
    u[...] = words
    np.multiply(u, K, out=u); np.right_shift(u, S, out=u)
f = np.empty(m); c = k * 2.0**-32
def flt():
    np.multiply(words, c, out=f); ix[...] = f
def t(fn, n=7):
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter()
        for _ in range(N): fn()
        best = min(best, time.perf_counter() - t0)
    return best / N / m * 1e9
cur(); a = ix.copy(); pairs(); assert (a == ix).all(); cast_first(); assert (a==ix).all(); flt(); assert (a==ix).all()
for fn in (cur, pairs, cast_first, flt):
    print(fn.__name__, '%.3f ns/idx' % t(fn))
