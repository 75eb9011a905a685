"""Binary IT-MACs from the OT engines' correlated OTs, an authenticated random OT, and a batched
QuickSilver check of degree-2 relations, in three GF(2^16) slots (client = prover, server = verifier).

Threat model: the *server* (OT sender, verifier) is semi-honest; the *client* (the ``chooser``: OT
receiver, prover) may deviate arbitrarily. Building block of the bound Laplacian chain
(:mod:`protocols.krr.bound_chain`; docs/malicious.md, "The Laplacian kernel, bound chain").

Committed bits (:func:`commit_bits`).  The client's bit z_i is the *chosen* choice bit of one raw
COT of the engine in which the client chooses (``party.ot_receiver`` on the client, ``party.ot_sender``
on the server: the checked IKNP / SoftSpoken extension, or the silent engine whose chosen bit costs
one derandomisation bit d = z ^ r; :meth:`protocols.ot.iknp.OTExtensionReceiver.raw_cots`). The
server holds the engine's global Delta and the row q_i, the client t_i = q_i ^ z_i Delta (128-bit
strings). Bits 16..63 of these strings, read as three 16-bit words, are three IT-MACs over
GF(2^16) = GF(2)[X] / (X^16 + X^12 + X^3 + X + 1):

    slot s (s = 0, 1, 2):   M_i[s] = K_i[s] ^ z_i Delta[s]        (K = key: server, M = MAC: client)

(Delta's slot words are three independent uniform elements: bits 16..63 are random in every engine;
the silent engine fixes bit 0 only.) Linear combinations with public GF(2^16) coefficients are local
(client: MACs; server: keys); a public constant c has MAC 0 and key c Delta.

Random OT on the same COT.  pad_b = H(q_i ^ b Delta, i) (16 bytes): the server has both, the client
pad_{z_i} = H(t_i, i). H is the TCCR hash of Guo, Katz, Wang, Yu (S&P 2020), ``H(x, i) = pi(pi(x) ^
(i, tag)) ^ pi(x)`` with pi fixed-key AES under ``derive_key(b"secureml/gf2-auth", session digest of
the engine)`` (:meth:`~protocols.ot.crypto.FixedKeyAES.tccr`), i the engine's OT index of the COT
(unique within the engine) and tag :data:`_HASH_TAG`. Why it is safe with a global Delta: the pads
the client must not learn are H(t_i ^ Delta, i) for strings t_i it knows (or, deviating, chose
through its choice bits), with every tweak i used once -- exactly the TCCR game, in which
x -> H(x ^ Delta, i) looks random while Delta is hidden (random-permutation model). The AES key is
used by nothing else (the engines hash under ``secureml-fkaes`` / ``secureml-ot-ccr`` keys), so no
(input, tweak) of ours meets an engine hash, and it is fresh per session (no precomputation). The
hash reads all 128 bits, so the 80 bits of Delta outside the MAC slots protect the pads too.

Authenticated random OT (:func:`auth_random_ot`).  m_b = bit 0 of pad_b, L_b = bits 1..48 of pad_b as
three 16-bit slots. The server sends D = L0 ^ L1 ^ (m0 ^ m1) Delta (6 bytes per element) and keeps
key_w = L0 ^ m0 Delta; the client outputs w = m_z and mac_w = L_z ^ z D. Then mac_w = key_w ^ w Delta
in every slot (z = 0: L0; z = 1: L1 ^ D = L0 ^ (m0 ^ m1) Delta). So the client's random-OT output is a
committed bit under the same Delta: lying about it is a MAC forgery. The client learns
D ^ L_z = L_{1-z} ^ (m0 ^ m1) Delta: one-time padded by L_{1-z}, bits of the hash of the string
t ^ Delta it lacks (pseudorandom as above, and disjoint from m_{1-z}, bit 0): nothing about m_{1-z}
or Delta. Bits 49..127 of the pads are not used here (free for the caller, e.g. as table-OT keys,
under a domain of its own).

QuickSilver check of degree-2 relations (:class:`Prover`, :class:`Verifier`; Yang, Sarkar, Weng,
Wang, "QuickSilver", CCS 2021), in characteristic 2 (K = M ^ z Delta). For relations
x_i y_i + l_i = 0 with l_i linear in committed values, and chi_i uniform in GF(2^16) drawn by the
server after every value is committed (:func:`chi_seed`, :func:`expand_chi`), per slot:

    B = sum chi_i (K_xi K_yi + K_li Delta) = A0 + A1 Delta + e Delta^2,
    A0 = sum chi_i M_xi M_yi,   A1 = sum chi_i (x_i M_yi + y_i M_xi + M_li),   e = sum chi_i (x_i y_i + l_i),

so an honest prover has B = A0 + A1 Delta. The prover masks with a committed random r (16 committed
bits, r = sum_t r_t X^t, M_r = sum_t X^t M_rt, K_r = M_r + r Delta) and sends U = A0 + M_r,
V = A1 + r; the verifier accepts iff B + K_r = U + V Delta. Soundness per slot: if some relation is
false, e = 0 with probability at most 2^-16 over chi; otherwise acceptance needs Delta to be a root
of the non-zero polynomial e T^2 + (A1 + r + V) T + (A0 + M_r + U) in T (the prover chooses U, V
knowing everything but Delta), at most 2 of 2^16 values: <= 3/2^16 per slot; the three slots have
independent chi and Delta, so <= (3/2^16)^3 = 2^-43.2 for a batch (the mask may be committed after
chi: its MAC equation already binds r before U, V are sent). A checked engine lets a deviating client
try to learn k bits of Delta at an abort probability 1 - 2^-k (the KOS trade-off,
:mod:`protocols.ot.consistency`); each known slot bit at most doubles that slot's 2/2^16 term, so
the product of the two stays below the bound.

What each party learns.  Server: the engine's messages (independent of the choice bits: the engine's
argument), and U, V: V = A1 + r is uniform (r uniform, committed, never opened) and U = B + K_r + V
Delta is then fixed by what the server holds -- nothing about the witness. Client: its MACs (the
engine's COT outputs), D (one-time padded, above) and 32 bytes of chi seed. Messages: per committed
bit, the engine's (below); auth_random_ot 6 bytes per element (server -> client); a QuickSilver batch
48 committed bits, the 32-byte seed (server -> client) and 12 bytes (client -> server).

Measured (``nice python -m bench.gf2_auth_cost --out docs/malicious/gf2auth/cost.json``: both parties
as threads of one process, n = 2^22 committed bits per engine after set-up, 2 shared cores at 1-minute
load 0.85-1.35). Bytes are exact; CPU (thread time, faster of two runs) varied ~2x between runs:
  * bytes per committed bit, both directions: checked IKNP 16.016 (128-bit column, plus 128 padding
    OTs and a 32-byte proof per 2^17-OT piece); checked SoftSpoken k = 4 (the exact kernels' engine)
    4.005; silent (b11) 0.211 = 1.69 bits (the 1-bit derandomisation + 0.69 bits of iteration flights);
  * CPU per 1M committed bits with pads: 0.08-0.34 s server, 0.09-0.29 s client (MACs only,
    ``pads=False``: 0.06-0.09 s each); auth_random_ot 6.000 bytes per element, 0.04-0.21 s server,
    0.02-0.10 s client per 1M;
  * QuickSilver per 1M products (3 slots, single thread, median of 5, alone beside the other agents):
    prover ``add_products`` 0.047-0.050 s, verifier 0.026-0.028 s, ``weighted`` 0.019-0.020 s.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.mpc.authenticated import MacCheckError
from protocols.mpc.context import PartyContext
from protocols.ot.crypto import FixedKeyAES, derive_key
from secureml.errors import ProtocolError

__all__ = [
    "SLOTS",
    "POLY",
    "CHI_SEED_BYTES",
    "ClientBits",
    "ServerBits",
    "QuickSilverCheckError",
    "commit_bits",
    "auth_random_ot",
    "gf_mul",
    "gf_mul_slow",
    "expand_chi",
    "chi_seed",
    "weighted",
    "Prover",
    "Verifier",
]

U16 = np.uint16
U64 = np.uint64
#: independent GF(2^16) MAC slots: uint16 words 1..3 (bits 16..63) of a 128-bit COT row
SLOTS = 3
_SLOT_WORDS = slice(1, 1 + SLOTS)
#: X^16 + X^12 + X^3 + X + 1 (primitive: X generates the multiplicative group)
POLY = 0x1100B
_ORDER = 65535
#: log of 0: any sum of up to three logs with a zero among them lands at or above it (EXP is 0 there)
_ZERO = 3 * _ORDER
#: tweak domain (high word) of the pad hash (its AES key is ours alone; the tag is a second guard)
_HASH_TAG = 0x6A
_KEY_TAG = b"secureml/gf2-auth"
_CHI_TAG = b"secureml/gf2chi"  # distinct from _KEY_TAG in 16 bytes too (test_key_separation)
#: bytes of the server's chi seed
CHI_SEED_BYTES = 32
#: COTs per raw_cots call in commit_bits (bounds the rows and the hash temporaries held at once)
_COMMIT_CHUNK = 1 << 20
#: rows per block of the GF(2^16) sums (int32 temporaries stay in L2)
_BLOCK = 1 << 15
#: committed mask bits of one QuickSilver proof: 16 per slot
MASK_BITS = 16 * SLOTS


class QuickSilverCheckError(MacCheckError):
    """The client's batched degree-2 relations failed their QuickSilver check: abort."""


