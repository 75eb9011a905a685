"""1-out-of-2^m oblivious transfer of *long* messages: one table of 2^m bit strings per column.

The Laplacian protocol compares every training value x_ij with the query's q_j. The query owner's
digit of q_j is the same for all N training points of column j, so one 1-out-of-2^m OT per column
and digit delivers an N-bit (or 3N-bit) string: the comparison bits of the whole column, masked.
Running the OT extension's table OT (:meth:`OTExtensionSender.lut_send`) with such long entries
would cost m hash calls per entry and block; instead (the classical "OT of keys, then encrypt"):

  1. the sender draws a fresh 128-bit key R_{t,e} for every table t and entry e and transfers the
     keys with ``lut_send`` (the receiver learns R_{t,c_t} only, for its index c_t);
  2. the sender sends every entry encrypted, msg_{t,e} XOR G(R_{t,e}), with the pseudorandom
     generator G(R)_b = H(R, b), H the tweakable correlation-robust hash of :mod:`protocols.ot.crypto`
     (pi(pi(R) ^ b) ^ pi(R), pi a fixed public AES key: the random-permutation model);
  3. the receiver decrypts the entry it chose.

Security (semi-honest): the receiver holds one key per table; the other 2^m - 1 keys are uniform
and unknown to it, so their pads are pseudorandom and the other entries are hidden. The sender's
view is that of ``lut_send``, independent of the receiver's indices.
Cost per table: m random OTs plus 2^m keys (16 bytes each), then 2^m * w words.
Both parties run :func:`column_ot`; ``chooser`` names the receiver.
"""
from __future__ import annotations

import threading

import numpy as np

from protocols.mpc.context import PartyContext
from protocols.ot.crypto import FixedKeyAES, derive_key

U64 = np.uint64
# public fixed key: the hash is secure in the random-permutation model, which needs no secret key
_KEY = derive_key(b"secureml/column-ot/prg")
# one AES context per thread: a cipher context must not be used by two threads at once (a server
# runs concurrent sessions in threads)
_LOCAL = threading.local()


def _prg() -> FixedKeyAES:
    aes = getattr(_LOCAL, "aes", None)
    if aes is None:
        aes = _LOCAL.aes = FixedKeyAES(_KEY)
    return aes
# "COLOT" in bits 24-63 (domain separation from the OT engine's own tweaks); the block index has bits
# 0-23 to itself, so no two blocks of one key share a tweak (an OR into the tag's bits would make
# blocks b and b + 2^18 collide: pad reuse)
_TAG = U64(0x434F4C4F54 << 24)
_MAX_BLOCKS = 1 << 24
_BLOCK_BYTES = 16 << 20  # bound on one encrypted piece


def expand_keys(keys: np.ndarray, words: int) -> np.ndarray:
    """G(R): (n, 2) uint64 keys -> (n, words) pseudorandom uint64 words."""
    keys = np.ascontiguousarray(keys, dtype=U64).reshape(-1, 2)
    n = keys.shape[0]
    nblk = (words + 1) // 2
    if nblk > _MAX_BLOCKS:
        raise ValueError(f"column OT entries of {words} words exceed the PRG's {_MAX_BLOCKS}-block tweak field")
    prg = _prg()
    p = prg.permute(keys)
    t = np.empty((n, nblk, 2), dtype=U64)
    t[:, :, 0] = p[:, 0:1]
    np.bitwise_xor(p[:, 1:2], _TAG | np.arange(nblk, dtype=U64)[None, :], out=t[:, :, 1])
    out = prg.permute(t)
    out ^= p[:, None, :]
    return out.reshape(n, 2 * nblk)[:, :words]


def _pieces(n: int, row_bytes: int):
    step = max(1, _BLOCK_BYTES // max(1, row_bytes))
    for a in range(0, n, step):
        yield a, min(n, a + step)


def column_ot(party: PartyContext, chooser: int, *, tables: np.ndarray | None = None,
              indices: np.ndarray | None = None, m: int = 0, w: int = 0) -> np.ndarray | None:
    """Both roles: the sender passes ``tables`` uint64 (n, 2^m, w); the ``chooser`` passes its
    ``indices`` (n,), ``m`` and ``w`` and gets (n, w) uint64, row t = tables[t, indices[t]]."""
    if party.role != chooser:
        tables = np.asarray(tables)
        if tables.dtype != U64 or tables.ndim != 3:
            raise ValueError("tables must be uint64 of shape (n, 2**m, w)")
        n, size, w = tables.shape
        # 1. fresh keys, transferred by the OT engine's table OT
        keys = party.rng.random_u64((n, size, 2))
        party.ot_sender.lut_send(keys, bits=64)
        # 2. every entry encrypted under its key
        for a, b in _pieces(n, size * w * 8):
            ct = tables[a:b] ^ expand_keys(keys[a:b], w).reshape(b - a, size, w)
            party.ch.send_array(ct, owned=True)
        party.ch.flush()
        return None
    idx = np.asarray(indices, dtype=np.int64).ravel()
    n, size = idx.shape[0], 1 << m
    # 1. the keys of the chosen entries
    keys = np.asarray(party.ot_receiver.lut_recv(idx, m, w=2, bits=64)).reshape(n, 2)
    out = np.empty((n, w), dtype=U64)
    # 3. decrypt the chosen entries (the others stay pseudorandom to us)
    for a, b in _pieces(n, size * w * 8):
        ct = party.ch.recv_array(U64, (b - a, size, w))
        out[a:b] = ct[np.arange(b - a), idx[a:b]] ^ expand_keys(keys[a:b], w)
    return out


def column_ot_send(party: PartyContext, tables: np.ndarray) -> None:
    """Sender: ``tables`` uint64 (n, 2^m, w) (:func:`column_ot`)."""
    column_ot(party, 1 - party.role, tables=tables)


def column_ot_recv(party: PartyContext, indices: np.ndarray, m: int, w: int) -> np.ndarray:
    """Receiver: (n, w) uint64, row t = the sender's tables[t, indices[t]] (:func:`column_ot`)."""
    return column_ot(party, party.role, indices=indices, m=m, w=w)
