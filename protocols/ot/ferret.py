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
    I2. Sender, per tree i (t of them, in batches): a correlated GGM tree of depth h (Half-Tree:
        Guo, Yang, Wang, Zhang, Xie, Liu, Zhao, Eurocrypt 2023): level 1 is (k_i, k_i ^ Delta) for a
        random k_i, and every node x has the children ``H(x, tw)`` and ``x ^ H(x, tw)`` (H the MMO
        circular-correlation-robust hash ``pi(z) ^ z``, ``z = sigma(x) ^ tw``, sigma a linear
        orthomorphism, fixed-key AES: one block per node; tw unique per level, tree and
        iteration), so the two children XOR to their parent and every level XORs to Delta:
        K^1_{i,l} = K^0_{i,l} ^ Delta for the XORs K^b of the level's side-b nodes.  Sends, per
        level, ``K^0_{i,l} ^ q_j`` (j = i*h + l the base COT): one 16-byte block, no hash.
    I3. Receiver: base COT j (choice r_j, row t_j = q_j ^ r_j Delta) opens
        ``K^0 ^ q_j ^ t_j = K^{r_j}``: the sum of the side *off* the path ``alpha_l = 1 - r_j``
        (Ferret's trick: the random choice bits place the noise, no message back).  It rebuilds
        every leaf except alpha_i (punctured GGM evaluation) and sets
        ``W_alpha = XOR_{x != alpha} V_x`` (bit 0 set): the leaves XOR to Delta, so
        ``W_alpha = V_alpha ^ Delta``.  Now ``V = W ^ e Delta`` with e the regular noise vector
        (one 1 per tree, at alpha_i), and bit 0 of W is e.  (Sender's leaves V have bit 0
        cleared; protocol versions 14-27 sent two TCCR-masked sums per level and
        ``c_i = Delta ^ XOR V`` per tree: h*32 + 16 bytes per tree instead of h*16.)
    I4. Both: ``y = V ^ A v_S`` (sender), ``z = W ^ A v_R`` (receiver), A the public n x k local
        linear code (:class:`LocalLinearCode`, d = 10 non-zeros per row).  Then
        ``y = z ^ (e ^ A u) Delta``: n COTs with choice bits ``e ^ A u`` (bit 0 of z).  The first
        k + t*h are the next iteration's base (I1), the rest the output.

Output order (protocol 38).  The trees run in public batches of B = max(1, 2^18 >> h) trees (the
last batch of an iteration may hold fewer), and the GGM expansion computes a batch node-major: leaf
x of every tree together.  The engines take the leaves in that order: in the batch of trees i0 ..
i0+B-1, output row ``i0 * 2^h + x*B + (i - i0)`` is leaf x of tree i (before protocol 38, one
transpose per batch made it row ``i * 2^h + x``; ~0.15 s of each party's CPU in the Laplacian
session).  This is the same LPN instance up to a public, fixed permutation P of the n rows: ``P y =
P V ^ (P A) v``, and P A is again a matrix of n independent rows of d uniform columns (the code is
generated per row *position*, so A's distribution does not see P), while P e keeps exactly one 1
per tree, now in the tree's strided positions ``i0 * 2^h + x*B + (i - i0)`` -- regular noise over a
public partition of the rows into t blocks, which is regular noise up to relabelling the
coordinates, an equivalence every LPN attack and reduction respects.  Every consumer reads the same
positions on both sides: the sender's correction-free leaves V, the receiver's noise bit (it sets
bit 0 of ``W_alpha`` at leaf alpha_i of tree i, whatever the sender sent -- the protocol-27 review
finding), the reserved rows (the first k + t*h rows in output order, the next base), the lazy
batches and checked mode (which changes S1 only).

Parameters (128-bit security against the LPN attacks the Ferret paper analyses -- Gaussian
elimination, information-set decoding, low-weight parity checks, and the regular-noise variants):
the paper's regular-noise set for bins of 2^13 (as in the authors' emp-ot library, "b13"):
main n = 10,485,760, k = 452,000, t = 1,280 (h = 13) -- 10,017,120 COTs per iteration; set-up
n = 470,016, k = 32,768, t = 918 (h = 9), from 41,030 SoftSpoken COTs.  :data:`FERRET_MAIN`,
:data:`FERRET_SETUP`.  Smaller sets (``LPNParams``) are accepted for tests and are not secure.

Cost per iteration: t*h*16 bytes sender -> receiver (266 KB at the main set: 0.21 bits per COT;
875 KB at b11: 0.70), one one-way flight, no message back; a chosen choice bit adds 1 bit
(receiver -> sender).  Set-up: SoftSpoken's (128 base OTs, 16 KB of GGM sums) plus the set-up
set's k' + t'h' COTs at 32 bits and the set-up iteration (t'h'*16 bytes).  Work per COT: about one
fixed-key AES block (GGM, 2^h - 2 per tree) and 10 table gathers (LPN).

Threat model.  Semi-honest parties by default (as the other engines).  What each party sees:
  * the sender: the SoftSpoken extension's receiver messages (uniform, that engine's argument) and,
    per chosen-choice OT, ``d = c ^ r`` with r pseudorandom under LPN (``r = e ^ A u``; e regular
    noise of weight t, u the uniform choices of the base COTs, never revealed) -- the iterations
    send it nothing;
  * the receiver: per level ``K^0 ^ q_j``, i.e. ``K^{r_j}`` -- the other side's sum
    ``K^{r_j} ^ Delta`` would need Delta; the nodes off the punctured path, all of which it can
    compute, and no more: each hidden path node is ``y ^ Delta`` for a y it knows (every level
    XORs to Delta), and of its children it learns one, ``H(y ^ Delta) ^ b Delta`` -- exactly the
    circular-correlation-robust game, which the MMO hash with an orthomorphism sigma wins in the
    random-permutation model (Guo, Katz, Wang, Yu, S&P 2020; the Half-Tree paper's proof).  (Without
    sigma the right child ``pi(x) ^ ... `` would hand over pi(x), invertible with the public key.)
    No other value depends on Delta.  So Delta stays hidden, and with it every ``y ^ Delta`` the
    receiver's COT outputs do not select.  An adversary's offline AES queries hit one of the n
    hidden path nodes with probability n/2^128 per query, as they hit one of the n hidden
    (uniform) path nodes of the plain GGM trees of protocol versions 14-27.  The tweak (unique for
    t < 2^23 trees and 2^24 iterations, both enforced) enters after sigma: for each tweak H is the
    MMO hash of an affine orthomorphism, i.e. CCR, which is what the argument above uses (e.g.
    secretflow/yacl's Half-Tree hashes every node with one untweaked CCR hash); across tweaks it is
    no tweakable CCR hash for *chosen* inputs (sigma(x) ^ tw = sigma(x') ^ tw' would cancel pi),
    but the receiver chooses no hidden node: each is y ^ Delta with y a function of the sender's
    fresh roots.  The receiver's choices (r_j, also a deviating one's in checked mode) only place
    the path: one side per level is opened whatever they are.  (Review of protocols 27-28, its
    attacks as tests: tests/protocols/ot/test_ferret_review.py; docs/malicious.md.)

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

A deviating *sender* (the client, in the direction where the server chooses).  It may send any level
sums (whose XOR need not be Delta); the receiver's choice bits do not depend on them: bit 0 of every base row is the
receiver's own (S1 normalises ``t = (t & ~1) | r``), it clears bit 0 of every rebuilt leaf and
*sets* bit 0 of W_alpha itself (the noise bit; the XOR of the honest other leaves carries it anyway, Delta's bit 0 -- before
protocol 27 it was read from c_i, and a sender clearing it erased the noise: r = A u, linear in
u and recoverable from d bits whose c the sender can predict).  So r = e ^ A u is a function of
the receiver's randomness only, and the sender's view of r -- S1's receiver messages and the d
bits -- is the semi-honest sender's: r stays pseudorandom under LPN.  What a deviation does change
is the receiver's strings z at the rows it reaches (a pattern that may depend on alpha, i.e. on
r): the receiver's COT outputs go wrong there.  Protocols that let a deviating peer act as sender
must therefore tolerate wrong outputs the receiver cannot detect (:mod:`protocols.krr.
laplacian_malicious` checks the result after the fact; docs/malicious.md).  Tests:
tests/protocols/ot/test_ferret.py (``test_checked_*``, ``test_a_deviating_sender_*``).
Public: the parameter sets, the iteration count, the code's seed (derived from the session digest,
whose last contribution -- the base-OT receiver's, i.e. this engine's sender's -- a deviating sender
can grind: it then picks the code among ~2^40 random ones, which LPN's assumption for a random local
code covers; emp-ot fixes its code by a public constant).  Choice bits of random and reserved COTs
are uniform only for an honest receiver: a deviating one picks its S1 bits and with them its
outputs' (a receiver chooses anyway; no caller relies on a deviating receiver's bits being random).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.ot.crypto import FixedKeyAES, derive_key, pack_bits, random_bytes, unpack_bits
from protocols.ot.iknp import (
    KAPPA,
    OTExtensionReceiver,
    OTExtensionSender,
    _check_bits,
    _from_low_bytes,
    _low_bytes,
    _piece_size,
)
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
    "setup_one_way",
]

