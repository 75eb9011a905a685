"""Gilboa's OT-based products over Z_2^64: the one core of every Gilboa product in the project.

Gilboa (CRYPTO 1999, "Two party RSA key generation") multiplies a value ``x`` held by the
*correlation holder* (the OT sender) with a value ``y = sum_i 2^i y_i`` held by the *chooser* (the
OT receiver) using one correlated OT per bit of ``y``: for bit ``i`` the holder inputs the
correlation ``x``; the chooser, with choice ``y_i``, obtains ``t_i = s_i + y_i * x (mod 2^(64-i))``
while the holder keeps the random ``s_i``.  Then ``sum_i 2^i t_i - sum_i 2^i s_i = x * y (mod
2^64)``.  Because bit ``i`` is scaled by ``2^i``, only the low ``64 - i`` bits of its correlation
matter, so the correction for bit ``i`` needs ``64 - i`` bits (the OT engine sends
``ceil(bits/8)`` bytes; bits whose widths round to the same byte count share one COT call:
:func:`bit_groups`).

The core -- :func:`bit_groups`, :func:`choice_bits`, :func:`bit_weights` -- is shared by the
64-bit products here, the 128-bit inner products of exact KRR (:mod:`protocols.mpc.gilboa128`)
and the pipelined inner products of compact models (:func:`inner_products_pipelined`).

Each product is one function both parties call with the same public arguments (the MPyC style):
``chooser`` names the party whose private input is decomposed into OT choice bits; the other
party is the correlation holder. Each passes its own input (``x`` or ``y``) and gets its share.

The matrix-vector product ``X @ y`` (holder has ``X`` of shape (n, d), chooser has ``y`` of
length d) uses one COT per (column j, bit i) whose correlation is the whole column ``X[:, j]`` --
an n-long vector OLE: d * y_bits COTs instead of n * d * y_bits.

Threat model: semi-honest (honest-but-curious) parties.  The chooser sees only COT outputs,
each masked by the holder's fresh pseudo-random pad ``s_i`` (uniform mod 2^(64-i)); the holder
sees only OT-extension messages, which are independent of the choice bits.  Public: the shapes
(n, d), ``y_bits`` and whether ``y`` is signed.  Outputs are additive shares mod 2^64: the
holder's share is ``-sum 2^i s_i`` (uniform, since ``s_0`` is uniform mod 2^64), the chooser's
is the rest.

Signed ``y``: with ``signed=True`` the chooser's ``y`` is a two's-complement value in
``[-2^(y_bits-1), 2^(y_bits-1))``; it offsets ``y' = y + 2^(y_bits-1)`` (non-negative, < 2^y_bits)
and the holder subtracts ``x * 2^(y_bits-1)`` from its share -- same cost, no leak.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from protocols.mpc.context import PartyContext
from protocols.ot.pool import cot_recv_pooled, cot_send_pooled, spend_recv, spend_send
from protocols.ot.softspoken import cot_recv_many, cot_send_many
from secureml.errors import DataError

U64 = np.uint64
#: default memory budget for one COT call's correlation matrix in matvec (bytes)
MATVEC_CHUNK_BYTES = 32 << 20


# ---- the core: which bits travel together, the chooser's bits, their weights ----------------
def bit_groups(y_bits: int, ring_bits: int = 64) -> list[tuple[int, int, int]]:
    """Split bit positions 0..y_bits-1 into runs with the same correction byte width.

    Returns (first_bit, end_bit, bits) triples; ``bits = ring_bits - first_bit`` is enough for
    every bit in the run (a larger modulus is harmless after scaling by 2^i). A caller that only
    needs the result modulo 2^ring_bits saves the top bytes of every correction; 128-bit products
    pass ``ring_bits=128``.
    """
    groups: list[tuple[int, int, int]] = []
    i = 0
    while i < y_bits:
        nbytes = (ring_bits - i + 7) // 8
        j = i
        while j < y_bits and (ring_bits - j + 7) // 8 == nbytes:
            j += 1
        groups.append((i, j, ring_bits - i))
        i = j
    return groups


def rounded_groups(y_bits: int, ring_bits: int, round_bits: int) -> list[tuple[int, int, int, int]]:
    """:func:`bit_groups` for rounded corrections (:func:`inner_products_pipelined`): bit i's
    correction drops its lowest c_i = max(0, L - i) bits (L = ``round_bits``), so it needs
    ring_bits - max(i, L) bits. Returns (first_bit, end_bit, bits, kept) runs with the same byte
    width ceil(kept / 8); ``bits = ring_bits - first_bit`` as in :func:`bit_groups`."""
    kept = [ring_bits - max(i, round_bits) for i in range(y_bits)]
    groups: list[tuple[int, int, int, int]] = []
    i = 0
    while i < y_bits:
        j = i
        while j < y_bits and (kept[j] + 7) // 8 == (kept[i] + 7) // 8:
            j += 1
        groups.append((i, j, ring_bits - i, kept[i]))
        i = j
    return groups


def rounding_sd(n_terms: int, round_bits: int) -> float:
    """Standard deviation (units of the product) of the error rounded corrections add to one
    inner product of ``n_terms`` chosen bits: each chosen bit i < L misses 2^i u, u uniform on
    [0, 2^(L - i)), re-centred; at most 2^L / sqrt(12) each."""
    return float(2.0**round_bits * np.sqrt(n_terms / 12.0)) if round_bits > 0 else 0.0


def choice_bits(y: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """Bits i0..i1-1 of every element of y, bit-major: shape (i1 - i0, *y.shape), uint8."""
    shifts = np.arange(i0, i1, dtype=U64).reshape((-1,) + (1,) * y.ndim)
    return ((y[None] >> shifts) & U64(1)).astype(np.uint8)


def bit_weights(i0: int, i1: int) -> np.ndarray:
    """2^i for i in i0..i1-1 (uint64)."""
    return (U64(1) << np.arange(i0, i1, dtype=U64)).astype(U64)


def _check_y_bits(y_bits: int) -> int:
    y_bits = int(y_bits)
    if not 1 <= y_bits <= 64:
        raise DataError(f"y_bits must be in 1..64, got {y_bits}")
    return y_bits


def _offset_y(y: np.ndarray, y_bits: int, signed: bool) -> np.ndarray:
    """Validate the chooser's input and map signed values to [0, 2^y_bits)."""
    y = np.ascontiguousarray(y, dtype=U64)
    if signed:
        y = y + U64(1 << (y_bits - 1))
    if y_bits < 64 and y.size and int(y.max()) >> y_bits:
        kind = "signed" if signed else "unsigned"
        raise DataError(f"receiver input does not fit in {y_bits} {kind} bits")
    return y


