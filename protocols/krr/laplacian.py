"""Double-blind exact Laplacian-kernel KRR prediction over oblivious transfer.

    prediction(q) = y_offset + sum_i alpha_i * exp(-||x_i - q||_1 / sigma)

Threat model (semi-honest, static), as for the Gaussian protocol: the *server* (model owner)
holds x_1..x_N, alpha, y_offset; the *client* (query owner) holds q. Public: N, d, sigma, the
fixed-point format and the feature bound, a bound on the weights' bit width
(:class:`~protocols.krr.params.PublicParams`). The client learns the prediction and nothing else;
the server learns nothing. No comparison bit, |x_ij - q_j|, L1 distance, kernel value or partial
sum is revealed to either party: every one of them exists only as two uniformly random shares.
Correlated randomness comes from OT between the two parties (silent OT or SoftSpoken extension,
both semi-honest; docs/ot-engine.md); no dealer.

The L1 distance needs N*d comparisons [x_ij < q_j] (5.7 million at N = 16,384, d = 351). Their
structure makes them cheap: the client's q_j is the same for all N training values of column j,
so one 1-out-of-2^m OT per column and digit carries the comparison bits of the whole column
(:mod:`protocols.krr.column_ot`); only the combination of digits and the final products cost an
OT per element. Entries are B-bit integers (B = ``pp.x_bits``), split into digits from the least
significant one, x = sum_k x^(k) 2^(a_k).

Protocol (:func:`l1_shares` and :func:`online`, which both parties run, carry the step numbers):
  1. Encode: x, q shifted by the public lower bound and scaled by 2^F (integers < 2^B). Models
     trained on the 2^-F grid (``CoulombMatrix(grid_bits=F)``) are encoded exactly.
  2. Digit 0, column OTs: for every column j the server builds the table
     T[v] = ([x^(0)_ij < v])_i XOR r_j over the candidates v of the client's digit; the client
     receives T[q^(0)_j]. Now c = [x^(0) < q^(0)] is XOR-shared: server r, client T[q^(0)].
  3. Digits k = 1, 2, ...: with c = c_S ^ c_C the comparison of the digits below,
        c' = [x^(k) < v] ^ ([x^(k) == v] & c) = [x^(k) < v + c]      (v: the client's digit),
     a threshold that is one of two known to the server once c_S is folded in:
     c_C = 0 gives [x^(k) < v + c_S], c_C = 1 gives [x^(k) < v + 1 - c_S].
     a. One random OT per element, the client choosing with c_C: the server gets bits (m0, m1),
        delta = m0 ^ m1, the client m_{c_C} = m0 ^ c_C delta. Nothing is corrected (the
        correlation may be random), so it costs one OT-extension column and no more.
     b. Column OT: per column and candidate v, two N-bit strings
           A = [x^(k) < v + c_S] ^ r_A,     B = [x^(k) < v + 1 - c_S] ^ r_A ^ delta
        (r_A fresh). The client takes (A, B) for its digit and keeps the one c_C selects.
     Shares of c': server r_A ^ m0; client (c_C ? B : A) ^ m_{c_C}. (For c_C = 0: A ^ m0; for
     c_C = 1: B ^ m0 ^ delta = [x < v + 1 - c_S] ^ r_A ^ m0.) After the top digit, b = [x < q] is
     XOR-shared: b = b_S ^ b_C.
     Client's view: A is masked by r_A; B by delta, which is hidden from a client that knows only
     m_{c_C} (if c_C = 0 it misses m1; if c_C = 1, A ^ B = ... ^ delta with delta unknown as m0 is):
     (A, B, m_{c_C}) is uniform whatever x is. The server's view is that of the OT extension.
  4. Products, mod 2^M: (q - x) b = q b_C - x b_S + b_S q(1 - 2 b_C) + b_C (-x (1 - 2 b_S)),
     the two cross terms from one COT each (client's correlation q(1 - 2 b_C), server's choice
     b_S; server's correlation -x(1 - 2 b_S), client's choice b_C).
     4a (protocol 28). Both parties set aside the COTs of the first product at the top digit
     (``reserve_cots``); the server takes their choice bits as its share b_S, through its free mask
     of that digit, r_A := b_S ^ m0 (or r := b_S if the top digit is the first). On silent OT those
     bits are the LPN outputs' e ^ A u, pseudorandom to the client (that COT's sender) and never
     sent, so the product needs no derandomisation bit; r_A stays uniform to the client (for
     c_C = 0 it knows m0, and b_S hides A as r_A did). IKNP-style engines draw them fresh.
  5. Local: shares of L_i = sum_j |x_ij - q_j| = sum_j x_ij - sum_j q_j + 2 sum_j (q_j - x_ij) b_ij.
  6.-12. From shares of L to the prediction: steps 4-10 of :mod:`protocols.krr.expsum` with
     t = L / (2^F sigma).

Cost per element (query entry x training point): the column OTs' 2^m_0 + sum_k 2 * 2^m_k bits, one
random OT per digit above the first, and two (M-1)-bit COTs (an OT plus 8 * ceil((M - 1) / 8)
correction bits each). The OTs come from the engine the public ``pp.ot_engine`` names:
  * "silent" (protocol version 14; :mod:`protocols.ot.ferret`, Ferret-style silent OT, LPN set b11):
    an OT with a chosen choice bit costs 1 bit (d = c ^ r) plus 0.70 bits of the LPN iterations'
    traffic (1.46 before protocol 28's Half-Tree trees), and ~90 ns of each party's CPU (protocol 28,
    N = 16,384, load ~6; protocol 31 with the fused LPN step: ~100 / 94 ns of the server's / client's
    against 118 / 112 in the same runs at load ~3, docs/double-blind/v31-cpu/). 15-bit entries (CM on the 2^-8 grid), M = 25: digits (3, 3, 3, 3, 3),
    tables 2^3 + 4 * 2 * 2^3 = 72 bits, four random OTs, two products (the first without a
    derandomisation bit, 4a): 9.0 + 0.85 + 6.3 = 16.2 bytes per element, 93.2 MB in the L1 step and
    99.7 MB per prediction at N = 16,384, d = 351 (protocol 24: 16.9, 97.2 and 104.0; protocols
    14-23: digits (5, 5, 5), 27.2 bytes; docs/double-blind.md, protocol 28).
    Served Laplacian models with at least ``SILENT_OT_MIN_ELEMENTS`` entries use it (below, its
    set-up -- 0.38 MB both ways since protocol 28, 0.58 before -- costs more than it saves).
  * "softspoken" (k = 4, 32 bits per OT): digits (5, 5, 5), 20 + 8 + 14 = 42 bytes per element
    (protocol version 6 sent 53: three tables and a one-byte-corrected COT per digit; four digits
    (4, 3, 4, 4) would send 38 but compute ~45% longer).
:func:`digit_levels` picks the digits per engine, weighing an OT's compute against traffic (silent
OT's random OT at ~20 bits' worth since protocol 24: five 3-bit digits; SoftSpoken's at 96: three
of 5 bits). Rounds: one per digit plus two (the
random OT travels with the column OT's request), then those of the exponential; silent OT adds its
set-up (SoftSpoken's, one COT extension and one one-way flight per direction).

Why not one 1-of-(N+1) "rank" OT per column over the sorted column: the client would have to
choose by rank(q_j), which it must not learn (it is the training set's empirical CDF at q_j);
masked by a server offset s_j it is free to learn, and then the comparison bits in the server's
sorted-and-rotated order are XOR-shared with no per-element traffic -- but in a different row
order per column. Summing over columns needs them in row order, i.e. comparisons of each row's
(secret) slot with the masked rank: again one comparison of ceil(log2(N+1)) bits per element,
15 bits at N = 16,384, no fewer than the 15-bit values themselves.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import expsum
from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.column_ot import column_ot
from protocols.krr.params import PublicParams
from protocols.mpc.context import PartyContext
from protocols.mpc.owner_cache import OwnerCache
from protocols.mpc.pages import prefer_small_pages

U64 = np.uint64
# the digit plan's cost model, per element and digit above the first, per OT engine (pp.ot_engine):
# the random OT's traffic and its compute, as bits worth the same.
# softspoken: one SoftSpoken k = 4 column, no correction (protocols.krr.registry.EXACT_SOFTSPOKEN_K);
# an OT-extension pass costs about as much time as 64 more bits on the wire save (N = 4,096,
# d = 351, both parties' CPU: digits (4, 3, 4, 4) 38.2 bytes per element and 1.85 s, (5, 5, 5)
# 42.4 bytes and 1.28 s, (6, 5, 4) 42.5 bytes and 1.22 s).
# silent: 1 bit (d = c ^ r) + 0.70 bits (LPN set b11's iteration traffic per COT since protocol 28's
# Half-Tree trees; 1.46 before). Its compute since
# protocol 24 (LPN columns by multiply-shift, leaf sums by folds; bench.laplacian_profile, N = 16,384,
# d = 351): ~90 ns of the server's CPU and ~70 ns of the client's per random OT, about 20 bits at the
# exchange rate of issue 15's target (100 MB against 3 s: 0.27 bits per ns). Weighed so, 15-bit
# entries get five digits of 3 bits: 9 bytes of tables per element instead of 20 for (5, 5, 5), for
# two more random OTs (measured: L1 step 97.2 against 157.2 MB, CPU +0.4 s per party; protocols
# 14-23 weighed an OT at 128 bits and chose (5, 5, 5)). A random OT's total (traffic 2 + compute 20 =
# 22 bits; 23 before protocol 28) below 24 gives (3, 3, 3, 3, 3) -- a sixth digit would pay only
# below 8 -- from 24 to 44 four digits (4, 3, 4, 4) (the search stops at
# five digits; seven, (3, 2, 2, 2, 2, 2, 2), measured 89.2 MB in the L1 step for
# ~+0.8 s of CPU per party: docs/double-blind.md, protocol 24).
_ROT_BITS = {"softspoken": 32, "silent": 2}
_ROT_WORK = {"softspoken": 64, "silent": 20}
_TABLE_BYTES = 48 << 20
# digits up to this width build their [x == v] tables by comparison (2^m passes), wider ones by
# one scatter per bit position (8 passes)
_EQ_BY_COMPARISON_BITS = 4  # column tables built and sent per block of columns


def _compositions(total: int, count: int, lo: int = 1, hi: int = 10) -> list[tuple[int, ...]]:
    """Tuples of ``count`` parts in [lo, hi] summing to ``total``, in lexicographic order (those
    ``itertools.product(range(lo, hi + 1), repeat=count)`` yields with that sum: 0.08 s of
    CPU per process for 15-bit entries spent on the other 10^5 tuples)."""
    if count == 0:
        return [()] if total == 0 else []
    out = []
    for first in range(lo, hi + 1):
        rest = total - first
        if (count - 1) * lo <= rest <= (count - 1) * hi:
            out.extend((first, *tail) for tail in _compositions(rest, count - 1, lo, hi))
    return out


def cheapest_digit_plan(x_bits: int, per_step: float) -> tuple[tuple[int, int], ...]:
    """Digit bit ranges [a, b), least significant first, of at most five digits that minimise
    2^m_0 + sum_(k > 0) (2 x 2^m_k + per_step) for B = x_bits: a digit's tables (one threshold at digit
    0, two above) in bits per element, plus ``per_step``, what each digit step above the first costs
    in bits-worth (this chain's random OT; the bound chain's commitments and MAC correction)."""
    best: tuple[float, tuple[int, ...]] | None = None
    for count in range(1, 6):
        for sizes in _compositions(x_bits, count):  # itertools.product's order, only the sums that fit
            cost = (1 << sizes[0]) + sum(2 * (1 << m) + per_step for m in sizes[1:])
            if best is None or cost < best[0]:
                best = (cost, sizes)
    if best is None:
        raise ValueError(f"no digit plan for {x_bits}-bit entries (at most 40 bits)")
    out, a = [], 0
    for m in best[1]:
        out.append((a, a + m))
        a += m
    return tuple(out)


@lru_cache(maxsize=None)
def digit_levels(x_bits: int, engine: str = "silent") -> tuple[tuple[int, int], ...]:
    """Digit bit ranges [a, b), least significant first, minimising the bits sent per element plus
    the random OTs' compute (as bits), for the OT engine ``engine`` (``PublicParams.ot_engine``)."""
    return cheapest_digit_plan(x_bits, _ROT_BITS[engine] + _ROT_WORK[engine])


