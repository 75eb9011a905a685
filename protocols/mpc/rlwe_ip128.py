"""Inner products in Z_2^128 with lattice HE: the last step of exact KRR, one flight each way.

The *client* (key owner) holds k vectors v (k, N) of small non-negative integers (< 2^62; exact
KRR's client factors have 41 bits), the *server* k vectors r (k, N) of 128-bit values. Output:
additive shares mod 2^128 of ``sum_i r[a, i] v[a, i]`` for each row a -- what
:func:`protocols.mpc.gilboa128.inner_products128` computes with one random OT per bit of v
(~0.7 kB per element), here with one RLWE ciphertext up and one down per query (~83 bytes per
ring coefficient, 1.4 MB at N = 16,384 where the OT route sends 11.5-13 MB, for 41-46-bit v); three messages: key
and seeds up, ciphertexts up, reply down.

Arithmetic and encodings are :mod:`protocols.mpc.rlwe_ip`'s (its :class:`~protocols.mpc.rlwe_ip.Ring`,
:class:`~protocols.mpc.rlwe_ip.ClientKey`, error and secret distributions), in a larger ring:
n = 16,384 and q = 2^Q with Q ~ 320 (:func:`make_plan`; the HomomorphicEncryption.org standard
allows log q <= 438 at n = 16,384 for 128-bit security with a ternary secret and error sd 3.2).
The plaintext space is Z_2^128 itself: Delta = q / 2^128, so ``Delta x mod q = Delta (x mod 2^128)``
and the product comes out exact modulo 2^128 -- no wrap-around argument is needed, only a noise
bound below Delta / 2.

Protocol (client = key owner, role of ``bits``; server = holder of ``values``):
  1. client: a fresh key from its own randomness (s ternary, pk0 = -p1 s + e_p with p1 the public
     CRS polynomial of the ring), and per query a and chunk c of n values a fresh seed for a
     uniform a_c. Sends (1a, needs no values, so a caller sends it early) pk0 cut to its top
     ``Q - pk_drop`` bits (a deterministic function of pk0) and the seeds; then (1b) per query and
     chunk the first m_c coefficients of ``c0_c = -a_c s + e_c + Delta V_c``, ``V_c = sum_j
     v_(cn+j) X^j`` -- the server reads no other coefficient.
  2. server: balanced representatives of its r (|r| <= 2^127 (1 + 2^-15)) in
     ``R_c = sum_j r_(cn+j) X^(n-1-j)``, so coefficient n-1 of ``V_c R_c`` is ``sum_j v_j r_j``
     (no negacyclic wrap lands there); fresh ternary u, errors e0, e1, a mask m uniform mod 2^128
     and a flood f uniform in [-2^b, 2^b]:
        val = sum_c (c0_c R_c)[n-1] + (pk0' u)[n-1] + e0 + Delta m + f        (one number)
        c1' = sum_c a_c R_c + p1 u + e1                                        (re-randomised)
     ``(c0_c R_c)[n-1]`` and ``(pk0' u)[n-1]`` are dot products; only ``a_c R_c`` and ``p1 u``
     need FFTs (16-bit limbs, :func:`protocols.mpc.rlwe_ip._fold` checks every rounding). u, e1,
     p1 u, (pk0' u)[n-1] and the spectra of a_c need only the key message (:func:`server_keyed`,
     when it arrives), the products with r only r (:func:`server_products`, ~0.07 s at n = 16,384):
     the server computes both while the client is still busy; with c0 only the dot products remain
     (:func:`server_finish`).
  3. server -> client: val (Q bits) and c1' cut to its top ``Q - c1_drop`` bits. Its share is -m.
  4. client: ``val + (c1' s)[n-1] = Delta (sum r v + m) + noise`` with |noise| < Delta / 2; its share
     is the rounded quotient, ``sum r v + m mod 2^128``.

Noise (the plan's bound, checked by :func:`make_plan`): ``(e R)[n-1]`` summed over the chunks
(|.| <= 21 ||r||_1 <= 21 N 2^127 (1 + 2^-15) = B), the dropped low bits of pk0 times u
(<= n 2^pk_drop <= B), ``(e_p u + e1 s)[n-1] + e0`` (<= 21 (2n + 1)); the flood 2^b with
b >= 40 + log2 of their sum; the dropped bits of c1' times s (<= n 2^c1_drop <= 2^(b-1)). All of it is below
2^(b+1) = Delta / 2.

Threat model (semi-honest, both parties follow the protocol; docs/double-blind.md):
* Server's view: a truncated public key and ciphertexts under fresh seeds: RLWE samples at 128-bit
  parameters, which hide v (decision-RLWE; a function of pk0 reveals no more than pk0).
* Client's view: val and c1'. c1' = (sum a_c R_c) + (p1 u + e1) is masked by a fresh RLWE sample
  under the server's u; val is the matching second component, so the pair is a fresh LPR
  encryption of ``sum r v + m`` under the client's key -- with a noise whose only part that depends on
  r or u besides the flood is at most 2^(b-40) in size: the flood hides it to statistical distance
  2^-40 (2^-44 at the sizes used). The client learns ``sum r v + m mod 2^128``, uniform by m.
  Nothing else of r (the non-target coefficients of c0 R are never sent).
* A *malicious* client (huge e, a pk0 that is not an RLWE sample) could break the flood bound or
  the re-randomisation; the client-malicious Gaussian protocol (:mod:`protocols.krr.gaussian_malicious`)
  does not use this module. The server checks sizes only (a wrong-size message is a one-line
  ProtocolError before anything is computed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from protocols.mpc import u128
from protocols.mpc.context import PartyContext
from protocols.mpc.randomness import SecureRandom
from protocols.mpc.rlwe_ip import (ETA, LIMB, SEED_BYTES, STAT_SECURITY, ClientKey, Ring, RingParams, _cbd, _fold,
                                   _jmul, _ternary, ring)
from secureml.errors import ProtocolError

#: ring degree; the HE standard's largest log q at this degree (128-bit, ternary secret)
N_RING = 16384
MAX_Q_BITS = 438
T_BITS = 128  # plaintext space Z_2^128
R_LIMBS = T_BITS // LIMB  # the server's r as eight balanced 16-bit limbs
#: |balanced r| <= 2^127 + 2^111 + ... < 2^127 (1 + 2^-15)
R_BOUND_LOG2 = 127 + math.log2(1 + 2.0 ** -15)


def _floor8(x: float) -> int:
    return 8 * max(0, math.floor(x / 8))


@dataclass(frozen=True)
class IP128Plan:
    """Public sizes and noise plan, derived identically by both sides from N (and k)."""

    n_values: int  # N: length of each inner product
    q_bits: int  # Q, a multiple of 8: every coefficient travels as whole bytes
    flood_bits: int  # b: the flood is uniform in [-2^b, 2^b]
    pk_drop: int  # low bits of pk0 not sent (multiple of 8)
    c1_drop: int  # low bits of c1' not sent (multiple of 8)

    @property
    def n(self) -> int:
        return N_RING

    @property
    def delta_bits(self) -> int:
        return self.q_bits - T_BITS

    @property
    def chunks(self) -> list[int]:
        """Values per ciphertext: N split into ring-sized chunks."""
        full, rest = divmod(self.n_values, self.n)
        return [self.n] * full + ([rest] if rest else [])

    @property
    def coeff_bytes(self) -> int:
        return self.q_bits // 8

    @property
    def pk_bytes(self) -> int:
        return self.n * (self.q_bits - self.pk_drop) // 8

    @property
    def query_up_bytes(self) -> int:
        """One query's seeds and c0 coefficients."""
        return sum(SEED_BYTES + m * self.coeff_bytes for m in self.chunks)

    @property
    def reply_bytes(self) -> int:
        """One query's val and truncated c1'."""
        return self.coeff_bytes + self.n * (self.q_bits - self.c1_drop) // 8

    def up_bytes(self, k: int) -> int:
        return self.pk_bytes + k * self.query_up_bytes

    def down_bytes(self, k: int) -> int:
        return k * self.reply_bytes

    def traffic_bytes(self, k: int) -> int:
        """Payload bytes both ways for k queries (two messages; frame and array headers not counted)."""
        return self.up_bytes(k) + self.down_bytes(k)


