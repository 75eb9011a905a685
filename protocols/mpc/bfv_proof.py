"""Proof that a client's RLWE public key and ciphertexts are well formed, for a semi-honest server
that answers them (client-malicious lattice HE, :mod:`protocols.mpc.he_matvec_checked`).

Threat model: the server is semi-honest, the client may send any bytes. A lattice reply is safe
for the server only if its noise flooding dominates the noise the client put in: an ill-formed
key or ciphertext (huge noise, a c1 the client can divide out, a public key whose phase is not
small) would let the client read the server's plaintext from the reply despite flooding. After
this check the server knows, for ANY bytes the client sent, except with probability < 2^-39.99:

    pk0  + pk1  s = t e'          (mod Q)      s ternary, |e'| <= 32
    c0_b + c1_b s = m_b + t e_b   (mod Q)      |e_b| <= 32, m_b = the committed message block

(BGV-style encoding, plaintext in the low bits; t = 2^M the ring of the shares; Q the product of
the primes of :class:`protocols.mpc.rlwe.Ring`). pk1 and every c1_b are not the client's: they are
expanded from a seed the server sends (:func:`public_parts`), so they are uniform and the client
cannot pick them.

Steps (both roles run :func:`check_wellformed`; the client has already sent pk0 and the c0_b; the
message blocks m_b are values the client committed before, given as MACs on their bits -- in
:mod:`protocols.krr.binding` the bits of the query, fixed by random OTs of the checked extension):
  1. The client commits its witness as bits (:func:`commit_bits`: COTs of the checked extension
     with the server's fresh 64-bit key Delta, MACs M = K + b Delta in Z_2^R): two bits per
     coefficient of s (s = b+ - b-: always in {-1, 0, 1}), six bits per coefficient of every
     noise polynomial (E = e + 32 in [0, 64): |e| <= 32 by construction). The query's bits get
     MACs under the same Delta on their own random OTs (:func:`protocols.mpc.he_matvec_checked.
     commit_query`).
  2. The server draws chi (one uniform polynomial per relation mod every prime, from a seed it
     sends now: after the commitments, so nothing the client fixed can depend on it).
  3. Both sides form the random combination of all relations, per prime p:
         Z = sum_b <chi_b, c0_b + c1_b s - m_b - t e_b> + <chi_pk, pk0 + pk1 s - t e'>
           = C + <g, s> - sum_b <chi_b, m_b> - t sum_b <chi_b, e_b> - t <chi_pk, e'>
     with C = sum_b <chi_b, c0_b> + <chi_pk, pk0> and g = sum_b c1_b* chi_b + pk1* chi_pk
     (a* = a(X^-1), the transpose of multiplication by a): Z = C + sum_j a_j b_j (mod p), linear
     in the T committed bits b_j with public coefficients a_j, all reduced to [0, p).
  4. (protocol 35) Lifted to the integers: Z_int = C + sum_j a_j b_j is an integer in
     [0, p (T + 1)), and Z = 0 (mod p) iff Z_int = p k for an integer k in [0, 2^kbits),
     kbits = bits of T + 1 (:func:`lift_bits`). The client commits k (kbits bits) and a mask r
     (R - K bits), K = log2(p) + kbits, and opens Y = Z_int - C - p k + 2^K r (mod 2^R) with its
     MAC; the server checks Y + C = 0 (mod 2^K) and the MAC against its keys (the opening of
     :func:`protocols.mpc.authenticated.check_congruent`, with the MAC ring R = K + 40).
Soundness: if any coefficient of any relation is nonzero mod p, Z != 0 (mod p) for at most a 1/p
fraction of chi (p > 2^49.99): then Z_int - p k != 0 for every committed k, and since every
committed value is a bit (checked OT extension) and k < 2^kbits, |Z_int - p k| < 2^K, so
Z_int - p k != 0 (mod 2^K). An opened Y with Y + C = 0 (mod 2^K) then differs from the committed
value by an e != 0 (mod 2^K), and its MAC passes only if the client knows e Delta mod 2^R, i.e.
Delta mod 2^(R - v(e)), at least R - K = 40 bits of a key it sees only one-time padded by the
unchosen pads: probability <= 2^-40. All four primes are checked, so the relations hold mod Q,
except with probability <= 4 / 2^49.99 + 2^-40 < 2^-39.99 (protocols 13-33: MACs mod each prime,
~2^-49 per prime, at 28 bytes per committed bit instead of ceil(R / 8) = 14).
Zero knowledge (against the semi-honest server): the server sees random-OT messages, its own
corrections, and Y = -C + 2^K r, MY (for an honest client Z_int - C - p k = -C exactly): r is
uniform on [0, 2^(R-K)) and MY = K_Y + Y Delta is its own key combination plus Y Delta.
Cost: T = (2 + 6 (B + 1)) n witness bits (a random OT + ceil(R / 8) bytes each: 14 at R <= 112),
a 16-byte seed, 4 (kbits + R - K) more committed bits and 2 x 4 16-byte words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from protocols.mpc import authenticated as au
from protocols.mpc import fp_auth, u128
from protocols.mpc.authenticated import U128, MacCheckError
from protocols.mpc.context import PartyContext
from protocols.mpc.rlwe import Ring
from secureml.errors import ProtocolError

U64, I64 = np.uint64, np.int64
#: |e| <= NOISE_BOUND for every proven noise coefficient (E = e + NOISE_BOUND in NOISE_BITS bits)
NOISE_BITS = 6
NOISE_BOUND = 32
#: forgery bound of the lifted check: the MACs live 40 bits above the opened value (2^-40)
STAT_BITS = au.STAT_BITS


def public_parts(ring: Ring, seed: bytes, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """pk1 (k, n) and c1 (blocks, k, n), expanded from the server's seed."""
    return ring.expand(seed, "pk1"), ring.expand(seed, "c1", (blocks,))


