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
  Precorrected pools (protocol 30, :func:`precorrect_send` / :func:`precorrect_recv`, spent by
  :func:`spend_send` / :func:`spend_recv`): after R3, R4 -- the server sends tau = m0 + delta - m1
  for every new entry (delta: the caller's correlation for that entry) and keeps its shares x0 = m0
  (d = 0) and -m0 - delta (d = 1); the client keeps t = m_r + r tau = m0 + r delta. Spending is P1
  alone: the client sends d = b ^ r and takes t or -t, the server picks its share by d; nothing else
  moves, and their difference is b delta. A precorrected pool holds shares, not pads: it is never
  corrected again (:func:`cot_send_pooled` refuses it), and its entries are single use as above
  (two answers under one entry are x0 and -x0 - delta: the correlation).
  Rounded corrections (``drops``, protocol 30: :func:`protocols.mpc.gilboa.inner_products_pipelined`
  with a public L): P2 sends tau_i >> c_i in fewer bytes, P3 takes (tau_i >> c_i) << c_i; a
  choice-1 output misses tau_i mod 2^c_i, which a0 (the pad the client never holds) makes uniform
  to it -- a centred error the caller adds back on average, independent of delta.

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
           "cot_send_pooled", "cot_recv_pooled", "check_request", "derandomise", "precorrect_send",
           "precorrect_recv", "spend_send", "spend_recv"]

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
    #: precorrected (R4 done): h0, h1 are the server's shares for d = 0 / 1, not pads
    pre: bool = False

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
    #: precorrected (R4 done): h is t = m_0 + r delta, not the pad m_r
    pre: bool = False

    @property
    def left(self) -> int:
        return int(self.h.shape[0])


def status(pool: Any) -> dict[str, Any] | None:
    """Public description of a pool (announced by the server when a ticket is resumed)."""
    if not isinstance(pool, (SenderPool, ReceiverPool)):
        return None
    out: dict[str, Any] = {"id": pool.id.hex(), "at": pool.at, "left": pool.left}
    if pool.pre:
        out["pre"] = True
    return out


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
    # (with a precorrected old pool, its unused entries stay precorrected; R4 converts the new ones)
    pool = SenderPool(_pool_id(engine), 0, np.concatenate(h0s) if h0s else np.empty(0, U64),
                      np.concatenate(h1s) if h1s else np.empty(0, U64), pre=bool(old is not None and old.pre))
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
                        np.concatenate(hs) if hs else np.empty(0, U64), pre=bool(old is not None and old.pre))
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


