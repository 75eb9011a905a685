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
    # step 3's c (8 bytes a point), chi's 32-byte seed (protocol 32; was 8 N bytes), the 8-byte check word
    assert steps["3, 6 (c, chi, check word)"]["bytes"] < 64 * 8 + 32 + 8 + 1024
    # step 2b: one COT per point, a (64 - M)-bit correction each (5 bytes at M = 25) plus the OT's bits
    assert 64 * 5 <= steps["2b lift"]["bytes"] < 64 * 5 + 4096
    # step 5: one bound table of 2^15 8-byte MAC words (mod p = 2^64 - 59, protocol 31) per feature, whatever N
    assert 12 * (1 << 15) * 8 <= steps["5 MAC-word tables"]["bytes"] < 12 * (1 << 15) * 8 + 4096
    # step 4: 64 bits per point, one random OT and one 8-byte correction each (plus the OT extension's bytes)
    assert steps["4 commit u"]["bytes"] >= 64 * 64 * 8
    assert r["digits"] == ([3, 3, 3, 3, 3] if engine == "silent" else [5, 5, 5])
