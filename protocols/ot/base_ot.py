"""Random 1-out-of-2 base OT from elliptic-curve Diffie-Hellman ("simplest OT").

Construction: Chou and Orlandi, "The Simplest Protocol for Oblivious Transfer", LATINCRYPT 2015
(ePrint 2015/267), batched (one sender key for all n OTs) with the known fixes:

* the key-derivation hash binds the OT index and the whole public transcript (A, B_i) -- the
  original hashed only the shared point, which Genc, Iovino and Rial ("'The simplest protocol for
  oblivious transfer' revisited", ePrint 2017/370) showed insufficient;
* every point received from the peer is checked to be a canonical encoding of a point in the
  prime-order subgroup, not of small order (so no small-subgroup / invalid-point tricks); the
  group is the prime-order subgroup of Ed25519 via libsodium (PyNaCl).  PyNaCl 1.6 does not
  expose the Ristretto255 functions, so we use Ed25519 with libsodium's full subgroup check
  (``crypto_core_ed25519_is_valid_point``) and cofactor-free (``noclamp``) scalar products.

Protocol (G the generator, H = BLAKE2b-128 personalised ``secureml-baseot``):

1. Sender: a <- Z_L random, A = a*G; sends A.
2. Receiver: checks A; for each i, b_i <- Z_L, B_i = b_i*G + c_i*A; sends the B_i in a few chunks
   (the sender works on one chunk while the receiver computes the next).
   Key k_{c_i} = H(i, A, B_i, b_i*A).
3. Sender: checks each B_i; k0_i = H(i, A, B_i, a*B_i), k1_i = H(i, A, B_i, a*B_i - a*A).

Threat model: semi-honest (passively secure; also secure for the receiver against a malicious
sender).  The sender learns nothing about c (B_i is uniform in the group whatever c_i is); the
receiver learns k_{1-c_i} only by solving CDH.  Both key sets are uniformly random 128-bit
strings (random OT); the OT extension turns them into many OTs.
"""
from __future__ import annotations

import hashlib

import numpy as np
from nacl import bindings as nb
from nacl.exceptions import RuntimeError as NaClRuntimeError

from protocols.ot.crypto import random_bytes
from protocols.net.transport import Channel, MalformedMessage

__all__ = ["base_ot_send", "base_ot_recv", "MAX_BASE_OTS"]

_POINT = 32
MAX_BASE_OTS = 1 << 16
_PERSON = b"secureml-baseot"


def _scalar(rng: np.random.Generator | None) -> bytes:
    # Reduce 64 uniform bytes mod L: statistically uniform scalar (bias < 2^-250).
    return nb.crypto_core_ed25519_scalar_reduce(random_bytes(64, rng))


def _valid(point: bytes) -> bool:
    return len(point) == _POINT and bool(nb.crypto_core_ed25519_is_valid_point(point))


def _kdf(i: int, a_pub: bytes, b_pub: bytes, shared: bytes) -> np.ndarray:
    h = hashlib.blake2b(digest_size=16, person=_PERSON.ljust(16, b"\0"))
    h.update(i.to_bytes(8, "little"))
    h.update(a_pub)
    h.update(b_pub)
    h.update(shared)
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _mul(scalar: bytes, point: bytes) -> bytes:
    try:
        return nb.crypto_scalarmult_ed25519_noclamp(scalar, point)
    except NaClRuntimeError:  # result is the identity: only for an invalid/degenerate input
        raise MalformedMessage("base OT: degenerate point from peer") from None


