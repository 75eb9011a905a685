"""Protocol 39 review: a client-malicious session of any kind never hashes an OT output with the
one-call CCR hash (protocols.ot.crypto, "One-call hash") -- only TCCR -- on either party and
either OT direction, including resumed OT sessions (tickets), their random-OT pools and kept-alive
connections; a semi-honest session of the exact kernels does use it (so the probe sees it).

The probe wraps FixedKeyAES's hash methods at class level (both parties' threads) and counts the
calls; it calls the real methods, so the sessions' outputs are checked as usual."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, close_kept_connections, molecules_featurizer, predict
from protocols.mpc.party import Party
from protocols.ot.crypto import FixedKeyAES
from protocols.testing import checked_ot, run_krr_session, run_two_party
from tests.protocols.krr.compact import ERROR_BUDGET, rff_model_and_queries
from tests.protocols.krr.test_keep_alive import _Server

CCR = ("ccr_bits", "ccr_word", "ccr_block", "ccr_pair")
TCCR = ("tccr", "tccr_bits", "tccr_word")


@pytest.fixture()
def calls(monkeypatch):
    """{method name: calls} for the hash methods of every FixedKeyAES, every thread."""
    got = {name: 0 for name in CCR + TCCR}
    lock = threading.Lock()

    def wrap(name):
        real = getattr(FixedKeyAES, name)

        def counted(self, *a, **kw):
            with lock:
                got[name] += 1
            return real(self, *a, **kw)

        return counted

    for name in CCR + TCCR:
        monkeypatch.setattr(FixedKeyAES, name, wrap(name))
    return got


def _exact(kernel: str, security: str, engine: str) -> tuple[ServedModel, np.ndarray, float]:
    rng = np.random.default_rng(0)  # as test_transcript_pin's model
    X = np.round(rng.uniform(0, 20, (12, 5)) * 4) / 4
    params = KernelModelParams(X, rng.normal(0, 50, 12), -3.0, kernel, 20.0)
    served = ServedModel(params, frac_bits=2 if kernel == "laplacian" else None, security=security)
    if kernel == "laplacian":  # this small model gets SoftSpoken by default
        served.public.ot_engine = engine
    q = X[:1] + 0.25
    return served, q, float(params.predict(q)[0])


@pytest.mark.parametrize("kernel,engine", [("gaussian", "softspoken"), ("laplacian", "softspoken"),
                                           ("laplacian", "silent")])
def test_exact_kernel_sessions_hash_with_tccr_only_when_client_malicious(calls, kernel, engine):
    served, q, want = _exact(kernel, "semi-honest", engine)
    preds, *_ = run_krr_session(served, q, timeout=60, seed=3)
    assert abs(preds[0] - want) < 1e-2
    assert sum(calls[n] for n in CCR) > 0, calls  # the semi-honest engines' one-block outputs

    for n in calls:
        calls[n] = 0
    served, q, want = _exact(kernel, "client-malicious", engine)
    preds, *_ = run_krr_session(served, q, timeout=60, seed=3)
    assert abs(preds[0] - want) < 1e-2
    assert sum(calls[n] for n in CCR) == 0, calls
    assert sum(calls[n] for n in TCCR) > 0, calls


def test_linear_client_malicious_resumed_and_kept_alive_sessions_hash_with_tccr_only(calls, tmp_path, monkeypatch):
    """Three client-malicious compact sessions on one kept-alive connection: the first makes the OT
    ticket (and its checked random-OT pool), the next two resume it and spend / refill the pool."""
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    close_kept_connections()
    mm, test = rff_model_and_queries(3)
    served = ServedModel.from_molecular_model(mm, security="client-malicious")
    srv = _Server(served)
    try:
        out = [predict(srv.address, featurize=molecules_featurizer(test.subset([i]))) for i in range(3)]
    finally:
        srv.stop()
        close_kept_connections()
    assert [c.extra.get("kept_alive") for _, c in out] == [False, True, True]
    assert all(c.extra.get("resumed") for _, c in out[1:]), [c.extra for _, c in out]
    np.testing.assert_allclose(np.r_[[p for p, _ in out]].ravel(), mm.predict(test.subset([0, 1, 2])),
                               atol=ERROR_BUDGET)
    assert sum(calls[n] for n in CCR) == 0, calls
    assert sum(calls[n] for n in TCCR) > 0


def test_testing_checked_ot_keeps_tccr_on_both_directions_as_a_session_does():
    """protocols.testing.checked_ot (the client-malicious set-up of many protocol tests) checks the
    client-chooses direction and, as _setup_exact_ot, keeps TCCR on the other one: before this
    review the other direction was made on first use with the one-call hash."""

    def side(p: Party):
        return (p.ot_sender.checked, p.ot_receiver.checked, p.ot_sender.uses_tccr, p.ot_receiver.uses_tccr)

    r0, r1 = run_two_party(side, side, seed=5, setup=checked_ot, timeout=30)
    assert r0 == (True, False, True, True)
    assert r1 == (False, True, True, True)

    # and the unchecked direction still works (both sides hash alike): random bit OTs client -> server
    c = np.random.default_rng(1).integers(0, 2, 500).astype(np.uint8)
    r0, r1 = run_two_party(lambda p: p.ot_receiver.random_bit_ot(c), lambda p: p.ot_sender.random_bit_ot(500),
                           seed=5, setup=checked_ot, timeout=30)
    m0, m1 = r1
    np.testing.assert_array_equal(r0, np.where(c.astype(bool), m1, m0))
