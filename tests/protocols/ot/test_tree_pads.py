"""FixedKeyAES.tree_pads (the pads of bound_lut's 1-out-of-2^m table OTs since protocol 33) against
its definition, one node at a time: s_0(e') = H(K_0^{e'_0}, t(i, 0, e')), s_j(e') =
H(s_(j-1)(e' mod 2^j) ^ K_j^{e'_j}, t(i, j, e')), H(x, t) = pi(x ^ t) ^ x,
t(i, j, e') = (lows_i + j, TAG_TREE | e' << 8); blocks H(s_(m-1)(e), (lows_i, TAG_TREE_BLOCK | e << 8 | b << 40))."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.ot.crypto import FixedKeyAES

U64 = np.uint64


def _h(aes: FixedKeyAES, x: np.ndarray, t: tuple[int, int]) -> np.ndarray:
    return aes.permute((x ^ np.array(t, dtype=U64))[None, :])[0] ^ x


def _reference(aes: FixedKeyAES, p0, p1, lows, m, nblk, entries=None) -> np.ndarray:
    out = []
    for i in range(p0.shape[0]):
        row = []
        for e in (range(1 << m) if entries is None else [int(entries[i])]):
            s = None
            for j in range(m):
                key = (p1 if (e >> j) & 1 and p1 is not None else p0)[i, j]
                low = e & ((2 << j) - 1)
                s = _h(aes, key if s is None else s ^ key, (int(lows[i]) + j, aes.TAG_TREE | low << 8))
            if nblk == 1:
                row.append(list(s))
            else:
                row.append([w for b in range(nblk)
                            for w in _h(aes, s, (int(lows[i]), aes.TAG_TREE_BLOCK | e << 8 | b << 40))])
        out.append(row)
    return np.array(out, dtype=U64)


@pytest.mark.parametrize("k,m,nblk", [(3, 1, 1), (4, 3, 2), (2, 5, 1), (2, 2, 5)])
def test_tree_pads_match_the_definition_and_the_chooser_gets_its_entry(k, m, nblk):
    aes = FixedKeyAES(bytes(range(16)))
    rng = np.random.default_rng(k * 100 + m * 10 + nblk)
    p0 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    p1 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    lows = (np.arange(k, dtype=U64) << U64(8)) | U64(5)
    got = aes.tree_pads(p0, p1, lows, m, nblk)
    assert got.shape == (k, 1 << m, 2 * nblk)
    assert np.array_equal(got, _reference(aes, p0, p1, lows, m, nblk))
    idx = rng.integers(0, 1 << m, k)
    keys = np.where(((idx[:, None] >> np.arange(m)) & 1)[:, :, None] == 1, p1, p0)
    mine = aes.tree_pads(keys, None, lows, m, nblk, entries=idx)
    assert np.array_equal(mine[:, 0], got[np.arange(k), idx])


@pytest.mark.parametrize("k,m,nblk,group_bytes", [(7, 3, 1, 2 * 8 * 16), (5, 4, 2, 3 * 16 * 16), (3, 2, 5, 1)])
def test_the_senders_table_groups_give_the_same_pads(k, m, nblk, group_bytes, monkeypatch):
    """The sender builds its tables in groups (a last level of ~_TREE_GROUP_BYTES each, here forced
    small: groups of 2, 3 and 1 tables, the last one shorter): every pad is still the definition's."""
    from protocols.ot import crypto
    monkeypatch.setattr(crypto, "_TREE_GROUP_BYTES", group_bytes)
    aes = FixedKeyAES(bytes(range(16)))
    rng = np.random.default_rng(k + m + nblk)
    p0 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    p1 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    lows = (np.arange(k, dtype=U64) << U64(8)) | U64(3)
    assert np.array_equal(aes.tree_pads(p0, p1, lows, m, nblk), _reference(aes, p0, p1, lows, m, nblk))


def test_a_chooser_with_one_wrong_key_gets_none_of_the_other_entries():
    """The keys of index r open entry r only: with the key of bit j swapped for a guess, the
    chooser's pad matches no entry of the table (every entry's path hashes an unchosen key)."""
    aes = FixedKeyAES(bytes(range(16)))
    rng = np.random.default_rng(3)
    k, m = 4, 6
    p0 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    p1 = rng.integers(0, 1 << 64, (k, m, 2), dtype=U64)
    lows = np.arange(k, dtype=U64) << U64(8)
    table = aes.tree_pads(p0, p1, lows, m, 1)
    r = rng.integers(0, 1 << m, k)
    keys = np.where(((r[:, None] >> np.arange(m)) & 1)[:, :, None] == 1, p1, p0)
    for j in range(m):
        guess = keys.copy()
        guess[:, j] = rng.integers(0, 1 << 64, (k, 2), dtype=U64)
        for e in range(1 << m):
            pad = aes.tree_pads(guess, None, lows, m, 1, entries=np.full(k, e))[:, 0]
            assert not (pad[:, None, :] == table).all(axis=2).any()
    flat = table.reshape(-1, 2)
    assert len({(int(a), int(b)) for a, b in flat}) == flat.shape[0]  # no two entries share a pad
