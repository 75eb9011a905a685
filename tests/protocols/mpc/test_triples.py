"""Beaver and AND triples generated from OT between the parties (no dealer)."""
from __future__ import annotations

import numpy as np

from protocols.mpc.triples import beaver_triples, bool_triples
from protocols.testing import run_two_party, transcript_arrays

U64 = np.uint64


def _check_arith(r0, r1) -> None:
    a, b, c = (r0[i] + r1[i] for i in range(3))
    assert np.array_equal(a * b, c)


def _check_bool(r0, r1) -> None:
    a, b, c = (r0[i] ^ r1[i] for i in range(3))
    assert np.array_equal(a & b, c)


def test_triples_in_batches_and_zero() -> None:
    r0, r1 = run_two_party(lambda p: beaver_triples(p, 300, batch=64), lambda p: beaver_triples(p, 300, batch=64))
    _check_arith(r0, r1)
    z0, z1 = run_two_party(lambda p: (beaver_triples(p, 0), bool_triples(p, 0)), lambda p: (beaver_triples(p, 0), bool_triples(p, 0)))
    assert all(x.size == 0 for x in (*z0[0], *z0[1]))


def test_bool_triples_hold() -> None:
    r0, r1 = run_two_party(lambda p: bool_triples(p, 700), lambda p: bool_triples(p, 700))
    _check_bool(r0, r1)


def test_triple_generation_transcript_hides_shares() -> None:
    """No party's triple share a_p or b_p appears in anything it sends."""
    res = run_two_party(lambda p: beaver_triples(p, 512), lambda p: beaver_triples(p, 512), record=True)
    for role in (0, 1):
        a, b, _ = res[role]
        secret = set(a.tolist()) | set(b.tolist())
        sent = [x for x in transcript_arrays(res.parties[role].ch.transcript) if x.dtype == U64]
        words = set(np.concatenate([s.ravel() for s in sent]).tolist()) if sent else set()
        assert not (secret & words)
        raw = b"".join(f for d, f in res.parties[role].ch.transcript if d == "send")
        assert all(a[i].tobytes() not in raw for i in range(0, 512, 37))