_U64 = np.uint64
_LSB_CLEAR = _U64(0xFFFFFFFFFFFFFFFE)
# fixed-key AES tweak tags (high word), distinct per use
_TAG_GGM = 0x21
# the GGM tweak's fields (_tweak): trees per iteration and iterations per engine it can number
_MAX_TREES = 1 << 23
_MAX_ITERATIONS = 1 << 24
# a batch of trees is the unit of one sender message, of the leaves held at once and of laziness
# rows per batch of trees: 32 trees of 2^13 leaves (4 MB per working array).  Since protocol 38 it
# also fixes the outputs' order (a batch's rows are node-major): both parties must use the same value
_BATCH_ROWS = 1 << 18
# LPN rows per fused block (mul_xor): 8192 rows -> 64 KB of indices, 128 KB of gathered rows.
# A trade-off between the two ways the parties run (one run each, quiet machine, load 1.5-1.8,
# 2026-12-05; `bench.krr_cost --kernel laplacian --sizes 16384` in two processes / `bench.ferret_threads
# --cots 15000000` with both parties as threads of one process): 2^13 rows 4.49-4.63 s / 5.04-5.27 s,
# 2^14 4.79-4.85 / 4.65-4.83, 2^15 4.84-5.14 / 3.74-4.03, 2^16 5.00-5.16 / 3.37 s. Small blocks keep
# the working set in L2 (the two-process session, which is how client and server run), but make ~40x
# more numpy calls, each a GIL hand-off when two sessions share a process (bench.malicious_cost's
# in-process runs; a `serve` worker with concurrent sessions) ...
_LPN_ROWS = 1 << 13
# ... so the block size follows what runs: 2^13 rows while this is the only LPN encoding running in the
# process, 2^16 rows (a few numpy calls per MB) while another thread runs one too (re-read per block)
_LPN_ROWS_SHARED = 1 << 16
_LPN_ACTIVE = [0]  # LPN encodings running now in this process (mul_xor calls, all threads)
_LPN_LOCK = threading.Lock()


