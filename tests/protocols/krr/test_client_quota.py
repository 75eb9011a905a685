"""One client cannot flood the server's resumable-session stores (protocols.net.quota), over real
TCP against ``protocols.krr.serve`` (in a thread of this process) with two token identities:

* OT-session tickets (client-malicious compact model): an attacker opening many sessions, each
  with a fresh ticket, leaves the victim's ticket in the store -- the victim still resumes --
  and holds at most ``max_per_client`` tickets; with the quota off the same flood evicts it
  (the attack the quota stops);
* lattice keys and prepared re-randomisations (semi-honest compact model): an attacker with a
  fresh key and a fresh announced seed per session leaves the victim's key and its prepared
  re-randomisation in place: the victim's next session is answered from it, its key not resent;
* kept-alive connections: an attacker keeping many connections holds at most ``max_per_client``
  idle (its older ones closed), so the victim's connection is still kept;
* ``secureml serve --max-per-client`` reaches the stores.

The stores' caps are made small here (monkeypatched store objects, the same classes) so that a
flood of a few sessions reaches them; the attacker is this process's real client with its
client-side state swapped per session (a fresh ticket / key / seed each time).
"""
from __future__ import annotations

import select
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from protocols.krr import ServedModel, close_kept_connections, linear_he, molecules_featurizer, predict
from protocols.krr import client as client_mod
from protocols.krr.server import client_stores
from protocols.mpc import rlwe_ip
from protocols.net.frontdoor import Authenticator, hash_token
from protocols.net.limits import DEFAULT_LIMITS
from protocols.net.quota import OwnedLRU, entry_bytes
from protocols.ot import session as ot_session
from secureml.data import load_embedded
from tests.protocols.krr.compact import ERROR_BUDGET, small_rff_and_two_queries

VICTIM, ATTACKER = "sml_victim_token_0001", "sml_attacker_token_01"
AUTH = Authenticator(tokens={hash_token(VICTIM): "victim", hash_token(ATTACKER): "attacker"})


@pytest.fixture(scope="module")
def rff():
    return small_rff_and_two_queries(64, 150)


def _served(mm, security):
    return ServedModel.from_molecular_model(mm, security=security,
                                            calibration=load_embedded().subset(np.arange(0, 3921, 61)))


