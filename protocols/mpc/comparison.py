"""Secure comparison (millionaires' protocol), AND of shared bits, B2A, MSB/DReLU/ReLU, wrap bits.

Millionaires' protocol in the style of CrypTFlow2 (Rathee et al., CCS 2020, Sec. 3): party 0
holds ``a``, party 1 holds ``b`` (both < 2^ell); they obtain XOR shares of ``[a > b]``.

  1. Split both inputs into q = ceil(ell/m) digits of m bits (default m = 4).
  2. For every digit j party 0 draws random bits (r_gt, r_eq) and builds a table over all 2^m
     possible digits v of party 1: ``T_j[v] = ([a_j > v] ^ r_gt) | ([a_j == v] ^ r_eq) << 1``.
     One 1-out-of-2^m OT per digit (``ot_sender.lut_send``) gives party 1 ``T_j[b_j]``; now
     (gt_j, eq_j) are XOR-shared.
  3. Combine digits pairwise up a binary tree, most significant digit on the ``hi`` side:
     ``gt = gt_hi ^ (eq_hi AND gt_lo)``, ``eq = eq_hi AND eq_lo`` (the two XOR terms are
     mutually exclusive, so XOR equals OR).  ANDs of shared bits use boolean Beaver triples
     from the party's provider (OT-based by default): ceil(log2 q) rounds.

B2A (shared bit -> arithmetic share) uses one correlated OT per bit: with c = c0 ^ c1,
``c = c0 + c1 - 2 c0 c1`` and the product ``c0 c1`` is one COT (party 0 sends correlation c0,
party 1 chooses with c1).

Threat model: semi-honest.  Party 1 receives one table entry per digit, masked by party 0's
fresh random bits (so uniform); party 0 receives only IKNP messages.  AND gates open
``x ^ a`` and ``y ^ b`` masked by fresh triple bits.  Public: ``ell``, ``m`` and the sizes.
"""
from __future__ import annotations

import numpy as np

from protocols.mpc.party import Party
from protocols.mpc.sharing import beaver_mul
from secureml.errors import DataError

U64 = np.uint64


def and_shared(p: Party, x: np.ndarray, y: np.ndarray, triples=None, provider=None) -> np.ndarray:
    """XOR share of ``x AND y`` from XOR shares (uint8 bits) of x and y.

    Steps: 1. take boolean triples (a, b, c) (``triples`` if given, else from the provider);
           2. open d = x ^ a, e = y ^ b (bit-packed, one exchange);
           3. z = c ^ (d & b) ^ (e & a) (^ (d & e) at party 0).
    """
    x = np.ascontiguousarray(x, dtype=np.uint8)
    y = np.ascontiguousarray(y, dtype=np.uint8)
    n = x.size
    if triples is None:
        prov = p.provider if provider is None else provider
        triples = prov.bool_triples(n)
    a, b, c = (np.asarray(t, dtype=np.uint8).reshape(x.shape) for t in triples)
    d_mine = x ^ a
    e_mine = y ^ b
    packed = np.packbits(np.concatenate([d_mine.ravel(), e_mine.ravel()]))
    opened = np.unpackbits(packed ^ p.exchange(packed))[: 2 * n]
    d = opened[:n].reshape(x.shape)
    e = opened[n:].reshape(x.shape)
    z = c ^ (d & b) ^ (e & a)
    if p.role == 0:
        z = z ^ (d & e)
    return z


def _tree_and_count(n: int, q: int) -> int:
    """Number of AND gates the combining tree uses for n comparisons of q digits."""
    total = 0
    while q > 1:
        pairs = q // 2
        q_next = pairs + (q % 2)
        total += n * pairs * (1 if q_next == 1 else 2)
        q = q_next
    return total