# ---- elementwise product and inner product --------------------------------------------------
def gilboa_mul(p: PartyContext, chooser: int, x: np.ndarray | None = None, y: np.ndarray | None = None,
               *, y_bits: int, signed: bool = False) -> np.ndarray:
    """Shares of ``x * y`` (elementwise, mod 2^64); both parties call it.

    The chooser passes ``y`` (``y_bits`` bits, optionally signed), the other party ``x``.
    Steps:
      1. the chooser offsets y if signed and sends the header (sizes, y_bits, signedness); the
         holder checks it;
      2. for each run of bits [i0, i1) (same correction width, :func:`bit_groups`): one COT per
         bit and element, the holder's correlation ``x`` repeated once per bit,
         ``bits = 64 - i0``; the chooser's choices are the bits ``y_i`` and it gets
         ``t_i = s_i + y_i x (mod 2^(64-i0))``; the holder keeps the pads ``s_i``;
      3. chooser's share = sum_i 2^i t_i; holder's = -sum_i 2^i s_i (minus ``x * 2^(y_bits-1)``
         when ``signed``).
    """
    y_bits = _check_y_bits(y_bits)
    choosing = p.role == chooser
    if choosing:
        y = np.ascontiguousarray(y, dtype=U64).ravel()
        y = _offset_y(y, y_bits, signed)  # validate before talking, so a bad input fails fast
        n = y.shape[0]
    else:
        x = np.ascontiguousarray(x, dtype=U64).ravel()
        n = x.shape[0]
    p.check_peer("gilboa-mul", {"n": n, "y_bits": y_bits, "signed": bool(signed)}, announce=choosing)
    share = np.zeros(n, dtype=U64)
    if n == 0:
        return share
    for i0, i1, bits in bit_groups(y_bits):
        k = i1 - i0
        w = bit_weights(i0, i1)[:, None]
        if choosing:
            t = p.ot_receiver.cot_recv(choice_bits(y, i0, i1).ravel(), w=1, bits=bits).reshape(k, n)
            share += (t * w).sum(axis=0, dtype=U64)
        else:
            s = p.ot_sender.cot_send(np.tile(x, k), bits=bits).reshape(k, n)
            share -= (s * w).sum(axis=0, dtype=U64)
    if signed and not choosing:
        share -= x * U64(1 << (y_bits - 1))
    return share


