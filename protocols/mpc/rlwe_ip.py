"""One lattice inner product <phi, w>: lean RLWE (BFV-style) arithmetic in numpy, no SEAL.

The query owner (client, key owner) holds an integer vector phi' (F' <= n entries), the model owner
(server) an integer vector w'. The client learns ``Delta (phi'.w' + c) + N`` for the server's
public-to-it constant c and a noise N that is statistically independent of w' (40 bits); the server
learns nothing. It serves compact random-feature models (:mod:`protocols.krr.linear_he`), where the
whole two-party part of a prediction is this one inner product.

Ring and modulus (:func:`ring_for`): R_q = Z_q[X] / (X^n + 1), n = 4,096 (F' <= 4,096) or 8,192
(F' <= 8,192), q = 2^108 or 2^128. The HomomorphicEncryption.org standard allows log q <= 109 at
n = 4,096 and <= 218 at n = 8,192 for 128-bit security (ternary secret, error sd ~3.2): both sit
inside. A power-of-two q makes every reduction a mask; elements are stored as ``L = ceil(log q / 16)``
limbs of 16 bits, and products go through float64 FFTs of *balanced* limbs (|limb| <= 2^15, so each
negacyclic convolution stays below n 2^30 and rounds exactly; :func:`_fold` checks it every time).

Distributions: secrets s, u uniform ternary; errors centred binomial with eta = 21 (sd 3.24,
|e| <= 21, the sd of SEAL's and the standard's error); uniform polynomials from AES-128-CTR
(:class:`protocols.mpc.randomness.SecureRandom`).

Public key with a common random polynomial: ``p1`` is derived from a fixed public label
(:meth:`Ring.crs`), the same for every client, as RLWE allows for a uniform public ``a``; a client's
public key is ``pk0 = -p1 s + e_p`` alone (one polynomial up, once per client and server).

Protocol (client = key owner, server = weight owner; the target coefficient is k = n - 1):
  0. keys (client, once per process and server: :class:`ClientKey`): s ternary, pk0 = -p1 s + e_p,
     sent once; the server keeps it under ``key_id = SHA-256(pk0)[:16]``.
  1. client, before the query (:meth:`ClientKey.mask`): a fresh 16-byte seed for a uniform ``a``
     and the mask ``-a s + e`` (:class:`Mask`); server, before the query
     (:func:`server_prepare`): fresh ternary u, e1 and
       c1' = a W + p1 u + e1                                 (the whole polynomial, re-randomised)
     with ``W = sum_j w'_j X^(n-1-j)`` (:class:`Rerandomised`, keeping u).
  2. client (:meth:`ClientKey.encrypt_with`, spends the mask): ``c0 = -a s + e + Delta Phi`` with
     ``Phi = sum_j phi'_j X^j``; sends (seed, c0).
  3. server (:func:`server_finish`, spends the re-randomisation): the coefficient k of ``Phi W`` is
     ``phi'.w'`` (no wrap-around); with fresh e0 and a flood ``f`` uniform in [-2^b, 2^b]
       v   = (c0 W)[k] + (pk0 u)[k] + e0 + Delta c + f      (one number: only k is ever decrypted)
     ``(c0 W)[k]`` and ``(pk0 u)[k]`` are plain dot products; only step 1's ``a W`` and ``p1 u``
     need FFTs. Everything but ``(c0 W)[k]`` can be made before the query once the client's key is
     known (:func:`server_bind`: the same terms, fresh e0 and flood, single use with the
     re-randomisation they belong to). Sends v (log q bits) and c1' cut to its top 64 bits (a deterministic function of
     c1': the client loses < n 2^(log q - 64) of precision, below one unit of the product).
  4. client: ``m = v + (c1' s)[k] = Delta (phi'.w' + c) + (e W)[k] + (e_p u)[k] + (e1 s)[k] + e0 + f``.
Step 1 needs only the seed, so both halves can be made before the query is known (an
offline/online split, :mod:`protocols.krr.linear_he`); each is single use -- :class:`Mask` and
:class:`Rerandomised` refuse a second use: one a and e under two queries would give the server
``c0 - c0' = Delta (Phi - Phi')``; the re-randomisation's argument below (a fresh RLWE sample
p1 u + e1 masking a W, and (pk0 u)[k] + e0 its other half) is made for one answer, and two answers
sharing u and e1 would have correlated masks (under two values of a, their difference is
``(a - a') W`` plus small noise: w). A re-randomisation is bound to its seed and spent by one answer.

Threat model (semi-honest; see also docs/compact-models.md):
* Server's view: pk0 and the c0s are RLWE samples (fresh uniform a per query, one secret s): they
  hide phi under decision-RLWE at 128-bit parameters.
* Client's view: c1' = a W + (p1 u + e1) is masked by a fresh RLWE sample under the server's secret u
  (without it c1' = a W would give W = c1' / a), and (pk0 u)[k] + e0 is its second component at k,
  so (v, c1') together are an LPR encryption of the target only. The non-target coefficients of
  ``c0 W`` (partial convolutions of phi with w) are never sent. The one noise term that depends on
  w, ``(e W)[k]`` with the client's *own* e, is flooded: |(e W)[k]| <= 21 ||w'||_1 = B and the flood
  is uniform on [-2^b, 2^b] with 2^b >= 2^40 B, so the client's view is within statistical distance
  2^-41 of one that depends on w only through phi'.w' + c. (The flood width tracks log2 ||w'||_1,
  which a client can estimate from many answers; the public fixed-point plan already reveals
  log2 ||w||_2 to within a bit.)
* A *malicious* client is not covered: a c0 or pk0 that is not an RLWE sample with small noise
  (e.g. a huge e, or a pk0 that makes (pk0 u)[k] reveal u) breaks the flooding bound or the
  re-randomisation. The server's :func:`check_client_message` runs before it computes anything:
  today it checks sizes and ranges only; a zero-knowledge proof that pk0 and c0 are well formed
  (short s, e, e_p; e.g. :mod:`protocols.mpc.bfv_proof`, adapted to this encoding) slots in there.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from protocols.mpc.randomness import SecureRandom
from protocols.net.quota import OwnedLRU
from secureml.errors import ProtocolError

#: ring degree -> log2 q (HE standard, 128-bit: at most 109 at n = 4,096, 218 at n = 8,192)
Q_BITS = {4096: 108, 8192: 128}
LIMB = 16
ETA = 21  # centred binomial: sd sqrt(21 / 2) = 3.24, |e| <= 21
STAT_SECURITY = 40
SEED_BYTES = 16
KEY_ID_BYTES = 16
_TOP_BITS = 64  # c1' travels as its top 64 bits


@dataclass(frozen=True)
class RingParams:
    n: int
    q_bits: int

    @property
    def limbs(self) -> int:
        return -(-self.q_bits // LIMB)

    @property
    def poly_bytes(self) -> int:
        """One polynomial on the wire: L little-endian uint16 limbs per coefficient."""
        return 2 * self.limbs * self.n


def ring_for(n_features: int) -> RingParams:
    """Smallest ring that packs ``n_features`` coefficients (ProtocolError beyond 8,192)."""
    for n in sorted(Q_BITS):
        if n_features <= n:
            return RingParams(n, Q_BITS[n])
    raise ProtocolError(f"the lattice inner product packs at most {max(Q_BITS)} features, got {n_features}")


# ---- small vectorised helpers ---------------------------------------------------------------------

def _ternary(rng: SecureRandom, n: int) -> np.ndarray:
    # 32-bit words mod 3: bias 2^-32 per coefficient
    return (np.frombuffer(rng.random_bytes(4 * n), dtype="<u4") % 3).astype(np.int64) - 1


def _cbd(rng: SecureRandom, n: int) -> np.ndarray:
    """Centred binomial (eta = 21): popcount of 21 bits minus popcount of 21 bits."""
    w = np.frombuffer(rng.random_bytes(8 * n), dtype="<u8")
    m = np.uint64((1 << ETA) - 1)
    return np.bitwise_count(w & m).astype(np.int64) - np.bitwise_count((w >> np.uint64(ETA)) & m).astype(np.int64)


def _jmul(v: np.ndarray) -> np.ndarray:
    """(J v) mod X^n + 1 for the all-ones polynomial J: sum_{j<=i} v_j - sum_{j>i} v_j."""
    c = np.cumsum(v)
    return 2 * c - c[-1]


def _fold(spec: np.ndarray, n: int) -> np.ndarray:
    """Inverse FFT of summed spectra (rows) -> exact negacyclic integer products (rows, n)."""
    y = np.fft.irfft(spec, 2 * n, axis=-1)
    r = np.rint(y)
    d = np.subtract(y, r, out=y)
    if max(d.max(), -d.min()) > 0.25:  # cannot happen for in-range inputs; never return a wrong product
        raise ProtocolError("lattice product lost float precision")
    # negacyclic fold in float (exact: |values| < 2^50) and one conversion of the half-size result
    return np.subtract(r[..., :n], r[..., n:]).astype(np.int64)


class Ring:
    """Per-(n, q) constants: the public polynomial p1 (limbs and spectrum) and limb helpers."""

    def __init__(self, rp: RingParams) -> None:
        self.rp = rp
        self.n, self.q_bits, self.L = rp.n, rp.q_bits, rp.limbs
        self.top_mask = (1 << (self.q_bits - LIMB * (self.L - 1))) - 1
        label = hashlib.blake2b(f"secureml-rlwe-crs-v1:{rp.n}:{rp.q_bits}".encode(), digest_size=16).digest()
        self.Q = 1 << self.q_bits
        self.p1 = self.uniform(SecureRandom(label)).astype(np.int64)
        self.p1_spec = self.spec16(self.p1)
        self.p1_spec32 = self.spec32(self.p1)

    def uniform(self, rng: SecureRandom) -> np.ndarray:
        """Uniform element of R_q as limbs (L, n) uint16 (the top limb masked to log q bits)."""
        limbs = np.frombuffer(rng.random_bytes(2 * self.L * self.n), dtype="<u2").reshape(self.L, self.n).copy()
        limbs[-1] &= np.uint16(self.top_mask)
        return limbs

    def spec16(self, limbs: np.ndarray) -> np.ndarray:
        """Spectra of the balanced 16-bit limbs (x = bal + C16 J, C16 = sum_b 2^15 2^(16 b))."""
        return np.fft.rfft(limbs.astype(np.float64) - float(1 << 15), 2 * self.n, axis=-1)

    def spec32(self, limbs: np.ndarray) -> np.ndarray:
        """Spectra of balanced 32-bit limbs (x = bal + C32 J, C32 = sum_c 2^31 2^(32 c)): half the
        transforms, for products with a ternary polynomial (|conv| <= n 2^31 stays exact)."""
        L2 = -(-self.L // 2)
        w = np.zeros((L2, self.n), dtype=np.float64)
        w[: self.L // 2] = limbs[0:2 * (self.L // 2):2] + limbs[1:2 * (self.L // 2):2] * 65536.0
        if self.L % 2:
            w[-1] = limbs[-1]
        return np.fft.rfft(w - float(1 << 31), 2 * self.n, axis=-1)

    def normalize32(self, buckets: np.ndarray) -> np.ndarray:
        """Signed int64 buckets of 32 bits (value sum_c buckets[c] 2^(32 c)) -> 16-bit limbs mod q."""
        out = np.empty((self.L, self.n), dtype=np.int64)
        carry = np.zeros(self.n, dtype=np.int64)
        for c in range(buckets.shape[0]):
            t = buckets[c] + carry
            out[2 * c] = t & 0xFFFF
            if 2 * c + 1 < self.L:
                out[2 * c + 1] = (t >> 16) & 0xFFFF
            carry = t >> 32
        out[-1] &= self.top_mask
        return out

    def normalize32_bytes(self, buckets: np.ndarray) -> bytes:
        """:meth:`normalize32` then :meth:`to_bytes` in one pass: the carries run in int64, each
        limb is written straight into the little-endian uint16 wire buffer (the assignment keeps
        its low 16 bits), with no (L, n) int64 array and no second conversion."""
        out = np.empty((self.L, self.n), dtype="<u2")
        t = buckets[0]
        for c in range(buckets.shape[0]):
            if c:
                t = buckets[c] + carry
            out[2 * c] = t  # & 0xFFFF by the narrowing cast (two's complement)
            if 2 * c + 1 < self.L:
                out[2 * c + 1] = t >> 16
            carry = t >> 32
        out[-1] &= np.uint16(self.top_mask)
        return out.tobytes()

    def normalize(self, buckets: np.ndarray) -> np.ndarray:
        """Signed int64 buckets (value sum_b buckets[b] 2^(16 b)) -> limbs in [0, 2^16) mod q."""
        out = np.empty_like(buckets)
        carry = np.zeros(self.n, dtype=np.int64)
        for b in range(self.L):
            t = buckets[b] + carry
            out[b] = t & 0xFFFF
            carry = t >> LIMB
        out[-1] &= self.top_mask
        return out

    def dot(self, limbs: np.ndarray, v: np.ndarray) -> int:
        """sum_i x_i v_i mod q for x as limbs (L, m) and small signed int64 v (m,): exact.
        uint16 limbs (:meth:`view_bytes`) are widened one limb at a time: (m,) int64 temporaries
        instead of one (L, m) array (fresh pages on every call at n = 4,096)."""
        if limbs.dtype == np.int64:
            parts = [int(p) for p in limbs @ v]  # |.| <= 2^16 |v|_1 < 2^63 for the sizes used here
        else:
            parts = [int(np.dot(row.astype(np.int64), v)) for row in limbs]
        return sum(p << (LIMB * b) for b, p in enumerate(parts)) % self.Q

    def to_bytes(self, limbs: np.ndarray) -> bytes:
        return limbs.astype("<u2").tobytes()

    def from_bytes(self, data: bytes | memoryview, what: str) -> np.ndarray:
        return self.view_bytes(data, what).astype(np.int64)

    def view_bytes(self, data: bytes | memoryview, what: str) -> np.ndarray:
        """The wire form as read-only uint16 limbs (L, n), checked like :meth:`from_bytes`, without
        the int64 copy (an (L, n) int64 array is 229 kB at n = 4,096: fresh pages on every
        query); :meth:`dot` takes it as it is."""
        if len(data) != self.rp.poly_bytes:
            raise ProtocolError(f"{what}: expected {self.rp.poly_bytes} bytes, got {len(data)}")
        limbs = np.frombuffer(data, dtype="<u2").reshape(self.L, self.n)
        if int(limbs[-1].max()) > self.top_mask:
            raise ProtocolError(f"{what}: coefficient out of range for q = 2^{self.q_bits}")
        return limbs

    def top64(self, limbs: np.ndarray) -> np.ndarray:
        """floor(x / 2^(log q - 64)) as uint64 (n,), for L <= 8 limbs."""
        u = limbs.astype(np.uint64)
        lo = u[0] | (u[1] << np.uint64(16)) | (u[2] << np.uint64(32)) | (u[3] << np.uint64(48))
        hi = np.zeros(self.n, dtype=np.uint64)
        for b in range(4, self.L):
            hi |= u[b] << np.uint64(LIMB * (b - 4))
        drop = self.q_bits - _TOP_BITS
        if drop == 64:
            return hi
        return (lo >> np.uint64(drop)) | (hi << np.uint64(64 - drop))


@lru_cache(maxsize=4)
def ring(rp: RingParams) -> Ring:
    return Ring(rp)


# ---- client ---------------------------------------------------------------------------------------

class ClientKey:
    """The client's secret s (ternary), its spectrum, J s, and the public key pk0 = -p1 s + e_p."""

    def __init__(self, rp: RingParams, rng: SecureRandom | None = None) -> None:
        t0 = time.perf_counter()
        rng = rng or SecureRandom()
        self.ring = R = ring(rp)
        self.s = _ternary(rng, R.n)
        self.s_spec = np.fft.rfft(self.s.astype(np.float64), 2 * R.n)
        self.js = _jmul(self.s)
        self.s_rev = np.ascontiguousarray(self.s[::-1])  # (x s)[n-1] = sum_i x_i s_(n-1-i)
        # the same as uint64 (two's complement): decryption's dot product wraps mod 2^64, which is
        # all it needs (below)
        self._s_rev_u64 = self.s_rev.astype(np.int64).view(np.uint64)
        # pk0 = -(p1 s) + e_p with p1 s = p1_bal s + C32 J s (32-bit limbs: s is ternary)
        self.pk0 = R.normalize32(self._minus_times_s(R.p1_spec32, rng))
        self.pk0_bytes = R.to_bytes(self.pk0)
        self.key_id = hashlib.sha256(self.pk0_bytes).digest()[:KEY_ID_BYTES]
        self.keygen_s = time.perf_counter() - t0

    def encrypt(self, values: np.ndarray, delta_bits: int, rng: SecureRandom) -> tuple[bytes, bytes]:
        """Step 1: (seed, c0 bytes) for non-negative integer values (F' <= n, each < 2^40)."""
        return self.encrypt_with(self.mask(rng.random_bytes(SEED_BYTES), rng), values, delta_bits)

    def mask(self, seed: bytes, rng: SecureRandom) -> "Mask":
        """The query-independent part of step 1 for a fresh seed: -a s + e (single use)."""
        return Mask(seed, self._minus_times_s(self.ring.spec32(self.ring.uniform(SecureRandom(seed))), rng))

    def encrypt_with(self, mask: "Mask", values: np.ndarray, delta_bits: int) -> tuple[bytes, bytes]:
        """Step 1 from a mask made by :meth:`mask`: c0 = -a s + e + Delta Phi. A mask encrypts one
        query only (two with the same a and e would give Delta (Phi - Phi') to the server):
        a second use is refused."""
        return mask.seed, self.ring.normalize32_bytes(self._add_delta(mask, values, delta_bits))

    def encrypt_limbs(self, mask: "Mask", values: np.ndarray, delta_bits: int) -> np.ndarray:
        """c0 = -a s + e + Delta Phi as limbs (L, n) mod q, for non-negative int64 values (< 2^62);
        spends the mask."""
        return self.ring.normalize32(self._add_delta(mask, values, delta_bits))

    def _add_delta(self, mask: "Mask", values: np.ndarray, delta_bits: int) -> np.ndarray:
        """The mask's 32-bit buckets + Delta Phi (spends the mask; in place, no full-size temporaries)."""
        buckets = mask.take()  # the mask's own array: it is spent
        b, r = divmod(delta_bits, 32)  # + Delta Phi, split over two 32-bit buckets
        v = np.asarray(values, dtype=np.int64)
        m = v.shape[0]
        lo = v & ((1 << (32 - r)) - 1)  # a new array: shifted in place
        lo <<= r
        buckets[b, :m] += lo
        if b + 1 < buckets.shape[0]:
            buckets[b + 1, :m] += v >> (32 - r)
        return buckets

    def _minus_times_s(self, x_spec32: np.ndarray, rng: SecureRandom) -> np.ndarray:
        """32-bit buckets of -(x s) + e for x given by its balanced 32-bit limb spectra."""
        R = self.ring
        buckets = -_fold(x_spec32 * self.s_spec, R.n)
        buckets -= self.js << 31  # - C32 J s
        buckets[0] += _cbd(rng, R.n)
        return buckets

    def decrypt(self, v: int, top: np.ndarray) -> int:
        """Step 4: m = v + (c1' s)[n-1] mod q, as a signed integer."""
        R = self.ring
        # (top . s) 2^(log q - 64) mod q with q = 2^(log q) depends only on top . s mod 2^64: one
        # wrapping uint64 dot product (numpy integer dot products wrap), no limb split
        x = int(np.dot(np.asarray(top, dtype=np.uint64), self._s_rev_u64))
        m = (v + (x << (R.q_bits - _TOP_BITS))) % R.Q
        return m - R.Q if m >= R.Q >> 1 else m


