"""The checked lattice matvec alone at CM sizes (N = 16,384, d = 351): per-party thread CPU, wall,
a digest of both shares and a digest of every array the server sends (equal across versions = the
same outputs and the same reply bytes). From the checkout root:
    PYTHONPATH=. nice python docs/malicious/stop11-gcpu/checked_matvec.py [--pad] [--prof [sortkey]]
(docs/malicious/p35-cpu/checked_matvec.py with the sent-bytes digest added.) --pad: one reply pad made
before the session (he_matvec_checked.fill_pads, its CPU printed apart; fresh OS randomness, so the
digests then vary from run to run; the shares are still checked against X q).
"""
import sys, time, hashlib, cProfile, pstats, io
import numpy as np
from protocols.mpc import authenticated as au, he_matvec_checked as hc
from protocols.testing import checked_ot, run_two_party
CLIENT = 1
N, D = 16384, 351
from bench.synthetic import synthetic_model
from protocols.krr import ServedModel
model, rng = synthetic_model(N, D, 74.0, seed=0)
served = ServedModel(model, security="client-malicious"); pp = served.public
XB, M = pp.x_bits, pp.ring_bits
r = np.random.default_rng(1)
X = r.integers(0, 2 ** XB, (N, D), dtype=np.uint64); q = r.integers(0, 2 ** XB, D, dtype=np.uint64)
pm = hc.prepare(X, XB, M)
pad_cpu = None
if "--pad" in sys.argv:
    t = time.thread_time(); hc.fill_pads(pm, 1); pad_cpu = time.thread_time() - t
print("plan", pm.plan, file=sys.stderr)
prof = "--prof" in sys.argv
def bits(v): return ((v[:, None] >> np.arange(XB, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).ravel()
cpu = {}
sent = hashlib.sha256()
def server(p):
    send = p.ch.send_array
    def hashed(a, *args, **kw):
        sent.update(np.ascontiguousarray(a).tobytes())
        return send(a, *args, **kw)
    p.ch.send_array = hashed
    pads = au.random_choices(p, CLIENT, n=D * XB)
    pr = cProfile.Profile() if prof else None
    if pr: pr.enable()
    t = time.thread_time(); out = hc.matvec_sender(p, CLIENT, pm, q_pads=pads, domain=3); cpu["server"] = time.thread_time() - t
    if pr: pr.disable(); cpu["sprof"] = pr
    return out
def client(p):
    pads = au.random_choices(p, CLIENT, n=D * XB, choices=bits(q))
    pr = cProfile.Profile() if prof else None
    if pr: pr.enable()
    t = time.thread_time(); out = hc.matvec_receiver(p, CLIENT, q, XB, N, M, q_pads=pads, q_bits=bits(q), domain=3); cpu["client"] = time.thread_time() - t
    if pr: pr.disable(); cpu["cprof"] = pr
    return out
t0 = time.perf_counter()
s0, s1 = run_two_party(server, client, seed=5, setup=checked_ot)
wall = time.perf_counter() - t0
want = (X.astype(object) @ q.astype(object)) % (1 << M)
assert ((s0.astype(object) + s1.astype(object)) % (1 << M) == want).all()
print("digest", hashlib.sha256(s0.tobytes() + s1.tobytes()).hexdigest()[:16], "sent", sent.hexdigest()[:16],
      f"server {cpu['server']:.3f} client {cpu['client']:.3f} wall {wall:.3f}" + (f" pad {pad_cpu:.3f} (used {not pm.pads})" if pad_cpu is not None else "") + " load", open('/proc/loadavg').read().split()[0])
if prof:
    for k in ("sprof", "cprof"):
        s = io.StringIO(); pstats.Stats(cpu[k], stream=s).sort_stats(sys.argv[-1] if sys.argv[-1] != "--prof" else "cumulative").print_stats(40); print("=====", k); print(s.getvalue())
