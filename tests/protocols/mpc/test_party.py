"""Party: role, seeded randomness (tests only), its provider as a constructor argument, helpers."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.mpc.party import Party
from protocols.mpc.providers import OTCorrelationProvider, TrustedDealerProviderForTests
from protocols.net.transport import local_channel_pair
from protocols.testing import dealer_provider, run_two_party
from secureml.errors import ProtocolError


def test_role_and_default_provider():
    c0, _ = local_channel_pair()
    with pytest.raises(ValueError, match="role must be 0 or 1"):
        Party(c0, 2)
    p = Party(c0, 0)
    assert p.peer == 1 and isinstance(p.provider, OTCorrelationProvider) and p.provider.party is p


def test_provider_is_a_constructor_argument():
    c0, _ = local_channel_pair()
    p = Party(c0, 1, provider=dealer_provider(7))
    assert isinstance(p.provider, TrustedDealerProviderForTests) and p.provider.party is p


def test_seeded_randomness_is_reproducible_and_role_specific():
    c0, c1 = local_channel_pair()
    a, b = Party(c0, 0, seed=5).rng.random_u64(4), Party(c0, 0, seed=5).rng.random_u64(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, Party(c1, 1, seed=5).rng.random_u64(4))
    assert not np.array_equal(Party(c0, 0).rng.random_u64(4), Party(c0, 0).rng.random_u64(4))


def test_exchange_and_check_peer():
    x = np.arange(6, dtype=np.uint64)
    r0, r1 = run_two_party(lambda p: p.exchange(x + p.role), lambda p: p.exchange(x + p.role))
    assert np.array_equal(r0, x + 1) and np.array_equal(r1, x)
    run_two_party(lambda p: p.check_peer("t", {"n": 3}, announce=True),
                  lambda p: p.check_peer("t", {"n": 3}, announce=False))
    with pytest.raises(ProtocolError, match="peer runs"):
        run_two_party(lambda p: p.check_peer("t", {"n": 3}, announce=True),
                      lambda p: p.check_peer("t", {"n": 4}, announce=False), timeout=10)
