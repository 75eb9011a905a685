"""Featurizer: an explicit dataclass (number of queries, molecules or a function), no side doors."""
from __future__ import annotations

import numpy as np
import pytest

from protocols.common import KernelModelParams
from protocols.krr import Featurizer, ServedModel, molecules_featurizer
from secureml.data import load_embedded
from secureml.representations import CoulombMatrix


def test_featurizer_needs_one_source_and_a_query_count():
    with pytest.raises(ValueError, match="exactly one"):
        Featurizer(n_queries=1)
    with pytest.raises(ValueError, match="positive integer"):
        Featurizer(n_queries=0, fn=lambda pp, m: np.zeros((0, 1)))
    f = Featurizer(n_queries=2, fn=lambda pp, m: np.ones((2, 3)))
    assert f(None, None).shape == (2, 3)


def test_molecules_featurizer_uses_the_served_kinds_featurisation():
    mols = load_embedded().subset(np.arange(3))
    rep = CoulombMatrix(size=23)
    X = rep.fit(mols).transform(mols)
    pp = ServedModel(KernelModelParams(X, np.ones(3), 0.0, "gaussian", 50.0),
                     representation=rep.get_params()).public
    f = molecules_featurizer(mols)
    assert f.n_queries == 3 and f.dataset is mols
    np.testing.assert_allclose(f(pp, None), X)