@lru_cache(maxsize=64)
def make_plan(n_values: int) -> IP128Plan:
    """The smallest Q (multiple of 8) whose noise budget holds N values (ProtocolError if none does)."""
    if not 1 <= n_values <= 1 << 24:
        raise ProtocolError(f"lattice inner product: unsupported length {n_values}")
    n = N_RING
    log_n = int(math.log2(n))
    b_r = math.log2(ETA * n_values) + R_BOUND_LOG2  # log2 B: |(e R)[n-1]| over all chunks
    pk_drop = _floor8(b_r - log_n)  # n 2^pk_drop <= B
    small = ETA * (2 * n + 1)
    hidden = 2.0 ** b_r + 2.0 ** (pk_drop + log_n) + small  # what the flood must hide (< 2^(b_r + 1))
    b_min = STAT_SECURITY + math.ceil(math.log2(hidden))
    q_bits = 8 * math.ceil((T_BITS + b_min + 2) / 8)
    flood_bits = q_bits - T_BITS - 2  # the byte rounding's slack goes into a wider flood
    c1_drop = _floor8(flood_bits - 1 - log_n)  # n 2^c1_drop <= 2^(b-1)
    if q_bits > MAX_Q_BITS:
        raise ProtocolError(f"lattice inner product: {n_values} values need q = 2^{q_bits} > 2^{MAX_Q_BITS} "
                            "(the HE standard's bound at n = 16,384)")
    # |noise| <= 2^b + hidden + n 2^c1_drop < 2^(b+1) = Delta / 2: decryption rounds exactly
    assert 2.0 ** flood_bits + hidden + 2.0 ** (c1_drop + log_n) < 2.0 ** (q_bits - T_BITS - 1)
    return IP128Plan(n_values, q_bits, flood_bits, pk_drop, c1_drop)


