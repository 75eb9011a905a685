"""Deviating-client building blocks shared by the client-malicious tests."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

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


def bit_flipping_send(real: Callable, rng: np.random.Generator, target: int, state: dict,
                      payload_only: bool = False) -> Callable:
    """A replacement for a channel's ``_send_frame`` (``real``) that flips one random bit of the
    ``target``-th frame it sends; ``state["n"]`` counts frames, ``state["hit"]`` tells whether the
    target frame was reached -- a client corrupting one of its messages. ``payload_only``: never in
    an array's header (the first part of a frame of several; a flip there fails to parse), so the
    flipped bit is one of the protocol's values."""
    def flip(parts, wait=True):
        idx = state["n"]
        state["n"] += 1
        if idx == target:
            raw = bytearray(b"".join(bytes(memoryview(x).cast("B")) for x in parts))
            skip = memoryview(parts[0]).nbytes if payload_only and len(parts) > 1 and len(raw) > memoryview(
                parts[0]).nbytes else 0
            bit = int(rng.integers(8 * skip, 8 * len(raw)))
            raw[bit // 8] ^= 1 << (bit % 8)
            state["hit"] = True
            state["bit"], state["frame_len"] = bit, len(raw)  # where: a flipped pool d is another query
            return real([bytes(raw)], wait)
        return real(parts, wait)

    return flip


class PartyPatch:
    """Replace ``module.name`` on one party's thread of ``run_two_party`` only (its threads are
    named party0, the server, and party1, the client): the client's by default, the server's with
    ``server=True``. Calls there go to ``fn(original, *args)``; other threads get the original."""

    def __init__(self, module: Any, name: str, fn: Callable, server: bool = False) -> None:
        self.module, self.name, self.fn = module, name, fn
        self.orig = getattr(module, name)
        self.thread_name = "party0" if server else "party1"

    def __enter__(self) -> "PartyPatch":
        orig, fn = self.orig, self.fn

        def dispatch(*a, **kw):
            if threading.current_thread().name == self.thread_name:
                return fn(orig, *a, **kw)
            return orig(*a, **kw)
        setattr(self.module, self.name, dispatch)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.module, self.name, self.orig)


def patch_on_this_thread(monkeypatch: Any, module: Any, name: str, fn: Callable) -> None:
    """Replace ``module.name`` on the calling (the client's) thread only: fn(original, *args);
    an in-process server's threads keep the original."""
    orig = getattr(module, name)
    client = threading.current_thread()

    def dispatch(*a, **kw):
        if threading.current_thread() is client:
            return fn(orig, *a, **kw)
        return orig(*a, **kw)

    monkeypatch.setattr(module, name, dispatch)
