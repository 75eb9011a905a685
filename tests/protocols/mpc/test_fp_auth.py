"""MACs mod primes on committed client bits (protocols.mpc.fp_auth) and the ring arithmetic under
them (protocols.mpc.rlwe): honest relations pass; a wrong value, a wrong MAC or a non-bit abort."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import fp_auth, rlwe
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party

U64 = np.uint64
SERVER, CLIENT = 0, 1




def test_ring_product_and_adjoint_match_schoolbook():
    R = rlwe.Ring(16)
    rng = np.random.default_rng(1)
    a = np.stack([rng.integers(0, p, 16, dtype=U64) for p in R.primes])
    b = np.stack([rng.integers(0, p, 16, dtype=U64) for p in R.primes])
    c = R.polymul(a, b)
    for i, p in enumerate(R.primes):
        ref = [0] * 16
        for x in range(16):
            for y in range(16):
                v = int(a[i, x]) * int(b[i, y])
                ref[(x + y) % 16] += v if x + y < 16 else -v
        assert [r % p for r in ref] == [int(v) for v in c[i]]
    # <chi, a s> = <a* chi, s>: the identity the well-formedness check rests on
    g = R.polymul(R.adjoint(a), b)
    for i, p in enumerate(R.primes):
        lhs = sum(int(b[i, j]) * int(R.polymul(a, a)[i, j]) for j in range(16)) % p
        rhs = sum(int(g[i, j]) * int(a[i, j]) for j in range(16)) % p
        assert lhs == rhs


def test_mulmod_exact_at_the_prime_size():
    R = rlwe.ring()
    rng = np.random.default_rng(2)
    a = np.stack([rng.integers(0, p, 4000, dtype=U64) for p in R.primes])
    b = np.stack([np.concatenate([rng.integers(0, p, 3998, dtype=U64), np.array([p - 1, p - 2], dtype=U64)]) for p in R.primes])
    got = R.mul(a, b)
    for i, p in enumerate(R.primes):
        assert [int(x) * int(y) % p for x, y in zip(a[i], b[i])] == [int(v) for v in got[i]]


def _session(bits, coef, const, tamper=None, seed=1):
    """Commit ``bits``; check sum coef_j bits_j + const = 0 mod every prime. ``tamper(mac, macs)``
    lets the client edit what it sends."""
    field = fp_auth.Field(rlwe.ring().primes)
    n = len(bits)

    def server(p):
        keys = fp_auth.new_keys(p, field)
        K = fp_auth.commit_bits(p, CLIENT, field, n=n, domain=5, keys=keys)
        fp_auth.check_zero(p, CLIENT, field, key=field.dot(coef, K)[None], const=const[None], keys=keys)
        return True

    def client(p):
        M = fp_auth.commit_bits(p, CLIENT, field, n=n, domain=5, bits=bits)
        mac = field.dot(coef, M)
        if tamper is not None:
            mac = tamper(field, mac, M)
        fp_auth.check_zero(p, CLIENT, field, mac=mac[None])
        return True

    return run_two_party(server, client, seed=seed, setup=checked_ot)


def _relation(field, bits, rng):
    coef = np.stack([rng.integers(0, p, len(bits), dtype=U64) for p in field.primes], axis=1)
    val = field.dot(coef, np.repeat(np.asarray(bits, U64)[:, None], field.k, axis=1))
    return coef, field.sub(np.zeros(field.k, U64), val)  # const = -sum coef bits


def test_honest_relation_passes_and_wrong_value_aborts():
    field = fp_auth.Field(rlwe.ring().primes)
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 500).astype(np.uint8)
    coef, const = _relation(field, bits, rng)
    assert _session(bits, coef, const) == (True, True)
    wrong = bits.copy()
    wrong[17] ^= 1  # the client commits another bit than the relation needs
    with pytest.raises(MacCheckError):
        _session(wrong, coef, const)
    off = const.copy()
    off[2] = (off[2] + U64(1)) % field.p[2]  # the relation fails mod one prime only
    with pytest.raises(MacCheckError):
        _session(bits, coef, off)


def test_forged_mac_and_non_bit_abort():
    field = fp_auth.Field(rlwe.ring().primes)
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, 300).astype(np.uint8)
    coef, const = _relation(field, bits, rng)
    with pytest.raises(MacCheckError):  # a MAC moved by one in one prime
        _session(bits, coef, const, tamper=lambda f, mac, M: f.add(mac, np.array([0, 1, 0, 0], U64)))
    # a "non-bit": the client pretends bit 5 is 2 (adds one more M_5 into its combination); the
    # relation is built for that value, so only the MACs can tell
    bits2 = bits.astype(np.int64)
    bits2[5] = 2
    coef2, const2 = coef, field.sub(np.zeros(field.k, U64),
                                     field.dot(coef, np.repeat(bits2.astype(U64)[:, None], field.k, axis=1)))
    with pytest.raises(MacCheckError):
        _session(bits, coef2, const2, tamper=lambda f, mac, M: f.add(mac, f.mul(coef[5], M[5])))
