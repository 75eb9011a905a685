"""Double-blind exact Laplacian-kernel KRR prediction over oblivious transfer.

    prediction(q) = y_offset + sum_i alpha_i * exp(-||x_i - q||_1 / sigma)

Threat model (semi-honest, static), as for the Gaussian protocol: the *server* (model owner)
holds x_1..x_N, alpha, y_offset; the *client* (query owner) holds q. Public: N, d, sigma, the
fixed-point format and the feature bound, a bound on the weights' bit width
(:class:`~protocols.krr.params.PublicParams`). The client learns the prediction and nothing else;
the server learns nothing. No comparison bit, |x_ij - q_j|, L1 distance, kernel value or partial
sum is revealed to either party: every one of them exists only as two uniformly random shares.
Correlated randomness comes from OT between the two parties (IKNP extension); no dealer.

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
  3. Digits k = 1, 2, ..., column OTs: tables of three N-bit strings per candidate v,
        lt = [x^(k) < v] ^ r_l,   eq = [x^(k) == v] ^ r_e,   eqc = ([x^(k) == v] & c_S) ^ r_z,
     with c_S the server's share of c. The comparison so far becomes
        c' = lt_k  XOR  (eq_k AND c)         (lt_k and eq_k exclude each other)
     and the AND needs only one cross term beyond what the table delivered:
        eq_k AND c = r_e c_C  ^  eqc_C ^ r_z  ^  eq_C c_C       (eq_C, eqc_C: received),
     r_e c_C from one bit COT (server's correlation r_e, client's choice c_C). Shares of c':
     server r_l ^ r_z ^ x0, client lt_C ^ eqc_C ^ (eq_C & c_C) ^ (x0 ^ c_C r_e).
     After the top digit, b = [x < q] is XOR-shared: b = b_S ^ b_C.
  4. Products, mod 2^M: (q - x) b = q b_C - x b_S + b_S q(1 - 2 b_C) + b_C (-x (1 - 2 b_S)),
     the two cross terms from one COT each (client's correlation q(1 - 2 b_C), server's choice
     b_S; server's correlation -x(1 - 2 b_S), client's choice b_C).
  5. Local: shares of L_i = sum_j |x_ij - q_j| = sum_j x_ij - sum_j q_j + 2 sum_j (q_j - x_ij) b_ij.
  6.-12. From shares of L to the prediction: steps 4-10 of :mod:`protocols.krr.expsum` with
     t = L / (2^F sigma).

Cost per element (query entry x training point): one bit COT per digit above the first and two
M-bit COTs (each an OT-extension column -- 32 bits with SoftSpoken k = 4, 128 with IKNP -- plus
its correction), plus the column OTs' share, sum over digits of 2^m_k * (1 or 3) bits; the digit
sizes minimise the total (:func:`digit_levels`). Rounds: one
per digit plus two, then those of the exponential.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import expsum
from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.column_ot import column_ot
from protocols.krr.params import PublicParams
from protocols.mpc.context import PartyContext

U64 = np.uint64
# bits per one-bit COT in the digit plan's cost model: an IKNP column plus a one-byte correction.
# Under SoftSpoken (k = 4, 40 bits) a four-digit plan would send ~10% less but compute ~5% longer
# (N = 8,192, measured), so the plan keeps the IKNP weight: fewer digits, fewer passes.
_BIT_COT = 128 + 8
_TABLE_BYTES = 48 << 20  # column tables built and sent per block of columns


@lru_cache(maxsize=None)
def digit_levels(x_bits: int) -> tuple[tuple[int, int], ...]:
    """Digit bit ranges [a, b), least significant first, minimising the bits sent per element."""
    best: tuple[float, tuple[int, ...]] | None = None
    for count in range(1, 5):
        for sizes in itertools.product(range(1, 11), repeat=count):
            if sum(sizes) != x_bits:
                continue
            cost = (1 << sizes[0]) + sum(3 * (1 << m) + _BIT_COT for m in sizes[1:])
            if best is None or cost < best[0]:
                best = (cost, sizes)
    if best is None:
        raise ValueError(f"no digit plan for {x_bits}-bit entries (at most 40 bits)")
    out, a = [], 0
    for m in best[1]:
        out.append((a, a + m))
        a += m
    return tuple(out)


def _pack(bits: np.ndarray, words: int) -> np.ndarray:
    """(d, N) 0/1 -> (d, words) uint64, bit i of row j at word i // 64, bit i % 64."""
    d, n = bits.shape
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


