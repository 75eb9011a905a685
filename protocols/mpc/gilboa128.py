"""Gilboa inner products in Z_2^128 built on random OT: the last, widest step of exact KRR.

One party's *bits* (its OT choices) multiply the other party's 128-bit values. For bit b of a
choice value the correlation only matters modulo 2^(128-b) (it is scaled by 2^b afterwards), so
only ceil((128-b)/8) bytes of each correction travel -- the same trimming as the 64-bit products.
Inputs are (k, n): k independent inner products of length n (one per query) in one batch.

One function both parties call (:func:`inner_products128`); the bit runs and choice bits are
the Gilboa core of :mod:`protocols.mpc.gilboa`, only the 128-bit arithmetic (two uint64 words,
:mod:`protocols.mpc.u128`) and the random-OT corrections are added here.

Threat model (semi-honest): the chooser sees corrections masked by the sender's random OT pads it
does not hold (uniform); the sender sees only IKNP messages (independent of the choices).
"""
from __future__ import annotations

import numpy as np

from protocols.mpc import u128
from protocols.mpc.context import PartyContext
from protocols.mpc.gilboa import bit_groups, choice_bits
from secureml.errors import ProtocolError

U64 = np.uint64


def _accumulate(shares: list[int], per_bit: tuple[np.ndarray, np.ndarray], b0: int, sign: int) -> None:
    hi, lo = per_bit  # (bits_in_run, k)
    for r in range(hi.shape[0]):
        for a in range(hi.shape[1]):
            shares[a] += sign * ((int(hi[r, a]) << 64 | int(lo[r, a])) << (b0 + r))


def inner_products128(party: PartyContext, chooser: int, *, values: tuple[np.ndarray, np.ndarray] | None = None,
                      bits: np.ndarray | None = None, n_bits: int) -> list[int]:
    """Shares (Python ints mod 2^128) of sum_i values[a, i] * bits[a, i], one per row a.

    The chooser passes ``bits`` (k, n) uint64 values of ``n_bits`` bits (its OT choices); the
    other party passes ``values`` (hi, lo) words, each (k, n). Steps, for each run of bit
    positions b (:func:`protocols.mpc.gilboa.bit_groups` in Z_2^128):
      1. one random OT per (bit, row, i): the holder gets pads (m0, m1), the chooser m_c for
         c = bit b of y[a, i];
      2. the holder sends the trimmed corrections tau = m0 + v - m1 (mod 2^(128-b)); the chooser
         computes m_c + c tau = m0 + c v (mod 2^(128-b));
      3. chooser: share = sum_b 2^b sum_i (m_c + c tau); holder: share = -sum_b 2^b sum_i m0.
    """
    choosing = party.role == chooser
    if choosing:
        y = np.atleast_2d(np.ascontiguousarray(bits, dtype=U64))
        k, n = y.shape
        if n_bits < 64 and y.size and int(y.max()) >> n_bits:
            raise ProtocolError("choice values wider than advertised")
    else:
        hi, lo = (np.atleast_2d(values[0]), np.atleast_2d(values[1]))
        k, n = hi.shape
    shares = [0] * k
    for b0, b1, width in bit_groups(n_bits, 128):
        kb, nb = b1 - b0, (width + 7) // 8
        if choosing:
            c = choice_bits(y, b0, b1)  # (kb, k, n)
            mc = u128.from_bytes16(party.ot_receiver.random_ot(c.ravel()).reshape(kb, k, n, 16))
            tau = u128.from_bytes(party.ch.recv_array(dtype=np.uint8, shape=(kb, k, n, nb)), nb)
            cw = c.astype(U64)
            got = u128.add(mc, (tau[0] * cw, tau[1] * cw))
            # valid modulo 2^(128-b) only; the 2^b scaling below discards the rest
            _accumulate(shares, u128.total(u128.mask_bits(got, 128 - b0), axis=2), b0, +1)
        else:
            m0b, m1b = party.ot_sender.random_ot(kb * k * n)
            m0 = u128.from_bytes16(m0b.reshape(kb, k, n, 16))
            m1 = u128.from_bytes16(m1b.reshape(kb, k, n, 16))
            v = (np.broadcast_to(hi, (kb, k, n)), np.broadcast_to(lo, (kb, k, n)))
            tau = u128.sub(u128.add(m0, v), m1)
            party.ch.send_array(np.ascontiguousarray(u128.to_bytes(tau, nb)))
            _accumulate(shares, u128.total(m0, axis=2), b0, -1)
    return [s % u128.MOD for s in shares]
