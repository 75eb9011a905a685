"""Silent correlated OT (Ferret-style, semi-honest): COTs whose extension costs well under a bit each.

Yang, Weng, Lan, Zhang, Wang, "Ferret: Fast Extension for coRRElated oT with small communication",
CCS 2020 (ePrint 2020/924), the semi-honest protocol; written from the paper, no code taken.

Output: the correlation of :mod:`protocols.ot.iknp` and :mod:`protocols.ot.softspoken`,
``q_i = t_i ^ r_i * Delta`` (128-bit rows; the sender holds q and Delta, the receiver t and r), so
every derived operation of :class:`~protocols.ot.iknp.OTExtensionSender` -- random OT, COT with
corrections, chosen-message OT, table OT, :func:`protocols.ot.softspoken.cot_send_many` -- runs on
top unchanged: :class:`FerretSender` / :class:`FerretReceiver` are drop-in subclasses.  Random COTs
(random r) cost no message at all (:meth:`FerretSender.random_cots`); a chosen choice bit costs one
bit (Beaver's derandomisation ``d = c ^ r``, as for the IKNP engines' precomputed pool).

Convention: bit 0 of Delta is 1 and bit 0 of every sender row is 0, so bit 0 of the receiver's row
*is* its choice bit (``r_i = t_i & 1``): the LPN step below then moves choice bits and strings in
one gather.  (Delta keeps 127 random bits.)

Primal LPN with regular noise, parameters (n, k, t, h): n = t * 2^h outputs per iteration from k + t*h
COTs, which the iteration's own output refills (the first k + t*h outputs are reserved):

  set-up (once per engine):
    S1. SoftSpoken OT extension (:mod:`protocols.ot.softspoken`, k = 4 unless told): 128 base OTs,
        the sender fixing one base choice so that bit 0 of Delta is 1 (the hook
        ``SoftSpokenSender._base_choices``); then k' + t'*h' COTs with random choices, for the
        set-up parameter set (k', t', h').  Both normalise: sender ``q &= ~1``, receiver
        ``t = (t & ~1) | r`` (then still ``q = t ^ r Delta``: bit 0 of q was bit 0 of t ^ r).
    S2. One iteration I1-I4 with the set-up parameters; its n' >= k + t*h outputs become the
        main iteration's base (the rest joins the output buffer).
  iteration (whenever the buffer runs short; messages go from the sender to the receiver only):
    I1. Split the base COTs: the first k are the LPN secret (sender v_S, receiver v_R, u = v_R & 1,
        v_S = v_R ^ u Delta); the next t*h carry the single-point COTs, h per tree.
    I2. Sender, per tree i (t of them, in batches): a GGM tree of depth h from a random root, every
        node's two children ``pi(x ^ tw) ^ x ^ tw`` (fixed-key AES, a tweak tw unique per node, side,
        level, tree and iteration); K^b_{i,l} = XOR of the level-l children on side b.  Sends, per
        level, ``K^0 ^ H(q_j)`` and ``K^1 ^ H(q_j ^ Delta)`` (H the TCCR hash, tweak = a per-engine
        counter; j = i*h + l the base COT), and ``c_i = Delta ^ XOR_x V_{i,x}`` (leaves V with
        bit 0 cleared).
    I3. Receiver: base COT j (choice r_j) opens ``K^{r_j}``: the sum of the side *off* the path
        ``alpha_l = 1 - r_j`` (Ferret's trick: the random choice bits place the noise, no message
        back).  It rebuilds every leaf except alpha_i (punctured GGM evaluation), sets
        ``W_alpha = c_i ^ XOR_{x != alpha} V_x = V_alpha ^ Delta``: now ``V = W ^ e Delta`` with e
        the regular noise vector (one 1 per tree, at alpha_i), and bit 0 of W is e.
    I4. Both: ``y = V ^ A v_S`` (sender), ``z = W ^ A v_R`` (receiver), A the public n x k local
        linear code (:class:`LocalLinearCode`, d = 10 non-zeros per row).  Then
        ``y = z ^ (e ^ A u) Delta``: n COTs with choice bits ``e ^ A u`` (bit 0 of z).  The first
        k + t*h are the next iteration's base (I1), the rest the output.

Parameters (128-bit security against the LPN attacks the Ferret paper analyses -- Gaussian
elimination, information-set decoding, low-weight parity checks, and the regular-noise variants):
the paper's regular-noise set for bins of 2^13 (as in the authors' emp-ot library, "b13"):
main n = 10,485,760, k = 452,000, t = 1,280 (h = 13) -- 10,017,120 COTs per iteration; set-up
n = 470,016, k = 32,768, t = 918 (h = 9), from 41,030 SoftSpoken COTs.  :data:`FERRET_MAIN`,
:data:`FERRET_SETUP`.  Smaller sets (``LPNParams``) are accepted for tests and are not secure.

Cost per iteration: t*h*32 + t*16 bytes sender -> receiver (553 KB at the main set: 0.44 bits per
COT), one one-way flight, no message back; a chosen choice bit adds 1 bit (receiver -> sender).
Set-up: SoftSpoken's (128 base OTs, 16 KB of GGM sums) plus 41,030 COTs at 32 bits (164 KB) and the
set-up iteration (279 KB).  Work per COT: 2 fixed-key AES blocks (GGM) and 10 table gathers (LPN).

Threat model.  Semi-honest parties by default (as the other engines).  What each party sees:
  * the sender: the SoftSpoken extension's receiver messages (uniform, that engine's argument) and,
    per chosen-choice OT, ``d = c ^ r`` with r pseudorandom under LPN (``r = e ^ A u``; e regular
    noise of weight t, u the uniform choices of the base COTs, never revealed) -- the iterations
    send it nothing;
  * the receiver: ``K^b ^ H(q_j ^ b Delta)`` for the side b it did not choose is masked by the
    TCCR hash of a point it does not know (``t_j ^ Delta``); the sums it opens are those of a
    punctured GGM tree, which hide the punctured leaf (GGM is a puncturable PRF; the children are
    fixed-key AES on secret inputs with distinct tweaks, random-permutation model); ``c_i`` is
    masked by that leaf's 127 unknown bits.  So Delta stays hidden, and with it every
    ``y ^ Delta`` the receiver's COT outputs do not select.

A deviating *receiver* (``checked`` mode, protocol 27: the client-malicious Laplacian protocol's
direction in which the client chooses).  In the iterations the receiver sends nothing, and the
derandomisation bits d it sends are valid whatever they are.  Its one lever is S1: an unchecked
SoftSpoken receiver whose columns encode different choices per block learns bits of Delta from
what the sender derives (the KOS attack), hence both messages of every later OT.  So checked mode
runs S1 on the *checked* SoftSpoken extension (:mod:`protocols.ot.consistency`: PAD_OTS more OTs
and a 32-byte proof per piece; the sender verifies before its first GGM message).  Once S1's COTs
are consistent, ``q_j = t_j ^ r_j Delta`` with well-defined r_j, so every later output is a COT
``y = z ^ r Delta`` with r fixed by the receiver's S1 choices and d (whatever it computes
locally), and Delta hidden as above -- the guarantee of the checked SoftSpoken engine (its KOS
guessing trade-off included), on which :mod:`protocols.mpc.authenticated` binds choice bits.
Checked mode must be chosen before set-up (the ``checked`` setter refuses it afterwards).

A deviating *sender* (the client, in the direction where the server chooses).  It may send any GGM
sums and c_i; the receiver's choice bits do not depend on them: bit 0 of every base row is the
receiver's own (S1 normalises ``t = (t & ~1) | r``), it clears bit 0 of every rebuilt leaf and
*sets* bit 0 of W_alpha itself (the noise bit; honest c_i carry it anyway, Delta's bit 0 -- before
protocol 27 it was read from c_i, and a sender clearing it erased the noise: r = A u, linear in
u and recoverable from d bits whose c the sender can predict).  So r = e ^ A u is a function of
the receiver's randomness only, and the sender's view of r -- S1's receiver messages and the d
bits -- is the semi-honest sender's: r stays pseudorandom under LPN.  What a deviation does change
is the receiver's strings z at the rows it reaches (a pattern that may depend on alpha, i.e. on
r): the receiver's COT outputs go wrong there.  Protocols that let a deviating peer act as sender
must therefore tolerate wrong outputs the receiver cannot detect (:mod:`protocols.krr.
laplacian_malicious` checks the result after the fact; docs/malicious.md).  Tests:
tests/protocols/ot/test_ferret.py (``test_checked_*``, ``test_a_deviating_sender_*``).
Public: the parameter sets, the iteration count, the code's seed (derived from the session digest).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.ot.crypto import FixedKeyAES, derive_key, pack_bits, random_bytes, unpack_bits
from protocols.ot.iknp import KAPPA, OTExtensionReceiver, OTExtensionSender
from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender
from protocols.net.transport import Channel

__all__ = [
    "LPNParams",
    "FERRET_MAIN",
    "FERRET_SETUP",
    "FERRET_B11",
    "FERRET_B11_SETUP",
    "LocalLinearCode",
    "FerretSender",
    "FerretReceiver",
    "ggm_tree",
    "ggm_punctured_tree",
    "ferret_bits_per_cot",
    "setup_pair",
]

_U64 = np.uint64
_LSB_CLEAR = _U64(0xFFFFFFFFFFFFFFFE)
# fixed-key AES tweak tags (high word), distinct per use
_TAG_GGM = 0x21
_TAG_SPCOT = 0x22
# a batch of trees is the unit of one sender message, of the leaves held at once and of laziness
_BATCH_ROWS = 1 << 18  # rows per batch of trees: 32 trees of 2^13 leaves (4 MB per working array)
# LPN rows per gather pass: the index block (d x rows intp) stays around 20 MB
_LPN_ROWS = 1 << 18


@dataclass(frozen=True)
class LPNParams:
    """Primal regular-noise LPN parameters: n = t * 2^h outputs, secret length k, d non-zeros per code row."""

    n: int
    k: int
    t: int
    h: int
    d: int = 10

    def __post_init__(self) -> None:
        if self.n != self.t << self.h or min(self.k, self.t, self.h, self.d) < 1 or self.h > 20:
            raise ValueError(f"bad LPN parameters {self} (need n = t * 2^h, all positive, h <= 20)")
        if self.n <= self.reserve:
            raise ValueError(f"LPN parameters {self}: n must exceed k + t*h = {self.reserve}")

    @property
    def reserve(self) -> int:
        """Base COTs one iteration consumes (and reserves from its output for the next)."""
        return self.k + self.t * self.h

    @property
    def usable(self) -> int:
        """COTs one iteration adds to the output."""
        return self.n - self.reserve

    @property
    def message_bytes(self) -> int:
        """Payload the sender sends per iteration: two 16-byte masked sums per level, one c per tree."""
        return self.t * (self.h * 32 + 16)


#: Ferret's regular-noise parameters (CCS 2020; emp-ot's "b13" set), 128-bit security
FERRET_MAIN = LPNParams(n=10_485_760, k=452_000, t=1_280, h=13)
#: the matching set-up set: its n covers FERRET_MAIN.reserve
FERRET_SETUP = LPNParams(n=470_016, k=32_768, t=918, h=9)
#: the paper's set for bins of 2^11 (emp-ot's "b11"): a 2 MB LPN secret (the gathers stay near the
#: caches: 2-3x faster LPN here) for 1.46 instead of 0.44 bits per COT; the protocols' default
FERRET_B11 = LPNParams(n=10_180_608, k=124_000, t=4_971, h=11)
FERRET_B11_SETUP = LPNParams(n=178_944, k=17_384, t=699, h=8)


def ferret_bits_per_cot(params: LPNParams = FERRET_MAIN, chosen: bool = True) -> float:
    """Amortised traffic per output COT in bits (one iteration's message / its usable outputs),
    plus the 1-bit derandomisation when the choice bit is chosen."""
    return 8 * params.message_bytes / params.usable + (1 if chosen else 0)


class LocalLinearCode:
    """The public n x k LPN matrix A: row j has d non-zeros, all 1 (over GF(2)), at uniform columns.

    Column of entry (j, l) = floor(w * k / 2^32) (integer multiply-shift, exact in uint64) with w
    the (l*n + j)-th little-endian 32-bit word of AES-128-CTR under ``seed`` (counter starting at
    0): random access by row ranges, so it is never stored (10 x 10M indices would be 400 MB).  The
    map's bias is below k / 2^32 (3e-5 for k = 124,000), as w mod k's (protocol versions 16-23 used
    the modulo: ~3.2 ns per index in numpy against ~1.5 for the multiply-shift, and the LPN step
    maps 10 indices per COT).  (``np.take(mode="wrap")`` would reduce inside the gather, but numpy
    wraps by repeated subtraction: ~2^32 / k steps per index.)
    """

    def __init__(self, n: int, k: int, d: int, seed: bytes) -> None:
        if len(seed) != 16:
            raise ValueError("code seed must be 16 bytes")
        if not 1 <= k < 2**31:
            raise ValueError("code width out of range")
        self.n, self.k, self.d, self.seed = int(n), int(k), int(d), bytes(seed)

    def _words(self, start: int, count: int) -> np.ndarray:
        """32-bit words start .. start+count-1 of the keystream."""
        blk, off = divmod(start, 4)
        nblk = -(-(off + count) // 4)
        enc = Cipher(algorithms.AES(self.seed), modes.CTR(blk.to_bytes(16, "big"))).encryptor()
        raw = np.empty(16 * nblk + 16, dtype=np.uint8)
        n = enc.update_into(_zero_bytes(16 * nblk), memoryview(raw))
        return raw[:n].view(np.uint32)[off : off + count]

    def indices(self, j0: int, j1: int) -> np.ndarray:
        """Columns of rows j0 .. j1-1: (d, j1 - j0) intp."""
        if not 0 <= j0 <= j1 <= self.n:
            raise ValueError("row range outside the code")
        out = np.empty((self.d, j1 - j0), dtype=np.intp)
        for l in range(self.d):
            self._columns(self._words(l * self.n + j0, j1 - j0), out[l])
        return out

    def _columns(self, words: np.ndarray, out: np.ndarray) -> None:
        """out (intp) = floor(words * k / 2^32): < k, as words < 2^32; the product fits in uint64."""
        u = out.view(_U64)
        np.multiply(words, _U64(self.k), out=u, casting="unsafe")
        np.right_shift(u, _U64(32), out=u)

    def mul_xor(self, table: np.ndarray, j0: int, out: np.ndarray) -> None:
        """out[r] ^= XOR_l table[A(j0 + r, l)] for the rows of out ((R, 2) uint64); table (k, 2) uint64."""
        if table.shape != (self.k, 2) or not table.flags.c_contiguous:
            raise ValueError("the LPN secret must be a contiguous (k, 2) uint64 array")
        if not 0 <= j0 <= j0 + out.shape[0] <= self.n:
            raise ValueError("row range outside the code")
        tc = table.view(np.complex128).reshape(-1)  # one 16-byte item per row: numpy's fast take
        rows = min(_LPN_ROWS, out.shape[0])
        buf = np.empty(rows, dtype=np.complex128)
        ibuf = np.empty(rows, dtype=np.intp)
        for a in range(0, out.shape[0], _LPN_ROWS):
            b = min(out.shape[0], a + _LPN_ROWS)
            acc = out[a:b].reshape(-1)
            g, idx = buf[: b - a], ibuf[: b - a]
            for l in range(self.d):
                self._columns(self._words(l * self.n + j0 + a, b - a), idx)
                # mode="clip": the indices are in range by construction, and the default "raise"
                # with out= gathers into a temporary first (twice the time, measured)
                np.take(tc, idx, out=g, mode="clip")
                acc ^= g.view(_U64)


_ZERO = [bytes(1 << 16)]


def _zero_bytes(n: int) -> memoryview:
    """A shared read-only zero buffer of n bytes (AES-CTR input)."""
    if len(_ZERO[0]) < n:
        _ZERO[0] = bytes(max(n, 2 * len(_ZERO[0])))
    return memoryview(_ZERO[0])[:n]


# ------------------------------------------------------------------ GGM trees
def _children(aes: FixedKeyAES, nodes: np.ndarray, tree0: int, level: int, it: int) -> np.ndarray:
    """Children of every node, (B, m, 2) -> (B, 2m, 2): child 2i + b = pi(x ^ tw_b) ^ x ^ tw_b.

    tw_b = (0, TAG_GGM | level << 8 | b << 16 | tree << 17 | it << 40) (tree = tree0 + row): the two
    sides differ, and so do levels, trees and iterations (the key is per session).  Every node is a
    fresh secret uniform string, so no per-node tweak is needed (Guo et al.'s multi-instance attack
    needs related inputs, and an adversary's chance to hit one of the secret inputs is the same).
    """
    bsz, m, _ = nodes.shape
    inp = np.repeat(nodes, 2, axis=1)  # (B, 2m, 2): child 2i and 2i+1 both start from node i
    hi = (_U64(_TAG_GGM | level << 8) | (np.arange(tree0, tree0 + bsz, dtype=_U64) << _U64(17))
          | (_U64(it) << _U64(40)))[:, None]
    inp[:, 0::2, 1] ^= hi
    inp[:, 1::2, 1] ^= hi | _U64(1 << 16)
    out = aes.permute(inp)
    out ^= inp
    return out


def _side_sums(nodes: np.ndarray) -> np.ndarray:
    """XOR of the even- and of the odd-indexed nodes: (B, 2m, 2) -> (B, 2, 2), by halving folds
    (long contiguous loops; numpy's reduce over a middle axis with a short inner one is slower)."""
    bsz, m2, _ = nodes.shape
    a = nodes.reshape(bsz, m2 // 2, 4)
    m = a.shape[1]
    while m > 1 and m % 2 == 0:
        a = a[:, : m // 2] ^ a[:, m // 2 : m]
        m //= 2
    return (np.bitwise_xor.reduce(a, axis=1) if m > 1 else a[:, 0]).reshape(bsz, 2, 2)


def _xor_leaves(leaves: np.ndarray) -> np.ndarray:
    """XOR of every leaf of each tree: (B, 2^h, 2) -> (B, 2), by halving folds like
    :func:`_side_sums` (``np.bitwise_xor.reduce`` over the middle axis was ~7x slower, measured)."""
    a = leaves
    m = a.shape[1]
    while m > 1 and m % 2 == 0:
        a = a[:, : m // 2] ^ a[:, m // 2 : m]
        m //= 2
    return np.bitwise_xor.reduce(a, axis=1) if m > 1 else a[:, 0]


def ggm_tree(aes: FixedKeyAES, roots: np.ndarray, h: int, tree0: int = 0, it: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full GGM trees of depth h from roots (B, 2) uint64: (leaves (B, 2^h, 2), sums (B, h, 2, 2)).

    ``sums[i, l, b]`` is the XOR of the level-(l+1) nodes of tree i on side b (even / odd index);
    leaf x's path takes side ``(x >> (h - 1 - l)) & 1`` at level l.
    """
    bsz = roots.shape[0]
    nodes = roots.reshape(bsz, 1, 2)
    sums = np.empty((bsz, h, 2, 2), dtype=_U64)
    for level in range(h):
        nodes = _children(aes, nodes, tree0, level, it)
        sums[:, level] = _side_sums(nodes)
    return nodes, sums


def ggm_punctured_tree(aes: FixedKeyAES, opened: np.ndarray, side: np.ndarray, tree0: int = 0,
                       it: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every leaf but one from one level sum per level (the receiver's half of a single-point OT).

    opened: (B, h, 2) uint64, ``sums[i, l, side[i, l]]`` of :func:`ggm_tree`; side: (B, h) bits.
    At level l the path takes side ``1 - side[i, l]``.  Returns (leaves (B, 2^h, 2) with the
    punctured leaf zero, alpha (B,) its index).
    """
    bsz, h = side.shape
    rows = np.arange(bsz)
    nodes = np.zeros((bsz, 1, 2), dtype=_U64)
    path = np.zeros(bsz, dtype=np.int64)
    for level in range(h):
        ch = _children(aes, nodes, tree0, level, it)
        ch[rows, 2 * path] = 0  # children of the unknown path node: garbage, dropped
        ch[rows, 2 * path + 1] = 0
        b = side[:, level].astype(np.int64)
        known = _side_sums(ch)[rows, b]  # (B, 2)
        ch[rows, 2 * path + b] = opened[:, level] ^ known
        path = 2 * path + (1 - b)
        nodes = ch
    return nodes, path


# ------------------------------------------------------------------ the engines
class _FerretState:
    """Shared by both roles: parameters, the iteration, the output buffer."""

    ch: Channel
    _rng: np.random.Generator | None
    chunk: int
    checked: bool
    ots_extended: int
    #: I2 (sender) / I3 (receiver) for a batch of trees: each role class defines it
    _spcot: Callable[[np.ndarray, int, int], np.ndarray]

    def __init__(self, ch: Channel, seed: int | None = None, chunk: int = 1 << 20, *,
                 params: LPNParams = FERRET_MAIN, bootstrap: LPNParams | None = FERRET_SETUP,
                 softspoken_k: int = 4, checked: bool = False) -> None:
        # the IKNP role's own state first (next in the MRO: OTExtensionSender / OTExtensionReceiver)
        super().__init__(ch, seed=seed, chunk=chunk)  # type: ignore[call-arg]
        self._init_ferret(params, bootstrap, softspoken_k)
        self.checked = checked

    @property
    def checked(self) -> bool:
        """Malicious-receiver mode: S1 runs on the checked SoftSpoken extension (set before set-up)."""
        return getattr(self, "_checked", False)

    @checked.setter
    def checked(self, value: bool) -> None:
        # S1 decides it: an engine whose S1 ran unchecked may have leaked Delta to a deviating
        # receiver (the KOS attack), and nothing later can repair that
        if value and getattr(self, "_ready", False) and not getattr(self, "_s1_checked", False):
            raise ValueError("the silent-OT engine's checked mode must be chosen before its set-up "
                             "(S1 ran on the unchecked extension)")
        self._checked = bool(value)

    def _init_ferret(self, params: LPNParams, bootstrap: LPNParams | None, softspoken_k: int) -> None:
        if bootstrap is not None and bootstrap.n < params.reserve:
            raise ValueError(f"the set-up iteration's {bootstrap.n} COTs do not cover the {params.reserve} base COTs")
        self.params, self.bootstrap, self.softspoken_k = params, bootstrap, int(softspoken_k)
        self._s1_checked = False
        self._buf: deque[np.ndarray] = deque()
        self._buf_off = 0
        self._buf_size = 0
        self._iter = 0  # iterations run (GGM tweaks)
        self._spcot_ctr = 0  # base COTs hashed by the single-point COTs (TCCR tweaks)
        self.iterations = 0
        self.silent_bytes_sent = 0  # traffic of set-up and iterations (for the benchmarks)

    def _sub_seed(self) -> int | None:
        return None if self._rng is None else int(self._rng.integers(0, 2**62))

    def _keys(self, digest: bytes) -> None:
        self._ggm_aes = FixedKeyAES(derive_key(b"secureml-fe-ggm", digest))
        self._hash_aes = FixedKeyAES(derive_key(b"secureml-fe-spcot", digest))
        self._code_seed = derive_key(b"secureml-fe-lpn", digest)
        self._codes: dict[LPNParams, LocalLinearCode] = {}

    def _code(self, p: LPNParams) -> LocalLinearCode:
        if p not in self._codes:
            self._codes[p] = LocalLinearCode(p.n, p.k, p.d, derive_key(b"secureml-fe-code", self._code_seed,
                                                                      repr(p).encode()))
        return self._codes[p]

    @property
    def available(self) -> int:
        """Silent COTs in the buffer."""
        return self._buf_size - self._buf_off

    def _push(self, rows: np.ndarray) -> None:
        if rows.shape[0]:
            self._buf.append(rows)
            self._buf_size += rows.shape[0]

    def _take(self, k: int, copy: bool = True) -> np.ndarray:
        """The next k buffered rows (k, 2) uint64 (a fresh array the caller may modify).

        ``copy=False`` may return a view into the buffer when the rows lie in one piece: the
        OT-extension paths (:meth:`_extend`) use it -- the rows are consumed, nothing reads them
        again, so modifying them in place is safe, and a 16-byte-per-OT copy is saved."""
        if k > self.available:
            raise RuntimeError("silent-OT buffer underrun (both parties must request alike)")
        if k == 0:
            return np.empty((0, 2), dtype=_U64)
        parts, need = [], k
        while need:
            head = self._buf[0]
            m = min(need, head.shape[0] - self._buf_off)
            parts.append(head[self._buf_off : self._buf_off + m])
            self._buf_off += m
            need -= m
            if self._buf_off == head.shape[0]:
                self._buf.popleft()
                self._buf_size -= head.shape[0]
                self._buf_off = 0
        if len(parts) == 1:
            return parts[0].copy() if copy else parts[0]
        return np.concatenate(parts)

    def _ensure(self, k: int) -> None:
        """Advance the iterations until k COTs are buffered (both parties call this with the same k).

        Lazily, a batch of trees at a time: an iteration's rows are computed in order as they are
        needed, so a request costs the batches it needs, not a whole iteration (the first
        ``reserve`` rows, the next base, come first).  Splitting one LPN instance's samples over
        time changes nothing in what either party sees.
        """
        self.setup()
        while self.available < k:
            self._advance()

    def _start(self, p: LPNParams, base: np.ndarray) -> None:
        """I1: a new iteration with parameters p on ``base`` (p.reserve rows)."""
        if base.shape[0] != p.reserve:
            raise RuntimeError("wrong number of base COTs")
        self._cur = p
        self._secret = np.ascontiguousarray(base[: p.k])
        self._spcot_base = base[p.k :].reshape(p.t, p.h, 2)
        self._tree = 0

    def _step(self) -> tuple[np.ndarray, int]:
        """I2-I4 for the next batch of trees of the current iteration: (rows (R, 2), first row index)."""
        p = self._cur
        width = 1 << p.h
        i0 = self._tree
        i1 = min(p.t, i0 + max(1, _BATCH_ROWS >> p.h))
        rows = self._spcot(self._spcot_base[i0:i1], i0, p.h).reshape(-1, 2)  # I2 / I3
        self._code(p).mul_xor(self._secret, i0 * width, rows)  # I4
        self._tree = i1
        self.ots_extended += rows.shape[0]
        if i1 == p.t:  # the iteration is complete: fresh GGM / hash tweaks from here on
            self._iter += 1
            self._spcot_ctr += p.t * p.h
            self.iterations += 1
        return rows, i0 * width

    def _run_all(self, p: LPNParams, base: np.ndarray) -> np.ndarray:
        """A whole iteration (the set-up one, S2): all p.n rows."""
        self._start(p, base)
        out = np.concatenate([self._step()[0] for _ in range(-(-p.t // max(1, _BATCH_ROWS >> p.h)))])
        assert self._tree == p.t
        return out

    def _advance(self) -> None:
        """One batch of the main iterations: rows below ``reserve`` go to the next base, the rest to the buffer."""
        p = self.params
        if self._tree == self._cur.t:  # the previous iteration is done: its first rows are the base
            self._base = self._next_base
            self._start(p, self._base)
            self._next_base = np.empty((p.reserve, 2), dtype=_U64)
        rows, j0 = self._step()
        if j0 < p.reserve:
            m = min(p.reserve - j0, rows.shape[0])
            self._next_base[j0 : j0 + m] = rows[:m]
            rows = rows[m:]
        self._push(rows)

    def _bootstrap(self, base: np.ndarray, digest: bytes, bytes_before: int) -> None:
        """S2 and the hand-over, the same for both roles once S1's ``base`` rows exist: the set-up
        iteration (if any) turns them into the main base, whose first demand starts iteration 1."""
        if self.bootstrap is not None:  # S2: the set-up iteration's first rows are the main base
            out = self._run_all(self.bootstrap, base)
            self._push(out[self.params.reserve :])
            base = out[: self.params.reserve]
        self._install_base(base)
        self.ch.flush()
        self.silent_bytes_sent += self.ch.bytes_sent - bytes_before
        self._finish_setup(derive_key(b"secureml-fe-ot", digest))

    def _install_base(self, base: np.ndarray) -> None:
        """S2's end: the main iterations start from ``base`` (k + t*h rows) on first demand."""
        self._next_base = np.ascontiguousarray(base)
        self._cur = self.params
        self._tree = self.params.t  # "previous iteration done": _advance starts one on the base

    # the chosen-choice path of OTExtension*: checked mode is sound only on a checked S1
    def _no_checked(self) -> None:
        if self.checked and not self._s1_checked:
            raise NotImplementedError("checked mode on a silent-OT engine whose S1 ran unchecked")


class FerretSender(_FerretState, OTExtensionSender):
    """Silent-OT sender (holds Delta; message pairs / correlations).  Mirrors :class:`OTExtensionSender`.

    ``FerretSender(ch, seed=None, chunk=2**20, params=FERRET_MAIN, bootstrap=FERRET_SETUP,
    softspoken_k=4)``; ``bootstrap=None`` takes the main set's base COTs from SoftSpoken directly.
    Seeded instances are INSECURE (tests only).
    """

    def setup(self) -> None:
        """S1-S2.  Idempotent."""
        if self._ready:
            return
        b0 = self.ch.bytes_sent
        ss = _LsbSoftSpokenSender(self.ch, k=self.softspoken_k, seed=self._sub_seed(), chunk=self.chunk)
        ss.checked = self._s1_checked = self.checked  # S1 verifies the receiver's columns (checked mode)
        ss.setup()
        self._s64 = ss._s64.copy()  # Delta, bit 0 set
        self._s_bits = unpack_bits(self._s64.view(np.uint8), KAPPA).astype(bool)
        self._keys(ss._digest)
        first = self.bootstrap or self.params
        parts, done = [], 0
        while done < first.reserve:  # S1: random-choice SoftSpoken COTs, in its piece size
            k = min(ss.piece, first.reserve - done)
            parts.append(ss._extend(k))
            done += k
        base = np.concatenate(parts)
        base[:, 0] &= _LSB_CLEAR
        self._bootstrap(base, ss._digest, b0)

    def _spcot(self, base: np.ndarray, tree0: int, h: int) -> np.ndarray:
        """I2 for trees tree0 .. tree0+B-1 (base (B, h, 2) rows q_j): send the opening, return V."""
        bsz = base.shape[0]
        roots = np.frombuffer(random_bytes(16 * bsz, self._rng), dtype=_U64).reshape(bsz, 2)
        leaves, sums = ggm_tree(self._ggm_aes, roots, h, tree0, self._iter)
        q = base.reshape(-1, 2)
        start = self._spcot_ctr + tree0 * h
        pad0 = self._hash_aes.tccr(q, start, 1, _TAG_SPCOT)
        pad1 = self._hash_aes.tccr(q ^ self._s64, start, 1, _TAG_SPCOT)
        msg = np.empty((bsz, h * 2 * 2 + 2), dtype=_U64)
        masked = msg[:, : 4 * h].reshape(bsz, h, 2, 2)
        masked[:, :, 0] = sums[:, :, 0] ^ pad0.reshape(bsz, h, 2)
        masked[:, :, 1] = sums[:, :, 1] ^ pad1.reshape(bsz, h, 2)
        leaves[:, :, 0] &= _LSB_CLEAR
        msg[:, 4 * h :] = _xor_leaves(leaves) ^ self._s64  # c_i
        b0 = self.ch.bytes_sent
        self.ch.send_array(msg, owned=True)
        self.silent_bytes_sent += self.ch.bytes_sent - b0
        return leaves

    # ------------------------------------------------ the OTExtensionSender interface
    def _rows(self, n: int, piece: int, align: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        self._ensure(n)  # every iteration's flight before the first piece's exchange
        yield from super()._rows(n, piece, align)

    def _extend(self, k: int) -> np.ndarray:
        """k COTs with the receiver's chosen bits: receive d = c ^ r, return q ^ d Delta."""
        self._no_checked()
        d = self.ch.recv_array(np.uint8, ((k + 7) // 8,))
        q = self._take(k, copy=False)
        # q ^= d_i Delta as an AND mask (a boolean-indexed update was ~2x slower, measured)
        flip = unpack_bits(d, k).astype(_U64)
        np.negative(flip, out=flip)
        q ^= flip[:, None] & self._s64
        return q

    def precompute(self, n: int) -> None:
        """Offline phase: run the iterations that ``n`` more OTs need now (no message back)."""
        if n > 0:
            self._ensure(self.available + int(n))
        self.ch.flush()

    def random_cots(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n silent COTs with random choices, no message: (q (n, 2) uint64, Delta (2,) uint64);
        the receiver's :meth:`FerretReceiver.random_cots` gets t with ``q = t ^ (t & 1) Delta``."""
        self._ensure(n)
        self.ch.flush()
        return self._take(n), self._s64.copy()


class FerretReceiver(_FerretState, OTExtensionReceiver):
    """Silent-OT receiver (choice bits).  Mirrors :class:`OTExtensionReceiver`; see :class:`FerretSender`."""

    def setup(self) -> None:
        """S1-S2.  Idempotent."""
        if self._ready:
            return
        b0 = self.ch.bytes_sent
        ss = SoftSpokenReceiver(self.ch, k=self.softspoken_k, seed=self._sub_seed(), chunk=self.chunk)
        ss.checked = self._s1_checked = self.checked  # S1 proves our columns consistent (checked mode)
        ss.setup()
        self._keys(ss._digest)
        self._pool_choice = np.empty(0, dtype=np.uint8)
        first = self.bootstrap or self.params
        parts, done = [], 0
        while done < first.reserve:  # S1
            k = min(ss.piece, first.reserve - done)
            r = unpack_bits(np.frombuffer(random_bytes((k + 7) // 8, self._rng), np.uint8), k)
            t = ss._extend(r)
            t[:, 0] = (t[:, 0] & _LSB_CLEAR) | r.astype(_U64)
            parts.append(t)
            done += k
        base = np.concatenate(parts)
        self._bootstrap(base, ss._digest, b0)

    def _spcot(self, base: np.ndarray, tree0: int, h: int) -> np.ndarray:
        """I3 for trees tree0 .. tree0+B-1 (base (B, h, 2) rows t_j, choice t_j & 1): return W."""
        bsz = base.shape[0]
        msg = self.ch.recv_array(_U64, (bsz, h * 2 * 2 + 2))
        t = base.reshape(-1, 2)
        r = (base[:, :, 0] & _U64(1)).astype(np.intp)  # (B, h)
        pad = self._hash_aes.tccr(t, self._spcot_ctr + tree0 * h, 1, _TAG_SPCOT).reshape(bsz, h, 2)
        masked = msg[:, : 4 * h].reshape(bsz, h, 2, 2)
        opened = np.take_along_axis(masked, r[:, :, None, None], axis=2)[:, :, 0] ^ pad
        leaves, alpha = ggm_punctured_tree(self._ggm_aes, opened, r, tree0, self._iter)
        leaves[:, :, 0] &= _LSB_CLEAR
        rows = np.arange(bsz)
        leaves[rows, alpha] = _xor_leaves(leaves) ^ msg[:, 4 * h :]  # V_alpha ^ Delta
        # the noise bit e_alpha = 1 is ours, not read from c_i: an honest c_i has bit 0 set anyway
        # (bit 0 of Delta), but a deviating sender clearing it would erase tree i's noise and make
        # our choice bits e ^ A u noise-free linear -- solvable from derandomisation bits d = c ^ r
        # whose c it can predict (tests/protocols/ot/test_ferret.py::test_a_deviating_sender_...)
        leaves[rows, alpha, 0] |= _U64(1)
        return leaves

    # ------------------------------------------------ the OTExtensionReceiver interface
    def _rows(self, c: np.ndarray, piece: int, align: int = 1) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        self._ensure(c.shape[0])
        yield from super()._rows(c, piece, align)

    def _extend(self, c: np.ndarray) -> np.ndarray:
        """k COTs with chosen bits c: send d = c ^ r (1 bit each), return t (q = t ^ c Delta)."""
        self._no_checked()
        t = self._take(c.shape[0], copy=False)
        r = (t[:, 0] & _U64(1)).astype(np.uint8)
        self.ch.send_array(pack_bits(c ^ r), owned=True)
        return t

    def _extend_bytes(self, k: int) -> int:
        return (k + 7) // 8

    def precompute(self, n: int) -> None:
        """Offline phase, as :meth:`FerretSender.precompute`."""
        if n > 0:
            self._ensure(self.available + int(n))

    def random_cots(self, n: int) -> np.ndarray:
        """n silent COTs with random choices: t (n, 2) uint64, choice bit ``t & 1`` (see the sender's)."""
        self._ensure(n)
        return self._take(n)


class _LsbSoftSpokenSender(SoftSpokenSender):
    """SoftSpoken sender whose Delta has bit 0 set (S1): base choice c_{0, k-1} = 0."""

    def _base_choices(self) -> np.ndarray:
        c = super()._base_choices()
        c[self.k - 1] = 0  # bit 0 of Delta_0 is 1 - c_{0, k-1}; s bit 0 is bit 0 of Delta_0
        return c


def setup_pair(ch: Channel, role: int, *, seeds: tuple[int | None, int | None] = (None, None),
               params: LPNParams = FERRET_B11, bootstrap: LPNParams | None = FERRET_B11_SETUP,
               checked: tuple[bool, bool] = (False, False)) -> tuple[FerretSender, FerretReceiver]:
    """Both OT directions on one channel as silent engines, set up in an order both roles agree on
    (role 0 first as sender, role 1 first as receiver).  ``seeds`` (sender, receiver): tests only.
    ``checked`` (sender, receiver): which of this party's engines run checked mode (S1 on the
    checked extension); the peer's engine of the same direction must agree.
    Returns (sender, receiver) of this party."""
    snd = FerretSender(ch, seed=seeds[0], params=params, bootstrap=bootstrap, checked=checked[0])
    rcv = FerretReceiver(ch, seed=seeds[1], params=params, bootstrap=bootstrap, checked=checked[1])
    for engine in ((snd, rcv) if role == 0 else (rcv, snd)):
        engine.setup()
    return snd, rcv
