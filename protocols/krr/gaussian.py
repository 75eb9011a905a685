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
  2. Cross term, as the public ``cross_term`` says:
     "he": lattice HE (:mod:`protocols.mpc.he_matvec`): the client encrypts q (BFV, coefficient
     packing), the server multiplies by its rows, masks, floods and returns one ciphertext per
     n_o rows; shares of X q - delta with 0 <= delta <= 2E (E a public bound of a few hundred
     units, from the last modulus switch);
     "ot": vector OLE from COT (:func:`protocols.mpc.gilboa.matvec`, the server holds the
     correlations X, the client chooses with the bits of q): shares of X q exactly.
  3. Local: shares of D_i = ||x_i||^2 - 2 x_i.q + ||q||^2 (mod 2^M), M from the public bounds.
     With "he", D is over-estimated by 2 delta <= 4E, never under (no wrap below 0): the exponent
     moves by at most 4E * kernel_scale (< 3e-11 at F = 16, sigma 74), below the table's 2^-41.
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
from protocols.mpc import gilboa, he_matvec
from protocols.mpc.context import PartyContext
from protocols.mpc.pages import prefer_small_pages

U64 = np.uint64


class _Encoded:
    """The server's encoded training matrix and its ||x||^2 (query-independent, kept per model)."""

    def __init__(self, model: KernelModelParams, pp: PublicParams) -> None:
        self.key = (pp.frac_bits, pp.feature_lo, pp.feature_hi, pp.ring_bits)
        self.X = pp.encode_features(model.X_train, "training data")
        self.xx = _mod((self.X * self.X).sum(axis=1, dtype=U64), pp.ring_bits)


def prepare_server(model: KernelModelParams, pp: PublicParams):
    """Query-independent set-up, done once per served model: encoding, and for the lattice cross
    term the NTT-form plaintexts of the training rows (~2 s at N = 16,384, d = 351). Turns numpy's
    huge-page hint off for the process (:func:`protocols.mpc.pages.prefer_small_pages`)."""
    prefer_small_pages()
    enc = getattr(model, "_secureml_encoded", None)
    if enc is None or enc.key != (pp.frac_bits, pp.feature_lo, pp.feature_hi, pp.ring_bits):
        enc = _Encoded(model, pp)
        model._secureml_encoded = enc
    prepared = None
    if pp.cross_term == "he":
        prepared = he_matvec.prepare(enc.X, pp.x_bits, pp.ring_bits, owner=model)
    return enc, prepared


def online(party: PartyContext, pp: PublicParams, k: int, *, model: KernelModelParams | None = None,
           Q: np.ndarray | None = None) -> np.ndarray | None:
    """Both roles, k queries: the server (role 0) passes ``model``, the client (role 1) its
    queries ``Q`` (k, d) and gets the k predictions (the server gets None)."""
    prefer_small_pages()  # both parties (protocols.mpc.pages)
    N, M = pp.n_train, pp.ring_bits
    # 1. encode (public shift and scale); this party's squared norms in the ring
    if party.role == SERVER:
        enc, prepared = prepare_server(model, pp)  # cached per model
        X = enc.X
        norms = np.broadcast_to(enc.xx, (k, N))
    else:
        q = pp.encode_features(np.atleast_2d(Q), "query")
        norms = np.broadcast_to(_mod((q * q).sum(axis=1, dtype=U64), M)[:, None], (k, N))
    # 2.-3. cross term per query, then local shares of D = ||x||^2 - 2 x.q + ||q||^2
    D = np.empty((k, N), dtype=U64)
    for a in range(k):
        if pp.cross_term == "he":
            if party.role == SERVER:
                s = he_matvec.matvec_sender(party, prepared)
            else:
                s = he_matvec.matvec_receiver(party, q[a], pp.x_bits, N, M)
        elif party.role == SERVER:
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
