"""One-sided authenticated values: MACs over Z_2^128 held by the client, keys by the server.

Threat model: the *server* (model owner, OT sender) is semi-honest; the *client* (query owner, OT
receiver) may deviate arbitrarily. Only the client's values need authentication, so this is the
one-sided half of SPDZ2k (Cramer, Damgard, Escudero, Scholl, Xing, CRYPTO 2018) with MACs that
come from correlated OT, as in MASCOT / SPDZ2k's OT-based preprocessing:

* The server draws a global key Delta, uniform in [0, 2^64) (s = 64 key bits), fresh per session.
* An **authenticated client value** x (an integer the client knows) is a pair: the client's MAC
  M_x and the server's key K_x with  M_x = K_x + x * Delta  (mod 2^128).
  Linear combinations with public coefficients are local (the client combines MACs, the server
  keys; adding a public constant c moves the server's key by -c Delta).
* **Commit** (:func:`commit`): the client's value bits are the choice bits of COTs with
  correlation Delta (one random OT of the *checked* OT extension per bit plus a 16-byte
  correction, :func:`cot128`); sum_b 2^b of the outputs is M_x. Extra correlation words C_e in
  the same COTs give, for free, authenticated products of the committed value with server-chosen
  numbers: the client obtains T_e + x * C_e, the server keeps T_e (an additive sharing of x C_e).
  With C = (y, y Delta) for a server-secret y, that is an *authenticated share* of x y;
  with C = K_z (the key of another committed value z), the client can form a MAC on x z.
* **Check** (:func:`check_congruent`): the client claims that authenticated values Z_l (built by
  the caller from committed values and shares) satisfy Z_l = C_l (mod 2^k) for server-known C_l,
  k <= 64. The client commits a fresh 64-bit mask r_l, sends Y_l = Z_l + 2^k r_l and its MAC,
  all mod 2^(k+64); the server checks Y_l = C_l (mod 2^k) and MAC(Y_l) = K(Y_l) + Y_l Delta
  (mod 2^(k+64)). Nothing else about Z leaks: Y_l's bits below k are C_l (the server knows
  them), the bits above are masked by r_l.

Soundness of one check (the SPDZ2k argument, one-sided): the committed values fix the true Z_l.
If Z_l != C_l (mod 2^k), a passing Y_l differs from the true masked value by some e with
v(e) < k (2-adic valuation), and the MAC must move by e Delta mod 2^(k+64), which needs all 64
bits of Delta: probability 2^-64. Callers build Z_l as a random combination with **binary**
coefficients of per-item relations L_i = 0 (mod 2^k): if some L_j != 0, flipping chi_j changes the
sum by L_j, so at most half of the coefficient vectors hide it -- probability <= 1/2 per
repetition, whatever the valuation of L_j (an error in the top bit, the one that zeroes a kernel
term, is caught as well as an error in bit 0). lambda independent repetitions: 2^-lambda.

Hiding (the client's values, against the semi-honest server): the server sees only OT-extension
messages (independent of the choice bits), and Y_l, MAC(Y_l), which are fixed by C_l, the
uniform mask r_l and its own keys.

* Protocols 31-33 also committed values with MACs in F_p, p = 2^64 - 59 (``commit_p64``, the
  client-malicious Laplacian check); protocol 34 moved that check to F_q, q = 2^48 - 59
  (:mod:`protocols.mpc.commit_fp48`), and the F_p code was removed.

Everything here is numpy-vectorised over (hi, lo) uint64 limb pairs (:mod:`protocols.mpc.u128`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from protocols.mpc import u128
from protocols.mpc.context import PartyContext
from protocols.ot.crypto import FixedKeyAES, derive_key
from secureml.errors import ProtocolError

U64 = np.uint64
#: bits of the server's global MAC key Delta (the statistical security of a MAC forgery)
DELTA_BITS = 64
#: default repetitions of a check with binary coefficients (soundness 2^-STAT_BITS)
STAT_BITS = 40

U128 = tuple[np.ndarray, np.ndarray]

_KEY = derive_key(b"secureml/authenticated/expand")
_LUT_TAG = b"secureml/au-lut"  # bound_lut's pads: its own key (distinct from _KEY's tag in 16 bytes too)
_TAG = 3  # tweak domain (the OT engine uses 1 and 2)
_LOCAL = threading.local()  # one AES context per thread (a server runs sessions in threads)


class MacCheckError(ProtocolError):
    """A client's authenticated values failed their check (a deviating client): abort."""