def l1_shares(party: PartyContext, pp: PublicParams, N: int, *, XT: np.ndarray | None = None,
              q: np.ndarray | None = None) -> np.ndarray:
    """Steps 2-5 for one query, both roles: this party's shares (N,) of the L1 distances.

    The server (role 0) passes ``XT``, the encoded training data transposed (d, N); the client
    (role 1) its encoded query ``q`` (d,). Comparison bits c = [x < q] so far are XOR-shared:
    server c_S, client c_C.
    """
    server = party.role == SERVER
    d = XT.shape[0] if server else q.shape[0]
    W = (N + 63) // 64
    M = pp.ring_bits
    mask = U64((1 << M) - 1)
    c = None
    for k, (a, b) in enumerate(digit_levels(pp.x_bits)):
        m = b - a
        words = W if k == 0 else 3 * W  # per column: [x < v], or ([x < v], [x == v], [x == v] & c_S)
        if server:
            dig = ((XT >> U64(a)) & U64((1 << m) - 1)).astype(np.intp)
            r_l = party.rng.random_u64((d, W))
            if k > 0:
                r_e = party.rng.random_u64((d, W))
                r_z = party.rng.random_u64((d, W))
            for j0, j1 in _column_blocks(d, 1 << m, words):
                lt, eq = _digit_tables(dig[j0:j1], m, W)
                lt ^= r_l[j0:j1, None, :]
                if k == 0:
                    # 2. first digit: [x < v] masked by r_l
                    column_ot(party, CLIENT, tables=lt)
                    continue
                # 3. higher digits: (lt, eq, eq & c_S), each masked
                eqc = eq & c[j0:j1, None, :]
                eq ^= r_e[j0:j1, None, :]
                eqc ^= r_z[j0:j1, None, :]
                column_ot(party, CLIENT, tables=np.concatenate([lt, eq, eqc], axis=2))
            if k == 0:
                c = r_l
                continue
            # 3. one bit COT for the cross term r_e c_C (our correlation r_e, the client's choice c_C)
            x0 = party.ot_sender.cot_send(_unpack(r_e, N).ravel().astype(U64), bits=1)
            c = r_l ^ r_z ^ _pack(x0.reshape(d, N).astype(np.uint8), W)
        else:
            dig = (q >> U64(a)) & U64((1 << m) - 1)
            got = np.concatenate([column_ot(party, CLIENT, indices=dig[j0:j1], m=m, w=words)
                                  for j0, j1 in _column_blocks(d, 1 << m, words)])
            if k == 0:
                # 2. [x < q^(0)] ^ r_l for every column
                c = got
                continue
            # 3. (lt, eq, eqc) for our digit; one bit COT with choice c_C
            lt_C, eq_C, eqc_C = got[:, :W], got[:, W:2 * W], got[:, 2 * W:]
            cot = party.ot_receiver.cot_recv(_unpack(c, N).ravel(), bits=1)
            c = lt_C ^ eqc_C ^ (eq_C & c) ^ _pack(cot.reshape(d, N).astype(np.uint8), W)
    # 4. products (q - x) b mod 2^M, b = b_S ^ b_C: two COTs, in this order --
    #    (i) the client's correlation q(1 - 2 b_C), the server's choice b_S;
    #    (ii) the server's correlation -x(1 - 2 b_S), the client's choice b_C
    bits = _unpack(c, N)  # (d, N)
    b64 = bits.astype(U64)
    if server:
        t = party.ot_receiver.cot_recv(bits.ravel(), bits=M).reshape(d, N)
        delta = (U64(0) - XT * (U64(1) - U64(2) * b64)) & mask
        s = party.ot_sender.cot_send(delta.ravel(), bits=M).reshape(d, N)
        P = (t - s - XT * b64).sum(axis=0, dtype=U64)
        # 5. L = sum_j x_ij - sum_j q_j + 2 sum_j (q_j - x_ij) b_ij  (server's part)
        return (XT.sum(axis=0, dtype=U64) + U64(2) * P) & mask
    qc = q.astype(U64)[:, None]
    delta = (qc * (U64(1) - U64(2) * b64)) & mask
    s = party.ot_sender.cot_send(delta.ravel(), bits=M).reshape(d, N)
    t = party.ot_receiver.cot_recv(bits.ravel(), bits=M).reshape(d, N)
    P = (t - s + qc * b64).sum(axis=0, dtype=U64)
    # 5. our part of L
    return (U64(2) * P - q.astype(U64).sum(dtype=U64)) & mask


def online(party: PartyContext, pp: PublicParams, k: int, *, model: KernelModelParams | None = None,
           Q: np.ndarray | None = None) -> np.ndarray | None:
    """Both roles, k queries: the server (role 0) passes ``model``, the client (role 1) its
    queries ``Q`` (k, d) and gets the k predictions (the server gets None)."""
    # 1. encode
    if party.role == SERVER:
        XT = np.ascontiguousarray(pp.encode_features(model.X_train, "training data").T)
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