class Mask:
    """-a s + e for one seed (32-bit buckets), made before the query is known; spent by its one
    encryption (:meth:`ClientKey.encrypt_with`)."""

    def __init__(self, seed: bytes, buckets: np.ndarray) -> None:
        self.seed = seed
        self._buckets: np.ndarray | None = buckets

    @property
    def spent(self) -> bool:
        return self._buckets is None

    def take(self) -> np.ndarray:
        b, self._buckets = self._buckets, None
        if b is None:
            raise ProtocolError("a lattice mask encrypts one query only (reuse refused)")
        return b


# ---- server ---------------------------------------------------------------------------------------

class PreparedWeights:
    """The server's W = sum_j w'_j X^(n-1-j): limb spectra and C J W, prepared once per model."""

    def __init__(self, w_int: np.ndarray, rp: RingParams) -> None:
        w_int = np.asarray(w_int, dtype=np.int64)
        R = ring(rp)
        if w_int.shape[0] > R.n:
            raise ProtocolError(f"{w_int.shape[0]} weights do not fit ring degree {R.n}")
        if np.abs(w_int).max(initial=0) >= 1 << 40:
            raise ProtocolError("weights too wide for the lattice inner product")
        self.rp, self.ring = rp, R
        self.w = w_int
        W = np.zeros(R.n, dtype=np.int64)
        W[R.n - w_int.shape[0]:] = w_int[::-1]  # W_(n-1-j) = w'_j
        lo = ((W + (1 << 15)) & 0xFFFF) - (1 << 15)  # balanced 16-bit limbs of the signed W
        rest = (W - lo) >> 16
        mid = ((rest + (1 << 15)) & 0xFFFF) - (1 << 15)
        hi = (rest - mid) >> 16
        # limb j of W multiplies into bucket j and up; all-zero upper limbs are skipped
        self.w_specs = [(j, np.fft.rfft(x.astype(np.float64), 2 * R.n)) for j, x in enumerate((lo, mid, hi))
                        if j == 0 or np.any(x)]
        self.cjw = _jmul(W) << (LIMB - 1)  # C J W, added to every bucket
        self.l1 = int(np.abs(w_int).sum())

    def flood_bits(self) -> int:
        """b with 2^b >= 2^40 * max |(e W)[k]| (= 21 ||w'||_1 for |e| <= 21)."""
        return STAT_SECURITY + max(1, math.ceil(math.log2(ETA * max(self.l1, 1))))

    def error_units(self, delta_bits: int) -> float:
        """Largest |m / Delta - (phi'.w' + c)|: flood, the other noises, the 64-bit cut of c1'."""
        n = self.ring.n
        noise = 2.0 ** self.flood_bits() + ETA * (self.l1 + 2 * n + 1) + n * 2.0 ** (self.ring.q_bits - _TOP_BITS)
        return noise / 2.0 ** delta_bits


