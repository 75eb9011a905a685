"""bench.malicious_steps attributes every byte of a client-malicious Gaussian session to a step (the
rows sum to the channel's count) and its tail rows match tail_plan's exact per-point bytes."""
from __future__ import annotations

from bench import malicious_steps as ms


def test_rows_sum_to_the_session_and_the_tail_matches_the_plan() -> None:
    rows, total = ms.run(256, 16)
    assert total["rounds"] == 22 and total["abs_error"] < 1e-4
    assert sum(r.get("bytes", (r["client_sent_B"] or 0) + (r["client_received_B"] or 0)) for r in rows) == total["bytes"]
    by = {r["step"]: r for r in rows}
    plan = total["tail_plan"]
    g = by["10 G tables"]["client_received_B"]
    chain = by["11 chain tables"]["client_received_B"]
    # the tables' payload is the plan's bytes per point times N; the rest is framing (< 64 B a message)
    assert 0 <= g - 256 * plan["g_bytes_per_point"] < 2 * 64
    assert 0 <= chain - 256 * plan["chain_bytes_per_point"] < plan["digits"] * 64
    assert by["10 G tables"]["client_sent_B"] == 0 and by["11 chain tables"]["client_sent_B"] == 0  # one flight
