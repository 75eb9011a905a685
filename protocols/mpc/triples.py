"""Beaver triples over Z_2^64 and boolean AND triples, generated from OT between the parties.

No dealer: every correlation comes from the IKNP OT extension run between the two parties.

* Arithmetic triples (Gilboa cross products, as in SecureML's OT-based offline phase): each party
  draws its own shares ``a_p, b_p``; ``a*b = a0 b0 + a1 b1 + a0 b1 + a1 b0``, the local terms are
  computed locally and each cross term with one Gilboa product (64 COTs per triple per direction).
* Boolean triples from random OT (the classic "two ROTs make an AND triple"): a random OT to a
  receiver with choice ``b`` gives the sender ``(m0, m1)`` and the receiver ``m_b``; with
  ``a' = lsb(m0) xor lsb(m1)``, ``u = lsb(m0)``, ``v = lsb(m_b)`` we have ``u xor v = a' b``: an
  XOR-sharing of a cross term with no message beyond the OT extension itself.

Threat model: semi-honest.  Each party's triple shares are pseudo-random to the other party;
the messages exchanged are exactly those of the Gilboa products / random OTs (see
:mod:`protocols.mpc.gilboa`), which hide the inputs.
"""
from __future__ import annotations

import numpy as np

from protocols.mpc.context import PartyContext
from protocols.mpc.gilboa import gilboa_mul

U64 = np.uint64
#: triples per Gilboa batch: bounds memory (64 COTs per triple, ~8 uint64 per COT in flight)
TRIPLE_BATCH = 1 << 16


def _cross(p: PartyContext, mine_x: np.ndarray, mine_y: np.ndarray) -> np.ndarray:
    """Shares of ``x_0 y_1 + x_1 y_0`` (x_p, y_p held by party p): two Gilboa products.

    Steps: 1. party 0 holds the correlation x0, party 1 chooses with the bits of y1;
           2. party 1 holds the correlation x1, party 0 chooses with the bits of y0.
    Both parties run both products in this order, so the two OT directions pair up without deadlock.
    """
    u = gilboa_mul(p, 1, x=mine_x, y=mine_y, y_bits=64)
    v = gilboa_mul(p, 0, x=mine_x, y=mine_y, y_bits=64)
    return u + v


def beaver_triples(
    p: PartyContext, n: int, batch: int = TRIPLE_BATCH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This party's shares ``(a, b, c)`` of n random triples with ``c = a * b (mod 2^64)``.

    Steps (both parties, batch by batch):
      1. draw a_p, b_p uniformly from this party's PRG;
      2. cross terms a0 b1 + a1 b0 with two Gilboa products (:func:`_cross`);
      3. c_p = a_p b_p + (share of cross terms).
    Cost per triple: 128 COTs (2 x 64), ~2.6 kB of traffic in total.
    """
    n = int(n)
    a = p.rng.random_u64(n)
    b = p.rng.random_u64(n)
    c = np.empty(n, dtype=U64)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        c[s:e] = a[s:e] * b[s:e] + _cross(p, a[s:e], b[s:e])
    return a, b, c


def _lsb(m: np.ndarray) -> np.ndarray:
    return (np.asarray(m)[:, 0] & 1).astype(np.uint8)


def bool_triples(p: PartyContext, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This party's XOR-shares ``(a, b, c)`` (uint8 bits) of n triples with ``c = a AND b``.

    Steps:
      1. party 0 is random-OT sender, party 1 receiver with random choices b1:
         party 0 gets a0 = lsb(m0) ^ lsb(m1) and u0 = lsb(m0); party 1 gets v1 = lsb(m_b1),
         so u0 ^ v1 = a0 b1;
      2. the same with roles swapped (a1, b0): u1 ^ v0 = a1 b0;
      3. c_p = a_p b_p ^ u_p ^ v_p.
    Cost: 2 random OTs per triple (2 x 16 bytes of IKNP traffic).
    """
    n = int(n)
    b_mine = p.rng.random_bits(n)
    if n == 0:
        z = np.zeros(0, dtype=np.uint8)
        return z, z.copy(), z.copy()

    def as_sender() -> tuple[np.ndarray, np.ndarray]:
        m0, m1 = p.ot_sender.random_ot(n)
        u = _lsb(m0)
        return u ^ _lsb(m1), u

    def as_receiver() -> np.ndarray:
        return _lsb(p.ot_receiver.random_ot(b_mine))

    if p.role == 0:
        a_mine, u = as_sender()
        v = as_receiver()
    else:
        v = as_receiver()
        a_mine, u = as_sender()
    c = (a_mine & b_mine) ^ u ^ v
    return a_mine, b_mine, c
