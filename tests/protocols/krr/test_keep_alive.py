"""Kept-alive connections (protocols.net.frontdoor step 8, protocols.krr.client ``keep_alive``):
a client's next session on the connection of its last one, over real TCP against
``protocols.krr.serve`` (in a thread of this process; client patches act on this thread only).

What is checked: the same predictions as on new connections, one connection for several
sessions, per-session counts (rounds, bytes), an idle kept connection holding no slot (a second
client is served at concurrency 1), per-session budgets and abort counts on one connection,
single-use masks and re-randomisations across kept sessions, the idle timeout, old (non
keep-alive) clients and old protocol versions.
"""
from __future__ import annotations

import select
import socket
import threading
from dataclasses import replace

import numpy as np
import pytest

from protocols.krr import ServedModel, close_kept_connections, linear_he, molecules_featurizer, predict
from protocols.krr import client as client_mod
from protocols.krr.handshake import client_hello_message
from protocols.krr.params import PROTOCOL_VERSION
from protocols.mpc import rlwe_ip
from protocols.net.dial import ServerBusy, ServerRefused, open_session
from protocols.net.limits import DEFAULT_LIMITS
from protocols.net.transport import PeerDisconnected
from secureml.errors import SecureMLError
from tests.protocols.krr.compact import ERROR_BUDGET, rff_model_and_queries


@pytest.fixture(scope="module")
def rff_model():
    return rff_model_and_queries(4)


