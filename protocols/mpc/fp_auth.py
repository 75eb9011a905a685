"""One-sided MACs modulo primes p_1..p_k (each below 2^50) on committed client bits, and a check of
linear relations mod p over them.

Threat model as :mod:`protocols.mpc.authenticated`: the server is semi-honest, the client may
deviate arbitrarily. This is the prime-field sibling of that module's Z_2^128 MACs, for relations
that hold modulo the RNS primes of a lattice ciphertext modulus (:mod:`protocols.mpc.bfv_proof`):
their modulus Q (~2^200) exceeds any power-of-two MAC ring we could carry, so each prime gets its
own MAC.

* The server draws one MAC key Delta_i per prime, uniform in [0, p_i), fresh per session.
* A **committed bit** b is the choice bit of one random OT of the *checked* OT extension
  (:func:`protocols.mpc.authenticated.random_choices`), so it is a bit by construction. Both sides
  hash the OT keys to k residues (TCCR counter mode in the caller's ``domain``, reduced mod p_i:
  bias <= p_i / 2^64 < 2^-13 relative, which costs a forger less than 0.001 bit of Delta). The server
  sends tau_i = P0_i + Delta_i - P1_i (mod p_i) and keeps K_i = P0_i; the client, holding P_b,
  gets M_i = P_b,i + b tau_i = K_i + b Delta_i (mod p_i). The same random OTs can carry MACs mod p
  *and* the Z_2^128 MACs of :mod:`protocols.mpc.authenticated` in separate hash domains: then the
  same bit is authenticated in both worlds (the query's bits, in :mod:`protocols.krr.binding`).
* **Linear relations** with public coefficients a_j and constant c, Z = sum_j a_j b_j + c = 0
  (mod p_i): the client sends M_Z = sum_j a_j M_j (mod p_i); the server checks
  M_Z = sum_j a_j K_j - c Delta_i (:func:`check_zero`). The opened value is 0 and its MAC is the
  server's own key combination, so the check reveals nothing about the client's bits.

Soundness: a client whose true Z is not 0 mod p_i passes only by sending K_Z - c Delta_i, i.e.
M_Z - Z Delta_i: it must know Delta_i, which it sees only through tau (one-time padded by the
unchosen P_(1-b)): probability <= ~1/p_i < 2^-49 per prime. Callers combine many relations with
coefficients drawn uniformly mod p_i by the server *after* the commitments (a nonzero relation
survives a random combination with probability 1/p_i).
"""
from __future__ import annotations

import numpy as np

from protocols.mpc import authenticated as au
from protocols.mpc.authenticated import MacCheckError
from protocols.mpc.context import PartyContext
from protocols.mpc.rlwe import ModPrimes

U64, F64 = np.uint64, np.float64


