"""Two `secureml serve` processes behind the sticky TCP balancer: correct answers, sticky routing,
round-robin spreading, failover when a server goes away."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from bench.serving_fuzz import small_model, start_server
from protocols.krr import predict
from protocols.net.balancer import Balancer, rendezvous_order


def test_rendezvous_order_is_stable_and_moves_only_removed_servers():
    b = [("10.0.0.1", 7000), ("10.0.0.2", 7000), ("10.0.0.3", 7000)]
    firsts = {ip: rendezvous_order(ip, b)[0] for ip in (f"192.168.0.{i}" for i in range(60))}
    assert len(set(firsts.values())) == 3  # spread
    kept = [x for x in b if x != b[0]]
    for ip, first in firsts.items():
        if first != b[0]:
            assert rendezvous_order(ip, kept)[0] == first  # unaffected clients stay


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("bal")
    model, test = small_model(d / "model.npz", n=64)
    Q = model.representation.transform(test)
    procs = [start_server(d / "model.npz", d / f"s{i}.log", []) for i in range(2)]
    yield procs, Q, model.estimator.predict(Q)
    for p, _ in procs:
        p.kill()


def _balancer(ports, sticky):
    bal = Balancer(("127.0.0.1", 0), [("127.0.0.1", p) for p in ports], sticky=sticky)
    threading.Thread(target=bal.serve_forever, daemon=True).start()
    return bal


def test_sticky_round_robin_and_failover(two_servers):
    procs, Q, expected = two_servers
    ports = [port for _, port in procs]
    rr = _balancer(ports, sticky=False)
    # the balancer routes connections: a kept-alive client's sessions share one (and one server),
    # so routing is observed with a new connection per session
    for _ in range(2):
        preds, _ = predict(f"127.0.0.1:{rr.port}", Q, keep_alive=False)
        np.testing.assert_allclose(preds, expected, atol=1e-2)
    assert sorted(rr.routed.values()) == [1, 1]
    rr.stop()
    st = _balancer(ports, sticky=True)
    for _ in range(2):
        preds, _ = predict(f"127.0.0.1:{st.port}", Q, keep_alive=False)
        np.testing.assert_allclose(preds, expected, atol=1e-2)
    used = [b for b, n in st.routed.items() if n]
    assert len(used) == 1 and st.routed[used[0]] == 2  # one client address: one server
    victim = next(p for p, port in procs if ("127.0.0.1", port) == used[0])
    victim.kill()
    victim.wait(10)
    preds, _ = predict(f"127.0.0.1:{st.port}", Q)  # the other server answers
    np.testing.assert_allclose(preds, expected, atol=1e-2)
    assert sum(st.routed.values()) == 3 and all(st.routed.values())
    st.stop()
