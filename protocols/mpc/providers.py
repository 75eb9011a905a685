"""Correlation providers: where a party's OT correlations and triples come from (CrypTen pattern).

A protocol asks its party for correlations and does not care how they were made. The party
takes its provider as a constructor argument (``Party(ch, role, provider=...)``); every OT
correlation a protocol uses -- COTs, random OTs, table OTs through ``party.ot_sender`` /
``party.ot_receiver``, which the KRR protocols use too -- and every triple come from it:

* :class:`OTCorrelationProvider` (the default of every :class:`~protocols.mpc.party.Party`):
  OT-extension engines (IKNP, or SoftSpoken after :meth:`CorrelationProvider.setup_ot`) run
  between the two parties, and triples generated from them -- no third party.
* :class:`TrustedDealerProviderForTests`: both parties expand the *same* seed into the same
  correlated triples, as if a trusted dealer had handed them out (OT correlations still come
  from OT extension).  Insecure by construction (each party could compute the other's shares);
  it exists only so unit tests of higher layers run fast, and refuses to start unless
  explicitly enabled.

Both parties must call the same provider method with the same sizes in the same order.
Ordering rule (so that OT set-up never deadlocks): whenever party 0 touches ``ot_sender`` the
peer touches ``ot_receiver`` at the same protocol step, and vice versa; :meth:`setup_ot` sets
both directions up in a fixed order (role 0's sender first).
"""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from protocols.mpc.context import PartyContext
from protocols.mpc.randomness import SecureRandom, derive_seed
from protocols.mpc.triples import beaver_triples, bool_triples
from protocols.ot.iknp import OTExtensionReceiver, OTExtensionSender
from protocols.ot.softspoken import SoftSpokenReceiver, SoftSpokenSender
from secureml.errors import SecureMLError

U64 = np.uint64
DEALER_ENV = "SECUREML_ALLOW_TEST_DEALER"


class InsecureProviderError(SecureMLError):
    """The test-only dealer provider was used without being explicitly enabled."""


class CorrelationProvider(ABC):
    """Source of correlated randomness for one party of a two-party computation.

    OT correlations: ``ot_sender`` / ``ot_receiver`` (OT-extension engines, created and set up on
    first use: this party's sender pairs with the peer's receiver), :meth:`setup_ot`,
    :meth:`install_ot`, :meth:`precompute_ot`. Triples: :meth:`triples`, :meth:`bool_triples`.
    """

    name = "abstract"

    def __init__(self, party: PartyContext) -> None:
        self.party = party
        #: counters for cost reports
        self.n_triples = 0
        self.n_bool_triples = 0
        self._ot_sender: Any = None
        self._ot_receiver: Any = None

    # ---- OT correlations --------------------------------------------------------------------
    def _seed(self, label: str) -> int | None:
        return derive_seed(self.party.seed, label, self.party.role)

    @property
    def ot_sender(self) -> Any:
        """OT-extension sender (holds message pairs / correlations); the peer uses its receiver."""
        if self._ot_sender is None:
            s = OTExtensionSender(self.party.ch, seed=self._seed("ot-sender"))
            s.setup()
            self._ot_sender = s
        return self._ot_sender

    @property
    def ot_receiver(self) -> Any:
        """OT-extension receiver (holds choice bits); the peer uses its sender."""
        if self._ot_receiver is None:
            r = OTExtensionReceiver(self.party.ch, seed=self._seed("ot-receiver"))
            r.setup()
            self._ot_receiver = r
        return self._ot_receiver

    def setup_ot(self, softspoken_k: int | None = None) -> None:
        """Set up both OT directions now (base OTs), in an order both roles agree on.

        ``softspoken_k``: SoftSpoken OT extension (:mod:`protocols.ot.softspoken`, 128/k bits per
        OT instead of IKNP's 128) for both directions; both parties must pass the same value.
        """
        first_sender = self.party.role == 0
        if softspoken_k is not None:
            ch = self.party.ch
            snd = SoftSpokenSender(ch, k=softspoken_k, seed=self._seed("ot-sender"))
            rcv = SoftSpokenReceiver(ch, k=softspoken_k, seed=self._seed("ot-receiver"))
            for engine in ((snd, rcv) if first_sender else (rcv, snd)):
                engine.setup()
            self.install_ot(sender=snd, receiver=rcv)
            return
        for get in ((lambda: self.ot_sender, lambda: self.ot_receiver) if first_sender
                    else (lambda: self.ot_receiver, lambda: self.ot_sender)):
            get()

    def install_ot(self, sender: Any = None, receiver: Any = None) -> None:
        """Use OT engines that are already set up (e.g. a resumed SoftSpoken session,
        :mod:`protocols.ot.session`) instead of creating IKNP ones on first use."""
        if sender is not None:
            self._ot_sender = sender
        if receiver is not None:
            self._ot_receiver = receiver

    def precompute_ot(self, n_from_0: int, n_from_1: int) -> None:
        """Offline phase: extend random OTs now, to be consumed (derandomized) later.

        ``n_from_0`` OTs in which party 0 is the OT sender, ``n_from_1`` in which party 1 is;
        both parties pass the same two numbers.
        """
        if self.party.role == 0:
            self.ot_sender.precompute(int(n_from_0))
            self.ot_receiver.precompute(int(n_from_1))
        else:
            self.ot_receiver.precompute(int(n_from_0))
            self.ot_sender.precompute(int(n_from_1))

    # ---- triples ----------------------------------------------------------------------------
    @abstractmethod
    def _triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _bool_triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This party's shares (a, b, c), uint64 (n,), of Beaver triples c = a*b mod 2^64."""
        self.n_triples += int(n)
        return self._triples(int(n))

    def bool_triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This party's XOR shares (a, b, c), uint8 bits (n,), of AND triples c = a & b."""
        self.n_bool_triples += int(n)
        return self._bool_triples(int(n))


class OTCorrelationProvider(CorrelationProvider):
    """Default provider: triples from OT extension between the parties (:mod:`protocols.mpc.triples`)."""

    name = "ot"

    def _triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return beaver_triples(self.party, n)

    def _bool_triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return bool_triples(self.party, n)


class TrustedDealerProviderForTests(CorrelationProvider):
    """TESTS ONLY -- an emulated trusted dealer; provides no security whatsoever.

    Both parties build it with the same ``seed``; each expands the seed with AES-CTR into the
    full dealer output and keeps its own share.  No messages are exchanged for triples.  Refuses
    to run unless ``enable=True`` is passed or the environment variable
    ``SECUREML_ALLOW_TEST_DEALER=1`` is set.
    """

    name = "dealer-tests-only"

    def __init__(self, party: PartyContext, seed: int = 0, *, enable: bool = False) -> None:
        if not (enable or os.environ.get(DEALER_ENV) == "1"):
            raise InsecureProviderError(
                "TrustedDealerProviderForTests is insecure and for tests only; pass enable=True "
                f"or set {DEALER_ENV}=1 to use it"
            )
        super().__init__(party)
        key = hashlib.blake2b(str(seed).encode(), digest_size=16, person=b"secureml-dealer").digest()
        self._prg = SecureRandom(key)

    def _triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a0, a1, b0, b1, c0 = self._prg.random_u64((5, n))
        c1 = (a0 + a1) * (b0 + b1) - c0
        return (a0, b0, c0) if self.party.role == 0 else (a1, b1, c1)

    def _bool_triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a0, a1, b0, b1, c0 = self._prg.random_bits((5, n))
        c1 = ((a0 ^ a1) & (b0 ^ b1)) ^ c0
        return (a0, b0, c0) if self.party.role == 0 else (a1, b1, c1)
