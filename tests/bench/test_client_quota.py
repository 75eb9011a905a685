"""bench.client_quota on a small model: the victim's second session is resumed with the quota
and not without it, on both compact-model paths; the store summary it writes is what the docs
quote (entries by owner, evictions, bytes per entry)."""
from __future__ import annotations

import pytest

from bench import client_quota
from protocols.krr import linear_he
from protocols.ot import session as ot_session
from tests.protocols.krr.compact import small_rff_and_two_queries


@pytest.fixture(autouse=True)
def _restore_stores(monkeypatch, tmp_path):
    # the bench replaces the process's stores and clears the client's state: restored afterwards
    monkeypatch.setenv("SECUREML_CACHE", str(tmp_path))
    for mod, names in ((ot_session, ("SERVER_TICKETS", "CLIENT_TICKETS")),
                       (linear_he, ("KEYS", "NEXT"))):
        for name in names:
            monkeypatch.setattr(mod, name, getattr(mod, name))
    monkeypatch.setattr(linear_he, "_CLIENT_KEYS", {})
    monkeypatch.setattr(linear_he, "_NEXT_MASKS", {})
    monkeypatch.setattr(linear_he, "_KEY_SENT", set())


@pytest.mark.parametrize("security,store", [("client-malicious", "ot-tickets"), ("semi-honest", "lattice-keys")])
def test_quota_keeps_the_victims_entry_and_off_it_is_evicted(security, store):
    mm, mols = small_rff_and_two_queries(64, 150)
    on = client_quota._run(mm, mols, security, quota=4, cap=8, flood=10)
    off = client_quota._run(mm, mols, security, quota=0, cap=8, flood=10)
    assert on["victim_second"]["resumed"] and not off["victim_second"]["resumed"]
    assert on["victim_second"]["bytes"] < off["victim_second"]["bytes"]
    assert on["stores_after_flood"][store]["by_owner"] == {"token:victim": 1, "token:attacker": 4}
    assert off["stores_after_flood"][store]["by_owner"] == {"token:attacker": 8}
    if store == "lattice-keys":
        assert on["stores_after_flood"][store]["entry_bytes_max"] == 57_344