def gilboa_bytes(n_values: int, n_bits: int, ot_bits: int = 32) -> int:
    """Approximate bytes of the OT route (:mod:`protocols.mpc.gilboa128`) for one query: per element
    and bit b, the trimmed correction (128 - b bits) and one random OT (``ot_bits`` on the wire)."""
    return n_values * sum(-(-(T_BITS - b) // 8) + ot_bits // 8 for b in range(n_bits))


# ---- encodings -----------------------------------------------------------------------------------

def _ring(plan: IP128Plan) -> Ring:
    return ring(RingParams(plan.n, plan.q_bits))


def _limbs_to_bytes(limbs: np.ndarray, nbytes: int) -> np.ndarray:
    """(L, m) limbs in [0, 2^16) -> (m, nbytes) little-endian coefficient bytes (the low nbytes)."""
    b = np.ascontiguousarray(limbs.astype("<u2").T).view(np.uint8)
    return b[:, :nbytes]


def _bytes_to_limbs(b: np.ndarray) -> np.ndarray:
    """(m, nbytes) little-endian coefficient bytes -> (ceil(nbytes / 2), m) int64 limbs."""
    m, nb = b.shape
    if nb % 2:
        b = np.concatenate([b, np.zeros((m, 1), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(b).view("<u2").T.astype(np.int64)


def _combine(parts: np.ndarray, shift: int = 0) -> int:
    """sum_i parts[i] 2^(16 i + shift) for the int64 parts of a limb-wise dot product."""
    return sum(int(p) << (LIMB * i + shift) for i, p in enumerate(parts))


def _balanced_limbs(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Eight balanced 16-bit limbs (8, m) int64 in [-2^15, 2^15) of 128-bit values, modulo 2^128:
    sum_j limb_j 2^(16 j) = r mod 2^128 with |sum| < 2^127 (1 + 2^-15)."""
    words = (lo, hi)
    out = np.empty((R_LIMBS, hi.shape[0]), dtype=np.int64)
    carry = np.zeros(hi.shape[0], dtype=np.int64)
    for j in range(R_LIMBS):
        t = ((words[j // 4] >> np.uint64(16 * (j % 4))) & np.uint64(0xFFFF)).astype(np.int64) + carry
        carry = (t >= 1 << 15).astype(np.int64)
        out[j] = t - (carry << 16)
    return out  # the last carry is a multiple of 2^128: dropped


def _dot_wide(x_limbs: np.ndarray, y_limbs: np.ndarray) -> int:
    """sum_i x_i y_i for x as (Lx, m) limbs in [0, 2^16) and y as (Ly, m) balanced limbs: exact
    (each float64 partial sum stays below m 2^31 <= 2^45 < 2^53)."""
    parts = np.rint(x_limbs.astype(np.float64) @ y_limbs.T.astype(np.float64)).astype(np.int64)
    return sum(int(parts[i, j]) << (LIMB * (i + j)) for i in range(parts.shape[0]) for j in range(parts.shape[1]))


# ---- the two roles -------------------------------------------------------------------------------

def client_key_message(plan: IP128Plan, key: ClientKey, k: int, rng: SecureRandom) -> tuple[np.ndarray, list[bytes]]:
    """Step 1a (needs no values): pk0 cut to its top bits and a fresh seed per query and chunk."""
    seeds = [rng.random_bytes(SEED_BYTES) for _ in range(k * len(plan.chunks))]
    pk = _limbs_to_bytes(key.pk0, plan.coeff_bytes)[:, plan.pk_drop // 8:].ravel()
    return np.concatenate([pk, np.frombuffer(b"".join(seeds), dtype=np.uint8)]), seeds


def client_ciphertexts(plan: IP128Plan, key: ClientKey, seeds: list[bytes], v: np.ndarray,
                       rng: SecureRandom) -> np.ndarray:
    """Step 1b: the first m_c coefficients of c0 = -a s + e + Delta V per query and chunk (uint8)."""
    parts, it = [], iter(seeds)
    for row in np.atleast_2d(v):
        pos = 0
        for m in plan.chunks:
            c0 = key.encrypt_limbs(key.mask(next(it), rng), row[pos:pos + m].astype(np.int64), plan.delta_bits)
            parts.append(_limbs_to_bytes(c0[:, :m], plan.coeff_bytes).ravel())
            pos += m
    return np.concatenate(parts)


@dataclass
class ServerPrepared:
    """The server's query-independent half of step 2 (needs the seeds and r, not c0): per query the
    truncated c1', (pk0' u)[n-1], and r's balanced limbs; used once."""

    r_limbs: list[np.ndarray]  # per query (8, N)
    c1_top: list[np.ndarray]  # per query, the bytes of c1' that travel
    pku: list[int]


#: precompute a_c's spectra at key time only up to this many ciphertexts (5.2 MB each at n = 16,384)
_EARLY_SPECTRA = 4


@dataclass
class ServerKeyed:
    """What the server computes from the key message alone (before it knows r): per query the fresh
    u's part of c1' (buckets of p1 u + e1 as a spectrum and an integer part), (pk0' u)[n-1], and the
    spectra of a_c (while there are at most :data:`_EARLY_SPECTRA` of them)."""

    k: int
    seeds: np.ndarray  # (k * chunks, 16)
    u_spec: list[np.ndarray]  # per query: spectrum of p1_bal u
    base: list[np.ndarray]  # per query: integer buckets C J u + e1
    pku: list[int]
    a_specs: list[np.ndarray] | None


def server_keyed(plan: IP128Plan, key_msg: np.ndarray, k: int, rng: SecureRandom) -> ServerKeyed:
    """Step 2's query-independent part, from the key message: u, e1, p1 u, (pk0' u)[n-1], a_c spectra."""
    n_ct = k * len(plan.chunks)
    want = plan.pk_bytes + n_ct * SEED_BYTES
    if key_msg.ndim != 1 or key_msg.shape[0] != want:
        raise ProtocolError(f"lattice inner product: client key message of {key_msg.size} bytes, expected {want}")
    pk_top = _bytes_to_limbs(key_msg[:plan.pk_bytes].reshape(plan.n, -1))
    R = _ring(plan)
    n = plan.n
    out = ServerKeyed(k, key_msg[plan.pk_bytes:].reshape(n_ct, SEED_BYTES), [], [], [], None)
    for _ in range(k):
        u = _ternary(rng, n)
        # p1 = p1_bal + C J: the spectrum of p1_bal u, and C J u (one 2^15-weighted copy per bucket) + e1
        out.u_spec.append(R.p1_spec * np.fft.rfft(u.astype(np.float64), 2 * n))
        base = np.broadcast_to(_jmul(u) << (LIMB - 1), (R.L, n)).copy()
        base[0] += _cbd(rng, n)
        out.base.append(base)
        out.pku.append(_combine(pk_top @ np.ascontiguousarray(u[::-1]), plan.pk_drop))
    if n_ct <= _EARLY_SPECTRA:
        out.a_specs = [_a_spec(R, s.tobytes()) for s in out.seeds]
    return out


def _a_spec(R: Ring, seed: bytes) -> np.ndarray:
    return np.fft.rfft(R.uniform(SecureRandom(seed)).astype(np.float64), 2 * R.n, axis=-1)


def server_products(plan: IP128Plan, keyed: ServerKeyed, r_hi: np.ndarray, r_lo: np.ndarray) -> ServerPrepared:
    """Step 2's products with r for k rows (k, N): c1' = sum_c a_c R_c + p1 u + e1 (no randomness left)."""
    r_hi, r_lo = np.atleast_2d(r_hi), np.atleast_2d(r_lo)
    k, N = r_hi.shape
    if N != plan.n_values or k != keyed.k:
        raise ProtocolError(f"lattice inner product: {k} x {N} values, the plan has {keyed.k} x {plan.n_values}")
    R = _ring(plan)
    n, L = plan.n, R.L
    out = ServerPrepared([], [], keyed.pku)
    for a in range(k):
        limbs = _balanced_limbs(r_hi[a], r_lo[a])
        buckets = keyed.base[a].copy()
        pos = 0
        for c, m in enumerate(plan.chunks):
            poly = np.zeros((R_LIMBS, n), dtype=np.float64)
            poly[:, n - m:] = limbs[:, pos:pos + m][:, ::-1]
            r_spec = np.fft.rfft(poly, 2 * n, axis=-1)  # R_c = sum_j r_(cn+j) X^(n-1-j)
            i = a * len(plan.chunks) + c
            a_spec = keyed.a_specs[i] if keyed.a_specs is not None else _a_spec(R, keyed.seeds[i].tobytes())
            spec = keyed.u_spec[a].copy() if c == 0 else np.zeros_like(keyed.u_spec[a])
            for j in range(R_LIMBS):
                spec[j:] += a_spec[: L - j] * r_spec[j]
            buckets += _fold(spec, n)  # per chunk: each fold stays below 2^49
            pos += m
        c1 = R.normalize(buckets)
        out.r_limbs.append(limbs)
        out.c1_top.append(_limbs_to_bytes(c1, plan.coeff_bytes)[:, plan.c1_drop // 8:].ravel())
    return out


def server_prepare(plan: IP128Plan, key_msg: np.ndarray, r_hi: np.ndarray, r_lo: np.ndarray,
                   rng: SecureRandom) -> ServerPrepared:
    """Step 2's products with a_c and u for k rows of r (k, N) in one call (:func:`server_keyed`
    then :func:`server_products`)."""
    return server_products(plan, server_keyed(plan, key_msg, np.atleast_2d(r_hi).shape[0], rng), r_hi, r_lo)


def server_finish(plan: IP128Plan, prep: ServerPrepared, ct_msg: np.ndarray,
                  rng: SecureRandom) -> tuple[np.ndarray, list[int]]:
    """Steps 2-3 with the client's c0s: (reply message, the server's shares -m mod 2^128).
    val = sum_c (c0_c R_c)[n-1] + (pk0' u)[n-1] + e0 + Delta m + f."""
    k = len(prep.pku)
    want = k * sum(m * plan.coeff_bytes for m in plan.chunks)
    if ct_msg.ndim != 1 or ct_msg.shape[0] != want:
        raise ProtocolError(f"lattice inner product: client ciphertexts of {ct_msg.size} bytes, expected {want}")
    Q = 1 << plan.q_bits
    replies, shares, pos = [], [], 0
    for a in range(k):
        val, j = prep.pku[a], 0
        for m in plan.chunks:
            c0 = _bytes_to_limbs(ct_msg[pos:pos + m * plan.coeff_bytes].reshape(m, plan.coeff_bytes))
            val += _dot_wide(c0, prep.r_limbs[a][:, j:j + m])  # (c0_c R_c)[n-1] = sum_j c0_j r_j
            pos, j = pos + m * plan.coeff_bytes, j + m
        mask = int.from_bytes(rng.random_bytes(16), "little")
        b = plan.flood_bits
        flood = int.from_bytes(rng.random_bytes((b + 1 + 64 + 7) // 8), "little") % ((1 << (b + 1)) + 1) - (1 << b)
        val = (val + int(_cbd(rng, 1)[0]) + (mask << plan.delta_bits) + flood) % Q
        replies += [np.frombuffer(val.to_bytes(plan.coeff_bytes, "little"), dtype=np.uint8), prep.c1_top[a]]
        shares.append(-mask % u128.MOD)
    return np.concatenate(replies), shares


def client_finish(plan: IP128Plan, key: ClientKey, reply: np.ndarray, k: int) -> list[int]:
    """Step 4: the client's shares ``sum r v + m mod 2^128``, one per row."""
    want = plan.down_bytes(k)
    if reply.ndim != 1 or reply.shape[0] != want:
        raise ProtocolError(f"lattice inner product: server reply of {reply.size} bytes, expected {want}")
    R = key.ring
    out = []
    for a in range(k):
        part = reply[a * plan.reply_bytes:(a + 1) * plan.reply_bytes]
        val = int.from_bytes(part[:plan.coeff_bytes].tobytes(), "little")
        top = _bytes_to_limbs(part[plan.coeff_bytes:].reshape(plan.n, -1))
        m = (val + _combine(top @ key.s_rev, plan.c1_drop)) % R.Q
        out.append(((m + (1 << (plan.delta_bits - 1))) % R.Q) >> plan.delta_bits)
    return out


class LatticeSumClient:
    """The key owner's side, split where the caller can overlap it with other steps: the key message
    goes out first (it needs no values), the ciphertexts once the values are known."""

    def __init__(self, party: PartyContext, n_values: int, k: int, send: bool = True) -> None:
        """Makes the key and seeds; sends them now unless ``send`` is False (then :meth:`send_key`)."""
        self.party, self.k = party, k
        self.plan = make_plan(n_values)
        self.key = ClientKey(RingParams(self.plan.n, self.plan.q_bits), party.rng)
        self._key_msg, self.seeds = client_key_message(self.plan, self.key, k, party.rng)
        if send:
            self.send_key()

    def send_key(self) -> None:
        self.party.ch.send_array(self._key_msg, owned=True)

    def send_values(self, v: np.ndarray, n_bits: int) -> None:
        y = np.atleast_2d(np.ascontiguousarray(v, dtype=np.uint64))
        if y.shape != (self.k, self.plan.n_values):
            raise ProtocolError(f"lattice inner product: values of shape {y.shape}, expected {(self.k, self.plan.n_values)}")
        if not 1 <= n_bits <= 62 or (y.size and int(y.max()) >> n_bits):
            raise ProtocolError("lattice inner product: values wider than advertised")
        self.party.ch.send_array(client_ciphertexts(self.plan, self.key, self.seeds, y, self.party.rng), owned=True)

    def finish(self) -> list[int]:
        reply = self.party.ch.recv_array(dtype=np.uint8, shape=(None,), max_bytes=self.plan.down_bytes(self.k))
        return client_finish(self.plan, self.key, reply, self.k)


class LatticeSumServer:
    """The other side: read the key message (before any later client message), prepare c1' while the
    client is busy, finish on the ciphertexts."""

    def __init__(self, party: PartyContext, n_values: int, k: int) -> None:
        self.party, self.k = party, k
        self.plan = make_plan(n_values)
        want = self.plan.pk_bytes + k * len(self.plan.chunks) * SEED_BYTES
        key_msg = party.ch.recv_array(dtype=np.uint8, shape=(None,), max_bytes=want)
        # refused at once if malformed; u, e1, p1 u and a_c's spectra now, while the client works
        self.keyed = server_keyed(self.plan, key_msg, k, party.rng)
        self.prep: ServerPrepared | None = None

    def prepare(self, values: tuple[np.ndarray, np.ndarray]) -> None:
        self.prep = server_products(self.plan, self.keyed, values[0], values[1])

    def finish(self) -> list[int]:
        if self.prep is None:
            raise ProtocolError("lattice inner product: finish before prepare")
        msg = self.party.ch.recv_array(dtype=np.uint8, shape=(None,),
                                       max_bytes=self.k * self.plan.n_values * self.plan.coeff_bytes)
        reply, shares = server_finish(self.plan, self.prep, msg, self.party.rng)
        self.prep = None  # u, e1 and the flood are used once
        self.party.ch.send_array(reply, owned=True)
        return shares


def inner_products128(party: PartyContext, *, values: tuple[np.ndarray, np.ndarray] | None = None,
                      bits: np.ndarray | None = None, n_bits: int) -> list[int]:
    """Shares (Python ints mod 2^128) of sum_i values[a, i] * bits[a, i], one per row a: the drop-in
    lattice counterpart of :func:`protocols.mpc.gilboa128.inner_products128` (three messages in a
    row: :class:`LatticeSumClient` and :class:`LatticeSumServer` let a caller spread them out).

    The key owner passes ``bits`` (k, N) uint64 values below 2^n_bits (n_bits <= 62); the other
    party passes ``values`` (hi, lo) words, each (k, N).
    """
    if not 1 <= n_bits <= 62:
        raise ProtocolError(f"lattice inner product: values of {n_bits} bits (at most 62)")
    if bits is not None:
        y = np.atleast_2d(bits)
        if y.size and int(y.max()) >> n_bits:  # before anything is sent
            raise ProtocolError("lattice inner product: values wider than advertised")
        cl = LatticeSumClient(party, y.shape[1], y.shape[0])
        cl.send_values(y, n_bits)
        return cl.finish()
    hi = np.atleast_2d(values[0])
    sv = LatticeSumServer(party, hi.shape[1], hi.shape[0])
    sv.prepare(values)
    return sv.finish()
