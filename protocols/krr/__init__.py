"""Double-blind KRR prediction over oblivious transfer.

``serve(model, host, port)`` runs the model owner's server; ``predict("host:port", Q)`` is the
query owner's client. See :mod:`protocols.krr.gaussian` for the protocol and its threat model.
"""
from protocols.krr.params import PROTOCOL_VERSION, PublicParams
from protocols.krr.service import ServedModel, predict, predict_features, serve, serve_one

__all__ = ["PROTOCOL_VERSION", "PublicParams", "ServedModel", "predict", "predict_features", "serve", "serve_one"]
