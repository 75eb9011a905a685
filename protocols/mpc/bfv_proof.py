"""Proof that a client's RLWE public key and ciphertexts are well formed, for a semi-honest server
that answers them (client-malicious lattice HE, :mod:`protocols.mpc.he_matvec_checked`).

Threat model: the server is semi-honest, the client may send any bytes. A lattice reply is safe
for the server only if its noise flooding dominates the noise the client put in: an ill-formed
key or ciphertext (huge noise, a c1 the client can divide out, a public key whose phase is not
small) would let the client read the server's plaintext from the reply despite flooding. After
this check the server knows, for ANY bytes the client sent, except with probability ~2^-49:

    pk0  + pk1  s = t e'          (mod Q)      s ternary, |e'| <= 32
    c0_b + c1_b s = m_b + t e_b   (mod Q)      |e_b| <= 32, m_b = the committed message block

(BGV-style encoding, plaintext in the low bits; t = 2^M the ring of the shares; Q the product of
the primes of :class:`protocols.mpc.rlwe.Ring`). pk1 and every c1_b are not the client's: they are
expanded from a seed the server sends (:func:`public_parts`), so they are uniform and the client
cannot pick them.

Steps (both roles run :func:`check_wellformed`; the client has already sent pk0 and the c0_b; the
message blocks m_b are values the client committed before, given as MACs mod p -- in
:mod:`protocols.krr.binding` the bits of the query, fixed by random OTs of the checked extension):
  1. The client commits its witness as bits (:func:`protocols.mpc.fp_auth.commit_bits`: random
     OTs of the checked extension, MACs mod every prime): two bits per coefficient of s
     (s = b+ - b-: always in {-1, 0, 1}), six bits per coefficient of every noise polynomial
     (E = e + 32 in [0, 64): |e| <= 32 by construction).
  2. The server draws chi (one uniform polynomial per relation mod every prime, from a seed it
     sends now: after the commitments, so nothing the client fixed can depend on it).
  3. Both sides form the random combination of all relations, per prime p:
         Z = sum_b <chi_b, c0_b + c1_b s - m_b - t e_b> + <chi_pk, pk0 + pk1 s - t e'>
           = C + <g, s> - sum_b <chi_b, m_b> - t sum_b <chi_b, e_b> - t <chi_pk, e'>
     with C = sum_b <chi_b, c0_b> + <chi_pk, pk0> and g = sum_b c1_b* chi_b + pk1* chi_pk
     (a* = a(X^-1), the transpose of multiplication by a): linear in the committed bits with
     public coefficients. The client sends its combination of MACs, the server checks it against
     its keys (:func:`protocols.mpc.fp_auth.check_zero`).
Soundness: if any coefficient of any relation is nonzero mod p, Z = 0 for at most a 1/p fraction
of chi; a passing MAC for Z != 0 needs the MAC key (1/p). All primes are checked, so the relations
hold mod Q. Zero knowledge (against the semi-honest server): the server sees random-OT messages,
its own corrections, and one MAC whose value it can compute itself (Z = 0).
Cost: (2 + 6 (B + 1)) n committed bits (a random OT + 7 bytes per prime each), a 16-byte seed,
8 k bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.mpc import fp_auth
from protocols.mpc.context import PartyContext
from protocols.mpc.rlwe import Ring
from secureml.errors import ProtocolError

U64, I64 = np.uint64, np.int64
#: |e| <= NOISE_BOUND for every proven noise coefficient (E = e + NOISE_BOUND in NOISE_BITS bits)
NOISE_BITS = 6
NOISE_BOUND = 32
_DOMAIN = 16  # hash domain of the witness bits' MACs (fresh random OTs)


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


def _times_t(ring: Ring, x: np.ndarray, t_bits: int) -> np.ndarray:
    return ring.mul(ring.from_signed(x), ring.scalar(1 << t_bits))


def client_encrypt(ring: Ring, rng: Any, seed: bytes, messages: np.ndarray, t_bits: int,
                   ) -> tuple[np.ndarray, np.ndarray, Witness]:
    """Client: a fresh key and one ciphertext per row of ``messages`` (B, n_msg), entries < 2^t:
    pk0 = -pk1 s + t e', c0_b = -c1_b s + m_b + t e_b (mod Q). Returns (pk0, c0, witness)."""
    messages = np.atleast_2d(np.asarray(messages, dtype=I64))
    B, n_msg = messages.shape
    pk1, c1 = public_parts(ring, seed, B)
    s = ring.ternary(rng, (ring.n,))
    e_pk = ring.cbd(rng, (ring.n,))
    e = ring.cbd(rng, (B, ring.n))
    s_hat = ring.ntt(ring.from_signed(s))
    pk0 = ring.sub(_times_t(ring, e_pk, t_bits), ring.intt(ring.mul(ring.ntt(pk1), s_hat)))
    m = np.zeros((B, ring.n), dtype=I64)
    m[:, :n_msg] = messages
    c1s = ring.intt(ring.mul(ring.ntt(c1), s_hat))
    c0 = ring.sub(ring.add(ring.from_signed(m), _times_t(ring, e, t_bits)), c1s)
    return pk0, c0, Witness(s, e_pk, e, s_hat)


def witness_bits(w: Witness) -> np.ndarray:
    """The committed bits, in commitment order: s+ (n), s- (n), then E = e + 32 in 6 bits
    (least significant first) for e' and every e_b."""
    sp, sm = (w.s == 1).astype(np.uint8), (w.s == -1).astype(np.uint8)
    E = np.concatenate([w.e_pk[None, :], w.e], axis=0) + NOISE_BOUND
    if bool((E < 0).any()) or bool((E >= 1 << NOISE_BITS).any()):
        raise ValueError("noise outside the proven bound")
    Eb = ((E[..., None] >> np.arange(NOISE_BITS)) & 1).astype(np.uint8)
    return np.concatenate([sp, sm, Eb.ravel()])


