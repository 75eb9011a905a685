"""The registry of served model kinds, and the correlation provider reaching the KRR protocols."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import ServedModel, predict_features, serve_one
from protocols.krr.params import KINDS
from protocols.krr.registry import PROTOCOLS, ExactKernelProtocol, protocol_for
from protocols.mpc.party import Party
from protocols.mpc.providers import OTCorrelationProvider
from protocols.net.transport import local_channel_pair
from secureml.errors import ProtocolError


def test_every_public_kind_has_one_protocol_object():
    assert set(PROTOCOLS) == set(KINDS)
    assert isinstance(protocol_for("krr-laplacian"), ExactKernelProtocol)
    with pytest.raises(ProtocolError, match="unknown model kind 'krr-cubic'"):
        protocol_for("krr-cubic")


class CountingProvider(OTCorrelationProvider):
    """A provider that counts every use of its OT engines (stands for any other source)."""

    def __init__(self, party) -> None:
        super().__init__(party)
        self.uses = 0
        self.setups: list[int | None] = []

    @property
    def ot_sender(self):
        self.uses += 1
        return super().ot_sender

    @property
    def ot_receiver(self):
        self.uses += 1
        return super().ot_receiver

    def setup_ot(self, softspoken_k=None) -> None:
        self.setups.append(softspoken_k)
        super().setup_ot(softspoken_k)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_a_swapped_provider_reaches_the_krr_protocols(kernel):
    rng = np.random.default_rng(3)
    X = np.round(rng.uniform(0, 20, (10, 4)) * 4) / 4
    model = KernelModelParams(X, rng.normal(0, 5, 10), 1.0, kernel, 20.0)
    served = ServedModel(model, frac_bits=2 if kernel == "laplacian" else None)
    Q = X[:2] + 0.25
    c0, c1 = local_channel_pair(timeout=60)
    p0, p1 = Party(c0, 0, provider=CountingProvider), Party(c1, 1, provider=CountingProvider)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(cost=serve_one(served, c0, party=p0)), daemon=True)
    t.start()
    preds, _, _ = predict_features(c1, Q, party=p1)
    t.join(30)
    np.testing.assert_allclose(preds, model.predict(Q), atol=1e-3)
    for p in (p0, p1):
        # every OT correlation of the session came through the provider the party was given
        assert isinstance(p.provider, CountingProvider) and p.provider.setups == [4]
        # (protocol 3's Gaussian session touches its OT engines 7 times: flag chain, table OT and
        # one inner product -- the cross term is lattice HE, which needs no OT)
        assert p.provider.uses > 5