@dataclass
class Witness:
    """The client's secrets behind pk0 and the c0_b."""

    s: np.ndarray  # (n,) int64 in {-1, 0, 1}
    e_pk: np.ndarray  # (n,) int64
    e: np.ndarray  # (B, n) int64
    s_hat: np.ndarray  # NTT of s (k, n)
    public_hat: tuple[np.ndarray, np.ndarray] | None = None  # NTT of (pk1, c1): reused by the proof


def _times_t(ring: Ring, x: np.ndarray, t_bits: int) -> np.ndarray:
    return ring.mul(ring.from_signed(x), ring.scalar(1 << t_bits))


def client_encrypt(ring: Ring, rng: Any, seed: bytes, messages: np.ndarray, t_bits: int,
                   ) -> tuple[np.ndarray, np.ndarray, Witness]:
    """Client: a fresh key and one ciphertext per row of ``messages`` (B, n_msg), entries < 2^t:
    pk0 = -pk1 s + t e', c0_b = -c1_b s + m_b + t e_b (mod Q). Returns (pk0, c0, witness)."""
    messages = np.atleast_2d(np.asarray(messages, dtype=I64))
    B, n_msg = messages.shape
    pk1, c1 = public_parts(ring, seed, B)
    pk1_hat, c1_hat = ring.ntt(pk1), ring.ntt(c1)
    s = ring.ternary(rng, (ring.n,))
    e_pk = ring.cbd(rng, (ring.n,))
    e = ring.cbd(rng, (B, ring.n))
    s_hat = ring.ntt(np.broadcast_to(s, (ring.k, ring.n)), ternary=True)
    m = np.zeros((B, ring.n), dtype=I64)
    m[:, :n_msg] = messages
    if t_bits > 56 or bool((np.abs(m) >> 56).any()):  # outside the unreduced path's bounds
        pk0 = ring.sub(_times_t(ring, e_pk, t_bits), ring.intt(ring.mul(pk1_hat, s_hat)))
        c1s = ring.intt(ring.mul(c1_hat, s_hat))
        c0 = ring.sub(ring.add(ring.from_signed(m), _times_t(ring, e, t_bits)), c1s)
        return pk0, c0, Witness(s, e_pk, e, s_hat, (pk1_hat, c1_hat))
    # the same residues with fewer passes: the products by -s_hat as lazy residues (|.| < 1.375 p,
    # within rlwe.LAZY_IN) straight into the inverse transforms, and t e (+ m) added before their one
    # reduction, unreduced: |e| <= 21 times t mod p < 2^50, plus |m| < 2^56, below 2^57
    neg_s = ring.lazy_table(ring.neg(s_hat))
    t_res = ring.scalar(1 << t_bits).astype(I64)  # (k, 1)
    pk0 = ring.intt(ring.lazy_mul(pk1_hat.view(I64), neg_s), plus=e_pk[None, :] * t_res)
    c0 = ring.intt(ring.lazy_mul(c1_hat.view(I64), neg_s), plus=m[:, None, :] + e[:, None, :] * t_res[None])
    return pk0, c0, Witness(s, e_pk, e, s_hat, (pk1_hat, c1_hat))