# ------------------------------------------------------------------------------------------------
# GF(2^16)
# ------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """LOG (65536,) int32 with LOG[0] = _ZERO; EXP (3 _ZERO + 1,) uint16 with EXP[i] = X^(i mod 65535)
    below _ZERO and 0 from there on: EXP[LOG[a] + LOG[b] (+ LOG[c])] is the product, 0 if a factor is
    0, with no branch."""
    exp = np.empty(_ORDER, dtype=np.int64)
    x = 1
    for i in range(_ORDER):  # one-off, 65,535 steps (~10 ms)
        exp[i] = x
        x <<= 1
        if x & 0x10000:
            x ^= POLY
    if x != 1 or np.unique(exp).size != _ORDER:  # X has order 65535: POLY is primitive
        raise AssertionError("GF(2^16) modulus is not primitive")
    log = np.zeros(65536, dtype=np.int32)
    log[exp] = np.arange(_ORDER, dtype=np.int32)
    log[0] = _ZERO
    table = np.zeros(3 * _ZERO + 1, dtype=U16)
    table[: 3 * _ORDER] = np.tile(exp, 3).astype(U16)
    return log, table


def gf_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise GF(2^16) product of uint16 arrays (broadcasting), by log / antilog tables."""
    log, exp = _tables()
    return exp[log[np.asarray(a, dtype=U16)] + log[np.asarray(b, dtype=U16)]]


