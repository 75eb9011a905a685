"""protocols.mpc.pages: numpy's huge-page hint off for the process, unless the environment names it."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.mpc import pages

hint = pytest.importorskip("numpy._core.multiarray")


def _count_calls(monkeypatch, module) -> list[int]:
    """Record the thread of every call of ``module.prefer_small_pages`` (the real one still runs)."""
    calls: list[int] = []
    real = module.prefer_small_pages

    def record() -> bool:
        calls.append(threading.get_ident())
        return real()
    monkeypatch.setattr(module, "prefer_small_pages", record)
    return calls


@pytest.fixture
def restore_hint():
    before = hint._get_madvise_hugepage()
    yield
    hint._set_madvise_hugepage(before)


def test_prefer_small_pages_turns_the_hint_off(monkeypatch, restore_hint):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    hint._set_madvise_hugepage(True)
    assert pages.prefer_small_pages() is False
    assert hint._get_madvise_hugepage() is False
    # arrays still work as before (the hint changes no content)
    a = np.arange(1 << 20, dtype=np.uint64)
    assert int(a.sum()) == (1 << 20) * ((1 << 20) - 1) // 2


def test_an_explicit_environment_setting_wins(monkeypatch, restore_hint):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    hint._set_madvise_hugepage(True)
    assert pages.prefer_small_pages() is True


def test_laplacian_server_and_session_turn_the_hint_off(monkeypatch, restore_hint):
    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel, laplacian
    from protocols.testing import run_krr_session

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    rng = np.random.default_rng(3)
    X = np.round(rng.uniform(0, 20, (24, 5)) * 4) / 4
    model = KernelModelParams(X, rng.normal(0, 10, 24), 1.5, "laplacian", 30.0)
    served = ServedModel(model, security="semi-honest")
    hint._set_madvise_hugepage(True)
    laplacian.prepare_server(model, served.public)
    assert hint._get_madvise_hugepage() is False
    hint._set_madvise_hugepage(True)
    calls = _count_calls(monkeypatch, laplacian)
    preds, *_ = run_krr_session(served, X[:2] + 0.25, seed=7)  # online() on both parties
    assert hint._get_madvise_hugepage() is False
    assert len(calls) >= 2 and len(set(calls)) == 2  # both parties' threads, not only prepare_server's
    np.testing.assert_allclose(preds, model.predict(X[:2] + 0.25), atol=1e-3)


def test_client_malicious_laplacian_session_turns_the_hint_off(monkeypatch, restore_hint):
    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel, laplacian_strict
    from protocols.testing import run_krr_session

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    rng = np.random.default_rng(4)
    X = np.round(rng.uniform(0, 20, (16, 5)) * 4) / 4
    model = KernelModelParams(X, rng.normal(0, 10, 16), -2.0, "laplacian", 30.0)
    served = ServedModel(model, frac_bits=4)  # client-malicious, the API's default
    assert served.public.security == "client-malicious"
    hint._set_madvise_hugepage(True)
    assert served.public.laplacian_chain == "bound"  # the default since protocol 42: laplacian_strict
    calls = _count_calls(monkeypatch, laplacian_strict)
    preds, *_ = run_krr_session(served, X[:2] + 0.5, seed=9)  # laplacian_strict.online, both parties
    assert hint._get_madvise_hugepage() is False
    assert len(calls) >= 2 and len(set(calls)) == 2  # both parties' threads
    np.testing.assert_allclose(preds, model.predict(X[:2] + 0.5), atol=1e-3)


@pytest.mark.parametrize("security,module_name", [("semi-honest", "gaussian"), ("client-malicious", "gaussian_malicious")])
def test_gaussian_sessions_turn_the_hint_off(monkeypatch, restore_hint, security, module_name):
    import importlib

    from protocols.common import KernelModelParams
    from protocols.krr import ServedModel
    from protocols.testing import run_krr_session

    module = importlib.import_module(f"protocols.krr.{module_name}")
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    rng = np.random.default_rng(5)
    X = np.round(rng.uniform(0, 20, (16, 5)) * 4) / 4
    model = KernelModelParams(X, rng.normal(0, 10, 16), 0.5, "gaussian", 30.0)
    served = ServedModel(model, security=security)
    hint._set_madvise_hugepage(True)
    calls = _count_calls(monkeypatch, module)
    preds, *_ = run_krr_session(served, X[:1] + 0.25, seed=9)
    assert hint._get_madvise_hugepage() is False
    assert len(set(calls)) == 2  # both parties' threads
    np.testing.assert_allclose(preds, model.predict(X[:1] + 0.25), atol=1e-3)
