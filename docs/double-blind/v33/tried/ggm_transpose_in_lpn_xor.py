# Tried and not kept (branch lapsh, docs/double-blind.md 'Semi-honest Laplacian CPU'); run from the repository root:
#   python docs/double-blind/v33/tried/ggm_transpose_in_lpn_xor.py
import time, numpy as np
rng = np.random.default_rng(1)
m, B = 2048, 128
src = rng.integers(0, 2**63, size=(m, B, 2), dtype=np.uint64)
g = rng.integers(0, 2**63, size=(8192, 2), dtype=np.uint64)
out = np.empty((m * B, 2), np.uint64)
T = 4
def v_base():
    o = out.reshape(B, m, 2)
    for t0 in range(0, B, T):
        s = src[:, t0:t0+T].transpose(1, 0, 2)
        np.bitwise_xor(s, g.reshape(T, m, 2), out=o[t0:t0+T])
def v_words():
    o = out.reshape(B, m, 2)
    gg = g.reshape(T, m, 2)
    for t0 in range(0, B, T):
        s = src[:, t0:t0+T].transpose(1, 0, 2)
        np.bitwise_xor(s[..., 0], gg[..., 0], out=o[t0:t0+T, :, 0])
        np.bitwise_xor(s[..., 1], gg[..., 1], out=o[t0:t0+T, :, 1])
def v_copy():
    o = out.reshape(B, m, 2)
    oc = out.view(np.complex128).reshape(B, m)
    sc = src.view(np.complex128)[..., 0]
    gg = g.reshape(T, m, 2)
    for t0 in range(0, B, T):
        oc[t0:t0+T] = sc[:, t0:t0+T].T
        o[t0:t0+T] ^= gg
def v_tm():
    import sys; sys.path.insert(0, '.')
    from protocols.ot.ferret import _tree_major
    tm = _tree_major(src)
    o = out.reshape(B, m, 2)
    gg = g.reshape(T, m, 2)
    for t0 in range(0, B, T):
        np.bitwise_xor(tm[t0:t0+T], gg, out=o[t0:t0+T])
def t(f, n=7):
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    return best * 1e3
for f in (v_base, v_words, v_copy, v_tm):
    print(f.__name__, '%.2f ms' % t(f))
