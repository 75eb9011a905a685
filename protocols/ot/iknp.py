"""IKNP oblivious-transfer extension (kappa = 128) and what is built on it: random OT, correlated OT
(scalar and vector correlations over Z_2^bits), chosen-message OT and 1-out-of-2^m table lookup.

Threat model: semi-honest (passive) adversaries; no party deviates from the protocol.  The
*sender* (:class:`OTExtensionSender`, who holds message pairs / correlations) learns nothing about
the receiver's choice bits; the *receiver* (:class:`OTExtensionReceiver`) learns exactly the chosen
message / its COT output and nothing about the other message or the correlation delta.  Public:
the number of OTs, the widths ``w`` and ``bits``, the table size ``2**m``.

Constructions
-------------
* IKNP: Ishai, Kilian, Nissim, Petrank, "Extending oblivious transfers efficiently", CRYPTO 2003.
  128 random base OTs in the reverse direction (:mod:`protocols.ot.base_ot`, Chou-Orlandi 2015) seed
  128 AES-CTR streams per party.  For n OTs with choice bits r (receiver):

  1. Receiver: t_j = G(k_j^0), u_j = t_j ^ G(k_j^1) ^ r for the 128 columns j; sends u (128 x n bits).
  2. Sender (holding s and k_j^{s_j}): q_j = G(k_j^{s_j}) ^ s_j * u_j.  Transposing gives rows
     with q_i = t_i ^ r_i * s (all 128-bit strings).
  3. Outputs are hashed: m0_i = H(q_i, i), m1_i = H(q_i ^ s, i); receiver gets H(t_i, i) = m_{r_i}.

  H is the tweakable correlation-robust hash from fixed-key AES of Guo, Katz, Wang, Yu (S&P 2020),
  see :mod:`protocols.ot.crypto`; the tweak i is a per-session OT counter shared by both parties, so no
  (input, tweak) pair is ever hashed twice.  Vector outputs use more tweaked blocks per OT
  (H(q_i, (i, block b))) -- fixed-key AES in counter mode over the 128-bit pad.  Protocol 39: the
  one-block outputs of unchecked engines (random-OT bits, one- and two-word pads) use the one-call
  CCR hash ``pi'(sigma(x)) ^ sigma(x)`` instead (:mod:`protocols.ot.crypto`, "One-call hash": why
  semi-honest rows need no tweak); checked engines and ``tccr_hash`` keep TCCR (:attr:`_IKNPBase.uses_tccr`).
* Precomputation / derandomization (Beaver 1995): :meth:`precompute` runs steps 1-2 for random
  choices r now; later the receiver sends d = c ^ r (1 bit per OT) and the sender uses
  q_i ^ d_i * s.  So offline (128 bits/OT) and online (1 bit + payload per OT) costs separate.
* COT (Asharov, Lindell, Schneider, Zohner, CCS 2013): sender output x0 = m0 (mod 2^bits), sends
  tau = m0 + delta - m1 (only ceil(bits/8) bytes per word); receiver outputs m_c + c * tau.
* 1-out-of-2^m OT from m random OTs (Naor-Pinkas 1999 style): entry e of table i is padded with
  XOR_j F_j^{e_j}(i, e), F_j^b(.) = H(q_{i,j} ^ b*s, (ot index, e, block)); the receiver knows
  the one key per j that its index selects, hence exactly one pad.

Everything runs in pieces of at most ``chunk`` OTs (fewer for wide vectors) so memory stays bounded;
each piece is one request/response exchange.  Randomness comes from ``os.urandom`` unless ``seed``
is given -- seeded instances are INSECURE and meant for reproducible tests only.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from protocols.ot import consistency
from protocols.ot.base_ot import _base_ot_recv, _base_ot_send
from protocols.ot.crypto import (
    CounterPRG,
    FixedKeyAES,
    columns_from_rows,
    derive_key,
    pack_bits,
    random_bytes,
    transpose_bits,
    tune_allocator,
    unpack_bits,
)
from protocols.net.transport import Channel

__all__ = ["OTExtensionSender", "OTExtensionReceiver", "KAPPA", "cot_theory_bits"]

KAPPA = 128
_U64 = np.uint64
_ONES = _U64(0xFFFFFFFFFFFFFFFF)
# Bound on the bytes of one (pieces x width) working array; a few such arrays live at once.
_PIECE_BYTES = 4 << 20
_MAX_LUT_M = 16
_MAX_PIECE = 1 << 17
# Receiver's messages sent ahead of the replies it waits for (pipelined channels only).
_LOOKAHEAD_BYTES = 32 << 20


def cot_theory_bits(bits: int = 64, w: int = 1, precomputed: bool = False) -> int:
    """Theoretical communication per COT in bits: 128 (IKNP column) + w*8*ceil(bits/8) (+1)."""
    return KAPPA + w * 8 * ((bits + 7) // 8) + (1 if precomputed else 0)


def _check_bits(bits: int) -> tuple[int, np.uint64]:
    if not 1 <= int(bits) <= 64:
        raise ValueError("bits must be in [1, 64]")
    nb = (int(bits) + 7) // 8
    mask = _ONES if bits == 64 else _U64((1 << int(bits)) - 1)
    return nb, mask


def _choice_bits(choices: np.ndarray) -> np.ndarray:
    c = np.asarray(choices)
    if c.ndim != 1 or (c.size and c.dtype.kind not in "biu"):
        raise ValueError("choices must be a 1-D integer or bool array of bits")
    if c.dtype != np.bool_ and c.size and (c.min() < 0 or c.max() > 1):
        raise ValueError("choice bits must be 0 or 1")
    return c.astype(np.uint8, copy=False)


def _low_bytes(a: np.ndarray, nb: int) -> np.ndarray:
    """The low nb bytes of every uint64 (little endian): (..., ) -> (..., nb) uint8."""
    if nb == 8:
        return a
    return np.ascontiguousarray(a.view(np.uint8).reshape(*a.shape, 8)[..., :nb])


def _from_low_bytes(b: np.ndarray, shape: tuple[int, ...], nb: int) -> np.ndarray:
    if nb == 8:
        return b
    out = np.zeros((*shape, 8), dtype=np.uint8)
    out[..., :nb] = b
    return out.view(_U64).reshape(shape)


def _piece_size(chunk: int, width_words: int) -> int:
    """OTs per piece so that a (piece, width) uint64 array stays within _PIECE_BYTES."""
    p = min(chunk, max(8, _PIECE_BYTES // (8 * max(1, width_words))))
    return max(8, p - p % 8)


class _IKNPBase:
    """State shared by both IKNP roles: channel, RNG, fixed-key AES, OT counter, the pool."""

    def __init__(self, ch: Channel, seed: int | None = None, chunk: int = 1 << 20) -> None:
        if chunk < 128:
            raise ValueError("chunk must be at least 128 OTs")
        tune_allocator()
        self.ch = ch
        self.chunk = int(chunk) - int(chunk) % 128
        # OTs per exchange: small enough that the two parties' work overlaps (pipelining) and
        # that the working set stays near the caches; `chunk` caps it for tight memory.
        self.piece = min(self.chunk, _MAX_PIECE)
        self._rng = np.random.default_rng(seed) if seed is not None else None
        self._ready = False
        self._aes: FixedKeyAES | None = None
        self._counter = 0  # OTs consumed so far: the hash tweak (identical on both sides)
        self.ots_extended = 0  # IKNP OTs generated (including padding)
        self._pool_rows = np.empty((0, 16), dtype=np.uint8)
        self._pool_off = 0
        # client-malicious mode: every extension piece carries a consistency proof from the
        # receiver (:mod:`protocols.ot.consistency`); both parties must set it alike
        self.checked = False
        self._checks = 0
        self._fs_digest = b""
        #: keep the two-call TCCR hash for the one-block outputs (random-OT bits, one- and two-word
        #: pads) although this engine is not checked: a client-malicious session sets it on its
        #: other direction too (:func:`protocols.krr.registry._setup_exact_ot`); both parties of
        #: an engine pair set it alike. See :attr:`uses_tccr`.
        self.tccr_hash = False

    @property
    def uses_tccr(self) -> bool:
        """Which hash turns the one-block outputs into pads: TCCR ``H(x, i) = pi(pi(x) ^ i) ^ pi(x)``
        (checked engines and :attr:`tccr_hash`: whenever a client-malicious session runs) or the
        one-call CCR hash ``pi(sigma(x)) ^ sigma(x)`` under its own key (semi-honest; the argument
        in :mod:`protocols.ot.crypto`, "One-call hash"). Multi-block pads and table OTs stay TCCR."""
        return bool(self.checked or self.tccr_hash)

    @property
    def session_digest(self) -> bytes:
        """The engine's session digest (both parties of an engine pair hold the same bytes, fresh per
        set-up): a key-derivation input for hashes of this session's raw COTs
        (:meth:`OTExtensionReceiver.raw_cots`), as the engine derives its own fixed AES key from it."""
        return self._fs_digest

    @property
    def pool_size(self) -> int:
        """Precomputed OTs not consumed yet."""
        return self._pool_rows.shape[0] - self._pool_off

    def _finish_setup(self, digest: bytes) -> None:
        self._aes = FixedKeyAES(derive_key(b"secureml-fkaes", digest))
        # the one-call hash's own permutation: no input of it meets a TCCR / table-OT input
        self._ccr_aes = FixedKeyAES(derive_key(b"secureml-ot-ccr", digest))
        self._fs_digest = bytes(digest)
        self._ready = True

    # ------------------------------------------- consistency check (malicious receiver)
    def _check_key(self, message: np.ndarray) -> bytes:
        key = consistency.fs_key(self._fs_digest, self._checks, message)
        self._checks += 1
        return key

    def _checked_size(self, k: int) -> int:
        """OTs actually extended for a piece of k: the check's random padding OTs on top."""
        return k + consistency.PAD_OTS if self.checked else k

    def _plan(self, n: int, piece: int, align: int = 1) -> Iterator[tuple[int, bool]]:
        """Split n OTs into pieces: (size, from_pool).  Deterministic on both sides.

        ``align``: every piece is a multiple of it (a table OT's m OTs per table must not straddle
        a pool piece and a fresh one); n and piece must be multiples of it. A pool remainder
        smaller than ``align`` is left for later calls.
        """
        pos = 0
        while pos < n:
            avail = self.pool_size
            avail -= avail % align
            if avail:
                k = min(piece, n - pos, avail)
                yield k, True
            else:
                k = min(piece, n - pos)
                yield k, False
            pos += k

    def _take_pool(self, k: int) -> tuple[np.ndarray, slice]:
        sl = slice(self._pool_off, self._pool_off + k)
        self._pool_off += k
        rows = self._pool_rows[sl]
        if self._pool_off == self._pool_rows.shape[0]:
            self._pool_rows = np.empty((0, 16), dtype=np.uint8)
            self._pool_off = 0
        return rows, sl

    def _next_index(self, k: int) -> int:
        start = self._counter
        self._counter += k
        return start

    def _hash_bits(self, rows: np.ndarray, start: int) -> np.ndarray:
        """Bit 0 of the one-block hash of every row (k,) uint8: the receiver's random-OT bits."""
        if self.uses_tccr:
            assert self._aes is not None
            return self._aes.tccr_bits(rows, start, FixedKeyAES.TAG_OT)
        return self._ccr_aes.ccr_bits(rows)

    def _hash_word(self, rows: np.ndarray, start: int) -> np.ndarray:
        """Word 0 of the one-block hash of every row (k,) uint64: the receiver's one-word pads."""
        if self.uses_tccr:
            assert self._aes is not None
            return self._aes.tccr_word(rows, start, FixedKeyAES.TAG_OT)
        return self._ccr_aes.ccr_word(rows)


