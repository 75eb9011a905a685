"""Correlation providers: where a party's Beaver triples and AND triples come from (CrypTen pattern).

A protocol asks ``p.provider`` for correlations and does not care how they were made:

* :class:`OTCorrelationProvider` (the default of every :class:`~protocols.mpc.party.Party`):
  triples generated between the two parties with OT extension -- no third party.
* :class:`TrustedDealerProviderForTests`: both parties expand the *same* seed into the same
  correlated randomness, as if a trusted dealer had handed it out.  Insecure by construction
  (each party could compute the other's shares); it exists only so unit tests of higher layers
  run fast, and refuses to start unless explicitly enabled.

Both parties must call the same provider method with the same sizes in the same order.
"""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod

import numpy as np

from protocols.mpc.party import Party, SecureRandom
from secureml.errors import SecureMLError

U64 = np.uint64
DEALER_ENV = "SECUREML_ALLOW_TEST_DEALER"


class InsecureProviderError(SecureMLError):
    """The test-only dealer provider was used without being explicitly enabled."""


class CorrelationProvider(ABC):
    """Source of correlated randomness for one party of a two-party computation."""

    name = "abstract"

    def __init__(self, party: Party) -> None:
        self.party = party
        #: counters for cost reports
        self.n_triples = 0
        self.n_bool_triples = 0

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
        from protocols.mpc.triples import beaver_triples

        return beaver_triples(self.party, n)

    def _bool_triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from protocols.mpc.triples import bool_triples

        return bool_triples(self.party, n)


class TrustedDealerProviderForTests(CorrelationProvider):
    """TESTS ONLY -- an emulated trusted dealer; provides no security whatsoever.

    Both parties build it with the same ``seed``; each expands the seed with AES-CTR into the
    full dealer output and keeps its own share.  No messages are exchanged.  Refuses to run
    unless ``enable=True`` is passed or the environment variable
    ``SECUREML_ALLOW_TEST_DEALER=1`` is set.
    """

    name = "dealer-tests-only"

    def __init__(self, party: Party, seed: int = 0, *, enable: bool = False) -> None:
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
