"""Gilboa's OT-based products over Z_2^64: public-to-one x private-to-other, matvec, inner product.

Gilboa (CRYPTO 1999, "Two party RSA key generation") multiplies a value ``x`` held by the
*sender* with a value ``y = sum_i 2^i y_i`` held by the *receiver* using one correlated OT per
bit of ``y``: for bit ``i`` the sender inputs the correlation ``x``; the receiver, with choice
``y_i``, obtains ``t_i = s_i + y_i * x (mod 2^(64-i))`` while the sender keeps the random
``s_i``.  Then ``sum_i 2^i t_i - sum_i 2^i s_i = x * y (mod 2^64)``.  Because bit ``i`` is
scaled by ``2^i``, only the low ``64 - i`` bits of its correlation matter, so the correction
for bit ``i`` needs ``64 - i`` bits (the OT engine sends ``ceil(bits/8)`` bytes; bits whose
widths round to the same byte count share one COT call).

The matrix-vector product ``X @ y`` (sender holds ``X`` of shape (n, d), receiver holds ``y``
of length d) uses one COT per (column j, bit i) whose correlation is the whole column
``X[:, j]`` -- an n-long vector OLE: d * y_bits COTs instead of n * d * y_bits.

Threat model: semi-honest (honest-but-curious) parties.  The receiver sees only COT outputs,
each masked by the sender's fresh pseudo-random pad ``s_i`` (uniform mod 2^(64-i)); the sender
sees only IKNP messages, which are independent of the choice bits.  Public: the shapes
(n, d), ``y_bits`` and whether ``y`` is signed.  Outputs are additive shares mod 2^64: the
sender's share is ``-sum 2^i s_i`` (uniform, since ``s_0`` is uniform mod 2^64), the receiver's
is the rest.

Signed ``y``: with ``signed=True`` the receiver's ``y`` is a two's-complement value in
``[-2^(y_bits-1), 2^(y_bits-1))``; it offsets ``y' = y + 2^(y_bits-1)`` (non-negative, < 2^y_bits)
and the sender subtracts ``x * 2^(y_bits-1)`` from its share -- same cost, no leak.
"""
from __future__ import annotations

import numpy as np

from protocols.mpc.context import PartyContext
from secureml.errors import DataError

U64 = np.uint64
#: default memory budget for one COT call's correlation matrix in matvec (bytes)
MATVEC_CHUNK_BYTES = 32 << 20


def _bit_groups(y_bits: int, ring_bits: int = 64) -> list[tuple[int, int, int]]:
    """Split bit positions 0..y_bits-1 into runs with the same correction byte width.

    Returns (first_bit, end_bit, bits) triples; ``bits = ring_bits - first_bit`` is enough for
    every bit in the run (a larger modulus is harmless after scaling by 2^i). A caller that only
    needs the result modulo 2^ring_bits (< 64) saves the top bytes of every correction.
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


def _check_y_bits(y_bits: int) -> int:
    y_bits = int(y_bits)
    if not 1 <= y_bits <= 64:
        raise DataError(f"y_bits must be in 1..64, got {y_bits}")
    return y_bits


def _offset_y(y: np.ndarray, y_bits: int, signed: bool) -> np.ndarray:
    """Validate the receiver's input and map signed values to [0, 2^y_bits)."""
    y = np.ascontiguousarray(y, dtype=U64)
    if signed:
        y = y + U64(1 << (y_bits - 1))
    if y_bits < 64 and y.size and int(y.max()) >> y_bits:
        kind = "signed" if signed else "unsigned"
        raise DataError(f"receiver input does not fit in {y_bits} {kind} bits")
    return y


def _weights(i0: int, i1: int) -> np.ndarray:
    return (U64(1) << np.arange(i0, i1, dtype=U64)).astype(U64)


