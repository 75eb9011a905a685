"""Digit chains over a masked value: borrows and "is non-zero" flags, one table look-up per digit.

After the mask-reveal step the client holds u = D + rho (mod 2^W) and the server holds rho, so
D = u - rho (mod 2^W). Subtracting digit by digit, the borrow into each digit depends on both
parties' lower digits. Each step is a 1-out-of-2^(m+1 or m+2) OT (``lut_send``/``lut_recv``): the
client's index is its digit together with its shares of the incoming borrow (and flag); the
server fills the table for every possible index, XOR-masking the outgoing bits with fresh random
bits it keeps. The client therefore only ever holds uniformly random shares.
"""
from __future__ import annotations

import numpy as np

U64 = np.uint64


def digit_plan(start: int, stop: int, digit_bits: int) -> list[tuple[int, int]]:
    """Bit ranges [a, b) covering [start, stop) in digits of at most ``digit_bits`` bits."""
    return [(a, min(stop, a + digit_bits)) for a in range(start, stop, digit_bits)]


def _digit(x: np.ndarray, a: int, b: int) -> np.ndarray:
    return (x >> U64(a)) & U64((1 << (b - a)) - 1)


def chain_server(party, rho: np.ndarray, digits: list[tuple[int, int]], borrow_s: np.ndarray,
                 flag_s: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Server side: returns its new shares (borrow, flag) after the given digits.

    Steps (per digit [a, b) with m = b - a bits):
      1. draw fresh output shares beta', z' (bits) -- they stay with the server;
      2. for every client index (a_digit, beta_c[, z_c]) compute beta = beta_c ^ beta_s,
         diff = a_digit - rho_digit - beta, borrow_out = diff < 0, z_out = z | (diff mod 2^m != 0);
      3. send the table (borrow_out ^ beta') | ((z_out ^ z') << 1) through lut_send.
    """
    n = rho.shape[0]
    for a, b in digits:
        m = b - a
        track = flag_s is not None
        rd = _digit(rho, a, b).astype(np.int64)[:, None, None, None]
        cand = np.arange(1 << m, dtype=np.int64)[None, :, None, None]
        bc = np.arange(2, dtype=np.int64)[None, None, :, None]
        zc = np.arange(2 if track else 1, dtype=np.int64)[None, None, None, :]
        beta = bc ^ borrow_s.astype(np.int64)[:, None, None, None]
        diff = cand - rd - beta
        new_b = party.rng.random_bits(n).astype(np.int64)
        out = (diff < 0).astype(np.int64) ^ new_b[:, None, None, None]
        if track:
            z = zc ^ flag_s.astype(np.int64)[:, None, None, None]
            new_z = party.rng.random_bits(n).astype(np.int64)
            nz = (z | ((diff % (1 << m)) != 0)) ^ new_z[:, None, None, None]
            out = out | (nz << 1)
        # index layout: digit + (beta_c << m) + (z_c << (m + 1))
        table = np.transpose(out, (0, 3, 2, 1)).reshape(n, -1).astype(U64)
        party.ot_sender.lut_send(table, bits=1 + int(track))  # borrow only: one bit per entry
        borrow_s = new_b.astype(np.uint8)
        if track:
            flag_s = new_z.astype(np.uint8)
    return borrow_s, flag_s


def chain_client(party, u: np.ndarray, digits: list[tuple[int, int]], borrow_c: np.ndarray,
                 flag_c: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Client side of :func:`chain_server`: index = digit | beta_c << m | z_c << (m + 1)."""
    for a, b in digits:
        m = b - a
        track = flag_c is not None
        idx = _digit(u, a, b) | (borrow_c.astype(U64) << U64(m))
        if track:
            idx = idx | (flag_c.astype(U64) << U64(m + 1))
        got = party.ot_receiver.lut_recv(idx, m + 1 + int(track), w=1, bits=1 + int(track))
        got = np.asarray(got, dtype=U64).ravel()
        borrow_c = (got & U64(1)).astype(np.uint8)
        if track:
            flag_c = ((got >> U64(1)) & U64(1)).astype(np.uint8)
    return borrow_c, flag_c
