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
  - the one-call hash ``H(x) = pi(sigma(x)) ^ sigma(x)`` (below) for the semi-honest engines'
    one-block OT outputs (protocol 39);
* :func:`transpose_bits` -- the IKNP bit-matrix transpose: 64x64 bit blocks transposed with six
  SWAR stages on uint64 words (Eklundh), vectorized over all blocks in cache-sized pieces;
  ~15-20x faster than np.unpackbits / transpose / np.packbits;
* :func:`random_bytes` -- ``os.urandom``, or a seeded numpy generator for reproducible tests only.

The fixed key is public; random-permutation-model security does not need it secret.  Per session
we derive it from the base-OT transcript so no precomputation across sessions is possible.

One-call hash (protocol 39).  ``H(x) = pi'(z) ^ z``, ``z = sigma(x)``, ``sigma(x_0, x_1) = (x_1, x_0 ^ x_1)``
on the two 64-bit words: sigma is linear and an orthomorphism (sigma and ``sigma ^ id``, ``x ->
(x_0 ^ x_1, x_0)``, are both permutations), so H is the circular-correlation-robust (CCR) hash of
Guo, Katz, Wang, Yu (S&P 2020) -- the construction silent OT's Half-Tree GGM nodes already use
(:mod:`protocols.ot.ferret`).  ``pi'`` is fixed-key AES under the engine's own key for this hash
(``derive_key(b"secureml-ot-ccr", digest)``), used by nothing else, so no input of it meets a TCCR,
table-OT or GGM input.  :meth:`FixedKeyAES.ccr_bits` / :meth:`~FixedKeyAES.ccr_word` /
:meth:`~FixedKeyAES.ccr_block` / :meth:`~FixedKeyAES.ccr_pair`: one AES call per row instead of TCCR's two.

Where: the one-block outputs of the *semi-honest* OT engines (:attr:`protocols.ot.iknp._IKNPBase.
uses_tccr` false): random-OT bits (bit 0 of H), one-word COT pads (word 0) and two-word pads.  The
sender's pads of OT i are ``m_b = H(q_i ^ b Delta)``, the receiver's ``H(t_i) = m_{c_i}``.