def check_client_message(R: Ring, pk0: np.ndarray | None, c0s: list[np.ndarray]) -> None:
    """Before the server computes anything on a client's polynomials (semi-honest: sizes and ranges,
    checked at parsing). A proof of well-formedness (short s, e, e_p) for client-malicious mode
    belongs here."""


class Rerandomised:
    """The query-independent half of a reply for one seed: the top 64 bits of c1' = a W + p1 u + e1
    and u (for (pk0 u)[n-1], taken with the session's key at the end). Single use: a second answer
    with the same u and e1 would let the client subtract the two and undo the re-randomisation."""

    def __init__(self, seed: bytes, top: np.ndarray, u_rev: np.ndarray) -> None:
        self.seed, self.top = seed, top
        #: c1' cut to 64 bits in its wire form (made here, before the query: not on the reply's path)
        self.top_bytes = np.ascontiguousarray(top, dtype="<u8").tobytes()
        self._u_rev: np.ndarray | None = u_rev
        # (key id, (pk0 u)[n-1] + e0 + Delta c + flood mod q) once bound to a client's key (server_bind)
        self._bound: tuple[bytes, int] | None = None

    @property
    def spent(self) -> bool:
        return self._u_rev is None

    @property
    def bound_key(self) -> bytes | None:
        """The key id whose part of v this re-randomisation holds (:func:`server_bind`), or None."""
        return None if self._bound is None else self._bound[0]

    def take(self) -> np.ndarray:
        return self.take_bound()[0]

    def take_bound(self) -> tuple[np.ndarray, tuple[bytes, int] | None]:
        """Spend it: (u reversed, the bound (key id, part of v) or None)."""
        u, self._u_rev = self._u_rev, None
        bound, self._bound = self._bound, None
        if u is None:
            raise ProtocolError("a lattice re-randomisation answers one query only (reuse refused)")
        return u, bound