def _lut_aes() -> FixedKeyAES:
    aes = getattr(_LOCAL, "lut", None)
    if aes is None:
        # its own key, as bound_lut's docstring says: before protocol 40 its tag was
        # "secureml/authenticated/bound-lut", and derive_key (which read only 16 bytes of a tag
        # until protocol 41) gave it _KEY's key -- a table's level-0 node for value 0 was then the
        # commitment MAC pad of the same OT (same input and tweak): docs/malicious.md, review of 38-39
        aes = _LOCAL.lut = FixedKeyAES(derive_key(_LUT_TAG))
    return aes


def _aes() -> FixedKeyAES:
    aes = getattr(_LOCAL, "aes", None)
    if aes is None:
        aes = _LOCAL.aes = FixedKeyAES(_KEY)
    return aes


def new_delta(party: PartyContext) -> np.uint64:
    """Server: a fresh global MAC key Delta in [0, 2^64) (one per session)."""
    return U64(party.rng.random_u64(1)[0])


def _expand(pads: np.ndarray, words: int, domain: int = 0) -> U128:
    """(n, 16) uint8 random-OT pads -> (n, words) 128-bit pads (TCCR in counter mode).

    Always hashed, never the raw pad: the raw pads are reused as keys of bound table OTs
    (:func:`bound_lut`), and the correction tau = P0 + corr - P1 must not relate them.
    ``domain`` separates several uses of the same random OTs (:func:`cot_on_pads`)."""
    n = pads.shape[0]
    out = _aes().tccr(np.ascontiguousarray(pads).view(U64).reshape(n, 2), 0, words, _TAG | (domain << 8))
    out = out.reshape(n, words, 2)
    return out[:, :, 1].copy(), out[:, :, 0].copy()


def random_choices(party: PartyContext, chooser: int, *, n: int, choices: np.ndarray | None = None):
    """n random OTs of the (checked) extension whose choice bits are the client's ``choices``:
    the client keeps m_c (n, 16), the server (m0, m1). Every later use of these OTs
    (:func:`cot_on_pads`, :func:`vole_on_pads`) is bound to the same bits."""
    if party.role == chooser:
        return party.ot_receiver.random_ot(np.asarray(choices, dtype=np.uint8).ravel())
    return party.ot_sender.random_ot(n)


def cot_on_pads(party: PartyContext, chooser: int, pads, domain: int, *, words: int, choices: np.ndarray | None = None,
                corr: U128 | None = None, keep: np.ndarray | None = None) -> U128:
    """:func:`cot128` on existing random OTs (``pads`` from :func:`random_choices`), hashed in
    their own ``domain``: same steps, no new OT -- so the choice bits are the ones fixed before.
    ``keep``: bytes per word of each OT's corrections, as in :func:`cot128` (protocol 29)."""
    if party.role == chooser:
        c = np.asarray(choices, dtype=np.uint8).ravel()
        P = _expand(pads, words, domain)
        if keep is None:
            tau = u128.from_bytes16(party.ch.recv_array(np.uint8, (c.shape[0], words, 16)))
        else:
            tau = u128.from_bytes16(_recv_kept(party, keep, c.shape[0], words))
        cw = (U64(0) - c.astype(U64))[:, None]
        return u128.add(P, (tau[0] & cw, tau[1] & cw))
    m0, m1 = pads
    P0, P1 = _expand(m0, words, domain), _expand(m1, words, domain)
    if callable(corr):  # a correlation that depends on the server's own keys (e.g. a MAC key K_x)
        corr = corr(P0)
    tau = u128.sub(u128.add(P0, corr), P1)
    raw = np.ascontiguousarray(u128.to_bytes(tau))
    if keep is not None:
        raw = _pack_kept(raw.reshape(m0.shape[0], words, 16), keep)
    party.ch.send_array(raw, owned=True)
    party.ch.flush()
    return P0


def _stream(pads: np.ndarray, words: int, domain: int, start: int = 0) -> np.ndarray:
    """(n, 16) pads -> (n, words) uint64 pseudorandom words (TCCR counter mode, own domain); row r
    is OT ``start`` + r (a caller hashing rows in chunks passes each chunk's first row)."""
    n = pads.shape[0]
    out = _aes().tccr(np.ascontiguousarray(pads).view(U64).reshape(n, 2), start, (words + 1) // 2,
                      _TAG | (domain << 8))
    return out[:, :words]


