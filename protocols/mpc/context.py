"""What a two-party protocol step sees of its party: the interface :class:`~protocols.mpc.party.Party`
implements.

Steps below the party in the layering (Gilboa products, triples, providers) are written against
this interface, so ``party`` can depend on ``providers`` without a circle.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from protocols.mpc.randomness import SecureRandom
from protocols.net.transport import Channel


class PartyContext(Protocol):
    """Channel, role, private randomness and OT correlations of one party (see ``Party``)."""

    ch: Channel
    role: int
    seed: int | None
    rng: SecureRandom

    @property
    def ot_sender(self) -> Any: ...

    @property
    def ot_receiver(self) -> Any: ...

    def exchange(self, a: np.ndarray) -> np.ndarray: ...

    def check_peer(self, tag: str, params: dict[str, Any], announce: bool) -> None: ...