def server_prepare(pw: PreparedWeights, seed: bytes, rng: SecureRandom) -> Rerandomised:
    """Step 2's products that need only the seed of a (not c0, not the client's key): computable
    before the query arrives."""
    R = pw.ring
    n, L = R.n, R.L
    u = _ternary(rng, n)
    u_spec = np.fft.rfft(u.astype(np.float64), 2 * n)
    a_spec = R.spec16(R.uniform(SecureRandom(seed)))
    # c1' = a W + p1 u + e1, with a = a_bal + C J and p1 = p1_bal + C J
    spec = R.p1_spec * u_spec
    for j, ws in pw.w_specs:
        spec[j:] += a_spec[: L - j] * ws
    buckets = _fold(spec, n)
    buckets += pw.cjw + (_jmul(u) << (LIMB - 1))
    buckets[0] += _cbd(rng, n)
    # u kept as int8 (4 kB at n = 4,096) for servers that hold re-randomisations between sessions
    return Rerandomised(seed, R.top64(R.normalize(buckets)), np.ascontiguousarray(u[::-1]).astype(np.int8))


def _key_part(pw: PreparedWeights, u_rev: np.ndarray, pk0: np.ndarray, const: int, delta_bits: int,
              rng: SecureRandom) -> int:
    """The part of v that does not depend on c0: (pk0 u)[k] + e0 + Delta c + flood, fresh e0 and
    flood (never shared between two answers: each re-randomisation makes it once)."""
    R = pw.ring
    b = pw.flood_bits()
    flood = int.from_bytes(rng.random_bytes(16), "little") % ((1 << (b + 1)) + 1) - (1 << b)
    e0 = int(_cbd(rng, 1)[0])
    return (R.dot(pk0, u_rev.astype(np.int64)) + e0 + (const << delta_bits) + flood) % R.Q


