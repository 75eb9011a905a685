"""The client-malicious lattice cross term (protocols.mpc.he_matvec_checked) and its
well-formedness proof (protocols.mpc.bfv_proof): an honest client gets exact shares of X q; a real
deviating client -- huge noise, a c1 not from the server's seed, a public key with large noise, a
ciphertext of another query than the committed one, a non-ternary secret -- is caught before the
server computes or sends anything from its ciphertexts."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import authenticated as au
from protocols.mpc import bfv_proof, he_matvec_checked as hc, rlwe
from protocols.mpc.authenticated import MacCheckError
from protocols.testing import checked_ot, run_two_party

U64, I64 = np.uint64, np.int64
SERVER, CLIENT = 0, 1
N_ROWS, D, XB, M = 120, 30, 12, 40




@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(7)
    X = rng.integers(0, 2 ** XB, (N_ROWS, D), dtype=U64)
    q = rng.integers(0, 2 ** XB, D, dtype=U64)
    return X, q, hc.prepare(X, XB, M)


def _run(setup, encrypt=None, q_client=None, seed=5):
    """Fix q's bits by random OTs (the proof's MACs on them), then the checked matvec. ``encrypt``
    replaces the client's key/ciphertext step (a deviating client); ``q_client`` is the query the
    client commits (default q). The server's reply path is armed to fail the test if reached
    after a deviation."""
    X, q, pm = setup
    qc = q if q_client is None else q_client

    def bits(v):
        return ((v[:, None] >> np.arange(XB, dtype=U64)) & U64(1)).astype(np.uint8).ravel()

    def server(p):
        pads = au.random_choices(p, CLIENT, n=D * XB)
        return hc.matvec_sender(p, CLIENT, pm, q_pads=pads, domain=3)

    def client(p):
        pads = au.random_choices(p, CLIENT, n=D * XB, choices=bits(qc))
        return hc.matvec_receiver(p, CLIENT, q, XB, N_ROWS, M, q_pads=pads, q_bits=bits(qc), domain=3,
                                  encrypt=encrypt)

    return run_two_party(server, client, seed=seed, setup=checked_ot)


def test_honest_shares_are_exact(setup):
    X, q, pm = setup
    s0, s1 = _run(setup)
    want = (X.astype(object) @ q.astype(object)) % (1 << M)
    assert ((s0.astype(object) + s1.astype(object)) % (1 << M) == want).all()
    assert pm.plan.flood_bits >= 40 + 7  # 40 bits of distance over every target the client sees


@pytest.fixture
def no_reply(monkeypatch):
    """Fail loudly if the server reaches its reply step (it must abort in the proof)."""
    def boom(*a, **k):
        raise AssertionError("the server computed a reply for an ill-formed ciphertext")
    monkeypatch.setattr(hc, "_flood_residues", boom)


def _shift(ring, a, coeff, amount):
    """a + amount at one coefficient (every prime), amount a Python int."""
    a = a.copy()
    a[..., coeff] = (a[..., coeff] + ring.scalar(amount)[:, 0]) % ring.p[:, 0]
    return a


def test_huge_noise_aborts_before_the_reply(setup, no_reply):
    def enc(ring, rng, seed, msgs, t_bits):
        pk0, c0, w = bfv_proof.client_encrypt(ring, rng, seed, msgs, t_bits)
        return pk0, _shift(ring, c0, 77, (1 << t_bits) * (1 << 60)), w  # noise 2^60 at one coefficient
    with pytest.raises(MacCheckError):
        _run(setup, enc)


def test_noise_just_outside_the_bound_aborts(setup, no_reply):
    # true noise 32 at one coefficient (one past the proven range [-32, 32)); 6 bits cannot hold
    # E = 64, so the client commits E mod 64 = 0 (e = -32): the relation is off by 64 t
    def enc(ring, rng, seed, msgs, t_bits):
        pk0, c0, w = bfv_proof.client_encrypt(ring, rng, seed, msgs, t_bits)
        c0 = _shift(ring, c0, 5, (32 - int(w.e[0, 5])) << t_bits)
        e = w.e.copy()
        e[0, 5] = -32
        return pk0, c0, bfv_proof.Witness(w.s, w.e_pk, e, w.s_hat)
    with pytest.raises(MacCheckError):
        _run(setup, enc)


def encrypt_under_c1_one(ring, rng, seed, msgs, t_bits):
    """A deviating client's encryption under c1 = 1 instead of the seed's c1 (which it could divide
    out of the reply): the proof must reject it (also used by test_reply_pads)."""
    B = msgs.shape[0]
    pk0, _, w = bfv_proof.client_encrypt(ring, rng, seed, msgs, t_bits)
    m = np.zeros((B, ring.n), I64)
    m[:, :msgs.shape[1]] = msgs
    c1 = np.zeros((B, ring.k, ring.n), U64)
    c1[..., 0] = 1
    c1s = ring.intt(ring.mul(ring.ntt(c1), w.s_hat))
    c0 = ring.sub(ring.add(ring.from_signed(m), ring.mul(ring.from_signed(w.e), ring.scalar(1 << t_bits))), c1s)
    return pk0, c0, w


def test_c1_not_from_the_seed_aborts(setup, no_reply):
    with pytest.raises(MacCheckError):
        _run(setup, encrypt_under_c1_one)


def test_public_key_with_large_noise_aborts(setup, no_reply):
    def enc(ring, rng, seed, msgs, t_bits):
        pk0, c0, w = bfv_proof.client_encrypt(ring, rng, seed, msgs, t_bits)
        return _shift(ring, pk0, 100, (1 << t_bits) * 5000), c0, w  # e' = 5000 at one coefficient
    with pytest.raises(MacCheckError):
        _run(setup, enc)


def test_ciphertext_of_another_query_aborts(setup, no_reply):
    X, q, pm = setup
    def enc(ring, rng, seed, msgs, t_bits):
        other = msgs.copy()
        other[0, 3] ^= 1  # one bit of one entry differs from the committed query
        return bfv_proof.client_encrypt(ring, rng, seed, other, t_bits)
    with pytest.raises(MacCheckError):
        _run(setup, enc)


def test_committed_query_other_than_encrypted_aborts(setup, no_reply):
    X, q, pm = setup
    q2 = q.copy()
    q2[-1] ^= U64(1 << (XB - 1))  # commits q2, encrypts q
    with pytest.raises(MacCheckError):
        _run(setup, q_client=q2)


def test_non_ternary_secret_aborts(setup, no_reply):
    def enc(ring, rng, seed, msgs, t_bits):
        pk0, c0, w = bfv_proof.client_encrypt(ring, rng, seed, msgs, t_bits)
        s = w.s.copy()
        s[9] = 2  # encrypts under a secret with a 2; commits s9 as 1 (bits 1, 0)
        s_hat = ring.ntt(ring.from_signed(s))
        pk1, c1 = bfv_proof.public_parts(ring, seed, msgs.shape[0])
        pk0 = ring.sub(ring.mul(ring.from_signed(w.e_pk), ring.scalar(1 << t_bits)), ring.intt(ring.mul(ring.ntt(pk1), s_hat)))
        m = np.zeros((msgs.shape[0], ring.n), I64)
        m[:, :msgs.shape[1]] = msgs
        c0 = ring.sub(ring.add(ring.from_signed(m), ring.mul(ring.from_signed(w.e), ring.scalar(1 << t_bits))),
                      ring.intt(ring.mul(ring.ntt(c1), s_hat)))
        s_com = s.copy()
        s_com[9] = 1
        return pk0, c0, bfv_proof.Witness(s_com, w.e_pk, w.e, s_hat)
    with pytest.raises(MacCheckError):
        _run(setup, enc)


def test_wrong_quotient_of_the_lifted_check_aborts(setup, no_reply, monkeypatch):
    # protocol 35: each prime's combined relation is checked over the integers as Z_int = p k with
    # k committed; a client that commits k + 1 for one prime (and opens the value it would have
    # opened honestly) is caught by the MACs: its opened value is not the committed one
    real = bfv_proof._combined_values

    def off(a, C, bits):
        z = real(a, C, bits)
        z[2] += int(rlwe.ring().primes[2])
        return z
    monkeypatch.setattr(bfv_proof, "_combined_values", off)
    with pytest.raises(MacCheckError):
        _run(setup)


def test_lift_bounds_hold_for_the_largest_relation():
    # Z_int < p (T + 1) <= p 2^kbits, so |Z_int - p k| < 2^K for every committed k < 2^kbits, and the
    # MAC ring keeps STAT_BITS bits above it; at N = 16,384, d = 351 (the CM plan) R is 109 bits: 14 bytes
    ring = rlwe.ring()
    plan = hc.make_plan(16384, 351, 23, 56, ring)
    T = bfv_proof.witness_count(ring, plan.blocks) + 351 * 23
    kbits, K, R = bfv_proof.lift_bits(ring, T)
    assert max(ring.primes) * (T + 1) <= 1 << K and T < 1 << kbits
    assert R - K == bfv_proof.STAT_BITS and plan.mac_bits(ring) == R <= 112


def test_switch_down_keeps_the_plaintext_exact():
    # protocol 35: c0 = m + t e (mod Q) with |e| up to 2^100 (the flooded noise), c1 = 0: the switch
    # to the first two primes and the client's decryption give m mod t exactly, every coefficient
    ring = rlwe.ring()
    rng = np.random.default_rng(3)
    t_bits, m_cnt = 56, 64
    m = [int(x) for x in rng.integers(0, 2 ** 62, m_cnt, dtype=np.uint64)]  # m' may exceed t
    e = [int(a) * 2 ** 50 + int(b) - 2 ** 99 for a, b in zip(rng.integers(0, 2 ** 50, m_cnt, dtype=np.uint64),
                                                            rng.integers(0, 2 ** 50, m_cnt, dtype=np.uint64))]
    W = [(x + (y << t_bits)) % ring.Q for x, y in zip(m, e)]
    a = np.array([[w % p for w in W] for p in ring.primes], dtype=U64)  # (k, m)
    low = hc._switch_down(ring, 2, a, t_bits)
    assert low.shape == (2, m_cnt) and bool((low < ring.p[:2]).all())
    assert hc._decrypt_low(ring, 2, low, t_bits).tolist() == [x % (1 << t_bits) for x in m]


def test_reply_switch_plan_fits_two_primes_not_one():
    ring = rlwe.ring()
    plan = hc.make_plan(16384, 351, 23, 56, ring)
    m_max = (1 << 56) + 351 * ((1 << 23) - 1) ** 2
    noise = plan.noise_bound + (1 << plan.flood_bits)
    assert (plan.reply_primes, plan.trim_bits, plan.word_bytes) == hc.reply_format(ring, m_max, 56, noise) == (2, 28, 9)
    b, Qk = hc._switched_bound(ring, 2, m_max, 56, noise, plan.trim_bits)
    assert 2 * b < Qk and Qk.bit_length() - plan.trim_bits == 8 * plan.word_bytes
    assert 2 * hc._switched_bound(ring, 1, m_max, 56, noise, 0)[0] >= ring.primes[0]  # one prime is too few


def test_trimmed_words_are_the_value_less_a_small_multiple_of_t():
    # the wire word drops bits [M, M + r) of x mod Q': the client's value is x - t eta, 0 <= eta < 2^r,
    # and the decryption of a switched c0 = m + t e (c1 = 0) stays m mod t after the trim
    ring = rlwe.ring()
    rng = np.random.default_rng(4)
    M, r, wb, cnt = 56, 28, 9, 50
    Qk = ring.primes[0] * ring.primes[1]
    xs = [int(a) * 2 ** 50 + int(b) for a, b in zip(rng.integers(0, 2 ** 50, cnt, dtype=np.uint64),
                                                  rng.integers(0, 2 ** 50, cnt, dtype=np.uint64))]
    xs = [x % Qk for x in xs]
    a = np.array([[x % p for x in xs] for p in ring.primes[:2]], dtype=U64)
    got = hc._untrim(ring, hc._trim(ring, a, M, r, wb), M, r, wb, (cnt,))
    for i, x in enumerate(xs):
        eta = (x >> M) & ((1 << r) - 1)
        assert [int(got[j, i]) for j in range(2)] == [(x - (eta << M)) % p for p in ring.primes[:2]]
    m = [int(v) for v in rng.integers(0, 2 ** 60, cnt, dtype=np.uint64)]
    W = [(x + ((int(e) - 2 ** 40) << M)) % ring.Q for x, e in zip(m, rng.integers(0, 2 ** 41, cnt, dtype=np.uint64))]
    low = hc._switch_down(ring, 2, np.array([[w % p for w in W] for p in ring.primes], dtype=U64), M)
    back = hc._untrim(ring, hc._trim(ring, low, M, r, wb), M, r, wb, (cnt,))
    assert hc._decrypt_low(ring, 2, back, M).tolist() == [x % (1 << M) for x in m]


def test_prefix_ring_is_the_ring_at_its_first_primes():
    ring = rlwe.ring()
    low = ring.prefix(2)
    rng = np.random.default_rng(5)
    a = np.stack([rng.integers(0, p, (2, ring.n), dtype=np.uint64) for p in ring.primes], axis=1)
    assert low.primes == ring.primes[:2] and low.Q == ring.primes[0] * ring.primes[1]
    assert (low.ntt(a[:, :2]) == ring.ntt(a)[:, :2]).all() and (low.intt(a[:, :2]) == ring.intt(a)[:, :2]).all()
    assert ring.k == 4 and ring.prefix(2) is low


@pytest.mark.parametrize("bits", [1, 6, 23])
def test_doublings_are_the_products_by_powers_of_two(bits):
    """_coefficient_rows' repeated doubling = v 2^i mod p (what it replaced), residues p - 1 and 0 included."""
    from protocols.mpc import fp_auth
    ring = rlwe.ring()
    field = fp_auth.Field(ring.primes)
    rng = np.random.default_rng(11)
    v = np.stack([rng.integers(0, p, 300, dtype=U64) for p in ring.primes], axis=1)
    v[0] = [p - 1 for p in ring.primes]
    v[1] = 0
    weights = np.array([[pow(2, i, p) for p in ring.primes] for i in range(bits)], dtype=U64)  # 2^i mod p
    want = field.mul(v[:, None, :], np.broadcast_to(weights[None], (300, bits, ring.k))).reshape(-1, ring.k)
    got = bfv_proof._doublings(field, v, bits)
    assert got.dtype == U64 and (got == want).all()


