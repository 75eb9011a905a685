"""Semi-honest Gaussian lattice sessions at N = 16,384, d = 351 (in-process pair), timed: python semi_sessions.py ROOT COUNT
(ROOT: the checkout whose code runs; the sessions of one process run back to back)."""
import sys, time
root = sys.argv[1]; sys.path.insert(0, root)
from bench.synthetic import synthetic_model, synthetic_queries
from bench.malicious_cost import _pair
from protocols.krr import ServedModel, gaussian, predict_features, serve_one
model, rng = synthetic_model(16384, 351, 74.0, seed=0)
Q = synthetic_queries(model, rng, 1)
served = ServedModel(model, security="semi-honest"); served.public.cross_term = "he"; served.public.validate()
gaussian.prepare_server(model, served.public)
out = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); _pair(lambda c: serve_one(served, c), lambda c: predict_features(c, Q)); out.append(time.perf_counter() - t)
print(root, " ".join(f"{x:.3f}" for x in out), "load", open("/proc/loadavg").read().split()[0], gaussian.__file__)
