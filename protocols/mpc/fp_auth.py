"""The RNS primes p_1..p_k (each below 2^50) of the lattice proof's relations, as a field of
residue vectors (:class:`Field`: :class:`~protocols.mpc.rlwe.ModPrimes` arithmetic and a dot product).

Until protocol 34 this module also carried one-sided MACs mod each p_i on the client's committed
bits and a check of linear relations over them, for the checked lattice cross term
(:mod:`protocols.mpc.bfv_proof`). Protocol 35 MACs those bits once in Z_2^R and lifts each prime's
relation to the integers (bfv_proof's docstring has the argument), so only the field arithmetic
is left here.
"""
from __future__ import annotations

import numpy as np

from protocols.mpc.rlwe import ModPrimes

U64, F64 = np.uint64, np.float64


class Field(ModPrimes):
    """The k primes (each < 2^50) and their float inverses, as (k,) arrays."""

    def __init__(self, primes: list[int]) -> None:
        if not primes or max(primes) >= 1 << 50:
            raise ValueError("fp_auth needs primes below 2^50")
        self.primes = [int(p) for p in primes]
        self.k = len(primes)
        self.p = np.array(self.primes, dtype=U64)
        self.pinv = 1.0 / self.p.astype(F64)

    def dot(self, coef: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """sum over the first axis of coef * vals mod p: (m, k), (m, k) -> (k,)."""
        prod = self.mul(coef, vals)  # (m, k), each < 2^50
        m = prod.shape[0]
        acc = np.zeros(self.k, dtype=U64)
        for a in range(0, m, 8192):  # 8192 terms < 2^50 sum below 2^63
            acc = self.add(acc, prod[a:a + 8192].sum(axis=0, dtype=U64) % self.p)
        return acc
