"""Symmetric primitives for the OT engine, vectorized over many OTs.

* :class:`CounterPRG` -- AES-128 in counter mode as a stateful stream (one per base-OT seed).
* :class:`FixedKeyAES` -- a public-key AES permutation pi used as

  - a tweakable correlation-robust hash ``H(x, i) = pi(pi(x) ^ i) ^ pi(x)`` (the TCCR construction
    of Guo, Katz, Wang, Yu, "Efficient and secure multiparty computation from fixed-key block
    ciphers", IEEE S&P 2020, Sec. 7).  The tweak i is unique per OT (a global OT counter plus a
    domain tag), which is what makes the hash secure against the multi-instance attacks on
    plain ``pi(x) ^ x`` hashing that Guo et al. describe;
  - in counter mode, ``H(x, (i, b))`` for blocks b = 0, 1, ..., which expands one OT's 128-bit
    string into many pseudorandom words (vector correlations) with one AES call per block;
* :func:`transpose_bits` -- the IKNP bit-matrix transpose (8x8 bit blocks inside uint64 words by
  three delta swaps, plus byte shuffles done by numpy strides), ~15x faster than unpack/packbits;
* :func:`random_bytes` -- ``os.urandom``, or a seeded numpy generator for reproducible tests only.

The fixed key is public; random-permutation-model security does not need it secret.  Per session
we derive it from the base-OT transcript so no precomputation across sessions is possible.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "CounterPRG",
    "FixedKeyAES",
    "transpose_bits",
    "random_bytes",
    "derive_key",
    "pack_bits",
    "unpack_bits",
]

_U64 = np.uint64


def random_bytes(n: int, rng: np.random.Generator | None = None) -> bytes:
    """n random bytes: OS entropy, or (INSECURE, tests only) from a seeded numpy generator."""
    if rng is None:
        return os.urandom(n)
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()


def derive_key(tag: bytes, *parts: bytes, size: int = 16) -> bytes:
    """Domain-separated key derivation: BLAKE2b keyed by nothing, personalised by the tag."""
    h = hashlib.blake2b(digest_size=size, person=tag[:16].ljust(16, b"\0"))
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Bool/0-1 vector -> packed uint8, bit i at byte i//8, position i%8 (little bit order)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="little")


def unpack_bits(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: first n bits as a uint8 0/1 vector."""
    return np.unpackbits(packed, count=n, bitorder="little")


