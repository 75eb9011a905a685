"""Additive secret sharing over Z_2^64 (numpy ``uint64``): share, reconstruct, linear ops, products.

A secret ``x`` is split as ``x = x0 + x1 (mod 2^64)``; party p holds ``x_p``.  One share alone is
uniformly distributed and says nothing about ``x``.  Linear operations are local; products of two
secrets use a Beaver triple from the party's correlation provider (OT-based by default); fixed-
point products (:func:`protocols.mpc.truncation.mul_fixed`) add a truncation.

All functions operate on plain ``uint64`` arrays (a party's share) and take the
:class:`~protocols.mpc.party.Party` when they need to talk or to know the role.
:class:`ArithmeticShare` wraps a share with its party for operator syntax.

Threat model: semi-honest.  ``share`` reveals shapes; ``beaver_mul`` opens ``x - a`` and
``y - b``, uniformly masked by the triple; ``reconstruct`` / ``reveal_to`` reveal the value to
both / one party by design.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols.mpc.party import Party
from secureml.errors import DataError

U64 = np.uint64


def _u64(a: np.ndarray | int) -> np.ndarray:
    return np.asarray(a, dtype=U64)


def share(p: Party, x: np.ndarray | None, owner: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Secret-share ``x`` (uint64 ring elements) held by ``owner``; returns this party's share.

    Steps: 1. owner draws a uniform mask r and keeps it as its share;
           2. owner sends x - r to the peer, whose share it is.
    The non-owner passes ``x=None`` (and optionally the expected ``shape``, checked).
    """
    if p.role == owner:
        if x is None:
            raise DataError("the owner must pass the value to share")
        x = np.ascontiguousarray(x, dtype=U64)
        r = p.rng.random_u64(x.shape)
        p.ch.send_array(x - r)
        return r
    return p.ch.recv_array(dtype=U64, shape=shape)


def reconstruct(p: Party, s: np.ndarray) -> np.ndarray:
    """Open a shared value to both parties: exchange shares and add."""
    s = np.ascontiguousarray(s, dtype=U64)
    return s + p.exchange(s)


def reveal_to(p: Party, s: np.ndarray, to: int) -> np.ndarray | None:
    """Open a shared value to party ``to`` only; the other party gets ``None`` and learns nothing."""
    s = np.ascontiguousarray(s, dtype=U64)
    if p.role == to:
        return s + p.ch.recv_array(dtype=U64, shape=s.shape)
    p.ch.send_array(s)
    return None


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of x + y from shares of x and y (local)."""
    return _u64(a) + _u64(b)


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of x - y (local)."""
    return _u64(a) - _u64(b)


def neg(a: np.ndarray) -> np.ndarray:
    """Share of -x (local)."""
    return U64(0) - _u64(a)


def add_public(p: Party, a: np.ndarray, c: np.ndarray | int) -> np.ndarray:
    """Share of x + c for a public c: only party 0 adds it."""
    return _u64(a) + _u64(c) if p.role == 0 else _u64(a).copy()


def mul_public(a: np.ndarray, c: np.ndarray | int) -> np.ndarray:
    """Share of c * x for a public ring element c (local).

    For fixed-point ``c`` the result carries the extra fractional bits of ``c``: truncate after.
    """
    return _u64(a) * _u64(c)


def beaver_mul(p: Party, x: np.ndarray, y: np.ndarray, provider=None) -> np.ndarray:
    """Share of x * y (elementwise, mod 2^64) from shares of x and y, with one Beaver triple each.

    Steps: 1. take triples (a, b, c) from the provider (default ``p.provider``, OT-based);
           2. open d = x - a and e = y - b (one exchange; uniformly masked by a, b);
           3. z = c + d b + e a (+ d e by party 0).
    """
    x = np.ascontiguousarray(x, dtype=U64)
    y = np.ascontiguousarray(y, dtype=U64)
    if x.shape != y.shape:
        raise DataError(f"beaver_mul needs equal shapes, got {x.shape} and {y.shape}")
    prov = p.provider if provider is None else provider
    n = x.size
    a, b, c = prov.triples(n)
    a, b, c = a.reshape(x.shape), b.reshape(x.shape), c.reshape(x.shape)
    mine = np.stack([x - a, y - b])
    opened = mine + p.exchange(mine)
    d, e = opened[0], opened[1]
    z = c + d * b + e * a
    if p.role == 0:
        z = z + d * e
    return z


@dataclass
class ArithmeticShare:
    """A party's share of a secret uint64 array, with operator syntax for the local operations.

    ``+``/``-`` with another share or a public value, ``*`` with a public ring element or another
    share (Beaver, interactive: both parties must evaluate the same expression in the same order).
    """

    party: Party
    value: np.ndarray

    def __post_init__(self) -> None:
        self.value = np.ascontiguousarray(self.value, dtype=U64)

    @classmethod
    def from_owner(
        cls, p: Party, x: np.ndarray | None, owner: int, shape: tuple[int, ...] | None = None
    ) -> "ArithmeticShare":
        return cls(p, share(p, x, owner, shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    def __add__(self, other: "ArithmeticShare | np.ndarray | int") -> "ArithmeticShare":
        if isinstance(other, ArithmeticShare):
            return ArithmeticShare(self.party, add(self.value, other.value))
        return ArithmeticShare(self.party, add_public(self.party, self.value, other))

    def __sub__(self, other: "ArithmeticShare | np.ndarray | int") -> "ArithmeticShare":
        if isinstance(other, ArithmeticShare):
            return ArithmeticShare(self.party, sub(self.value, other.value))
        return ArithmeticShare(self.party, add_public(self.party, self.value, neg(_u64(other))))

    def __neg__(self) -> "ArithmeticShare":
        return ArithmeticShare(self.party, neg(self.value))

    def __mul__(self, other: "ArithmeticShare | np.ndarray | int") -> "ArithmeticShare":
        if isinstance(other, ArithmeticShare):
            return ArithmeticShare(self.party, beaver_mul(self.party, self.value, other.value))
        return ArithmeticShare(self.party, mul_public(self.value, other))

    def reconstruct(self) -> np.ndarray:
        return reconstruct(self.party, self.value)

    def reveal_to(self, to: int) -> np.ndarray | None:
        return reveal_to(self.party, self.value, to)
