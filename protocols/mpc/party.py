"""One side of a two-party computation: channel, role, private randomness and OT engines.

Every two-party protocol in :mod:`protocols` takes a :class:`Party` as first argument.  Both
parties run the same protocol function (or its sender/receiver twin) in the same order; the
lazily created OT-extension engines rely on that ordering.

Randomness: ``Party.rng`` is an AES-128-CTR stream (``cryptography``) keyed from ``os.urandom``;
masks and shares drawn from it are computationally indistinguishable from uniform.  Passing
``seed`` makes it reproducible -- for tests only, it is insecure (anyone who knows the seed
knows every mask).
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secureml.errors import ProtocolError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from protocols.ot.iknp import OTExtensionReceiver, OTExtensionSender
    from protocols.mpc.providers import CorrelationProvider
    from protocols.net.transport import Channel


class SecureRandom:
    """AES-128-CTR pseudo-random generator producing bytes, uint64 words and bits.

    Vectorised: one ``update`` call per request, ~2 GB/s with AES-NI.
    """

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(16) if key is None else key
        if len(key) != 16:
            raise ValueError("SecureRandom key must be 16 bytes")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()

    def random_bytes(self, n: int) -> bytes:
        return self._enc.update(bytes(int(n)))

    def random_u64(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform uint64 array of the given shape."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.random_bytes(8 * count), dtype=np.uint64).reshape(shape).copy()

    def random_bits(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform bits (uint8 0/1) of the given shape."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        packed = np.frombuffer(self.random_bytes((count + 7) // 8), dtype=np.uint8)
        return np.unpackbits(packed)[:count].reshape(shape).copy()

    def random_below(self, shape: int | tuple[int, ...], bits: int) -> np.ndarray:
        """Uniform uint64 values in [0, 2^bits)."""
        u = self.random_u64(shape)
        return u if bits >= 64 else u & np.uint64((1 << bits) - 1)


def _derive_key(seed: int, label: str) -> bytes:
    return hashlib.blake2b(
        f"{label}:{seed}".encode(), digest_size=16, person=b"secureml-party"
    ).digest()


class Party:
    """One party (``role`` 0 or 1) of a two-party protocol over channel ``ch``.

    Attributes: ``ch`` (the channel), ``role``, ``rng`` (:class:`SecureRandom`), ``ot_sender``
    and ``ot_receiver`` (IKNP engines, created and set up on first use: this party's sender is
    paired with the peer's receiver and vice versa), ``provider`` (correlation provider used for
    Beaver and boolean triples; defaults to the OT-based one).

    Ordering rule (so that set-up never deadlocks): whenever party 0 touches ``ot_sender`` the
    peer touches ``ot_receiver`` at the same protocol step, and vice versa.  :meth:`setup_ot`
    sets both directions up in a fixed order (role 0's sender first).
    """

    def __init__(self, ch: "Channel", role: int, seed: int | None = None) -> None:
        if role not in (0, 1):
            raise ValueError(f"role must be 0 or 1, got {role!r}")
        self.ch = ch
        self.role = int(role)
        self.seed = seed
        key = None if seed is None else _derive_key(seed, f"rng-{role}")
        self.rng = SecureRandom(key)
        self._ot_sender: "OTExtensionSender | None" = None
        self._ot_receiver: "OTExtensionReceiver | None" = None
        self._provider: "CorrelationProvider | None" = None

    @property
    def peer(self) -> int:
        return 1 - self.role

    def _ot_seed(self, label: str) -> int | None:
        if self.seed is None:
            return None
        return int.from_bytes(_derive_key(self.seed, f"{label}-{self.role}")[:8], "little")

    @property
    def ot_sender(self) -> "OTExtensionSender":
        """IKNP sender (holds message pairs / correlations); peer must use its ``ot_receiver``."""
        if self._ot_sender is None:
            from protocols.ot.iknp import OTExtensionSender

            s = OTExtensionSender(self.ch, seed=self._ot_seed("ot-sender"))
            s.setup()
            self._ot_sender = s
        return self._ot_sender

    @property
    def ot_receiver(self) -> "OTExtensionReceiver":
        """IKNP receiver (holds choice bits); peer must use its ``ot_sender``."""
        if self._ot_receiver is None:
            from protocols.ot.iknp import OTExtensionReceiver

            r = OTExtensionReceiver(self.ch, seed=self._ot_seed("ot-receiver"))
            r.setup()
            self._ot_receiver = r
        return self._ot_receiver

    def setup_ot(self, softspoken_k: int | None = None) -> None:
        """Set up both OT directions now (base OTs), in an order both roles agree on.

        ``softspoken_k``: use SoftSpoken OT extension (:mod:`protocols.ot.softspoken`, 128/k bits
        per OT instead of IKNP's 128) for both directions; both parties must pass the same value.
        """
        if softspoken_k is not None:
            from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender

            snd = SoftSpokenSender(self.ch, k=softspoken_k, seed=self._ot_seed("ot-sender"))
            rcv = SoftSpokenReceiver(self.ch, k=softspoken_k, seed=self._ot_seed("ot-receiver"))
            for engine in ((snd, rcv) if self.role == 0 else (rcv, snd)):
                engine.setup()
            self.install_ot(sender=snd, receiver=rcv)
            return
        if self.role == 0:
            _ = self.ot_sender
            _ = self.ot_receiver
        else:
            _ = self.ot_receiver
            _ = self.ot_sender

    def install_ot(self, sender: "OTExtensionSender | None" = None,
                   receiver: "OTExtensionReceiver | None" = None) -> None:
        """Use OT engines that are already set up (e.g. a resumed SoftSpoken session,
        :mod:`protocols.ot.session`) instead of creating IKNP ones on first use."""
        if sender is not None:
            self._ot_sender = sender
        if receiver is not None:
            self._ot_receiver = receiver

    def precompute_ot(self, n_from_0: int, n_from_1: int) -> None:
        """Offline phase: extend random OTs now, to be consumed (derandomized) later.

        ``n_from_0`` OTs in which party 0 is the OT sender, ``n_from_1`` in which party 1 is;
        both parties pass the same two numbers.  Later COTs draw from these pools first (online
        cost then: 1 bit + the correction per OT), and extend on demand once a pool is empty.
        """
        if self.role == 0:
            self.ot_sender.precompute(int(n_from_0))
            self.ot_receiver.precompute(int(n_from_1))
        else:
            self.ot_receiver.precompute(int(n_from_0))
            self.ot_sender.precompute(int(n_from_1))

    @property
    def provider(self) -> "CorrelationProvider":
        if self._provider is None:
            from protocols.mpc.providers import OTCorrelationProvider

            self._provider = OTCorrelationProvider(self)
        return self._provider

    @provider.setter
    def provider(self, prov: "CorrelationProvider") -> None:
        self._provider = prov

    # --- small message helpers shared by the protocols -------------------------------------
    def exchange(self, a: np.ndarray) -> np.ndarray:
        """Send ``a`` and receive the peer's array of the same dtype and shape.

        Role 0 sends first and role 1 receives first, so two large messages never sit in full
        socket buffers waiting for each other (simultaneous sends can deadlock over TCP).
        """
        a = np.ascontiguousarray(a)
        if self.role == 0:
            self.ch.send_array(a)
            return self.ch.recv_array(dtype=a.dtype, shape=a.shape)
        other = self.ch.recv_array(dtype=a.dtype, shape=a.shape)
        self.ch.send_array(a)
        return other

    def check_peer(self, tag: str, params: dict[str, Any], sender: bool) -> None:
        """Agree on a protocol's public parameters; ``sender`` sends them, the peer compares.

        Catches mismatched calls (wrong sizes, different chunking) with a clear
        :class:`ProtocolError` instead of a garbled protocol.  One small message, in the same
        direction as the first message of the OT-based protocols that follow, so it adds no round.
        """
        msg = {"op": tag, **params}
        if sender:
            self.ch.send_json(msg)
        else:
            got = self.ch.recv_json()
            if got != msg:
                raise ProtocolError(f"peer runs {got!r} but this party expects {msg!r}")
