"""Resumable OT sessions: tickets, expiry, eviction, fall-back, concurrent resumption."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from protocols.ot.session import ClientTickets, TicketStore, client_start, server_start
from protocols.mpc.party import Party
from protocols.net.transport import local_channel_pair
from secureml.errors import ProtocolError

U64 = np.uint64


def _session(store, tickets, resume=True, n=2000, extra=None, keep=True):
    """One session start plus n COTs; returns (server info, client reply, client bytes, ok)."""
    c0, c1 = local_channel_pair(timeout=30)
    p0, p1 = Party(c0, 0), Party(c1, 1)
    rng = np.random.default_rng(0)
    delta = rng.integers(0, 2**62, size=n, dtype=U64)
    c = rng.integers(0, 2, size=n).astype(np.uint8)
    out = {}

    def srv():
        out["info"] = server_start(p0, store, extra=extra, keep=keep)
        out["x0"] = p0.ot_sender.cot_send(delta)

    t = threading.Thread(target=srv)
    t.start()
    reply = client_start(p1, "server-a", tickets, resume=resume)
    setup_bytes = c1.bytes_sent + c1.bytes_received
    x = p1.ot_receiver.cot_recv(c)
    t.join(30)
    ok = np.array_equal(x, out["x0"] + c.astype(U64) * delta)
    return out["info"], reply, setup_bytes, ok


def test_first_session_fresh_then_resumed():
    store, tickets = TicketStore(), ClientTickets()
    info, reply, b_fresh, ok = _session(store, tickets, extra={"out_bits": 50})
    assert ok and not info["resumed"] and not reply["resumed"] and reply["out_bits"] == 50
    assert len(store) == 1 and len(tickets) == 1
    info, reply, b_res, ok = _session(store, tickets)
    assert ok and info["resumed"] and reply["resumed"]
    assert b_fresh > 8000 and b_res < 600  # no base OTs / GGM sums: two small JSON messages


def test_resume_disabled_by_client_or_server():
    store, tickets = TicketStore(), ClientTickets()
    _session(store, tickets)
    _, reply, _, ok = _session(store, tickets, resume=False)
    assert ok and not reply["resumed"]
    # a server that refuses resumption (keep=False): the client's ticket is not honoured
    _, reply, _, ok = _session(store, tickets, resume=True, keep=False)
    assert ok and not reply["resumed"]
    _, reply, _, ok = _session(store, tickets, resume=True)  # and it kept no new state either
    assert ok and not reply["resumed"]


def test_expired_or_evicted_ticket_falls_back():
    store, tickets = TicketStore(ttl_s=0.05), ClientTickets()
    _session(store, tickets)
    time.sleep(0.1)
    info, reply, _, ok = _session(store, tickets)
    assert ok and not info["resumed"]  # expired on the server: fresh base OTs, new ticket
    _, reply, _, ok = _session(store, tickets)  # the new ticket is fresh again (within ttl)
    assert ok
    small = TicketStore(max_entries=1)
    t_a, t_b = ClientTickets(), ClientTickets()
    _session(small, t_a)
    _session(small, t_b)  # evicts a's state
    info, _, _, ok = _session(small, t_a)
    assert ok and not info["resumed"] and len(small) == 1


def test_concurrent_resumptions_of_one_ticket():
    store, tickets = TicketStore(), ClientTickets()
    _session(store, tickets)
    results = []
    threads = [threading.Thread(target=lambda: results.append(_session(store, tickets))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and all(r[3] and r[0]["resumed"] for r in results)


def test_malformed_requests_are_refused():
    c0, c1 = local_channel_pair(timeout=5)
    c1.send_json({"op": "ot-session", "resume": None, "nonce": "zz"})
    with pytest.raises(ProtocolError, match="nonce"):
        server_start(Party(c0, 0), TicketStore())
    c0, c1 = local_channel_pair(timeout=5)
    c1.send_json({"op": "something-else"})
    with pytest.raises(ProtocolError, match="ot-session"):
        server_start(Party(c0, 0), TicketStore())
    # a server that claims to resume a ticket the client never had
    c0, c1 = local_channel_pair(timeout=5)
    c0.send_json({"op": "ot-session", "resumed": True, "ticket": "00" * 16, "nonce": "11" * 16, "k": 4})
    with pytest.raises(ProtocolError, match="does not hold"):
        client_start(Party(c1, 1), "server-b", ClientTickets())
    c0, c1 = local_channel_pair(timeout=5)
    c0.send_json({"op": "ot-session", "resumed": False, "ticket": "00" * 16, "nonce": "11" * 16, "k": 3})
    with pytest.raises(ProtocolError, match="k=3"):
        client_start(Party(c1, 1), "server-b", ClientTickets())


def test_exclusive_ticket_is_taken_and_given_back_only_on_success():
    """Client-malicious mode: a resumed state is out of the store while its session runs and comes
    back only through release() (a failed session drops it)."""
    store, tickets = TicketStore(), ClientTickets()
    c0, c1 = local_channel_pair(timeout=30)
    out = {}
    t = threading.Thread(target=lambda: out.__setitem__("info", server_start(Party(c0, 0), store, exclusive=True)))
    t.start()
    client_start(Party(c1, 1), "server-a", tickets)
    t.join(30)
    assert len(store) == 0  # a fresh state is stored only after its session succeeded
    out["info"]["release"]()
    assert len(store) == 1
    c0, c1 = local_channel_pair(timeout=30)
    t = threading.Thread(target=lambda: out.__setitem__("info", server_start(Party(c0, 0), store, exclusive=True)))
    t.start()
    reply = client_start(Party(c1, 1), "server-a", tickets)
    t.join(30)
    assert reply["resumed"] and len(store) == 0  # taken: no concurrent session can resume it
    # no release (the session failed): the state is gone
    c0, c1 = local_channel_pair(timeout=30)
    t = threading.Thread(target=lambda: out.__setitem__("info", server_start(Party(c0, 0), store, exclusive=True)))
    t.start()
    reply = client_start(Party(c1, 1), "server-a", tickets)
    t.join(30)
    assert not reply["resumed"]


def _start(store, tickets, exclusive, key="server-a"):
    c0, c1 = local_channel_pair(timeout=30)
    out = {}
    t = threading.Thread(target=lambda: out.__setitem__("info", server_start(Party(c0, 0), store,
                                                                               exclusive=exclusive)))
    t.start()
    reply = client_start(Party(c1, 1), key, tickets)
    t.join(30)
    return out["info"], reply


def test_a_checked_ticket_never_serves_an_unchecked_session_nor_the_reverse():
    """Review finding: one process serving a client-malicious compact model (checked extension,
    exclusive tickets) and a semi-honest one over OT (unchecked, shared tickets) keeps both kinds
    of ticket in one store (SERVER_TICKETS). A client holding a checked ticket could present it
    to the semi-honest model: its unchecked extension under the same Delta lets inconsistent
    columns go unseen (KOS's check is what bounds what a receiver learns of Delta), and a Delta
    it learned there opens every pad of its later client-malicious sessions -- the weights. The
    client picks the ticket (the server's store is keyed by the ticket alone), so a ticket
    resumes only in the mode that made it."""
    store = TicketStore()
    # checked first, released after success; then presented to an unchecked session
    t_a = ClientTickets()
    info, _ = _start(store, t_a, exclusive=True)
    info["release"]()
    held = t_a.get("server-a")
    t_other = ClientTickets()
    t_other.put("server-b", held[0], held[1])  # the same ticket, named for the other model
    info, reply = _start(store, t_other, exclusive=False, key="server-b")
    assert not info["resumed"] and not reply["resumed"]
    # unchecked first (kept in the store at once); then presented to a checked session
    t_b = ClientTickets()
    _start(store, t_b, exclusive=False)
    held = t_b.get("server-a")
    t_other = ClientTickets()
    t_other.put("server-b", held[0], held[1])
    info, reply = _start(store, t_other, exclusive=True, key="server-b")
    assert not info["resumed"] and not reply["resumed"]
    # each mode still resumes its own
    info, reply = _start(store, t_b, exclusive=False)
    assert info["resumed"] and reply["resumed"]