def inner_product(p: PartyContext, chooser: int, x: np.ndarray | None = None, y: np.ndarray | None = None,
                  *, y_bits: int, signed: bool = False) -> np.uint64:
    """Share of ``sum_i x_i y_i``: :func:`gilboa_mul`, summed locally."""
    return np.uint64(gilboa_mul(p, chooser, x, y, y_bits=y_bits, signed=signed).sum(dtype=U64))


def inner_products_pipelined(p: PartyContext, chooser: int, x: np.ndarray | None = None,
                             y: np.ndarray | None = None, *, y_bits: int, ring_bits: int = 64,
                             k: int = 1, pool: Any = None, round_bits: int = 0) -> np.ndarray:
    """Shares (k,) mod 2^ring_bits of ``y[a] . x`` for k rows ``y`` (k, n) of the chooser and
    one vector ``x`` (n,) of the holder, all COTs in one pipelined exchange (SoftSpoken engines,
    :func:`protocols.ot.softspoken.cot_send_many`).

    Steps (y non-negative, < 2^y_bits; the caller checks the peer's parameters first):
      1. for every run of bits [i0, i1) (:func:`bit_groups` in Z_2^ring_bits): one COT per
         (bit i, row a, element j), bit-major, the holder's correlation ``x_j``, trimmed to
         ring_bits - i0 bits;
      2. chooser: sum over j and i of 2^i t; holder: minus the same sum of its pads s.
    Shares are correct modulo 2^ring_bits only (the caller masks them).
    ``pool``: a checked random-OT pool of this session's ticket (:mod:`protocols.ot.pool`), whose
    next OTs serve as the COTs (derandomised: one message each way, no extension); the caller has
    agreed with the peer that it is used.

    ``round_bits`` = L > 0 (pooled COTs only; both sides pass the same public L): **rounded
    corrections**. Bit i's correction tau drops its lowest c_i = max(0, L - i) bits
    (:func:`rounded_groups`: every correction then needs ring_bits - max(i, L) bits instead of
    ring_bits - i). The chooser's t for a chosen bit misses (tau mod 2^c_i), which is uniform on
    [0, 2^c_i) to it: tau = a0 + x_j - a1 mod 2^(ring_bits - i), and a0 is the pad of the
    pooled OT it did not choose (never seen, never reused). It adds the known mean back
    (2^i (2^c_i - 1) / 2 per chosen bit, floored), so the reconstructed product is
    ``y . x + E`` with E a sum of independent centred uniform terms, |each| < 2^(L-1), whose
    distribution depends only on the chooser's own bits (sd <= :func:`rounding_sd`), never on x:
    the chooser learns nothing beyond y . x + E, a noisy copy of what it may learn. The holder's
    share and view are unchanged.
    """
    rounded = pool is not None and round_bits > 0
    if rounded:
        rgroups = rounded_groups(y_bits, ring_bits, round_bits)
        groups = [(i0, i1, bits) for i0, i1, bits, _ in rgroups]
        kept: list[int] | None = [kb for *_, kb in rgroups]
    else:
        groups, kept = bit_groups(y_bits, ring_bits), None
    widths = [bits for _, _, bits in groups]
    if p.role == chooser:
        y = np.atleast_2d(np.ascontiguousarray(y, dtype=U64))
        k, n = y.shape
    else:
        x = np.ascontiguousarray(x, dtype=U64).ravel()
        n = x.shape[0]
    # per group and bit, the low bits each correction drops (bit-major: k * n OTs per bit)
    drops = [np.maximum(0, round_bits - np.arange(i0, i1)).astype(U64) for i0, i1, _ in groups] if rounded else None
    if p.role == chooser:
        flat = y.ravel()
        choices = [choice_bits(flat, i0, i1).ravel() for i0, i1, _ in groups]
        got = (cot_recv_many(p.ot_receiver, choices, widths) if pool is None
               else cot_recv_pooled(p.ch, pool, choices, widths, *((drops, kept) if rounded else ())))
        sign = 1
    else:
        corr = np.tile(x, k)
        deltas = [np.tile(corr, i1 - i0) for i0, i1, _ in groups]
        got = (cot_send_many(p.ot_sender, deltas, widths) if pool is None
               else cot_send_pooled(p.ch, pool, deltas, widths, *((drops, kept) if rounded else ())))
        sign = -1
    share = np.zeros(k, dtype=U64)
    for g, ((i0, i1, _), t) in enumerate(zip(groups, got)):
        part = (t.reshape(i1 - i0, k, n).sum(axis=2, dtype=U64)
                << np.arange(i0, i1, dtype=U64)[:, None]).sum(axis=0, dtype=U64)
        if sign > 0 and rounded:
            # re-centre: a chosen bit i missed tau mod 2^c_i, mean (2^c_i - 1) / 2, weight 2^i
            ones = choices[g].reshape(i1 - i0, k, n).sum(axis=2, dtype=U64)
            c = np.maximum(0, round_bits - np.arange(i0, i1))
            mean = np.array([((1 << int(ci)) - 1) << int(i) >> 1 for i, ci in zip(range(i0, i1), c)], dtype=U64)
            part = part + (ones * mean[:, None]).sum(axis=0, dtype=U64)
        share = share + part if sign > 0 else share - part
    return share


