# Tried and not kept (branch lapsh, docs/double-blind.md 'Semi-honest Laplacian CPU'); run from the repository root:
#   python docs/double-blind/v33/tried/lpn_secret_hugepage.py
import time, numpy as np, sys, mmap, ctypes
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
def t(f, n=9):
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    return best
HP = 1 << 21
def huge_array(nbytes):
    size = -(-nbytes // HP) * HP
    mm = mmap.mmap(-1, size + HP, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    off = (-addr) % HP
    mm.madvise(mmap.MADV_HUGEPAGE, off, size)
    arr = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=off)
    return arr, mm
buf, mm = huge_array(table.nbytes)
t2 = buf.view(np.uint64).reshape(p.k, 2)
t2[...] = table
ref = out.copy(); code.mul_xor(table, 0, ref)
o2 = out.copy(); code.mul_xor(t2, 0, o2); assert (o2 == ref).all()
import subprocess
print(subprocess.run(['grep', 'AnonHuge', '/proc/%d/smaps_rollup' % __import__('os').getpid()], capture_output=True, text=True).stdout)
for _ in range(3):
    print('base %.1f ns/row' % (1e9 * t(lambda: code.mul_xor(table, 0, out)) / R))
    print('huge %.1f ns/row' % (1e9 * t(lambda: code.mul_xor(t2, 0, out)) / R))
