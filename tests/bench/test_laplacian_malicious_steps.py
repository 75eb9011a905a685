"""bench.laplacian_malicious_steps: the per-step byte split adds up, the output is F(q') bit-exact."""
from __future__ import annotations

import pytest

from bench.laplacian_malicious_steps import measure


@pytest.mark.parametrize("engine", ["softspoken", "silent"])
def test_steps_add_up_and_the_output_is_exact(engine):
    r = measure(64, 12, engine)
    assert r["exact"]
    steps = r["steps"]
    assert sum(v["bytes"] for v in steps.values()) == r["session"]["bytes"]
    assert steps["3, 6 (c, chi, check word)"]["bytes"] > 0
    # step 3's c (4 bytes a point: mod 2^M, protocol 33), chi's 32-byte seed, the 8-byte check word
    assert steps["3, 6 (c, chi, check word)"]["bytes"] < 64 * 4 + 32 + 8 + 1024
    assert "2b lift" not in steps  # protocol 33: no lift to 64-bit shares
    # step 5: one bound table of 2^15 6-byte MAC words (mod q = 2^48 - 59, protocol 33) per feature, whatever N
    assert 12 * (1 << 15) * 6 <= steps["5 MAC-word tables"]["bytes"] < 12 * (1 << 15) * 6 + 4096
    # step 4: M + 2 bits per point (v's M + 1 bits and the product OT), one random OT and one 6-byte
    # correction each (plus the OT extension's bytes; M = ceil(log2 12) + 15 + 1 = 20 here)
    step4 = steps["4 MACs on v and b_1 (1 - a_1)"]["bytes"]
    assert 64 * 22 * 6 <= step4 < 64 * 22 * 6 + 64 * 22 * 16 + 4096
    assert r["digits"] == ([3, 3, 3, 3, 3] if engine == "silent" else [5, 5, 5])
