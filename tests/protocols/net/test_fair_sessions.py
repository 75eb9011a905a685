"""One client identity cannot take every session slot and queue place (``Limits.max_sessions_per_client``,
``secureml serve --max-sessions-per-client``), over real TCP against the front door with two token
identities: the attacker opens many concurrent sessions that it holds open; the victim is still served
(with the bound off, the same flood answers the victim "busy" -- the attack the bound stops); the
bound is released on every exit path of a session (ok, disconnect, read timeout, crash, admit
refusal, a queue wait that ran out), and the flag reaches Limits.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from protocols.net.dial import ServerBusy, ServerRefused, open_session
from protocols.net.frontdoor import Authenticator, Refused, hash_token
from protocols.net.limits import Limits
from secureml.errors import ProtocolError
from tests.protocols.net.test_frontdoor import HELLO, Echo, honest, server

VICTIM, ATTACKER = "sml_victim_token_0001", "sml_attacker_token_01"
AUTH = Authenticator(tokens={hash_token(VICTIM): "victim", hash_token(ATTACKER): "attacker"})


class HoldAttacker(Echo):
    """Echo whose attacker sessions wait for ``release`` before finishing (they hold their slot)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.attacker_running = 0
        self._lock = threading.Lock()

    def __call__(self, ch, hello, ctx):
        if ctx.client_id == "token:attacker":
            with self._lock:
                self.attacker_running += 1
            ch.send_json({"ok": True, "params": {}})
            self.release.wait(10)
            a = ch.recv_array(np.float64, (None,))
            ch.send_array(2 * a)
            return
        super().__call__(ch, hello, ctx)


def _until(cond, timeout: float = 5.0) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, "condition not reached"
        time.sleep(0.02)


def _attack(port: int, n: int, outcomes: list) -> list[threading.Thread]:
    """``n`` concurrent attacker sessions (no retries): each records "ok" or "busy"."""
    def one():
        try:
            honest(port, hello={"token": ATTACKER}, retries=0)
            outcomes.append("ok")
        except ServerBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.parametrize("bound", [2, 0])
def test_one_identity_with_many_sessions_does_not_lock_out_another(bound):
    """3 slots, 2 queue places; the attacker opens 8 sessions at once and holds them. Bound 2:
    it gets 2 (running), 6 wait for them (no queue place) and are answered "busy" after the
    queue wait, and the victim is served at once meanwhile. Bound 0 (off): the attacker takes
    all 3 slots and both queue places, and the victim is answered "busy"."""
    h = HoldAttacker()
    lim = Limits(max_queue=2, queue_wait_s=2.0, retry_after_s=0.2, max_sessions_per_client=bound)
    with server(h, limits=lim, concurrency=3, auth=AUTH) as (port, _, door):
        outcomes: list[str] = []
        threads = _attack(port, 8, outcomes)
        if bound:
            _until(lambda: h.attacker_running == 2)
            time.sleep(0.3)  # the other 6 have sent their hellos and wait
            assert door._sessions_by_client == {"token:attacker": 2} and door._waiting == 0
            honest(port, hello={"token": VICTIM}, retries=0)  # a free slot, no retry needed
            assert h.ids == ["token:victim"]
            _until(lambda: outcomes.count("busy") == 6)
            assert door.stats["client_busy"] == 6
        else:
            _until(lambda: h.attacker_running == 3 and door._waiting == 2 and outcomes.count("busy") == 3)
            with pytest.raises(ServerBusy):
                honest(port, hello={"token": VICTIM}, retries=0)
            assert h.ids == [] and door.stats["client_busy"] == 0
        h.release.set()
        for t in threads:
            t.join(10)
        ok = outcomes.count("ok")  # bound off: the 2 queued ones too if their 2 s wait had not run out
        assert ok == 2 if bound else 3 <= ok <= 5
        _until(lambda: door._sessions_by_client == {})