def server_bind(pw: PreparedWeights, prep: Rerandomised, key_id: bytes, pk0: np.ndarray, const: int,
                delta_bits: int, rng: SecureRandom) -> None:
    """Before the query, for the client key expected to use ``prep`` (the one that announced its
    seed): the part of v that needs only u and the key, (pk0 u)[k] + e0 + Delta c + flood, made
    now and kept with ``prep`` (single use with it: :meth:`Rerandomised.take` drops it). The
    answer then only adds (c0 W)[k]; an answer under another key computes the part afresh
    (:func:`server_finish`). The same values as an online answer, with the same fresh randomness:
    only when they are computed changes."""
    if prep.spent:
        raise ProtocolError("a lattice re-randomisation answers one query only (reuse refused)")
    prep._bound = (bytes(key_id), _key_part(pw, prep._u_rev, pk0, const, delta_bits, rng))  # type: ignore[arg-type]


def server_finish(pw: PreparedWeights, prep: Rerandomised, pk0: np.ndarray | None, c0: np.ndarray, const: int,
                  delta_bits: int, rng: SecureRandom | None, key_id: bytes | None = None) -> int:
    """Step 2's query-dependent part: v = (c0 W)[k] + (pk0 u)[k] + e0 + Delta c + flood (spends prep).
    With ``key_id`` the key's part bound before the query (:func:`server_bind`) is used when it
    was bound to that key (``pk0`` and ``rng`` may then be None: nothing is drawn); else it is
    made now from ``pk0`` with fresh randomness from ``rng``."""
    R = pw.ring
    u_rev, bound = prep.take_bound()
    if bound is not None and key_id is not None and bound[0] == key_id:
        part = bound[1]
    elif pk0 is None or rng is None:
        raise ProtocolError("lattice answer: no public key or randomness for this client's answer")
    else:
        part = _key_part(pw, u_rev, pk0, const, delta_bits, rng)
    return (R.dot(c0[:, : pw.w.shape[0]], pw.w) + part) % R.Q