def _coefficients(ring: Ring, field: fp_auth.Field, pk0: np.ndarray, pk1: np.ndarray, c0: np.ndarray,
                  c1: np.ndarray, chi: np.ndarray, t_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Public coefficients of step 3: g (k, n) for s and the constant C (k,)."""
    B = c0.shape[0]
    a = np.concatenate([c1, pk1[None]], axis=0)  # (B + 1, k, n)
    prod = ring.mul(ring.ntt(ring.adjoint(a)), ring.ntt(chi))
    acc = prod[0]
    for i in range(1, B + 1):
        acc = ring.add(acc, prod[i])
    g = ring.intt(acc)
    cc = np.concatenate([c0, pk0[None]], axis=0)  # (B + 1, k, n)
    C = field.dot(chi.transpose(0, 2, 1).reshape(-1, ring.k), cc.transpose(0, 2, 1).reshape(-1, ring.k))
    chisum = field.dot(chi.transpose(0, 2, 1).reshape(-1, ring.k), np.ones(((B + 1) * ring.n, ring.k), U64))
    C = field.add(C, field.mul(chisum, _big(field, NOISE_BOUND << t_bits)))  # from -t e = -t E + 32 t
    return g, C


def _big(field: fp_auth.Field, x: int) -> np.ndarray:
    return np.array([x % p for p in field.primes], dtype=U64)


def _combine(ring: Ring, field: fp_auth.Field, g: np.ndarray, chi: np.ndarray, t_bits: int,
             bit_vals: np.ndarray, msg_vals: np.ndarray, n_msg: int) -> np.ndarray:
    """The linear combination of step 3 applied to MACs (client) or keys (server): (k,)."""
    n, k = ring.n, ring.k
    B = chi.shape[0] - 1
    sp, sm = bit_vals[:n], bit_vals[n:2 * n]
    acc = field.dot(g.T, field.sub(sp, sm))
    E = field.values(bit_vals[2 * n:], NOISE_BITS)  # ((B + 1) n, k): e' first, then the e_b
    E = E.reshape(B + 1, n, k)
    minus_t = field.sub(np.zeros(k, U64), _big(field, 1 << t_bits))
    te = field.dot(np.concatenate([chi[B].T[None], chi[:B].transpose(0, 2, 1)], axis=0).reshape(-1, k),
                   E.reshape(-1, k))
    acc = field.add(acc, field.mul(minus_t, te))
    if n_msg:
        msg = field.dot(chi[:B, :, :n_msg].transpose(0, 2, 1).reshape(-1, k), msg_vals.reshape(-1, k))
        acc = field.sub(acc, msg)
    return acc


def check_wellformed(party: PartyContext, chooser: int, ring: Ring, field: fp_auth.Field, *, seed: bytes,
                     pk0: np.ndarray, c0: np.ndarray, t_bits: int, n_msg: int,
                     msg_macs: np.ndarray | None = None, msg_keys: np.ndarray | None = None,
                     keys: np.ndarray | None = None, witness: Witness | None = None) -> None:
    """Steps 1-3 of the module docstring, both roles. Both pass the public ``seed``, ``pk0``
    (k, n), ``c0`` (B, k, n), ``t_bits`` and ``n_msg`` (message coefficients per block); the
    client its ``witness`` and the MACs of the message values ``msg_macs`` (B, n_msg, k), the
    server its MAC ``keys`` (k,) and ``msg_keys`` (B, n_msg, k). Raises
    :class:`~protocols.mpc.authenticated.MacCheckError` on the server if the client's key or
    ciphertexts are not as stated (the caller must not answer them)."""
    client = party.role == chooser
    B = c0.shape[0]
    nbits = (2 + NOISE_BITS * (B + 1)) * ring.n
    # 1. commit the witness
    if client:
        vals = fp_auth.commit_bits(party, chooser, field, n=nbits, domain=_DOMAIN, bits=witness_bits(witness))
    else:
        vals = fp_auth.commit_bits(party, chooser, field, n=nbits, domain=_DOMAIN, keys=keys)
    # 2. chi, after the commitments
    if client:
        chi_seed = bytes(party.ch.recv_array(np.uint8, (16,)))
    else:
        chi_seed = party.rng.random_bytes(16)
        party.ch.send_array(np.frombuffer(chi_seed, dtype=np.uint8).copy())
        party.ch.flush()
    chi = ring.expand(chi_seed, "chi", (B + 1,))
    # 3. the combined relation, checked
    pk1, c1 = public_parts(ring, seed, B)
    g, C = _coefficients(ring, field, pk0, pk1, c0, c1, chi, t_bits)
    if client:
        mac = _combine(ring, field, g, chi, t_bits, vals, msg_macs, n_msg)
        fp_auth.check_zero(party, chooser, field, mac=mac[None])
    else:
        key = _combine(ring, field, g, chi, t_bits, vals, msg_keys, n_msg)
        fp_auth.check_zero(party, chooser, field, key=key[None], const=C[None], keys=keys)


def recv_polys(party: PartyContext, ring: Ring, count: int) -> np.ndarray:
    """``count`` polynomials (count, k, n) in the 7-byte wire format; ProtocolError if malformed."""
    raw = party.ch.recv_array(np.uint8, (count * ring.k * ring.n, 7))
    try:
        return ring.unpack(raw, (count, ring.k, ring.n))
    except ValueError:
        raise ProtocolError("malformed lattice polynomial (a residue not below its prime)") from None
