"""The numpy ring of the checked lattice cross term (protocols.mpc.rlwe): the NTT's lazy signed
residues (no reduction inside the stages) must give exactly the canonical evaluations, also at the
extremes of the bound argument (every residue p - 1, the largest signed inputs) and for every
batch shape and ring size (the two-layout split differs with log2 n)."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc import rlwe

U64, I64 = np.uint64, np.int64


def _evaluate(R: rlwe.Ring, a: np.ndarray, points: list[int]) -> np.ndarray:
    """a(psi^(2i+1)) mod p_j by Horner in Python integers: (k, len(points))."""
    out = np.zeros((R.k, len(points)), dtype=U64)
    for j, p in enumerate(R.primes):
        psi = int(R.twist[j, 1])
        coeffs = [int(v) % p for v in a[j]]
        for c, i in enumerate(points):
            x, acc = pow(psi, 2 * i + 1, p), 0
            for v in reversed(coeffs):
                acc = (acc * x + v) % p
            out[j, c] = acc
    return out


def _schoolbook(R: rlwe.Ring, a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    n, out = R.n, []
    for j, p in enumerate(R.primes):
        ref = [0] * n
        for x in range(n):
            for y in range(n):
                v = int(a[j, x]) * int(b[j, y])
                ref[(x + y) % n] += v if x + y < n else -v
        out.append([r % p for r in ref])
    return out


@pytest.mark.parametrize("fill", ["random", "max"])
def test_ntt_matches_direct_evaluation_at_the_deployed_size(fill):
    R = rlwe.ring()
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 62, (R.k, R.n), dtype=U64) % R.p if fill == "random" else np.repeat(R.p - U64(1), R.n, 1)
    points = [0, 1, 2, 4095, 4096, R.n - 1]
    got = R.ntt(a)
    assert got.dtype == U64 and bool((got < R.p).all())
    assert np.array_equal(got[:, points], _evaluate(R, a, points))
    assert np.array_equal(R.intt(got), a)
    # a scale merged into the twist: ntt(a, c) = ntt(a) c
    c = (1 << 56) + 12345
    assert np.array_equal(R.ntt(a, scale=c), R.mul(got, R.scalar(c)))


def test_ntt_takes_small_signed_inputs_as_they_are():
    R = rlwe.ring()
    rng = np.random.default_rng(4)
    s = rng.integers(-21, 22, (3, R.n)).astype(I64)
    s[0, :5] = -(1 << 49)  # large magnitudes below p are allowed too
    got = R.ntt(np.broadcast_to(s[:, None, :], (3, R.k, R.n)))
    assert np.array_equal(got, R.ntt(R.from_signed(s)))


@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_small_rings_products_match_schoolbook(n):
    """log2 n odd and even: the (R, G) split is square or not."""
    R = rlwe.Ring(n)
    rng = np.random.default_rng(n)
    a = rng.integers(0, 1 << 62, (R.k, n), dtype=U64) % R.p
    b = rng.integers(0, 1 << 62, (R.k, n), dtype=U64) % R.p
    assert [[int(v) for v in row] for row in R.polymul(a, b)] == _schoolbook(R, a, b)
    worst = np.repeat(R.p - U64(1), n, 1)
    assert [[int(v) for v in row] for row in R.polymul(worst, worst)] == _schoolbook(R, worst, worst)


def test_batched_transforms_equal_one_at_a_time():
    R = rlwe.Ring(256)
    rng = np.random.default_rng(5)
    a = rng.integers(0, 1 << 62, (2, 3, R.k, R.n), dtype=U64) % R.p
    fwd, inv = R.ntt(a), R.intt(a)
    for i in range(2):
        for j in range(3):
            assert np.array_equal(fwd[i, j], R.ntt(a[i, j])) and np.array_equal(inv[i, j], R.intt(a[i, j]))


def test_lazy_products_summed_then_reduced_are_exact():
    """The sums of matvec_sender: up to 2^12 lazy products of canonical factors in int64."""
    R = rlwe.ring()
    rng = np.random.default_rng(6)
    terms = 4096
    v = rng.integers(0, 1 << 62, (terms, R.k, 8), dtype=U64) % R.p
    w = rng.integers(0, 1 << 62, (terms, R.k, 8), dtype=U64) % R.p
    v[: terms // 2], w[: terms // 2] = R.p - U64(1), R.p - U64(1)  # the largest products
    acc = np.zeros((R.k, 8), dtype=I64)
    for i in range(terms):
        acc += R.lazy_mul(v[i].view(I64), R.lazy_table(w[i]))
    got = R.canonical(acc)
    for j, p in enumerate(R.primes):
        want = [sum(int(v[i, j, c]) * int(w[i, j, c]) for i in range(terms)) % p for c in range(8)]
        assert [int(x) for x in got[j]] == want


def _cbd_unpacked(rng, shape: tuple[int, ...]) -> np.ndarray:
    """The definition: ones in the first eta of 2 eta unpacked bits less ones in the second eta."""
    bits = rng.random_bits((*shape, 2 * rlwe.CBD_ETA)).reshape(*shape, 2, rlwe.CBD_ETA)
    s = bits.sum(axis=-1, dtype=I64)
    return s[..., 0] - s[..., 1]


@pytest.mark.parametrize("shape", [(8, 8192), (1,), (3,), (5, 7), (8, 138), (0,)])
def test_cbd_counts_on_words_equal_the_unpacked_bits(shape):
    """Ring.cbd's popcounts of masked big-endian words = the sums of unpacked bits, the same stream
    consumed (the next draw agrees), for sizes not a multiple of the 4-coefficient group."""
    from protocols.mpc.randomness import SecureRandom
    R = rlwe.ring()
    a, b = SecureRandom(b"cbd-reference-01"), SecureRandom(b"cbd-reference-01")
    want, got = _cbd_unpacked(a, shape), R.cbd(b, shape)
    assert got.shape == want.shape and got.dtype == I64
    assert (got == want).all()
    assert a.random_bytes(16) == b.random_bytes(16)
    if got.size > 1000:
        assert got.min() >= -rlwe.CBD_ETA and got.max() <= rlwe.CBD_ETA and got.std() > 2.5


def test_popcount_byte_table_matches_the_ufunc(monkeypatch):
    words = np.random.default_rng(3).integers(0, 2 ** 63, 1000, dtype=U64) * U64(2) + U64(1)
    words[:3] = [U64(0), U64(2 ** 64 - 1), U64(1 << 63)]
    want = np.array([bin(int(w)).count("1") for w in words])
    assert (rlwe._popcount(words).astype(I64) == want).all()
    monkeypatch.delattr(np, "bitwise_count")
    assert (rlwe._popcount(words).astype(I64) == want).all()


@pytest.mark.parametrize("n,kk", [(64, 4), (1024, 4), (8192, 4), (8192, 2)])
def test_intt_at_equals_the_whole_inverse_at_those_indices(n, kk):
    """intt_at (the stages with h < H, then n / H products per index with the untwist folded in)
    = intt(a)[..., idx]: random residues, every residue p - 1, zeros; the server's target set
    (stride 59), random and all indices; batches; the two-prime ring of the client's reply."""
    R = rlwe.ring(n) if n == 8192 else rlwe.Ring(n)
    R = R.prefix(kk) if kk < R.k else R
    rng = np.random.default_rng(n + kk)
    sets = [np.arange(min(138, n // 59 + 1)) * 59 + 58, np.sort(rng.choice(n, 50, replace=False)),
            np.arange(n), np.array([0, n - 1])]
    sets[0] = sets[0][sets[0] < n]
    for fill in ("random", "max", "zero"):
        a = rng.integers(0, 1 << 50, (3, R.k, n), dtype=U64) % R.p
        if fill == "max":
            a = np.broadcast_to(R.p - U64(1), a.shape).copy()
        elif fill == "zero":
            a[:] = 0
        full = R.intt(a)
        for idx in sets:
            got = R.intt_at(a, idx)
            assert got.dtype == U64 and got.shape == (3, R.k, idx.shape[0])
            assert (got == full[..., idx]).all()
            assert (R.intt_at(a[1], idx) == full[1][..., idx]).all()


def test_ternary_twist_is_the_same_transform():
    """ntt(u, ternary=True) (the twist as one exact product) = ntt(u) for u in {-1, 0, 1}, also
    with the scale merged into the twist."""
    R = rlwe.ring()
    rng = np.random.default_rng(5)
    for u in (rng.integers(-1, 2, R.n), np.full(R.n, -1), np.ones(R.n, dtype=I64)):
        ub = np.broadcast_to(u, (R.k, R.n))
        for scale in (1, 1 << 56):
            assert (R.ntt(ub, scale, ternary=True) == R.ntt(ub, scale)).all()


@pytest.mark.parametrize("n", [64, 8192])
def test_inverse_transforms_take_lazy_sums_and_an_added_term(n):
    """intt / intt_at of lazy signed int64 inputs up to LAZY_IN p - 1 in magnitude (the server's
    unreduced sums of products) = those of the canonical residues, at the extremes (every input
    +-(LAZY_IN p - 1)) and random; intt(a, plus) = intt(a) + plus mod p for |plus| up to 21 p."""
    R = rlwe.ring(n) if n == 8192 else rlwe.Ring(n)
    rng = np.random.default_rng(n + 1)
    top = rlwe.LAZY_IN * R.p.astype(I64) - 1  # (k, 1)
    idx = np.arange(0, n, 59)
    for fill in ("random", "max", "min", "alternate"):
        if fill == "random":
            a = (rng.integers(-(1 << 62), 1 << 62, (2, R.k, n)) % (2 * top + 1)) - top
        elif fill == "alternate":
            a = np.broadcast_to(top, (2, R.k, n)) * np.where(np.arange(n) % 2 == 0, 1, -1)
        else:
            a = np.broadcast_to(top if fill == "max" else -top, (2, R.k, n)).copy()
        a = np.ascontiguousarray(a, dtype=I64)
        canon = (a % R.p.astype(I64)).astype(U64)
        want = R.intt(canon)
        assert (R.intt(a) == want).all()
        assert (R.intt_at(a, idx) == want[..., idx]).all()
        plus = rng.integers(-21, 22, (2, 1, n)) * R.p.astype(I64)[None] + rng.integers(-99, 99, (2, R.k, n))
        exp = ((want.astype(object) + plus.astype(object)) % R.p.astype(object)).astype(U64)
        assert (R.intt(a, plus=plus) == exp).all()
    with pytest.raises(ValueError):
        R.intt(canon, plus=plus[:1])


@pytest.mark.parametrize("n", [8, 64, 8192])
def test_tables_built_by_products_are_the_powers(n):
    """The twist, untwist, bit reversal and every stage's twiddles (built by vectorised products)
    against their definitions by Python pow, on every entry (n <= 64) or 500 random ones."""
    R = rlwe.ring(n) if n == 8192 else rlwe.Ring(n)
    rng = np.random.default_rng(n)
    js = range(n) if n <= 64 else rng.integers(0, n, 500)
    for i, p in enumerate(R.primes):
        psi = int(R.twist[i, 1])
        assert pow(psi, n, p) == p - 1
        ninv = pow(n, -1, p)
        for j in js:
            assert int(R.twist[i, j]) == pow(psi, int(j), p)
            assert int(R.untwist[i, j]) == pow(psi, -int(j), p) * ninv % p
            assert int(R.rev[j]) == int(format(int(j), f"0{R.logn}b")[::-1], 2)
        for sign in (1, -1):
            for h, w, wq in R._stages[sign]:
                root = pow(psi, sign * 2 * (n // (2 * h)), p)
                flat = w[i].ravel()
                # stored shaped like the stage's half: (R / 2h, h, G) for h < R (the exponent is the
                # position along h, whole over the blocks and g), (1, h / R, R) after
                e = (np.broadcast_to(np.arange(h)[None, :, None], w[i].shape) if h < R._R
                     else R._R * np.arange(h // R._R)[:, None] + np.arange(R._R)).ravel()
                assert flat.shape == e.shape
                for c in (range(flat.shape[0]) if flat.shape[0] <= 64 else rng.integers(0, flat.shape[0], 50)):
                    assert int(flat[c]) == pow(root, int(e[c]), p)


def test_whole_prime_arrays_are_the_broadcast_primes():
    """Ring._p_full (stop 11: p stored whole for numpy's fast loops) holds p_i at every position of
    the prime axis for the shapes the transforms and products use, a prefix ring its own primes
    (not its parent's cached arrays), and shapes past 2^20 positions get the broadcast view."""
    R = rlwe.ring()
    for shape, ndim in (((R.k, R.n), 1), ((R.k, R.n // 2), 1), ((3, R.k, R.n), 1), ((R.k, 64, 128), 2),
                        ((R.k, 8, 4, 128), 3)):
        got = R._p_full(shape, ndim)
        assert got.shape == shape and got.dtype == I64
        assert (got == np.broadcast_to(R._p_like(ndim), shape)).all()
        assert R._p_full(shape, ndim) is got  # cached
    low = R.prefix(2)
    got = low._p_full((2, R.n), 1)
    assert (got == np.array(R.primes[:2], dtype=I64)[:, None]).all()
    assert R._p_full((R.k, R.n), 1).shape == (R.k, R.n)  # the parent's cache is its own
    big = R._p_full((R.k, 1 << 19), 1)
    assert big.shape == (R.k, 1)
