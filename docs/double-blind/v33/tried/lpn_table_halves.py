# Tried and not kept (branch lapsh, docs/double-blind.md 'Semi-honest Laplacian CPU'); run from the repository root:
#   python docs/double-blind/v33/tried/lpn_table_halves.py
import time, numpy as np, sys
sys.path.insert(0, '.')
from protocols.ot import ferret
from protocols.ot.crypto import tune_allocator
tune_allocator()
p = ferret.FERRET_B11
code = ferret.LocalLinearCode(p.n, p.k, p.d, b'k'*16)
rng = np.random.default_rng(1)
table = rng.integers(0, 2**63, size=(p.k, 2), dtype=np.uint64)
R = 1 << 18
out = np.zeros((R, 2), np.uint64)
def t(f, n=7):
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    return best
ref = out.copy(); code.mul_xor(table, 0, ref)
_U64 = np.uint64
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
def halves(table, j0, out, m):
    lo = np.ascontiguousarray(table[:, 0]); hi = np.ascontiguousarray(table[:, 1])
    n_rows = out.shape[0]; d = code.d
    streams = []
    for l in range(d):
        blk, off = divmod(l * code.n + j0, 4)
        enc = Cipher(algorithms.AES(code.seed), modes.CTR(blk.to_bytes(16, "big"))).encryptor()
        if off: enc.update(bytes(4 * off))
        streams.append(enc)
    raw = np.empty((d, 4 * m + 16), np.uint8)
    idx = np.empty((d, m), np.intp)
    g = np.empty((d, m), _U64)
    r = np.empty(m, _U64)
    for a in range(0, n_rows, m):
        b = min(n_rows, a + m); mm = b - a
        z = ferret._zero_bytes(4 * mm)
        for l, enc in enumerate(streams):
            enc.update_into(z, memoryview(raw[l]))
        w = raw[:, : 4 * mm].view(np.uint32) if mm == m else None
        ix = idx[:, :mm]
        code._columns(w, ix)
        for half, tab in ((0, lo), (1, hi)):
            gm = g[:, :mm]
            np.take(tab, ix, out=gm, mode="clip")
            np.bitwise_xor.reduce(gm, axis=0, out=r[:mm])
            out[a:b, half] ^= r[:mm]
for m in (1024, 2048, 4096, 8192):
    o = np.zeros((R, 2), np.uint64); halves(table, 0, o, m); assert (o == ref).all()
    print('halves', m, '%.1f ns/row' % (1e9 * t(lambda: halves(table, 0, out, m)) / R))
print('base %.1f ns/row' % (1e9 * t(lambda: code.mul_xor(table, 0, out)) / R))