def precorrected_layout(k: int, n: int, y_bits: int, ring_bits: int, round_bits: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Entry order and correction widths of a precorrected pool (:mod:`protocols.ot.pool` R4) for
    k inner products of n entries: query-major blocks (row a, then bit i, then element j), so a
    later session with k' <= k rows spends whole blocks. Returns (element index j per entry,
    correction bytes per entry = ceil((ring_bits - max(i, L)) / 8), the low bits each correction
    drops, max(0, L - i), or None for exact corrections); L = ``round_bits`` as in
    :func:`inner_products_pipelined`."""
    i = np.arange(y_bits)
    j = np.tile(np.arange(n), k * y_bits)
    nb = np.repeat(np.tile((ring_bits - np.maximum(i, round_bits) + 7) // 8, k), n)
    drops = np.repeat(np.tile(np.maximum(0, round_bits - i), k), n).astype(U64) if round_bits > 0 else None
    return j, nb, drops


def inner_products_precorrected(p: PartyContext, chooser: int, x: np.ndarray | None = None,
                                y: np.ndarray | None = None, *, y_bits: int, ring_bits: int = 64,
                                k: int = 1, pool: Any = None, round_bits: int = 0) -> np.ndarray:
    """Shares (k,) mod 2^ring_bits of ``y[a] . x`` on a precorrected pool (its COTs made after
    the previous reply with the holder's ``x_j`` as correlations, :func:`precorrected_layout`):
    the chooser sends d = b ^ r (one bit per bit of y, query-major) and nothing comes back here;
    the holder's share per COT is x0 or -x0 - x_j by d, the chooser's t or -t
    (:func:`protocols.ot.pool.spend_send`). Shares as :func:`inner_products_pipelined`.
    ``round_bits`` = L > 0: the pool was precorrected with rounded corrections (the same public L):
    an entry with r = 1 is off by -e (b = 1) or +e (b = 0), e = tau mod 2^c_i uniform to the
    chooser; it adds the known mean back with that sign (y . x + E, E centred, independent of x)."""
    w = U64(1) << np.arange(y_bits, dtype=U64)
    if p.role == chooser:
        y = np.atleast_2d(np.ascontiguousarray(y, dtype=U64))
        k, n = y.shape
        b = ((y[:, None, :] >> np.arange(y_bits, dtype=U64)[None, :, None]) & U64(1)).astype(np.uint8)
        r = pool.r[: b.size].reshape(k, y_bits, n).astype(np.int64) if round_bits > 0 else None
        c = spend_recv(p.ch, pool, b.ravel()).reshape(k, y_bits, n)
        share = (c.sum(axis=2, dtype=U64) * w[None]).sum(axis=1, dtype=U64)
        if r is not None:  # re-centre: +mean where r = b = 1, -mean where r = 1, b = 0
            cb = np.maximum(0, round_bits - np.arange(y_bits))
            mean = np.array([((1 << int(ci)) - 1) << int(i) >> 1 for i, ci in enumerate(cb)], dtype=np.int64)
            sign = (r * (2 * b.astype(np.int64) - 1)).sum(axis=2)  # (k, y_bits)
            share = share + (sign * mean[None]).sum(axis=1).astype(np.int64).view(U64)
        return share
    n = np.asarray(x).ravel().shape[0]
    s = spend_send(p.ch, pool, k * y_bits * n).reshape(k, y_bits, n)
    return U64(0) - (s.sum(axis=2, dtype=U64) * w[None]).sum(axis=1, dtype=U64)


# ---- matrix-vector product ------------------------------------------------------------------
def auto_chunk_cols(n: int, y_bits: int, budget_bytes: int = MATVEC_CHUNK_BYTES) -> int:
    """Columns per COT batch so that one batch's (columns * bits, n) uint64 matrix fits the budget."""
    per_col = max(1, n) * 8 * max(1, min(y_bits, 8))
    return max(1, budget_bytes // per_col)


def _col_chunks(d: int, chunk_cols: int) -> list[tuple[int, int]]:
    return [(a, min(d, a + chunk_cols)) for a in range(0, d, chunk_cols)]


def matvec(p: PartyContext, chooser: int, X: np.ndarray | None = None, y: np.ndarray | None = None,
           *, y_bits: int, n: int | None = None, chunk_cols: int | None = None, signed: bool = False,
           ring_bits: int = 64) -> np.ndarray:
    """Shares (n,) of ``X @ y``; both parties call it. The holder passes ``X`` (n, d), the
    chooser ``y`` (d,) and ``n``.

    Vector OLE from COT: one COT per (column j, bit i of y_j) with the n-long correlation
    ``X[:, j]``.  Memory is bounded by processing ``chunk_cols`` columns at a time (default:
    :func:`auto_chunk_cols`, ~32 MB of correlations per COT call); both sides must use the same
    ``chunk_cols`` (checked).

    Steps:
      1. the chooser offsets y if signed and sends the header (n, d, y_bits, chunk_cols, signed,
         ring_bits); the holder checks it;
      2. for each column chunk [a, b) and each run of bits [i0, i1): the holder's COT
         correlations are ``X[:, j]`` for j in [a, b), repeated per bit (shape ((b-a)(i1-i0), n)),
         bits = ring_bits - i0; the chooser's choices are bit i of y_j, vector width n, and it
         gets ``t_{j,i} = s_{j,i} + y_{j,i} X[:, j]``;
      3. chooser: share = sum_{j,i} 2^i t_{j,i}; holder: share = -sum_{j,i} 2^i s_{j,i}
         (minus ``2^(y_bits-1) * X.sum(1)`` when ``signed``).
    Traffic: d * y_bits OTs + sum_i n * ceil((ring_bits-i)/8) bytes per column.
    With ``ring_bits`` < 64 the shares are correct modulo 2^ring_bits only (callers that work in a
    smaller ring, e.g. squared distances with a known bound, save the corrections' top bytes).
    """
    y_bits = _check_y_bits(y_bits)
    choosing = p.role == chooser
    if choosing:
        y = np.ascontiguousarray(y, dtype=U64).ravel()
        d = y.shape[0]
        n = int(n)
        y = _offset_y(y, y_bits, signed)  # validate before talking, so a bad input fails fast
    else:
        X = np.ascontiguousarray(X, dtype=U64)
        if X.ndim != 2:
            raise DataError(f"matvec needs a 2-D matrix, got shape {X.shape}")
        n, d = X.shape
    chunk_cols = auto_chunk_cols(n, y_bits) if chunk_cols is None else int(chunk_cols)
    if chunk_cols < 1:
        raise DataError("chunk_cols must be >= 1")
    p.check_peer(
        "gilboa-matvec",
        {"n": n, "d": d, "y_bits": y_bits, "chunk_cols": chunk_cols, "signed": bool(signed),
         "ring_bits": int(ring_bits)},
        announce=choosing,
    )
    share = np.zeros(n, dtype=U64)
    if n == 0 or d == 0:
        return share
    XT = None if choosing else np.ascontiguousarray(X.T)  # column j as a contiguous row
    for a, b in _col_chunks(d, chunk_cols):
        c = b - a
        for i0, i1, bits in bit_groups(y_bits, ring_bits):
            k = i1 - i0
            w = bit_weights(i0, i1)
            if choosing:
                choices = choice_bits(y[a:b], i0, i1).ravel()  # (k * c,) bit-major
                t = p.ot_receiver.cot_recv(choices, w=n, bits=bits).reshape(k, c, n)
                for r in range(k):  # k <= 8 rows of weights; each is a vectorised (c, n) op
                    share += (t[r] * w[r]).sum(axis=0, dtype=U64)
            else:
                # row order: bit-major then column -> (k, c, n)
                delta = np.broadcast_to(XT[a:b][None], (k, c, n)).reshape(k * c, n)
                s = p.ot_sender.cot_send(delta, bits=bits).reshape(k, c, n)
                for r in range(k):
                    share -= (s[r] * w[r]).sum(axis=0, dtype=U64)
    if signed and not choosing:
        share -= X.sum(axis=1, dtype=U64) * U64(1 << (y_bits - 1))
    return share


# ---- products with a shared factor ----------------------------------------------------------
def mul_shared_private(
    p: PartyContext,
    x_share: np.ndarray,
    holder: int,
    y: np.ndarray | None = None,
    y_bits: int = 64,
    *,
    signed: bool = False,
) -> np.ndarray:
    """Share of ``x * y`` (elementwise) where x is secret-shared and y is private to ``holder``.

    Steps: 1. the holder multiplies its own share locally: ``x_h * y``;
           2. one Gilboa product for the peer's share: the peer holds the correlation
              ``x_peer``, the holder chooses with the bits of y (``y_bits``, optionally signed);
           3. holder: ``x_h y + t``; peer: ``s``  (t + s = x_peer y).
    Threat model as for :func:`gilboa_mul`; the peer learns nothing about y.
    """
    x_share = np.ascontiguousarray(x_share, dtype=U64)
    if p.role == holder:
        if y is None:
            raise DataError("the holder must pass its private y")
        y = np.ascontiguousarray(y, dtype=U64)
        if y.shape != x_share.shape:
            raise DataError(f"x share {x_share.shape} and y {y.shape} differ in shape")
        t = gilboa_mul(p, holder, y=y.ravel(), y_bits=y_bits, signed=signed)
        return (x_share * y + t.reshape(y.shape)).reshape(x_share.shape)
    s = gilboa_mul(p, holder, x=x_share.ravel(), y_bits=y_bits, signed=signed)
    return s.reshape(x_share.shape)


def dot_shared_private(
    p: PartyContext,
    x_share: np.ndarray,
    holder: int,
    y: np.ndarray | None = None,
    y_bits: int = 64,
    *,
    signed: bool = False,
) -> np.ndarray:
    """Share (shape (1,)) of ``sum_i x_i y_i`` with x secret-shared and y private to ``holder``.

    :func:`mul_shared_private` followed by a local sum.
    """
    prod = mul_shared_private(p, x_share, holder, y, y_bits, signed=signed)
    return np.array([prod.sum(dtype=U64)], dtype=U64)


__all__ = ["MATVEC_CHUNK_BYTES", "auto_chunk_cols", "bit_groups", "rounded_groups", "rounding_sd", "bit_weights", "choice_bits",
           "dot_shared_private", "gilboa_mul", "inner_product", "inner_products_pipelined", "inner_products_precorrected", "matvec", "precorrected_layout",
           "mul_shared_private"]