Why it suffices there.  The sender computes both pads and learns nothing from them.  The receiver
holds every ``t_i`` and ``c_i`` and must learn nothing about the pads ``H(t_i ^ Delta)`` it did not
choose; Delta is hidden from it (each engine's own argument: IKNP/SoftSpoken base OTs, silent OT's
GGM trees whose hash is the same CCR construction under another key).  That is exactly the
correlation-robustness game with the receiver's rows as queries: ``x -> H(x ^ Delta)`` on distinct
known x looks random while Delta is unknown -- implied by CCR (its queries with b = 0) in the
random-permutation model.  Taking bit 0 or word 0 of a pseudorandom value keeps it pseudorandom.
What TCCR's tweak (the OT index i) buys is separation of *equal or chosen-related* inputs across
OTs: a receiver that could make two hashed inputs coincide (``t_i = t_j``, or ``t_i ^ t_j = Delta``)
would see one pad serve twice.  Semi-honest rows are pseudorandom COT strings that no party chooses:
such a coincidence among n hashed rows is finding Delta or a collision, probability <= n^2 / 2^127.
The tweak does not change the multi-instance term either: an adversary's offline AES query helps
only if it hits one of the n hidden points ``sigma(t_i ^ Delta)`` -- as, for TCCR, one of the n
points ``t_i ^ Delta`` whose pi hides the pad -- at most n / 2^127 per query (Delta has 127 random
bits under silent OT's bit-0 convention): for the Laplacian session's ~2^26 hashed rows and 2^64
offline AES calls, 2^-37, the same bound as TCCR's, with the per-session key ruling out precomputation.
A "cheap tweak" ``sigma(x) ^ t`` (one more pass, ~0.4 ns per row) would still cancel for chosen
inputs (``sigma(x) ^ t = sigma(x') ^ t'``), i.e. separate only equal inputs, which semi-honest rows
never are; it is not kept.

Client-malicious sessions keep TCCR (:attr:`~protocols.ot.iknp._IKNPBase.uses_tccr`): every checked
engine, and the other direction of a client-malicious exact-kernel session through ``tccr_hash``
(:func:`protocols.krr.registry._setup_exact_ot`), on both parties.  A single-call argument exists
there too (the checked engines' rows are PRG/GGM/LPN outputs a deviating client cannot choose, and
in the other direction the hash guards only the deviating sender's own messages), but TCCR is kept
by the review standard "if unsure, keep TCCR"; docs/malicious.md.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "CounterPRG",
    "FixedKeyAES",
    "transpose_bits",
    "columns_from_rows",
    "random_bytes",
    "tune_allocator",
    "derive_key",
    "pack_bits",
    "unpack_bits",
]

_U64 = np.uint64
# tccr_bits / tccr_word block: 2^15 rows, 512 KB per work array (in L2 with its input block)
_BITS_ROWS = 1 << 15


_MALLOC_TUNED: list[bool] = []


def tune_allocator() -> bool:
    """Keep MB-sized temporaries on the heap (glibc only; once per process; returns success).

    Each IKNP piece allocates a dozen 1-4 MB numpy temporaries.  By default glibc serves those
    with fresh mmap()s (or trims the heap after each free), so every piece pays page faults on
    all its memory -- measured here as 80% of the hashing and transpose time (TCCR hash 36 vs
    5 ns/OT).  Raising M_MMAP_THRESHOLD to 32 MiB and M_TRIM_THRESHOLD to 256 MiB lets freed
    blocks be reused.  Cost: up to 256 MiB of freed memory may stay mapped.  Set the
    environment variable SECUREML_NO_MALLOPT=1 to skip this.
    """
    if _MALLOC_TUNED:
        return _MALLOC_TUNED[0]
    ok = False
    if os.environ.get("SECUREML_NO_MALLOPT") != "1" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(None)
            m_trim_threshold, m_mmap_threshold = -1, -3
            ok = bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
                libc.mallopt(m_trim_threshold, 256 << 20)
            )
        except (OSError, AttributeError):
            ok = False
    _MALLOC_TUNED.append(ok)
    return ok


def random_bytes(n: int, rng: np.random.Generator | None = None) -> bytes:
    """n random bytes: OS entropy, or (INSECURE, tests only) from a seeded numpy generator."""
    if rng is None:
        return os.urandom(n)
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()


def derive_key(tag: bytes, *parts: bytes, size: int = 16) -> bytes:
    """Domain-separated key derivation: BLAKE2b keyed by nothing, over the whole tag and then every
    part, each length-prefixed (an injective encoding: distinct (tag, parts) never hash the same input).

    Since protocol 41 the tag is hashed whole. Before, it was only BLAKE2b's personalisation, which
    holds 16 bytes, so two tags agreeing in their first 16 bytes derived one key -- the flaw the review
    of protocols 38-39 found ("secureml/authenticated/expand" and ".../bound-lut", docs/malicious.md);
    tests/protocols/ot/test_key_separation.py keeps the literal tags distinct in 16 bytes as well."""
    h = hashlib.blake2b(digest_size=size, person=b"secureml-kdf-v41")
    h.update(len(tag).to_bytes(8, "little"))
    h.update(tag)
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
    TAG_TREE = 3  # a level of tree_pads
    TAG_TREE_BLOCK = 4  # tree_pads' leaf expansion into blocks

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

    def permute_into(self, x: np.ndarray, out: np.ndarray) -> None:
        """pi(x) into the leading ``x.nbytes`` bytes of the C-contiguous array ``out``, which must
        have at least 15 more (the cipher's output-buffer rule): no temporary for the result."""
        x = np.ascontiguousarray(x)
        if not out.flags.c_contiguous or out.nbytes < x.nbytes + 15:
            raise ValueError("permute_into needs a contiguous output with 15 spare bytes")
        self._enc.update_into(memoryview(x.reshape(-1).view(np.uint8)), memoryview(out.reshape(-1).view(np.uint8)))

    def tccr(self, x: np.ndarray, start: int, nblk: int, tag: int) -> np.ndarray:
        """Tweakable CR hash in counter mode: block b of row r is H(x_r, (start + r, tag | b<<32)).

        H(x, t) = pi(pi(x) ^ t) ^ pi(x) (Guo et al. 2020, TCCR), t = two little-endian uint64.
        x: (k, 2) uint64 (or (k, 16) uint8).  Returns (k, 2 * nblk) uint64.
        """
        p = self.permute(np.ascontiguousarray(x).view(np.uint8).reshape(-1, 16).view(_U64))
        k = p.shape[0]
        if nblk == 1:
            # Two long strided loops (one per 64-bit word), no width-2 broadcasting.
            t = np.empty((k, 2), dtype=_U64)
            np.bitwise_xor(p[:, 0], np.arange(start, start + k, dtype=_U64), out=t[:, 0])
            np.bitwise_xor(p[:, 1], _U64(tag), out=t[:, 1])
            out = self.permute(t)
            out ^= p
            return out
        if nblk < 64:
            # A few blocks per row: repeat pi(x) per block, then flat long-loop operations.
            pr = np.repeat(p, nblk, axis=0)
            t = pr.copy()
            t[:, 0] ^= np.repeat(np.arange(start, start + k, dtype=_U64), nblk)
            t[:, 1] ^= np.tile(_U64(tag) | (np.arange(nblk, dtype=_U64) << _U64(32)), k)
            out = self.permute(t)
            out ^= pr
            return out.reshape(k, 2 * nblk)
        # Many blocks per row: broadcast along the (long) block axis, one 64-bit word at a time.
        lo = p[:, 0] ^ np.arange(start, start + k, dtype=_U64)
        hi = p[:, 1] ^ _U64(tag)
        t = np.empty((k, nblk, 2), dtype=_U64)
        t[:, :, 0] = lo[:, None]
        np.bitwise_xor(hi[:, None], np.arange(nblk, dtype=_U64)[None, :] << _U64(32), out=t[:, :, 1])
        out = self.permute(t)
        out[:, :, 0] ^= p[:, 0:1]
        out[:, :, 1] ^= p[:, 1:2]
        return out.reshape(k, 2 * nblk)

    def tccr_bits(self, x: np.ndarray, start: int, tag: int, xor: np.ndarray | None = None) -> np.ndarray:
        """Bit 0 of :meth:`tccr` with one block: ``tccr(x, start, 1, tag)[:, 0] & 1`` as uint8 (k,),
        with no (k, 2) output and no copy of pi(x) beyond one cache-sized block (:meth:`_tccr_low`).
        ``xor`` (2,) uint64: hash the rows ``x ^ xor`` instead (the sender's q ^ Delta) without a
        (k, 2) temporary."""
        low = np.empty(x.shape[0], dtype=np.uint8)
        self._tccr_low(x, start, tag, xor, low)
        low &= np.uint8(1)
        return low

    def tccr_word(self, x: np.ndarray, start: int, tag: int, xor: np.ndarray | None = None) -> np.ndarray:
        """Word 0 of :meth:`tccr` with one block, ``tccr(x, start, 1, tag)[:, 0]`` (k,) uint64 (the
        one-word COT pads), blockwise as :meth:`tccr_bits`; ``xor`` as there."""
        out = np.empty(x.shape[0], dtype=_U64)
        self._tccr_low(x, start, tag, xor, out)
        return out

    def tccr_block(self, x: np.ndarray, start: int, tag: int, xor: np.ndarray | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`tccr` with one block, ``tccr(x ^ xor, start, 1, tag)`` (k, 2) uint64 (whole 16-byte
        pads), blockwise as :meth:`tccr_bits`; ``xor`` as there; ``out``: a (k, 2) uint64 array to
        write (e.g. a view of a caller's (k, 16) uint8 pads)."""
        if out is None:
            out = np.empty((x.shape[0], 2), dtype=_U64)
        self._tccr_low(x, start, tag, xor, out)
        return out

    def _tccr_low(self, x: np.ndarray, start: int, tag: int, xor: np.ndarray | None, out: np.ndarray) -> None:
        """out[r] = low byte (uint8 out), word 0 ((k,) uint64 out) or the whole block ((k, 2) uint64 out)
        of H(x_r ^ xor, (start + r, tag)).

        In blocks of ``_BITS_ROWS`` rows through three work arrays of 512 KB that stay in cache and
        are reused across blocks (before: a new pi output of the input's size per pass, and the
        sender's q ^ Delta as a third array; tccr_bits on 2^17 rows 7.4 -> 5.6 ns per row, on 2^20
        rows 16 -> 10, alternating at load 4-6, docs/double-blind/v33/tccr_bits_bench.py)."""
        xx = np.ascontiguousarray(x).view(np.uint8).reshape(-1, 16).view(_U64)
        k = xx.shape[0]
        rows = max(1, min(k, _BITS_ROWS))
        in_buf = np.empty((rows, 2), dtype=_U64) if xor is not None else None
        p_buf = np.empty(2 * rows + 2, dtype=_U64)  # AES outputs: 16 spare bytes
        o_buf = np.empty(2 * rows + 2, dtype=_U64)
        tw = np.arange(start, start + rows, dtype=_U64)
        step = _U64(rows)
        byte = out.dtype == np.uint8
        full = out.ndim == 2
        if xor is not None:
            reps = 64  # q ^ s as one long loop over (rows / 64, 128) words, no width-2 broadcasting
            s_tile = np.tile(np.asarray(xor, dtype=_U64).reshape(2), reps)
        for a in range(0, k, rows):
            m = min(rows, k - a)
            src = xx[a : a + m]
            if in_buf is not None:
                dst = in_buf[:m]
                main = m - m % reps
                np.bitwise_xor(src[:main].reshape(-1, 2 * reps), s_tile, out=dst[:main].reshape(-1, 2 * reps))
                np.bitwise_xor(src[main:], s_tile[:2], out=dst[main:])
                src = dst
            self.permute_into(src, p_buf)
            p = p_buf[: 2 * m].reshape(m, 2)
            o = out[a : a + m]
            if byte:
                np.copyto(o, p.view(np.uint8)[:, 0])  # bit 0 of word 0 (little endian): byte 0
            else:
                np.copyto(o, p if full else p[:, 0])
            p[:, 0] ^= tw[:m]
            p[:, 1] ^= _U64(tag)
            self.permute_into(p, o_buf)
            if full:
                o ^= o_buf[: 2 * m].reshape(m, 2)
            else:
                o ^= o_buf.view(np.uint8)[: 16 * m : 16] if byte else o_buf[: 2 * m : 2]
            tw += step  # the next block's OT indices

    # ---------------------------------------------- the one-call CCR hash (semi-honest OT outputs)
    def ccr_bits(self, x: np.ndarray, xor: np.ndarray | None = None) -> np.ndarray:
        """Bit 0 of the one-call hash H(x ^ xor) = pi(z) ^ z, z = sigma(x ^ xor), as uint8 (k,):
        the semi-honest engines' random-OT bits (module docstring, "One-call hash"). x (k, 2)
        uint64 rows (or (k, 16) uint8); ``xor`` (2,) uint64 or None."""
        out = np.empty(x.shape[0], dtype=np.uint8)
        self._ccr_low(x, xor, out, None)
        out &= np.uint8(1)
        return out

    def ccr_word(self, x: np.ndarray, xor: np.ndarray | None = None) -> np.ndarray:
        """Word 0 of the one-call hash H(x ^ xor) (k,) uint64: the semi-honest one-word COT pads."""
        out = np.empty(x.shape[0], dtype=_U64)
        self._ccr_low(x, xor, out, None)
        return out

    def ccr_block(self, x: np.ndarray, xor: np.ndarray | None = None) -> np.ndarray:
        """The whole one-call hash H(x ^ xor) (k, 2) uint64 (two-word pads)."""
        out = np.empty((x.shape[0], 2), dtype=_U64)
        self._ccr_low(x, xor, out, None)
        return out

    def ccr_pair(self, x: np.ndarray, delta: np.ndarray, kind: str = "word") -> tuple[np.ndarray, np.ndarray]:
        """(H(x), H(x ^ delta)) of :meth:`ccr_bits` / :meth:`ccr_word` / :meth:`ccr_block` (``kind``
        "bits", "word" or "block"): the sender's two pads per OT from one sigma pass, since sigma
        is linear (sigma(x ^ delta) = sigma(x) ^ sigma(delta): one XOR of a constant)."""
        k = x.shape[0]
        shape, dtype = {"bits": ((k,), np.uint8), "word": ((k,), _U64), "block": ((k, 2), _U64)}[kind]
        h0, h1 = np.empty(shape, dtype=dtype), np.empty(shape, dtype=dtype)
        self._ccr_low(x, delta, h0, h1)
        if kind == "bits":
            h0 &= np.uint8(1)
            h1 &= np.uint8(1)
        return h0, h1

    def _ccr_low(self, x: np.ndarray, xor: np.ndarray | None, out0: np.ndarray, out1: np.ndarray | None) -> None:
        """out0[r] = low byte (uint8 (k,)), word 0 (uint64 (k,)) or all (uint64 (k, 2)) of H(x_r ^ xor)
        with H(y) = pi(sigma(y)) ^ sigma(y), sigma(y_0, y_1) = (y_1, y_0 ^ y_1); with ``out1``:
        out0 = H(x_r), out1 = H(x_r ^ xor).

        In blocks of ``_BITS_ROWS`` rows (as :meth:`_tccr_low`): z = sigma(x) in two strided passes
        (0.8 ns per row, measured: a reversed copy and an XOR took 3.0), pi(z) into a reused buffer,
        one pass for the output; z ^ sigma(xor) is one long contiguous XOR with a tiled constant."""
        xx = np.ascontiguousarray(x).view(np.uint8).reshape(-1, 16).view(_U64)
        k = xx.shape[0]
        rows = max(1, min(k, _BITS_ROWS))
        z_buf = np.empty((rows, 2), dtype=_U64)
        p_buf = np.empty(2 * rows + 2, dtype=_U64)  # AES output: 16 spare bytes
        reps = 64  # sigma(xor) tiled: z ^= it as one loop over (rows / 64, 128) words
        s_tile = None
        if xor is not None:
            d = np.asarray(xor, dtype=_U64).reshape(2)
            s_tile = np.tile(np.array([d[1], d[0] ^ d[1]], dtype=_U64), reps)
        for a in range(0, k, rows):
            m = min(rows, k - a)
            src = xx[a : a + m]
            z = z_buf[:m]
            np.copyto(z[:, 0], src[:, 1])
            np.bitwise_xor(src[:, 0], src[:, 1], out=z[:, 1])
            if s_tile is not None and out1 is None:
                self._xor_tiled(z, s_tile, reps)
            self._ccr_out(z, p_buf, out0[a : a + m])
            if out1 is not None:
                self._xor_tiled(z, s_tile, reps)
                self._ccr_out(z, p_buf, out1[a : a + m])

    @staticmethod
    def _xor_tiled(z: np.ndarray, s_tile: np.ndarray, reps: int) -> None:
        m = z.shape[0]
        main = m - m % reps
        z[:main].reshape(-1, 2 * reps)[...] ^= s_tile
        z[main:] ^= s_tile[:2]

    def _ccr_out(self, z: np.ndarray, p_buf: np.ndarray, o: np.ndarray) -> None:
        """o = (the low byte / word 0 / all of) pi(z) ^ z, z (m, 2) uint64."""
        m = z.shape[0]
        self.permute_into(z, p_buf)
        if o.dtype == np.uint8:  # bit 0 of word 0 (little endian): byte 0
            np.bitwise_xor(p_buf.view(np.uint8)[: 16 * m : 16], z.view(np.uint8)[:, 0], out=o)
        elif o.ndim == 1:
            np.bitwise_xor(p_buf[: 2 * m : 2], z[:, 0], out=o)
        else:
            np.bitwise_xor(p_buf[: 2 * m].reshape(m, 2), z, out=o)

    def lut_pads(
        self,
        p0: np.ndarray,
        p1: np.ndarray | None,
        start: int,
        m: int,
        nblk: int,
        entries: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pads of 1-out-of-2^m OT: XOR over j of H(key_{i,j,e_j}, tweak(i, j, e, block)).

        tweak = (start + i*m, TAG_LUT | e << 8 | j << 24 | block << 40): unique per table i
        (whose m OTs have indices start + i*m + j, each used once), OT j, entry e and block.
        p0, p1: (k, m, 2) uint64 = pi(key_{i,j,0}), pi(key_{i,j,1}) (the first pi of the TCCR
        hash, computed once per key by the caller).  Sender: all entries e = 0..2^m-1, returns
        (k, 2^m, 2 * nblk).  Receiver: ``p1`` is None, ``p0`` holds pi of its one key per OT and
        ``entries`` (k,) its index; returns (k, 1, 2 * nblk).
        """
        k = p0.shape[0]
        if entries is None:
            e_count = 1 << m
            e = np.broadcast_to(np.arange(e_count, dtype=_U64)[None, :], (k, e_count))
        else:
            e_count = 1
            e = entries.astype(_U64).reshape(k, 1)
        if nblk == 1:
            return self._lut_pads_one_block(p0, p1, start, m, e, e_count)
        # The per-entry keys of every OT j (k, e_count, 2), and XOR_j key_j: H(key, t) =
        # pi(key ^ t) ^ key, and the keys do not depend on the block, so their XOR is applied once
        # per entry; j's tweak (j << 24 in the high word) goes into the small key arrays.
        keys = np.zeros((k, e_count, 2), dtype=_U64)
        kts = []
        for j in range(m):
            if p1 is None:
                key = np.ascontiguousarray(p0[:, j])[:, None, :]  # (k, 1, 2)
            else:
                bit = ((np.arange(e_count) >> j) & 1).astype(np.intp)
                key = np.take(np.stack([p0[:, j], p1[:, j]], axis=1), bit, axis=1)  # (k, e_count, 2)
            keys ^= key
            kt = np.array(key, dtype=_U64)
            kt[..., 1] ^= _U64(j << 24)
            kts.append(kt)
        row_tw = _U64(start) + _U64(m) * np.arange(k, dtype=_U64)  # low tweak word of table i
        hi_tw = ((np.arange(nblk, dtype=_U64) << _U64(40))[:, None, None]
                 | (_U64(self.TAG_LUT) | (e << _U64(8)))[None, :, :])  # (nblk, k, e_count)
        out = np.empty((k, e_count, nblk), dtype="V16")
        # Tables in chunks of ~2^15 blocks (512 kB per array, cache-resident across the m rounds),
        # block-major inside a chunk (nblk, kc, e_count, 2): ECB permutes each 16-byte block on its
        # own, so the order is free, and block-major puts the keys' broadcast on the outer axis
        # (an (..., nblk, 2) layout would make numpy loop over runs of 2 words).
        kc = max(1, (1 << 15) // (nblk * e_count))
        t = np.empty((nblk, min(kc, k), e_count, 2), dtype=_U64)
        tw = np.empty_like(t)
        acc = np.empty_like(t)
        raw = np.empty(t.nbytes + 16, dtype=np.uint8)  # AES output, reused
        for k0 in range(0, k, kc):
            k1 = min(k, k0 + kc)
            c = k1 - k0
            tw_c, t_c, acc_c = tw[:, :c], t[:, :c], acc[:, :c]
            tw_c[..., 0] = row_tw[None, k0:k1, None]
            tw_c[..., 1] = hi_tw[:, k0:k1]
            h = raw[: t_c.nbytes].view(_U64).reshape(t_c.shape)
            for j in range(m):  # m <= 16 rounds, each vectorized over tables x entries x blocks
                np.bitwise_xor(kts[j][None, k0:k1], tw_c, out=t_c)
                self._enc.update_into(memoryview(t_c.reshape(-1).view(np.uint8)), memoryview(raw))
                if j == 0:
                    np.copyto(acc_c, h)
                else:
                    acc_c ^= h
            acc_c ^= keys[None, k0:k1]
            # back to (table, entry, block), moved as 16-byte items
            out[k0:k1] = acc_c.view("V16")[..., 0].transpose(1, 2, 0)
        return out.view(_U64).reshape(k, e_count, 2 * nblk)

    def tree_pads(self, p0: np.ndarray, p1: np.ndarray | None, lows: np.ndarray, m: int, nblk: int,
                  entries: np.ndarray | None = None) -> np.ndarray:
        """Pads of 1-out-of-2^m OT from m 1-out-of-2 OTs as the leaves of a binary tree, ~2 + nblk
        hashes per entry instead of :meth:`lut_pads`' m nblk (its Naor-Pinkas XOR of one hash per
        OT and entry: 15 per entry for step 5's 2^15-entry tables, most of that step's CPU).

        With H(x, t) = pi(x ^ t) ^ x (TCCR) and K_j^b = pi(key_{i,j,b}) (``p0``/``p1``, (k, m, 2)
        uint64: the first pi computed once per key by the caller), the node of table i for the low
        j + 1 bits e' of an entry is s_0(e') = H(K_0^{e'_0}, t(i, 0, e')) and
        s_j(e') = H(s_(j-1)(e' mod 2^j) ^ K_j^{e'_j}, t(i, j, e')), tweak t = (lows_i + j,
        TAG_TREE | e' << 8): unique per table (``lows``, (k,) uint64: the caller's distinct
        base words), level and prefix. The pad of entry e is s_(m-1)(e) for ``nblk`` = 1, else its
        blocks H(s_(m-1)(e), (lows_i, TAG_TREE_BLOCK | e << 8 | block << 40)).
        Why a chooser holding K_j^{r_j} (its index r) learns nothing of another entry's pad: at the
        lowest bit j where e differs from r, s_j(e) hashes K_j^{1 - r_j} -- the OT's unchosen key,
        pseudorandom to it -- and every node above hashes a value it cannot compute XOR a key it
        may know, under a tweak no other node uses: the GGM argument with H as the PRG, under H's
        tweakable correlation robustness (the inputs of sibling nodes differ by a known XOR).

        Sender: ``p1`` given, returns (k, 2^m, 2 nblk) for every entry. Chooser: ``p1`` None,
        ``p0`` its one key per OT and ``entries`` (k,) its index; returns (k, 1, 2 nblk)."""
        k = p0.shape[0]
        lows = np.asarray(lows, dtype=_U64).reshape(k)
        if p1 is not None:  # every entry: built entry-major, in groups (:meth:`_tree_pads_sender`)
            return self._tree_pads_sender(p0, p1, lows, m, nblk)
        # the chooser: the one path of its index, node by node
        s = None
        for j in range(m):
            key = p0[:, j][:, None, :]  # (k, 1, 2)
            x = key if s is None else s ^ key
            e = (entries.astype(_U64) & _U64((2 << j) - 1))[:, None]
            tw = np.empty(x.shape, dtype=_U64)
            tw[..., 0] = (lows + _U64(j))[:, None]
            tw[..., 1] = _U64(self.TAG_TREE) | (e << _U64(8))
            s = self.permute(x ^ tw)
            s ^= x
        if nblk == 1:
            return s
        e_count = s.shape[1]
        e = entries.astype(_U64)[:, None]
        x = np.broadcast_to(s[:, :, None, :], (k, e_count, nblk, 2))
        tw = np.empty((k, e_count, nblk, 2), dtype=_U64)
        tw[..., 0] = lows[:, None, None]
        tw[..., 1] = (_U64(self.TAG_TREE_BLOCK) | (e << _U64(8)))[:, :, None] \
            | (np.arange(nblk, dtype=_U64) << _U64(40))[None, None, :]
        out = self.permute(x ^ tw)
        out ^= x
        return out.reshape(k, e_count, 2 * nblk)

    def _tree_pads_sender(self, p0: np.ndarray, p1: np.ndarray, lows: np.ndarray, m: int, nblk: int) -> np.ndarray:
        """:meth:`tree_pads` for the sender (every entry), the same pads: built entry-major,
        (entries, k, 2) per level and (nblk, entries, k, 2) for the leaves' blocks (ECB hashes each
        16-byte block on its own, so the order is free), so that every numpy pass runs along the
        k tables (long runs) instead of over the last axis of 2 words, then moved once to
        (k, entries, 2 nblk) as 16-byte items. (m = 5, nblk = 3, 16,384 tables: ~4x faster.)
        The tables go in groups whose last level spans about ``_TREE_GROUP_BYTES`` (a core's L2):
        for 2^15-entry tables (step 5 of the client-malicious Laplacian protocol) 8 tables at a
        time instead of 32: 0.44-0.63 -> 0.35-0.39 s of CPU for its 351 tables (alternating pairs,
        docs/malicious/stop10-lapcpu/micro_tree_pads.py), the same pads; many small tables stay one
        group (long runs)."""
        k = p0.shape[0]
        e_count = 1 << m
        group = max(1, _TREE_GROUP_BYTES // (e_count * 16))
        if k <= group:
            return _entry_major_to_rows(self._tree_pads_entry_major(p0, p1, lows, m, nblk), k, e_count)
        out = np.empty((k, e_count, nblk), dtype="V16")
        for g0 in range(0, k, group):
            g1 = min(k, g0 + group)
            x = self._tree_pads_entry_major(p0[g0:g1], p1[g0:g1], lows[g0:g1], m, nblk)  # (nblk, e, g, 2)
            out[g0:g1] = np.ascontiguousarray(x).view("V16")[..., 0].transpose(2, 1, 0)
        return out.view(_U64).reshape(k, e_count, 2 * nblk)

    def _tree_pads_entry_major(self, p0: np.ndarray, p1: np.ndarray, lows: np.ndarray, m: int,
                               nblk: int) -> np.ndarray:
        """:meth:`_tree_pads_sender`'s pads of k tables, entry-major: (nblk, entries, k, 2)."""
        k = p0.shape[0]
        s = None
        for j in range(m):
            k0, k1 = np.ascontiguousarray(p0[:, j]), np.ascontiguousarray(p1[:, j])  # (k, 2)
            if s is None:
                x = np.stack([k0, k1])  # (2, k, 2): entry b
            else:
                # entry e' = e'' + b 2^j: the b = 0 half first, then the b = 1 half
                x = np.empty((2 * s.shape[0],) + s.shape[1:], dtype=_U64)
                half = s.shape[0]
                np.bitwise_xor(s, k0[None], out=x[:half])
                np.bitwise_xor(s, k1[None], out=x[half:])
            t = x.copy()
            t[..., 0] ^= (lows + _U64(j))[None, :]
            t[..., 1] ^= (_U64(self.TAG_TREE) | (np.arange(x.shape[0], dtype=_U64) << _U64(8)))[:, None]
            s = self.permute(t)
            s ^= x
        e_count = s.shape[0]
        if nblk == 1:
            return s[None]
        base = s.copy()
        base[..., 0] ^= lows[None, :]
        base[..., 1] ^= (_U64(self.TAG_TREE_BLOCK) | (np.arange(e_count, dtype=_U64) << _U64(8)))[:, None]
        t = np.empty((nblk,) + s.shape, dtype=_U64)
        for b in range(nblk):
            t[b] = base
            if b:
                t[b, ..., 1] ^= _U64(b) << _U64(40)
        out = self.permute(t)
        out ^= s[None]
        return out

    def _lut_pads_one_block(self, p0: np.ndarray, p1: np.ndarray | None, start: int, m: int, e: np.ndarray,
                            e_count: int) -> np.ndarray:
        """:meth:`lut_pads` with one block per entry (IKNP's table OTs): the per-entry keys are as
        large as the pads, so each OT j is hashed in place, row-major, without the block-major
        detour (which only pays when the keys are reused across blocks)."""
        k = p0.shape[0]
        rows = k * e_count
        tw = np.empty((k, e_count, 2), dtype=_U64)
        tw[..., 0] = (_U64(start) + _U64(m) * np.arange(k, dtype=_U64))[:, None]
        tw[..., 1] = _U64(self.TAG_LUT) | (e << _U64(8))
        tw = tw.reshape(rows, 2)
        acc = np.zeros((rows, 2), dtype=_U64)
        for j in range(m):
            if p1 is None:
                key = p0[:, j]  # (k, 2)
            else:
                bit = ((np.arange(e_count) >> j) & 1).astype(np.intp)
                key = np.take(np.stack([p0[:, j], p1[:, j]], axis=1), bit, axis=1).reshape(rows, 2)
            t = key ^ tw
            t[:, 1] ^= _U64(j << 24)
            h = self.permute(t)
            h ^= key
            acc ^= h
        return acc.reshape(k, e_count, 2)


#: bytes of one group's last tree level in :meth:`FixedKeyAES._tree_pads_sender` (16 per entry and table)
_TREE_GROUP_BYTES = 1 << 22


def _entry_major_to_rows(x: np.ndarray, k: int, e_count: int) -> np.ndarray:
    """(nblk, e_count, k, 2) uint64 -> (k, e_count, 2 nblk): 16-byte blocks moved as items."""
    nblk = x.shape[0]
    v = np.ascontiguousarray(x).view("V16")[..., 0]  # (nblk, e_count, k)
    return np.ascontiguousarray(v.transpose(2, 1, 0)).view(_U64).reshape(k, e_count, 2 * nblk)


_STAGES = tuple(
    (s, _U64(s), _U64(m))
    for s, m in (
        (32, 0x00000000FFFFFFFF),
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    )
)
# Words (of 64 columns) per transpose block: a 128 x 4096-word block is 4 MB.
_T_BLOCK = 4096


def _transpose64(x: np.ndarray, tmp: np.ndarray) -> None:
    """In place: transpose the 64x64 bit matrix x[g, :, q] (rows = axis 1, bit c = column c).

    Eklundh's recursive block swap as six SWAR stages, each vectorized over all (g, q).
    """
    g, _, q = x.shape
    for s, su, mask in _STAGES:
        v = x.reshape(g, 32 // s, 2, s, q)
        a = v[:, :, 0]
        b = v[:, :, 1]
        t = tmp[: a.size].reshape(a.shape)
        # Swap a's high s-bit fields with b's low ones: t = ((a >> s) ^ b) & mask.
        np.right_shift(a, su, out=t)
        t ^= b
        t &= mask
        b ^= t
        t <<= su
        a ^= t


def transpose_bits(m: np.ndarray) -> np.ndarray:
    """Transpose a bit matrix m (R, C/8) uint8 (R % 64 == 0, C % 64 == 0): R rows of C bits.

    Returns (C, R/8) uint8: one row of R bits per input column.  Bits are little-endian
    (column c of a row is byte c//8, bit c%8; output bit j is input row j).  For speed the output
    rows come in a fixed permuted column order; :func:`columns_from_rows` maps a vector indexed
    like the output rows to natural column order (both IKNP parties use the same order, so only
    the receiver's choice bits need mapping).
    """
    r, nbytes = m.shape
    if r % 64 or nbytes % 8:
        raise ValueError("transpose_bits needs R % 64 == 0 and a multiple of 64 columns")
    h, n8 = r // 64, nbytes // 8
    a = np.ascontiguousarray(m).view(_U64).reshape(h, 64, n8)
    out = np.empty((64 * n8, h), dtype=_U64)
    tmp = np.empty(h * 32 * min(_T_BLOCK, max(n8, 1)), dtype=_U64)
    for w0 in range(0, n8, _T_BLOCK):
        w1 = min(n8, w0 + _T_BLOCK)
        x = a[:, :, w0:w1].copy()  # contiguous block: stays in cache for the six stages
        _transpose64(x, tmp)
        # x[g, b, w] is output row (column 64w + b), word g; store in (b, w) order (cheap).
        for g in range(h):
            out[64 * w0 : 64 * w1, g] = x[g].reshape(-1)
    return out.view(np.uint8)


def columns_from_rows(v: np.ndarray) -> np.ndarray:
    """Reorder a per-output-row vector of :func:`transpose_bits` into natural column order."""
    n8 = v.shape[0] // 64
    out = np.empty_like(v)
    for w0 in range(0, n8, _T_BLOCK):
        w1 = min(n8, w0 + _T_BLOCK)
        out[64 * w0 : 64 * w1] = v[64 * w0 : 64 * w1].reshape(64, w1 - w0).T.reshape(-1)
    return out