def _sent_widths(widths: list[tuple[int, np.uint64]], drops: list[Any] | None, kept: list[int] | None
                 ) -> list[int]:
    """Bytes per correction of every group: ceil(bits / 8), or ceil(kept / 8) with rounding."""
    if drops is None:
        return [nb for nb, _ in widths]
    if kept is None or len(kept) != len(widths) or len(drops) != len(widths):
        raise ValueError("rounded corrections need drops and kept widths per group")
    return [(int(b) + 7) // 8 for b in kept]


def _shift(x: np.ndarray, drop: Any, right: bool) -> np.ndarray:
    """x >> drop (or <<): ``drop`` an int, one shift per element, or one per row of a bit-major
    group (len(drop) rows of equal length: broadcast, no per-element shift array)."""
    c = np.asarray(drop, dtype=U64)
    if c.ndim == 1 and 0 < c.shape[0] < x.shape[0] and x.shape[0] % c.shape[0] == 0:
        x = x.reshape(c.shape[0], -1)
        c = c[:, None]
    out = (x >> c) if right else (x << c)
    return out.reshape(-1)


def _wire(t: np.ndarray, nb: int) -> np.ndarray:
    """The low nb bytes of every uint64, as bytes (little endian)."""
    if nb == 4:  # one narrowing cast instead of a strided copy
        return t.astype("<u4").view(np.uint8)
    return _low_bytes(t, nb).view(np.uint8).reshape(-1)


def cot_send_pooled(ch: Any, pool: SenderPool, deltas: list[np.ndarray], bits: list[int],
                    drops: list[Any] | None = None, kept: list[int] | None = None) -> list[np.ndarray]:
    """P2, server: like :func:`protocols.ot.softspoken.cot_send_many` on pooled OTs (one message
    each way). Returns x0 per group (mod 2^bits).

    ``drops`` (rounded corrections, :mod:`protocols.mpc.gilboa`): per group, the number of low
    bits c of every correction that are not sent (an int, one per OT, or one per equal-length row
    of the group: its bits, bit-major); the correction travels as
    tau >> c in ceil(kept / 8) bytes (``kept`` per group). The receiver's output then misses
    b (tau mod 2^c), uniform to it (:func:`derandomise`)."""
    segs = _segments([int(np.asarray(d).shape[0]) for d in deltas])
    delta = np.concatenate([np.asarray(d, dtype=U64).ravel() for d in deltas])
    widths = [_check_bits(b) for b in bits]
    sent = _sent_widths(widths, drops, kept)
    m = delta.shape[0]
    if m > pool.left or pool.pre:  # a precorrected pool holds shares, not pads: never corrected twice
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
    for g, ((a, b), (_, mask), nb) in enumerate(zip(segs, widths, sent)):
        t = tau[a:b] if drops is None else _shift(tau[a:b], drops[g], right=True)
        parts.append(_wire(t, nb))
        x0[a:b] = a0[a:b] & mask
    ch.send_array(np.concatenate(parts) if len(parts) > 1 else parts[0], owned=True)
    ch.flush()
    return [x0[a:b] for a, b in segs]


def cot_recv_pooled(ch: Any, pool: ReceiverPool, choices: list[np.ndarray], bits: list[int],
                    drops: list[Any] | None = None, kept: list[int] | None = None) -> list[np.ndarray]:
    """P1 + P3, client: x0 + b * delta (mod 2^bits) per group from the next pooled OTs
    (with ``drops``: x0 + b (delta - (tau mod 2^c)), see :func:`cot_send_pooled`)."""
    segs = _segments([int(np.asarray(c).shape[0]) for c in choices])
    b = np.concatenate([np.asarray(c, dtype=np.uint8).ravel() for c in choices])
    widths = [_check_bits(x) for x in bits]
    sent = _sent_widths(widths, drops, kept)
    m = b.shape[0]
    if m > pool.left:
        raise ProtocolError("ot-pool: too few pooled OTs")
    r, h = pool.r[:m], pool.h[:m]
    pool.r, pool.h, pool.at = pool.r[m:], pool.h[m:], pool.at + m
    ch.send_array(pack_bits(b ^ r), owned=True)
    raw = ch.recv_array(np.uint8, (sum((hi - lo) * nb for (lo, hi), nb in zip(segs, sent)),))
    return derandomise(h, b, raw, segs, widths, drops, sent)


def derandomise(h: np.ndarray, b: np.ndarray, raw: np.ndarray, segs: list[tuple[int, int]],
                widths: list[tuple[int, np.uint64]], drops: list[Any] | None = None,
                sent: list[int] | None = None) -> list[np.ndarray]:
    """P3, client: m_r + b_i tau_i per OT from the pads ``h`` = m_r, the choices ``b`` and the
    server's corrections ``raw`` (trimmed per group). A client that sent d = b ^ r ^ e gets the
    COT outputs of the choices b ^ e here (tests: a flipped bit of d is another query).
    ``drops``/``sent``: rounded corrections (tau >> c in ``sent`` bytes per group): tau is taken as
    (tau >> c) << c, so a choice-1 output is short by tau mod 2^c -- uniform on [0, 2^c) to this
    party, which never holds the pad a0 that masks it (the caller re-centres the sum)."""
    m = b.shape[0]
    sel = U64(0) - b.astype(U64)  # all-ones where the choice is 1
    out = np.empty(m, dtype=U64)
    off = 0
    sent = [nb for nb, _ in widths] if sent is None else sent
    for g, ((lo, hi), (_, mask), nb) in enumerate(zip(segs, widths, sent)):
        k = hi - lo
        seg = raw[off : off + k * nb]
        if nb == 8:
            tau = seg.copy().view(U64)
        elif nb == 4:  # the rounded corrections' usual width: one widening cast
            tau = seg.view("<u4").astype(U64)
        else:
            tau = _from_low_bytes(seg.reshape(k, nb), (k,), nb)
        if drops is not None:
            tau = _shift(tau, drops[g], right=False)
        off += k * nb
        out[lo:hi] = (h[lo:hi] + (tau & sel[lo:hi])) & mask
    return [out[a:b_] for a, b_ in segs]


# ---- precorrected pools: the corrections made after the reply, for the next session ------------

def precorrect_send(ch: Any, pool: SenderPool, n: int, delta: np.ndarray, nbytes: np.ndarray,
                    drops: np.ndarray | None = None) -> SenderPool:
    """R4, server, after :func:`refill_send`: the pool's last ``n`` entries (this refill's, raw
    pads) become COTs with the correlations ``delta`` (n,): it sends tau = m0 + delta - m1 in
    ``nbytes`` (n,) low bytes each (``drops``: tau >> c per entry, rounded corrections) and keeps,
    per entry, its share for either d: x0 = m0 (d = 0) and -m0 - delta (d = 1). Earlier entries
    must be precorrected already (or none)."""
    if n > pool.left or (pool.left > n and not pool.pre):
        raise ProtocolError("ot-pool: only a fresh refill of a precorrected pool can be precorrected")
    a = pool.left - n
    m0, m1 = pool.h0[a:], pool.h1[a:]
    delta = np.asarray(delta, dtype=U64)
    tau = m0 + delta - m1
    if drops is not None:
        tau = tau >> np.asarray(drops, dtype=U64)
    ch.send_array(_bytes_by_width(tau, nbytes), owned=True)
    ch.flush()
    h1 = pool.h1.copy()
    h1[a:] = U64(0) - m0 - delta
    return SenderPool(pool.id, pool.at, pool.h0, h1, pre=True)


def precorrect_recv(ch: Any, pool: ReceiverPool, n: int, nbytes: np.ndarray,
                    drops: np.ndarray | None = None) -> ReceiverPool:
    """R4, client: t = m_r + r tau = m0 + r delta (mod 2^(8 nbytes)) for the last ``n`` entries;
    with ``drops``, tau is taken as (tau >> c) << c: an r = 1 entry is short by tau mod 2^c,
    uniform to this party (m0 masks it)."""
    if n > pool.left or (pool.left > n and not pool.pre):
        raise ProtocolError("ot-pool: only a fresh refill of a precorrected pool can be precorrected")
    a = pool.left - n
    nbytes = np.asarray(nbytes)
    raw = ch.recv_array(np.uint8, (int(nbytes.sum()),))
    tau = _values_by_width(raw, nbytes)
    if drops is not None:
        tau = tau << np.asarray(drops, dtype=U64)
    h = pool.h.copy()
    h[a:] = h[a:] + (tau & (U64(0) - pool.r[a:].astype(U64)))
    return ReceiverPool(pool.id, pool.at, pool.r, h, pre=True)


def _runs(nbytes: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, width) runs of equal byte widths."""
    cut = np.flatnonzero(np.diff(nbytes)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [nbytes.shape[0]]])
    return [(int(a), int(b), int(nbytes[a])) for a, b in zip(starts, ends)]


def _bytes_by_width(x: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    return np.concatenate([_wire(x[a:b], nb) for a, b, nb in _runs(np.asarray(nbytes))])


def _values_by_width(raw: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    out = np.empty(nbytes.shape[0], dtype=U64)
    off = 0
    for a, b, nb in _runs(nbytes):
        k = b - a
        seg = raw[off:off + k * nb]
        out[a:b] = (seg.view("<u4").astype(U64) if nb == 4 else seg.copy().view(U64) if nb == 8
                    else _from_low_bytes(seg.reshape(k, nb), (k,), nb))
        off += k * nb
    return out


def spend_send(ch: Any, pool: SenderPool, m: int) -> np.ndarray:
    """P1-P2 on a precorrected pool, server: receives d (m bits), burns the next m entries and
    returns its shares s_i = x0_i (d_i = 0) or -x0_i - delta_i (d_i = 1): with the client's
    c_i = t_i or -t_i, c_i - s_i = b_i delta_i for b = d ^ r. Nothing is sent."""
    if not pool.pre or m > pool.left:
        raise PoolRefused("ot-pool: pool position or size does not match the server's")
    s0, s1 = pool.h0[:m], pool.h1[:m]
    pool.h0, pool.h1, pool.at = pool.h0[m:], pool.h1[m:], pool.at + m  # burnt first, as in P2
    raw = ch.recv_array(np.uint8, ((m + 7) // 8,))
    if m % 8 and int(raw[-1]) >> (m % 8):
        raise PoolRefused("ot-pool: derandomisation message has bits past its OTs")
    return np.where(unpack_bits(raw, m).astype(bool), s1, s0)


def spend_recv(ch: Any, pool: ReceiverPool, b: np.ndarray) -> np.ndarray:
    """P1 on a precorrected pool, client: sends d = b ^ r; returns c_i = t_i (d_i = 0) or -t_i."""
    b = np.asarray(b, dtype=np.uint8).ravel()
    m = b.shape[0]
    if not pool.pre or m > pool.left:
        raise ProtocolError("ot-pool: too few pooled OTs")
    r, t = pool.r[:m], pool.h[:m]
    pool.r, pool.h, pool.at = pool.r[m:], pool.h[m:], pool.at + m
    d = b ^ r
    ch.send_array(pack_bits(d), owned=True)
    return np.where(d.astype(bool), U64(0) - t, t)