@pytest.fixture(autouse=True)
def _no_kept_connections(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    close_kept_connections()
    yield
    close_kept_connections()


class _Server:
    """``protocols.krr.serve`` on a free loopback port in a daemon thread until :meth:`stop`."""

    def __init__(self, served, **kw) -> None:
        from protocols.krr import serve

        self.stop_event, ports = threading.Event(), []
        self.thread = threading.Thread(target=serve, args=(served, "127.0.0.1", 0),
                                       kwargs=dict(on_ready=ports.append, stop=self.stop_event, **kw), daemon=True)
        self.thread.start()
        while not ports:
            threading.Event().wait(0.01)
        self.address = f"127.0.0.1:{ports[0]}"

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture()
def connects(monkeypatch):
    """Counts the client's TCP connects (the server accepts, it never calls create_connection)."""
    calls: list[tuple] = []
    real = socket.create_connection

    def spy(address, *a, **kw):
        calls.append(address)
        return real(address, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", spy)
    return calls


def _kept_socket(address: str):
    host, port = address.rsplit(":", 1)
    hit = [ch for key, (ch, _) in client_mod._KEPT.items() if key[:2] == (host, int(port))]
    return hit[0] if hit else None


@pytest.mark.parametrize("security", ["semi-honest", "client-malicious"])
def test_kept_alive_sessions_equal_fresh_ones_on_one_connection(rff_model, connects, security):
    """Four sessions with keep-alive use one connection and give the predictions that four
    sessions on new connections give (both within the fixed-point budget of plaintext); every
    kept session is counted on its own (rounds, bytes) -- the lattice path's early data still
    takes 2 rounds, the OT path's resumed sessions the same rounds as on new connections."""
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security=security)
    srv = _Server(served)
    try:
        kept = [predict(srv.address, featurize=molecules_featurizer(test.subset([i]))) for i in range(4)]
        n_kept = len(connects)
        fresh = [predict(srv.address, featurize=molecules_featurizer(test.subset([i])), keep_alive=False)
                 for i in range(4)]
    finally:
        srv.stop()
    assert n_kept == 1 and len(connects) == 5  # one for the kept sessions, one per fresh session
    plain = mm.predict(test)
    p_kept, p_fresh = np.r_[[p for p, _ in kept]].ravel(), np.r_[[p for p, _ in fresh]].ravel()
    np.testing.assert_allclose(p_kept, plain, atol=ERROR_BUDGET)
    np.testing.assert_allclose(p_fresh, plain, atol=ERROR_BUDGET)
    np.testing.assert_allclose(p_kept, p_fresh, atol=1e-4)  # the same fixed-point result, up to lattice noise
    assert [c.extra.get("kept_alive") for _, c in kept] == [False, True, True, True]
    assert not any(c.extra.get("kept_alive") for _, c in fresh)
    # per-session counts on the kept connection equal those of the same session kind on a new one
    assert [c.rounds for _, c in kept[2:]] == [c.rounds for _, c in fresh[2:]]
    if security == "semi-honest":
        assert kept[2][1].rounds == 2 and kept[2][1].extra["early_data"]
    for (_, a), (_, b) in zip(kept[2:], fresh[2:]):
        assert abs(a.bytes_sent - b.bytes_sent) < 64 and abs(a.bytes_received - b.bytes_received) < 64


def test_an_idle_kept_connection_does_not_block_a_second_client(rff_model, connects):
    """At concurrency 1, a client's kept connection idles between sessions holding no slot: a
    second client (no retries; a held slot would make it wait queue_wait_s and fail "busy",
    since the kept connection idles up to idle_s = 60 s) is served, and the first client's next
    session still runs on its kept connection (it may queue briefly: the server releases the
    slot only after its post-reply work)."""
    mm, test = rff_model
    limits = replace(DEFAULT_LIMITS, queue_wait_s=3.0, max_queue=1)
    srv = _Server(ServedModel.from_molecular_model(mm, security="semi-honest"), concurrency=1, limits=limits)
    try:
        _, c1 = predict(srv.address, featurize=molecules_featurizer(test.subset([0])))
        assert _kept_socket(srv.address) is not None  # idling now
        p2, c2 = predict(srv.address, featurize=molecules_featurizer(test.subset([1])), keep_alive=False, retries=0)
        p3, c3 = predict(srv.address, featurize=molecules_featurizer(test.subset([2])))
    finally:
        srv.stop()
    assert abs(p2[0] - mm.predict(test.subset([1]))[0]) < ERROR_BUDGET
    assert abs(p3[0] - mm.predict(test.subset([2]))[0]) < ERROR_BUDGET
    assert not c2.extra.get("kept_alive") and c3.extra["kept_alive"] and len(connects) == 2


def test_budgets_and_aborts_count_per_session_on_one_connection(rff_model, tmp_path, connects, monkeypatch):
    """A kept connection's sessions are admitted one by one: a per-client budget of 2 queries
    serves two sessions on it and refuses the third (code budget); and a client-malicious session
    on a kept connection that fails its check is counted as an abort, ends the connection, and the
    client's next session is refused once its aborts are used up."""
    from protocols.krr.server import AbortCounter
    from protocols.net.frontdoor import admit_hook
    from protocols.ot import consistency
    from secureml.serving.ledger import QueryLedger

    mm, test = rff_model
    ledger = QueryLedger(tmp_path / "ledger.sqlite", budget=2)
    srv = _Server(ServedModel.from_molecular_model(mm, security="semi-honest"), admit=admit_hook(ledger))
    try:
        for i in range(2):
            predict(srv.address, featurize=molecules_featurizer(test.subset([i])))
        assert len(connects) == 1
        with pytest.raises(ServerRefused) as err:
            predict(srv.address, featurize=molecules_featurizer(test.subset([2])), retries=0)
        assert err.value.code == "budget"
    finally:
        srv.stop()

    aborts = AbortCounter(1)
    srv = _Server(ServedModel.from_molecular_model(mm), aborts=aborts)  # client-malicious: the checked OT path
    connects.clear()
    try:
        p1, _ = predict(srv.address, featurize=molecules_featurizer(test.subset([0])))
        assert _kept_socket(srv.address) is not None
        # the deviation: the client (the OT receiver) sends a wrong consistency proof; only the
        # client calls receiver_proof, the server verifies it and aborts
        real = consistency.receiver_proof
        bad = {"n": 0}

        def wrong_proof(*a, **kw):
            bad["n"] += 1
            proof = np.array(real(*a, **kw), copy=True)
            proof[0] ^= 1
            return proof

        monkeypatch.setattr(consistency, "receiver_proof", wrong_proof)
        # with the checked OT pool (protocol 22) session 2 spends OTs proved in the refill after
        # session 1's reply; its own wrong proof belongs to the refill after its reply, which the
        # server rejects (and counts) before any of those OTs is spent
        p2, _ = predict(srv.address, featurize=molecules_featurizer(test.subset([1])), retries=0)
        monkeypatch.undo()
        assert abs(p2[0] - mm.predict(test.subset([1]))[0]) < ERROR_BUDGET
        assert bad["n"] >= 1 and aborts.count("ip:127.0.0.1") == 1
        assert len(connects) == 1  # the deviating session ran on the kept connection
        with pytest.raises(ServerRefused, match="failed 1 protocol checks"):
            predict(srv.address, featurize=molecules_featurizer(test.subset([2])), retries=0)
    finally:
        srv.stop()
    assert abs(p1[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET


def test_masks_and_rerandomisations_stay_single_use_on_a_kept_connection(rff_model, connects, monkeypatch):
    """A deviating client announces the same seed of a in every kept session: the server answers
    each with its own re-randomisation (a fresh u; the one stored for that seed is taken once), and
    the client's own mask for a seed cannot encrypt twice. Honest kept sessions never send one seed
    of a twice."""
    mm, test = rff_model
    served = ServedModel.from_molecular_model(mm, security="semi-honest")
    srv = _Server(served)
    used: list[rlwe_ip.Rerandomised] = []
    real_finish = rlwe_ip.server_finish

    def spy_finish(pw, prep, *a, **kw):
        used.append(prep)
        return real_finish(pw, prep, *a, **kw)

    monkeypatch.setattr(rlwe_ip, "server_finish", spy_finish)
    sent: list[bytes] = []
    real_request = linear_he._request

    def spy_request(key, with_pk, cts, next_seed=None):
        sent.extend(seed for seed, _ in cts)
        return real_request(key, with_pk, cts, next_seed)

    monkeypatch.setattr(linear_he, "_request", spy_request)
    try:
        for i in range(3):  # honest kept sessions
            predict(srv.address, featurize=molecules_featurizer(test.subset([i])))
        assert len(sent) == len(set(sent)) == 3 and len(connects) == 1
        # the deviation: every hello announces one fixed seed and the first ciphertext uses it
        fixed = bytes(range(16))
        monkeypatch.setattr(linear_he, "hello_seed", lambda pp, key: fixed)
        monkeypatch.setattr(linear_he, "PREPARE_NEXT", False)
        preds = [predict(srv.address, featurize=molecules_featurizer(test.subset([3])))[0][0] for _ in range(2)]
    finally:
        srv.stop()
    assert len(connects) == 1  # all five sessions on the kept connection
    assert sent[-2:] == [fixed, fixed]
    # five answers, five distinct re-randomisations, each spent by its one answer
    assert len(used) == 5 and len({id(p) for p in used}) == 5 and all(p.spent for p in used)
    assert not np.array_equal(used[-1].top, used[-2].top)  # a fresh u for the repeated seed
    np.testing.assert_allclose(preds, mm.predict(test.subset([3, 3])), atol=ERROR_BUDGET)
    # and a client-side mask encrypts once
    key = rlwe_ip.ClientKey(linear_he.prepared(served).rp)
    mask = key.mask(fixed, rlwe_ip.SecureRandom())
    phi = np.zeros(served.public.n_features, dtype=np.int64)
    key.encrypt_with(mask, phi, 60)
    with pytest.raises(SecureMLError):
        key.encrypt_with(mask, phi, 60)


def test_an_idle_kept_connection_is_closed_after_the_idle_timeout(rff_model, connects):
    """The server closes a kept connection idle for ``idle_s``; the client notices before reusing
    it and starts its next session on a new connection."""
    mm, test = rff_model
    limits = replace(DEFAULT_LIMITS, idle_s=0.5)
    srv = _Server(ServedModel.from_molecular_model(mm, security="semi-honest"), limits=limits)
    try:
        predict(srv.address, featurize=molecules_featurizer(test.subset([0])))
        ch = _kept_socket(srv.address)
        assert ch is not None
        # the server's close arrives as end-of-stream (readable); bounded wait, not a timing assertion
        readable, _, _ = select.select([ch.sock], [], [], 20.0)
        assert readable and ch.sock.recv(1, socket.MSG_PEEK) == b""
        p, c = predict(srv.address, featurize=molecules_featurizer(test.subset([1])))
    finally:
        srv.stop()
    assert not c.extra.get("kept_alive") and len(connects) == 2
    assert abs(p[0] - mm.predict(test.subset([1]))[0]) < ERROR_BUDGET


def test_old_clients_and_old_versions(rff_model):
    """A hello without keep_alive (a client of this version that does not ask) is served as
    before and its connection closed after the session; a client of the previous version gets
    the clear version error."""
    from protocols.krr import predict_features

    mm, test = rff_model
    srv = _Server(ServedModel.from_molecular_model(mm, security="semi-honest"))
    try:
        host, port = srv.address.rsplit(":", 1)
        ch, reply = open_session(host, int(port), client_hello_message(1), retries=0)
        assert "keep_alive" not in reply
        preds, _, _ = predict_features(ch, featurize=molecules_featurizer(test.subset([0])), params=reply["params"])
        with pytest.raises(PeerDisconnected):  # the server closed it after the session
            ch.recv()
        ch.close()
        old = {**client_hello_message(1, keep_alive=True), "version": PROTOCOL_VERSION - 1}
        with pytest.raises(ServerRefused, match=f"protocol version mismatch: client speaks {PROTOCOL_VERSION - 1}, server {PROTOCOL_VERSION}"):
            open_session(host, int(port), old, retries=0)
    finally:
        srv.stop()
    assert abs(preds[0] - mm.predict(test.subset([0]))[0]) < ERROR_BUDGET


def test_a_server_without_keep_alive_closes_and_the_client_reconnects(rff_model, connects):
    """``serve(keep_alive=False)``: the hello's answer does not promise the connection, so the
    client keeps none and every session connects anew (same predictions)."""
    from protocols.krr import serve  # noqa: F401  (the keyword below is serve's)

    mm, test = rff_model
    srv = _Server(ServedModel.from_molecular_model(mm, security="semi-honest"), keep_alive=False)
    try:
        out = [predict(srv.address, featurize=molecules_featurizer(test.subset([i]))) for i in range(3)]
    finally:
        srv.stop()
    assert len(connects) == 3 and not any(c.extra.get("kept_alive") for _, c in out)
    np.testing.assert_allclose([p[0] for p, _ in out], mm.predict(test.subset([0, 1, 2])), atol=ERROR_BUDGET)