def _choice_bits(y: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """Bits i0..i1-1 of every element of y, bit-major: shape (i1 - i0, *y.shape), uint8."""
    shifts = np.arange(i0, i1, dtype=U64).reshape((-1,) + (1,) * y.ndim)
    return ((y[None] >> shifts) & U64(1)).astype(np.uint8)


def mul_public_private_sender(
    p: PartyContext, x: np.ndarray, y_bits: int, *, signed: bool = False
) -> np.ndarray:
    """Sender side of Gilboa's product: share of ``x * y`` where the peer holds ``y``.

    Steps (sender = OT sender, peer = OT receiver):
      1. receive the peer's header (sizes, y_bits, signedness) and check it matches;
      2. for each run of bits [i0, i1) (same correction width): COT with correlation ``x``
         repeated once per bit, ``bits = 64 - i0``; keep the pads ``s_i``;
      3. share = -sum_i 2^i s_i  (minus ``x * 2^(y_bits-1)`` when ``signed``).
    """
    y_bits = _check_y_bits(y_bits)
    x = np.ascontiguousarray(x, dtype=U64).ravel()
    n = x.shape[0]
    p.check_peer("gilboa-mul", {"n": n, "y_bits": y_bits, "signed": bool(signed)}, sender=False)
    share = np.zeros(n, dtype=U64)
    if n == 0:
        return share
    for i0, i1, bits in _bit_groups(y_bits):
        k = i1 - i0
        s = p.ot_sender.cot_send(np.tile(x, k), bits=bits).reshape(k, n)
        share -= (s * _weights(i0, i1)[:, None]).sum(axis=0, dtype=U64)
    if signed:
        share -= x * U64(1 << (y_bits - 1))
    return share


def mul_public_private_receiver(
    p: PartyContext, y: np.ndarray, y_bits: int, *, signed: bool = False
) -> np.ndarray:
    """Receiver side of Gilboa's product: share of ``x * y`` where the peer holds ``x``.

    Steps (receiver = OT receiver, choice bits = bits of y):
      1. send the header (sizes, y_bits, signedness); offset y if signed;
      2. for each run of bits [i0, i1): COT receive with choices ``y_i``, getting
         ``t_i = s_i + y_i x (mod 2^(64-i0))``;
      3. share = sum_i 2^i t_i.
    """
    y_bits = _check_y_bits(y_bits)
    y = np.ascontiguousarray(y, dtype=U64).ravel()
    n = y.shape[0]
    y = _offset_y(y, y_bits, signed)  # validate before talking, so a bad input fails fast
    p.check_peer("gilboa-mul", {"n": n, "y_bits": y_bits, "signed": bool(signed)}, sender=True)
    share = np.zeros(n, dtype=U64)
    if n == 0:
        return share
    for i0, i1, bits in _bit_groups(y_bits):
        k = i1 - i0
        choices = _choice_bits(y, i0, i1).ravel()
        t = p.ot_receiver.cot_recv(choices, w=1, bits=bits).reshape(k, n)
        share += (t * _weights(i0, i1)[:, None]).sum(axis=0, dtype=U64)
    return share


def inner_product_sender(
    p: PartyContext, x: np.ndarray, y_bits: int, *, signed: bool = False
) -> np.uint64:
    """Sender's share of ``sum_i x_i y_i`` (peer holds y): Gilboa products, summed locally."""
    return np.uint64(mul_public_private_sender(p, x, y_bits, signed=signed).sum(dtype=U64))


def inner_product_receiver(
    p: PartyContext, y: np.ndarray, y_bits: int, *, signed: bool = False
) -> np.uint64:
    """Receiver's share of ``sum_i x_i y_i`` (peer holds x): Gilboa products, summed locally."""
    return np.uint64(mul_public_private_receiver(p, y, y_bits, signed=signed).sum(dtype=U64))


def auto_chunk_cols(n: int, y_bits: int, budget_bytes: int = MATVEC_CHUNK_BYTES) -> int:
    """Columns per COT batch so that one batch's (columns * bits, n) uint64 matrix fits the budget."""
    per_col = max(1, n) * 8 * max(1, min(y_bits, 8))
    return max(1, budget_bytes // per_col)


def _col_chunks(d: int, chunk_cols: int) -> list[tuple[int, int]]:
    return [(a, min(d, a + chunk_cols)) for a in range(0, d, chunk_cols)]


def _matvec_agree(p: PartyContext, n: int, d: int, y_bits: int, chunk_cols: int | None, signed: bool,
                  ring_bits: int, *, sender: bool) -> int:
    """Both sides of a matvec: pick the column chunk and check the peer runs the same plan."""
    chunk_cols = auto_chunk_cols(n, y_bits) if chunk_cols is None else int(chunk_cols)
    if chunk_cols < 1:
        raise DataError("chunk_cols must be >= 1")
    p.check_peer(
        "gilboa-matvec",
        {"n": n, "d": d, "y_bits": y_bits, "chunk_cols": chunk_cols, "signed": bool(signed),
         "ring_bits": int(ring_bits)},
        sender=sender,
    )
    return chunk_cols


def matvec_sender(
    p: PartyContext,
    X: np.ndarray,
    y_bits: int,
    chunk_cols: int | None = None,
    *,
    signed: bool = False,
    ring_bits: int = 64,
) -> np.ndarray:
    """Sender's share (n,) of ``X @ y`` where this party holds X (n, d) and the peer holds y (d,).

    Vector OLE from COT: one COT per (column j, bit i of y_j) with the n-long correlation
    ``X[:, j]``.  Memory is bounded by processing ``chunk_cols`` columns at a time (default:
    :func:`auto_chunk_cols`, ~32 MB of correlations per COT call); both sides must use the same
    ``chunk_cols`` (checked).

    Steps:
      1. receive and check the peer's header (n, d, y_bits, chunk_cols, signed);
      2. for each column chunk [a, b) and each run of bits [i0, i1): COT with correlations
         ``X[:, j]`` for j in [a, b), repeated per bit (shape ((b-a)(i1-i0), n)), bits = 64 - i0;
      3. share = -sum_{j,i} 2^i s_{j,i}  (minus ``2^(y_bits-1) * X.sum(1)`` when ``signed``).
    Traffic: d * y_bits IKNP OTs (16 bytes each) + sum_i n * ceil((ring_bits-i)/8) bytes per column.
    With ``ring_bits`` < 64 the shares are correct modulo 2^ring_bits only (callers that work in a
    smaller ring, e.g. squared distances with a known bound, save the corrections' top bytes).
    """
    y_bits = _check_y_bits(y_bits)
    X = np.ascontiguousarray(X, dtype=U64)
    if X.ndim != 2:
        raise DataError(f"matvec_sender needs a 2-D matrix, got shape {X.shape}")
    n, d = X.shape
    chunk_cols = _matvec_agree(p, n, d, y_bits, chunk_cols, signed, ring_bits, sender=False)
    share = np.zeros(n, dtype=U64)
    if n == 0 or d == 0:
        return share
    XT = np.ascontiguousarray(X.T)  # column j as a contiguous row
    for a, b in _col_chunks(d, chunk_cols):
        cols = XT[a:b]  # (c, n)
        c = b - a
        for i0, i1, bits in _bit_groups(y_bits, ring_bits):
            k = i1 - i0
            # row order: bit-major then column -> (k, c, n)
            delta = np.broadcast_to(cols[None], (k, c, n)).reshape(k * c, n)
            s = p.ot_sender.cot_send(delta, bits=bits).reshape(k, c, n)
            w = _weights(i0, i1)
            for r in range(k):  # k <= 8 rows of weights; each is a vectorised (c, n) op
                share -= (s[r] * w[r]).sum(axis=0, dtype=U64)
    if signed:
        share -= X.sum(axis=1, dtype=U64) * U64(1 << (y_bits - 1))
    return share


def matvec_receiver(
    p: PartyContext,
    y: np.ndarray,
    y_bits: int,
    n: int,
    chunk_cols: int | None = None,
    *,
    signed: bool = False,
    ring_bits: int = 64,
) -> np.ndarray:
    """Receiver's share (n,) of ``X @ y`` where the peer holds X (n, d) and this party holds y (d,).

    Steps:
      1. send the header (n, d, y_bits, chunk_cols, signed); offset y if signed;
      2. for each column chunk and run of bits: COT receive with choices ``bit i of y_j``,
         vector width n, getting ``t_{j,i} = s_{j,i} + y_{j,i} X[:, j] (mod 2^(64-i0))``;
      3. share = sum_{j,i} 2^i t_{j,i}.
    """
    y_bits = _check_y_bits(y_bits)
    y = np.ascontiguousarray(y, dtype=U64).ravel()
    d = y.shape[0]
    n = int(n)
    y = _offset_y(y, y_bits, signed)  # validate before talking, so a bad input fails fast
    chunk_cols = _matvec_agree(p, n, d, y_bits, chunk_cols, signed, ring_bits, sender=True)
    share = np.zeros(n, dtype=U64)
    if n == 0 or d == 0:
        return share
    for a, b in _col_chunks(d, chunk_cols):
        c = b - a
        for i0, i1, bits in _bit_groups(y_bits, ring_bits):
            k = i1 - i0
            choices = _choice_bits(y[a:b], i0, i1).ravel()  # (k * c,) bit-major
            t = p.ot_receiver.cot_recv(choices, w=n, bits=bits).reshape(k, c, n)
            w = _weights(i0, i1)
            for r in range(k):
                share += (t[r] * w[r]).sum(axis=0, dtype=U64)
    return share


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
           2. one Gilboa product for the peer's share: peer = OT sender with ``x_peer``,
              holder = OT receiver with the bits of y (``y_bits``, optionally signed);
           3. holder: ``x_h y + t``; peer: ``s``  (t + s = x_peer y).
    Threat model as for :func:`mul_public_private_sender`; the peer learns nothing about y.
    """
    x_share = np.ascontiguousarray(x_share, dtype=U64)
    if p.role == holder:
        if y is None:
            raise DataError("the holder must pass its private y")
        y = np.ascontiguousarray(y, dtype=U64)
        if y.shape != x_share.shape:
            raise DataError(f"x share {x_share.shape} and y {y.shape} differ in shape")
        t = mul_public_private_receiver(p, y.ravel(), y_bits, signed=signed)
        return (x_share * y + t.reshape(y.shape)).reshape(x_share.shape)
    s = mul_public_private_sender(p, x_share.ravel(), y_bits, signed=signed)
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
