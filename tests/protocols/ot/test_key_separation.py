"""Key separation of the fixed-key AES permutations (review of protocols 38-39, protocol 40).

derive_key personalises BLAKE2b with the tag's first 16 bytes only: two tags that agree there
give one key.  Before protocol 40, "secureml/authenticated/expand" (the commitments' MAC pads,
protocols.mpc.authenticated._expand) and "secureml/authenticated/bound-lut" (bound table OTs'
tree pads) did -- and since both hash the same random-OT keys with TCCR under tweaks
(row, 3 | ...) and (lows + j, TAG_TREE = 3 | e' << 8), value 0's level-0 tree node equalled its
bit's commitment MAC pad.  Since protocol 41 derive_key hashes the whole tag (the class of bug is
gone); the literal tags stay distinct in 16 bytes too, and the old derivation is rebuilt here to show
the collision it had."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from protocols.mpc import authenticated as au
from protocols.ot.crypto import FixedKeyAES, derive_key

U64 = np.uint64
ROOT = Path(__file__).resolve().parents[3]


def test_every_literal_derive_key_tag_is_distinct_in_its_first_16_bytes():
    tags = set()
    for path in list((ROOT / "protocols").rglob("*.py")) + list((ROOT / "secureml").rglob("*.py")):
        text = path.read_text()
        tags |= set(re.findall(r'derive_key\(b"([^"]+)"', text))
        tags |= set(re.findall(r'_TAG = b"([^"]+)"', text))
    assert len(tags) >= 15  # the scan sees the code base's tags
    by_prefix: dict[bytes, set[str]] = {}
    for t in tags:
        by_prefix.setdefault(t.encode()[:16], set()).add(t)
    clashes = {p: ts for p, ts in by_prefix.items() if len(ts) > 1}
    assert not clashes, f"tags that derive the same keys: {clashes}"


def _derive_key_before_41(tag: bytes, *parts: bytes, size: int = 16) -> bytes:
    """derive_key up to protocol 40: the tag only as BLAKE2b's 16-byte personalisation."""
    h = hashlib.blake2b(digest_size=size, person=tag[:16].ljust(16, b"\0"))
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def test_derive_key_sees_the_whole_tag():
    """Protocol 41: tags that agree in their first 16 bytes derive different keys (the derivation
    before it gave one key), and the tag/parts encoding is injective."""
    a, b = b"secureml/authenticated/expand", b"secureml/authenticated/bound-lut"
    assert _derive_key_before_41(a) == _derive_key_before_41(b)  # the old flaw, rebuilt
    assert derive_key(a) != derive_key(b)
    assert derive_key(b"secureml/au-lut") != derive_key(a)
    assert len({derive_key(b"tag", b"x"), derive_key(b"tagx"), derive_key(b"tag", b"", b"x")}) == 3
    assert derive_key(b"t" * 40) != derive_key(b"t" * 41)


def test_bound_lut_level0_node_is_not_the_commitment_mac_pad():
    """Value 0, digit (a, a+1) (one level, one block: the pad *is* the level-0 node): under the old
    shared key its entry-b pad equals TCCR(m_b, (a, 3)) = the commitment's MAC pad of that OT for
    b = 0 (cot128's _expand, domain 0, block 0); under bound_lut's own key it does not."""
    rng = np.random.default_rng(40)
    n, bits, a = 3, 8, 5
    m0 = rng.integers(0, 256, (n * bits, 16), dtype=np.uint8)
    m1 = rng.integers(0, 256, (n * bits, 16), dtype=np.uint8)
    # the commitment's MAC pad words (au._expand: TCCR under _KEY, block 0, domain 0), row = value *
    # bits + bit: under the derivation before protocol 41 (old_mac) and now (mac)
    old_expand = FixedKeyAES(_derive_key_before_41(b"secureml/authenticated/expand"))
    old_mac = old_expand.tccr(np.ascontiguousarray(m0).view(U64).reshape(-1, 2), 0, 1, au._TAG)[:, :2]
    hi, lo = au._expand(m0, 1)
    mac = np.stack([lo[:, 0], hi[:, 0]], axis=1)
    pads = (m0.reshape(n, bits, 16), m1.reshape(n, bits, 16))

    old = FixedKeyAES(_derive_key_before_41(b"secureml/authenticated/bound-lut"))
    p0 = old.permute(np.ascontiguousarray(pads[0][:, a : a + 1]).view(U64).reshape(n, 1, 2))
    p1 = old.permute(np.ascontiguousarray(pads[1][:, a : a + 1]).view(U64).reshape(n, 1, 2))
    before = old.tree_pads(p0, p1, au._lut_lows(n, a), 1, 1)  # (n, 2, 2)
    np.testing.assert_array_equal(before[0, 0], old_mac[a])  # the collision (value 0 only)
    assert not np.array_equal(before[1, 0], old_mac[bits + a])

    now = au._sender_pad_words(pads, (a, a + 1), 1)
    assert now.shape == (n, 2, 2)
    for i in range(n):
        assert not np.array_equal(now[i, 0], mac[i * bits + a])
        assert not np.array_equal(now[i, 1], mac[i * bits + a])