def server_reply(pw: PreparedWeights, pk0: np.ndarray, seed: bytes, c0: np.ndarray, const: int,
                 delta_bits: int, rng: SecureRandom) -> tuple[int, np.ndarray]:
    """Steps 2-3 for one query: (v, top 64 bits of c1')."""
    prep = server_prepare(pw, seed, rng)
    return server_finish(pw, prep, pk0, c0, const, delta_bits, rng), prep.top


class KeyStore(OwnedLRU[bytes, np.ndarray]):
    """The server's copy of clients' public keys by key id: LRU, bounded, expiring, and at most
    ``per_owner`` keys per client (the one that first sent the key: a client sending another's
    key again does not move it into its own quota; :class:`protocols.net.quota.OwnedLRU`)."""

    def __init__(self, capacity: int = 1024, ttl_s: float = 3600.0, per_owner: int | None = None) -> None:
        super().__init__(capacity, ttl_s, per_owner)

    @property
    def capacity(self) -> int:
        return self.max_entries

    def get(self, key_id: bytes) -> np.ndarray | None:  # type: ignore[override]
        pk0 = super().get(key_id)
        return None if pk0 is None else pk0.astype(np.int64)

    def put(self, key_id: bytes, pk0: np.ndarray, owner: str | None = None) -> None:  # type: ignore[override]
        """Keep pk0 (limbs) as uint16: 57 kB per key at n = 4,096, 131 kB at n = 8,192; ``owner``:
        the client it counts against (the session's identity, :func:`protocols.net.quota.current_client`)."""
        super().put(key_id, pk0.astype(np.uint16), owner)
