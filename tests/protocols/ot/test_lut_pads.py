"""FixedKeyAES.lut_pads (the pads of every 1-out-of-2^m table OT: bound_lut, IKNP's table OT) against
its definition, one 16-byte block at a time: pad(i, e, b) = XOR_j H(key_{i,j,e_j}, tweak) with
H(x, t) = pi(pi(x) ^ t) ^ pi(x), tweak = (start + i m, TAG_LUT | e << 8 | j << 24 | b << 40)."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.ot.crypto import FixedKeyAES

U64 = np.uint64


def _reference(aes: FixedKeyAES, p0, p1, start, m, nblk, entries=None) -> np.ndarray:
    k = p0.shape[0]
    ents = range(1 << m) if entries is None else None
    out = []
    for i in range(k):
        row = []
        for e in (ents if entries is None else [int(entries[i])]):
            words = []
            for b in range(nblk):
                acc = np.zeros(2, dtype=U64)
                for j in range(m):
                    px = (p1 if (e >> j) & 1 and p1 is not None else p0)[i, j]  # pi(key), given
                    t = np.array([start + i * m, aes.TAG_LUT | e << 8 | j << 24 | b << 40], dtype=U64)
                    acc ^= aes.permute((px ^ t)[None, :])[0] ^ px
                words.extend(acc)
            row.append(words)
        out.append(row)
    return np.array(out, dtype=U64)


@pytest.mark.parametrize("k,m,nblk,start", [(3, 1, 1, 0), (4, 3, 2, 17), (2, 4, 3, 1 << 40), (2, 2, 5, 9)])
def test_lut_pads_match_the_definition(k, m, nblk, start):
    aes = FixedKeyAES(bytes(range(16)))
    rng = np.random.default_rng(k * 100 + m * 10 + nblk)
    p0 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    p1 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    got = aes.lut_pads(p0, p1, start, m, nblk)
    assert got.shape == (k, 1 << m, 2 * nblk)
    assert np.array_equal(got, _reference(aes, p0, p1, start, m, nblk))
    # the receiver's one entry per table, from the keys its choice bits select
    idx = rng.integers(0, 1 << m, k)
    keys = np.where(((idx[:, None] >> np.arange(m)) & 1)[:, :, None] == 1, p1, p0)
    mine = aes.lut_pads(keys, None, start, m, nblk, entries=idx)
    assert np.array_equal(mine[:, 0], got[np.arange(k), idx])
    assert np.array_equal(mine, _reference(aes, keys, None, start, m, nblk, entries=idx))


def test_lut_pads_are_independent_of_how_many_tables_one_call_takes():
    """Tables are processed in cache-sized chunks: a call on 700 tables (several chunks and a
    remainder at m = 5, 4 blocks) equals calls on slices, each with its own start index."""
    aes = FixedKeyAES(bytes(range(16)))
    rng = np.random.default_rng(11)
    k, m, nblk, start = 700, 5, 4, 3
    p0 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    p1 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    whole = aes.lut_pads(p0, p1, start, m, nblk)
    for a, b in ((0, 1), (1, 257), (257, 700)):
        assert np.array_equal(whole[a:b], aes.lut_pads(p0[a:b], p1[a:b], start + a * m, m, nblk))
    assert np.array_equal(whole[5], _reference(aes, p0[5:6], p1[5:6], start + 5 * m, m, nblk)[0])


@pytest.mark.parametrize("k", [0, 1, 63, 64, 200, 777])
def test_blockwise_tccr_bits_and_word_match_tccr(monkeypatch, k):
    """tccr_bits / tccr_word run in blocks (small here: 64 rows, so several blocks and a tail) and
    equal the first word of tccr's one-block hash, of x or of x ^ xor (the sender's q ^ Delta)."""
    from protocols.ot import crypto

    monkeypatch.setattr(crypto, "_BITS_ROWS", 64)
    aes = crypto.FixedKeyAES(bytes(range(16)))
    rng = np.random.default_rng(k)
    x = rng.integers(0, 2**63, (k, 2), dtype=np.uint64) << np.uint64(1) | rng.integers(0, 2, (k, 2), dtype=np.uint64)
    s = rng.integers(0, 2**63, 2, dtype=np.uint64)
    for start in (0, 2**40 - 100):
        for xor, rows in ((None, x), (s, x ^ s)):
            ref = aes.tccr(rows, start, 1, crypto.FixedKeyAES.TAG_OT)[:, 0]
            np.testing.assert_array_equal(aes.tccr_word(x, start, crypto.FixedKeyAES.TAG_OT, xor=xor), ref)
            np.testing.assert_array_equal(aes.tccr_bits(x, start, crypto.FixedKeyAES.TAG_OT, xor=xor),
                                          (ref & np.uint64(1)).astype(np.uint8))
