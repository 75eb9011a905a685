"""Digit chains over a masked value: borrows and "is non-zero" flags, one table look-up per digit.

After the mask-reveal step the client holds u = D + rho (mod 2^W) and the server holds rho, so
D = u - rho (mod 2^W). Subtracting digit by digit, the borrow into each digit depends on both
parties' lower digits. Each step is a 1-out-of-2^(m+1 or m+2) OT (``lut_send``/``lut_recv``): the
client's index is its digit together with its shares of the incoming borrow (and flag); the
server fills the table for every possible index, XOR-masking the outgoing bits with fresh random
bits it keeps. The client therefore only ever holds uniformly random shares.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols.mpc.context import PartyContext

U64 = np.uint64
#: KRR roles: the model owner (table-OT sender) is party 0, the query owner (chooser) party 1
SERVER, CLIENT = 0, 1


def digit_plan(start: int, stop: int, digit_bits: int) -> list[tuple[int, int]]:
    """Bit ranges [a, b) covering [start, stop) in digits of at most ``digit_bits`` bits."""
    return [(a, min(stop, a + digit_bits)) for a in range(start, stop, digit_bits)]


def _digit(x: np.ndarray, a: int, b: int) -> np.ndarray:
    return (x >> U64(a)) & U64((1 << (b - a)) - 1)


@dataclass(frozen=True)
class TableLayout:
    """The index of a table OT over a masked value, in one place for both roles.

        index = digit | borrow_share << m | flag_share << (m + 1)        (flag: only if tracked)

    The client builds its index with :meth:`index`; the server fills one entry per possible
    index: :meth:`entries` gives every candidate (digit, borrow, flag) with the server's own
    shares folded in, and :meth:`flatten` puts a table built over them into index order.
    """

    m: int  # bits of the client's digit
    flag: bool  # whether a flag share is part of the index

    @property
    def bits(self) -> int:
        """Bits of the index: the table has 2^bits entries."""
        return self.m + 1 + int(self.flag)

    def index(self, digit: np.ndarray, borrow: np.ndarray, flag: np.ndarray | None = None) -> np.ndarray:
        """Client: its index from its digit and its (borrow, flag) shares."""
        idx = digit | (borrow.astype(U64) << U64(self.m))
        if self.flag:
            idx = idx | (flag.astype(U64) << U64(self.m + 1))
        return idx

    def entries(self, borrow: np.ndarray, flag: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Server: for every index, the client's digit and the *reconstructed* borrow and flag
        (the server's shares XOR every possible client share); int64 arrays broadcasting to
        (n, 2^m, 2, 2 if flag else 1). The flag is None when it is not tracked."""
        cand = np.arange(1 << self.m, dtype=np.int64)[None, :, None, None]
        bc = np.arange(2, dtype=np.int64)[None, None, :, None]
        beta = bc ^ borrow.astype(np.int64)[:, None, None, None]
        if not self.flag:
            return cand, beta, None
        zc = np.arange(2, dtype=np.int64)[None, None, None, :]
        return cand, beta, zc ^ flag.astype(np.int64)[:, None, None, None]

    def flatten(self, table: np.ndarray) -> np.ndarray:
        """Server: a table over :meth:`entries`' axes (n, 2^m, 2, 1 or 2) -> (n, 2^bits), index order."""
        return np.transpose(table, (0, 3, 2, 1)).reshape(table.shape[0], -1)


def chain(party: PartyContext, x: np.ndarray, digits: list[tuple[int, int]], borrow: np.ndarray,
          flag: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both roles: this party's new shares (borrow, flag) after the given digits of D = u - rho.

    ``x`` is the server's mask rho (role 0) or the client's masked value u (role 1); ``borrow`` and
    ``flag`` (None: not tracked) this party's XOR shares on entry. Per digit [a, b), m = b - a:
      1. server: draw fresh output shares beta', z' (bits) -- they stay with the server;
      2. server: for every client index (:class:`TableLayout`) compute beta = beta_c ^ beta_s,
         diff = digit - rho_digit - beta, borrow_out = diff < 0, z_out = z | (diff mod 2^m != 0),
         and send the table (borrow_out ^ beta') | ((z_out ^ z') << 1) through ``lut_send``;
      3. client: receive the entry at its index: its new shares (borrow_out ^ beta', z_out ^ z').
    """
    n = x.shape[0]
    for a, b in digits:
        layout = TableLayout(b - a, flag is not None)
        if party.role == SERVER:
            cand, beta, z = layout.entries(borrow, flag)
            diff = cand - _digit(x, a, b).astype(np.int64)[:, None, None, None] - beta
            new_b = party.rng.random_bits(n).astype(np.int64)
            out = (diff < 0).astype(np.int64) ^ new_b[:, None, None, None]
            if layout.flag:
                new_z = party.rng.random_bits(n).astype(np.int64)
                nz = (z | ((diff % (1 << layout.m)) != 0)) ^ new_z[:, None, None, None]
                out = out | (nz << 1)
                flag = new_z.astype(np.uint8)
            # borrow only: one bit per entry
            party.ot_sender.lut_send(layout.flatten(out).astype(U64), bits=1 + int(layout.flag))
            borrow = new_b.astype(np.uint8)
        else:
            got = party.ot_receiver.lut_recv(layout.index(_digit(x, a, b), borrow, flag), layout.bits,
                                             w=1, bits=1 + int(layout.flag))
            got = np.asarray(got, dtype=U64).ravel()
            borrow = (got & U64(1)).astype(np.uint8)
            if layout.flag:
                flag = ((got >> U64(1)) & U64(1)).astype(np.uint8)
    return borrow, flag
