"""Double-blind KRR prediction over oblivious transfer.

``serve(model, host, port)`` runs the model owner's server; ``predict("host:port", Q)`` is the
query owner's client. See :mod:`protocols.krr.gaussian` for the protocol and its threat model,
:mod:`protocols.krr.registry` for the served model kinds, and docs/architecture.md for the layout.
"""
from protocols.krr.client import close_kept_connections, predict, predict_features
from protocols.krr.featurize import Featurizer, molecules_featurizer
from protocols.krr.params import PROTOCOL_VERSION, PublicParams
from protocols.krr.served import CompactServedModel, Served, ServedModel
from protocols.krr.server import serve, serve_one

__all__ = ["PROTOCOL_VERSION", "CompactServedModel", "Featurizer", "PublicParams", "Served", "ServedModel",
           "close_kept_connections", "molecules_featurizer", "predict", "predict_features", "serve", "serve_one"]
