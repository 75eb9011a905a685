"""One side of a two-party computation: channel, role, private randomness and its correlation provider.

Every two-party protocol in :mod:`protocols` takes a :class:`Party` as first argument.  Both
parties run the same protocol function (branching on ``party.role`` where the roles differ) in
the same order; the lazily created OT-extension engines rely on that ordering.

Randomness: ``Party.rng`` is an AES-128-CTR stream (:class:`~protocols.mpc.randomness.SecureRandom`)
keyed from ``os.urandom``.  Passing ``seed`` makes it, and the OT engines, reproducible -- for
tests only, it is insecure (anyone who knows the seed knows every mask).

Correlations (OT and triples) come from the party's provider, a constructor argument
(:mod:`protocols.mpc.providers`); ``ot_sender``/``ot_receiver`` and the OT set-up methods are the
provider's, so swapping the provider reaches every protocol built on the party, KRR included.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from protocols.mpc.providers import CorrelationProvider, OTCorrelationProvider
from protocols.mpc.randomness import SecureRandom, derive_key
from protocols.net.transport import Channel
from secureml.errors import ProtocolError

__all__ = ["Party", "SecureRandom"]

#: builds a party's provider from the party (a provider class, or a function of the party)
ProviderFactory = Callable[["Party"], CorrelationProvider]


class Party:
    """One party (``role`` 0 or 1) of a two-party protocol over channel ``ch``.

    Attributes: ``ch`` (the channel), ``role``, ``rng`` (:class:`SecureRandom`), ``provider``
    (its :class:`~protocols.mpc.providers.CorrelationProvider`, built by the ``provider`` factory;
    default :class:`~protocols.mpc.providers.OTCorrelationProvider`), and, from the provider,
    ``ot_sender`` / ``ot_receiver`` (OT-extension engines: this party's sender is paired with the
    peer's receiver and vice versa).
    """

    def __init__(self, ch: Channel, role: int, seed: int | None = None,
                 provider: ProviderFactory | None = None) -> None:
        if role not in (0, 1):
            raise ValueError(f"role must be 0 or 1, got {role!r}")
        self.ch = ch
        self.role = int(role)
        self.seed = seed
        key = None if seed is None else derive_key(seed, f"rng-{role}")
        self.rng = SecureRandom(key)
        self.provider: CorrelationProvider = (OTCorrelationProvider if provider is None else provider)(self)

    @property
    def peer(self) -> int:
        return 1 - self.role

    # ---- OT correlations, from the provider -------------------------------------------------
    @property
    def ot_sender(self) -> Any:
        """OT-extension sender (holds message pairs / correlations); peer must use its ``ot_receiver``."""
        return self.provider.ot_sender

    @property
    def ot_receiver(self) -> Any:
        """OT-extension receiver (holds choice bits); peer must use its ``ot_sender``."""
        return self.provider.ot_receiver

    def setup_ot(self, softspoken_k: int | None = None) -> None:
        """Set up both OT directions now (:meth:`CorrelationProvider.setup_ot`)."""
        self.provider.setup_ot(softspoken_k)

    def install_ot(self, sender: Any = None, receiver: Any = None) -> None:
        """Use OT engines that are already set up (:meth:`CorrelationProvider.install_ot`)."""
        self.provider.install_ot(sender=sender, receiver=receiver)

    def precompute_ot(self, n_from_0: int, n_from_1: int) -> None:
        """Offline phase: extend random OTs now (:meth:`CorrelationProvider.precompute_ot`)."""
        self.provider.precompute_ot(n_from_0, n_from_1)

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

    def check_peer(self, tag: str, params: dict[str, Any], announce: bool) -> None:
        """Agree on a protocol's public parameters: the ``announce`` side sends them, the peer
        compares (who announces is the protocol's choice, not its OT role).

        Catches mismatched calls (wrong sizes, different chunking) with a clear
        :class:`ProtocolError` instead of a garbled protocol.  One small message, in the same
        direction as the first message of the OT-based protocols that follow, so it adds no round.
        """
        msg = {"op": tag, **params}
        if announce:
            self.ch.send_json(msg)
        else:
            got = self.ch.recv_json()
            if got != msg:
                raise ProtocolError(f"peer runs {got!r} but this party expects {msg!r}")