def test_the_bound_is_released_on_every_exit_path():
    """Bound 1 for the attacker, so each path must release for the next session to be admitted:
    ok, a client that disconnects mid-session, a session whose read times out, a handler crash,
    an ``admit`` refusal, and a queued session whose wait ran out ("busy"). After each, the count
    is back to zero and a new attacker session is admitted."""
    mode = {"m": "ok"}
    release = threading.Event()

    class Paths(Echo):
        def __call__(self, ch, hello, ctx):
            m = mode["m"]
            if m == "crash":
                raise RuntimeError("bug")
            if m == "hold":
                ch.send_json({"ok": True, "params": {}})
                release.wait(10)
                return
            super().__call__(ch, hello, ctx)

    def admit(ctx):
        if mode["m"] == "refuse":
            raise Refused("query budget exhausted", code="budget")
        return True

    lim = Limits(idle_s=0.5, handshake_s=2.0, queue_wait_s=0.4, retry_after_s=0.2,
                 max_sessions_per_client=2)
    with server(Paths(), limits=lim, concurrency=1, auth=AUTH, admit=admit) as (port, h, door):
        def clear():
            _until(lambda: door._sessions_by_client == {})

        honest(port, hello={"token": ATTACKER})
        clear()
        # disconnect: the client closes after the hello; the handler's read fails
        ch, _ = open_session("127.0.0.1", port, dict(HELLO, token=ATTACKER), handshake_timeout=5, retries=0)
        ch.close()
        clear()
        # read timeout: the client sends nothing after the hello (idle_s = 0.5 s)
        ch, _ = open_session("127.0.0.1", port, dict(HELLO, token=ATTACKER), handshake_timeout=5, retries=0)
        clear()
        ch.close()
        mode["m"] = "crash"
        with pytest.raises(ProtocolError):  # a crashed session closes the connection unanswered
            honest(port, hello={"token": ATTACKER}, retries=0)
        clear()
        mode["m"] = "refuse"
        with pytest.raises(ServerRefused, match="budget"):
            honest(port, hello={"token": ATTACKER}, retries=0)
        clear()
        # a queued session whose wait runs out: one holds the only slot, the second queues 0.4 s
        mode["m"] = "hold"
        holder = threading.Thread(target=lambda: open_session(
            "127.0.0.1", port, dict(HELLO, token=ATTACKER), handshake_timeout=5, retries=0)[0], daemon=True)
        holder.start()
        _until(lambda: door._sessions_by_client == {"token:attacker": 1})
        with pytest.raises(ServerBusy):
            honest(port, hello={"token": ATTACKER}, retries=0)
        # the queued one releases its place (just after its "busy" answer is sent)
        _until(lambda: door._sessions_by_client == {"token:attacker": 1})
        release.set()
        holder.join(5)
        clear()
        mode["m"] = "ok"
        honest(port, hello={"token": ATTACKER}, retries=0)
        clear()
        assert door.stats["client_busy"] == 0  # every refusal above came from the path, not the bound


def test_a_session_over_the_bound_waits_for_its_clients_own_session_to_end():
    """A sequential client's next hello can arrive while the server still finishes its last
    session (the handler's work after its last message): over the bound, the new session waits
    for the client's own session to end (at most the queue wait) and is then served, not "busy"."""
    h = HoldAttacker()
    lim = Limits(queue_wait_s=5.0, retry_after_s=0.2, max_sessions_per_client=1)
    with server(h, limits=lim, concurrency=2, auth=AUTH) as (port, _, door):
        outcomes: list[str] = []
        first = _attack(port, 1, outcomes)
        _until(lambda: h.attacker_running == 1)
        second = _attack(port, 1, outcomes)
        time.sleep(0.3)  # the second has sent its hello and waits (a slot is free)
        assert h.attacker_running == 1 and door._sessions_by_client == {"token:attacker": 1}
        h.release.set()
        for t in first + second:
            t.join(10)
        assert outcomes == ["ok", "ok"] and h.attacker_running == 2 and door.stats["client_busy"] == 0


def test_limits_rejects_a_negative_bound():
    with pytest.raises(ValueError, match="max_sessions_per_client"):
        Limits(max_sessions_per_client=-1)
    assert Limits().max_sessions_per_client == 2 and Limits(max_sessions_per_client=0).max_sessions_per_client == 0


def test_serve_flag_reaches_limits(monkeypatch):
    """``secureml serve --max-sessions-per-client N`` sets Limits.max_sessions_per_client (0 = off,
    negative refused); its --help says what it bounds."""
    import argparse

    from protocols import krr
    from secureml.commands import serve as serve_cmd
    from secureml.errors import SecureMLError
    from tests.protocols.krr.test_client_quota import _stub_model

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    serve_cmd.register(sub)
    helptext = " ".join(sub.choices["serve"].format_help().split())
    assert "--max-sessions-per-client" in helptext and "running or queued" in helptext
    seen = {}
    monkeypatch.setattr(krr, "serve", lambda model, host, port, **kw: seen.update(limits=kw["limits"]))
    monkeypatch.setattr(serve_cmd, "_load", lambda args, key: _stub_model())
    for argv, want in (([], 2), (["--max-sessions-per-client", "5"], 5), (["--max-sessions-per-client", "0"], 0)):
        args = parser.parse_args(["serve", "--model", "x.npz", "--max-aborts", "0", *argv])
        args.verbose = 0
        assert serve_cmd.run(args) == 0
        assert seen["limits"].max_sessions_per_client == want
    args = parser.parse_args(["serve", "--model", "x.npz", "--max-sessions-per-client", "-1"])
    args.verbose = 0
    with pytest.raises(SecureMLError):
        serve_cmd.run(args)
