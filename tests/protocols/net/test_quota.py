"""Per-client quotas of the server's resumable-state stores (protocols.net.quota.OwnedLRU) and the
stores built on it (OT-session tickets, lattice public keys): a client beyond its quota evicts its
own least recently used entry, never another client's; the cap still holds; expiry, take/give
back and re-stored keys keep the entry's owner."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.mpc.rlwe_ip import KeyStore
from protocols.net.quota import OwnedLRU, client_scope, current_client, entry_bytes
from protocols.ot.session import TicketStore


def test_a_client_beyond_its_quota_evicts_its_own_oldest_entry_only():
    store: OwnedLRU[str, int] = OwnedLRU(max_entries=100, per_owner=3)
    store.put("victim-1", 1, "victim")
    for i in range(50):
        store.put(f"flood-{i}", i, "attacker")
    assert store.get("victim-1") == 1
    assert store.owned("attacker") == 3 and store.owned("victim") == 1
    assert [k for k in ("flood-47", "flood-48", "flood-49") if k in store] == ["flood-47", "flood-48", "flood-49"]
    assert store.evicted["quota"] == 47 and store.evicted["cap"] == 0
    # least recently *used*, not oldest made: a touched entry stays
    store.get("flood-47")
    store.put("flood-50", 50, "attacker")
    assert "flood-47" in store and "flood-48" not in store


def test_without_a_quota_one_client_evicts_everyone_at_the_cap():
    """What the quota prevents: the LRU cap alone lets one client push every other entry out."""
    store: OwnedLRU[str, int] = OwnedLRU(max_entries=8, per_owner=None)
    store.put("victim-1", 1, "victim")
    for i in range(8):
        store.put(f"flood-{i}", i, "attacker")
    assert "victim-1" not in store and store.evicted["cap"] == 1


def test_the_cap_holds_across_clients_and_unowned_entries_have_no_quota():
    store: OwnedLRU[str, int] = OwnedLRU(max_entries=5, per_owner=2)
    for i in range(4):
        store.put(f"local-{i}", i)  # outside a served session: owner None, no quota
    assert len(store) == 4 and store.owners() == {}
    for c in "abc":
        store.put(f"{c}-0", 0, c)
    assert len(store) == 5 and store.evicted["cap"] == 2  # the two least recently used (unowned) went
    assert all(store.owned(c) == 1 for c in "abc")


def test_a_key_stored_again_keeps_its_owner():
    """A client presenting another client's key (a lattice key id) cannot move that entry into its
    own quota and then evict it with its own entries."""
    store: OwnedLRU[str, int] = OwnedLRU(max_entries=100, per_owner=2)
    store.put("shared", 1, "victim")
    store.put("shared", 2, "attacker")
    assert store.owner_of("shared") == "victim" and store.get("shared") == 2
    for i in range(10):
        store.put(f"a-{i}", i, "attacker")
    assert "shared" in store and store.owned("attacker") == 2


def test_expiry_pop_and_clear(monkeypatch):
    import protocols.net.quota as quota

    now = [1000.0]
    monkeypatch.setattr(quota.time, "monotonic", lambda: now[0])
    store: OwnedLRU[str, int] = OwnedLRU(max_entries=10, ttl_s=5.0, per_owner=2)
    store.put("x", 1, "c")
    now[0] += 4.0
    store.put("x", 2, "c")  # stored again: its expiry still counts from the first put
    now[0] += 2.0
    assert store.get("x") is None and store.evicted["expired"] == 1 and store.owned("c") == 0
    store.put("y", 3, "c")
    assert store.pop("y") == 3 and store.pop("y") is None and store.owned("c") == 0
    store.put("z", 4, "c")
    store.clear()
    assert len(store) == 0 and store.owners() == {}


def test_ticket_store_quota_survives_take_and_give_back():
    """Client-malicious tickets are taken out for a session and given back after it: the entry
    keeps its owner, so giving back a ticket counts against the client that made it."""
    store = TicketStore(max_entries=100, per_owner=2)
    store.put(b"v" * 16, {"k": 4}, "victim")
    for i in range(2):
        store.put(bytes([i]) * 16, {"k": 4}, "attacker")
    e = store.take(b"\x00" * 16)
    assert e is not None and e.owner == "attacker" and store.owned("attacker") == 1
    store.put(b"\x05" * 16, {"k": 4}, "attacker")
    store.give_back(e)  # back as the attacker's most recent: its oldest other ticket goes
    assert store.owned("attacker") == 2 and b"\x01" * 16 not in store
    assert store.get(b"v" * 16) == {"k": 4} and store.owned("victim") == 1


def test_ticket_pools_still_bounded_over_all_tickets():
    class Pool:
        left = 10

    store = TicketStore(max_entries=100, max_pool_ots=25, per_owner=4)
    for i in range(4):
        store.put(bytes([i]) * 16, {"pool": Pool()}, "c")
    held = [s for s in store.values() if "pool" in s.state]
    assert len(held) == 2  # the least recently used pools dropped, the tickets kept
    assert len(store) == 4


def test_key_store_per_owner_and_bytes():
    store = KeyStore(capacity=100, per_owner=2)
    pk = np.arange(4096 * 7, dtype=np.int64) % 65536  # n = 4,096, 7 limbs of 16 bits
    for i in range(5):
        store.put(bytes([i]) * 8, pk, "attacker")
    store.put(b"v" * 8, pk, "victim")
    assert store.owned("attacker") == 2 and store.touch(b"v" * 8)
    assert store.get(b"v" * 8).dtype == np.int64
    assert entry_bytes(store.values()[0]) == 57_344  # uint16 limbs: 57 kB per key at n = 4,096


def test_client_scope_is_per_thread():
    seen = {}

    def other():
        seen["other"] = current_client()

    with client_scope("token:alice"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert current_client() == "token:alice"
    assert current_client() is None and seen["other"] is None


def test_entry_bytes_counts_arrays_and_bytes():
    assert entry_bytes({"a": np.zeros(10, dtype=np.uint64), "b": b"xyz", "c": [np.zeros(2, np.uint8)], "k": 4}) == 85


@pytest.mark.parametrize("bad", [dict(max_entries=0), dict(ttl_s=0.0)])
def test_bad_bounds_refused(bad):
    with pytest.raises(ValueError):
        OwnedLRU(**bad)


def test_limits_refuse_a_negative_per_client_quota():
    from protocols.net.limits import Limits
    with pytest.raises(ValueError, match="max_per_client"):
        Limits(max_per_client=-1)
    assert Limits(max_per_client=0).max_per_client == 0