def _pack(bits: np.ndarray, words: int) -> np.ndarray:
    """(d, N) 0/1 -> (d, words) uint64, bit i of row j at word i // 64, bit i % 64."""
    d, n = bits.shape
    if n == words * 64 and bits.dtype == np.uint8 and bits.flags.c_contiguous:  # no padding needed (N = 16,384)
        return np.packbits(bits, axis=1, bitorder="little").view(U64)
    buf = np.zeros((d, words * 64), dtype=np.uint8)
    buf[:, :n] = bits
    return np.packbits(buf, axis=1, bitorder="little").view(U64)


def _unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """(d, words) uint64 -> (d, n) uint8 bits."""
    d = packed.shape[0]
    return np.unpackbits(np.ascontiguousarray(packed).view(np.uint8).reshape(d, -1), axis=1,
                         bitorder="little")[:, :n]


def _digit_tables(digits: np.ndarray, m: int, words: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed [x < v] and [x == v] for every candidate v: (d, 2^m, words) uint64 each."""
    d, n = digits.shape
    eq = np.zeros((d, 1 << m, words * 8), dtype=np.uint8)
    if m <= _EQ_BY_COMPARISON_BITS:
        # few candidates: one comparison and one packbits pass per candidate (contiguous, ~3x
        # faster than the scatter below for 3-bit digits, measured)
        hit = np.empty((d, n), dtype=bool)
        for v in range(1 << m):
            np.equal(digits, v, out=hit)
            eq[:, v, : (n + 7) // 8] = np.packbits(hit, axis=1, bitorder="little")
    else:
        rows = np.arange(d)[:, None]
        for t in range(8):  # byte b of row v holds the bits of points 8b..8b+7 equal to v
            col = digits[:, t::8]
            eq[rows, col, np.arange(col.shape[1])[None, :]] |= np.uint8(1 << t)
    eq = eq.view(U64)
    lt = np.zeros_like(eq)
    # [x < v] = XOR over u < v of [x == u] (at most one u matches)
    np.bitwise_xor.accumulate(eq[:, :-1], axis=1, out=lt[:, 1:])
    return lt, eq


def _column_blocks(d: int, size: int, words: int):
    step = max(1, _TABLE_BYTES // (size * words * 8))
    for a in range(0, d, step):
        yield a, min(d, a + step)


# The server's digit tables [x < v] and [x == v] depend on the training data and the public digit plan
# only, not on the query: built once per model (prepare_server, or the first session) and kept while
# the encoded data XT lives, keyed by its identity -- only for a read-only XT (prepare_server's), whose
# content cannot change under the cache (0.18 s of the server's CPU per session at
# N = 16,384, d = 351 before; 57 MB kept there). Models whose tables would exceed the cap build them
# per session as before (e.g. SoftSpoken's 5-bit digits there: 138 MB).
_TABLES_MAX_BYTES = 96 << 20
_TABLES: OwnerCache[tuple[tuple, list]] = OwnerCache()


def _server_tables(XT: np.ndarray, levels: tuple[tuple[int, int], ...], W: int,
                   max_bytes: int | None = None) -> list | None:
    """Per digit, per column block (:func:`_column_blocks`, as :func:`l1_shares` walks them): the
    read-only (lt, eq) of :func:`_digit_tables`; None when they would exceed ``max_bytes`` (default
    ``_TABLES_MAX_BYTES``, read at the call) or XT is writeable (a caller could change it in place: no
    cache then)."""
    if XT.flags.writeable:
        return None
    d = XT.shape[0]
    if sum(2 * d * (1 << (b - a)) * W * 8 for a, b in levels) > (_TABLES_MAX_BYTES if max_bytes is None else max_bytes):
        return None
    key = (tuple(levels), W)

    def make() -> tuple[tuple, list]:
        out, dig_buf = [], None
        for k, (a, b) in enumerate(levels):
            m = b - a
            dig_buf = np.right_shift(XT, U64(a), out=dig_buf)
            dig_buf &= U64((1 << m) - 1)
            dig = dig_buf.view(np.intp)  # values < 2^m: the uint64 words read as intp unchanged
            blocks = []
            for j0, j1 in _column_blocks(d, 1 << m, W if k == 0 else 2 * W):
                lt, eq = _digit_tables(dig[j0:j1], m, W)
                lt.flags.writeable = eq.flags.writeable = False  # shared by every session of the model
                blocks.append((lt, eq))
            out.append(blocks)
        return key, out

    return _TABLES.get(XT, make, fits=lambda v: v[0] == key)[1]


def _rot_bits(party: PartyContext, choices: np.ndarray | None, n: int):
    """One random OT per element, one bit each: the sender (server) gets the bit pairs (m0, m1),
    the receiver (client, ``choices``) gets m_c. No correction is sent: the correlation
    m0 ^ m1 is random, which is all the digit step needs."""
    if choices is None:
        return party.ot_sender.random_bit_ot(n)
    return party.ot_receiver.random_bit_ot(choices)


def l1_shares(party: PartyContext, pp: PublicParams, N: int, *, XT: np.ndarray | None = None,
              q: np.ndarray | None = None, ring_bits: int | None = None) -> np.ndarray:
    """Steps 2-5 for one query, both roles: this party's shares (N,) of the L1 distances.

    The server (role 0) passes ``XT``, the encoded training data transposed (d, N); the client
    (role 1) its encoded query ``q`` (d,). Comparison bits c = [x < q] so far are XOR-shared:
    server c_S, client c_C. Shares are mod 2^``ring_bits`` (default ``pp.ring_bits``, which the
    client-malicious protocol also uses since protocol 32 and then lifts to 2^64 per point,
    :func:`protocols.krr.laplacian_malicious.lift`).
    """
    server = party.role == SERVER
    d = XT.shape[0] if server else q.shape[0]
    W = (N + 63) // 64
    M = pp.ring_bits if ring_bits is None else ring_bits
    mask = U64((1 << M) - 1)
    c = None
    dig_buf = None
    levels = digit_levels(pp.x_bits, pp.ot_engine)
    last = len(levels) - 1
    cached = _server_tables(XT, levels, W) if server else None
    for k, (a, b) in enumerate(levels):
        m = b - a
        words = W if k == 0 else 2 * W  # per column: [x < v], or the two thresholds (A, B)
        if k == last:
            # 4a. the COTs of product (i), set aside now: the server's choice bits there are the
            #     engine's own random ones (silent OT: no derandomisation bit), and the server makes
            #     them its share of b through its free mask r_A below
            if server:
                b_s, cot_i = party.ot_receiver.reserve_cots(d * N)
            else:
                cot_i = party.ot_sender.reserve_cots(d * N)
        if server:
            if cached is None:
                # the digit in one reused buffer (values < 2^m: the uint64 words read as intp unchanged)
                dig_buf = np.right_shift(XT, U64(a), out=dig_buf)
                dig_buf &= U64((1 << m) - 1)
                dig = dig_buf.view(np.intp)
            if k > 0:
                # 3. a random OT per element, the client choosing with c_C: delta = m0 ^ m1
                m0, m1 = _rot_bits(party, None, d * N)
                m0 = _pack(m0.reshape(d, N), W)
                delta = m0 ^ _pack(m1.reshape(d, N), W)
            if k < last:
                r = party.rng.random_u64((d, W))  # our next share (digit 0) / the tables' mask r_A
            else:  # our last share (r, or r_A ^ m0) is the reserved choice bits: uniform, secret
                r = _pack(b_s.reshape(d, N), W)
                if k > 0:
                    r ^= m0
            for blk, (j0, j1) in enumerate(_column_blocks(d, 1 << m, words)):
                lt, eq = cached[k][blk] if cached is not None else _digit_tables(dig[j0:j1], m, W)
                if k == 0:
                    # 2. first digit: [x < v] masked by r
                    column_ot(party, CLIENT, tables=lt ^ r[j0:j1, None, :])
                    continue
                # 3. higher digits: A = [x < v + c_S] ^ r_A, B = [x < v + 1 - c_S] ^ r_A ^ delta
                #    ([x < v + 1] = [x < v] ^ [x == v]: the two thresholds differ by eq)
                #    (built in place in the (columns, 2^m, 2W) table the column OT sends: no
                #    temporaries, no concatenation copy)
                tables = np.empty(lt.shape[:2] + (2 * W,), dtype=U64)
                A, B = tables[..., :W], tables[..., W:]
                np.bitwise_and(eq, c[j0:j1, None, :], out=A)
                A ^= lt
                A ^= r[j0:j1, None, :]
                np.bitwise_xor(A, eq, out=B)
                B ^= delta[j0:j1, None, :]
                column_ot(party, CLIENT, tables=tables)
            # our share: r (digit 0), r_A ^ m0 (higher digits)
            c = r if k == 0 else r ^ m0
        else:
            dig = (q >> U64(a)) & U64((1 << m) - 1)
            if k > 0:
                # 3. the random OT: our bit m_{c_C} (sent in the same flight as the column OT's)
                mc = _pack(_rot_bits(party, _unpack(c, N).ravel(), d * N).reshape(d, N), W)
            got = np.concatenate([column_ot(party, CLIENT, indices=dig[j0:j1], m=m, w=words)
                                  for j0, j1 in _column_blocks(d, 1 << m, words)])
            if k == 0:
                # 2. [x < q^(0)] ^ r for every column
                c = got
                continue
            # 3. the threshold our share c_C selects (v + c_S + c_C = v + c), unmasked by m_{c_C}
            A, B = got[:, :W], got[:, W:]
            c = A ^ (c & (A ^ B)) ^ mc
    # 4. products (q - x) b mod 2^M, b = b_S ^ b_C: two COTs, in this order --
    #    (i) the client's correlation q(1 - 2 b_C), the server's choice b_S;
    #    (ii) the server's correlation -x(1 - 2 b_S), the client's choice b_C
    #    Both mod 2^(M-1): P = sum_j (q_j - x_ij) b_ij < d 2^B <= 2^(M-1), and L needs only 2P mod
    #    2^M, which shares of P mod 2^(M-1) determine (2 (P + k 2^(M-1)) = 2P mod 2^M): one byte
    #    less per correction when M - 1 is a multiple of 8 (M = 25 for CM entries on the 2^-8 grid)
    half = U64((1 << (M - 1)) - 1)
    bits = _unpack(c, N)  # (d, N) uint8: multiplied as is (a uint64 copy would be one more 46 MB array)
    # (in place on (d, N) words: -x (1 - 2b) = 2xb - x and q (1 - 2b) = q - 2qb, with xb / qb
    # needed for P anyway -- fewer passes over the 46 MB arrays at N = 16,384)
    if server:
        t = party.ot_receiver.cot_recv_reserved(cot_i, bits=M - 1).reshape(d, N)  # choices: bits
        xb = np.multiply(XT, bits, dtype=U64)
        delta = np.add(xb, xb)
        delta -= XT
        delta &= half
        s = party.ot_sender.cot_send(delta.ravel(), bits=M - 1).reshape(d, N)
        t -= s
        t -= xb
        P = t.sum(axis=0, dtype=U64)
        # 5. L = sum_j x_ij - sum_j q_j + 2 sum_j (q_j - x_ij) b_ij  (server's part)
        return (XT.sum(axis=0, dtype=U64) + U64(2) * P) & mask
    qc = q.astype(U64)[:, None]
    qb = np.multiply(qc, bits, dtype=U64)
    delta = np.subtract(qc, qb)
    delta -= qb
    delta &= half
    s = party.ot_sender.cot_send_reserved(cot_i, delta.ravel(), bits=M - 1).reshape(d, N)
    t = party.ot_receiver.cot_recv(bits.ravel(), bits=M - 1).reshape(d, N)
    t -= s
    t += qb
    P = t.sum(axis=0, dtype=U64)
    # 5. our part of L
    return (U64(2) * P - q.astype(U64).sum(dtype=U64)) & mask


def prepare_server(model: KernelModelParams, pp: PublicParams) -> np.ndarray:
    """Step 1 for the server: the encoded training data transposed, (d, N) uint64.

    Query-independent, so computed once per model and public encoding (~0.17 s of CPU at
    N = 16,384, d = 351) and kept on the model -- in the attribute the client-malicious protocol's
    :func:`protocols.krr.laplacian_malicious.prepare_server` uses, with the same key and value.
    Also builds the digit tables of steps 2-3 for the public digit plan (:func:`_server_tables`:
    ~0.2 s more, 57 MB kept while the encoding lives, at that size).
    ``secureml serve`` and ``bench.krr_cost`` call it before the first client. Turns numpy's
    huge-page hint off for the process (:func:`protocols.mpc.pages.prefer_small_pages`: the
    session's system time, before any worker is forked)."""
    prefer_small_pages()
    key = (pp.frac_bits, pp.feature_lo, pp.feature_hi)
    enc = getattr(model, "_secureml_laplacian_encoded", None)
    if enc is None or enc[0] != key:
        XT = np.ascontiguousarray(pp.encode_features(model.X_train, "training data").T)
        XT.flags.writeable = False  # shared by every session (and the digit-table cache's key)
        enc = model._secureml_laplacian_encoded = (key, XT)
    # the digit tables of the public plan, before any client (kept while XT lives: _server_tables)
    _server_tables(enc[1], digit_levels(pp.x_bits, pp.ot_engine), (enc[1].shape[1] + 63) // 64)
    return enc[1]


def online(party: PartyContext, pp: PublicParams, k: int, *, model: KernelModelParams | None = None,
           Q: np.ndarray | None = None) -> np.ndarray | None:
    """Both roles, k queries: the server (role 0) passes ``model``, the client (role 1) its
    queries ``Q`` (k, d) and gets the k predictions (the server gets None)."""
    # both parties: no huge-page faults on the session's 46 MB arrays (protocols.mpc.pages: the
    # kernel's compaction on them cost the server 0.6-2.6 s more system time in the L1 step at
    # N = 16,384, d = 351, docs/double-blind.md stop 10)
    prefer_small_pages()
    # 1. encode
    if party.role == SERVER:
        XT = prepare_server(model, pp)  # cached per model
        L = np.stack([l1_shares(party, pp, pp.n_train, XT=XT) for _ in range(k)])
    else:
        q = pp.encode_features(np.atleast_2d(Q), "query")
        L = np.stack([l1_shares(party, pp, pp.n_train, q=qa) for qa in q])
    # 6.-12. exponential, weighted sum, output
    return expsum.kernel_sum(party, pp, L, model)


def server_l1_shares(party: PartyContext, XT: np.ndarray, pp: PublicParams) -> np.ndarray:
    """Server's steps 2-5 for one query (:func:`l1_shares`, role 0)."""
    return l1_shares(party, pp, XT.shape[1], XT=XT)


def client_l1_shares(party: PartyContext, q: np.ndarray, N: int, pp: PublicParams) -> np.ndarray:
    """Client's steps 2-5 for one encoded query ``q`` (d,) (:func:`l1_shares`, role 1)."""
    return l1_shares(party, pp, N, q=q)


def server_online(party: PartyContext, model: KernelModelParams, pp: PublicParams, k: int) -> None:
    """Model owner's side for k queries (:func:`online`, role 0)."""
    online(party, pp, k, model=model)


def client_online(party: PartyContext, pp: PublicParams, Q: np.ndarray) -> np.ndarray:
    """Query owner's side for the queries Q (k, d) (:func:`online`, role 1): the predictions."""
    return online(party, pp, np.atleast_2d(Q).shape[0], Q=Q)