@dataclass(frozen=True)
class LPNParams:
    """Primal regular-noise LPN parameters: n = t * 2^h outputs, secret length k, d non-zeros per code row."""

    n: int
    k: int
    t: int
    h: int
    d: int = 10

    def __post_init__(self) -> None:
        # t < 2^23 and h <= 20: the GGM tweak's tree and level fields (_tweak) cannot overflow
        if (self.n != self.t << self.h or min(self.k, self.t, self.h, self.d) < 1 or self.h > 20
                or self.t >= _MAX_TREES):
            raise ValueError(f"bad LPN parameters {self} "
                             "(need n = t * 2^h, all positive, h <= 20, t < 2^23)")
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
        """Payload the sender sends per iteration: one 16-byte masked level sum per level and tree."""
        return self.t * self.h * 16


#: Ferret's regular-noise parameters (CCS 2020; emp-ot's "b13" set), 128-bit security
FERRET_MAIN = LPNParams(n=10_485_760, k=452_000, t=1_280, h=13)
#: the matching set-up set: its n covers FERRET_MAIN.reserve
FERRET_SETUP = LPNParams(n=470_016, k=32_768, t=918, h=9)
#: the paper's set for bins of 2^11 (emp-ot's "b11"): a 2 MB LPN secret (the gathers stay near the
#: caches: 2-3x faster LPN here) for 0.70 instead of 0.21 bits per COT (1.46 and 0.44 before protocol 28); the protocols' default
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
        # k = 2^b: floor(w * 2^b / 2^32) = w >> (32 - b), the same columns in one pass (_columns)
        self._shift = 32 - (self.k.bit_length() - 1) if self.k & (self.k - 1) == 0 else None

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
        if self._shift is not None:  # one casting shift instead of a casting multiply and a shift
            np.right_shift(words, np.uint32(self._shift), out=u, casting="unsafe")
            return
        np.multiply(words, _U64(self.k), out=u, casting="unsafe")
        np.right_shift(u, _U64(32), out=u)

    def mul_xor(self, table: np.ndarray, j0: int, out: np.ndarray) -> None:
        """out[r] ^= XOR_l table[A(j0 + r, l)] for the rows of out ((R, 2) uint64); table (k, 2) uint64."""
        if table.shape != (self.k, 2) or not table.flags.c_contiguous:
            raise ValueError("the LPN secret must be a contiguous (k, 2) uint64 array")
        n_rows = out.shape[0]
        if not 0 <= j0 <= j0 + n_rows <= self.n:
            raise ValueError("row range outside the code")
        if n_rows == 0:
            return
        tc = table.view(np.complex128).reshape(-1)  # one 16-byte item per row: numpy's fast take
        rows = min(max(_LPN_ROWS, _LPN_ROWS_SHARED), n_rows)  # the working arrays' size
        # Fused and blocked: per block of rows and per l, keystream -> columns -> gather -> XOR on
        # working arrays of a few hundred KB that stay in the core's L2 beside the 2 MB secret.  One
        # CTR stream per l continues from block to block (no cipher per block).  The same keystream
        # words as the unblocked version (the code is unchanged).  Laplacian session, parties in two
        # processes: -12 to -17% of the server's CPU (docs/double-blind/v31-cpu/).  Cost: ~40x more
        # numpy calls, each a GIL hand-off when another thread of the process runs an LPN encoding
        # too (both parties as threads; concurrent sessions in one worker): then 2^16-row blocks.
        streams = []
        for l in range(self.d):
            blk, off = divmod(l * self.n + j0, 4)
            enc = Cipher(algorithms.AES(self.seed), modes.CTR(blk.to_bytes(16, "big"))).encryptor()
            if off:  # CTR is a stream: skip the block's leading words
                enc.update(bytes(4 * off))
            streams.append(enc)
        raw = np.empty(4 * rows + 16, dtype=np.uint8)  # CTR update_into wants 15 spare bytes
        idx = np.empty(rows, dtype=np.intp)
        g = np.empty(rows, dtype=np.complex128)
        acc = out.reshape(-1)
        with _LPN_LOCK:
            _LPN_ACTIVE[0] += 1
        try:
            a = 0
            while a < n_rows:
                # (the same keystream and outputs whatever the block sizes: CTR streams continue)
                b = min(n_rows, a + (_LPN_ROWS if _LPN_ACTIVE[0] == 1 else _LPN_ROWS_SHARED))
                self._mul_xor_block(streams, tc, acc, a, b, raw, idx, g)
                a = b
        finally:
            with _LPN_LOCK:
                _LPN_ACTIVE[0] -= 1

    def _mul_xor_block(self, streams: list, tc: np.ndarray, acc: np.ndarray, a: int, b: int, raw: np.ndarray,
                       idx: np.ndarray, g: np.ndarray) -> None:
        """Rows a .. b-1 of :meth:`mul_xor`: per l, keystream -> columns -> gather -> XOR."""
        m = b - a
        zeros, words, ix, gm = _zero_bytes(4 * m), raw[: 4 * m].view(np.uint32), idx[:m], g[:m]
        blk_acc = acc[2 * a : 2 * b]
        # the views and constants once per block, and _columns inlined: 43k loop turns per party
        # and session, where each Python-level call or view costs ~0.3 us
        buf, u, gu, shift, k = memoryview(raw), ix.view(_U64), gm.view(_U64), self._shift, _U64(self.k)
        for enc in streams:
            enc.update_into(zeros, buf)
            if shift is not None:  # _columns, inlined
                np.right_shift(words, np.uint32(shift), out=u, casting="unsafe")
            else:
                np.multiply(words, k, out=u, casting="unsafe")
                np.right_shift(u, _U64(32), out=u)
            # mode="clip": the indices are in range by construction, and the default "raise"
            # with out= gathers into a temporary first (twice the time, measured); the method, not
            # np.take: no Python wrapper per call (43k calls per party and session)
            tc.take(ix, out=gm, mode="clip")
            blk_acc ^= gu


