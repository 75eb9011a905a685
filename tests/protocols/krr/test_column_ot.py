"""1-out-of-2^m OT of long messages (keys by table OT, entries encrypted under them)."""
from __future__ import annotations

import numpy as np

from protocols.krr.column_ot import column_ot, expand_keys
from protocols.testing import run_two_party, secrets_in_transcript


def test_column_ot_delivers_the_chosen_entry_only():
    rng = np.random.default_rng(0)
    tables = rng.integers(0, 2**63, (5, 16, 7), dtype=np.uint64)
    idx = rng.integers(0, 16, 5)
    res = run_two_party(lambda p: column_ot(p, 1, tables=tables), lambda p: column_ot(p, 1, indices=idx, m=4, w=7),
                        setup=lambda p: p.setup_ot(), record=True)
    np.testing.assert_array_equal(res[1], tables[np.arange(5), idx])
    # no entry travels in the clear, chosen or not
    assert secrets_in_transcript(res.parties[1].ch.transcript, tables.ravel()) == []


def test_expand_keys_is_deterministic_and_key_separated():
    keys = np.arange(8, dtype=np.uint64).reshape(4, 2)
    a, b = expand_keys(keys, 5), expand_keys(keys, 5)
    assert a.shape == (4, 5) and np.array_equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) == 4  # distinct keys, distinct pads
    assert np.array_equal(expand_keys(keys, 3), a[:, :3])  # a prefix of the same stream
