"""Double-blind Gaussian KRR prediction with CKKS homomorphic encryption (SEAL via TenSEAL).

The query owner encrypts its representation under its own key and sends only evaluation keys;
the model owner evaluates distances, a polynomial exp and the weighted sum homomorphically and
returns a flooded, re-randomised answer that decrypts to the prediction alone.
See :mod:`protocols.baselines.fhe.engine` for the session and threat model, :mod:`protocols.baselines.fhe.server`
for the packing and circuit, :mod:`protocols.baselines.fhe.params` for parameters and the range check.

Engine API (shared with the other baselines)::

    serve_one(model, ch, **opts) -> CostReport
    predict(ch, queries) -> (predictions, CostReport)
    run_local(model, queries, **opts) -> (predictions, client CostReport, server CostReport)
"""
from protocols.baselines.fhe.engine import calibrate, predict, run_local, serve_one
from protocols.baselines.fhe.params import FHEParams, plan

__all__ = ["FHEParams", "calibrate", "plan", "predict", "run_local", "serve_one"]
