"""Double-blind prediction with compact random-feature models (prediction cost independent of N).

    prediction(molecule) = y_offset + w . phi(molecule)

phi is a *public* feature map (random Fourier/Cauchy features of a global representation, or the
qml-lightning-style local model: FCHL19 -> public PCA basis -> structured random features -> cos ->
sum over atoms, plus per-element atom counts). The query owner computes phi itself; only the weights
w (and offset, per-element energies) are secret. One Gilboa inner product finishes the job.

Threat model (semi-honest): the client holds phi; the server holds w, y_offset. Public: the feature
map (random matrices, PCA basis fitted on *public* molecules, biases -- none derived from training
labels), F, the fixed-point format, a power-of-two bound on the features and on the prediction.
The client learns w . phi + y_offset; the server learns nothing.

Protocol:
  1. Client: phi' = (phi - lo) 2^F (non-negative integers, x_bits bits), refused if out of bounds.
  2. Gilboa products (:func:`protocols.gilboa.mul_public_private_sender`): the client's phi' bits
     choose, the server's w_enc = round(w 2^fw) is the correlation: shares of w_enc * phi'.
  3. Server adds lo 2^F sum(w_enc) + y_offset 2^(F+fw) to the sum of its shares and sends it.
  4. Client sums its shares, adds the server's, decodes: the prediction.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from protocols import gilboa
from protocols.krr.params import PublicParams
from secureml.errors import ModelError

U64 = np.uint64


def linear_parts(mm: Any) -> tuple[np.ndarray, float, Any]:
    """Split a fitted compact MolecularModel into (secret weights, secret offset, public model)."""
    from secureml.models.pipeline import MolecularModel

    est = mm.estimator
    if not (hasattr(est, "coef_") and hasattr(est, "features")):
        raise ModelError(f"{type(est).__name__} is not a random-feature model with a public feature map")
    state = dict(est.get_state())
    w = np.asarray(state["coef"], dtype=np.float64).ravel()
    extra = np.asarray(state.get("self_energies", np.zeros(0)), dtype=np.float64).ravel() / COUNT_SCALE
    public_state = dict(state, coef=np.zeros_like(state["coef"]), y_offset=0.0)
    if "self_energies" in state:
        public_state["self_energies"] = np.zeros_like(state["self_energies"])
    public_est = type(est).from_state(public_state)
    public = MolecularModel(mm.representation, public_est, getattr(mm, "property_name", ""))
    return np.concatenate([w, extra]), float(state["y_offset"]), public


# atom counts join phi as extra features; scaled so they share phi's range (and its fixed point)
COUNT_SCALE = 1.0 / 32.0


def client_features(public_model: Any, dataset: Any) -> np.ndarray:
    """phi for the query molecules, from the public model only (what the client can compute)."""
    est = public_model.estimator
    if hasattr(est, "self_energies_"):
        phi = est.features(dataset)
        counts = np.array([[np.sum(np.asarray(z) == e) for e in est.elements_] for z in dataset.charges],
                          dtype=np.float64)
        return np.hstack([phi, counts * COUNT_SCALE])
    return est.features(public_model.features(dataset))


def model_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "public.npz")
        return Path(path).read_bytes()


def model_from_bytes(blob: bytes) -> Any:
    from secureml.models.pipeline import MolecularModel

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "public.npz"
        path.write_bytes(blob)
        return MolecularModel.load(path)


def plan(phi_train: np.ndarray, w: np.ndarray, pred_span: float, tol: float = 1e-3) -> dict[str, Any]:
    """Public fixed-point plan: feature bounds (powers of two), F and the weight precision fw.

    F is the smallest precision whose rounding error on w.phi stays below ``tol``/2 with
    six-sigma confidence (independent roundings: sd = ||w|| 2^-F / sqrt(12)); fw likewise with the
    largest ||phi|| seen. Publishing F therefore reveals log2 ||w|| to within one bit (public).
    """
    mn = float(phi_train.min())
    lo = 0.0 if mn >= 0 else -(2.0 ** math.ceil(math.log2(-mn * 1.0001)))
    span = max(float(phi_train.max()) - lo, 1e-12)
    hi = lo + 2.0 ** math.ceil(math.log2(span * 1.0001))
    # Rounding errors are independent and uniform, so the error of w.phi has standard deviation
    # ||w||_2 2^-F / sqrt(12); six of those stay below tol (and likewise for the weights).
    frac = int(max(8, math.ceil(math.log2(6.0 * float(np.linalg.norm(w)) / math.sqrt(12.0) / (tol / 2)))))
    phi_norm = float(np.linalg.norm(phi_train, axis=1).max()) * 2.0  # margin for unseen molecules
    fw = int(max(8, math.ceil(math.log2(6.0 * phi_norm / math.sqrt(12.0) / (tol / 2)))))
    y_bits = int(math.ceil(math.log2(max(pred_span, 1.0) * 4)))
    if frac + fw + y_bits > 62 or frac > 40:
        raise ModelError(
            f"the 64-bit ring cannot hold this model at {tol} precision ({frac}+{fw}+{y_bits} bits)"
        )
    return {"feature_lo": lo, "feature_hi": hi, "frac_bits": frac, "weight_frac_bits": fw}


def server_online(party, w: np.ndarray, y_offset: float, pp: PublicParams, k: int) -> None:
    """Model owner's side for k queries."""
    w_enc = np.rint(w * float(1 << pp.weight_frac_bits))
    if np.abs(w_enc).max() >= 2.0**62:
        raise ModelError("weights too large for the fixed-point plan")
    w_enc = w_enc.astype(np.int64).view(U64)
    shares = gilboa.mul_public_private_sender(party, np.tile(w_enc, k), pp.x_bits)
    share = shares.reshape(k, -1).sum(axis=1, dtype=U64)
    lo_int = int(round(pp.feature_lo * (1 << pp.frac_bits)))
    corr = (lo_int * int(w_enc.view(np.int64).sum())) % (1 << 64)
    off = int(round(y_offset * 2.0 ** (pp.frac_bits + pp.weight_frac_bits))) % (1 << 64)
    share = share + U64(corr) + U64(off)
    party.ch.send_array(share)


def client_online(party, pp: PublicParams, phi: np.ndarray) -> np.ndarray:
    """Query owner's side: phi (k, F') -> k predictions."""
    phi = np.atleast_2d(phi)
    k = phi.shape[0]
    enc = pp.encode_features(phi, "query features")
    shares = gilboa.mul_public_private_receiver(party, enc.ravel(), pp.x_bits)
    mine = shares.reshape(k, -1).sum(axis=1, dtype=U64)
    theirs = party.ch.recv_array(dtype=np.uint64, shape=(k,))
    y = (mine + theirs).view(np.int64).astype(np.float64)
    return y / 2.0 ** (pp.frac_bits + pp.weight_frac_bits)
