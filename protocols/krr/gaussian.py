"""Double-blind exact Gaussian-kernel KRR prediction over oblivious transfer.

    prediction(q) = y_offset + sum_i alpha_i * exp(-||x_i - q||^2 / (2 sigma^2))

Threat model (semi-honest, static): the *server* (model owner) holds x_1..x_N, alpha, y_offset;
the *client* (query owner) holds q. Public: N, d, sigma, the fixed-point format and feature bound,
a bound on the weights' bit width (:class:`PublicParams`). The client learns the prediction and
nothing else; the server learns nothing. No intermediate value -- distance, kernel value, partial
sum -- is ever revealed to either party: each is either uniformly masked or held as shares.
Correlated randomness comes only from OT between the two parties (IKNP extension of base OTs);
there is no dealer.

Protocol (:func:`online`, which both parties run, carries the step numbers):
  1. Encode: x, q shifted by the public lower bound and scaled by 2^F (non-negative integers).
  2. Cross term: vector OLE from COT (:func:`protocols.mpc.gilboa.matvec`, the server holds the
     correlations X, the client chooses with the bits of q): shares of X q.
  3. Local: shares of D_i = ||x_i||^2 - 2 x_i.q + ||q||^2 (mod 2^M), M from the public bounds.
  4.-10. From shares of D to the prediction, shared with the Laplacian protocol
     (:mod:`protocols.krr.expsum`): mask-reveal, borrow/flag digit chains, one table OT for the
     exponential, a client-side factor, 128-bit Gilboa inner products, output reconstruction.
"""
from __future__ import annotations

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import expsum
from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.expsum import _mod
from protocols.krr.params import PublicParams
from protocols.mpc import gilboa
from protocols.mpc.context import PartyContext

U64 = np.uint64


def online(party: PartyContext, pp: PublicParams, k: int, *, model: KernelModelParams | None = None,
           Q: np.ndarray | None = None) -> np.ndarray | None:
    """Both roles, k queries: the server (role 0) passes ``model``, the client (role 1) its
    queries ``Q`` (k, d) and gets the k predictions (the server gets None)."""
    N, M = pp.n_train, pp.ring_bits
    # 1. encode (public shift and scale); this party's squared norms in the ring
    if party.role == SERVER:
        X = pp.encode_features(model.X_train, "training data")
        norms = np.broadcast_to(_mod((X * X).sum(axis=1, dtype=U64), M), (k, N))
    else:
        q = pp.encode_features(np.atleast_2d(Q), "query")
        norms = np.broadcast_to(_mod((q * q).sum(axis=1, dtype=U64), M)[:, None], (k, N))
    # 2.-3. cross term per query (vector OLE), then local shares of D = ||x||^2 - 2 x.q + ||q||^2
    D = np.empty((k, N), dtype=U64)
    for a in range(k):
        if party.role == SERVER:
            s = gilboa.matvec(party, CLIENT, X=X, y_bits=pp.x_bits, ring_bits=M)
        else:
            s = gilboa.matvec(party, CLIENT, y=q[a], y_bits=pp.x_bits, n=N, ring_bits=M)
        D[a] = _mod(norms[a] - U64(2) * s, M)
    # 4.-10. exponential, weighted sum, output
    return expsum.kernel_sum(party, pp, D, model)


def server_online(party: PartyContext, model: KernelModelParams, pp: PublicParams, k: int) -> None:
    """Model owner's side for k queries (:func:`online`, role 0)."""
    online(party, pp, k, model=model)


def client_online(party: PartyContext, pp: PublicParams, Q: np.ndarray) -> np.ndarray:
    """Query owner's side for the queries Q (k, d) (:func:`online`, role 1): the k predictions."""
    return online(party, pp, np.atleast_2d(Q).shape[0], Q=Q)