def vole_on_pads(party: PartyContext, chooser: int, pads, domain: int, *, bits: np.ndarray, ring_bits: int,
                 corr: np.ndarray | None = None, choices: np.ndarray | None = None, n_words: int = 0) -> np.ndarray:
    """Vector COT over Z_2^ring_bits on existing random OTs: row r's correlation is the
    ``n_words``-long uint64 vector corr[r]; only the low ``bits[r]`` bits of row r matter (the
    caller scales row r by 2^(ring_bits - bits[r])), so its correction travels in
    ceil(bits[r] / 8) bytes per word (Gilboa's trimming). Client: P_c + c tau; server: P0.
    Returns (rows, n_words) uint64 (reduced mod 2^bits[r] per row). One message per byte width
    (rows of that width in order, P of the i-th such row hashed with tweak i); computed in pieces
    of _VOLE_ROWS rows, so the hash outputs and the corrections' temporaries stay cache-sized."""
    rows = pads.shape[0] if party.role == chooser else pads[0].shape[0]
    out = np.empty((rows, corr.shape[1] if corr is not None else n_words), dtype=U64)
    W = out.shape[1]
    bits = np.asarray(bits, dtype=np.int64)
    nbytes = (bits + 7) // 8
    chosen = np.asarray(choices).ravel() if party.role == chooser else None
    for nb in sorted(set(nbytes.tolist())):
        sel = np.nonzero(nbytes == nb)[0]
        every = sel.shape[0] == rows  # one width (the usual case): slices, no gathers
        msg = party.ch.recv_array(np.uint8, (sel.shape[0], W, nb)) if party.role == chooser else \
            np.empty((sel.shape[0], W, nb), dtype=np.uint8)
        for a in range(0, sel.shape[0], _VOLE_ROWS):
            b = min(a + _VOLE_ROWS, sel.shape[0])
            idx = slice(a, b) if every else sel[a:b]
            bb = bits[idx]
            mask = np.where(bb >= 64, U64(0xFFFFFFFFFFFFFFFF), (U64(1) << np.minimum(bb, 63).astype(U64)) - U64(1))[:, None]
            if party.role == chooser:
                P = _stream(pads[idx], W, domain, start=a)
                full = np.zeros((b - a, W, 8), dtype=np.uint8)
                full[:, :, :nb] = msg[a:b]
                tau = full.view(U64).reshape(b - a, W)
                tau &= (U64(0) - chosen[idx].astype(U64))[:, None]
                P += tau
                P &= mask
                out[idx] = P
            else:
                P0, P1 = _stream(pads[0][idx], W, domain, start=a), _stream(pads[1][idx], W, domain, start=a)
                tau = P0 + corr[idx]
                tau -= P1
                msg[a:b] = tau.view(np.uint8).reshape(b - a, W, 8)[:, :, :nb]
                P0 &= mask
                out[idx] = P0
        if party.role != chooser:
            party.ch.send_array(msg, owned=True)
    if party.role != chooser:
        party.ch.flush()
    return out


#: rows per piece of vole_on_pads (its temporaries: a few (rows, words) uint64 arrays)
_VOLE_ROWS = 1 << 15


def _committed_values(values: np.ndarray | None, n: int, bits: int) -> np.ndarray:
    """The client's n values to commit, as uint64, refused if any is wider than ``bits``."""
    v = np.ascontiguousarray(values, dtype=U64).ravel()
    if v.shape[0] != n:
        raise ValueError("values must have n entries")
    if bits < 64 and v.size and int(v.max()) >> bits:
        raise ValueError("values wider than advertised")
    return v


def _bits_of(values: np.ndarray, bits: int) -> np.ndarray:
    """(n,) uint64 -> (n, bits) uint8, least significant first."""
    return ((values[:, None] >> np.arange(bits, dtype=U64)[None, :]) & U64(1)).astype(np.uint8)


