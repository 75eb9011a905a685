"""A checked random-OT pool kept with an OT-session ticket: resumed sessions pay only Beaver's
derandomisation online (client-malicious compact models, :mod:`protocols.krr.linear`).

A resumed client-malicious compact session used to extend and check every OT inside the session
(~13 ms for 81,920 OTs, plus ~7 ms of pad hashing). Random OTs do not depend on the query, so
they can be made *before* it: at the end of a session (after its reply) both sides extend n more
OTs with the receiver's uniformly random choice bits r, run the consistency check on them, hash
them to pads, and keep the pads with the ticket's state (:mod:`protocols.ot.session`). The next
session spends them with Beaver's derandomisation (Beaver, CRYPTO 1995):

  Refill (after the reply of a session, both sides on the same connection; :func:`refill_send` /
  :func:`refill_recv`):
    R1. client (OT receiver): r uniformly random; SoftSpoken extension of the n OTs with choices
        r, with the consistency proof of every piece (:mod:`protocols.ot.consistency`);
    R2. server (OT sender): verifies every piece (a failure aborts the session, and the ticket is
        dropped: one bit of Delta is the check's accounted leakage); pads m0_i = H(q_i),
        m1_i = H(q_i ^ s) (64 bits each, the session's tweakable hash); sends "ok";
    R3. both keep the pool {id, at, pads} with the ticket -- server (m0, m1), client (r, m_r) --
        the client only after "ok" (a refill that did not finish leaves no pool on either side).
  Spending m pooled OTs as COTs with correlations delta_i (:func:`cot_send_pooled` /
  :func:`cot_recv_pooled`; the caller announced (id, at) and the server checked them):
    P1. client: its real choice bits b; sends d = b ^ r (m bits, packed);
    P2. server: refuses a d of the wrong size or with bits past m set; burns the m entries (cursor
        forward, pads dropped) before using them; a0 = m_{d_i}, a1 = m_{1-d_i}; sends the
        correction tau_i = a0 + delta_i - a1 (trimmed to each group's width) and keeps x0 = a0;
    P3. client: m_r + b_i tau_i = a0 + b_i delta_i (as r_i = b_i ^ d_i).

Why the choice bits stay bound (client-malicious): r was fixed when the refill's consistency
check passed (R1-R2: the columns encode one r, or the check fails except with the probability
KOS/SoftSpoken bound); d arrives later, so b = d ^ r is one well-defined bit string whatever d
is, and for each OT the client holds only m_r: a0 + b delta for that b, never both messages.
A wrong-sized or padded d is refused; any other d is a choice of b, which the client could make
anyway. Reuse is the one danger -- two corrections under one pad pair give tau - tau' = delta -
delta', i.e. the server's weights -- so each entry is used once: the server keeps only unused
entries, checks the client's (id, at) against its own cursor and refuses any other (a replay),
and the pool lives inside the ticket's state, which a client-malicious session holds exclusively
(:func:`protocols.ot.session.server_start` with ``exclusive=True``: no two sessions share it) and
which a failed session drops. Bounded: at most :data:`POOL_MAX` OTs per ticket (server 16 bytes,
client 9 bytes each) and :data:`POOL_TOTAL_MAX` over all tickets of a server's store (the least
recently used pools are forgotten first: never reused, the ticket's next session extends inline);
the pool expires and is evicted with its ticket.

Threat model: the server (OT sender) is semi-honest; the client may deviate arbitrarily.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.ot.crypto import derive_key, pack_bits, random_bytes, unpack_bits
from protocols.ot.iknp import _check_bits, _from_low_bytes, _low_bytes
from secureml.errors import ProtocolError

__all__ = ["POOL_MAX", "POOL_TOTAL_MAX", "PoolRefused", "SenderPool", "ReceiverPool", "status", "refill_send", "refill_recv",
           "cot_send_pooled", "cot_recv_pooled", "check_request", "derandomise"]

U64 = np.uint64
#: most pooled OTs kept per ticket (server: 2 x 8 bytes each, 8 MB at most; client 9 bytes each)
POOL_MAX = 1 << 19
#: most pooled OTs a server's ticket store keeps over all its tickets (256 MiB of pads): without it
#: a client opening a session per ticket (a fresh ticket each, up to 1,024 kept) could make the
#: server hold 1,024 full pools, 8 GiB (review finding); the least recently used pools go first
POOL_TOTAL_MAX = 1 << 24


class PoolRefused(ProtocolError):
    """The client named pool entries the server does not hold unused (a replay, or out of sync)."""


@dataclass
class SenderPool:
    """Server side: the unused pooled OTs ``at`` .. ``at + len`` of pool ``id``: pads m0, m1."""

    id: bytes
    at: int
    h0: np.ndarray
    h1: np.ndarray

    @property
    def left(self) -> int:
        return int(self.h0.shape[0])


@dataclass
class ReceiverPool:
    """Client side: the unused pooled OTs of pool ``id``: random choices r and pads m_r."""

    id: bytes
    at: int
    r: np.ndarray
    h: np.ndarray

    @property
    def left(self) -> int:
        return int(self.h.shape[0])


def status(pool: Any) -> dict[str, Any] | None:
    """Public description of a pool (announced by the server when a ticket is resumed)."""
    if not isinstance(pool, (SenderPool, ReceiverPool)):
        return None
    return {"id": pool.id.hex(), "at": pool.at, "left": pool.left}


def _pool_id(engine: Any) -> bytes:
    # the session identifier is fresh per session (both nonces); the OT counter (equal on both
    # sides, after the refill's OTs) tells apart two refills of one session
    return derive_key(b"secureml-ot-pool", bytes(engine._fs_digest), int(engine._counter).to_bytes(8, "little"),
                      size=16)


def refill_send(engine: Any, n: int, old: SenderPool | None = None) -> SenderPool:
    """R2, server: n checked random OTs hashed to pads; returns the new pool (unused entries of
    ``old`` first). Raises :class:`protocols.ot.consistency.ConsistencyError` on a bad proof."""
    h0s = [old.h0] if old is not None else []
    h1s = [old.h1] if old is not None else []
    done = 0
    while done < n:
        k = min(engine.piece, n - done)
        q = engine._extend(k)  # verified before its rows are used (checked mode)
        h0, h1 = engine._pads(q, engine._next_index(k), 1)
        h0s.append(h0[:, 0].copy())
        h1s.append(h1[:, 0].copy())
        done += k
    pool = SenderPool(_pool_id(engine), 0, np.concatenate(h0s) if h0s else np.empty(0, U64),
                      np.concatenate(h1s) if h1s else np.empty(0, U64))
    engine.ch.send_json({"op": "ot-pool", "ok": True, "left": pool.left})
    return pool


def refill_recv(engine: Any, n: int, old: ReceiverPool | None = None) -> ReceiverPool:
    """R1 + R3, client: n OTs with random choices, proved; the pool once the server says ok."""
    rs = [old.r] if old is not None else []
    hs = [old.h] if old is not None else []
    done = 0
    while done < n:
        k = min(engine.piece, n - done)
        r = unpack_bits(np.frombuffer(random_bytes((k + 7) // 8, engine._rng), np.uint8), k)
        t = engine._extend(r)
        hs.append(engine._pad(t, engine._next_index(k), 1)[:, 0].copy())
        rs.append(r)
        done += k
    engine.ch.flush()
    pool = ReceiverPool(_pool_id(engine), 0, np.concatenate(rs) if rs else np.empty(0, np.uint8),
                        np.concatenate(hs) if hs else np.empty(0, U64))
    ack = engine.ch.recv_json(max_bytes=256)
    if not isinstance(ack, dict) or ack.get("op") != "ot-pool" or not ack.get("ok") or ack.get("left") != pool.left:
        raise ProtocolError("ot-pool: the server did not confirm the refill")
    return pool


def check_request(pool: Any, req: Any, m: int) -> SenderPool:
    """Server, before P1: the client's {id, at} must name exactly the next m unused entries."""
    if not isinstance(req, dict) or not isinstance(req.get("at"), int) or not isinstance(req.get("id"), str):
        raise PoolRefused("ot-pool: malformed pool request")
    if not isinstance(pool, SenderPool) or req["id"] != pool.id.hex():
        raise PoolRefused("ot-pool: no such pool (expired, replaced or never made)")
    if req["at"] < pool.at:
        raise PoolRefused("ot-pool: pool entries already used (replay refused)")
    if req["at"] != pool.at or m > pool.left:
        raise PoolRefused("ot-pool: pool position or size does not match the server's")
    return pool