@pytest.fixture(autouse=True)
def _fresh_client_state(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    close_kept_connections()
    monkeypatch.setattr(ot_session, "CLIENT_TICKETS", ot_session.ClientTickets())
    monkeypatch.setattr(linear_he, "_CLIENT_KEYS", {})
    yield
    close_kept_connections()


class _Server:
    def __init__(self, served, per_client: int, **kw) -> None:
        from protocols.krr import serve

        self.stop_event, ports = threading.Event(), []
        limits = replace(DEFAULT_LIMITS, max_per_client=per_client, **kw)
        self.thread = threading.Thread(target=serve, args=(served, "127.0.0.1", 0), daemon=True,
                                       kwargs=dict(on_ready=ports.append, stop=self.stop_event, auth=AUTH,
                                                   limits=limits))
        self.thread.start()
        while not ports:
            threading.Event().wait(0.01)
        self.address = f"127.0.0.1:{ports[0]}"

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def _ask(srv, test, token, **kw):
    return predict(srv.address, featurize=molecules_featurizer(test.subset([0])), token=token, **kw)


@pytest.mark.parametrize("per_client", [4, 0])
def test_a_flood_of_fresh_tickets_does_not_evict_another_clients_ticket(rff, monkeypatch, per_client):
    """Victim: a first session (its ticket stored), then -- after the attacker opened 12 sessions,
    each with a fresh ticket (``resume_ot=False``: an honest unlinkable client does the same) --
    a second one. With the quota (4) the victim resumes and the attacker holds 4 tickets; without
    it (0) the store's cap (8 here) evicts the victim's ticket and its session starts afresh."""
    mm, test = rff
    store = ot_session.TicketStore(max_entries=8)
    monkeypatch.setattr(ot_session, "SERVER_TICKETS", store)
    with _Server(_served(mm, "client-malicious"), per_client) as srv:
        p1, c1 = _ask(srv, test, VICTIM, keep_alive=False)
        for _ in range(12):
            _ask(srv, test, ATTACKER, resume_ot=False, keep_alive=False)
        held = store.owners()
        p2, c2 = _ask(srv, test, VICTIM, keep_alive=False)
    assert not c1.extra["resumed"]
    np.testing.assert_allclose(np.r_[p1, p2], mm.predict(test.subset([0, 0])), atol=ERROR_BUDGET)
    if per_client:
        assert c2.extra["resumed"] and c2.extra["ot_pool_used"]
        assert held == {"token:victim": 1, "token:attacker": 4}
        # a ticket is stored once its session succeeded, after the reply: wait for the last one
        _eventually(lambda: store.evicted["quota"] == 8)
        assert store.evicted["cap"] == 0
        # memory: the attacker's 4 entries -- SoftSpoken state (8,320 B: 32 x 16 GGM leaves, Delta)
        # plus each one's checked random-OT pool (64 features x x_bits OTs x 16 B)
        per = [entry_bytes(e.state) for e in store.values()]
        assert len(per) == 5 and max(per) <= 8_320 + 16 * 64 * 64
    else:
        assert not c2.extra["resumed"]  # the attack: the victim pays a first session again
        assert held == {"token:attacker": 8}
        _eventually(lambda: store.evicted["cap"] == 6)  # 5 in the flood, 1 by the victim's new ticket


def test_a_flood_of_lattice_keys_and_seeds_leaves_the_victims_prepared_answer(rff, monkeypatch):
    """Semi-honest compact model (lattice path). The attacker's 10 sessions each use a fresh key
    and announce a fresh next seed it never comes back for (its client-side key and masks
    replaced per session): each stores a key and a re-randomisation. The victim's second session
    is still answered from the re-randomisation bound to its key after its first reply (no copy of
    pk0, nothing drawn), without resending its key; the attacker holds 3 of each."""
    mm, test = rff
    keys, nxt = rlwe_ip.KeyStore(capacity=6), OwnedLRU(6)
    monkeypatch.setattr(linear_he, "KEYS", keys)
    monkeypatch.setattr(linear_he, "NEXT", nxt)
    monkeypatch.setattr(linear_he, "PREPARE_NEXT", True)
    answers = []
    real_finish = rlwe_ip.server_finish

    def spy(pw, prep, pk0, c0, const, delta_bits, rng, key_id=None):
        answers.append((prep.bound_key == key_id, pk0 is None))
        return real_finish(pw, prep, pk0, c0, const, delta_bits, rng, key_id=key_id)

    monkeypatch.setattr(rlwe_ip, "server_finish", spy)
    with _Server(_served(mm, "semi-honest"), 3) as srv:
        p1, c1 = _ask(srv, test, VICTIM, keep_alive=False)
        victim_keys = linear_he._CLIENT_KEYS
        for _ in range(10):
            monkeypatch.setattr(linear_he, "_CLIENT_KEYS", {})  # a fresh key, so a fresh seed too
            _ask(srv, test, ATTACKER, keep_alive=False)
        monkeypatch.setattr(linear_he, "_CLIENT_KEYS", victim_keys)
        assert keys.owners() == {"token:victim": 1, "token:attacker": 3}
        assert nxt.owners() == {"token:victim": 1, "token:attacker": 3}
        p2, c2 = _ask(srv, test, VICTIM, keep_alive=False)
    np.testing.assert_allclose(np.r_[p1, p2], mm.predict(test.subset([0, 0])), atol=ERROR_BUDGET)
    assert c1.extra["key_sent"] and not c2.extra["key_sent"]
    assert answers[0] == (False, False) and answers[-1] == (True, True)
    # the last attacker session's re-randomisation is stored after its reply: wait for it
    _eventually(lambda: keys.evicted["quota"] == 7 and nxt.evicted["quota"] == 7)
    assert keys.evicted["cap"] == nxt.evicted["cap"] == 0
    assert entry_bytes(keys.values()[0]) == 57_344  # one key: n = 4,096, 7 limbs of uint16


def _eventually(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def _closed_by_server(held, expect: int, timeout: float = 5.0) -> list[bool]:
    """Which held connections the server closed (it sends nothing between sessions: a readable
    socket is a closed one), waiting until ``expect`` are (the server closes an evicted one once
    the next session has ended on its side, just after the client got its reply)."""
    end = time.monotonic() + timeout
    while True:
        readable, _, _ = select.select([ch.sock for ch in held], [], [], 0.05)
        closed = [ch.sock in readable for ch in held]
        if sum(closed) >= expect or time.monotonic() > end:
            return closed


@pytest.mark.parametrize("per_client", [2, 0])
def test_kept_alive_connections_one_client_holds_at_most_its_quota(rff, monkeypatch, per_client):
    """max_idle 4: the attacker keeps 6 connections (each session on a new one, its kept
    connection held aside). With the quota (2) the server closes the attacker's 4 older idle
    connections and keeps the victim's; without it (0) the attacker's first 4 fill every idle
    place (its last 2 and the victim's connection are closed after their session)."""
    mm, test = rff
    monkeypatch.setattr(ot_session, "SERVER_TICKETS", ot_session.TicketStore())
    with _Server(_served(mm, "client-malicious"), per_client, max_idle=4) as srv:
        held = []
        victim_tickets = ot_session.CLIENT_TICKETS
        for _ in range(6):
            monkeypatch.setattr(ot_session, "CLIENT_TICKETS", ot_session.ClientTickets())
            _ask(srv, test, ATTACKER)
            (pool, (ch, _)), = client_mod._KEPT.items()
            held.append(client_mod._KEPT.pop(pool)[0])
        monkeypatch.setattr(ot_session, "CLIENT_TICKETS", victim_tickets)
        closed = _closed_by_server(held, 4 if per_client else 2)
        _, c1 = _ask(srv, test, VICTIM)
        _, c2 = _ask(srv, test, VICTIM)
        after = _closed_by_server(held, 0, timeout=0.0)
        for ch in held:
            ch.close()
    assert not c1.extra["kept_alive"]
    if per_client:
        assert closed == after == [True] * 4 + [False] * 2
        assert c2.extra["kept_alive"] and c2.extra["resumed"]
    else:
        assert closed == [False] * 4 + [True] * 2  # the attacker's first 4 take every idle place
        assert not c2.extra["kept_alive"]  # so the victim's connection is closed after its session


def test_serve_max_per_client_flag_reaches_the_stores(monkeypatch):
    """``secureml serve --max-per-client N`` sets Limits.max_per_client, which ``serve`` applies
    to every store of client_stores() (and the front door's idle connections); its --help says so."""
    import argparse

    from protocols import krr
    from protocols.krr.server import set_client_quota
    from secureml.commands import serve as serve_cmd
    from secureml.errors import SecureMLError

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    serve_cmd.register(sub)
    helptext = sub.choices["serve"].format_help()
    assert "--max-per-client" in helptext and "never another" in helptext
    seen = {}

    def fake_serve(model, host, port, **kw):
        seen["limits"] = kw["limits"]
        set_client_quota(kw["limits"].max_per_client)

    monkeypatch.setattr(krr, "serve", fake_serve)
    monkeypatch.setattr(serve_cmd, "_load", lambda args, key: _stub_model())
    for n, want in ((7, 7), (0, None)):
        args = parser.parse_args(["serve", "--model", "x.npz", "--max-per-client", str(n), "--max-aborts", "0"])
        args.verbose = 0
        assert serve_cmd.run(args) == 0
        assert seen["limits"].max_per_client == n
        assert {name: s.per_owner for name, s in client_stores().items()} == dict.fromkeys(client_stores(), want)
    args = parser.parse_args(["serve", "--model", "x.npz", "--max-per-client", "-1"])
    args.verbose = 0
    with pytest.raises(SecureMLError):
        serve_cmd.run(args)
    set_client_quota(DEFAULT_LIMITS.max_per_client)


def _stub_model():
    from types import SimpleNamespace

    public = SimpleNamespace(kind="linear", security="client-malicious", output_defense=None,
                             lattice_linear=False, validate=lambda: None)
    return SimpleNamespace(public=public, set_defense=lambda *a: None, sha256="")
