"""Key separation of the fixed-key AES permutations (review of protocols 38-39, protocol 40).

derive_key personalises BLAKE2b with the tag's first 16 bytes only: two tags that agree there
give one key.  Before protocol 40, "secureml/authenticated/expand" (the commitments' MAC pads,
protocols.mpc.authenticated._expand) and "secureml/authenticated/bound-lut" (bound table OTs'
tree pads) did -- and since both hash the same random-OT keys with TCCR under tweaks
(row, 3 | ...) and (lows + j, TAG_TREE = 3 | e' << 8), value 0's level-0 tree node equalled its
bit's commitment MAC pad."""
from __future__ import annotations

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


def test_derive_key_sees_only_16_bytes_of_the_tag():
    """The reason for the test above (not a property to keep: a guard against relying on it)."""
    assert derive_key(b"secureml/authenticated/expand") == derive_key(b"secureml/authenticated/bound-lut")
    assert derive_key(b"secureml/au-lut") != derive_key(b"secureml/authenticated/expand")


def test_bound_lut_level0_node_is_not_the_commitment_mac_pad():
    """Value 0, digit (a, a+1) (one level, one block: the pad *is* the level-0 node): under the old
    shared key its entry-b pad equals TCCR(m_b, (a, 3)) = the commitment's MAC pad of that OT for
    b = 0 (cot128's _expand, domain 0, block 0); under bound_lut's own key it does not."""
    rng = np.random.default_rng(40)
    n, bits, a = 3, 8, 5
    m0 = rng.integers(0, 256, (n * bits, 16), dtype=np.uint8)
    m1 = rng.integers(0, 256, (n * bits, 16), dtype=np.uint8)
    hi, lo = au._expand(m0, 1)  # the commitment's MAC pad words, row = value * bits + bit
    mac = np.stack([lo[:, 0], hi[:, 0]], axis=1)
    pads = (m0.reshape(n, bits, 16), m1.reshape(n, bits, 16))

    old = FixedKeyAES(derive_key(b"secureml/authenticated/bound-lut"))
    p0 = old.permute(np.ascontiguousarray(pads[0][:, a : a + 1]).view(U64).reshape(n, 1, 2))
    p1 = old.permute(np.ascontiguousarray(pads[1][:, a : a + 1]).view(U64).reshape(n, 1, 2))
    before = old.tree_pads(p0, p1, au._lut_lows(n, a), 1, 1)  # (n, 2, 2)
    np.testing.assert_array_equal(before[0, 0], mac[a])  # the collision (value 0 only)
    assert not np.array_equal(before[1, 0], mac[bits + a])

    now = au._sender_pad_words(pads, (a, a + 1), 1)
    assert now.shape == (n, 2, 2)
    for i in range(n):
        assert not np.array_equal(now[i, 0], mac[i * bits + a])
        assert not np.array_equal(now[i, 1], mac[i * bits + a])
