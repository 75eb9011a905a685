"""Deviating-client building blocks shared by the client-malicious tests."""
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


def bit_flipping_send(real: Callable, rng: np.random.Generator, target: int, state: dict) -> Callable:
    """A replacement for a channel's ``_send_frame`` (``real``) that flips one random bit of the
    ``target``-th frame it sends; ``state["n"]`` counts frames, ``state["hit"]`` tells whether the
    target frame was reached -- a client corrupting one of its messages."""
    def flip(parts, wait=True):
        idx = state["n"]
        state["n"] += 1
        if idx == target:
            raw = bytearray(b"".join(bytes(memoryview(x).cast("B")) for x in parts))
            bit = int(rng.integers(0, 8 * len(raw)))
            raw[bit // 8] ^= 1 << (bit % 8)
            state["hit"] = True
            return real([bytes(raw)], wait)
        return real(parts, wait)

    return flip