_ZERO = [bytes(1 << 16)]


def _zero_bytes(n: int) -> memoryview:
    """A shared read-only zero buffer of n bytes (AES-CTR input)."""
    if len(_ZERO[0]) < n:
        _ZERO[0] = bytes(max(n, 2 * len(_ZERO[0])))
    return memoryview(_ZERO[0])[:n]


# ------------------------------------------------------------------ GGM trees
# The trees of a batch are expanded node-major, tree-minor: a level is (m, B, 2) (node i of every
# tree together), so a level's left children -- one AES call over all trees -- land contiguously in
# the first half of the next level (m, B) and the right children in the second, the per-tree tweak
# broadcasts along the long axis, and K0 is one reduction over axis 0.  The nodes, sums and leaves
# are those of the per-tree layout (protocol <= 31; tests/protocols/ot/test_ferret.py pins them):
# 4.2 + 0.5 against 6.2 ms per batch of 128 trees of 2^11 leaves alone, measured.  Since protocol
# 38 the engines consume the leaves in this node-major order (the LPN rows of a batch are leaf x of
# tree i at row x*B + i; the module docstring's "Output order"): only the public ggm_tree /
# ggm_punctured_tree still transpose to per-tree rows (:func:`_tree_major`).
def _ccr(aes: FixedKeyAES, nodes: np.ndarray, hi: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H(x, tw) = pi(z) ^ z, z = sigma(x) ^ tw, for nodes (..., 2) uint64 -> (..., 2).

    sigma(x) = (x_1, x_0 ^ x_1) on the 64-bit words (x_0 low): a linear orthomorphism (sigma
    and sigma ^ id are permutations), as in Guo et al. 2020; tw = (hi, 0), hi broadcast against
    ``nodes[..., 0]`` (one word per tree).  For a fixed tweak z is an affine orthomorphism of x, so
    H(., tw) is their MMO circular-correlation-robust hash (random-permutation model):
    H(x ^ Delta, tw) ^ b Delta looks random for unknown Delta.  ``out``: a C-contiguous uint64
    array whose leading ``nodes.size`` words receive H, with at least 2 words to spare (AES's
    output buffer); returned reshaped like nodes.
    """
    z = np.empty_like(nodes)
    np.bitwise_xor(nodes[..., 0], nodes[..., 1], out=z[..., 1])
    np.bitwise_xor(nodes[..., 1], hi, out=z[..., 0])
    if out is None:
        h = aes.permute(z)
    else:
        aes.permute_into(z, out)
        h = out.reshape(-1)[: z.size].reshape(z.shape)
    h ^= z
    return h


def _tweak(bsz: int, tree0: int, level: int, it: int) -> np.ndarray:
    """Per-tree tweak words: TAG_GGM | level << 8 | tree << 17 | it << 40 (level, tree and
    iteration distinct; the key is per session)."""
    return (_U64(_TAG_GGM | level << 8) | (np.arange(tree0, tree0 + bsz, dtype=_U64) << _U64(17))
            | (_U64(it) << _U64(40)))


def _expand(aes: FixedKeyAES, nodes: np.ndarray, tree0: int, level: int, it: int) -> tuple[np.ndarray, np.ndarray]:
    """Children of every node, node-major (m, B, 2) -> (2m, B, 2), side-major: child i = H(x_i)
    (left), child m + i = x_i ^ H(x_i) (right; the correlated GGM expansion of Half-Tree: the two
    children XOR to their parent).  Returns (children, K0) with K0 (B, 2) the XOR of the left
    children of each tree."""
    m, bsz, _ = nodes.shape
    ch = np.empty((2 * m, bsz, 2), dtype=_U64)
    left = _ccr(aes, nodes, _tweak(bsz, tree0, level, it)[None, :], out=ch)  # into ch[:m]
    np.bitwise_xor(nodes, left, out=ch[m:])
    return ch, np.bitwise_xor.reduce(left, axis=0)


def _tree_major(nodes: np.ndarray) -> np.ndarray:
    """(m, B, 2) node-major -> (B, m, 2) per-tree rows, transposed in column blocks that stay in
    cache (one plain strided copy of the 4 MB batch took 6x longer, measured)."""
    m, bsz, _ = nodes.shape
    src = nodes.view(np.complex128)[..., 0]  # one 16-byte item per node
    out = np.empty((bsz, m, 2), dtype=_U64)
    dst = out.view(np.complex128)[..., 0]
    step = 64
    for a in range(0, m, step):
        dst[:, a : a + step] = src[a : a + step].T
    return out


def ggm_tree(aes: FixedKeyAES, roots: np.ndarray, delta: np.ndarray, h: int, tree0: int = 0,
             it: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated GGM trees of depth h (Half-Tree, Guo et al., Eurocrypt 2023): level 1 is
    (root, root ^ Delta), every node x has children (H(x), x ^ H(x)), so every level XORs to
    Delta.  roots (B, 2), delta (2,) uint64.  Returns (leaves (B, 2^h, 2), sums (B, h, 2, 2)):
    ``sums[i, l, b]`` the XOR of the level-(l+1) nodes of tree i on side b,
    ``sums[i, l, 1] = sums[i, l, 0] ^ Delta``.  Nodes are side-major: level l+1 holds the
    side-0 children of level l's nodes, then the side-1 children, so leaf x's path takes side
    ``(x >> l) & 1`` at level l.  (The engine takes :func:`_ggm_nodes`'s node-major leaves.)
    """
    nodes, sums = _ggm_nodes(aes, roots, delta, h, tree0, it)
    return _tree_major(nodes), sums


def _ggm_nodes(aes: FixedKeyAES, roots: np.ndarray, delta: np.ndarray, h: int, tree0: int,
               it: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ggm_tree` with the leaves node-major: (2^h, B, 2), leaf x of tree i at [x, i]."""
    bsz = roots.shape[0]
    sums = np.empty((bsz, h, 2, 2), dtype=_U64)
    nodes = np.empty((2, bsz, 2), dtype=_U64)
    nodes[0] = roots
    np.bitwise_xor(roots, delta, out=nodes[1])
    sums[:, 0, 0] = roots
    for level in range(1, h):
        nodes, sums[:, level, 0] = _expand(aes, nodes, tree0, level, it)
    np.bitwise_xor(sums[:, :, 0], delta, out=sums[:, :, 1])
    return nodes, sums


def ggm_punctured_tree(aes: FixedKeyAES, opened: np.ndarray, side: np.ndarray, tree0: int = 0,
                       it: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every leaf but one from one level sum per level (the receiver's half of a single-point OT).

    opened: (B, h, 2) uint64, ``sums[i, l, side[i, l]]`` of :func:`ggm_tree`; side: (B, h) bits.
    At level l the path takes side ``1 - side[i, l]``.  Returns (leaves (B, 2^h, 2) with the
    punctured leaf zero, alpha (B,) its index).
    """
    leaves, alpha, _ = _punctured(aes, opened, side, tree0, it)
    return _tree_major(leaves), alpha


def _punctured(aes: FixedKeyAES, opened: np.ndarray, side: np.ndarray, tree0: int,
               it: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ggm_punctured_tree` with the leaves node-major ((2^h, B, 2), as :func:`_ggm_nodes`'),
    and the XOR of the known leaves (B, 2)."""
    bsz, h = side.shape
    rows = np.arange(bsz)
    b = side[:, 0].astype(np.int64)
    nodes = np.zeros((2, bsz, 2), dtype=_U64)  # node-major, as ggm_tree's
    nodes[b, rows] = opened[:, 0]
    known_sum = opened[:, 0].copy()  # XOR of the level's known nodes (all but the path node)
    path = 1 - b
    for level in range(1, h):
        m = nodes.shape[0]
        ch, left_sum = _expand(aes, nodes, tree0, level, it)
        # the path node is zero here: its two children are both H(0), garbage -- off the left
        # sum, and dropped; the known nodes' right children XOR to known_sum ^ their left ones
        left_sum ^= ch[path, rows]
        ch[path, rows] = 0
        ch[m + path, rows] = 0
        b = side[:, level].astype(np.int64)
        known = left_sum ^ (known_sum & (_U64(0) - b.astype(_U64))[:, None])  # side b's known XOR
        child = opened[:, level] ^ known
        ch[b * m + path, rows] = child
        known_sum ^= child  # a known node's two children XOR to it: only the new one adds
        path = (1 - b) * m + path
        nodes = ch
    return nodes, path, known_sum


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
        self.iterations = 0
        self.silent_bytes_sent = 0  # traffic of set-up and iterations (for the benchmarks)

    def _sub_seed(self) -> int | None:
        return None if self._rng is None else int(self._rng.integers(0, 2**62))

    def _keys(self, digest: bytes) -> None:
        self._ggm_aes = FixedKeyAES(derive_key(b"secureml-fe-ggm", digest))
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
        if k == 0:
            return np.empty((0, 2), dtype=_U64)
        parts = self._take_parts(k)
        if len(parts) == 1:
            return parts[0].copy() if copy else parts[0]
        return np.concatenate(parts)

    def _take_parts(self, k: int) -> list[np.ndarray]:
        """The next k buffered rows as views, one per buffer piece they lie in (no copy: for rows
        the caller keeps while other requests come and go, such as :meth:`reserve_cots`'; both
        parties' buffers have the same pieces)."""
        if k > self.available:
            raise RuntimeError("silent-OT buffer underrun (both parties must request alike)")
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
        return parts

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
        if self._iter >= _MAX_ITERATIONS:  # the tweak's iteration field would wrap onto used tweaks
            raise RuntimeError("silent-OT engine exhausted (2^24 iterations): start a new session")
        width = 1 << p.h
        i0 = self._tree
        i1 = min(p.t, i0 + max(1, _BATCH_ROWS >> p.h))
        # I2 / I3: node-major leaves, so the batch's row x*B + i is leaf x of tree i0 + i (B = i1 - i0)
        rows = self._spcot(self._spcot_base[i0:i1], i0, p.h).reshape(-1, 2)
        self._code(p).mul_xor(self._secret, i0 * width, rows)  # I4
        self._tree = i1
        self.ots_extended += rows.shape[0]
        if i1 == p.t:  # the iteration is complete: fresh GGM tweaks from here on
            self._iter += 1
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

    # the chosen-choice path of OTExtension*: checked mode is sound only on a checked S1 (the setter
    # refuses the switch after set-up; this guards engines whose flag was set around it)
    def _no_checked(self) -> None:
        if self.checked and not self._s1_checked:
            raise ValueError("checked OTs asked of a silent-OT engine whose S1 ran on the unchecked extension")


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
        leaves, sums = _ggm_nodes(self._ggm_aes, roots, self._s64, h, tree0, self._iter)
        msg = sums[:, :, 0] ^ base  # K^0_l ^ q_j: the receiver's t_j opens K^{r_j}
        leaves[..., 0] &= _LSB_CLEAR  # node-major (2^h, B, 2): the batch's rows in output order
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

    def random_bit_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`OTExtensionSender.random_bit_ot` (same messages, same outputs) without the
        derandomisation's pass over the rows: the pads of ``q ^ d Delta`` and ``q ^ d Delta ^
        Delta`` are those of q and q ^ Delta, swapped where d = 1 -- a swap of two bits."""
        self._no_checked()
        self.setup()
        self._ensure(n)
        assert self._aes is not None
        m0 = np.empty(n, dtype=np.uint8)
        m1 = np.empty(n, dtype=np.uint8)
        pos = 0
        while pos < n:  # the pieces of OTExtensionSender._rows (no pool: _plan's fresh pieces)
            k = min(self.piece, n - pos)
            d = unpack_bits(self.ch.recv_array(np.uint8, ((k + 7) // 8,)), k)
            q = self._take(k, copy=False)
            start = self._next_index(k)
            h0, x = self._hash_pair(q, start, "bits")  # H(q), H(q ^ Delta)
            x ^= h0  # m0 ^ m1, whatever d
            d &= x
            np.bitwise_xor(h0, d, out=m0[pos : pos + k])
            np.bitwise_xor(m0[pos : pos + k], x, out=m1[pos : pos + k])
            pos += k
        self.ch.flush()
        return m0, m1

    def cot_send(self, delta: np.ndarray, bits: int = 64) -> np.ndarray:
        """:meth:`OTExtensionSender.cot_send` (same messages, same outputs); one-word correlations
        skip the derandomisation's pass over the rows: the pads of ``q ^ d Delta`` and
        ``q ^ d Delta ^ Delta`` are those of q and q ^ Delta, swapped where d = 1."""
        delta = np.asarray(delta)
        if delta.ndim != 1 or delta.dtype != _U64 or self.checked:
            return super().cot_send(delta, bits=bits)
        nb, mask = _check_bits(bits)
        self.setup()
        n = delta.shape[0]
        self._ensure(n)
        assert self._aes is not None
        x0 = np.empty(n, dtype=_U64)
        piece = _piece_size(self.piece, 2)
        pos = 0
        while pos < n:  # the pieces of OTExtensionSender._rows (no pool: _plan's fresh pieces)
            k = min(piece, n - pos)
            d = unpack_bits(self.ch.recv_array(np.uint8, ((k + 7) // 8,)), k).astype(_U64)
            q = self._take(k, copy=False)
            start = self._next_index(k)
            h0, h1 = self._hash_pair(q, start, "word")  # H(q), H(q ^ Delta): word 0
            swap = h0 ^ h1
            np.negative(d, out=d)
            swap &= d
            h0 ^= swap  # m0 = H(q ^ d Delta)
            h1 ^= swap  # m1 = H(q ^ d Delta ^ Delta)
            tau = h0 + delta[pos : pos + k]  # m0 + delta - m1: m1 + tau = m0 + delta
            tau -= h1
            np.bitwise_and(h0, mask, out=x0[pos : pos + k])
            self.ch.send_array(_low_bytes(tau.reshape(k, 1), nb), owned=True)  # cot_recv's (k, w, nb)
            pos += k
        self.ch.flush()
        return x0

    def reserve_cots(self, n: int) -> np.ndarray:
        """Silent COTs for :meth:`cot_send_reserved`, whose choice bits the receiver takes as they
        come (:meth:`FerretReceiver.reserve_cots`): no derandomisation bit.  Runs the iterations
        they need now (sender -> receiver flights)."""
        self._no_checked()
        self.setup()
        self._ensure(n)
        self.ch.flush()
        return self._take_parts(n)

    def cot_send_reserved(self, handle: object, delta: np.ndarray, bits: int = 64) -> np.ndarray:
        """:meth:`cot_send` on reserved rows q (the receiver's choices are its random ones):
        returns x0; the receiver gets x0 + c * delta mod 2^bits."""
        parts: list[np.ndarray] = handle  # type: ignore[assignment]
        delta = np.asarray(delta)
        n = sum(p.shape[0] for p in parts)
        if delta.dtype != _U64 or delta.shape != (n,):
            raise ValueError("delta must be a uint64 vector, one entry per reserved COT")
        nb, mask = _check_bits(bits)
        assert self._aes is not None
        x0 = np.empty(n, dtype=_U64)
        for pos, qp in _pieces(parts, _piece_size(self.piece, 2)):
            k = qp.shape[0]
            start = self._next_index(k)
            h0, h1 = self._hash_pair(qp, start, "word")  # H(q), H(q ^ Delta): word 0
            tau = h0 + delta[pos : pos + k]  # m0 + delta - m1: m1 + tau = m0 + delta
            tau -= h1
            np.bitwise_and(h0, mask, out=x0[pos : pos + k])
            self.ch.send_array(_low_bytes(tau, nb), owned=True)
        self.ch.flush()
        return x0

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
        msg = self.ch.recv_array(_U64, (bsz, h, 2))
        r = (base[:, :, 0] & _U64(1)).astype(np.intp)  # (B, h)
        opened = msg ^ base  # K^0 ^ q_j ^ t_j = K^{r_j}
        leaves, alpha, others = _punctured(self._ggm_aes, opened, r, tree0, self._iter)
        leaves[..., 0] &= _LSB_CLEAR  # node-major (2^h, B, 2), as the sender's
        # V_alpha ^ Delta = XOR of the others (an honest tree's leaves XOR to Delta). The noise bit
        # e_alpha = 1 is ours, not the sender's: the XOR of honest leaves has bit 0 set anyway (V's bit 0
        # is clear, Delta's set), but a deviating sender's sums could clear it and erase tree i's noise,
        # making our choice bits e ^ A u noise-free linear -- solvable from derandomisation bits d = c ^ r
        # whose c it can predict (tests/protocols/ot/test_ferret.py::test_a_deviating_sender_...)
        others[:, 0] |= _U64(1)
        leaves[alpha, np.arange(bsz)] = others  # leaf alpha_i of tree i: output row alpha_i*B + i
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

    def reserve_cots(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n silent COTs for :meth:`cot_recv_reserved` and their choice bits, told now: (choices
        uint8 (n,), rows t).  The choices are the LPN outputs' ``e ^ A u`` -- pseudorandom to the
        sender, and never sent (no derandomisation bit)."""
        self._no_checked()
        self.setup()
        self._ensure(n)
        parts = self._take_parts(n)
        choices = np.empty(n, dtype=np.uint8)
        pos = 0
        for p in parts:  # bit 0 of each row: byte 0 (little endian)
            np.bitwise_and(p.view(np.uint8)[:, 0], np.uint8(1), out=choices[pos : pos + p.shape[0]])
            pos += p.shape[0]
        return choices, parts

    def cot_recv_reserved(self, handle: object, bits: int = 64) -> np.ndarray:
        """The COT on reserved rows t (:meth:`FerretSender.cot_send_reserved`): x0 + c * delta."""
        parts: list[np.ndarray] = handle  # type: ignore[assignment]
        nb, mask = _check_bits(bits)
        assert self._aes is not None
        n = sum(p.shape[0] for p in parts)
        out = np.empty(n, dtype=_U64)
        for pos, tp in _pieces(parts, _piece_size(self.piece, 2)):
            k = tp.shape[0]
            start = self._next_index(k)
            h = self._hash_word(tp, start)
            raw = self.ch.recv_array(np.uint8 if nb < 8 else _U64, (k, nb) if nb < 8 else (k,))
            tau = _from_low_bytes(raw, (k,), nb)
            tau &= _U64(0) - (tp[:, 0] & _U64(1))  # c * tau
            h += tau
            np.bitwise_and(h, mask, out=out[pos : pos + k])
        return out

    def precompute(self, n: int) -> None:
        """Offline phase, as :meth:`FerretSender.precompute`."""
        if n > 0:
            self._ensure(self.available + int(n))

    def random_cots(self, n: int) -> np.ndarray:
        """n silent COTs with random choices: t (n, 2) uint64, choice bit ``t & 1`` (see the sender's)."""
        self._ensure(n)
        return self._take(n)


def _pieces(parts: list[np.ndarray], piece: int) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, rows) of at most ``piece`` rows, part by part (the same on both sides)."""
    pos = 0
    for p in parts:
        for a in range(0, p.shape[0], piece):
            rows = p[a : a + piece]
            yield pos, rows
            pos += rows.shape[0]


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


def setup_one_way(ch: Channel, role: int, *, seed: int | None = None, params: LPNParams = FERRET_B11,
                  bootstrap: LPNParams | None = FERRET_B11_SETUP, checked: bool = False) -> FerretSender | FerretReceiver:
    """Only the direction in which role 1 chooses, as :func:`setup_pair` sets it up: role 0's sender,
    role 1's receiver (a protocol whose every OT has role 1 choosing). ``seed``: tests only."""
    engine = (FerretSender if role == 0 else FerretReceiver)(ch, seed=seed, params=params, bootstrap=bootstrap,
                                                             checked=checked)
    engine.setup()
    return engine
