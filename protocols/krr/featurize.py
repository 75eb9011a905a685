"""Query featurisation on the client: molecules -> the model inputs, once the public settings are known.

A :class:`Featurizer` is called after the handshake (when the representation settings, and for
compact models the public feature map, are known). It carries what the session needs up front --
the number of queries for the hello -- and, when built from molecules, the molecules themselves,
from which the client derives the element counts of a dressed-atom baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from protocols.krr.params import PublicParams
from protocols.krr.registry import protocol_for
from secureml.models.baseline import composition


@dataclass(frozen=True)
class Featurizer:
    """``featurize(params, public_model) -> Q`` for :func:`protocols.krr.client.predict_features`.

    ``n_queries``: how many queries the session asks for. ``dataset``: the query molecules (the
    model kind's own featurisation is used, see :meth:`protocols.krr.registry.ModelProtocol.molecule_features`),
    or ``fn``: any function of (public params, public model) returning the (k, d) inputs.
    """

    n_queries: int
    dataset: Any = None
    fn: Callable[[PublicParams, Any], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.fn is None):
            raise ValueError("a Featurizer needs exactly one of dataset or fn")
        if not isinstance(self.n_queries, int) or self.n_queries < 1:
            raise ValueError(f"n_queries must be a positive integer, got {self.n_queries!r}")

    def __call__(self, pp: PublicParams, public_model: Any) -> np.ndarray:
        if self.fn is not None:
            return self.fn(pp, public_model)
        # an element the model never saw: say so by name, before anything private moves (the
        # features would otherwise only fall outside the public bounds)
        pp.check_elements(self.dataset.charges, self.dataset.names or None)
        return protocol_for(pp.kind).molecule_features(pp, public_model, self.dataset)


def molecules_featurizer(dataset: Any) -> Featurizer:
    """The featurizer that turns query molecules into what the served model needs."""
    return Featurizer(n_queries=len(dataset), dataset=dataset)


def element_counts(pp: PublicParams, dataset: Any) -> np.ndarray:
    """The query molecules' counts of the model's baseline elements (client side, never sent)."""
    return composition(dataset, pp.baseline_elements)
