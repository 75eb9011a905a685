"""bench.laplacian_steps: the per-step byte split adds up and the shares are exact."""
from __future__ import annotations

from bench.laplacian_steps import measure


def test_steps_add_up_to_the_l1_step():
    r = measure(96, 6)
    assert r["digits"] == "5+5+5" and r["x_bits"] == 15
    parts = r["column_ot_MB"] + r["random_ot_MB"] + r["products_MB"]
    assert abs(parts - r["l1_total_MB"]) < 1e-9
    assert min(r["column_ot_MB"], r["random_ot_MB"], r["products_MB"]) > 0
