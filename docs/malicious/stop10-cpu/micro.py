"""The rewritten functions of "Gaussian CPU, no wire change (stop 10)" against main's (BASE: a
checkout of main at the branch point), alternating in one process, best of ``--reps``; each pair
is checked equal first. From the branch's root:
    PYTHONPATH=. nice python docs/malicious/stop10-cpu/micro.py BASE [--reps 5] [--out micro.json]
"""
import argparse, importlib.util, json, sys, time
import numpy as np


def load(base: str, rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, f"{base}/{rel}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def best(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return min(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from protocols.mpc import bfv_proof, rlwe
    from protocols.mpc.randomness import SecureRandom
    from protocols.ot.crypto import FixedKeyAES
    old_rlwe = load(args.base, "protocols/mpc/rlwe.py", "old_rlwe")
    old_bfv = load(args.base, "protocols/mpc/bfv_proof.py", "old_bfv")
    old_crypto = load(args.base, "protocols/ot/crypto.py", "old_crypto")
    ring, r = rlwe.ring(), np.random.default_rng(0)
    k, n = ring.k, ring.n
    rows = []

    def pair(name, old, new, same):
        assert same(old(), new()), name
        to, tn = [], []
        for _ in range(args.reps):
            to.append(best(old, 1)); tn.append(best(new, 1))
        rows.append({"what": name, "main_ms": round(1e3 * min(to), 2), "branch_ms": round(1e3 * min(tn), 2)})
        print(f"{name:58s} main {1e3 * min(to):8.2f} ms  branch {1e3 * min(tn):8.2f} ms")

    eq = lambda a, b: bool(np.array_equal(a, b))
    a = r.integers(0, 1 << 50, (k, n), dtype=np.uint64) % ring.p
    tgt = np.arange(138) * 59 + 58
    pair("c0 at the 138 targets: intt(a)[:, tgt] / intt_at(a, tgt)", lambda: ring.intt(a)[:, tgt],
         lambda: ring.intt_at(a, tgt), eq)
    lazy = r.integers(-9 * (1 << 49), 9 * (1 << 49), (k, n))
    pair("inverse transform of a lazy sum (canonical first / not)", lambda: ring.intt(ring.canonical(lazy.copy())),
         lambda: ring.intt(lazy), eq)
    u = np.broadcast_to(r.integers(-1, 2, n), (k, n))
    pair("NTT of the server's ternary u", lambda: ring.ntt(u), lambda: ring.ntt(u, ternary=True), eq)
    msgs = r.integers(0, 1 << 23, (6, 59))
    pair("client_encrypt (key + 6 ciphertexts)",
         lambda: old_bfv.client_encrypt(ring, SecureRandom(b"k" * 16), b"s" * 16, msgs, 56)[:2],
         lambda: bfv_proof.client_encrypt(ring, SecureRandom(b"k" * 16), b"s" * 16, msgs, 56)[:2],
         lambda x, y: all(np.array_equal(p, q) for p, q in zip(x, y)))
    T = bfv_proof.witness_count(ring, 6) + 351 * 23
    A = r.integers(0, 1 << 50, (T, k), dtype=np.uint64)
    m = (r.integers(0, 1 << 63, T, dtype=np.uint64), r.integers(0, 1 << 63, T, dtype=np.uint64))
    pair("the proof's MAC combination (368,640 x 4)", lambda: old_bfv._combine_macs(A, m),
         lambda: bfv_proof._combine_macs(A, m), lambda x, y: eq(x[0], y[0]) and eq(x[1], y[1]))
    pair("Ring(8192) tables (a client's first session)", lambda: old_rlwe.Ring(8192).twist,
         lambda: rlwe.Ring(8192).twist, eq)
    kk = 16384
    p0, p1 = (r.integers(0, 1 << 63, (kk, 5, 2), dtype=np.uint64) for _ in range(2))
    lows = np.arange(kk, dtype=np.uint64)
    aes_old, aes_new = old_crypto.FixedKeyAES(bytes(range(16))), FixedKeyAES(bytes(range(16)))
    pair("tree_pads, sender, 16,384 tables of 2^5 x 3 blocks", lambda: aes_old.tree_pads(p0, p1, lows, 5, 3),
         lambda: aes_new.tree_pads(p0, p1, lows, 5, 3), eq)
    load1 = float(open("/proc/loadavg").read().split()[0])
    print(f"load {load1}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "loadavg_1m": load1}, f, indent=1)


if __name__ == "__main__":
    main()