def cot128(party: PartyContext, chooser: int, *, n: int, words: int, choices: np.ndarray | None = None,
           corr: U128 | None = None, keep_pads: list | None = None, keep: np.ndarray | None = None) -> U128:
    """Correlated OT over Z_2^128 with ``words``-word vector correlations, both roles.

    Steps: 1. n random OTs (the OT extension's; checked in client-malicious mode): the sender
    gets pads (m0, m1), the chooser m_c; both expand each pad to ``words`` 128-bit words;
    2. the sender sends tau = P0 + corr - P1 (16 bytes per word) and keeps P0;
    3. the chooser outputs P_c + c tau = P0 + c corr. Returns (n, words) limb pairs.
    ``keep`` (both roles, protocol 29): bytes per word of each COT (n,), 1..16: only the low
    keep[i] bytes of COT i's corrections travel, so the chooser's outputs are right mod
    2^(8 keep[i]) only (callers that weight COT i by 2^b and need the sum mod 2^R send R - b bits).
    """
    if party.role == chooser:
        c = np.asarray(choices, dtype=np.uint8).ravel()
        if c.shape[0] != n:
            raise ValueError("choices must have n entries")
        mc = party.ot_receiver.random_ot(c)
        if keep_pads is not None:
            keep_pads.append(mc)
        P = _expand(mc, words)
        if keep is None:
            tau = u128.from_bytes16(party.ch.recv_array(np.uint8, (n, words, 16)))
        else:
            tau = u128.from_bytes16(_recv_kept(party, keep, n, words))
        cw = (U64(0) - c.astype(U64))[:, None]  # all-ones where c = 1
        return u128.add(P, (tau[0] & cw, tau[1] & cw))
    m0, m1 = party.ot_sender.random_ot(n)
    if keep_pads is not None:
        keep_pads.append((m0, m1))
    P0, P1 = _expand(m0, words), _expand(m1, words)
    tau = u128.sub(u128.add(P0, corr), P1)
    raw = np.ascontiguousarray(u128.to_bytes(tau))
    if keep is not None:
        raw = _pack_kept(raw.reshape(n, words, 16), keep)
    party.ch.send_array(raw, owned=True)
    party.ch.flush()
    return P0


def _kept_period(keep: np.ndarray) -> int:
    """The shortest period P <= 128 of ``keep`` (n,) that divides n (commit's per-bit pattern: P =
    bits; a constant: P = 1), or 0 (none, or kept counts outside 1..16): the fast byte layouts of
    :func:`_pack_kept`."""
    n = keep.shape[0]
    for P in range(1, min(n, 128) + 1):
        if n % P:
            continue
        head = keep[: min(n, 64 * P)].reshape(-1, P)
        if (head == head[0]).all() and (keep.reshape(-1, P) == keep[:P]).all():
            # the fast layouts take 1..16 kept bytes per word; anything else the general path refuses
            return P if bool(((keep[:P] >= 1) & (keep[:P] <= 16)).all()) else 0
    return 0