def witness_bits(w: Witness) -> np.ndarray:
    """The committed bits, in commitment order: s+ (n), s- (n), then E = e + 32 in 6 bits
    (least significant first) for e' and every e_b."""
    sp, sm = (w.s == 1).astype(np.uint8), (w.s == -1).astype(np.uint8)
    E = np.concatenate([w.e_pk[None, :], w.e], axis=0) + NOISE_BOUND
    if bool((E < 0).any()) or bool((E >= 1 << NOISE_BITS).any()):
        raise ValueError("noise outside the proven bound")
    Eb = ((E[..., None] >> np.arange(NOISE_BITS)) & 1).astype(np.uint8)
    return np.concatenate([sp, sm, Eb.ravel()])


def _coefficients(ring: Ring, field: fp_auth.Field, pk0: np.ndarray, pk1_hat: np.ndarray, c0: np.ndarray,
                  c1_hat: np.ndarray, chi: np.ndarray, t_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Public coefficients of step 3: g (k, n) for s and the constant C (k,), from the NTTs of pk1
    and the c1_b. The NTT of a* = a(X^-1) is that of a reversed: a*(psi^(2i+1)) =
    a(psi^(2n-2i-1)) = a^(n-1-i) (the same residues; B + 1 NTTs fewer than transforming a*)."""
    B = c0.shape[0]
    a_hat = np.concatenate([c1_hat, pk1_hat[None]], axis=0)  # (B + 1, k, n)
    prod = ring.mul(a_hat[..., ::-1], ring.ntt(chi))
    acc = prod[0]
    for i in range(1, B + 1):
        acc = ring.add(acc, prod[i])
    g = ring.intt(acc)
    cc = np.concatenate([c0, pk0[None]], axis=0)  # (B + 1, k, n)
    C = _sum_mod(ring, ring.mul(chi, cc))  # sum_b <chi_b, c0_b> + <chi_pk, pk0> per prime
    chisum = _sum_mod(ring, chi)
    C = field.add(C, field.mul(chisum, _big(field, NOISE_BOUND << t_bits)))  # from -t e = -t E + 32 t
    return g, C


def _sum_mod(ring: Ring, x: np.ndarray) -> np.ndarray:
    """sum of residues x (B, k, n) over B and n, mod each prime: (k,). Sums over n first (n <= 8,192
    terms below 2^50 stay below 2^63), reduced, then over B (no transposed copies, no products by 1)."""
    if x.shape[-1] > 1 << 13:
        raise ValueError("at most 8,192 coefficients per polynomial")
    part = x.sum(axis=-1, dtype=U64) % ring.p[:, 0]  # (B, k)
    return part.sum(axis=0, dtype=U64) % ring.p[:, 0]


def _big(field: fp_auth.Field, x: int) -> np.ndarray:
    return np.array([x % p for p in field.primes], dtype=U64)


def lift_bits(ring: Ring, n_terms: int) -> tuple[int, int, int]:
    """(kbits, K, R) of the integer-lifted check (step 4) for ``n_terms`` committed bits: every
    combined relation is an integer Z_int in [0, p (n_terms + 1)) (coefficients and constant
    reduced to [0, p), each term one bit), so Z_int = p k with k < 2^kbits, |Z_int - p k| < 2^K,
    K = log2(p) + kbits; the MACs live mod 2^R, R = K + STAT_BITS (the forgery bound)."""
    kbits = (n_terms + 1).bit_length()
    K = max(int(p).bit_length() for p in ring.primes) + kbits
    R = K + STAT_BITS
    if R > 128:
        raise ProtocolError("lattice proof: too many committed bits for the 128-bit MAC ring")
    return kbits, K, R


def witness_count(ring: Ring, blocks: int) -> int:
    """Committed witness bits for ``blocks`` ciphertexts: 2 n (s) + NOISE_BITS n per noise polynomial."""
    return (2 + NOISE_BITS * (blocks + 1)) * ring.n


def commit_bits(party: PartyContext, chooser: int, *, n: int, mac_bits: int, bits: np.ndarray | None = None,
                delta: np.uint64 | None = None) -> U128:
    """Step 1: n client bits committed as the choice bits of n fresh COTs of the checked extension
    with correlation Delta (:func:`protocols.mpc.authenticated.cot128`): the client gets MACs
    M = K + b Delta, the server keys K (n,), right mod 2^mac_bits (the corrections travel as
    their low ceil(mac_bits / 8) bytes: all the check ring of step 4 uses)."""
    keep = np.full(n, -(-mac_bits // 8))
    if party.role == chooser:
        out = au.cot128(party, chooser, n=n, words=1, choices=np.asarray(bits, dtype=np.uint8).ravel(), keep=keep)
    else:
        corr = (np.zeros((n, 1), U64), np.full((n, 1), delta, dtype=U64))
        out = au.cot128(party, chooser, n=n, words=1, corr=corr, keep=keep)
    return out[0][:, 0].copy(), out[1][:, 0].copy()


def _coefficient_rows(ring: Ring, field: fp_auth.Field, g: np.ndarray, chi: np.ndarray, t_bits: int, n_msg: int,
                      msg_count: int, x_bits: int) -> np.ndarray:
    """Step 3's public coefficient of every committed bit, per prime, reduced to [0, p): (T, k) in
    commitment order (s+ bits, s- bits, the noise bits, then the message bits: value-major,
    least significant first). The relation is Z = C + sum_j a_j b_j (mod p)."""
    n, k = ring.n, ring.k
    B = chi.shape[0] - 1
    zero = np.zeros((n, k), U64)
    a_sp = g.T.copy()
    a_sm = field.sub(zero, a_sp)
    # -t E (E = e + 32, the 32 t part is in C): E's coefficient per value, e' first, then the e_b
    minus_t = field.sub(np.zeros(k, U64), _big(field, 1 << t_bits))
    chi_e = np.concatenate([chi[B][None], chi[:B]], axis=0).transpose(0, 2, 1).reshape(-1, k)  # ((B+1) n, k)
    a_val = field.mul(chi_e, np.broadcast_to(minus_t, chi_e.shape))
    parts = [a_sp, a_sm, _doublings(field, a_val, NOISE_BITS)]
    if msg_count:
        # - sum_b <chi_b, m_b>: message value i is coefficient i mod n_msg of block i // n_msg
        chi_m = chi[:B, :, :n_msg].transpose(0, 2, 1).reshape(-1, k)[:msg_count]
        neg = field.sub(np.zeros_like(chi_m), chi_m)
        parts.append(_doublings(field, neg, x_bits))
    return np.concatenate(parts, axis=0)


def _doublings(field: fp_auth.Field, v: np.ndarray, bits: int) -> np.ndarray:
    """(m, k) residues -> (m bits, k): v 2^i mod p for i < bits, value-major (the coefficients of a
    value's bits). Each is the previous one doubled (one conditional subtraction: cheaper than
    a product by 2^i mod p, and the same residues)."""
    out = np.empty((v.shape[0], bits, v.shape[1]), dtype=U64)
    out[:, 0] = v
    for i in range(1, bits):
        out[:, i] = field.add(out[:, i - 1], out[:, i - 1])
    return out.reshape(-1, v.shape[1])


def _combine_macs(a: np.ndarray, m: U128) -> U128:
    """sum_j a[j, i] m[j] mod 2^128 for each prime's column i: (T, k), (T,) -> (k,) limb pair.

    As float64 matrix products, exact: a < 2^50 in two 25-bit limbs, m in its 16 bytes, so every
    product is below 2^33 and every partial sum of up to 2^19 rows (_ROWS) below 2^52 < 2^53 (an
    integer, whatever the summation order); the 2 k x 16 limb sums are recombined with their
    weights 2^(25 h + 8 l) as Python integers. Products of _CHUNK rows: small enough that BLAS
    runs them on the calling thread (no helper threads competing with the peer's process) and
    that their operands stay in the cache. (~2x faster than 128-bit limb products on the proof's
    368,640 x 4 coefficients; the same values.)"""
    T, k = a.shape
    if bool((a >> U64(50)).any()):
        raise ValueError("combined coefficients must be below 2^50")
    mb = u128.to_bytes(m)  # (T, 16) little-endian bytes
    S = np.zeros((2 * k, 16), dtype=object)
    af = np.empty((2 * k, _CHUNK), dtype=np.float64)
    for s in range(0, T, _ROWS):
        acc = np.zeros((2 * k, 16), dtype=np.float64)  # exact: below 2^52
        top = min(T, s + _ROWS)
        for c0 in range(s, top, _CHUNK):
            c1 = min(top, c0 + _CHUNK)
            blk = a[c0:c1]
            w = af[:, :c1 - c0]
            w[:k] = (blk & U64((1 << 25) - 1)).T
            w[k:] = (blk >> U64(25)).T
            acc += w @ mb[c0:c1].astype(np.float64)
        S += acc.astype(np.int64).astype(object)
    out = []
    for i in range(k):
        v = sum((int(S[i, l]) + (int(S[k + i, l]) << 25)) << (8 * l) for l in range(16))
        out.append(v % (1 << 128))
    return _to_u128(out)


_ROWS = 1 << 19  # rows per exact float sum: 2^19 products below 2^33 stay below 2^52
_CHUNK = 2048  # rows per matrix product (8 x 2048 x 16: below OpenBLAS's threading threshold)


def _combine_macs_limbs(a: np.ndarray, m: U128) -> U128:
    """The same sums by 128-bit limb products (the definition :func:`_combine_macs` is tested against)."""
    out_hi, out_lo = np.empty(a.shape[1], U64), np.empty(a.shape[1], U64)
    for i in range(a.shape[1]):
        hi, lo = u128.total(u128.mul_small(m, a[:, i]), axis=0)
        out_hi[i], out_lo[i] = hi, lo
    return out_hi, out_lo


def _combined_values(a: np.ndarray, C: np.ndarray, bits: np.ndarray) -> list[int]:
    """Client: Z_int = C + sum_j a_j b_j over the integers, per prime (a < 2^50: summed in two 25-bit
    halves, exact for up to 2^39 terms)."""
    sel = a[bits.astype(bool)]
    lo = (sel & U64((1 << 25) - 1)).sum(axis=0, dtype=U64)
    hi = (sel >> U64(25)).sum(axis=0, dtype=U64)
    return [int(c) + int(x) + (int(y) << 25) for c, x, y in zip(C, lo, hi)]


def _to_u128(vals: list[int]) -> U128:
    v = [x % (1 << 128) for x in vals]
    return np.array([x >> 64 for x in v], U64), np.array([x & ((1 << 64) - 1) for x in v], U64)


def check_wellformed(party: PartyContext, chooser: int, ring: Ring, *, seed: bytes, pk0: np.ndarray, c0: np.ndarray,
                     t_bits: int, n_msg: int, x_bits: int, msg_macs: U128 | None = None,
                     msg_keys: U128 | None = None, msg_bits: np.ndarray | None = None,
                     delta: np.uint64 | None = None, witness: Witness | None = None,
                     public_hat: tuple[np.ndarray, np.ndarray] | None = None,
                     while_waiting: Callable[[], None] | None = None) -> None:
    """Steps 1-4 of the module docstring, both roles. Both pass the public ``seed``, ``pk0``
    (k, n), ``c0`` (B, k, n), ``t_bits``, ``n_msg`` (message coefficients per block) and
    ``x_bits`` (bits per message value); the client its ``witness`` and the MACs of the message
    values' bits ``msg_macs`` ((values x_bits,), value-major, least significant first, right mod
    2^R of :func:`lift_bits`) and those bits ``msg_bits``, the server its MAC key ``delta`` and the keys ``msg_keys``.
    ``public_hat``: the NTTs of (pk1, c1) if the caller has them (else computed from ``seed``; the
    client's default is its witness's); ``while_waiting`` (server): local work run while the
    client computes its opening (it must send nothing). Raises
    :class:`~protocols.mpc.authenticated.MacCheckError` on the server if the client's key or
    ciphertexts are not as stated (the caller must not answer them)."""
    client = party.role == chooser
    field = fp_auth.Field(ring.primes)
    B, k = c0.shape[0], ring.k
    nbits = witness_count(ring, B)
    msg = msg_macs if client else msg_keys
    msg_count = msg[0].shape[0] // x_bits
    kbits, K, R = lift_bits(ring, nbits + msg[0].shape[0])
    # 1. commit the witness (Z_2^R MACs under Delta)
    if client:
        wbits = witness_bits(witness)
        w = commit_bits(party, chooser, n=nbits, mac_bits=R, bits=wbits)
    else:
        w = commit_bits(party, chooser, n=nbits, mac_bits=R, delta=delta)
    # 2. chi, after the commitments
    if client:
        chi_seed = bytes(party.ch.recv_array(np.uint8, (16,)))
    else:
        chi_seed = party.rng.random_bytes(16)
        party.ch.send_array(np.frombuffer(chi_seed, dtype=np.uint8).copy())
        party.ch.flush()
    chi = ring.expand(chi_seed, "chi", (B + 1,))
    # 3. the combined relation per prime: Z = C + sum_j a_j b_j (mod p), coefficients in [0, p)
    if public_hat is None and client and witness is not None:
        public_hat = witness.public_hat
    if public_hat is None:
        pk1, c1 = public_parts(ring, seed, B)
        public_hat = ring.ntt(pk1), ring.ntt(c1)
    g, C = _coefficients(ring, field, pk0, public_hat[0], c0, public_hat[1], chi, t_bits)
    a = _coefficient_rows(ring, field, g, chi, t_bits, n_msg, msg_count, x_bits)
    macs = (np.concatenate([w[0], msg[0]]), np.concatenate([w[1], msg[1]]))
    comb = _combine_macs(a, macs)
    # 4. lifted to the integers: Z_int = p k, k committed now (kbits bits), and Z_int - p k = 0
    # opened mod 2^K (|Z_int - p k| < 2^K) under a mask r of R - K bits, checked with the MACs mod 2^R
    rb = R - K
    if client:
        bits = np.concatenate([wbits, np.asarray(msg_bits, dtype=np.uint8).ravel()])
        zint = _combined_values(a, C, bits)
        kv = np.array([z // p for z, p in zip(zint, ring.primes)], dtype=U64)
        r = party.rng.random_u64(k) & U64((1 << rb) - 1)
        ch = np.concatenate([au._bits_of(kv, kbits).ravel(), au._bits_of(r, rb).ravel()])
        out = au.cot128(party, chooser, n=k * (kbits + rb), words=1, choices=ch, keep=np.full(ch.shape[0], -(-R // 8)))
    else:
        corr = (np.zeros((k * (kbits + rb), 1), U64), np.full((k * (kbits + rb), 1), delta, dtype=U64))
        out = au.cot128(party, chooser, n=k * (kbits + rb), words=1, corr=corr,
                        keep=np.full(k * (kbits + rb), -(-R // 8)))
    col = (out[0][:, 0], out[1][:, 0])
    nk = k * kbits
    mk = au.weighted_sum((col[0][:nk].reshape(k, kbits), col[1][:nk].reshape(k, kbits)), kbits)
    mr = au.weighted_sum((col[0][nk:].reshape(k, rb), col[1][nk:].reshape(k, rb)), rb)
    pvec = np.array(ring.primes, dtype=U64)
    mz = u128.sub(comb, u128.mul_small(mk, pvec))  # MAC (key) of Z_int - C - p k
    if client:
        y = u128.mask_bits(_to_u128([z - int(c) - p * int(kk) + (int(rr) << K)
                                      for z, c, p, kk, rr in zip(zint, C, ring.primes, kv, r)]), R)
        my = u128.mask_bits(u128.add(mz, u128.shl(mr, K)), R)
        party.ch.send_array(np.stack([u128.to_bytes(y), u128.to_bytes(my)]), owned=True)
        party.ch.flush()
        return None
    if while_waiting is not None:
        while_waiting()
    got = party.ch.recv_array(np.uint8, (2, k, 16))
    y, my = u128.from_bytes16(got[0]), u128.from_bytes16(got[1])
    # honest: Z_int - C - p k = -C exactly, so y + C = 2^K r
    low = u128.mask_bits(u128.add(y, (np.zeros(k, U64), C.astype(U64))), K)
    want = u128.mask_bits(u128.add(u128.add(mz, u128.shl(mr, K)), u128.mul_small(y, delta)), R)
    ok = (low[0] == 0) & (low[1] == 0) & (want[0] == my[0]) & (want[1] == my[1])
    ok &= (u128.mask_bits(y, R)[0] == y[0]) & (u128.mask_bits(my, R)[0] == my[0])
    if not bool(ok.all()):
        raise MacCheckError("a client's lattice key or ciphertexts failed their proof: session aborted")
    return None


def recv_polys(party: PartyContext, ring: Ring, count: int) -> np.ndarray:
    """``count`` polynomials (count, k, n) in the 7-byte wire format; ProtocolError if malformed."""
    raw = party.ch.recv_array(np.uint8, (count * ring.k * ring.n, 7))
    try:
        return ring.unpack(raw, (count, ring.k, ring.n))
    except ValueError:
        raise ProtocolError("malformed lattice polynomial (a residue not below its prime)") from None
