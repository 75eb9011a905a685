"""Query budgets and rate limits: persistent across ledger instances (server restarts) and
processes, atomic under concurrency, clear refusals."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from secureml.serving.ledger import QueryLedger, QueryRefused


def test_budget_holds_across_sessions_and_a_restart(tmp_path):
    path = tmp_path / "ledger.sqlite"
    led = QueryLedger(path, budget=300)
    assert led.admit("alice", 256) == 44
    with pytest.raises(QueryRefused, match="used 256 of 300 answers and asked for 100"):
        led.admit("alice", 100)
    assert led.admit("bob", 256) == 44  # budgets are per client
    del led
    restarted = QueryLedger(path, budget=300)  # a new server process opens the same file
    assert restarted.usage("alice")["used"] == 256
    assert restarted.check("alice", 45) is not None and restarted.check("alice", 44) is None
    restarted.admit("alice", 44)
    with pytest.raises(QueryRefused, match="budget exhausted"):
        restarted.admit("alice", 1)


def test_budget_shared_with_another_process(tmp_path):
    path = tmp_path / "ledger.sqlite"
    code = (f"from secureml.serving.ledger import QueryLedger; QueryLedger({str(path)!r}, budget=10)"
            ".admit('carol', 7)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with pytest.raises(QueryRefused):
        QueryLedger(path, budget=10).admit("carol", 4)


def test_concurrent_admissions_never_overspend(tmp_path):
    led = QueryLedger(tmp_path / "l.sqlite", budget=50)
    ok, refused = [], []

    def worker():
        for _ in range(10):
            try:
                led.admit("dave", 3)
                ok.append(3)
            except QueryRefused:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ok) == 48 and led.usage("dave")["used"] == 48 and len(refused) == 40 - 16


def test_rate_limit_token_bucket():
    now = [1000.0]
    led = QueryLedger(":memory:", rate=60, clock=lambda: now[0])  # one answer per second, burst 60
    led.admit("eve", 60)
    with pytest.raises(QueryRefused, match="retry in 10 s"):
        led.admit("eve", 10)
    now[0] += 10.0
    led.admit("eve", 10)
    with pytest.raises(QueryRefused, match="at most 60 answers per minute"):
        led.admit("eve", 61)
    assert led.usage("eve")["used"] == 70 and led.usage("eve")["left"] is None


def test_rate_limit_survives_restart(tmp_path):
    now = [0.0]
    path = tmp_path / "r.sqlite"
    QueryLedger(path, rate=30, clock=lambda: now[0]).admit("frank", 30)
    with pytest.raises(QueryRefused, match="rate limit"):
        QueryLedger(path, rate=30, clock=lambda: now[0]).admit("frank", 1)


def test_bad_settings():
    from secureml.errors import SecureMLError

    with pytest.raises(SecureMLError):
        QueryLedger(":memory:", rate=0)
    assert QueryLedger(":memory:", budget=5).check("x", 0) is not None
