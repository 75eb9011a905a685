"""Deviating-client building blocks shared by the client-malicious Gaussian tests."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from protocols.krr import binding


def perturbed_mask_reveal(which: str, i: int, err: np.uint64, *, xor: bool) -> Callable:
    """A replacement for ``binding.client_masked`` (called with the original first) that adds
    ``err`` to the client's norm term (``"norm"``), to its share of D_i (``"share"``), or changes
    its u_i afterwards (``"u"``: xor or add ``err``) -- a client deviating in the mask-reveal step."""
    def masked(orig, norm, s_c, c, ring_bits):
        norm, s_c = norm.copy(), s_c.copy()
        if which == "norm":
            norm += err
        elif which == "share":
            s_c[i] += err
        u = orig(norm, s_c, c, ring_bits)
        if which == "u":
            u[i] = binding._mod(u[i] ^ err if xor else u[i] + err, ring_bits)
        return u

    return masked
