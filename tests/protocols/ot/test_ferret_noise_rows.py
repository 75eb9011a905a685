"""Protocol 38 review: the receiver's noise bit lands at the punctured leaf's node-major row for the
real parameter sets' batch shapes (b11-setup: one short batch of 699 trees of 2^8 leaves; b11: 38
batches of 128 trees of 2^11 and a short one of 107; FERRET_SETUP: 512 + 406 trees of 2^9;
FERRET_MAIN: 40 batches of 32 trees of 2^13).  The batches run through both engines' real I2/I3
(_spcot, over a channel) on base COTs with known choice bits; the small seeded pair only supplies
the session's GGM key and Delta."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.net.transport import local_channel_pair
from protocols.ot import ferret
from protocols.ot.ferret import (FERRET_B11, FERRET_B11_SETUP, FERRET_MAIN, FERRET_SETUP, FerretReceiver,
                                 FerretSender, LPNParams)
from tests.protocols.ot.test_ferret import MAIN as SMALL, SETUP as SMALL_SETUP, U64, _both  # tiny sets, two-thread runner


@pytest.fixture(scope="module")
def pair():
    c0, c1 = local_channel_pair(timeout=120)
    s = FerretSender(c0, seed=38, params=SMALL, bootstrap=SMALL_SETUP)
    r = FerretReceiver(c1, seed=39, params=SMALL, bootstrap=SMALL_SETUP)
    _both(s.setup, r.setup)
    return s, r


def _batches(p: LPNParams) -> list[tuple[int, int]]:
    """The engine's (i0, i1) per batch (_FerretState._step)."""
    per = max(1, ferret._BATCH_ROWS >> p.h)
    return [(i0, min(p.t, i0 + per)) for i0 in range(0, p.t, per)]


@pytest.mark.parametrize("p", [FERRET_B11_SETUP, FERRET_B11, FERRET_SETUP, FERRET_MAIN],
                         ids=["b11-setup", "b11", "setup", "main"])
def test_noise_bit_lands_at_the_node_major_row_of_every_batch_shape(pair, p):
    s, r = pair
    batches = _batches(p)
    sizes = sorted({i1 - i0 for i0, i1 in batches})
    shapes = {FERRET_B11_SETUP: [699], FERRET_B11: [107, 128], FERRET_SETUP: [406, 512], FERRET_MAIN: [32]}
    assert sizes == shapes[p]  # the shapes named above, short last batches included
    rng = np.random.default_rng(p.h)
    delta = s._s64
    assert int(delta[0]) & 1  # bit-0 convention: the choice bit is bit 0 of t
    for i0, i1 in (batches[0], batches[-1]):
        bsz = i1 - i0
        t = rng.integers(0, 2**64 - 1, (bsz, p.h, 2), dtype=U64, endpoint=True)
        c = t[:, :, 0] & U64(1)  # the receiver's base choice bits r_{i,l}
        q = t ^ (c[:, :, None] * delta)  # the sender's base rows: t = q ^ r Delta
        V, W = _both(lambda: s._spcot(q, i0, p.h), lambda: r._spcot(t, i0, p.h))
        assert V.shape == W.shape == (1 << p.h, bsz, 2)
        alpha = ((1 - c.astype(np.int64)) << np.arange(p.h)[None, :]).sum(axis=1)  # the punctured leaf
        rows_v, rows_w = V.reshape(-1, 2), W.reshape(-1, 2)  # the engine's rows (_step's reshape)
        noise = alpha * bsz + np.arange(bsz)  # row x*B + i of the batch: leaf alpha_i of tree i0 + i
        diff = rows_v ^ rows_w
        np.testing.assert_array_equal(diff[noise], np.broadcast_to(delta, (bsz, 2)))
        others = np.ones(rows_v.shape[0], dtype=bool)
        others[noise] = False
        assert not diff[others].any()  # every other leaf: the same string on both sides
        assert not (rows_v[:, 0] & U64(1)).any()  # the sender's V: bit 0 clear
        np.testing.assert_array_equal((rows_w[:, 0] & U64(1)).astype(bool), ~others)  # e: one 1 per tree
