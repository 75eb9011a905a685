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