def gf_mul_slow(a: int, b: int) -> int:
    """Reference product: carry-less multiply, then reduction mod :data:`POLY` (tests)."""
    p = 0
    for i in range(16):
        if (b >> i) & 1:
            p ^= a << i
    for i in range(30, 15, -1):
        if (p >> i) & 1:
            p ^= POLY << (i - 16)
    return p


def _xorsum(v: np.ndarray) -> np.ndarray:
    """XOR of the rows of v (k, SLOTS) uint16 -> (SLOTS,) uint16, with long inner loops: the flat
    array as rows of 768 uint16 (a multiple of SLOTS, so every column keeps its slot), reduced as
    192 uint64 words per row, then the 256 x SLOTS remainder (an axis-0 reduce of a (k, 3) array
    runs a 3-long inner loop per row: ~35x slower)."""
    flat = np.ascontiguousarray(v).reshape(-1)
    m = flat.size - flat.size % 768
    out = np.bitwise_xor.reduce(flat[m:].reshape(-1, SLOTS), axis=0) if m < flat.size else np.zeros(SLOTS, U16)
    if m:
        wide = np.bitwise_xor.reduce(flat[:m].view(U64).reshape(-1, 192), axis=0)
        out ^= np.bitwise_xor.reduce(wide.view(U16).reshape(-1, SLOTS), axis=0)
    return out


