"""The lean RLWE inner product (protocols/mpc/rlwe_ip.py): exact ring arithmetic, bounded noise,
fresh re-randomisation, and clear errors for malformed polynomials."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import rlwe_ip as R
from protocols.mpc.randomness import SecureRandom
from secureml.errors import ProtocolError


def _value(limbs: np.ndarray, i: int) -> int:
    return sum(int(limbs[b, i]) << (16 * b) for b in range(limbs.shape[0]))


def test_ring_choice_stays_inside_the_he_standard():
    assert R.ring_for(64) == R.RingParams(4096, 108)
    assert R.ring_for(4096).n == 4096 and R.ring_for(4097).n == 8192
    # HomomorphicEncryption.org, 128-bit classical: log q <= 109 (n = 4,096), <= 218 (n = 8,192)
    assert R.Q_BITS[4096] <= 109 and R.Q_BITS[8192] <= 218
    with pytest.raises(ProtocolError, match="at most 8192 features"):
        R.ring_for(8193)


def test_public_key_is_an_rlwe_sample_with_small_noise():
    """pk0 + p1 s (exact integer negacyclic product, recomputed here coefficient by coefficient)
    is the small error e_p: the FFT route computed the product exactly."""
    rp = R.ring_for(100)
    key = R.ClientKey(rp, SecureRandom(b"k" * 16))
    ring = key.ring
    n, q = rp.n, 1 << rp.q_bits
    p1 = [_value(ring.p1, j) for j in range(n)]
    s = key.s.tolist()
    for i in (0, 1, 777, n - 1):
        prod = sum(p1[j] * (s[i - j] if j <= i else -s[i - j + n]) for j in range(n))
        e = (_value(key.pk0, i) + prod) % q
        e = e - q if e > q // 2 else e
        assert abs(e) <= R.ETA


@pytest.mark.parametrize("n_features", [4096, 4101])
def test_inner_product_is_exact_up_to_the_stated_noise(n_features):
    rng = SecureRandom(b"t" * 16)
    rp = R.ring_for(n_features)
    key = R.ClientKey(rp, rng)
    g = np.random.default_rng(n_features)
    w = g.integers(-(1 << 21), 1 << 21, n_features)
    phi = g.integers(0, 1 << 20, n_features)
    pw = R.PreparedWeights(w, rp)
    delta = rp.q_bits - 56
    const = -123456789
    exact = int(np.dot(phi.astype(object), w.astype(object))) + const
    seed, c0 = key.encrypt(phi, delta, rng)
    c0 = key.ring.from_bytes(c0, "ciphertext")
    replies = [R.server_reply(pw, key.pk0, seed, c0, const, delta, rng) for _ in range(2)]
    assert not np.array_equal(replies[0][1], replies[1][1])  # c1' is re-randomised every time
    bound = pw.error_units(delta)
    assert pw.flood_bits() >= R.STAT_SECURITY + np.log2(R.ETA * np.abs(w).sum())
    for v, top in replies:
        err = key.decrypt(v, top) / 2.0**delta - exact
        assert abs(err) <= bound
    # the 40-bit flood is most of the stated error (the other noises and the 64-bit cut add at most as much)
    assert 2.0 ** (pw.flood_bits() - delta) <= bound <= 2.5 * 2.0 ** (pw.flood_bits() - delta)


def test_malformed_polynomials_are_refused_in_one_line():
    rp = R.ring_for(10)
    ring = R.ring(rp)
    with pytest.raises(ProtocolError, match=r"^ciphertext: expected 57344 bytes, got 5$"):
        ring.from_bytes(b"12345", "ciphertext")
    bad = np.zeros((rp.limbs, rp.n), dtype="<u2")
    bad[-1, 3] = 0xFFFF  # above q = 2^108 in the top limb
    with pytest.raises(ProtocolError, match="out of range"):
        ring.from_bytes(bad.tobytes(), "public key")


@pytest.mark.parametrize("n_features", [4096, 8000])
def test_fused_encryption_and_wrapping_decryption_match_the_limb_reference(n_features):
    """The client's hot path (:meth:`Ring.normalize32_bytes` writing the wire bytes in one pass,
    and decryption by one wrapping uint64 dot product) gives exactly the bytes and the value of
    the limb-by-limb reference (normalize32 + to_bytes; the top 64 bits split into 16-bit limbs
    and an exact integer dot product mod q), for every bucket split of Delta."""
    rp = R.ring_for(n_features)
    key = R.ClientKey(rp, SecureRandom(b"f" * 16))
    ring = key.ring
    gen = np.random.default_rng(n_features)
    for delta_bits in (60, 64, 70, 88, rp.q_bits - 24):
        vals = gen.integers(0, 2**20, n_features, dtype=np.int64)
        fused = key.encrypt_with(key.mask(b"1" * 16, SecureRandom(b"e" * 16)), vals, delta_bits)[1]
        ref = ring.to_bytes(key.encrypt_limbs(key.mask(b"1" * 16, SecureRandom(b"e" * 16)), vals, delta_bits))
        assert fused == ref
    for _ in range(20):
        top = gen.integers(0, 2**64, ring.n, dtype=np.uint64)
        v = int(gen.integers(0, 2**62)) << (rp.q_bits - 64)
        limbs = np.stack([((top >> np.uint64(16 * i)) & np.uint64(0xFFFF)).astype(np.int64) for i in range(4)])
        m = (v + (ring.dot(limbs, key.s_rev) << (rp.q_bits - 64))) % ring.Q
        assert key.decrypt(v, top) == (m - ring.Q if m >= ring.Q >> 1 else m)


def test_a_bound_rerandomisation_answers_its_key_alone_and_once():
    """server_bind makes the key's part of v, (pk0 u)[n-1] + e0 + Delta c + flood, before the query:
    the answer for that key then needs neither pk0 nor randomness and decrypts to the same inner
    product (within the stated noise); an answer under another key makes the part afresh; the
    part is spent with its re-randomisation (a second answer is refused) and the same seed bound
    twice gives two different parts (fresh e0 and flood each time). The request's c0 is read as a
    uint16 view (view_bytes), checked like from_bytes."""
    rng = SecureRandom(b"b" * 16)
    rp = R.ring_for(4096)
    key, other = R.ClientKey(rp, rng), R.ClientKey(rp, rng)
    g = np.random.default_rng(7)
    w = g.integers(-(1 << 21), 1 << 21, 4096)
    phi = g.integers(0, 1 << 20, 4096)
    pw = R.PreparedWeights(w, rp)
    delta, const = rp.q_bits - 56, 987654
    exact = int(np.dot(phi.astype(object), w.astype(object))) + const
    seed = b"s" * 16
    for k in (key, other):
        _, c0 = k.encrypt_with(k.mask(seed, rng), phi, delta)
        view = k.ring.view_bytes(c0, "ciphertext")
        assert view.dtype == np.uint16 and np.array_equal(view, k.ring.from_bytes(c0, "ciphertext"))
        prep = R.server_prepare(pw, seed, rng)
        R.server_bind(pw, prep, key.key_id, key.pk0, const, delta, rng)
        assert prep.bound_key == key.key_id
        if k is key:  # its own key: no pk0, no randomness needed
            v = R.server_finish(pw, prep, None, view, const, delta, None, key_id=key.key_id)
        else:  # another key: the part is made now, from that key
            with pytest.raises(ProtocolError):
                R.server_finish(pw, R.server_prepare(pw, seed, rng), None, view, const, delta, None, key_id=k.key_id)
            v = R.server_finish(pw, prep, k.pk0, view, const, delta, rng, key_id=k.key_id)
        assert abs(k.decrypt(v, prep.top) / 2.0**delta - exact) <= pw.error_units(delta)
        assert prep.spent and prep.bound_key is None
        with pytest.raises(ProtocolError, match="one query only"):
            R.server_finish(pw, prep, k.pk0, view, const, delta, rng, key_id=k.key_id)
        with pytest.raises(ProtocolError, match="one query only"):
            R.server_bind(pw, prep, key.key_id, key.pk0, const, delta, rng)
    a, b = R.server_prepare(pw, seed, rng), R.server_prepare(pw, seed, rng)
    R.server_bind(pw, a, key.key_id, key.pk0, const, delta, rng)
    R.server_bind(pw, b, key.key_id, key.pk0, const, delta, rng)
    assert a._bound[1] != b._bound[1]
    assert a.top_bytes == a.top.astype("<u8").tobytes()