class Field(ModPrimes):
    """The k primes (each < 2^50) and their float inverses, as (k,) arrays."""

    def __init__(self, primes: list[int]) -> None:
        if not primes or max(primes) >= 1 << 50:
            raise ValueError("fp_auth needs primes below 2^50")
        self.primes = [int(p) for p in primes]
        self.k = len(primes)
        self.p = np.array(self.primes, dtype=U64)
        self.pinv = 1.0 / self.p.astype(F64)

    def reduce(self, words: np.ndarray) -> np.ndarray:
        """(..., k) uint64 words -> residues mod p_i."""
        return words % self.p

    def dot(self, coef: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """sum over the first axis of coef * vals mod p: (m, k), (m, k) -> (k,)."""
        prod = self.mul(coef, vals)  # (m, k), each < 2^50
        m = prod.shape[0]
        acc = np.zeros(self.k, dtype=U64)
        for a in range(0, m, 8192):  # 8192 terms < 2^50 sum below 2^63
            acc = self.add(acc, prod[a:a + 8192].sum(axis=0, dtype=U64) % self.p)
        return acc

    def weights(self, bits: int) -> np.ndarray:
        """(bits, k): 2^i mod p_i, for turning bit MACs into value MACs."""
        return np.array([[pow(2, i, p) for p in self.primes] for i in range(bits)], dtype=U64)

    def values(self, bit_macs: np.ndarray, bits: int) -> np.ndarray:
        """(n * bits, k) MACs (or keys) of bits, value-major, least significant first -> (n, k)
        MACs of the values sum_i 2^i b_i (linear: the same map for MACs and keys)."""
        x = bit_macs.reshape(-1, bits, self.k)
        acc = x[:, bits - 1]
        for i in range(bits - 2, -1, -1):  # Horner: 2 acc + b_i, reduced each step (< 2^51)
            acc = self.add(self.add(acc, acc), x[:, i])
        return acc

    def pack(self, a: np.ndarray) -> np.ndarray:
        """Residues (< 2^50) in 7 bytes each."""
        return np.ascontiguousarray(np.ascontiguousarray(a, dtype="<u8").view(np.uint8).reshape(-1, 8)[:, :7])

    def unpack(self, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        full = np.zeros((raw.shape[0], 8), dtype=np.uint8)
        full[:, :7] = raw
        return full.view("<u8").reshape(shape).astype(U64)


def new_keys(party: PartyContext, field: Field) -> np.ndarray:
    """Server: fresh MAC keys Delta_i uniform in [0, p_i) (rejection sampling)."""
    out = np.empty(field.k, dtype=U64)
    for i, p in enumerate(field.primes):
        while True:
            x = int(party.rng.random_below(1, 50)[0])
            if x < p:
                out[i] = x
                break
    return out


def _hash(field: Field, pads: np.ndarray, domain: int, start: int = 0) -> np.ndarray:
    return field.reduce(au._stream(pads, field.k, domain, start))


#: OTs per chunk of :func:`macs_on_pads` (the proof commits ~500k bits at N = 16,384: its (n, k)
#: arrays are 16 MB; 2^14-row chunks keep the hash, reduction and correction in the cache)
_ROWS = 1 << 14


def macs_on_pads(party: PartyContext, chooser: int, field: Field, pads, domain: int, *,
                 choices: np.ndarray | None = None, keys: np.ndarray | None = None) -> np.ndarray:
    """MACs mod p on the choice bits of existing random OTs (``pads`` from
    :func:`protocols.mpc.authenticated.random_choices`), both roles: the client (``chooser``)
    passes its ``choices`` and gets M (n, k); the server passes its MAC ``keys`` (k,) and gets
    K (n, k). One message: the server's corrections, 7 bytes per bit and prime."""
    k = field.k
    if party.role == chooser:
        c = np.asarray(choices, dtype=np.uint8).ravel()
        n = c.shape[0]
        tau = field.unpack(party.ch.recv_array(np.uint8, (n * k, 7)), (n, k))
        if bool((tau >= field.p).any()):
            raise ValueError("unreduced correction")  # a semi-honest server never sends one
        out = np.empty((n, k), dtype=U64)
        for r0 in range(0, n, _ROWS):
            r = slice(r0, r0 + _ROWS)
            P = _hash(field, pads[r], domain, r0)
            out[r] = field.add(P, tau[r] & (U64(0) - c[r, None].astype(U64)))  # tau where the bit is 1
        return out
    m0, m1 = pads
    n = m0.shape[0]
    P0 = np.empty((n, k), dtype=U64)
    wire = np.empty((n * k, 7), dtype=np.uint8)
    for r0 in range(0, n, _ROWS):
        r = slice(r0, r0 + _ROWS)
        p0, p1 = _hash(field, m0[r], domain, r0), _hash(field, m1[r], domain, r0)
        P0[r] = p0
        wire[r0 * k:(r0 + p0.shape[0]) * k] = field.pack(field.sub(field.add(p0, keys), p1))
    party.ch.send_array(wire, owned=True)
    party.ch.flush()
    return P0


def commit_bits(party: PartyContext, chooser: int, field: Field, *, n: int, domain: int,
                bits: np.ndarray | None = None, keys: np.ndarray | None = None) -> np.ndarray:
    """Commit n client bits: n random OTs of the checked extension with the bits as choices, then
    MACs mod every p_i on them (:func:`macs_on_pads`). Client: ``bits`` -> MACs (n, k); server:
    ``keys`` -> keys (n, k)."""
    if party.role == chooser:
        b = np.asarray(bits, dtype=np.uint8).ravel()
        if b.shape[0] != n or bool((b > 1).any()):
            raise ValueError("commit_bits needs n bits")
        pads = au.random_choices(party, chooser, n=n, choices=b)
        return macs_on_pads(party, chooser, field, pads, domain, choices=b)
    pads = au.random_choices(party, chooser, n=n)
    return macs_on_pads(party, chooser, field, pads, domain, keys=keys)


def check_zero(party: PartyContext, chooser: int, field: Field, *, mac: np.ndarray | None = None,
               key: np.ndarray | None = None, const: np.ndarray | None = None,
               keys: np.ndarray | None = None) -> None:
    """Check that relations Z = (linear combination of committed bits) + const are 0 mod p.

    Client: ``mac`` (r, k), the same combination of its MACs; server: ``key`` (r, k) the
    combination of its keys, ``const`` (r, k) the public constants, ``keys`` its Delta. One
    message (8 bytes per relation and prime). Raises :class:`MacCheckError` on the server."""
    if party.role == chooser:
        party.ch.send_array(np.ascontiguousarray(np.atleast_2d(mac), dtype="<u8"))
        party.ch.flush()
        return None
    key = np.atleast_2d(key)
    got = party.ch.recv_array(np.dtype("<u8"), key.shape).astype(U64)
    want = field.sub(key, field.mul(np.atleast_2d(const), np.broadcast_to(keys, key.shape)))
    if not bool((got == want).all()):
        raise MacCheckError("a client's committed values failed a relation mod p: session aborted")
    return None
