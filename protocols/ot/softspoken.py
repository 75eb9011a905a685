"""SoftSpoken OT extension (semi-honest): IKNP's correlation for 128/k bits per OT instead of 128.

Lawrence Roy, "SoftSpoken OT: Quieter OT Extension from Small-Field Silent VOLE in the Minicrypt
Model", CRYPTO 2022 (ePrint 2022/192), the semi-honest protocol (no consistency check).

IKNP gives the OT-extension sender ``q_i = t_i ^ r_i * s`` (128-bit rows, s its secret, r_i the
receiver's choice bits) by sending one 128-bit column per OT: one n-bit vector per bit of s.
SoftSpoken splits s into B = 128 / k blocks of k bits, ``Delta_b``, and makes every block out of one
*small-field VOLE* built from a punctured PRF, so only one n-bit vector per block travels:

  set-up (once; 128 base OTs, as for IKNP):
    S1. 128 Chou-Orlandi random base OTs (:mod:`protocols.ot.base_ot`): the OT-extension receiver
        is their sender (keys k0, k1), the OT-extension sender their receiver (random bits c).
    S2. Receiver: for each block b a GGM tree of depth k from a random root; for level l it sends
        (K_l^0 ^ k0_{b,l}, K_l^1 ^ k1_{b,l}), K_l^side = XOR of the level-l children on that side.
    S3. Sender: unmasks K_l^{c_{b,l}} and rebuilds every leaf except the one on the path
        ``Delta_b`` whose level-l step is ``1 - c_{b,l}``: a (2^k - 1)-out-of-2^k OT of leaves.
  session (after set-up or when a saved state is resumed):
    S4. Both derive the session's leaf keys ``P_{b,x} = H_sid(leaf_{b,x})`` from a public session
        identifier sid (fresh for every session), so no PRG stream is ever used twice.
  extension of n OTs with choice bits r:
    E1. Both expand every leaf key they hold into an n-bit stream ``G_{b,x}`` (fixed-key AES in
        counter mode: ``G[j] = pi(x_j) ^ x_j``, ``x_j = P ^ (j, tag)``); the sender zeroes its unknown leaf.
    E2. Both compute ``u_b = XOR_x G_{b,x}`` and ``v_{b,j} = XOR_{x: bit j of x = 1} G_{b,x}``.
    E3. Receiver: t = v (128 columns, column b*k + j); sends ``d_b = u_b ^ r`` (n bits per block).
    E4. Sender: ``q_{b,j} = v'_{b,j} ^ Delta_{b,j} (u'_b ^ d_b)`` from its own sums v', u'.  Since
        the punctured leaf has coefficient (Delta ^ Delta)_j = 0, ``v'_j ^ Delta_j u' = v_j ^
        Delta_j u``, hence ``q = t ^ r * s`` with s = (Delta_b)_b: IKNP's correlation, and the rest
        (transpose, TCCR hash, COT/OT/table OT, precomputation) is the IKNP engine's, inherited.

Cost per OT: 128/k bits (k = 4: 32 bits, a quarter of IKNP) for 2^k/k times IKNP's PRG work.
Threat model: semi-honest (passive) parties, as for :mod:`protocols.ot.iknp`.  The receiver
never learns Delta (the base OTs hide c; the GGM sums it receives are its own); the sender never
learns r (``d_b = u_b ^ r`` and u_b is masked by the stream of the one leaf it cannot compute).
Public: k, the number of OTs, sid.  The TCCR hash of the output and the GGM/PRG expansions are
fixed-key AES (random-permutation model), as in the IKNP engine.
"""
from __future__ import annotations

import numpy as np

from protocols.ot.base_ot import _base_ot_recv, _base_ot_send
from protocols.ot.crypto import (
    FixedKeyAES,
    columns_from_rows,
    derive_key,
    pack_bits,
    random_bytes,
    transpose_bits,
    unpack_bits,
)
from protocols.ot.iknp import (
    KAPPA,
    OTExtensionReceiver,
    OTExtensionSender,
    _check_bits,
    _choice_bits,
    _from_low_bytes,
    _low_bytes,
)
from protocols.net.transport import Channel, MalformedMessage

__all__ = ["SoftSpokenSender", "SoftSpokenReceiver", "ALLOWED_K", "softspoken_bits_per_ot", "cot_send_many",
           "cot_recv_many"]