def _pack_kept(raw: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """raw (n, words, 16) -> the low keep[i] bytes of every word of COT i, in COT order (the bytes
    ``raw[_kept_bytes(keep, n, words)]`` selects: the wire is unchanged). For a periodic ``keep``
    one gather of a period's byte positions per period instead of an (n, words, 16) boolean mask
    (commit's 917,504 COTs: ~36 -> ~9 ms)."""
    n, words = raw.shape[0], raw.shape[1]
    keep = np.asarray(keep).reshape(n)
    P = _kept_period(keep)
    if P == 0:
        return np.ascontiguousarray(raw[_kept_bytes(keep, n, words)])
    sel = _kept_bytes(keep[:P], P, words).reshape(-1)  # one period's kept bytes, in wire order
    return np.take(raw.reshape(n // P, P * words * 16), np.flatnonzero(sel), axis=1).reshape(-1)


def _recv_kept(party: PartyContext, keep: np.ndarray, n: int, words: int) -> np.ndarray:
    """The chooser's side of :func:`_pack_kept`: (n, words, 16) uint8, zero above each kept byte."""
    keep = np.asarray(keep).reshape(n)
    P = _kept_period(keep)
    if P == 0:
        sel = _kept_bytes(keep, n, words)
        raw = np.zeros((n, words, 16), dtype=np.uint8)
        raw[sel] = party.ch.recv_array(np.uint8, (int(sel.sum()),))
        return raw
    sel = _kept_bytes(keep[:P], P, words).reshape(-1)
    L = int(sel.sum())
    ext = np.empty((n // P, L + 1), dtype=np.uint8)  # the period's bytes, then a zero
    ext[:, :L] = party.ch.recv_array(np.uint8, ((n // P) * L,)).reshape(n // P, L)
    ext[:, L] = 0
    src = np.full(sel.shape[0], L, dtype=np.intp)  # every byte of a period: its wire byte or the zero
    src[sel] = np.arange(L)
    return np.take(ext, src, axis=1).reshape(n, words, 16)


def _kept_bytes(keep: np.ndarray, n: int, words: int) -> np.ndarray:
    """(n, words, 16) bool: the low keep[i] bytes of every word of COT i (u128.to_bytes is little-endian)."""
    keep = np.asarray(keep).reshape(n)
    if bool(((keep < 1) | (keep > 16)).any()):
        raise ValueError("keep must be 1..16 bytes")
    return np.broadcast_to((np.arange(16)[None, None, :] < keep[:, None, None]), (n, words, 16))


@dataclass
class Committed:
    """Client side of committed values: the values, their MACs M = K + x Delta, and the extra
    outputs T_e + x C_e of the extra correlations (None if there were none)."""

    values: np.ndarray  # (n,) uint64
    mac: U128  # (n,)
    extra: U128 | None  # (n, E)
    pads: np.ndarray | None = None  # (n, bits, 16) uint8: the random-OT keys of the value bits


@dataclass
class CommitKeys:
    """Server side of committed values: keys K and the extra pads T_e."""

    key: U128  # (n,)
    extra: U128 | None  # (n, E)
    pads: tuple[np.ndarray, np.ndarray] | None = None  # (m0, m1), each (n, bits, 16) uint8


def weighted_sum(a: U128, bits: int) -> U128:
    """sum_b 2^b a[:, b, ...] mod 2^128 for a (n, bits, ...) limb pair."""
    acc = (np.zeros_like(a[0][:, 0]), np.zeros_like(a[1][:, 0]))
    for b in range(bits):
        acc = u128.add(acc, u128.shl((a[0][:, b], a[1][:, b]), b))
    return acc


def commit(party: PartyContext, chooser: int, *, n: int, bits: int, values: np.ndarray | None = None,
           delta: np.uint64 | None = None, extra: U128 | None = None,
           n_extra: int = 0, keep_pads: bool = False, mac_bits: int = 128) -> Committed | CommitKeys:
    """Authenticate n client values of ``bits`` bits (1 <= bits <= 64), both roles.

    The client (``chooser``) passes ``values``; the server its ``delta`` and optionally ``extra``
    correlations (n, E) limb pairs, one row per value (the client passes ``n_extra`` = E).
    Steps: 1. the client's value bits (value-major, least significant first) are the choice bits
    of n * bits COTs (:func:`cot128`) with correlation words (Delta, extra[i, 0..E-1]);
    2. both sides weight output b by 2^b and sum per value: the client gets M_x = K_x + x Delta
    and T_e + x C_e, the server K_x and T_e.
    ``keep_pads``: also return the random-OT keys of the bits, for :func:`bound_lut`.
    ``mac_bits`` (both roles, protocol 29): the MACs and extra outputs are needed mod 2^mac_bits
    only (e.g. the check ring of :func:`check_congruent`, k + 64 bits): bit b's correction words
    then travel as their low ceil((mac_bits - b) / 8) bytes -- 2^b times a word known mod
    2^(mac_bits - b) is known mod 2^mac_bits -- and the outputs are right mod 2^mac_bits only.
    """
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    if not bits <= mac_bits <= 128:
        raise ValueError("mac_bits must be in [bits, 128]")
    keep = None
    if mac_bits < 128:
        per_bit = -(-(mac_bits - np.arange(bits)) // 8)  # bytes of bit b's words
        keep = np.tile(np.minimum(per_bit, 16), n)
    client = party.role == chooser
    E = n_extra if client else (0 if extra is None else extra[0].shape[1])
    words = 1 + E
    if client:
        v = _committed_values(values, n, bits)
        kept: list = []
        out = cot128(party, chooser, n=n * bits, words=words, choices=_bits_of(v, bits).ravel(), keep_pads=kept,
                     keep=keep)
    else:
        hi = np.zeros((n, words), dtype=U64)
        lo = np.zeros((n, words), dtype=U64)
        lo[:, 0] = delta
        if E:
            hi[:, 1:], lo[:, 1:] = extra
        corr = (np.repeat(hi, bits, axis=0), np.repeat(lo, bits, axis=0))
        kept = []
        out = cot128(party, chooser, n=n * bits, words=words, corr=corr, keep_pads=kept, keep=keep)
    per = weighted_sum((out[0].reshape(n, bits, words), out[1].reshape(n, bits, words)), bits)
    mac = (per[0][:, 0].copy(), per[1][:, 0].copy())
    ext = (per[0][:, 1:].copy(), per[1][:, 1:].copy()) if E else None
    if not keep_pads:
        return Committed(v, mac, ext) if client else CommitKeys(mac, ext)
    if client:
        return Committed(v, mac, ext, kept[0].reshape(n, bits, 16))
    return CommitKeys(mac, ext, (kept[0][0].reshape(n, bits, 16), kept[0][1].reshape(n, bits, 16)))


def _lut_lows(n: int, a: int) -> np.ndarray:
    """Base tweak words of :func:`bound_lut`'s n tables on bits [a, b): value i's bit a + j is
    i 2^8 + a + j -- distinct per value and bit within a call (bits < 2^8)."""
    return (np.arange(n, dtype=U64) << U64(8)) | U64(a)


def lut_sender_pads(pads, digit: tuple[int, int], *, w: int,
                    widths: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sender of :func:`bound_lut`: the pads of every entry of the n tables on ``digit`` (as
    bound_lut uses them: words (n, 2^m, w), or with ``widths`` the sent bytes (n, 2^m,
    sum(widths))) and entry 0's pad as words (n, w) -- for a caller whose tables depend on the
    entry-0 pads of several tables (``first_free``, protocol 37's split G tables); pass the pair
    back as bound_lut's ``sender_pads``."""
    nblk = (w + 1) // 2 if widths is None else -(-sum(widths) // 16)
    pad = _sender_pad_words(pads, digit, nblk)
    if widths is None:
        pad = pad[:, :, :w]
        return pad, np.ascontiguousarray(pad[:, 0])
    pad = _pad_bytes(pad, widths)
    return pad, _unpack_parts(np.ascontiguousarray(pad[:, 0]), widths, w)


def _sender_pad_words(pads, digit: tuple[int, int], nblk: int) -> np.ndarray:
    """The sender's tree pads of every entry as words (n, 2^m, 2 nblk) (:func:`lut_sender_pads`)."""
    a, b = digit
    m = b - a
    aes = _lut_aes()
    m0, m1 = pads
    n = m0.shape[0]
    p0 = aes.permute(np.ascontiguousarray(m0[:, a:b]).view(U64).reshape(n, m, 2))
    p1 = aes.permute(np.ascontiguousarray(m1[:, a:b]).view(U64).reshape(n, m, 2))
    return aes.tree_pads(p0, p1, _lut_lows(n, a), m, nblk)


def bound_lut(party: PartyContext, chooser: int, digit: tuple[int, int], *, pads,
              tables=None, values: np.ndarray | None = None, w: int = 1,
              widths: tuple[int, ...] | None = None, first_free: bool = False,
              sender_pads: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
    """1-out-of-2^m table OT whose index is a digit of a *committed* value, both roles.

    The index bits are not chosen anew: the m random OTs that committed bits [a, b) of each value
    (:func:`commit` with ``keep_pads``) are the table OT's OTs (since protocol 33 entry e is padded
    with the leaf of a binary tree over those OTs' keys, :meth:`FixedKeyAES.tree_pads`: ~2 hashes
    per entry; Naor-Pinkas' XOR_j H(key_{i,j,e_j}, tweak(i, j, e)) before, m per entry). The client holds one key per bit --
    the one its committed bit selects -- so it can open exactly the entry at its committed digit;
    a client that wants another entry gets a pseudorandom string. Nothing to check afterwards.
    Sender: ``tables`` uint64 (n, 2^m, w), ``pads`` = the commitment's (m0, m1); chooser:
    ``values`` (its committed values), ``pads`` its keys, ``w``; returns (n, w) uint64.
    The pads are derived under their own fixed AES key (domain separation from the OT engine)
    and the commitment's MAC words hash the same keys under another tweak (:func:`_expand`).

    ``widths`` (both roles, protocol 29): the w words of an entry are len(widths) parts of
    w / len(widths) words each, and part j travels as its low widths[j] bytes: the chooser gets
    every part mod 2^(8 widths[j]) (the bytes above are zero); the pads are then the first
    sum(widths) bytes of ceil(sum(widths) / 16) blocks per entry. ``first_free`` (both roles): entry 0
    is not sent -- its value is its own pad, so the sender passes ``tables`` as a function of that
    pad (n, w) returning the whole table (whose entry 0 must equal the pad in the sent bytes); the
    chooser at digit 0 takes its pad, at any other digit the sent entry. 2^m - 1 entries travel.
    ``sender_pads`` (sender): :func:`lut_sender_pads`' result for these ``pads``, digit, w and
    widths, when the caller needed entry 0's pad before it built ``tables``.
    """
    a, b = digit
    m = b - a
    aes = _lut_aes()
    size = 1 << m
    skip = 1 if first_free else 0
    if party.role != chooser and not callable(tables):
        w = tables.shape[2]
    # with widths, the pads cover only the bytes that travel: ceil(sum(widths) / 16) AES blocks
    nblk = (w + 1) // 2 if widths is None else -(-sum(widths) // 16)
    if party.role != chooser:
        n = pads[0].shape[0]
        if sender_pads is None and not callable(tables) and widths is not None and len(widths) == 1 and w == 1:
            # one part of one word (the client-malicious Laplacian's step 5: 2^15 entries x 6 bytes per
            # feature): XOR the words, then keep their low bytes -- the same bytes as packing the table
            # and the pad first (the pad's first widths[0] bytes are its first word's low bytes), two
            # passes over the 69 MB fewer
            if tables.shape[:2] != (n, size):
                raise ValueError("table size must be 2^(digit width)")
            ct = np.bitwise_xor(tables[:, skip:, :1], _sender_pad_words(pads, digit, nblk)[:, skip:, :1])
            party.ch.send_array(_pack_parts(ct, widths), owned=True)
            party.ch.flush()
            return None
        pad, pad0 = lut_sender_pads(pads, digit, w=w, widths=widths) if sender_pads is None else sender_pads
        if callable(tables):
            tables = tables(pad0)
        if tables.shape[:2] != (n, size):
            raise ValueError("table size must be 2^(digit width)")
        if widths is None:
            ct = np.ascontiguousarray(tables[:, skip:] ^ pad[:, skip:])
        else:
            ct = _pack_parts(np.ascontiguousarray(tables[:, skip:]), widths) ^ pad[:, skip:]
        party.ch.send_array(ct, owned=True)
        party.ch.flush()
        return None
    v = np.asarray(values, dtype=U64)
    n = v.shape[0]
    idx = ((v >> U64(a)) & U64(size - 1)).astype(np.intp)
    p = aes.permute(np.ascontiguousarray(pads[:, a:b]).view(U64).reshape(n, m, 2))
    pad = aes.tree_pads(p, None, _lut_lows(n, a), m, nblk, entries=idx)[:, 0]
    rows = np.arange(n)
    pick = np.maximum(idx - skip, 0)
    if widths is None:
        ct = party.ch.recv_array(U64, (n, size - skip, w))[rows, pick]
        pad = pad[:, :w]
    else:
        ct = party.ch.recv_array(np.uint8, (n, size - skip, sum(widths)))[rows, pick]
        pad = _pad_bytes(pad[:, None], widths)[:, 0]
    if skip:
        ct = np.where((idx == 0)[:, None], np.zeros((), ct.dtype), ct)  # entry 0: the pad alone
    return ct ^ pad if widths is None else _unpack_parts(ct ^ pad, widths, w)


def _pad_bytes(pad: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """(n, e, 2 nblk) pad words -> their first sum(widths) bytes (n, e, sum(widths))."""
    n, e, k = pad.shape
    raw = np.ascontiguousarray(pad.astype("<u8", copy=False)).view(np.uint8).reshape(n, e, 8 * k)
    return np.ascontiguousarray(raw[:, :, :sum(widths)])


def _part_bytes(widths: tuple[int, ...], w: int) -> int:
    if w % len(widths) or any(not 1 <= x <= 8 * (w // len(widths)) for x in widths):
        raise ValueError("widths must split the entry's words evenly and fit their parts")
    return 8 * (w // len(widths))


def _pack_parts(ct: np.ndarray, widths: tuple[int, ...] | None) -> np.ndarray:
    """Sender: (n, e, w) words -> the bytes on the wire, each part's low widths[j] bytes."""
    if widths is None:
        return np.ascontiguousarray(ct)
    n, e, w = ct.shape
    pb = _part_bytes(widths, w)
    raw = np.ascontiguousarray(ct.astype("<u8", copy=False)).view(np.uint8).reshape(n, e, len(widths), pb)
    return np.ascontiguousarray(np.concatenate([raw[:, :, j, :x] for j, x in enumerate(widths)], axis=-1))


def _unpack_parts(raw: np.ndarray, widths: tuple[int, ...], w: int) -> np.ndarray:
    """Chooser: (n, sum(widths)) bytes -> (n, w) words, the missing high bytes zero."""
    n = raw.shape[0]
    pb = _part_bytes(widths, w)
    out = np.zeros((n, len(widths), pb), dtype=np.uint8)
    off = 0
    for j, x in enumerate(widths):
        out[:, j, :x] = raw[:, off:off + x]
        off += x
    return out.reshape(n, len(widths) * pb).view("<u8").astype(U64, copy=False)


def combine(coef: np.ndarray, a: U128) -> U128:
    """sum_i coef[l, i] * a[i] mod 2^128 for binary (0/1) coefficients (L, n): (L,) limb pair."""
    m = (U64(0) - np.asarray(coef, dtype=U64))  # all-ones where the coefficient is 1
    return u128.total((m & a[0][None, :], m & a[1][None, :]), axis=1)


def check_congruent(party: PartyContext, chooser: int, k_bits: int, *, delta: np.uint64 | None = None,
                    Z: U128 | None = None, MZ: U128 | None = None, KZ: U128 | None = None,
                    C: U128 | None = None, n: int, ring_bits: int | None = None) -> None:
    """Check n authenticated client values Z (MACs MZ, server keys KZ) against Z = C (mod 2^k).

    Client (``chooser``): ``Z``, ``MZ``; server: ``delta``, ``KZ``, ``C``. Raises
    :class:`MacCheckError` on the server if any check fails (the caller aborts the session before
    it releases anything that depends on the checked values). The check ring is
    2^R, R = min(k + 64, 128), or ``ring_bits`` (both roles; k < R <= min(k + 64, 128): the MACs
    need to be right mod 2^R only): a forgery needs min(64, R - k) bits of Delta (k <= 96). Steps:
      1. the client commits n fresh masks r_l, uniform in [0, 2^(R-k)) (:func:`commit`);
      2. it sends Y = Z + 2^k r and MY = MZ + 2^k M_r, both mod 2^R (32 bytes per value);
      3. the server checks Y = C (mod 2^k) and MY = KZ + 2^k K_r + Y Delta (mod 2^R).
    """
    if not 1 <= k_bits <= 96:
        raise ValueError("k_bits must be in [1, 96]")
    ring = min(k_bits + DELTA_BITS, 128) if ring_bits is None else ring_bits
    if not k_bits < ring <= min(k_bits + DELTA_BITS, 128):
        raise ValueError("ring_bits must be in (k_bits, min(k_bits + 64, 128)]")
    rbits = ring - k_bits
    if party.role == chooser:
        r = party.rng.random_u64(n)
        if rbits < 64:
            r &= U64((1 << rbits) - 1)
        cr = commit(party, chooser, n=n, bits=rbits, values=r)
        Y = u128.mask_bits(u128.add(Z, u128.shl((np.zeros(n, U64), r), k_bits)), ring)
        MY = u128.mask_bits(u128.add(MZ, u128.shl(cr.mac, k_bits)), ring)
        party.ch.send_array(np.stack([u128.to_bytes(Y), u128.to_bytes(MY)]), owned=True)
        party.ch.flush()
        return None
    kr = commit(party, chooser, n=n, bits=rbits, delta=delta)
    got = party.ch.recv_array(np.uint8, (2, n, 16))
    Y, MY = u128.from_bytes16(got[0]), u128.from_bytes16(got[1])
    low = u128.mask_bits(u128.sub(Y, C), k_bits)
    want = u128.mask_bits(u128.add(u128.add(KZ, u128.shl(kr.key, k_bits)), u128.mul_small(Y, delta)), ring)
    ok = (low[0] == 0) & (low[1] == 0) & (want[0] == MY[0]) & (want[1] == MY[1])
    ok &= (u128.mask_bits(Y, ring)[0] == Y[0]) & (u128.mask_bits(MY, ring)[0] == MY[0])
    if not bool(ok.all()):
        raise MacCheckError("authenticated client values failed their check: a deviating client, session aborted")
    return None
