"""bench.laplacian_profile: two processes over TCP, per-step bytes and CPU, exact L1 shares."""
from __future__ import annotations

from bench.laplacian_profile import measure


def test_profile_rows_cover_the_steps_and_add_up():
    rows = measure(64, 5, digits="3+3+3+3+3")  # raises if the L1 shares are not exact
    by = {(r["party"], r["step"]): r for r in rows}
    for who in ("server", "client"):
        total = by[(who, "l1_total")]
        assert total["digits"] == "3+3+3+3+3" and total["calls"] == 1 and total["cpu_s"] > 0
        parts = [r for r in rows if r["party"] == who and r["step"] != "l1_total"]
        # the steps' traffic is part of the L1 step's (the rest: packing, local sums)
        assert sum(r["sent_MB"] for r in parts) <= total["sent_MB"] + 1e-3
    assert by[("server", "column_ot")]["calls"] == 5 and by[("server", "_rot_bits")]["calls"] == 4
    # the two COTs, and product (i)'s COTs reserved at the top digit
    assert by[("client", "products_cot")]["calls"] == by[("server", "products_cot")]["calls"] == 3
    # the server sends the column tables, the client only its choice messages there
    assert by[("server", "column_ot")]["sent_MB"] > by[("client", "column_ot")]["sent_MB"]


def test_profile_dumps_into_a_new_folder_and_a_dead_party_ends_the_run(tmp_path, monkeypatch):
    """--cprofile names a folder that need not exist (a party that failed to write its dump used
    to leave the parent waiting 15 minutes on the result queue)."""
    import pytest

    from bench import laplacian_profile

    measure(64, 5, profile_dir=str(tmp_path / "new" / "cp"), digits="3+3+3+3+3")
    assert sorted(p.name for p in (tmp_path / "new" / "cp").iterdir()) == ["party0.prof", "party1.prof"]

    def broken(*a, **kw):
        raise RuntimeError("party failure")

    monkeypatch.setattr(laplacian_profile, "_party", broken)  # forked children inherit the patch
    with pytest.raises(RuntimeError, match="a party process failed"):
        measure(64, 5)
