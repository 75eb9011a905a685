"""Query owner's side of the CKKS engine: keys, packed encrypted query, decryption of m_0.

The client generates and keeps the secret key. It sends only evaluation material: the relin
key, ONE Galois key (rotation by the baby-step count g; none when d_pad = g), and the public key
(which the server needs to re-randomise its answer). Keys and query ciphertexts are sent in
SEAL's seeded form (the uniform half of each RLWE sample is replaced by a PRNG seed), which
halves their size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from protocols.baselines.fhe import seal_backend as sb
from protocols.baselines.fhe.params import FHEParams
from secureml.errors import DataError


@dataclass
class ClientKeys:
    secret_key: Any
    sk_q0: np.ndarray  # NTT words of s mod q0 (for decrypting the constant coefficient)
    relin: bytes
    galois: bytes  # empty when no rotation is needed
    public: bytes

    @property
    def key_bytes(self) -> int:
        return len(self.relin) + len(self.galois) + len(self.public)


def keygen(ctx: sb.Context, params: FHEParams) -> ClientKeys:
    """Fresh key pair and the evaluation keys the server needs (seeded serialisations)."""
    kg = seal.KeyGenerator(ctx.seal)
    sk = kg.secret_key()
    pk = seal.PublicKey()
    kg.create_public_key(pk)
    galois = b""
    if params.giant_steps > 1:
        galois = sb.to_bytes(kg.create_galois_keys([sb.galois_elt(params.baby_steps, ctx.poly_degree)]))
    return ClientKeys(
        secret_key=sk,
        sk_q0=sb.secret_key_q0_words(sk, ctx.poly_degree),
        relin=sb.to_bytes(kg.create_relin_keys()),
        galois=galois,
        public=sb.to_bytes(pk),
    )


def check_query(params: FHEParams, q: np.ndarray) -> np.ndarray:
    """The range check: q must be finite, of the right length, and inside the public ball."""
    q = np.asarray(q, dtype=np.float64).ravel()
    if q.shape[0] != params.n_features:
        raise DataError(f"query has {q.shape[0]} features, the model expects {params.n_features}")
    if not np.isfinite(q).all():
        raise DataError("query contains NaN or inf")
    r = float(np.linalg.norm(q - np.asarray(params.center)))
    if r > params.query_radius:
        raise DataError(
            f"query lies outside the model's declared input ball (||q - c|| = {r:.4g} > "
            f"{params.query_radius:.4g}); the exp approximation is only valid inside it -- ask the "
            "model owner for a larger query_radius"
        )
    return q


def packed_query(params: FHEParams, q: np.ndarray) -> np.ndarray:
    """(q', ||q'||^2, 0...) with q' = (q - c) / B, length d_pad, repeated over all slots."""
    qc = (q - np.asarray(params.center)) / params.query_radius
    qt = np.zeros(params.d_pad)
    qt[: params.n_features] = qc
    qt[params.n_features] = float(qc @ qc)
    return np.tile(qt, params.slots // params.d_pad)


def encrypt_query(ctx: sb.Context, params: FHEParams, keys: ClientKeys, q: np.ndarray) -> list[bytes]:
    """The g baby-step rotations of the packed query, encrypted (seeded) at the top level."""
    q = check_query(params, q)
    rep = packed_query(params, q)
    enc = seal.Encryptor(ctx.seal, keys.secret_key)
    out = []
    for j in range(params.baby_steps):
        pt = sb.encode(ctx, np.roll(rep, -j), ctx.top, 2.0**params.input_scale_bits)
        out.append(sb.to_bytes(enc.encrypt_symmetric(pt)))
    return out


def decrypt_result(ctx: sb.Context, keys: ClientKeys, c0_0: int, c1: np.ndarray, scale: float) -> float:
    """prediction = m_0 * N / (2 scale), m_0 = c0_0 + N^-1 sum_j c1_j s_j mod q0 (centred)."""
    N = ctx.poly_degree
    q0 = ctx.primes[0]
    cs = sb.modmul_sum(c1, keys.sk_q0, q0)
    m0 = sb.centered(int(c0_0) + cs * pow(N, -1, q0), q0)
    return m0 * N / (2.0 * scale)
