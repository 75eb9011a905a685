"""Gilboa inner products in Z_2^128 built on random OT: the last, widest step of exact KRR.

One party's *bits* (its OT choices) multiply the other party's 128-bit values. For bit b of a
choice value the correlation only matters modulo 2^(128-b) (it is scaled by 2^b afterwards), so
only ceil((128-b)/8) bytes of each correction travel -- the same trimming as the 64-bit products.
Inputs are (k, n): k independent inner products of length n (one per query) in one batch.

Threat model (semi-honest): the chooser sees corrections masked by the sender's random OT pads it
does not hold (uniform); the sender sees only IKNP messages (independent of the choices).
"""
from __future__ import annotations

import numpy as np

from protocols.mpc import u128
from secureml.errors import ProtocolError

U64 = np.uint64


def _bit_runs(n_bits: int) -> list[tuple[int, int, int]]:
    """Group bit positions with the same correction width: (first, end, nbytes)."""
    runs: list[tuple[int, int, int]] = []
    b = 0
    while b < n_bits:
        nb = (128 - b + 7) // 8
        e = b
        while e < n_bits and (128 - e + 7) // 8 == nb:
            e += 1
        runs.append((b, e, nb))
        b = e
    return runs


def _accumulate(shares: list[int], per_bit, b0: int, sign: int) -> None:
    hi, lo = per_bit  # (bits_in_run, k)
    for r in range(hi.shape[0]):
        for a in range(hi.shape[1]):
            shares[a] += sign * ((int(hi[r, a]) << 64 | int(lo[r, a])) << (b0 + r))


def inner_product_sender(party, values: tuple[np.ndarray, np.ndarray], n_bits: int) -> list[int]:
    """Sender's shares (Python ints mod 2^128) of sum_i values[a, i] * y[a, i], one per row a.

    The peer holds y with ``n_bits``-bit entries. Steps:
      1. for each run of bit positions b: one random OT per (bit, row, i) (pads m0, m1);
      2. send the trimmed corrections tau = m0 + v - m1 (mod 2^(128-b));
      3. share = -sum_b 2^b * sum_i m0 (mod 2^128).
    """
    hi, lo = (np.atleast_2d(values[0]), np.atleast_2d(values[1]))
    k, n = hi.shape
    shares = [0] * k
    for b0, b1, nb in _bit_runs(n_bits):
        kb = b1 - b0
        m0b, m1b = party.ot_sender.random_ot(kb * k * n)
        m0 = u128.from_bytes16(m0b.reshape(kb, k, n, 16))
        m1 = u128.from_bytes16(m1b.reshape(kb, k, n, 16))
        v = (np.broadcast_to(hi, (kb, k, n)), np.broadcast_to(lo, (kb, k, n)))
        tau = u128.sub(u128.add(m0, v), m1)
        party.ch.send_array(np.ascontiguousarray(u128.to_bytes(tau, nb)))
        _accumulate(shares, u128.total(m0, axis=2), b0, -1)
    return [s % u128.MOD for s in shares]


def inner_product_receiver(party, y: np.ndarray, n_bits: int) -> list[int]:
    """Receiver's shares of sum_i values[a, i] * y[a, i], this party holding y (k, n) uint64.

    Steps:
      1. random OTs with choice bits = bit b of y[a, i];
      2. receive tau and compute m_c + c * tau (mod 2^(128-b));
      3. share = sum_b 2^b * sum_i (m_c + c tau).
    """
    y = np.atleast_2d(np.ascontiguousarray(y, dtype=U64))
    k, n = y.shape
    if n_bits < 64 and y.size and int(y.max()) >> n_bits:
        raise ProtocolError("choice values wider than advertised")
    shares = [0] * k
    for b0, b1, nb in _bit_runs(n_bits):
        kb = b1 - b0
        shifts = np.arange(b0, b1, dtype=U64)[:, None, None]
        bits = ((y[None] >> shifts) & U64(1)).astype(np.uint8)  # (kb, k, n)
        mc = u128.from_bytes16(party.ot_receiver.random_ot(bits.ravel()).reshape(kb, k, n, 16))
        tau = u128.from_bytes(party.ch.recv_array(dtype=np.uint8, shape=(kb, k, n, nb)), nb)
        c = bits.astype(U64)
        got = u128.add(mc, (tau[0] * c, tau[1] * c))
        # valid modulo 2^(128-b) only; the 2^b scaling below discards the rest
        got = u128.mask_bits(got, 128 - b0)
        _accumulate(shares, u128.total(got, axis=2), b0, +1)
    return [s % u128.MOD for s in shares]