def base_ot_send(
    ch: Channel, n: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run n random base OTs as the sender; returns (k0, k1), each (n, 16) uint8.

    ``rng`` seeds the secret scalar for reproducible tests only (INSECURE); default: OS entropy.
    """
    k0, k1, _ = _base_ot_send(ch, n, rng)
    return k0, k1


def base_ot_recv(
    ch: Channel, choices: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Run len(choices) random base OTs as the receiver; returns k_{c_i} as (n, 16) uint8.

    ``rng`` seeds the secret scalars for reproducible tests only (INSECURE).
    """
    return _base_ot_recv(ch, choices, rng)[0]


def _chunks(n: int, parts: int = 4) -> list[tuple[int, int]]:
    """The receiver's points travel in a few chunks (same split on both sides)."""
    step = max(16, -(-n // parts))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _transcript_digest(a_pub: bytes, b_all: bytes) -> bytes:
    """Session identifier: hash of the public base-OT messages (both parties know them)."""
    h = hashlib.blake2b(digest_size=32, person=b"secureml-ot-sid".ljust(16, b"\0"))
    h.update(a_pub)
    h.update(b_all)
    return h.digest()


def _base_ot_send(
    ch: Channel, n: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Sender side; also returns a digest of the public transcript (a session identifier)."""
    if not 0 < n <= MAX_BASE_OTS:
        raise ValueError(f"number of base OTs must be in [1, {MAX_BASE_OTS}]")
    # Step 1: A = a*G.
    a = _scalar(rng)
    a_pub = nb.crypto_scalarmult_ed25519_base_noclamp(a)
    ch.send(a_pub)
    # Step 3: receive and check the B_i (in the receiver's chunks, so both sides compute at the
    # same time), derive both keys.
    a_a = _mul(a, a_pub)
    k0 = np.empty((n, 16), dtype=np.uint8)
    k1 = np.empty((n, 16), dtype=np.uint8)
    parts = []
    for lo, hi in _chunks(n):
        part = ch.recv(max_bytes=(hi - lo) * _POINT)
        if len(part) != (hi - lo) * _POINT:
            raise MalformedMessage(f"base OT: expected {(hi - lo) * _POINT} bytes of points, got {len(part)}")
        parts.append(part)
        for i in range(lo, hi):  # per-OT group operations are inherent here
            b_pub = part[(i - lo) * _POINT : (i - lo + 1) * _POINT]
            if not _valid(b_pub):
                raise MalformedMessage(f"base OT: point {i} from the receiver is not in the group")
            s0 = _mul(a, b_pub)
            s1 = nb.crypto_core_ed25519_sub(s0, a_a)
            k0[i] = _kdf(i, a_pub, b_pub, s0)
            k1[i] = _kdf(i, a_pub, b_pub, s1)
    data = b"".join(parts)
    return k0, k1, _transcript_digest(a_pub, data)


def _base_ot_recv(
    ch: Channel, choices: np.ndarray, rng: np.random.Generator | None
) -> tuple[np.ndarray, bytes]:
    """Receiver side; also returns the public-transcript digest."""
    c = np.asarray(choices).astype(np.uint8, copy=False).ravel()
    n = c.shape[0]
    if not 0 < n <= MAX_BASE_OTS:
        raise ValueError(f"number of base OTs must be in [1, {MAX_BASE_OTS}]")
    if np.any(c > 1):
        raise ValueError("choice bits must be 0 or 1")
    # Step 2: check A, send B_i = b_i*G + c_i*A.
    a_pub = ch.recv(max_bytes=_POINT)
    if not _valid(a_pub):
        raise MalformedMessage("base OT: sender's point is not in the group")
    out = np.empty((n, 16), dtype=np.uint8)
    pubs = []
    for lo, hi in _chunks(n):
        for i in range(lo, hi):
            b = _scalar(rng)
            b_g = nb.crypto_scalarmult_ed25519_base_noclamp(b)
            # Compute the sum for both choices so timing does not depend on c_i.
            b_plus = nb.crypto_core_ed25519_add(b_g, a_pub)
            b_pub = b_plus if c[i] else b_g
            pubs.append(b_pub)
            out[i] = _kdf(i, a_pub, b_pub, _mul(b, a_pub))
        ch.send(b"".join(pubs[lo:hi]))  # the sender starts on this chunk while we compute the next
    b_all = b"".join(pubs)
    return out, _transcript_digest(a_pub, b_all)