class CounterPRG:
    """AES-128-CTR keystream from a 16-byte seed; successive calls continue the stream."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 16:
            raise ValueError("PRG seed must be 16 bytes")
        self._enc = Cipher(algorithms.AES(bytes(seed)), modes.CTR(bytes(16))).encryptor()

    def fill(self, out: np.ndarray) -> None:
        """Overwrite the contiguous uint8 array ``out`` with the next keystream bytes."""
        n = out.shape[0]
        zeros = _zeros(n)
        self._enc.update_into(zeros[:n], memoryview(out))

    def next(self, n: int) -> np.ndarray:
        """The next n keystream bytes as a uint8 array."""
        out = np.empty(n, dtype=np.uint8)
        self.fill(out)
        return out


_ZEROS = [memoryview(bytes(1 << 16))]


def _zeros(n: int) -> memoryview:
    """A shared read-only zero buffer of at least n bytes (grown on demand, never written)."""
    if _ZEROS[0].nbytes < n:
        _ZEROS[0] = memoryview(bytes(max(n, 2 * _ZEROS[0].nbytes)))
    return _ZEROS[0]


class FixedKeyAES:
    """AES-128 with a fixed (public) key, applied to many 16-byte blocks at once (ECB)."""

    # Domain tags (high 64 bits of the tweak) so the same OT index never meets the same tweak
    # in two different uses.
    TAG_OT = 1
    TAG_LUT = 2

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError("fixed AES key must be 16 bytes")
        self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

    def permute(self, x: np.ndarray) -> np.ndarray:
        """pi(x) for x a C-contiguous array whose size is a multiple of 16 bytes (same shape)."""
        x = np.ascontiguousarray(x)
        nb = x.nbytes
        buf = np.empty(nb + 16, dtype=np.uint8)
        self._enc.update_into(memoryview(x.reshape(-1).view(np.uint8)), memoryview(buf))
        return buf[:nb].view(x.dtype).reshape(x.shape)

    def tccr_blocks(self, x: np.ndarray, start: int, nblk: int, tag: int) -> np.ndarray:
        """Tweakable CR hash in counter mode: block b of row r is H(x_r, (start + r, tag | b<<32)).

        H(x, t) = pi(pi(x) ^ t) ^ pi(x) (Guo et al. 2020, TCCR), t = two little-endian uint64
        words.  x: (k, 2) uint64 (or (k, 16) uint8).  Returns (k, 2 * nblk) uint64.
        """
        p = self.permute(np.ascontiguousarray(x).view(np.uint8).reshape(-1, 16).view(_U64))
        k = p.shape[0]
        t = np.empty((k, nblk, 2), dtype=_U64)
        t[:, :, 0] = p[:, None, 0] ^ np.arange(start, start + k, dtype=_U64)[:, None]
        hi = _U64(tag) | (np.arange(nblk, dtype=_U64) << _U64(32))
        t[:, :, 1] = p[:, None, 1] ^ hi[None, :]
        out = self.permute(t)
        out ^= p[:, None, :]
        return out.reshape(k, 2 * nblk)

    def lut_pads(
        self,
        keys_pi: np.ndarray,
        start: int,
        m: int,
        nblk: int,
        entries: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pads of 1-out-of-2^m OT: XOR over j of H(key_{i,j,e_j}, (start + i*m + j, e, block)).

        keys_pi: (k, E, m, 2) uint64 holding pi(key) for the key each entry uses for OT j (the
        first pi of the TCCR hash, computed once per key by the caller).  The entries are
        e = 0..E-1 (sender, E = 2^m) unless ``entries`` (k,) gives the one entry per table
        (receiver, E = 1).  Returns (k, E, 2 * nblk) uint64.
        """
        k, e_count = keys_pi.shape[:2]
        if entries is None:
            e = np.broadcast_to(np.arange(e_count, dtype=_U64)[None, :], (k, e_count))
        else:
            e = entries.astype(_U64).reshape(k, 1)
        lo = _U64(start) + np.arange(k * m, dtype=_U64).reshape(k, 1, m, 1)
        hi = (
            _U64(self.TAG_LUT)
            | (e.reshape(k, e_count, 1, 1) << _U64(8))
            | (np.arange(nblk, dtype=_U64).reshape(1, 1, 1, nblk) << _U64(40))
        )
        t = np.empty((k, e_count, m, nblk, 2), dtype=_U64)
        t[..., 0] = keys_pi[..., 0:1] ^ lo
        t[..., 1] = keys_pi[..., 1:2] ^ hi
        y = self.permute(t)
        y ^= keys_pi[:, :, :, None, :]
        return np.bitwise_xor.reduce(y, axis=2).reshape(k, e_count, 2 * nblk)


def transpose_bits(m: np.ndarray) -> np.ndarray:
    """Transpose a bit matrix: m (R, N) uint8, R % 8 == 0, row r = R bit rows of 8N bits.

    Returns (8N, R/8) uint8 whose row i holds bit i of every input row: output row i, byte b,
    bit k (little bit order) = input row 8b+k, bit i (byte i//8, bit i%8).
    """
    r, n = m.shape
    if r % 8:
        raise ValueError("row count must be a multiple of 8")
    # Gather each 8x8 bit block (8 rows x one byte column) into one uint64: byte rr = row 8rb+rr.
    blocks = np.ascontiguousarray(m.reshape(r // 8, 8, n).transpose(0, 2, 1)).view(_U64)
    x = blocks.reshape(r // 8, n)
    # Transpose each 8x8 bit block in place: bit 8a+b <-> 8b+a (Hacker's Delight, delta swaps).
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        t = x >> _U64(shift)
        t ^= x
        t &= _U64(mask)
        x ^= t
        t <<= _U64(shift)
        x ^= t
    # Now byte k of block (rb, cb) = column bit 8cb+k across rows 8rb..8rb+7.
    return np.ascontiguousarray(x.view(np.uint8).reshape(r // 8, n, 8).transpose(1, 2, 0)).reshape(
        8 * n, r // 8
    )