_U64 = np.uint64
#: block sizes k (bits of Delta per small-field VOLE); k must divide 128
ALLOWED_K = (1, 2, 4, 8)
# fixed-key AES domain tags, distinct from FixedKeyAES.TAG_OT / TAG_LUT
_TAG_GGM = 3
_TAG_DERIVE = 4
_TAG_PRG = 5
# OTs per extension message: a few pieces per session let the two parties compute at the same time
_PIECE = 1 << 17


def softspoken_bits_per_ot(k: int) -> int:
    """Extension traffic per OT in bits (IKNP: 128)."""
    return KAPPA // int(k)


def _check_k(k: int) -> int:
    if int(k) not in ALLOWED_K:
        raise ValueError(f"SoftSpoken block size k must be one of {ALLOWED_K}, got {k!r}")
    return int(k)


def _ggm_expand(aes: FixedKeyAES, nodes: np.ndarray, level: int) -> np.ndarray:
    """Children of every node: (B, m, 2) uint64 -> (B, m, 2 sides, 2 words).

    child(node, side) = H(node, (level << 40 | row, TAG_GGM | side << 32)): the TCCR hash with a
    tweak unique per (level, node, side), i.e. a length-doubling PRG on the secret node.
    """
    b, m, _ = nodes.shape
    h = aes.tccr(np.ascontiguousarray(nodes.reshape(b * m, 2)), level << 40, 2, _TAG_GGM)
    return h.reshape(b, m, 2, 2)