def test_proof_reuses_reversed_transforms_of_the_public_parts():
    """The a* NTTs of step 3 are the NTTs of pk1 and the c1_b reversed (no transform of a*)."""
    ring = rlwe.ring()
    pk1, c1 = bfv_proof.public_parts(ring, b"\x07" * 16, 2)
    a = np.concatenate([c1, pk1[None]], axis=0)
    assert (ring.ntt(ring.adjoint(a)) == ring.ntt(a)[..., ::-1]).all()


@pytest.mark.parametrize("kk", [1, 2, 3])
def test_switch_down_equals_the_integer_definition(kk):
    """_switch_down's folded lazy products = (x + t v) / P mod p_i in Python integers, v = -x t^-1 mod P
    in [0, P), for residues 0, p - 1 and random ones, every kept prime."""
    ring = rlwe.ring()
    rng = np.random.default_rng(21 + kk)
    t_bits, cnt = 56, 40
    xs = [0, ring.Q - 1, 1] + [int.from_bytes(rng.bytes(26), "little") % ring.Q for _ in range(cnt - 3)]
    a = np.array([[x % p for x in xs] for p in ring.primes], dtype=U64)
    a[:, 1] = [p - 1 for p in ring.primes]  # every residue at its maximum (not one integer's residues)
    got = hc._switch_down(ring, kk, a[None], t_bits)[0]
    P = 1
    for p in ring.primes[kk:]:
        P *= p
    t = 1 << t_bits
    for c in range(cnt):
        x = sum(int(a[j, c]) * (ring.Q // p) * pow(ring.Q // p, -1, p) for j, p in enumerate(ring.primes)) % ring.Q
        v = (-x * pow(t, -1, P)) % P
        assert (x + t * v) % P == 0
        assert [int(got[i, c]) for i in range(kk)] == [((x + t * v) // P) % p for p in ring.primes[:kk]]


@pytest.mark.parametrize("rows", [1, 7, 20, 1000])
def test_combine_macs_in_float_products_equals_the_limb_products(rows, monkeypatch):
    """_combine_macs (float64 matrix products of 25-bit and 8-bit limbs, exact) = the 128-bit limb
    products mod 2^128: random values, every coefficient 2^50 - 1 with every MAC 2^128 - 1, and
    exact sums and products over fewer rows than the input (the chunks recombined)."""
    rng = np.random.default_rng(rows)
    a = rng.integers(0, 1 << 50, (rows, 4), dtype=U64)
    m = (rng.integers(0, 1 << 64, rows, dtype=U64), rng.integers(0, 1 << 64, rows, dtype=U64))
    big = np.full((rows, 4), (1 << 50) - 1, dtype=U64), (np.full(rows, ~U64(0)), np.full(rows, ~U64(0)))
    for rows_per_sum, rows_per_product in ((bfv_proof._ROWS, bfv_proof._CHUNK), (7, 3), (6, 6)):
        monkeypatch.setattr(bfv_proof, "_ROWS", rows_per_sum)
        monkeypatch.setattr(bfv_proof, "_CHUNK", rows_per_product)
        for aa, mm in ((a, m), big):
            got, want = bfv_proof._combine_macs(aa, mm), bfv_proof._combine_macs_limbs(aa, mm)
            assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
    with pytest.raises(ValueError):
        bfv_proof._combine_macs(np.full((2, 4), 1 << 50, dtype=U64), (np.zeros(2, U64), np.zeros(2, U64)))


def test_seed_products_formed_early_or_in_the_loop_give_the_same_shares(monkeypatch):
    """The server's seed-only sums (while the client encrypts, up to _SEED_AHEAD outputs, the rest
    in the loop, on the caller's or a helper thread) and the targets-only inverse transform change
    no value: the same shares for the same seeds whatever the counts (none, some of the 3 output
    blocks, all) and threads, and exact."""
    rng = np.random.default_rng(17)
    rows = 700  # n_o = 273 rows per output block: 3 blocks
    X = rng.integers(0, 2 ** XB, (rows, D), dtype=U64)
    q = rng.integers(0, 2 ** XB, D, dtype=U64)
    pm = hc.prepare(X, XB, M)
    assert pm.plan.outputs == 3

    def bits(v):
        return ((v[:, None] >> np.arange(XB, dtype=U64)) & U64(1)).astype(np.uint8).ravel()

    def server(p):
        return hc.matvec_sender(p, CLIENT, pm, q_pads=au.random_choices(p, CLIENT, n=D * XB), domain=3)

    def client(p):
        pads = au.random_choices(p, CLIENT, n=D * XB, choices=bits(q))
        return hc.matvec_receiver(p, CLIENT, q, XB, rows, M, q_pads=pads, q_bits=bits(q), domain=3)

    runs = []
    for ahead, threads, sums_ahead in ((0, "1", 16), (2, "1", 16), (48, "1", 16), (2, "2", 1), (0, "2", 16)):
        monkeypatch.setattr(hc, "_SEED_AHEAD", ahead)
        monkeypatch.setattr(hc, "_SUMS_AHEAD", sums_ahead)
        monkeypatch.setenv("SECUREML_HE_THREADS", threads)  # "2": the block sums on a helper thread
        runs.append(run_two_party(server, client, seed=11, setup=checked_ot))
    want = (X.astype(object) @ q.astype(object)) % (1 << M)
    assert ((runs[0][0].astype(object) + runs[0][1].astype(object)) % (1 << M) == want).all()
    for s0, s1 in runs[1:]:
        assert (s0 == runs[0][0]).all() and (s1 == runs[0][1]).all()


@pytest.mark.parametrize("t_bits,fill", [(56, "query"), (56, "max"), (56, "negative"), (56, "huge"), (60, "query")])
def test_client_encryption_satisfies_its_relations(t_bits, fill):
    """pk0 + pk1 s = t e' and c0_b + c1_b s = m_b + t e_b (mod every prime), with the products and
    t e folded into the inverse transforms (messages below 2^56) or the reduced path (larger
    messages, t > 2^56), and s_hat the transform of s."""
    from protocols.mpc.randomness import SecureRandom
    ring = rlwe.ring()
    rng = np.random.default_rng(len(fill) + t_bits)
    msgs = {"query": rng.integers(0, 1 << 23, (3, 59)), "max": np.full((2, 70), (1 << 56) - 1),
            "negative": np.full((1, 9), -(1 << 55)), "huge": np.full((1, 9), 1 << 58)}[fill]
    pk0, c0, w = bfv_proof.client_encrypt(ring, SecureRandom(b"\x05" * 16), b"\x09" * 16, msgs, t_bits)
    pk1, c1 = bfv_proof.public_parts(ring, b"\x09" * 16, msgs.shape[0])
    assert (w.s_hat == ring.ntt(ring.from_signed(w.s))).all()
    t = ring.scalar(1 << t_bits)
    assert (ring.add(pk0, ring.polymul(pk1, ring.from_signed(w.s))) == ring.mul(ring.from_signed(w.e_pk), t)).all()
    m = np.zeros((msgs.shape[0], ring.n), dtype=I64)
    m[:, :msgs.shape[1]] = msgs
    want = ring.add(ring.from_signed(m), ring.mul(ring.from_signed(w.e), t))
    assert (ring.add(c0, ring.polymul(c1, ring.from_signed(w.s)[None])) == want).all()


def test_a_failing_helper_thread_fails_the_reply(monkeypatch):
    """An error in the helper thread's sums reaches the server's loop (no hang, no partial reply)."""
    ring = rlwe.ring()
    monkeypatch.setenv("SECUREML_HE_THREADS", "2")
    W = np.zeros((3, 1, ring.k, ring.n), dtype=I64)
    bad = (np.zeros((1, ring.k, ring.n + 1), I64), np.zeros((1, ring.k, ring.n + 1)))  # wrong polynomial size
    sums = hc._BlockSums(ring, W, bad, bad, first_c1=0)
    with pytest.raises(ValueError):
        sums.get(0)
    sums.close()


def test_sums_mod_p_equal_the_field_dot_products():
    """_coefficients' constant: per-prime sums over blocks and coefficients (no transposed copies)
    = fp_auth.Field.dot of the transposed arrays, for random residues and every residue p - 1;
    make_plan's cache returns the plan it computes."""
    from protocols.mpc import fp_auth
    ring = rlwe.ring()
    field = fp_auth.Field(ring.primes)
    rng = np.random.default_rng(4)
    for fill in ("random", "max"):
        x = rng.integers(0, 1 << 50, (7, ring.k, ring.n), dtype=U64) % ring.p
        y = rng.integers(0, 1 << 50, (7, ring.k, ring.n), dtype=U64) % ring.p
        if fill == "max":
            x = y = np.broadcast_to(ring.p - U64(1), x.shape).copy()
        flat = lambda a: a.transpose(0, 2, 1).reshape(-1, ring.k)
        assert (bfv_proof._sum_mod(ring, ring.mul(x, y)) == field.dot(flat(x), flat(y))).all()
        assert (bfv_proof._sum_mod(ring, x) == field.dot(flat(x), np.ones_like(flat(x)))).all()
    assert hc.make_plan(700, D, XB, M, ring) is hc.make_plan(700, D, XB, M, ring)
    assert hc.make_plan(700, D, XB, M, ring) == hc._make_plan(700, D, XB, M, ring)


@pytest.mark.parametrize("value,want", [("", False), ("1", False), ("2", True), (" 4 ", True), ("two", False),
                                        ("2.5", False), ("-3", False)])
def test_helper_threads_reads_only_whole_numbers(monkeypatch, value, want):
    """A malformed SECUREML_HE_THREADS leaves the default path instead of failing every session."""
    from protocols.mpc import he_matvec_checked as hc
    monkeypatch.setenv("SECUREML_HE_THREADS", value)
    assert hc.helper_threads() is want


@pytest.mark.parametrize("blocks", [1, 6, 8, 9, 17])
def test_block_dot_equals_the_sum_of_lazy_products(blocks):
    """The server's sums sum_b C_b W_(o,b) (stop 11: products and float quotients summed apart, one
    product by p, both tables per pass over W_(o,b)) are the very integers the sum of rlwe's lazy
    products gives -- for random residues and every residue p - 1, with one table or two, and for
    block counts past the 8 quotients one float sum holds (9, 17)."""
    ring = rlwe.ring()
    k, n = ring.k, ring.n
    rng = np.random.default_rng(blocks)
    p = ring.p.astype(I64)[None]  # (1, k, 1)
    for fill in ("random", "max"):
        if fill == "max":
            W = np.broadcast_to(p - 1, (blocks, k, n)).copy()
            tabs = [ring.lazy_table(np.broadcast_to(p - 1, (blocks, k, n)).astype(U64)) for _ in range(2)]
        else:
            W = (rng.integers(0, 1 << 62, (blocks, k, n)) % p).astype(I64)
            tabs = [ring.lazy_table((rng.integers(0, 1 << 62, (blocks, k, n)) % p).astype(U64)) for _ in range(2)]
        want = []
        for C in tabs:
            s = np.zeros((k, n), I64)
            for b in range(blocks):
                s += ring.lazy_mul(W[b], (C[0][b], C[1][b]))
            want.append(s)
        bufs = (np.empty((k, n), I64), np.empty((k, n), I64))
        one = hc._lazy_dot(ring, W, tabs[0], np.empty((k, n), I64), *bufs)
        assert (one == want[0]).all()
        out2 = np.empty((k, n), I64)
        both = hc._lazy_dot(ring, W, tabs[0], np.empty((k, n), I64), *bufs, tabs[1], out2)
        assert (both == want[0]).all() and (out2 == want[1]).all()
