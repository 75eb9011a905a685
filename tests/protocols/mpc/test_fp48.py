"""protocols.mpc.fp48 (F_q, q = 2^48 - 59) against Python integers, with the edge values that
exercise every fold (0, 1, 58, 59, 2^16, 2^32, 2^47, q - 1, and unreduced words up to 2^64 - 1),
and protocols.mpc.commit_fp48's bit MACs (protocol 33) on the checked OT extension."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import commit_fp48, fp48
from protocols.mpc.randomness import SecureRandom, derive_key
from protocols.testing import checked_ot, run_two_party
from secureml.errors import ProtocolError

U64 = np.uint64
Q = fp48.P
CLIENT = 1
EDGE = [0, 1, 2, 58, 59, 60, (1 << 16) - 1, 1 << 16, (1 << 32) - 1, 1 << 32, (1 << 47) - 1, 1 << 47, Q - 2, Q - 1]
WIDE = EDGE + [Q, Q + 1, (1 << 48) - 1, 1 << 48, (1 << 63), (1 << 64) - 2, (1 << 64) - 1]


def _sample(rng, n, values, top):
    r = rng.integers(0, top, n, dtype=np.uint64) if top < 1 << 64 else rng.integers(0, 1 << 64, n, dtype=np.uint64)
    e = np.array(values, dtype=U64)
    return np.concatenate([np.repeat(e, len(values)), r]), np.concatenate([np.tile(e, len(values)), r[::-1]])


def test_q_is_the_prime_2_48_minus_59():
    assert Q == 2**48 - 59
    # deterministic Miller-Rabin: these bases decide every n < 3.3e24
    d, s = Q - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, Q)
        assert x in (1, Q - 1) or any(pow(x, 2 ** r, Q) == Q - 1 for r in range(1, s))


def test_add_sub_on_residues_match_python():
    a, b = _sample(np.random.default_rng(0), 4000, EDGE, Q)
    for f, op in ((fp48.add, lambda x, y: (x + y) % Q), (fp48.sub, lambda x, y: (x - y) % Q)):
        got = f(a, b)
        assert got.dtype == U64 and [int(g) for g in got] == [op(int(x), int(y)) for x, y in zip(a, b)]


def test_mul_reduce_reduce128_match_python_on_any_words():
    a, b = _sample(np.random.default_rng(1), 4000, WIDE, 1 << 64)
    assert [int(g) for g in fp48.mul(a, b)] == [int(x) * int(y) % Q for x, y in zip(a, b)]
    assert [int(g) for g in fp48.reduce(a)] == [int(x) % Q for x in a]
    assert [int(g) for g in fp48.reduce128(a, b)] == [((int(x) << 64) + int(y)) % Q for x, y in zip(a, b)]


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_total_matches_python(axis):
    a = np.random.default_rng(2).integers(0, 1 << 64, (300, 7), dtype=np.uint64)
    a[:, 0] = U64((1 << 64) - 1)
    got = fp48.total(a, axis=axis)
    if axis is None:
        assert int(got) == sum(int(x) for x in a.ravel()) % Q
    else:
        want = [sum(int(x) for x in row) % Q for row in np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])]
        assert [int(g) for g in np.ravel(got)] == want


def test_uniform_is_reduced_seeded_and_redraws_values_at_or_above_q():
    x = fp48.uniform(SecureRandom(derive_key(5, "t")), 10000)
    assert (x == fp48.uniform(SecureRandom(derive_key(5, "t")), 10000)).all() and (x < U64(Q)).all()
    assert 4700 < int((x >> U64(47)).sum()) < 5300  # the top bit set about half the time

    class Rng:
        calls = 0

        def random_u64(self, n):
            Rng.calls += 1
            return np.full(n, U64((Q + 3) << 16)) if Rng.calls == 1 else np.arange(n, dtype=U64) << U64(16)
    assert fp48.uniform(Rng(), 4).tolist() == [0, 1, 2, 3] and Rng.calls == 2


def test_pack_unpack_six_bytes_round_trip():
    a = np.array(EDGE, dtype=U64)
    b = fp48.pack(a)
    assert b.shape == (len(EDGE), 6) and b.dtype == np.uint8 and fp48.unpack(b).tolist() == EDGE


def _bit_mac_session(choices, delta, scales=None, tamper=None):
    n, bits = choices.shape
    seen = {}

    def server(p):
        start = p.ch.bytes_sent
        keys = commit_fp48.bit_macs(p, CLIENT, n=n, bits=bits, delta=delta, scales=scales)
        seen["bytes"] = p.ch.bytes_sent - start
        return keys

    def client(p):
        if tamper is not None:
            orig = p.ch.recv_array

            def recv(dtype, shape):
                return tamper(orig(dtype, shape).copy())
            p.ch.recv_array = recv
        return commit_fp48.bit_macs(p, CLIENT, n=n, bits=bits, choices=choices)

    keys, macs = run_two_party(server, client, seed=6, setup=checked_ot)
    return keys, macs, seen["bytes"]


def test_bit_macs_are_k_plus_c_s_delta_in_6_bytes_per_bit_and_keep_the_ot_keys():
    """M = K + c s Delta (mod q) per bit, s = 1 or the server's per-bit scale (here 0 or 1: the
    product OT of protocol 33), Delta = q - 1 too; 6 bytes per bit; value_mac composes bits."""
    rng = np.random.default_rng(33)
    n, bits = 30, 27
    c = rng.integers(0, 2, (n, bits)).astype(np.uint8)
    scales = np.ones((n, bits), dtype=U64)
    scales[:, -1] = rng.integers(0, 2, n).astype(U64)
    for delta, sc in ((U64(0xBEEF12345677), None), (U64(Q - 1), scales)):
        keys, macs, nbytes = _bit_mac_session(c, delta, sc)
        s = np.ones((n, bits), dtype=object) if sc is None else sc.astype(object)
        want = (keys.key.astype(object) + c.astype(object) * s * int(delta)) % Q
        assert macs.mac.tolist() == want.tolist() and (keys.key < U64(Q)).all()
        assert nbytes - n * bits * 6 in range(0, 64)
        assert np.array_equal(macs.pads, np.where(c[:, :, None].astype(bool), keys.pads[1], keys.pads[0]))
    v = (c[:, :bits - 1].astype(object) * (1 << np.arange(bits - 1)).astype(object)).sum(axis=1)
    got = commit_fp48.value_mac(macs.mac[:, :bits - 1])
    assert got.tolist() == [(int(k) + int(x) * int(delta)) % Q
                            for k, x in zip(commit_fp48.value_mac(keys.key[:, :bits - 1]), v)]


def test_bit_macs_client_refuses_an_unreduced_correction():
    def tamper(raw):
        raw[3] = fp48.pack(np.array([Q], dtype=U64))[0]
        return raw
    with pytest.raises(ProtocolError, match="unreduced"):
        _bit_mac_session(np.zeros((2, 3), dtype=np.uint8), U64(5), tamper=tamper)


def test_reduce128_short_matches_python_for_high_words_below_2_40():
    rng = np.random.default_rng(7)
    lo = np.concatenate([rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True),
                         np.array([0, 58, 59, Q - 1, Q, 2**48, 2**64 - 1] * 3, dtype=np.uint64)])
    hi = np.concatenate([rng.integers(0, 2**40, 2000, dtype=np.uint64),
                         np.array([0] * 7 + [1] * 7 + [2**40 - 1] * 7, dtype=np.uint64)])
    got = fp48.reduce128_short(hi, lo)
    assert [int(g) for g in got] == [((int(h) << 64) + int(l)) % Q for h, l in zip(hi, lo)]