def _segments(sizes: list[int]) -> list[tuple[int, int]]:
    ends = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def cot_send_pooled(ch: Any, pool: SenderPool, deltas: list[np.ndarray], bits: list[int]) -> list[np.ndarray]:
    """P2, server: like :func:`protocols.ot.softspoken.cot_send_many` on pooled OTs (one message
    each way). Returns x0 per group (mod 2^bits)."""
    segs = _segments([int(np.asarray(d).shape[0]) for d in deltas])
    delta = np.concatenate([np.asarray(d, dtype=U64).ravel() for d in deltas])
    widths = [_check_bits(b) for b in bits]
    m = delta.shape[0]
    if m > pool.left:
        raise PoolRefused("ot-pool: pool position or size does not match the server's")
    # burn first: whatever happens next, these pads never serve another correction
    h0, h1 = pool.h0[:m], pool.h1[:m]
    pool.h0, pool.h1, pool.at = pool.h0[m:], pool.h1[m:], pool.at + m
    raw = ch.recv_array(np.uint8, ((m + 7) // 8,))
    if m % 8 and int(raw[-1]) >> (m % 8):
        raise PoolRefused("ot-pool: derandomisation message has bits past its OTs")
    d = unpack_bits(raw, m).astype(bool)
    a0 = np.where(d, h1, h0)  # m_{d_i} (measured faster here than an xor-mask swap)
    a1 = np.where(d, h0, h1)
    tau = a0 + delta - a1  # the chooser of b gets a_b; a1 + tau = a0 + delta
    parts, x0 = [], np.empty(m, dtype=U64)
    for (a, b), (nb, mask) in zip(segs, widths):
        parts.append(_low_bytes(tau[a:b], nb).view(np.uint8).reshape(-1))
        x0[a:b] = a0[a:b] & mask
    ch.send_array(np.concatenate(parts) if len(parts) > 1 else parts[0], owned=True)
    ch.flush()
    return [x0[a:b] for a, b in segs]


def cot_recv_pooled(ch: Any, pool: ReceiverPool, choices: list[np.ndarray], bits: list[int]) -> list[np.ndarray]:
    """P1 + P3, client: x0 + b * delta (mod 2^bits) per group from the next pooled OTs."""
    segs = _segments([int(np.asarray(c).shape[0]) for c in choices])
    b = np.concatenate([np.asarray(c, dtype=np.uint8).ravel() for c in choices])
    widths = [_check_bits(x) for x in bits]
    m = b.shape[0]
    if m > pool.left:
        raise ProtocolError("ot-pool: too few pooled OTs")
    r, h = pool.r[:m], pool.h[:m]
    pool.r, pool.h, pool.at = pool.r[m:], pool.h[m:], pool.at + m
    ch.send_array(pack_bits(b ^ r), owned=True)
    raw = ch.recv_array(np.uint8, (sum((hi - lo) * nb for (lo, hi), (nb, _) in zip(segs, widths)),))
    return derandomise(h, b, raw, segs, widths)


def derandomise(h: np.ndarray, b: np.ndarray, raw: np.ndarray, segs: list[tuple[int, int]],
                widths: list[tuple[int, np.uint64]]) -> list[np.ndarray]:
    """P3, client: m_r + b_i tau_i per OT from the pads ``h`` = m_r, the choices ``b`` and the
    server's corrections ``raw`` (trimmed per group). A client that sent d = b ^ r ^ e gets the
    COT outputs of the choices b ^ e here (tests: a flipped bit of d is another query)."""
    m = b.shape[0]
    sel = U64(0) - b.astype(U64)  # all-ones where the choice is 1
    out = np.empty(m, dtype=U64)
    off = 0
    for (lo, hi), (nb, mask) in zip(segs, widths):
        k = hi - lo
        seg = raw[off : off + k * nb]
        tau = seg.copy().view(U64) if nb == 8 else _from_low_bytes(seg.reshape(k, nb), (k,), nb)
        off += k * nb
        out[lo:hi] = (h[lo:hi] + (tau & sel[lo:hi])) & mask
    return [out[a:b_] for a, b_ in segs]
