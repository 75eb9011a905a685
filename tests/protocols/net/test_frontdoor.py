"""The front door under attack: idle, trickling, nested, oversized, unauthenticated and busy
clients, each beside an honest client that must still be served (real TCP, one server thread)."""
from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from bench.serving_load import hold_connections
from protocols.net import pki
from protocols.net.dial import ServerBusy, ServerRefused, open_session
from protocols.net.frontdoor import AuditLog, Authenticator, FrontDoor, Refused, hash_token
from protocols.net.limits import Limits
from protocols.net.transport import ConnectFailed, ProtocolTimeout, frame, listen
from secureml.errors import ProtocolError

HELLO = {"protocol": "echo", "version": 1, "n_queries": 1}


def _precheck(hello):
    if hello.get("protocol") != "echo":
        raise ProtocolError("not an echo client")
    return int(hello.get("n_queries", 1)), 20.0


class Echo:
    """Toy protocol: ok, then the client's array comes back doubled. Counts handler calls."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.calls = 0
        self.hold = hold
        self.ids: list = []

    def __call__(self, ch, hello, ctx):
        self.calls += 1
        self.ids.append(ctx.client_id)
        ch.send_json({"ok": True, "params": {}})
        if self.hold is not None:
            self.hold.wait(10)
        a = ch.recv_array(np.float64, (None,))
        ch.send_array(2 * a)
        ctx.cost["wall_s"] = 0.0


@contextmanager
def server(handler=None, **kw):
    srv = listen("127.0.0.1", 0, backlog=1024)
    port = srv.getsockname()[1]
    handler = handler or Echo()
    door = FrontDoor(handler, _precheck, **kw)
    stop = threading.Event()
    t = threading.Thread(target=door.serve_forever, args=(srv, stop), daemon=True)
    t.start()
    try:
        yield port, handler, door
    finally:
        stop.set()
        t.join(10)
        srv.close()


def honest(port, **kw):
    t0 = time.monotonic()
    ch, _ = open_session("127.0.0.1", port, dict(HELLO, **kw.pop("hello", {})), handshake_timeout=5, **kw)
    x = np.arange(5.0)
    ch.send_array(x)
    y = ch.recv_array(np.float64, (5,))
    ch.close()
    assert np.array_equal(y, 2 * x)
    return time.monotonic() - t0


FAST = Limits(handshake_s=2.0, idle_s=2.0, min_rate=10_000)


def test_idle_and_slow_connections_do_not_delay_an_honest_client():
    with server(limits=FAST, concurrency=2) as (port, h, door):
        base = min(honest(port) for _ in range(3))
        stop = threading.Event()
        held, _ = hold_connections(port, idle=100, slow=100, stop=stop, every=0.3)
        time.sleep(0.5)
        try:
            took = [honest(port) for _ in range(3)]
        finally:
            stop.set()
            for s in held:
                s.close()
        assert max(took) < base + 1.0, (base, took)
        assert h.calls == 6  # the 200 bad connections never reached the protocol


def test_idle_and_trickling_connections_are_cut_at_the_handshake_deadline():
    with server(limits=Limits(handshake_s=0.5)) as (port, _, door):
        idle = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        slow.settimeout(3)
        idle.settimeout(3)
        for _ in range(20):  # one byte every 0.1 s restarts no timer
            try:
                slow.send(b"\x00")
            except OSError:
                break
            time.sleep(0.1)
        assert idle.recv(10) == b""  # closed by the server
        assert time.monotonic() - t0 < 2.5
        assert door.stats["failed"] >= 2


@pytest.mark.parametrize("payload", [
    frame(b"[" * 8000),                                        # deep nesting
    b"\xff\xff\xff\xf0" + b"\0" * 4,                           # absurd length (then ack 0)
    frame(b"\xff" * 10),                                      # not UTF-8
    frame(b"[]"),                                              # not an object
    frame(b'{"a":NaN}'),                                      # non-finite
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                      # wrong protocol entirely
])
def test_malformed_hellos_are_refused_and_service_continues(payload, caplog):
    caplog.set_level(logging.INFO, logger="secureml.serve")
    with server() as (port, h, _):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(payload)
        s.settimeout(5)
        try:
            s.recv(1000)
        except OSError:
            pass
        s.close()
        honest(port)
    assert h.calls == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all("Traceback" not in r.getMessage() for r in caplog.records)


def test_busy_answer_and_polite_retry():
    hold = threading.Event()
    h = Echo(hold)
    lim = Limits(max_queue=0, retry_after_s=0.2)
    with server(h, limits=lim, concurrency=1) as (port, _, door):
        first = threading.Thread(target=honest, args=(port,))
        first.start()
        time.sleep(0.3)  # first holds the only slot
        with pytest.raises(ServerBusy):
            honest(port, retries=0)
        threading.Timer(0.5, hold.set).start()
        honest(port, retries=8)  # retries after the server's retry_after, then served
        first.join(5)
        assert door.stats["busy"] >= 2


def test_tokens_refuse_unauthenticated_clients_before_any_protocol_work(tmp_path):
    audit = tmp_path / "audit.jsonl"
    seen = []
    auth = Authenticator(tokens={hash_token("sml_alice_secret_token"): "alice"})
    with server(auth=auth, admit=lambda ctx: seen.append(ctx.client_id), audit=AuditLog(audit, "ab" * 32)) \
            as (port, h, _):
        with pytest.raises(ServerRefused, match="unauthenticated"):
            honest(port)
        with pytest.raises(ServerRefused, match="unauthenticated"):
            honest(port, hello={"token": "sml_wrong_token_guess"})
        assert h.calls == 0
        honest(port, hello={"token": "sml_alice_secret_token"})
        assert h.ids == ["token:alice"] and seen == ["token:alice"]
    recs = [json.loads(l) for l in audit.read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["unauthenticated", "unauthenticated", "ok"]
    assert recs[-1]["client"] == "token:alice" and recs[-1]["model_sha256"] == "ab" * 32
    assert "sml_" not in audit.read_text()  # the token itself is never written


def test_admit_hook_can_refuse():
    calls = []

    def admit(ctx):
        calls.append(ctx.n_queries)
        raise Refused("query budget exhausted", code="budget", retry_after=3600.0)

    with server(admit=admit) as (port, h, _):
        t0 = time.monotonic()
        with pytest.raises(ServerRefused, match="budget exhausted.*retry after 3600 s") as e:
            honest(port)
        assert e.value.code == "budget" and h.calls == 0
        assert calls == [1] and time.monotonic() - t0 < 3  # final: not retried like "busy"


def test_client_against_a_silent_or_foreign_server_fails_fast():
    srv = listen("127.0.0.1", 0)
    port = srv.getsockname()[1]
    conns = []

    def foreign():
        c, _ = srv.accept()
        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conns.append(c)
        c2, _ = srv.accept()  # silent
        conns.append(c2)

    threading.Thread(target=foreign, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(ProtocolError, match="not answer as a secureml server"):
        open_session("127.0.0.1", port, HELLO, handshake_timeout=2)
    with pytest.raises(ProtocolTimeout, match="no answer"):
        open_session("127.0.0.1", port, HELLO, handshake_timeout=1)
    assert time.monotonic() - t0 < 5
    srv.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = pki.make_ca()
    (d / "ca.pem").write_bytes(ca)
    k, c = pki.issue(ca_key, ca, "localhost", server=True, hosts=["localhost", "127.0.0.1"])
    (d / "server.key").write_bytes(k); (d / "server.pem").write_bytes(c)
    k, c = pki.issue(ca_key, ca, "otherhost", server=True, hosts=["otherhost"])
    (d / "other.key").write_bytes(k); (d / "other.pem").write_bytes(c)
    k, c = pki.issue(ca_key, ca, "alice", server=False)
    (d / "alice.key").write_bytes(k); (d / "alice.pem").write_bytes(c)
    rogue_key, rogue = pki.make_ca("rogue")
    k, c = pki.issue(rogue_key, rogue, "mallory", server=False)
    (d / "mallory.key").write_bytes(k); (d / "mallory.pem").write_bytes(c)
    return d


def test_mutual_tls_identity_and_refusals(certs):
    d = certs
    ctx = pki.server_context(d / "server.pem", d / "server.key", client_ca=d / "ca.pem")
    with server(ssl_context=ctx, auth=Authenticator(cert_auth=True)) as (port, h, _):
        good = pki.client_context(d / "ca.pem", d / "alice.pem", d / "alice.key")
        honest(port, ssl_context=good)
        assert h.ids == ["cert:alice"]
        # no client certificate, or one from another CA: refused in the handshake
        for cctx in (pki.client_context(d / "ca.pem"),
                     pki.client_context(d / "ca.pem", d / "mallory.pem", d / "mallory.key")):
            with pytest.raises(ProtocolError):
                honest(port, ssl_context=cctx, retries=0)
        # a plaintext client is told to use TLS (not "connection reset")
        with pytest.raises(ServerRefused, match="requires TLS"):
            honest(port, retries=0)
        assert h.calls == 1


def test_hostname_is_verified(certs):
    d = certs
    ctx = pki.server_context(d / "other.pem", d / "other.key")
    with server(ssl_context=ctx) as (port, h, _):
        with pytest.raises(ConnectFailed, match="does not trust"):
            honest(port, ssl_context=pki.client_context(d / "ca.pem"), retries=0)
        # the operator may name the expected host explicitly
        honest(port, ssl_context=pki.client_context(d / "ca.pem"), server_hostname="otherhost")


def test_tls_client_on_plaintext_server_gets_a_clear_error(certs):
    with server() as (port, h, _):
        with pytest.raises(ConnectFailed, match="does not speak TLS"):
            honest(port, ssl_context=pki.client_context(certs / "ca.pem"), retries=0)
        honest(port)


def test_a_session_answered_busy_is_not_charged_and_a_refused_one_frees_its_slot():
    """``admit`` (budgets, rates: it charges) runs once the session holds a slot: a client answered
    "busy" and retrying was charged for every try when admission came before the queue (review
    finding). A session ``admit`` refuses releases the slot it held: the next client is served."""
    hold = threading.Event()
    h = Echo(hold)
    charged = []

    def admit(ctx):
        charged.append(ctx.client_id)
        if len(charged) == 2:
            raise Refused("query budget exhausted", code="budget")
        return True

    lim = Limits(max_queue=0, retry_after_s=0.2)
    with server(h, limits=lim, concurrency=1, admit=admit) as (port, _, door):
        first = threading.Thread(target=honest, args=(port,))
        first.start()
        time.sleep(0.3)  # first holds the only slot
        for _ in range(3):
            with pytest.raises(ServerBusy):
                honest(port, retries=0)
        assert len(charged) == 1  # the three busy answers charged nothing
        hold.set()
        first.join(5)
        with pytest.raises(ServerRefused, match="budget exhausted"):
            honest(port)  # holds the slot, then refused by admit: the slot is released
        honest(port)
        assert len(charged) == 3 and h.calls == 2
