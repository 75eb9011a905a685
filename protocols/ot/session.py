"""Resumable OT sessions: the base OTs of a first session serve a client's later sessions too.

A fresh SoftSpoken OT extension (:mod:`protocols.ot.softspoken`) needs 128 public-key base OTs and a
GGM round: tens of milliseconds, more than a compact model's whole online phase.  Like TLS session
tickets, the model owner keeps the resulting *secret* extension state under a random ticket
(bounded LRU, expiry) and the client keeps its half; a later session that presents the ticket
skips the base OTs and starts extending at once.

Session start (model owner = OT-extension sender, query owner = receiver):
  1. client -> server: {op: "ot-session", resume: ticket or null, nonce: n_c (16 random bytes)}
  2. server -> client: {resumed, ticket, nonce: n_s, k, **extra}; resumed is true only if the
     ticket is in the server's store (not expired, not evicted) -- otherwise a new ticket
  3. not resumed: SoftSpoken set-up (128 base OTs + GGM trees); both sides save the state
  4. both: sid = H(base-OT transcript digest, ticket, n_c, n_s) and a SoftSpoken session under sid

Why resuming is secure (semi-honest): an extension session uses the leaves only through
``P = H_sid(leaf)`` (fixed-key-AES TCCR hash keyed by sid), and sid is fresh because each side
contributes a fresh random nonce.  So every session's PRG streams and OT hashes are new, and a
resumed session is indistinguishable from more OTs of one long SoftSpoken/IKNP extension -- whose
security does not depend on how many OTs are extended from one Delta.  The punctured leaf stays
unknown to the server (it never had it), Delta stays unknown to the client (the base OTs hid it).
Nothing about queries is kept: the saved state is input-independent key material.  Costs and
caveats: the server can link the sessions that use one ticket (a client that wants unlinkable
sessions passes ``resume=False``; a server that keeps no state passes ``keep=False``); a stolen client state lets its
holder finish OT sessions as that client, which reveals nothing the service does not already
give any client; state lives in memory only (never on disk) and expires (default 1 hour).

Store bounds (availability; clients are untrusted for it): the server's :class:`TicketStore` keeps
at most 1,024 tickets (LRU) and 2^24 pooled OTs over all of them, and each client identity -- the
query ledger's key, set by the server's front door (:mod:`protocols.net.quota`) -- at most
``per_owner`` tickets (``secureml serve --max-per-client``, default 4): a new ticket beyond that
evicts the client's own least recently used one, never another client's. Without it, one client
opening sessions with a fresh ticket each (``resume=False`` does so honestly) pushed every other
client's ticket out, and they all paid base OTs again. What a client learns is unchanged (it only
ever loses its own tickets, which it can drop anyway); what it costs the server is bounded per
client: 4 x (8.5 kB of state + at most 8 MiB of pool).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from protocols.net.quota import OwnedLRU, current_client
from protocols.ot.crypto import derive_key
from protocols.ot.pool import POOL_TOTAL_MAX
from protocols.ot.pool import status as pool_status
from protocols.ot.softspoken import ALLOWED_K, SoftSpokenReceiver, SoftSpokenSender
from secureml.errors import ProtocolError

__all__ = ["TicketStore", "ClientTickets", "server_start", "client_start", "SERVER_TICKETS",
           "CLIENT_TICKETS", "DEFAULT_K"]

DEFAULT_K = 4
_NONCE = 16


@dataclass
class _Entry:
    ticket: bytes
    state: dict
    created: float = field(default_factory=time.monotonic)
    #: the client that made it (the ledger's key, :mod:`protocols.net.quota`); None outside ``serve``
    owner: str | None = None


class _Bounded(OwnedLRU[Any, _Entry]):
    """Thread-safe LRU map with expiry (entries older than ``ttl_s`` since creation are dropped)
    and a per-owner quota (``per_owner``, :class:`protocols.net.quota.OwnedLRU`)."""

    def __init__(self, max_entries: int = 1024, ttl_s: float = 3600.0, per_owner: int | None = None) -> None:
        if ttl_s is None or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        super().__init__(max_entries, ttl_s, per_owner)

    def _created(self, key: Any, value: _Entry) -> float:
        return value.created

    def _get(self, key: Any) -> _Entry | None:
        return OwnedLRU.get(self, key)

    def _put(self, key: Any, entry: _Entry) -> None:
        OwnedLRU.put(self, key, entry, entry.owner)


class TicketStore(_Bounded):
    """Server side: ticket -> OT-extension sender state (Delta and the punctured GGM leaves, and a
    client-malicious ticket's checked random-OT pool). The pools of all tickets together hold at
    most ``max_pool_ots`` OTs: storing a ticket drops the least recently used pools beyond it (a
    dropped pool is never spent again; the server announces none, so the client extends inline).
    Each client (the entry's owner) holds at most ``per_owner`` tickets: a new one beyond that
    evicts the client's own least recently used ticket, never another client's
    (``secureml serve --max-per-client``)."""

    def __init__(self, max_entries: int = 1024, ttl_s: float = 3600.0, max_pool_ots: int = POOL_TOTAL_MAX,
                 per_owner: int | None = None) -> None:
        super().__init__(max_entries, ttl_s, per_owner)
        self.max_pool_ots = int(max_pool_ots)

    def _on_put(self) -> None:
        pools = [(e.state, e.state.get("pool")) for e in self._d.values() if isinstance(e.state, dict)]
        total = sum(int(getattr(p, "left", 0)) for _, p in pools if p is not None)
        for state, p in pools:  # oldest first (LRU order); the entry just stored is the last
            if total <= self.max_pool_ots:
                break
            if p is not None:
                state.pop("pool", None)
                total -= int(getattr(p, "left", 0))

    def get(self, ticket: bytes) -> dict | None:  # type: ignore[override]
        e = self._get(bytes(ticket))
        return None if e is None else e.state

    def put(self, ticket: bytes, state: dict, owner: str | None = None) -> None:  # type: ignore[override]
        self._put(bytes(ticket), _Entry(bytes(ticket), state, owner=owner))

    def take(self, ticket: bytes) -> _Entry | None:
        """Remove and return a live entry (exclusive use: no concurrent session resumes it)."""
        return OwnedLRU.pop(self, bytes(ticket))

    def give_back(self, entry: _Entry) -> None:
        """Return a taken entry after a successful session (its expiry still counts from creation,
        its quota to the client that made it)."""
        self._put(entry.ticket, entry)


class ClientTickets(_Bounded):
    """Client side: server identity -> (ticket, OT-extension receiver state)."""

    def get(self, key: str) -> tuple[bytes, dict] | None:  # type: ignore[override]
        e = self._get(key)
        return None if e is None else (e.ticket, e.state)

    def put(self, key: str, ticket: bytes, state: dict) -> None:  # type: ignore[override]
        self._put(key, _Entry(bytes(ticket), state))


#: process-wide stores used by default (the KRR server and client, :mod:`protocols.krr.registry`)
SERVER_TICKETS = TicketStore()
CLIENT_TICKETS = ClientTickets()


def _sid(digest: bytes, ticket: bytes, n_c: bytes, n_s: bytes) -> bytes:
    return derive_key(b"secureml-ots-sid", digest, ticket, n_c, n_s, size=32)


def _hex(msg: dict, key: str, size: int, allow_none: bool = False) -> bytes | None:
    v = msg.get(key)
    if v is None and allow_none:
        return None
    try:
        b = bytes.fromhex(v)
    except (TypeError, ValueError):
        raise ProtocolError(f"ot-session: field {key!r} must be {size} hex-encoded bytes") from None
    if len(b) != size:
        raise ProtocolError(f"ot-session: field {key!r} must be {size} bytes")
    return b


def server_start(party: Any, store: TicketStore | None = None, *, k: int = DEFAULT_K,
                 extra: dict[str, Any] | None = None, keep: bool = True, exclusive: bool = False,
                 owner: str | None = None) -> dict[str, Any]:
    """Model owner's side of steps 1-4; installs a SoftSpoken sender as ``party.ot_sender``.

    ``owner``: the client a new ticket counts against (the store's per-client quota); default
    the identity of the session this thread serves (:func:`protocols.net.quota.current_client`,
    set by the server's front door). A resumed ticket keeps the owner that made it.

    ``extra`` (public values) rides along in the reply.  With ``keep=False`` no state is kept or
    resumed (the server may refuse resumption too).  Returns {resumed, setup_s, release}.

    ``exclusive=True`` (client-malicious mode): the ticket's state is *taken* out of the store for
    the session and comes back only when the caller calls ``release()`` after the session
    succeeded. A failed consistency check tells the client one bit of Delta (its guess was wrong):
    KOS's accounted leakage, paid for with the abort. If the same Delta served a later session --
    or a concurrent one -- the client could guess again and learn Delta bit by bit (~128
    sessions), then every pad. So a Delta serves one session at a time and never again after a
    failure; a fresh session's state is stored only after it succeeded.
    """
    store = SERVER_TICKETS if store is None else store
    owner = current_client() if owner is None else owner
    ch = party.ch
    t0 = time.perf_counter()
    taken: _Entry | None = None
    msg = ch.recv_json(max_bytes=1024)
    if not isinstance(msg, dict) or msg.get("op") != "ot-session":
        raise ProtocolError(f"expected an ot-session request, got {msg!r:.200}")
    n_c = _hex(msg, "nonce", _NONCE)
    asked = _hex(msg, "resume", 16, allow_none=True)
    # a ticket resumes only in the mode that made it: a Delta that served an unchecked extension
    # (semi-honest, shared) may be known to its client, so it must never serve a checked session;
    # and a checked ticket is never lent to an unchecked one (the store is keyed by ticket alone,
    # and one process may serve models of both modes)
    if exclusive:
        taken = store.take(asked) if asked is not None and keep else None
        if taken is not None and taken.state.get("checked") is not True:
            store.give_back(taken)  # the other mode's ticket: left as it was
            taken = None
        state = None if taken is None else taken.state
    else:
        state = store.get(asked) if asked is not None and keep else None
        if state is not None and state.get("checked") is True:
            state = None
    resumed = state is not None
    ticket = asked if state is not None else os.urandom(16)
    n_s = os.urandom(_NONCE)
    k_used = int(state["k"]) if state is not None else int(k)
    reply = {"op": "ot-session", "resumed": resumed, "ticket": ticket.hex(), "nonce": n_s.hex(), "k": k_used,
             **(extra or {})}
    if resumed and exclusive:
        # the checked random-OT pool kept with this ticket (protocols.ot.pool): its id and cursor
        # are public, so an honest client whose copy is out of step does not name it
        reply["pool"] = pool_status(state.get("pool"))
    ch.send_json(reply)
    if state is None:
        fresh = SoftSpokenSender(ch, k=k_used)
        fresh.setup()
        state = fresh.state()
        state["checked"] = bool(exclusive)  # the mode this ticket may resume in
        if keep and exclusive:
            taken = _Entry(ticket, state, owner=owner)  # kept only once a session with it has succeeded
        elif keep:
            store.put(ticket, state, owner)
    party.install_ot(sender=SoftSpokenSender.resume(ch, state, _sid(state["digest"], ticket, n_c, n_s)))

    def release() -> None:
        if taken is not None:
            store.give_back(taken)

    # ``state``: the ticket's state, held by this session alone when ``exclusive`` (its OT pool
    # lives there and is kept only if the session succeeds)
    return {"resumed": resumed, "setup_s": time.perf_counter() - t0, "release": release,
            "state": state if exclusive and keep else None}



def client_start(party: Any, key: str, tickets: ClientTickets | None = None, *,
                 resume: bool = True) -> dict[str, Any]:
    """Query owner's side of steps 1-4; installs a SoftSpoken receiver as ``party.ot_receiver``.

    ``key`` names the server (its address and model); ``resume=False`` neither presents nor keeps
    a ticket (unlinkable sessions).  Returns the server's reply (with its ``extra``
    fields, and ``pool``: the server's random-OT pool for a resumed ticket) plus ``setup_s`` and ``state``.
    """
    tickets = CLIENT_TICKETS if tickets is None else tickets
    ch = party.ch
    t0 = time.perf_counter()
    held = tickets.get(key) if resume else None
    n_c = os.urandom(_NONCE)
    ch.send_json({"op": "ot-session", "resume": held[0].hex() if held else None, "nonce": n_c.hex()})
    reply = ch.recv_json(max_bytes=4096)
    if not isinstance(reply, dict) or reply.get("op") != "ot-session":
        raise ProtocolError(f"expected an ot-session reply, got {reply!r:.200}")
    ticket = _hex(reply, "ticket", 16)
    n_s = _hex(reply, "nonce", _NONCE)
    if reply.get("k") not in ALLOWED_K:
        raise ProtocolError(f"ot-session: server asks for SoftSpoken k={reply.get('k')!r}")
    if reply.get("resumed"):
        if held is None or held[0] != ticket or int(held[1]["k"]) != reply["k"]:
            raise ProtocolError("ot-session: server resumed a session this client does not hold")
        state = held[1]
    else:
        if held is not None:
            tickets.discard(key)  # expired or evicted on the server
        fresh = SoftSpokenReceiver(ch, k=int(reply["k"]))
        fresh.setup()
        state = fresh.state()
        if resume:
            tickets.put(key, ticket, state)
    party.install_ot(receiver=SoftSpokenReceiver.resume(ch, state, _sid(state["digest"], ticket, n_c, n_s)))
    # ``state``: the ticket's state this client keeps (None with resume=False): its OT pool lives there
    return {**reply, "setup_s": time.perf_counter() - t0, "state": state if resume else None}
