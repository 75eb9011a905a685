"""Bit MACs mod q = 2^48 - 59 over the (checked) OT extension, both roles (protocol 34).

    client (chooser) with bits c_(i,j):  M_(i,j) = K_(i,j) + c_(i,j) s_(i,j) Delta   (mod q)
    server:                              K_(i,j), uniform in F_q to the client

Per bit one random OT of the extension with the bit as its choice; both sides hash the OT key to
128 bits (TCCR, a domain of its own) and reduce mod q (within 2^-80 of uniform per pad); the server
sends tau = P0 + s Delta - P1 (mod q) in 6 bytes and keeps K = P0; the client gets
P_c + c tau = K + c s Delta. The scale s is the server's, public or private, per bit: 1 for a
plain bit commitment (the sum sum_j 2^j M_(i,j) is then a MAC on the committed integer), or a
server bit such as 1 - a (the client then holds a MAC on the product c (1 - a) of its bit and the
server's -- an oblivious product, since tau is one-time padded by the unchosen P_(1-c), within
2^-80 of uniform whatever s and Delta are). The random-OT keys are returned, so that
:func:`protocols.mpc.authenticated.bound_lut` can read table indices through the same bits.

Differs from protocols 31-33's ``commit_p64`` (mod 2^64 - 59, 8-byte corrections, removed;
scale 1) in the field, the wire width and the per-bit scale; the same TCCR hashing (its own domain).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols.mpc import fp48
from protocols.mpc.authenticated import _expand
from protocols.mpc.context import PartyContext
from secureml.errors import ProtocolError

U64 = np.uint64
#: TCCR domain of these pads (commit_p64 uses 0x50)
_DOMAIN = 0x51
#: TCCR domain of :func:`bit_macs_on_pads` (a second MAC through the same random OTs)
_DOMAIN_ON_PADS = 0x52


@dataclass
class BitMacs:
    """Client side: per-bit MACs (n, bits) uint64 residues and the random-OT keys (n, bits, 16)."""

    mac: np.ndarray
    pads: np.ndarray


@dataclass
class BitKeys:
    """Server side: per-bit keys K (n, bits) uint64 residues and the random-OT key pairs."""

    key: np.ndarray
    pads: tuple[np.ndarray, np.ndarray]


def new_delta(party: PartyContext) -> np.uint64:
    """Server: a fresh MAC key Delta uniform in F_q (one per session)."""
    return U64(fp48.uniform(party.rng, 1)[0])


def bit_macs(party: PartyContext, chooser: int, *, n: int, bits: int, choices: np.ndarray | None = None,
             delta: np.uint64 | None = None, scales: np.ndarray | None = None) -> BitMacs | BitKeys:
    """n x bits MACs of the chooser's ``choices`` (n, bits) uint8 under the server's ``delta`` and
    per-bit ``scales`` (n, bits) residues (server only; default 1 everywhere): one random OT and
    6 bytes per bit, one flight from the server. ProtocolError on the client for a correction >= q
    (a semi-honest server never sends one)."""
    if party.role == chooser:
        c = np.ascontiguousarray(choices, dtype=np.uint8).reshape(n, bits)
        if int(c.max(initial=0)) > 1:
            raise ValueError("choices must be bits")
        mc = party.ot_receiver.random_ot(c.ravel())
        P = fp48.from_wide(_expand(mc, 1, _DOMAIN))[:, 0]
        tau = fp48.unpack(party.ch.recv_array(np.uint8, (n * bits, fp48.BYTES)))
        if bool((tau >= U64(fp48.P)).any()):
            raise ProtocolError("unreduced MAC correction")
        mac = fp48.add(P, np.where(c.ravel() == 1, tau, U64(0))).reshape(n, bits)
        return BitMacs(mac, mc.reshape(n, bits, 16))
    m0, m1 = party.ot_sender.random_ot(n * bits)
    P0 = fp48.from_wide(_expand(m0, 1, _DOMAIN))[:, 0]
    P1 = fp48.from_wide(_expand(m1, 1, _DOMAIN))[:, 0]
    corr = (np.full(n * bits, U64(delta)) if scales is None
            else fp48.mul(np.ascontiguousarray(scales, dtype=U64).reshape(n * bits), U64(delta)))
    tau = fp48.sub(fp48.add(P0, corr), P1)
    party.ch.send_array(fp48.pack(tau), owned=True)
    party.ch.flush()
    return BitKeys(P0.reshape(n, bits), (m0.reshape(n, bits, 16), m1.reshape(n, bits, 16)))


def bit_macs_on_pads(party: PartyContext, chooser: int, pads, *, choices: np.ndarray | None = None,
                     delta: np.uint64 | None = None, scales: np.ndarray | None = None) -> np.ndarray:
    """One more MAC on each of n bits already committed by :func:`bit_macs`, through the same random
    OTs (``pads``: the client's (n, 16) keys, the server's pair), hashed in their own domain: so its
    choice bit is the committed one, not a new choice. The server's ``scales`` (n,) residues give the
    client M = K + c s Delta -- e.g. s = 1 - a for a MAC on the product c (1 - a) of the committed bit
    and a server bit. 6 bytes per bit, no new OT. Returns the client's MACs / the server's keys (n,)."""
    if party.role == chooser:
        c = np.ascontiguousarray(choices, dtype=np.uint8).ravel()
        P = fp48.from_wide(_expand(np.ascontiguousarray(pads), 1, _DOMAIN_ON_PADS))[:, 0]
        tau = fp48.unpack(party.ch.recv_array(np.uint8, (c.shape[0], fp48.BYTES)))
        if bool((tau >= U64(fp48.P)).any()):
            raise ProtocolError("unreduced MAC correction")
        return fp48.add(P, np.where(c == 1, tau, U64(0)))
    m0, m1 = pads
    P0 = fp48.from_wide(_expand(np.ascontiguousarray(m0), 1, _DOMAIN_ON_PADS))[:, 0]
    P1 = fp48.from_wide(_expand(np.ascontiguousarray(m1), 1, _DOMAIN_ON_PADS))[:, 0]
    n = P0.shape[0]
    corr = (np.full(n, U64(delta)) if scales is None
            else fp48.mul(np.ascontiguousarray(scales, dtype=U64).reshape(n), U64(delta)))
    party.ch.send_array(fp48.pack(fp48.sub(fp48.add(P0, corr), P1)), owned=True)
    party.ch.flush()
    return P0


def value_mac(per_bit: np.ndarray) -> np.ndarray:
    """sum_j 2^j x_(i,j) mod q over the last axis (bits <= 47: every 2^j is a residue): the MAC (or
    key) of the integer whose bits carry the per-bit MACs (keys) -- the same linear map both sides."""
    bits = per_bit.shape[-1]
    if bits > 47:
        raise ValueError("at most 47 bits per value")
    pow2 = U64(1) << np.arange(bits, dtype=U64)
    return fp48.total(fp48.mul(per_bit, pow2), axis=-1)


__all__ = ["BitMacs", "BitKeys", "new_delta", "bit_macs", "bit_macs_on_pads", "value_mac"]
