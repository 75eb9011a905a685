"""column_ot's PRG: the block index has a tweak field of its own (no pad reuse between blocks)."""
from __future__ import annotations

import numpy as np

from protocols.krr import column_ot
from protocols.krr.column_ot import expand_keys

U64 = np.uint64


def test_tag_and_block_field_do_not_overlap():
    # the old tag (bits 18, 20, 22 set) OR-ed with the block index made blocks b and b + 2^18 equal
    assert int(column_ot._TAG) & (column_ot._MAX_BLOCKS - 1) == 0
    assert column_ot._MAX_BLOCKS == 1 << 24


def test_blocks_2_18_apart_get_different_pads():
    keys = np.array([[1, 2], [3, 4]], dtype=U64)
    words = 2 * ((1 << 18) + 2)  # blocks 0 and 2^18 (each block: two words)
    out = expand_keys(keys, words).reshape(2, -1, 2)
    assert not np.array_equal(out[:, 0], out[:, 1 << 18])
    assert not np.array_equal(out[:, 1], out[:, (1 << 18) + 1])
    # and the pads stay distinct block to block overall (a 2^19-block stream has no repeated block)
    flat = out[0].view([("a", U64), ("b", U64)]).ravel()
    assert np.unique(flat).shape[0] == flat.shape[0]