def ggm_deal(aes: FixedKeyAES, roots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full GGM trees of depth k from roots (B, 2) uint64.

    Returns (leaves (B, 2^k, 2), sums (B, k, 2, 2)): ``sums[b, l, side]`` is the XOR of the
    level-(l+1) nodes on that side (even / odd index).  Leaf x's path takes side
    ``(x >> (k - 1 - l)) & 1`` at level l.
    """
    b = roots.shape[0]
    nodes = roots.reshape(b, 1, 2)
    sums = np.empty((b, k, 2, 2), dtype=_U64)
    for level in range(k):  # k <= 8 levels, each vectorised over all blocks and nodes
        ch = _ggm_expand(aes, nodes, level)
        sums[:, level] = np.bitwise_xor.reduce(ch, axis=1)
        nodes = ch.reshape(b, -1, 2)
    return nodes, sums


def ggm_punctured(aes: FixedKeyAES, chosen: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every leaf but one from the received level sums (punctured GGM evaluation).

    chosen: (B, k, 2) uint64, ``sums[b, l, c[b, l]]``; c: (B, k) bits.  Returns (leaves (B, 2^k, 2)
    with the unknown leaf zero, delta (B,) its index): at level l the path goes to side 1 - c.
    """
    b, k = c.shape
    rows = np.arange(b)
    nodes = np.zeros((b, 1, 2), dtype=_U64)
    path = np.zeros(b, dtype=np.int64)
    for level in range(k):
        ch = _ggm_expand(aes, nodes, level)
        ch[rows, path] = 0  # the path node is unknown: its (garbage) children are dropped
        side = c[:, level].astype(np.int64)
        known = np.bitwise_xor.reduce(ch, axis=1)[rows, side]  # (B, 2)
        ch[rows, path, side] = chosen[:, level] ^ known
        path = 2 * path + (1 - side)
        nodes = ch.reshape(b, -1, 2)
    return nodes, path


def _streams(aes: FixedKeyAES, keys: np.ndarray, tags: np.ndarray, pos: int, nblocks: int) -> np.ndarray:
    """Blocks pos .. pos+nblocks-1 of every leaf's stream: (L, 2) keys -> (L, 2 * nblocks) uint64.

    G[j] = pi(x_j) ^ x_j with x_j = P ^ (j, tag_x): fixed-key AES in counter mode on the secret P
    (distinct inputs; the feed-forward makes pi's output non-invertible, as in Matyas-Meyer-Oseas).
    """
    n_leaves = keys.shape[0]
    inp = np.empty((n_leaves, nblocks, 2), dtype=_U64)
    np.bitwise_xor(keys[:, 0:1], np.arange(pos, pos + nblocks, dtype=_U64)[None, :], out=inp[:, :, 0])
    inp[:, :, 1] = (keys[:, 1] ^ tags)[:, None]
    out = aes.permute(inp)
    out ^= inp  # one flat loop (a width-2 broadcast of P would be several times slower)
    return out.reshape(n_leaves, 2 * nblocks)


def _vole_sums(g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """E2: u = XOR over all leaves, v_j = XOR over leaves with bit j set: (B, 2^k, W) -> (B, W), (B, k, W)."""
    b, _, w = g.shape
    cube = g.reshape((b,) + (2,) * k + (w,))  # axis 1 is bit k-1 of the leaf index, axis k bit 0
    bit_axes = tuple(range(1, k + 1))
    v = np.empty((b, k, w), dtype=_U64)
    for j in range(k):
        ax = k - j
        half = cube[(slice(None),) * ax + (1,)]  # view: the leaves with bit j set
        rest = tuple(a if a < ax else a - 1 for a in bit_axes if a != ax)
        v[:, j] = np.bitwise_xor.reduce(half, axis=rest) if rest else half
    u = np.bitwise_xor.reduce(cube, axis=bit_axes)
    return u, v


class _SoftSpokenState:
    """Mixin: leaf keys of one session and the stream position (shared by both roles)."""

    k: int
    _leaves: np.ndarray
    _digest: bytes

    def _init_k(self, k: int) -> None:
        self.k = _check_k(k)
        self.n_blocks = KAPPA // self.k
        self.piece = min(self.chunk, _PIECE)
        self._session = False

    def _begin(self, sid: bytes) -> None:
        """S4: start this engine's session, identifier ``sid`` (public, never reused with these leaves).

        One engine runs one session: a new session (resumption) is a new engine (:meth:`resume`).
        """
        if self._session:
            raise RuntimeError("a SoftSpoken engine runs one session; resume a new one")
        n = 1 << self.k
        self._prg = FixedKeyAES(derive_key(b"secureml-ss-prg", sid))
        derive = FixedKeyAES(derive_key(b"secureml-ss-leaf", sid))
        flat = np.ascontiguousarray(self._leaves.reshape(-1, 2))
        self._keys = derive.tccr(flat, 0, 1, _TAG_DERIVE)
        self._tags = (_U64(_TAG_PRG) | (np.arange(self.n_blocks * n, dtype=_U64) << _U64(8))).astype(_U64)
        self._pos = 0
        self._session = True
        self._finish_setup(sid)

    def state(self) -> dict:
        """What must be kept to resume (secret: store it like a key)."""
        return {"k": self.k, "leaves": self._leaves.copy(), "digest": self._digest}

    def _vole(self, n128: int) -> tuple[np.ndarray, np.ndarray]:
        """E1 + E2 for n128 OTs: u (B, W), v (B, k, W) uint64, W = n128 / 64."""
        nblocks = n128 // 128
        g = _streams(self._prg, self._keys, self._tags, self._pos, nblocks)
        self._pos += nblocks
        g = g.reshape(self.n_blocks, 1 << self.k, -1)
        self._zero_unknown(g)
        return _vole_sums(g, self.k)

    def _zero_unknown(self, g: np.ndarray) -> None:
        """The sender zeroes the stream of its punctured leaf; the receiver knows every leaf."""


class SoftSpokenReceiver(_SoftSpokenState, OTExtensionReceiver):
    """OT-extension receiver (choice bits); deals the GGM trees.  Mirrors :class:`OTExtensionReceiver`.

    ``SoftSpokenReceiver(ch, k=4, seed=None)``; :meth:`setup` runs S1-S2 and begins a session
    with sid = the base-OT transcript digest; :meth:`resume` rebuilds one from :meth:`state`.
    """

    def __init__(self, ch: Channel, k: int = 4, seed: int | None = None, chunk: int = 1 << 20) -> None:
        super().__init__(ch, seed=seed, chunk=chunk)
        self._init_k(k)

    @classmethod
    def resume(cls, ch: Channel, state: dict, sid: bytes, **kw) -> "SoftSpokenReceiver":
        """A receiver for a new session (identifier ``sid``) from a saved :meth:`state`."""
        self = cls(ch, k=state["k"], **kw)
        self._leaves, self._digest = np.array(state["leaves"], dtype=_U64), bytes(state["digest"])
        self._pool_choice = np.empty(0, dtype=np.uint8)
        self._begin(sid)
        return self

    def setup(self, sid: bytes | None = None) -> None:
        """S1-S2 (as base-OT sender and GGM dealer), then a session.  Idempotent."""
        if self._ready:
            return
        k0, k1, digest = _base_ot_send(self.ch, KAPPA, self._rng)
        aes = FixedKeyAES(derive_key(b"secureml-ss-ggm", digest))
        roots = np.frombuffer(random_bytes(16 * self.n_blocks, self._rng), dtype=_U64).reshape(-1, 2)
        leaves, sums = ggm_deal(aes, roots, self.k)
        pads = np.stack([k0.view(_U64), k1.view(_U64)], axis=1).reshape(self.n_blocks, self.k, 2, 2)
        self.ch.send_array(sums ^ pads)
        self._leaves, self._digest = leaves, digest
        self._pool_choice = np.empty(0, dtype=np.uint8)
        self._begin(digest if sid is None else sid)

    def _extend_bytes(self, k: int) -> int:
        """Bytes :meth:`_extend` sends for k OTs: one n-bit vector per block."""
        return self.n_blocks * (-(-k // 128) * 128) // 8

    def _extend(self, c: np.ndarray) -> np.ndarray:
        """E1-E3 for choices c: send d = u ^ r per block, return t rows (k, 2) uint64.

        Checked mode (malicious receiver): PAD_OTS random choices extend the piece and a
        consistency proof follows d (:mod:`protocols.ot.consistency`).
        """
        k_out = c.shape[0]
        c = self._pad_choices(c)
        k = c.shape[0]
        n128 = -(-k // 128) * 128
        u, v = self._vole(n128)
        r = np.zeros(n128, dtype=np.uint8)
        r[:k] = c
        # Our i-th OT is output row i of the transpose; put r_i at that row's column (as IKNP).
        u ^= pack_bits(columns_from_rows(r)).view(_U64)[None, :]
        self.ch.send_array(u, owned=True)
        self.ots_extended += n128
        rows = transpose_bits(v.reshape(KAPPA, -1).view(np.uint8))[:k].view(_U64)
        if self.checked:
            self._prove_piece(u, rows, c)
        return rows[:k_out]


class SoftSpokenSender(_SoftSpokenState, OTExtensionSender):
    """OT-extension sender (message pairs / correlations); holds Delta.  Mirrors :class:`OTExtensionSender`."""

    def __init__(self, ch: Channel, k: int = 4, seed: int | None = None, chunk: int = 1 << 20) -> None:
        super().__init__(ch, seed=seed, chunk=chunk)
        self._init_k(k)

    @classmethod
    def resume(cls, ch: Channel, state: dict, sid: bytes, **kw) -> "SoftSpokenSender":
        """A sender for a new session (identifier ``sid``) from a saved :meth:`state`."""
        self = cls(ch, k=state["k"], **kw)
        self._set_delta(np.array(state["delta"], dtype=np.int64))
        self._leaves, self._digest = np.array(state["leaves"], dtype=_U64), bytes(state["digest"])
        self._begin(sid)
        return self

    def state(self) -> dict:
        st = super().state()
        st["delta"] = self._delta.copy()
        return st

    def _set_delta(self, delta: np.ndarray) -> None:
        if delta.shape != (self.n_blocks,) or delta.min() < 0 or delta.max() >= 1 << self.k:
            raise MalformedMessage("SoftSpoken state: bad Delta")
        self._delta = delta
        bits = ((delta[:, None] >> np.arange(self.k)[None, :]) & 1).astype(np.uint8)  # (B, k)
        self._s_bits = bits.ravel().astype(bool)  # s bit b*k + j = bit j of Delta_b
        self._s64 = pack_bits(bits.ravel()).view(_U64).copy()
        self._dmask = (_U64(0) - bits.astype(_U64))[:, :, None]  # all-ones where the bit is set

    def _base_choices(self) -> np.ndarray:
        """S1: the sender's 128 random base-OT choices c; Delta_b's bit (k-1-l) is 1 - c_{b,l}.

        A hook: the silent-OT engine (:mod:`protocols.ot.ferret`) fixes one of them so that
        bit 0 of s is 1 (127 random bits remain), which lets it carry choice bits in that bit.
        """
        return unpack_bits(np.frombuffer(random_bytes(KAPPA // 8, self._rng), dtype=np.uint8), KAPPA)

    def setup(self, sid: bytes | None = None) -> None:
        """S1 + S3 (as base-OT receiver with random choices), then a session.  Idempotent."""
        if self._ready:
            return
        c = self._base_choices()
        keys, digest = _base_ot_recv(self.ch, c, self._rng)
        aes = FixedKeyAES(derive_key(b"secureml-ss-ggm", digest))
        masked = self.ch.recv_array(_U64, (self.n_blocks, self.k, 2, 2))
        cb = c.reshape(self.n_blocks, self.k)
        chosen = np.take_along_axis(masked, cb.astype(np.intp)[:, :, None, None], axis=2)[:, :, 0]
        chosen = chosen ^ keys.view(_U64).reshape(self.n_blocks, self.k, 2)
        leaves, delta = ggm_punctured(aes, chosen, cb)
        self._set_delta(delta)
        self._leaves, self._digest = leaves, digest
        self._begin(digest if sid is None else sid)

    def _zero_unknown(self, g: np.ndarray) -> None:
        g[np.arange(self.n_blocks), self._delta] = 0

    def _extend(self, k: int) -> np.ndarray:
        """E1, E2, E4 for k OTs: receive d, return q rows (k, 2) uint64 (checked mode: verified)."""
        n = self._checked_size(k)
        n128 = -(-n // 128) * 128
        u, v = self._vole(n128)
        d = self.ch.recv_array(_U64, (self.n_blocks, n128 // 64))
        u ^= d
        v ^= u[:, None, :] & self._dmask
        self.ots_extended += n128
        rows = transpose_bits(v.reshape(KAPPA, -1).view(np.uint8))[:n].view(_U64)
        if self.checked:
            self._verify_piece(d, rows)
        return rows[:k]


# ------------------------------------------------------------------------------------------------
# Correlated OTs of several correction widths in one exchange (any IKNP-style engine)
# ------------------------------------------------------------------------------------------------

def _segments(sizes: list[int]) -> list[tuple[int, int]]:
    ends = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def cot_send_many(engine: OTExtensionSender, deltas: list[np.ndarray], bits: list[int]) -> list[np.ndarray]:
    """Like ``engine.cot_send(deltas[g], bits[g])`` for every group g, as one stream of OTs.

    One call instead of one per group: the receiver's derandomization messages and the sender's
    corrections flow in pieces across group boundaries (one pipelined exchange, not one per
    group). Each group's corrections keep their own width, ceil(bits/8) bytes.  Scalar
    correlations (w = 1) only.  Returns the sender's x0 per group (reduced mod 2^bits).
    """
    if len(deltas) != len(bits):
        raise ValueError("one bit width per group")
    segs = _segments([int(np.asarray(d).shape[0]) for d in deltas])
    delta = np.concatenate([np.asarray(d, dtype=_U64).ravel() for d in deltas])
    widths = [_check_bits(b) for b in bits]
    x0 = np.empty(delta.shape[0], dtype=_U64)
    pos = 0
    for start, q in engine._rows(delta.shape[0], engine.piece):
        k = q.shape[0]
        h0, h1 = engine._pads(q, start, 1)
        tau = h0[:, 0] + delta[pos : pos + k] - h1[:, 0]  # m1 + tau = m0 + delta
        parts = []
        for (a, b), (nb, mask) in zip(segs, widths):
            lo, hi = max(a, pos), min(b, pos + k)
            if lo < hi:
                parts.append(_low_bytes(tau[lo - pos : hi - pos], nb).view(np.uint8).reshape(-1))
                x0[lo:hi] = h0[lo - pos : hi - pos, 0] & mask
        engine.ch.send_array(np.concatenate(parts) if len(parts) > 1 else parts[0], owned=True)
        pos += k
    engine.ch.flush()
    return [x0[a:b] for a, b in segs]


def cot_recv_many(engine: OTExtensionReceiver, choices: list[np.ndarray], bits: list[int]) -> list[np.ndarray]:
    """Receiver side of :func:`cot_send_many`: x0 + c * delta (mod 2^bits) per group."""
    if len(choices) != len(bits):
        raise ValueError("one bit width per group")
    segs = _segments([int(np.asarray(c).shape[0]) for c in choices])
    c = _choice_bits(np.concatenate([np.asarray(ci).ravel() for ci in choices]))
    widths = [_check_bits(b) for b in bits]
    out = np.empty(c.shape[0], dtype=_U64)
    pos = 0
    for start, t, cp in engine._rows(c, engine.piece):
        k = t.shape[0]
        h = engine._pad(t, start, 1)[:, 0]
        cuts = [(max(a, pos), min(b, pos + k), nb, mask) for (a, b), (nb, mask) in zip(segs, widths)]
        cuts = [x for x in cuts if x[0] < x[1]]
        raw = engine.ch.recv_array(np.uint8, (sum((hi - lo) * nb for lo, hi, nb, _ in cuts),))
        off = 0
        sel = _U64(0) - cp.astype(_U64)  # all-ones where the choice is 1
        for lo, hi, nb, mask in cuts:
            m = hi - lo
            seg = raw[off : off + m * nb]
            tau = seg.copy().view(_U64) if nb == 8 else _from_low_bytes(seg.reshape(m, nb), (m,), nb)
            off += m * nb
            r = h[lo - pos : hi - pos] + (tau & sel[lo - pos : hi - pos])
            out[lo:hi] = r & mask
        pos += k
    return [out[a:b] for a, b in segs]