class OTExtensionSender(_IKNPBase):
    """IKNP sender: holds message pairs / correlations (base-OT *receiver* with secret s).

    ``OTExtensionSender(ch, seed=None, chunk=2**20)``: ``ch`` is a connected channel whose peer
    runs :class:`OTExtensionReceiver`; ``seed`` makes the instance reproducible and INSECURE
    (tests only); ``chunk`` caps the OTs per piece (memory).  Set-up runs on first use.
    """

    def setup(self) -> None:
        """Run the 128 base OTs (as their receiver, with random s).  Idempotent."""
        if self._ready:
            return
        s_bytes = random_bytes(KAPPA // 8, self._rng)
        s_bits = unpack_bits(np.frombuffer(s_bytes, dtype=np.uint8), KAPPA)
        keys, digest = _base_ot_recv(self.ch, s_bits, self._rng)
        self._s_bits = s_bits.astype(bool)
        self._s64 = np.frombuffer(s_bytes, dtype=_U64).copy()  # s as (2,) uint64, row layout
        self._prgs = [CounterPRG(keys[j].tobytes()) for j in range(KAPPA)]
        self._finish_setup(digest)

    def _xor_s(self, q: np.ndarray) -> np.ndarray:
        """q ^ s for every row of q (k, 2) uint64, as one long loop (no width-2 broadcasting)."""
        k = q.shape[0]
        reps = min(k, 64)
        main = k - k % reps
        out = np.empty_like(q)
        s_tile = np.tile(self._s64, reps)
        np.bitwise_xor(q[:main].reshape(-1, 2 * reps), s_tile, out=out[:main].reshape(-1, 2 * reps))
        out[main:] = q[main:] ^ self._s64
        return out

    def _hash_pair(self, q: np.ndarray, start: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(H(q), H(q ^ s)) for the one-block hash of :attr:`uses_tccr`: ``kind`` "bits" (uint8
        bit 0), "word" (uint64 word 0) or "block" ((k, 2) uint64)."""
        if not self.uses_tccr:
            return self._ccr_aes.ccr_pair(q, self._s64, kind)
        assert self._aes is not None
        if kind == "bits":
            return (self._aes.tccr_bits(q, start, FixedKeyAES.TAG_OT),
                    self._aes.tccr_bits(q, start, FixedKeyAES.TAG_OT, xor=self._s64))
        if kind == "word":  # word 0 of the one-block hash, blockwise (same values as tccr's)
            return (self._aes.tccr_word(q, start, FixedKeyAES.TAG_OT),
                    self._aes.tccr_word(q, start, FixedKeyAES.TAG_OT, xor=self._s64))
        return (self._aes.tccr(q, start, 1, FixedKeyAES.TAG_OT),
                self._aes.tccr(self._xor_s(q), start, 1, FixedKeyAES.TAG_OT))

    # ------------------------------------------------------------- IKNP core
    def _extend(self, k: int) -> np.ndarray:
        """Steps 2 of IKNP for k OTs: receive u, return q rows (k, 2) uint64.

        Checked mode: the piece has PAD_OTS more OTs and the receiver's proof follows u; the
        rows are used only once the proof verifies.
        """
        n = self._checked_size(k)
        k64 = -(-n // 64) * 64
        nbytes = k64 // 8
        u = self.ch.recv_array(np.uint8, (KAPPA, nbytes))
        q = np.empty((KAPPA, nbytes), dtype=np.uint8)
        for j in range(KAPPA):
            self._prgs[j].fill(q[j])
            if self._s_bits[j]:
                q[j] ^= u[j]
        self.ots_extended += k64
        rows = transpose_bits(q)[:n].view(_U64)
        if self.checked:
            self._verify_piece(u, rows)
        return rows[:k]

    def _verify_piece(self, message: np.ndarray, rows: np.ndarray) -> None:
        key = self._check_key(message)
        proof = self.ch.recv_array(np.uint8, (consistency.PROOF_BYTES,))
        consistency.sender_verify(key, rows, self._s64, proof)

    def _rows(self, n: int, piece: int, align: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (tweak start, q rows (k, 2) uint64) with q_i = t_i ^ c_i * s for the receiver's c."""
        self.setup()
        for k, from_pool in self._plan(n, piece, align):
            if from_pool:
                d = self.ch.recv_array(np.uint8, ((k + 7) // 8,))
                rows, _ = self._take_pool(k)
                # q ^= d_i * s, as q ^ (s where d_i = 1).
                q = rows.view(_U64)
                q = np.where(unpack_bits(d, k).astype(bool)[:, None], self._xor_s(q), q)
            else:
                q = self._extend(k)
            yield self._next_index(k), q

    def _pads(self, q: np.ndarray, start: int, words: int) -> tuple[np.ndarray, np.ndarray]:
        """(m0, m1) pads of `words` uint64 each: H(q, (i, b)) and H(q ^ s, (i, b))."""
        assert self._aes is not None
        if words == 1:
            h0, h1 = self._hash_pair(q, start, "word")
            return h0[:, None], h1[:, None]
        if words == 2:
            return self._hash_pair(q, start, "block")
        nblk = (words + 1) // 2
        h0 = self._aes.tccr(q, start, nblk, FixedKeyAES.TAG_OT)
        h1 = self._aes.tccr(self._xor_s(q), start, nblk, FixedKeyAES.TAG_OT)
        if h0.shape[1] != words:
            h0, h1 = h0[:, :words], h1[:, :words]
        return h0, h1

    # --------------------------------------------------------------- public
    def precompute(self, n: int) -> None:
        """Offline phase: extend n random OTs now (receiver picks random choices); stored."""
        self.setup()
        if n <= 0:
            return
        parts = [self._pool_rows[self._pool_off :]]
        done = 0
        while done < n:
            k = min(self.piece, n - done)
            parts.append(self._extend(k).view(np.uint8))
            done += k
        self._pool_rows = np.concatenate(parts)
        self._pool_off = 0
        self.ch.flush()

    def random_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n random OTs: returns (m0, m1), each (n, 16) uint8; the receiver gets m_{c_i}."""
        m0 = np.empty((n, 2), dtype=_U64)
        m1 = np.empty((n, 2), dtype=_U64)
        pos = 0
        for start, q in self._rows(n, self.piece):
            k = q.shape[0]
            m0[pos : pos + k], m1[pos : pos + k] = self._pads(q, start, 2)
            pos += k
        self.ch.flush()
        return m0.view(np.uint8), m1.view(np.uint8)

    def random_bit_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n random OTs of one bit: (m0, m1) uint8 (n,) in {0, 1}; the receiver gets m_{c_i}.

        The low bit of :meth:`random_ot`'s pads (the same hashes, the same messages on the
        wire), without materialising two 16-byte pads per OT.
        """
        m0 = np.empty(n, dtype=np.uint8)
        m1 = np.empty(n, dtype=np.uint8)
        pos = 0
        for start, q in self._rows(n, self.piece):
            k = q.shape[0]
            m0[pos : pos + k], m1[pos : pos + k] = self._hash_pair(q, start, "bits")
            pos += k
        self.ch.flush()
        return m0, m1

    def cot_send(self, delta: np.ndarray, bits: int = 64) -> np.ndarray:
        """Correlated OT: returns x0 (shape of delta); receiver with bit c gets x0 + c*delta.

        delta: uint64 (n,) or (n, w).  Arithmetic is mod 2^bits (outputs are reduced to
        [0, 2^bits)); only ceil(bits/8) bytes per word are sent.
        """
        delta = np.asarray(delta)
        if delta.dtype != _U64 or delta.ndim not in (1, 2):
            raise ValueError("delta must be a uint64 array of shape (n,) or (n, w)")
        nb, mask = _check_bits(bits)
        d2 = delta.reshape(delta.shape[0], -1)
        n, w = d2.shape
        x0 = np.empty((n, w), dtype=_U64)
        pos = 0
        for start, q in self._rows(n, _piece_size(self.piece, 2 * w)):
            k = q.shape[0]
            h0, h1 = self._pads(q, start, w)
            # Step: tau = m0 + delta - m1, so that m1 + tau = m0 + delta.
            tau = h0 + d2[pos : pos + k]
            tau -= h1
            if mask != _ONES:
                h0 &= mask
            x0[pos : pos + k] = h0
            self.ch.send_array(_low_bytes(tau, nb), owned=True)
            pos += k
        self.ch.flush()
        return x0.reshape(delta.shape)

    def raw_cots(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """n correlated OTs whose choice bits the receiver chooses (:meth:`OTExtensionReceiver.raw_cots`),
        *unhashed*: (q (n, 2) uint64, Delta (2,) uint64, first OT index) with ``q_i = t_i ^ c_i Delta``.

        The same messages as :meth:`random_ot` (this engine's extension pieces, or the derandomisation
        bits of pooled / silent OTs), no payload: the caller turns the rows into what it needs --
        IT-MACs (slices of q: keys, of t: MACs) and, hashed under a key and domain of its own with
        the returned OT indices ``index .. index + n - 1`` (unique in this engine) as tweaks, random-OT
        pads (:mod:`protocols.mpc.gf2_auth`). Raw rows must never be used as pads themselves: q and
        q ^ Delta differ by the global Delta."""
        q = np.empty((n, 2), dtype=_U64)
        first = None
        pos = 0
        for start, rows in self._rows(n, self.piece):
            k = rows.shape[0]
            first = start if first is None else first
            assert start == first + pos  # the pieces' OT indices are consecutive
            q[pos : pos + k] = rows
            pos += k
        self.ch.flush()
        return q, self._s64.copy(), (self._counter if first is None else first)

    def reserve_cots(self, n: int) -> object:
        """Set aside n COTs whose choice bits the receiver will not choose
        (:meth:`OTExtensionReceiver.reserve_cots`): a handle for :meth:`cot_send_reserved`.  Here
        (IKNP-style engines) the receiver picks them at random and nothing is set aside."""
        return int(n)

    def cot_send_reserved(self, handle: object, delta: np.ndarray, bits: int = 64) -> np.ndarray:
        """:meth:`cot_send` on the reserved COTs of ``handle`` (both parties call it where the
        receiver calls :meth:`OTExtensionReceiver.cot_recv_reserved`)."""
        return self.cot_send(delta, bits=bits)

    def ot_send(self, m0: np.ndarray, m1: np.ndarray) -> None:
        """Chosen-message OT: uint64 (n,) or (n, w) pairs; receiver with bit c gets m_c."""
        m0 = np.asarray(m0)
        m1 = np.asarray(m1)
        if m0.shape != m1.shape or m0.dtype != _U64 or m1.dtype != _U64 or m0.ndim not in (1, 2):
            raise ValueError("m0 and m1 must be uint64 arrays of equal shape (n,) or (n, w)")
        a0 = m0.reshape(m0.shape[0], -1)
        a1 = m1.reshape(m1.shape[0], -1)
        n, w = a0.shape
        pos = 0
        for start, q in self._rows(n, _piece_size(self.piece, 4 * w)):
            k = q.shape[0]
            h0, h1 = self._pads(q, start, w)
            h0 ^= a0[pos : pos + k]
            h1 ^= a1[pos : pos + k]
            self.ch.send_array(np.stack([h0, h1], axis=1), owned=True)
            pos += k
        self.ch.flush()

    def lut_send(self, tables: np.ndarray, bits: int = 64) -> None:
        """1-out-of-2^m OT: receiver i gets tables[i, idx_i] (mod 2^bits).

        tables: uint64 (n, 2**m, w) or (n, 2**m); uses n*m random OTs (receiver's choice bits are
        the m bits of its index, least significant first).
        """
        tables = np.asarray(tables)
        if tables.dtype != _U64 or tables.ndim not in (2, 3):
            raise ValueError("tables must be uint64 of shape (n, 2**m) or (n, 2**m, w)")
        n, size = tables.shape[:2]
        m = size.bit_length() - 1
        if size != 1 << m or not 1 <= m <= _MAX_LUT_M:
            raise ValueError(f"table size must be a power of two 2..2^{_MAX_LUT_M}")
        t3 = tables.reshape(n, size, -1)
        w = t3.shape[2]
        nb, mask = _check_bits(bits)
        nblk = (w + 1) // 2
        # Pieces of whole tables, bounded by the (tables x entries x m x blocks) working array.
        per_table = size * m * nblk * 2
        pt = max(1, min(self.piece // m, _PIECE_BYTES // (8 * per_table)))
        pos = 0
        for start, q in self._rows(n * m, pt * m, align=m):
            k = q.shape[0] // m
            assert self._aes is not None
            # pi(q), pi(q ^ s): the (first TCCR step of the) two keys of every OT.
            p0 = self._aes.permute(q).reshape(k, m, 2)
            p1 = self._aes.permute(self._xor_s(q)).reshape(k, m, 2)
            pad = self._aes.lut_pads(p0, p1, start, m, nblk)  # (k, size, nblk*2)
            ct = t3[pos : pos + k] ^ pad[:, :, :w]
            if mask != _ONES:
                ct &= mask
            self.ch.send_array(_low_bytes(ct, nb), owned=True)
            pos += k
        self.ch.flush()


class OTExtensionReceiver(_IKNPBase):
    """IKNP receiver: holds choice bits (base-OT *sender*).

    Same constructor arguments as :class:`OTExtensionSender`, whose methods it mirrors.
    """

    def setup(self) -> None:
        """Run the 128 base OTs (as their sender).  Idempotent."""
        if self._ready:
            return
        k0, k1, digest = _base_ot_send(self.ch, KAPPA, self._rng)
        self._prg0 = [CounterPRG(k0[j].tobytes()) for j in range(KAPPA)]
        self._prg1 = [CounterPRG(k1[j].tobytes()) for j in range(KAPPA)]
        self._pool_choice = np.empty(0, dtype=np.uint8)
        self._finish_setup(digest)

    # ------------------------------------------------------------- IKNP core
    def _pad_choices(self, c: np.ndarray) -> np.ndarray:
        """Checked mode: c followed by PAD_OTS uniformly random choices (never used)."""
        if not self.checked:
            return c
        pad = unpack_bits(np.frombuffer(random_bytes(consistency.PAD_OTS // 8, self._rng), np.uint8),
                          consistency.PAD_OTS)
        return np.concatenate([c, pad])

    def _prove_piece(self, message: np.ndarray, rows: np.ndarray, c: np.ndarray) -> None:
        """Checked mode: the proof that every column used the choices c (sent right after u)."""
        key = self._check_key(message)
        self.ch.send_array(consistency.receiver_proof(key, rows, c), owned=True)

    def _extend(self, c: np.ndarray) -> np.ndarray:
        """Step 1 of IKNP for choices c (0/1 uint8): send u, return t rows (k, 2) uint64."""
        k_out = c.shape[0]
        c = self._pad_choices(c)
        k = c.shape[0]
        k64 = -(-k // 64) * 64
        nbytes = k64 // 8
        t = np.empty((KAPPA, nbytes), dtype=np.uint8)
        u = np.empty((KAPPA, nbytes), dtype=np.uint8)
        for j in range(KAPPA):
            self._prg0[j].fill(t[j])
            self._prg1[j].fill(u[j])
        u ^= t
        # Our i-th OT is output row i of the transpose; put c_i at that row's column.
        r = np.zeros(k64, dtype=np.uint8)
        r[:k] = c
        u ^= pack_bits(columns_from_rows(r))[None, :]
        self.ch.send_array(u, owned=True)
        self.ots_extended += k64
        rows = transpose_bits(t)[:k].view(_U64)
        if self.checked:
            self._prove_piece(u, rows, c)
        return rows[:k_out]

    def _rows(self, c: np.ndarray, piece: int, align: int = 1) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (tweak start, t rows (k, 2) uint64, choices piece) with t_i known for c_i.

        On a pipelined channel the messages (u or d) of the next pieces are sent before piece k
        is handed to the caller (who then waits for the sender's reply to piece k), up to
        ``_LOOKAHEAD_BYTES`` of them: both parties compute at the same time instead of taking
        turns, and a run of many small pieces (long vector correlations) costs a few round trips
        instead of one per piece.
        """
        self.setup()
        lookahead = self.ch.pipelined
        pending: deque = deque()
        ahead = 0  # bytes of our messages whose replies we have not consumed
        pos = 0
        for k, from_pool in self._plan(c.shape[0], piece, align):
            cp = c[pos : pos + k]
            pos += k
            if from_pool:
                rows, r = self._take_pool_choice(k)
                # Derandomize: d = c ^ r tells the sender to swap where they differ.
                self.ch.send_array(pack_bits(cp ^ r), owned=True)
                t = rows.view(_U64)
                size = -(-k // 8)
            else:
                t = self._extend(cp)
                size = self._extend_bytes(k)
            item = (self._next_index(k), t, cp)
            if not lookahead:
                yield item
                continue
            pending.append((item, size))
            ahead += size
            while len(pending) > 1 and ahead >= _LOOKAHEAD_BYTES:
                done, sz = pending.popleft()
                ahead -= sz
                yield done
        while pending:
            yield pending.popleft()[0]

    def _extend_bytes(self, k: int) -> int:
        """Bytes :meth:`_extend` sends for k OTs (the 128 u columns)."""
        return 16 * (-(-k // 64) * 64)

    def _take_pool_choice(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        off = self._pool_off
        r = self._pool_choice[off : off + k]
        rows, _ = self._take_pool(k)
        if self._pool_off == 0:
            self._pool_choice = np.empty(0, dtype=np.uint8)
        return rows, r

    def _pad(self, t: np.ndarray, start: int, words: int) -> np.ndarray:
        assert self._aes is not None
        if words == 1:  # as the sender's _pads
            return self._hash_word(t, start)[:, None]
        if words == 2 and not self.uses_tccr:
            return self._ccr_aes.ccr_block(t)
        h = self._aes.tccr(t, start, (words + 1) // 2, FixedKeyAES.TAG_OT)
        return h if h.shape[1] == words else h[:, :words]

    # --------------------------------------------------------------- public
    def precompute(self, n: int) -> None:
        """Offline phase: extend n OTs with random choice bits now; stored for later use."""
        self.setup()
        if n <= 0:
            return
        rows = [self._pool_rows[self._pool_off :]]
        choice = [self._pool_choice[self._pool_off :]]
        done = 0
        while done < n:
            k = min(self.piece, n - done)
            r = unpack_bits(np.frombuffer(random_bytes((k + 7) // 8, self._rng), np.uint8), k)
            rows.append(self._extend(r).view(np.uint8))
            choice.append(r)
            done += k
        self._pool_rows = np.concatenate(rows)
        self._pool_choice = np.concatenate(choice)
        self._pool_off = 0
        self.ch.flush()  # queued u-matrices reach the peer before we report being done

    def random_ot(self, choices: np.ndarray) -> np.ndarray:
        """Random OTs with chosen bits: returns m_{c_i} as (n, 16) uint8."""
        c = _choice_bits(choices)
        out = np.empty((c.shape[0], 2), dtype=_U64)
        pos = 0
        for start, t, _ in self._rows(c, self.piece):
            k = t.shape[0]
            out[pos : pos + k] = self._pad(t, start, 2)
            pos += k
        self.ch.flush()
        return out.view(np.uint8)

    def random_bit_ot(self, choices: np.ndarray) -> np.ndarray:
        """Random OTs of one bit with chosen bits: m_{c_i} as uint8 (n,) in {0, 1} (the low bit of
        :meth:`random_ot`'s output; see the sender's :meth:`random_bit_ot`)."""
        c = _choice_bits(choices)
        out = np.empty(c.shape[0], dtype=np.uint8)
        pos = 0
        for start, t, _ in self._rows(c, self.piece):
            k = t.shape[0]
            out[pos : pos + k] = self._hash_bits(t, start)
            pos += k
        self.ch.flush()
        return out

    def cot_recv(self, choices: np.ndarray, w: int = 1, bits: int = 64) -> np.ndarray:
        """Correlated OT: returns x0 + c*delta mod 2^bits, (n,) if w == 1 else (n, w) uint64."""
        c = _choice_bits(choices)
        nb, mask = _check_bits(bits)
        n = c.shape[0]
        flat = np.empty(n * w, dtype=_U64)  # w == 1: returned as is (no (n, 1) -> (n,) copy of 8n bytes)
        out = flat.reshape(n, w)
        pos = 0
        for start, t, cp in self._rows(c, _piece_size(self.piece, 2 * w)):
            k = t.shape[0]
            h = self._pad(t, start, w)
            tau = _from_low_bytes(self.ch.recv_array(np.uint8 if nb < 8 else _U64,
                                                     (k, w, nb) if nb < 8 else (k, w)), (k, w), nb)
            # m_c + c * tau
            tau &= (_U64(0) - cp.astype(_U64))[:, None]
            h += tau
            if mask != _ONES:
                h &= mask
            out[pos : pos + k] = h
            pos += k
        return flat if w == 1 else out

    def raw_cots(self, choices: np.ndarray) -> tuple[np.ndarray, int]:
        """Correlated OTs with chosen bits c, *unhashed*: (t (n, 2) uint64, first OT index); the
        sender's :meth:`OTExtensionSender.raw_cots` gets ``q = t ^ c Delta``. Same messages as
        :meth:`random_ot` (checked mode: every fresh piece's consistency proof; silent OT: one
        derandomisation bit per COT). See the sender's method for what the rows may be used for."""
        c = _choice_bits(choices)
        n = c.shape[0]
        t = np.empty((n, 2), dtype=_U64)
        first = None
        pos = 0
        for start, rows, _ in self._rows(c, self.piece):
            k = rows.shape[0]
            first = start if first is None else first
            assert start == first + pos  # the pieces' OT indices are consecutive
            t[pos : pos + k] = rows
            pos += k
        self.ch.flush()
        return t, (self._counter if first is None else first)

    def reserve_cots(self, n: int) -> tuple[np.ndarray, object]:
        """n COTs whose choice bits are random and told now, before the COT runs: (choices uint8
        (n,), handle for :meth:`cot_recv_reserved`).  A caller that needs only *some* uniform
        secret bits may take these as its own (silent OT then sends no derandomisation bit);
        both parties call ``reserve_cots`` at the same point of the protocol.  Here (IKNP-style
        engines, where a chosen choice costs nothing extra) they are fresh random bits."""
        c = unpack_bits(np.frombuffer(random_bytes((n + 7) // 8, self._rng), np.uint8), n)
        return c, c

    def cot_recv_reserved(self, handle: object, bits: int = 64) -> np.ndarray:
        """:meth:`cot_recv` with the reserved choices of ``handle``: x0 + c * delta mod 2^bits."""
        return self.cot_recv(np.asarray(handle), bits=bits)

    def ot_recv(self, choices: np.ndarray, w: int = 1) -> np.ndarray:
        """Chosen-message OT: returns m_{c_i}, (n,) if w == 1 else (n, w) uint64."""
        c = _choice_bits(choices)
        n = c.shape[0]
        out = np.empty((n, w), dtype=_U64)
        pos = 0
        for start, t, cp in self._rows(c, _piece_size(self.piece, 4 * w)):
            k = t.shape[0]
            h = self._pad(t, start, w)
            y = self.ch.recv_array(_U64, (k, 2, w))
            h ^= y[np.arange(k), cp.astype(np.intp)]
            out[pos : pos + k] = h
            pos += k
        return out[:, 0].copy() if w == 1 else out

    def lut_recv(self, indices: np.ndarray, m: int, w: int = 1, bits: int = 64) -> np.ndarray:
        """1-out-of-2^m OT: returns the sender's tables[i, indices[i]] (mod 2^bits).

        Shape (n,) if w == 1 else (n, w) uint64.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError("indices must be 1-D")
        if not 1 <= m <= _MAX_LUT_M:
            raise ValueError(f"m must be in [1, {_MAX_LUT_M}]")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= 1 << m):
            raise ValueError(f"indices must be in [0, 2^{m})")
        nb, mask = _check_bits(bits)
        n = idx.shape[0]
        size = 1 << m
        nblk = (w + 1) // 2
        per_table = size * m * nblk * 2
        pt = max(1, min(self.piece // m, _PIECE_BYTES // (8 * per_table)))
        c = ((idx[:, None] >> np.arange(m)[None, :]) & 1).astype(np.uint8).ravel()
        out = np.empty((n, w), dtype=_U64)
        pos = 0
        for start, t, _ in self._rows(c, pt * m, align=m):
            k = t.shape[0] // m
            assert self._aes is not None
            p = self._aes.permute(t).reshape(k, m, 2)
            pad = self._aes.lut_pads(p, None, start, m, nblk, entries=idx[pos : pos + k])[:, 0, :w]
            shape = (k, size, w, nb) if nb < 8 else (k, size, w)
            ct = self.ch.recv_array(np.uint8 if nb < 8 else _U64, shape)
            if nb < 8:
                ct = ct[np.arange(k), idx[pos : pos + k]]
                row = _from_low_bytes(ct, (k, w), nb)
            else:
                row = ct[np.arange(k), idx[pos : pos + k]]
            row = row ^ pad
            if mask != _ONES:
                row &= mask
            out[pos : pos + k] = row
            pos += k
        return out[:, 0].copy() if w == 1 else out