def _mask(bits: np.ndarray) -> np.ndarray:
    """0/1 (k,) -> 0x0000 / 0xFFFF (k, 1) uint16 (a bit times a field element, as an AND)."""
    return (U16(0) - np.asarray(bits, dtype=U16))[:, None]


def _check_slots(name: str, a: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != (n, SLOTS) or a.dtype != U16:
        raise ValueError(f"{name} must be uint16 of shape ({n}, {SLOTS})")
    return a


def _check_bits(name: str, a: np.ndarray, n: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (n is not None and a.shape[0] != n) or (a.size and a.dtype.kind not in "biu"):
        raise ValueError(f"{name} must be a 1-D array of {n if n is not None else 'n'} bits")
    a = a.astype(np.uint8, copy=False)
    if a.size and int(a.max()) > 1:
        raise ValueError(f"{name} must be bits")
    return a


def weighted(chi: np.ndarray, mac: np.ndarray) -> np.ndarray:
    """sum_i chi_i mac_i per slot (XOR of GF(2^16) products): (n, SLOTS), (n, SLOTS) -> (SLOTS,) uint16.
    The same linear map on MACs (client) and keys (server)."""
    chi = np.asarray(chi, dtype=U16)
    mac = _check_slots("mac", mac, chi.shape[0])
    log, exp = _tables()
    out = np.zeros(SLOTS, dtype=U16)
    for a in range(0, chi.shape[0], _BLOCK):
        out ^= _xorsum(exp[log[chi[a : a + _BLOCK]] + log[mac[a : a + _BLOCK]]])
    return out


# ------------------------------------------------------------------------------------------------
# committed bits and the authenticated random OT
# ------------------------------------------------------------------------------------------------

@dataclass
class ClientBits:
    """Client (prover): committed bits (n,) uint8, their MACs (n, SLOTS) uint16 and the random-OT pad
    of its choice (n, 16) uint8 (pad = H(t, i); None if committed with ``pads=False``)."""

    bits: np.ndarray
    mac: np.ndarray
    pad: np.ndarray | None


@dataclass
class ServerBits:
    """Server (verifier): keys (n, SLOTS) uint16, Delta's slots (SLOTS,) uint16 and both random-OT
    pads (pad_0, pad_1), each (n, 16) uint8, pad_b = H(q ^ b Delta, i) (None with ``pads=False``)."""

    key: np.ndarray
    delta: np.ndarray
    pads: tuple[np.ndarray, np.ndarray] | None


def _slots(rows: np.ndarray) -> np.ndarray:
    """Bits 16..63 of 128-bit rows (k, 2) uint64 as (k, SLOTS) uint16 (little endian words 1..3)."""
    return rows.view(U16).reshape(rows.shape[0], 8)[:, _SLOT_WORDS]


def _pad_hash(engine) -> FixedKeyAES:
    return FixedKeyAES(derive_key(_KEY_TAG, engine.session_digest))


def commit_bits(party: PartyContext, chooser: int, *, n: int, bits: np.ndarray | None = None,
                pads: bool = True) -> ClientBits | ServerBits:
    """Commit the chooser's ``bits`` (n,) (client only): one raw COT each, with the bit as its chosen
    choice bit, on the engine in which the client chooses; returns :class:`ClientBits` (client) or
    :class:`ServerBits` (server). Messages: the engine's alone (no payload of ours). ``pads=False``
    (both parties alike) skips the random-OT pads (``pad`` / ``pads`` are then None): for bits that
    are only MACed, half the server's CPU (the two TCCR hashes per COT)."""
    n = int(n)
    if party.role == chooser:
        z = _check_bits("bits", bits, n)
        eng = party.ot_receiver
        mac = np.empty((n, SLOTS), dtype=U16)
        pad = np.empty((n, 16), dtype=np.uint8) if pads else None
        for a in range(0, max(n, 1), _COMMIT_CHUNK):  # n == 0: one empty call (sets the engine up)
            t, first = eng.raw_cots(z[a : a + _COMMIT_CHUNK])
            mac[a : a + t.shape[0]] = _slots(t)
            if pad is not None:
                _pad_hash(eng).tccr_block(t, first, _HASH_TAG, out=pad[a : a + t.shape[0]].view(U64))
        return ClientBits(z.copy(), mac, pad)
    eng = party.ot_sender
    key = np.empty((n, SLOTS), dtype=U16)
    p0 = np.empty((n, 16), dtype=np.uint8) if pads else None
    p1 = np.empty((n, 16), dtype=np.uint8) if pads else None
    delta = np.zeros(2, dtype=U64)
    for a in range(0, max(n, 1), _COMMIT_CHUNK):  # n == 0: one empty call (sets the engine up)
        k = min(_COMMIT_CHUNK, n - a)
        q, delta, first = eng.raw_cots(k)
        key[a : a + k] = _slots(q)
        if p0 is not None and p1 is not None:
            aes = _pad_hash(eng)
            aes.tccr_block(q, first, _HASH_TAG, out=p0[a : a + k].view(U64))
            aes.tccr_block(q, first, _HASH_TAG, xor=delta, out=p1[a : a + k].view(U64))
    dslots = _slots(np.asarray(delta, dtype=U64).reshape(1, 2))[0].copy()
    return ServerBits(key, dslots, None if p0 is None or p1 is None else (p0, p1))


def _ot_parts(pad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, L): bit 0 of each pad (n,) uint8 and bits 1..48 as (n, SLOTS) uint16."""
    m = np.empty(pad.shape[0], dtype=np.uint8)
    L = np.empty((pad.shape[0], SLOTS), dtype=U16)
    for a in range(0, pad.shape[0], _PARTS_ROWS):
        _ot_parts_into(pad[a : a + _PARTS_ROWS], m[a : a + _PARTS_ROWS], L[a : a + _PARTS_ROWS])
    return m, L


def _ot_parts_into(pad: np.ndarray, m: np.ndarray, L: np.ndarray) -> None:
    """:func:`_ot_parts` of a piece of rows into the given outputs (cache-sized temporaries)."""
    w0 = np.ascontiguousarray(pad).view(U64).reshape(pad.shape[0], 2)[:, 0]
    np.bitwise_and(w0, U64(1), out=m, casting="unsafe")
    L[...] = (w0 >> U64(1)).view(U16).reshape(-1, 4)[:, :SLOTS]


#: rows per piece of the random-OT parts (auth_random_ot)
_PARTS_ROWS = 1 << 15


def auth_random_ot(party: PartyContext, chooser: int, committed: ClientBits | ServerBits):
    """Authenticated random OT on committed bits z (module docstring). Client: (w (n,) uint8,
    mac_w (n, SLOTS) uint16), w = m_z; server: (m0 (n,) uint8, m1 (n,) uint8, key_w (n, SLOTS)
    uint16), with mac_w = key_w ^ w Delta. One flight: D, 6 bytes per element, server -> client.
    Both sides work in pieces of _PARTS_ROWS rows (no element-sized temporaries)."""
    if party.role == chooser:
        if not isinstance(committed, ClientBits) or committed.pad is None:
            raise ValueError("auth_random_ot needs the client's ClientBits with pads")
        n = committed.bits.shape[0]
        w, L = _ot_parts(committed.pad)
        D = party.ch.recv_array(U16, (n, SLOTS))
        for a in range(0, n, _PARTS_ROWS):
            b = slice(a, a + _PARTS_ROWS)
            L[b] ^= D[b] & _mask(committed.bits[b])
        return w, L
    if not isinstance(committed, ServerBits) or committed.pads is None:
        raise ValueError("auth_random_ot needs the server's ServerBits with pads")
    p0, p1 = committed.pads
    n = p0.shape[0]
    delta = committed.delta[None, :]
    m0, m1 = np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.uint8)
    key_w = np.empty((n, SLOTS), dtype=U16)
    D = np.empty((n, SLOTS), dtype=U16)
    L1 = np.empty((min(n, _PARTS_ROWS), SLOTS), dtype=U16)
    for a in range(0, n, _PARTS_ROWS):
        b = slice(a, a + _PARTS_ROWS)
        k = min(_PARTS_ROWS, n - a)
        L0, l1 = key_w[b], L1[:k]
        _ot_parts_into(p0[b], m0[b], L0)
        _ot_parts_into(p1[b], m1[b], l1)
        np.bitwise_xor(L0, l1, out=D[b])  # D = L0 ^ L1 ^ (m0 ^ m1) Delta
        D[b] ^= _mask(m0[b] ^ m1[b]) & delta
        L0 ^= _mask(m0[b]) & delta  # key_w = L0 ^ m0 Delta
    party.ch.send_array(D, owned=True)
    party.ch.flush()
    return m0, m1, key_w


# ------------------------------------------------------------------------------------------------
# the challenge and the QuickSilver check
# ------------------------------------------------------------------------------------------------

def expand_chi(seed: bytes, n: int, start: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """chi (n, SLOTS) uint16, uniform, from the server's 32-byte seed (both parties): the AES-CTR
    stream keyed by ``derive_key(b"secureml/gf2chi", seed)`` (:class:`~protocols.mpc.randomness.
    SecureRandom`'s stream: counter from 0), two bytes per element. ``start``: the elements
    start .. start + n - 1 of that stream (the counter set to the block holding element ``start``),
    so a caller can draw a long challenge piece by piece; ``out``: a (n, SLOTS) uint16 buffer to
    fill (reused between pieces). Written in pieces of _CHI_PIECE bytes from one zero buffer: no
    stream-sized temporaries (fresh pages are slow to fault in)."""
    if len(seed) != CHI_SEED_BYTES:
        raise ProtocolError("chi seed of the wrong length")
    n, start = int(n), int(start)
    if out is None:
        out = np.empty((n, SLOTS), dtype=U16)
    elif out.shape != (n, SLOTS) or out.dtype != U16 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint16 of shape ({n}, {SLOTS})")
    first = 2 * SLOTS * start  # byte offset in the stream
    enc = Cipher(algorithms.AES(derive_key(_CHI_TAG, bytes(seed))),
                 modes.CTR((first // 16).to_bytes(16, "big"))).encryptor()
    skip = first % 16
    if skip:
        enc.update(bytes(skip))
    dst = out.reshape(-1).view(np.uint8)  # little-endian words: bytes in stream order
    zero = _zero_piece()
    piece = bytearray(_CHI_PIECE + 16)  # update_into needs a block of slack
    for a in range(0, dst.size, _CHI_PIECE):
        k = min(_CHI_PIECE, dst.size - a)
        enc.update_into(zero[:k] if k < _CHI_PIECE else zero, piece)
        dst[a : a + k] = np.frombuffer(piece, dtype=np.uint8, count=k)
    return out


#: bytes of the chi stream per AES call (expand_chi)
_CHI_PIECE = 1 << 20


@lru_cache(maxsize=1)
def _zero_piece() -> bytes:
    return bytes(_CHI_PIECE)


def chi_seed(party: PartyContext, chooser: int) -> bytes:
    """The server draws the chi seed (after every value to be checked is committed) and sends it;
    both return it (32 bytes, server -> client)."""
    if party.role == chooser:
        return party.ch.recv_array(np.uint8, (CHI_SEED_BYTES,)).tobytes()
    seed = party.rng.random_bytes(CHI_SEED_BYTES)
    party.ch.send_array(np.frombuffer(seed, dtype=np.uint8))
    party.ch.flush()
    return seed


def _field_of_bits(per_bit: np.ndarray) -> np.ndarray:
    """(MASK_BITS, SLOTS) MACs or keys of the mask bits r_(s,t) (bit t of slot s at row 16 s + t) ->
    (SLOTS,) sum_t X^t (slot s's word of row 16 s + t): the MAC / key of the field element r_s."""
    out = np.zeros(SLOTS, dtype=U16)
    powers = (U16(1) << np.arange(16, dtype=U16))
    for s in range(SLOTS):  # 3 x 16 products, once per proof
        out[s] = np.bitwise_xor.reduce(gf_mul(per_bit[16 * s : 16 * s + 16, s], powers))
    return out


class Prover:
    """Client side of one batched QuickSilver proof: accumulate, then :meth:`finish` once."""

    def __init__(self) -> None:
        self.A0 = np.zeros(SLOTS, dtype=U16)
        self.A1 = np.zeros(SLOTS, dtype=U16)
        self._done = False

    def add_products(self, chi: np.ndarray, x: np.ndarray, mx: np.ndarray, y: np.ndarray, my: np.ndarray,
                     lin: np.ndarray | None = None, y_coef: np.ndarray | None = None) -> None:
        """Relations' product terms x_i y_i: A0 += sum chi M_x M_y, A1 += sum chi (x M_y + y M_x).
        With ``lin`` (n, SLOTS) MACs of linear terms l_i and ``y_coef`` (SLOTS,) a public c, the
        relations x_i y_i + l_i + c y_i = 0 in the same pass: A1 also += sum chi (M_l + c M_y)
        (= :meth:`add_linear` of ``weighted(chi, lin) ^ c weighted(chi, my)``, sharing the lookups)."""
        chi = np.asarray(chi, dtype=U16)
        n = chi.shape[0]
        _check_slots("chi", chi, n)
        mx, my = _check_slots("mx", mx, n), _check_slots("my", my, n)
        x, y = _check_bits("x", x, n), _check_bits("y", y, n)
        if lin is not None:
            lin = _check_slots("lin", lin, n)
        log, exp = _tables()
        ysum = np.zeros(SLOTS, dtype=U16)
        for a in range(0, n, _BLOCK):
            b = slice(a, a + _BLOCK)
            lc = log[chi[b]]
            lcy = lc + log[my[b]]
            self.A0 ^= _xorsum(exp[lcy + log[mx[b]]])
            if y_coef is not None:
                ysum ^= _xorsum(exp[lcy])
            t = my[b] & _mask(x[b])
            t ^= mx[b] & _mask(y[b])
            if lin is not None:
                t ^= lin[b]
            self.A1 ^= _xorsum(exp[lc + log[t]])
        if y_coef is not None:
            self.A1 ^= gf_mul(np.asarray(y_coef, dtype=U16).reshape(SLOTS), ysum)

    def add_linear(self, mac_sum: np.ndarray) -> None:
        """A1 += mac_sum: the caller's chi-weighted MACs of the relations' linear terms (:func:`weighted`)."""
        self.A1 ^= np.asarray(mac_sum, dtype=U16).reshape(SLOTS)

    def finish(self, party: PartyContext, chooser: int) -> None:
        """Commit a random mask r (MASK_BITS bits) and send (U, V) = (A0 + M_r, A1 + r), 12 bytes."""
        if self._done:
            raise RuntimeError("a QuickSilver proof is finished once")
        self._done = True
        bits = party.rng.random_bits(MASK_BITS).astype(np.uint8)
        cb = commit_bits(party, chooser, n=MASK_BITS, bits=bits, pads=False)
        r = (bits.reshape(SLOTS, 16).astype(U16) << np.arange(16, dtype=U16)[None, :]).sum(axis=1, dtype=U16)
        msg = np.concatenate([self.A0 ^ _field_of_bits(cb.mac), self.A1 ^ r])
        party.ch.send_array(msg.astype("<u2"))
        party.ch.flush()


class Verifier:
    """Server side of one batched QuickSilver proof under Delta's slots ``delta`` (SLOTS,) uint16."""

    def __init__(self, delta: np.ndarray) -> None:
        self.delta = np.asarray(delta, dtype=U16).reshape(SLOTS).copy()
        self.B = np.zeros(SLOTS, dtype=U16)
        self._done = False

    def add_products(self, chi: np.ndarray, kx: np.ndarray, ky: np.ndarray, lin: np.ndarray | None = None,
                     y_coef: np.ndarray | None = None) -> None:
        """B += sum chi K_x K_y (the product terms' keys). With ``lin`` (keys of linear terms) and
        ``y_coef`` c, as :meth:`Prover.add_products`: also B += (sum chi (K_l + c K_y)) Delta."""
        chi = np.asarray(chi, dtype=U16)
        n = chi.shape[0]
        _check_slots("chi", chi, n)
        kx, ky = _check_slots("kx", kx, n), _check_slots("ky", ky, n)
        if lin is not None:
            lin = _check_slots("lin", lin, n)
        log, exp = _tables()
        lsum = np.zeros(SLOTS, dtype=U16)
        ysum = np.zeros(SLOTS, dtype=U16)
        for a in range(0, n, _BLOCK):
            b = slice(a, a + _BLOCK)
            lc = log[chi[b]]
            lcy = lc + log[ky[b]]
            self.B ^= _xorsum(exp[lcy + log[kx[b]]])
            if y_coef is not None:
                ysum ^= _xorsum(exp[lcy])
            if lin is not None:
                lsum ^= _xorsum(exp[lc + log[lin[b]]])
        if y_coef is not None:
            lsum ^= gf_mul(np.asarray(y_coef, dtype=U16).reshape(SLOTS), ysum)
        if lin is not None or y_coef is not None:
            self.add_linear(lsum)

    def add_linear(self, key_sum: np.ndarray) -> None:
        """B += key_sum Delta: the chi-weighted keys of the linear terms (a public constant c counts
        with key c Delta, MAC 0)."""
        self.B ^= gf_mul(np.asarray(key_sum, dtype=U16).reshape(SLOTS), self.delta)

    def finish(self, party: PartyContext, chooser: int) -> None:
        """Receive (U, V); accept iff B + K_r = U + V Delta in every slot, else raise
        :class:`QuickSilverCheckError` (the caller aborts before releasing anything checked here)."""
        if self._done:
            raise RuntimeError("a QuickSilver proof is finished once")
        self._done = True
        cb = commit_bits(party, chooser, n=MASK_BITS, pads=False)
        if not np.array_equal(np.asarray(cb.delta, dtype=U16), self.delta):
            raise ValueError("the Verifier's Delta is not the engine's")
        msg = party.ch.recv_array(np.dtype("<u2"), (2 * SLOTS,)).astype(U16)
        U, V = msg[:SLOTS], msg[SLOTS:]
        if not np.array_equal(self.B ^ _field_of_bits(cb.key), U ^ gf_mul(V, self.delta)):
            raise QuickSilverCheckError("the client's committed relations failed their check: session aborted")
