"""Consistency check for IKNP-style OT extension against a malicious *receiver* (KOS15-style).

Why: in IKNP / SoftSpoken the receiver sends, per bit j of the sender's secret s, a column that
should encode the *same* choice vector r in every column.  A receiver that uses a different
choice vector in column j makes the sender's rows ``q_i = t_i ^ r_i s ^ e_ij s_j`` depend on s_j,
and can then learn s bit by bit from the values the sender derives from q (its pads, hence every
correlation and every unchosen message).  Keller, Orsini and Scholl (KOS15, CRYPTO 2015) close
this with a random linear check of the rows in GF(2^128); SoftSpoken's malicious variant (Roy 2022)
checks the same correlation with a linear universal hash.  This module is our version.

Check of one extension piece (rows: the receiver holds t_i and r_i, the sender q_i and s, with
``q_i = t_i ^ r_i s`` for an honest receiver; all 128-bit strings read as GF(2^128) elements):

  1. The receiver appends PAD_OTS OTs with uniformly random choices to the piece; they are
     never used (they hide r in step 3).
  2. Challenge (Fiat-Shamir): a key K = H(session digest, piece counter, the receiver's u
     message), fixed only once the receiver has sent u; h = AES_K(0).  The hash is the
     polynomial hash chi_i = h^(n + 2 - i) (GHASH), computed by AES-GCM with the rows as
     associated data (carry-less multiply in hardware: a few ms per 2^17 OTs).
  3. Receiver sends T = sum_i chi_i t_i and X = sum_i chi_i r_i (32 bytes per piece).
  4. Sender checks sum_i chi_i q_i == T + X * s (one GF(2^128) product) and aborts otherwise.

Soundness: write the receiver's columns as choices r ^ e_{.j} (column j).  Then sum chi_i q_i
contains the term sum_i chi_i (e_i AND s), e_i the row of errors; matching it with a claimed
(T, X) for e != 0 needs either a zero of the (degree <= n + 1) hash polynomial, probability
<= (n + 1) 2^-128 over h, or a guess of the bits s_j of the columns that deviate -- which is
KOS's leakage/abort trade-off: each guessed bit doubles the chance of being caught, and the
bits not guessed stay uniform.  A SoftSpoken receiver that deals inconsistent GGM trees adds
errors that depend on Delta_b; the check of the final correlation catches them or costs the
same guesses (Roy 2022, malicious variant).  Caveat, stated plainly: the original KOS15 proof
had a gap that Roy found; the corrected analysis (SoftSpoken's malicious variant, and the revised
KOS ePrint 2015/546, Fig. 10) covers a check of this shape with a linear universal hash and
Fiat-Shamir challenges, as used e.g. by DKLs23 implementations. Our instantiation (GHASH as the
universal hash, 128 padding OTs) follows that shape; it is not separately proven here.
Hiding: X is uniform thanks to the PAD_OTS random choices (the 128 consecutive powers of h are
GF(2)-independent unless h lies in a proper subfield, probability ~2^-64); T = sum chi_i q_i + X s
is then implied by what the sender holds.  Grinding u to pick h costs a fresh 2^-128 chance per
try.

Cost: 3 GHASH passes over the rows per side (hardware), 32 bytes and no extra round per piece
(the proof follows u in the same direction).  Threat model: the OT-extension *sender* is
semi-honest (it runs the check as written); the receiver may deviate arbitrarily.
"""
from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureml.errors import ProtocolError

__all__ = ["PAD_OTS", "PROOF_BYTES", "ConsistencyError", "fs_key", "receiver_proof", "sender_verify",
           "gf128_mul"]

U64 = np.uint64
#: random-choice OTs appended to every checked piece (hide r's hash X)
PAD_OTS = 128
#: bytes of one piece's proof (T and X)
PROOF_BYTES = 32
_NONCE = bytes(12)
_R = 0xE1 << 120


class ConsistencyError(ProtocolError):
    """The OT-extension receiver's columns are inconsistent (a deviating peer): abort."""


def gf128_mul(x: int, y: int) -> int:
    """Product in GF(2^128), GCM's convention (blocks read big-endian, bit 0 = x^0 is the MSB)."""
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def fs_key(digest: bytes, counter: int, message: np.ndarray) -> bytes:
    """Step 2: the piece's hash key K, from the session digest, the piece counter and u."""
    h = hashlib.blake2b(digest_size=16, person=b"secureml-kos")
    h.update(bytes(digest))
    h.update(int(counter).to_bytes(8, "little"))
    h.update(memoryview(np.ascontiguousarray(message)).cast("B"))
    return h.digest()


def _tag(key: bytes, rows: np.ndarray) -> int:
    """GHASH of the rows (plus GCM's fixed terms, equal for equal lengths) as an int."""
    data = np.ascontiguousarray(rows).view(np.uint8).tobytes()
    return int.from_bytes(AESGCM(key).encrypt(_NONCE, b"", data), "big")


def _hash_of_bits(key: bytes, bits: np.ndarray) -> int:
    """sum_i chi_i r_i: the hash of the blocks r_i * 1, minus the all-zero message's tag."""
    # the field's 1 is the block 0x80 00 .. 00: as two little-endian words, (1 << 7, 0)
    blocks = np.zeros((bits.shape[0], 2), dtype=U64)
    blocks[:, 0] = bits.astype(U64) << U64(7)
    return _tag(key, blocks) ^ _tag(key, np.zeros_like(blocks))


def receiver_proof(key: bytes, rows: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """Step 3: (T, X) as 32 bytes for rows t (n, 2) uint64 and choice bits r (n,)."""
    T = _tag(key, rows)
    X = _hash_of_bits(key, np.asarray(choices, dtype=np.uint8))
    return np.frombuffer(T.to_bytes(16, "big") + X.to_bytes(16, "big"), dtype=np.uint8).copy()


def sender_verify(key: bytes, rows: np.ndarray, s_row: np.ndarray, proof: np.ndarray) -> None:
    """Step 4: raise :class:`ConsistencyError` unless hash(q) == T + X * s."""
    proof = np.asarray(proof, dtype=np.uint8)
    if proof.shape != (PROOF_BYTES,):
        raise ConsistencyError("OT extension consistency proof has the wrong size")
    T = int.from_bytes(proof[:16].tobytes(), "big")
    X = int.from_bytes(proof[16:].tobytes(), "big")
    s = int.from_bytes(np.ascontiguousarray(s_row, dtype=U64).view(np.uint8).tobytes(), "big")
    if _tag(key, rows) ^ T != gf128_mul(X, s):
        raise ConsistencyError("OT extension consistency check failed: the peer's OT columns are inconsistent")


def hash_key(key: bytes) -> int:
    """h = AES_K(0^128), the point the polynomial hash is evaluated at (tests)."""
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return int.from_bytes(enc.update(bytes(16)) + enc.finalize(), "big")
