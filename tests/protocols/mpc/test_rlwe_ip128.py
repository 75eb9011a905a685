"""Lattice inner products in Z_2^128 (protocols/mpc/rlwe_ip128.py): exact against Python integers,
a noise plan inside the HE standard, fresh re-randomisation, one-line errors for wrong sizes."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import rlwe_ip128 as M
from protocols.mpc import u128
from protocols.mpc.randomness import SecureRandom
from protocols.mpc.rlwe_ip import ClientKey, RingParams
from protocols.testing import run_two_party
from secureml.errors import ProtocolError

U64 = np.uint64


def _random_128(g: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    """Uniform 128-bit values, plus the extremes (0, 2^127 - 1, 2^127, 2^128 - 1) that balancing must map right."""
    hi = g.integers(0, 2**64, shape, dtype=U64)
    lo = g.integers(0, 2**64, shape, dtype=U64)
    top = U64(2**64 - 1)
    hi.flat[:4], lo.flat[:4] = [0, 2**63 - 1, 2**63, top], [0, top, 0, top]
    return hi, lo


def _want(hi, lo, v) -> list[int]:
    k, n = v.shape
    vals = np.array(u128.to_int((hi.ravel(), lo.ravel())), dtype=object).reshape(k, n)
    return [sum(int(a) * int(b) for a, b in zip(vals[i], v[i])) % u128.MOD for i in range(k)]


@pytest.mark.parametrize("N,k", [(7, 1), (16384 + 3, 2)])  # one short chunk; a full chunk and a short one
def test_shares_are_exact_mod_2_128(N, k):
    g = np.random.default_rng(N)
    hi, lo = _random_128(g, (k, N))
    v = g.integers(0, 1 << 41, (k, N), dtype=U64)
    v.flat[:2] = [0, (1 << 41) - 1]

    def server(p):
        return M.inner_products128(p, values=(hi, lo), n_bits=41)

    def client(p):
        return M.inner_products128(p, bits=v, n_bits=41)

    res = run_two_party(server, client, seed=5)
    s0, s1 = res
    assert [(a + b) % u128.MOD for a, b in zip(s0, s1)] == _want(hi, lo, v)
    assert s1 != _want(hi, lo, v)  # the client's share alone is masked by the server's m
    plan = M.make_plan(N)
    c, s = res.parties[1].ch, res.parties[0].ch
    # key message and ciphertexts up, one reply down; sizes as the plan says (plus array headers)
    assert c.messages_sent == 2 and s.messages_sent == 1
    assert plan.up_bytes(k) < c.bytes_sent < plan.up_bytes(k) + 200
    assert plan.down_bytes(k) < s.bytes_sent < plan.down_bytes(k) + 100


def test_plan_stays_inside_the_he_standard_and_beats_ot_from_about_a_thousand_points():
    for N in (1, 1000, 16384, 1 << 22):
        p = M.make_plan(N)
        assert p.q_bits <= M.MAX_Q_BITS and p.q_bits % 8 == 0
        assert p.flood_bits >= 40 + np.log2(M.ETA * N * 2.0**127)  # 40 bits of statistical hiding
    assert M.make_plan(16384).traffic_bytes(1) < 1.4e6 < M.gilboa_bytes(16384, 41) / 8
    assert M.make_plan(1000).traffic_bytes(1) > M.gilboa_bytes(1000, 41)
    assert M.make_plan(1200).traffic_bytes(1) < M.gilboa_bytes(1200, 41)


def test_reply_is_rerandomised_and_the_noise_stays_inside_the_bound():
    """Two replies to one request differ in every truncated c1' byte row; both decrypt exactly, and the
    decrypted noise (val + c1' s - Delta x) is below Delta / 2 with room to spare."""
    N = 300
    plan = M.make_plan(N)
    rng = SecureRandom(b"r" * 16)
    key = ClientKey(RingParams(plan.n, plan.q_bits), rng)
    g = np.random.default_rng(3)
    hi, lo = _random_128(g, (1, N))
    v = g.integers(0, 1 << 41, (1, N), dtype=U64)
    key_msg, seeds = M.client_key_message(plan, key, 1, rng)
    cts = M.client_ciphertexts(plan, key, seeds, v, rng)
    (rep1, sh1), (rep2, sh2) = (M.server_finish(plan, M.server_prepare(plan, key_msg, hi, lo, rng), cts, rng)
                                for _ in range(2))
    assert rep1.shape == rep2.shape == (plan.down_bytes(1),)
    c1a = rep1[plan.coeff_bytes:].reshape(plan.n, -1)
    c1b = rep2[plan.coeff_bytes:].reshape(plan.n, -1)
    assert (c1a != c1b).any(axis=1).mean() > 0.99
    want = _want(hi, lo, v)[0]
    Q = 1 << plan.q_bits
    for rep, sh in ((rep1, sh1), (rep2, sh2)):
        got = M.client_finish(plan, key, rep, 1)[0]
        assert (got + sh[0]) % u128.MOD == want
        val = int.from_bytes(rep[:plan.coeff_bytes].tobytes(), "little")
        top = M._bytes_to_limbs(rep[plan.coeff_bytes:].reshape(plan.n, -1))
        noise = (val + M._combine(top @ key.s_rev, plan.c1_drop) - (got << plan.delta_bits)) % Q
        noise = noise - Q if noise >= Q // 2 else noise
        # the flood dominates (uniform in +-2^b: below 2^(b-8) with probability 2^-8) and all of it
        # stays below Delta / 2 = 2^(b+1)
        assert 2.0 ** (plan.flood_bits - 8) < abs(noise) < 2.0 ** (plan.flood_bits + 1)


def test_wrong_size_ciphertext_is_a_one_line_error():
    N = 50
    g = np.random.default_rng(9)
    hi, lo = _random_128(g, (1, N))

    plan = M.make_plan(N)
    want = plan.up_bytes(1) - plan.pk_bytes - M.SEED_BYTES

    def short_client(p):  # an honest key message, then a ciphertext one byte short
        cl = M.LatticeSumClient(p, N, 1)
        p.ch.send_array(M.client_ciphertexts(plan, cl.key, cl.seeds, np.ones((1, N), dtype=U64), p.rng)[:-1])
        return p.ch.recv_array()

    with pytest.raises(ProtocolError) as err:
        run_two_party(lambda p: M.inner_products128(p, values=(hi, lo), n_bits=41), short_client, seed=1, timeout=20)
    text = str(err.value)
    assert "\n" not in text
    assert text == f"lattice inner product: client ciphertexts of {want - 1} bytes, expected {want}"

    def long_key_client(p):  # a key message one byte long
        key = ClientKey(RingParams(plan.n, plan.q_bits), p.rng)
        p.ch.send_array(np.concatenate([M.client_key_message(plan, key, 1, p.rng)[0], np.zeros(1, np.uint8)]))
        return p.ch.recv_array()

    with pytest.raises(ProtocolError, match="exceeds limit"):
        run_two_party(lambda p: M.inner_products128(p, values=(hi, lo), n_bits=41), long_key_client, seed=1,
                      timeout=20)

    def short_key_client(p):  # a key message one byte short: refused when it arrives
        key = ClientKey(RingParams(plan.n, plan.q_bits), p.rng)
        p.ch.send_array(M.client_key_message(plan, key, 1, p.rng)[0][:-1])
        return p.ch.recv_array()

    with pytest.raises(ProtocolError, match=r"^lattice inner product: client key message of \d+ bytes, expected \d+$"):
        run_two_party(lambda p: M.LatticeSumServer(p, N, 1), short_key_client, seed=1, timeout=20)
    with pytest.raises(ProtocolError, match=r"^lattice inner product: client key message of 3 bytes, expected \d+$"):
        M.server_prepare(plan, np.zeros(3, dtype=np.uint8), hi, lo, SecureRandom(b"k" * 16))
    with pytest.raises(ProtocolError, match="server reply of 3 bytes"):
        M.client_finish(M.make_plan(N), None, np.zeros(3, dtype=np.uint8), 1)


def test_values_wider_than_advertised_are_refused_before_anything_is_sent():
    y = np.array([[1, 2, 1 << 41]], dtype=U64)
    with pytest.raises(ProtocolError, match="wider than advertised"):
        run_two_party(lambda p: M.inner_products128(p, values=(y, y), n_bits=41),
                      lambda p: M.inner_products128(p, bits=y, n_bits=41), timeout=10)
