"""Correlation providers: OT-based triples (default) and the tests-only dealer."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from protocols.mpc.providers import (
    InsecureProviderError,
    OTCorrelationProvider,
    TrustedDealerProviderForTests,
)
from protocols.mpc.sharing import beaver_mul
from protocols.testing import dealer_provider, run_two_party

U64 = np.uint64


def _check_arith(r0, r1) -> None:
    a, b, c = (r0[i] + r1[i] for i in range(3))
    assert np.array_equal(a * b, c)


def _check_bool(r0, r1) -> None:
    a, b, c = (r0[i] ^ r1[i] for i in range(3))
    assert np.array_equal(a & b, c)


def test_default_provider_is_ot_and_triples_hold() -> None:
    def party(p):
        assert isinstance(p.provider, OTCorrelationProvider)
        t = p.provider.triples(1000)
        bt = p.provider.bool_triples(1000)
        return t, bt, p.provider.n_triples, p.provider.n_bool_triples

    r0, r1 = run_two_party(party, party, seed=7)
    _check_arith(r0[0], r1[0])
    _check_bool(r0[1], r1[1])
    assert r0[2] == 1000 and r0[3] == 1000
    # shares and triple values are uniform
    for s in (r0[0][0], r1[0][2], r0[0][0] + r1[0][0]):
        assert stats.chisquare(np.bincount((s >> U64(60)).astype(int), minlength=16)).pvalue > 1e-4
    a = r0[1][0] ^ r1[1][0]
    assert stats.binomtest(int(a.sum()), a.size).pvalue > 1e-3


def test_dealer_triples_hold_and_need_no_messages() -> None:
    res = run_two_party(
        lambda p: (p.provider.triples(500), p.provider.bool_triples(500)),
        lambda p: (p.provider.triples(500), p.provider.bool_triples(500)),
        provider=dealer_provider(9),
    )
    _check_arith(res[0][0], res[1][0])
    _check_bool(res[0][1], res[1][1])
    assert res.parties[0].ch.bytes_sent == 0 and res.parties[1].ch.bytes_sent == 0


def test_dealer_refuses_unless_enabled(monkeypatch) -> None:
    monkeypatch.delenv("SECUREML_ALLOW_TEST_DEALER", raising=False)

    class _P:
        role = 0

    with pytest.raises(InsecureProviderError, match="tests only"):
        TrustedDealerProviderForTests(_P(), seed=1)  # type: ignore[arg-type]
    monkeypatch.setenv("SECUREML_ALLOW_TEST_DEALER", "1")
    assert TrustedDealerProviderForTests(_P(), seed=1).name == "dealer-tests-only"  # type: ignore[arg-type]


def test_providers_interchangeable_for_beaver_mul() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**64, 200, dtype=U64)
    y = rng.integers(0, 2**64, 200, dtype=U64)
    xs = (rng.integers(0, 2**64, 200, dtype=U64),)
    xs = (xs[0], x - xs[0])
    ys = (y, np.zeros_like(y))
    for provider in (None, dealer_provider(3)):
        z0, z1 = run_two_party(
            lambda p: beaver_mul(p, xs[p.role], ys[p.role]),
            lambda p: beaver_mul(p, xs[p.role], ys[p.role]),
            provider=provider,
        )
        assert np.array_equal(z0 + z1, x * y)