def millionaire(
    p: Party, v: np.ndarray, ell: int, m: int = 4, provider=None
) -> np.ndarray:
    """XOR share (uint8) of ``[a > b]`` where party 0 passes ``v = a`` and party 1 ``v = b``.

    Both inputs are uint64 arrays of the same length with values < 2^ell (checked locally).
    Steps as in the module docstring: 1. digits; 2. one 1-out-of-2^m LUT OT per digit;
    3. AND tree with boolean triples (all fetched in one provider call before the tree).
    """
    ell, m = int(ell), int(m)
    if not 1 <= ell <= 64 or not 1 <= m <= 8:
        raise DataError(f"millionaire needs 1 <= ell <= 64 and 1 <= m <= 8, got {ell}, {m}")
    v = np.ascontiguousarray(v, dtype=U64).ravel()
    if ell < 64 and v.size and int(v.max()) >> ell:
        raise DataError(f"millionaire input does not fit in {ell} bits")
    n = v.size
    q = -(-ell // m)
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    # step 1: digits, least significant first: (n, q)
    shifts = (np.arange(q, dtype=U64) * U64(m))[None, :]
    digits = (v[:, None] >> shifts) & U64((1 << m) - 1)
    # step 2: LUT OTs (party 0 sends tables, party 1 selects its digit)
    if p.role == 0:
        r = p.rng.random_bits((2, n, q))
        vals = np.arange(1 << m, dtype=U64)[None, None, :]
        gt_tab = (digits[:, :, None] > vals).astype(U64) ^ r[0][:, :, None].astype(U64)
        eq_tab = (digits[:, :, None] == vals).astype(U64) ^ r[1][:, :, None].astype(U64)
        tables = (gt_tab | (eq_tab << U64(1))).reshape(n * q, 1 << m)
        p.ot_sender.lut_send(tables, bits=2)
        gt, eq = r[0], r[1]
    else:
        got = p.ot_receiver.lut_recv(digits.reshape(-1), m, w=1, bits=2).reshape(n, q)
        gt = (got & U64(1)).astype(np.uint8)
        eq = ((got >> U64(1)) & U64(1)).astype(np.uint8)
    # step 3: AND tree; one provider call for all its triples
    prov = p.provider if provider is None else provider
    n_and = _tree_and_count(n, q)
    ta, tb, tc = prov.bool_triples(n_and)
    pos = 0
    while gt.shape[1] > 1:
        k = gt.shape[1]
        pairs = k // 2
        lo = slice(0, 2 * pairs, 2)
        hi = slice(1, 2 * pairs, 2)
        final = pairs + (k % 2) == 1
        if final:
            xs, ys = eq[:, hi], gt[:, lo]
        else:
            xs = np.concatenate([eq[:, hi], eq[:, hi]], axis=1)
            ys = np.concatenate([gt[:, lo], eq[:, lo]], axis=1)
        cnt = xs.size
        sl = slice(pos, pos + cnt)
        pos += cnt
        z = and_shared(p, xs, ys, triples=(ta[sl], tb[sl], tc[sl]))
        new_gt = gt[:, hi] ^ z[:, :pairs]
        new_eq = None if final else z[:, pairs:]
        if k % 2:  # odd: the most significant digit moves up unchanged
            new_gt = np.concatenate([new_gt, gt[:, -1:]], axis=1)
            if new_eq is not None:
                new_eq = np.concatenate([new_eq, eq[:, -1:]], axis=1)
        gt = new_gt
        eq = new_eq if new_eq is not None else eq[:, :0]
    return np.ascontiguousarray(gt[:, 0])


def b2a(p: Party, c: np.ndarray) -> np.ndarray:
    """Arithmetic share (uint64) of a XOR-shared bit c = c0 ^ c1 (uint8).

    Steps: 1. party 0 is COT sender with correlation c0, party 1 chooses with c1 and gets
              t = s + c0 c1 (party 0 keeps s);
           2. shares: party 0: c0 + 2s, party 1: c1 - 2t  (sum c0 + c1 - 2 c0 c1 = c0 ^ c1).
    """
    c = np.ascontiguousarray(c, dtype=np.uint8)
    shape = c.shape
    flat = c.ravel()
    if flat.size == 0:
        return np.zeros(shape, dtype=U64)
    if p.role == 0:
        s = p.ot_sender.cot_send(flat.astype(U64), bits=64)
        out = flat.astype(U64) + U64(2) * s
    else:
        t = p.ot_receiver.cot_recv(flat, w=1, bits=64)
        out = flat.astype(U64) - U64(2) * t
    return out.reshape(shape)


def wrap_bit(p: Party, x: np.ndarray, provider=None) -> np.ndarray:
    """XOR share of the wrap-around bit ``[x0 + x1 >= 2^64]`` of a shared value.

    One 64-bit millionaire: party 0 inputs x0, party 1 inputs 2^64 - 1 - x1.
    """
    x = np.ascontiguousarray(x, dtype=U64)
    v = x.ravel() if p.role == 0 else U64(2**64 - 1) - x.ravel()
    return millionaire(p, v, 64, provider=provider).reshape(x.shape)


def msb(p: Party, x: np.ndarray, provider=None) -> np.ndarray:
    """XOR share of the most significant bit (the sign) of a shared value.

    MSB(x) = msb(x0) ^ msb(x1) ^ carry, carry = [low63(x0) + low63(x1) >= 2^63], a 63-bit
    millionaire (party 0: low63(x0), party 1: 2^63 - 1 - low63(x1)).
    """
    x = np.ascontiguousarray(x, dtype=U64)
    low_mask = U64((1 << 63) - 1)
    low = x.ravel() & low_mask
    v = low if p.role == 0 else low_mask - low
    carry = millionaire(p, v, 63, provider=provider).reshape(x.shape)
    return ((x >> U64(63)).astype(np.uint8)) ^ carry


def drelu(p: Party, x: np.ndarray, provider=None) -> np.ndarray:
    """XOR share of ``[x >= 0]`` (x as a signed ring element): 1 ^ MSB(x)."""
    b = msb(p, x, provider=provider)
    return b ^ np.uint8(1) if p.role == 0 else b


def select(p: Party, bit: np.ndarray, x: np.ndarray, provider=None) -> np.ndarray:
    """Arithmetic share of ``bit * x`` for a XOR-shared bit and a shared value: B2A + Beaver."""
    return beaver_mul(p, b2a(p, bit), x, provider=provider)


def relu(p: Party, x: np.ndarray, provider=None) -> np.ndarray:
    """Arithmetic share of ``max(x, 0)`` (signed): DReLU, then select."""
    return select(p, drelu(p, x, provider=provider), x, provider=provider)


def greater_than_public(p: Party, x: np.ndarray, c: int, provider=None) -> np.ndarray:
    """XOR share of ``[x > c]`` for a shared signed value x and a public signed c (|x|, |c| < 2^62).

    ``x - c - 1 >= 0`` <=> ``x > c``: DReLU of a local shift.
    """
    x = np.ascontiguousarray(x, dtype=U64)
    shift = U64((int(c) + 1) % (1 << 64))
    y = x - shift if p.role == 0 else x.copy()
    return drelu(p, y, provider=provider)
