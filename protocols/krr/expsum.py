"""Steps shared by the exact-kernel protocols: from shares of a distance to the prediction.

Input: additive shares mod 2^M (M = ``pp.ring_bits``) of an encoded non-negative distance D_i per
training point and query -- the squared Euclidean distance for the Gaussian kernel
(:mod:`protocols.krr.gaussian`), the L1 distance for the Laplacian kernel
(:mod:`protocols.krr.laplacian`). The kernel value is e^{-t} with t = ``pp.kernel_scale`` * D.
Output: the client learns y = y_offset + sum_i alpha_i e^{-t_i}; the server learns nothing.
Neither party sees D, t, e^{-t} or a partial sum: each is masked or shared (threat model and
proof sketch: the calling modules and docs/double-blind.md).

Protocol (steps numbered as in the kernel modules, which do steps 1-3):
  4. Mask-reveal: the server sends D_S + rho (rho uniform mod 2^M); the client now holds
     u = D + rho, uniform and independent of D.
  5. Drop s low bits of u and rho (changes t by < 2^-38). D' = u' - rho' mod 2^W.
  6. Split D' = H 2^L + lo where c 2^L <= 4 (t = c D'). Then
        e^{-t} = [top bits of D' all zero] * e^{-c 2^L Hv} * e^{c rho'_lo} * e^{-c 2^L beta} * e^{-c u'_lo}
     with beta the borrow out of the low L bits and Hv the next lut_bits of D'. The borrow (and a
     flag for any non-zero bit above the table) come from a digit chain of small table OTs
     (:mod:`protocols.krr.chain`).
  7. Table OT: the client's index is (its table digit, its borrow share, its flag share); the
     server's table holds G = [flag=0] e^{-c 2^L Hv} e^{c rho'_lo} e^{-c 2^L beta} (2^g_frac
     fixed point) plus a fresh 128-bit mask r. The client receives G + r.
  8. The client computes v = e^{-c u'_lo} itself (its own masked value, in (e^-4, 1]).
  9. Output in Z_2^128: y = sum alpha_i (G_i + r_i - r_i) v_i via two Gilboa inner products
     (:mod:`protocols.mpc.gilboa128`): alpha' bits (server) x w_i = (G_i + r_i) v_i (client) and
     v bits (client) x alpha_i r_i (server).
 10. The server adds y_offset to its share and sends the share; the client reconstructs.
"""
from __future__ import annotations

import math

import numpy as np

from protocols.common import KernelModelParams
from protocols.mpc import u128
from protocols.krr.chain import chain_client, chain_server, digit_plan
from protocols.mpc.gilboa128 import inner_product_receiver, inner_product_sender
from protocols.krr.params import PublicParams
from secureml.errors import ModelError, ProtocolError

U64 = np.uint64


def _mod(x: np.ndarray, bits: int) -> np.ndarray:
    return x if bits >= 64 else x & U64((1 << bits) - 1)


def encode_weights(alpha: np.ndarray, frac_bits: int) -> tuple[np.ndarray, int]:
    """Weights as signed integers (int64) and the two's-complement width they need."""
    enc = np.rint(np.asarray(alpha, dtype=np.float64) * (1 << frac_bits))
    bits = int(math.ceil(math.log2(float(np.max(np.abs(enc))) + 1.0))) + 1 if enc.size else 2
    if bits > 48:
        raise ModelError(f"weights need {bits} bits at {frac_bits} fractional bits; lower the precision")
    return enc.astype(np.int64), max(bits, 2)


def plan_digits(pp: PublicParams):
    low = digit_plan(0, pp.lo_bits, pp.digit_bits)
    lut = (pp.lo_bits, pp.lo_bits + pp.lut_bits)
    top = digit_plan(lut[1], pp.d_bits, pp.digit_bits)
    return low, lut, top


def server_kernel_sum(party, model: KernelModelParams, pp: PublicParams, D_S: np.ndarray) -> None:
    """Model owner's steps 4-10 for the distance shares ``D_S`` (k, N) of k queries."""
    k, N = D_S.shape
    M = pp.ring_bits
    alpha_enc, A = encode_weights(model.dual_coef, pp.weight_frac_bits)
    if A > pp.weight_bits:
        raise ModelError("weights wider than the advertised weight_bits")
    A = pp.weight_bits
    D_S = D_S.ravel()
    n = D_S.shape[0]
    # 4. mask-reveal
    rho = party.rng.random_below(n, M) if M < 64 else party.rng.random_u64(n)
    party.ch.send_array(_mod(D_S + rho, M))
    # 5. drop s low bits
    rho = rho >> U64(pp.shift_bits)
    # 6. digit chain: borrow out of the low part, then (if any) the top bits' non-zero flag
    low, lut, top = plan_digits(pp)
    zeros = np.zeros(n, dtype=np.uint8)
    beta_s, _ = chain_server(party, rho, low, zeros, None)
    if top:
        b_after, _ = chain_server(party, rho, [lut], beta_s, None)
        _, z_s = chain_server(party, rho, top, b_after, zeros.copy())
    else:
        z_s = zeros
    # 7. table OT: G = [z=0] e^{-step Hv} e^{c rho_lo} e^{-step beta}, plus a 128-bit mask r
    step = pp.c * (1 << pp.lo_bits)
    rho_lo = (rho & U64((1 << pp.lo_bits) - 1)).astype(np.float64)
    rho_lut = ((rho >> U64(lut[0])) & U64((1 << pp.lut_bits) - 1)).astype(np.int64)
    m = pp.lut_bits
    cand = np.arange(1 << m, dtype=np.int64)[None, :, None, None]
    bc = np.arange(2, dtype=np.int64)[None, None, :, None]
    zc = np.arange(2 if top else 1, dtype=np.int64)[None, None, None, :]
    beta = bc ^ beta_s.astype(np.int64)[:, None, None, None]
    z = zc ^ z_s.astype(np.int64)[:, None, None, None]
    hv = (cand - rho_lut[:, None, None, None] - beta) % (1 << m)
    G = np.exp(-step * hv - step * beta + pp.c * rho_lo[:, None, None, None]) * (z == 0)
    G_enc = np.rint(G * float(1 << pp.g_frac_bits)).astype(U64)  # G < e^4: < 2^(g_frac+6)
    G_enc = np.transpose(G_enc, (0, 3, 2, 1)).reshape(n, -1)
    r_hi, r_lo = party.rng.random_u64(n), party.rng.random_u64(n)
    t_hi, t_lo = u128.add((np.zeros_like(G_enc), G_enc), (r_hi[:, None], r_lo[:, None]))
    table = np.stack([t_lo, t_hi], axis=-1)  # words little-endian: [lo, hi]
    party.ot_sender.lut_send(np.ascontiguousarray(table), bits=64)
    # 9. Gilboa products in Z_2^128, one inner product per query
    alpha = np.broadcast_to(alpha_enc, (k, N))
    alpha_prime = (alpha + (1 << (A - 1))).astype(U64)
    s1 = inner_product_receiver(party, alpha_prime, A)  # alpha' bits x client's w
    r2 = (r_hi.reshape(k, N), r_lo.reshape(k, N))
    ar = u128.mul_small(r2, np.abs(alpha).astype(U64))
    neg_hi, neg_lo = u128.neg(ar)
    sign = alpha < 0
    ar = (np.where(sign, neg_hi, ar[0]), np.where(sign, neg_lo, ar[1]))
    s2 = inner_product_sender(party, ar, pp.v_frac_bits + 1)  # v bits (client) x alpha r
    # 10. the offset goes into the server's share; shares are uniformly masked by s2's pads
    offset = int(round(model.y_offset * (1 << pp.out_scale_bits)))
    shares = [(a - b + offset) % u128.MOD for a, b in zip(s1, s2)]
    party.ch.send_json({"shares": [str(x) for x in shares]})


def client_kernel_sum(party, pp: PublicParams, D_C: np.ndarray) -> np.ndarray:
    """Query owner's steps 4-10 for its distance shares ``D_C`` (k, N); returns the k predictions."""
    k, N = D_C.shape
    M = pp.ring_bits
    D_C = D_C.ravel()
    n = D_C.shape[0]
    # 4. receive the masked share: u = D + rho is uniform
    masked = party.ch.recv_array(dtype=np.uint64, shape=(n,))
    u = _mod(masked + D_C, M)
    # 5. drop s low bits
    u = u >> U64(pp.shift_bits)
    # 6. digit chain
    low, lut, top = plan_digits(pp)
    zeros = np.zeros(n, dtype=np.uint8)
    beta_c, _ = chain_client(party, u, low, zeros, None)
    if top:
        b_after, _ = chain_client(party, u, [lut], beta_c, None)
        _, z_c = chain_client(party, u, top, b_after, zeros.copy())
        idx = ((u >> U64(lut[0])) & U64((1 << pp.lut_bits) - 1)) | (beta_c.astype(U64) << U64(pp.lut_bits)) \
            | (z_c.astype(U64) << U64(pp.lut_bits + 1))
        idx_bits = pp.lut_bits + 2
    else:
        idx = ((u >> U64(lut[0])) & U64((1 << pp.lut_bits) - 1)) | (beta_c.astype(U64) << U64(pp.lut_bits))
        idx_bits = pp.lut_bits + 1
    # 7. table OT: receive G + r (128-bit, two words)
    got = np.asarray(party.ot_receiver.lut_recv(idx, idx_bits, w=2, bits=64)).reshape(n, 2)
    gc = (got[:, 1].copy(), got[:, 0].copy())
    # 8. the client's own factor v = e^{-c u_lo}
    u_lo = (u & U64((1 << pp.lo_bits) - 1)).astype(np.float64)
    v_enc = np.rint(np.exp(-pp.c * u_lo) * float(1 << pp.v_frac_bits)).astype(U64)
    # 9. inner products: w = (G + r) v, then -2^(A-1) sum w locally
    w = u128.mul_small(gc, v_enc)
    w2 = (w[0].reshape(k, N), w[1].reshape(k, N))
    c1 = inner_product_sender(party, w2, pp.weight_bits)
    c2 = inner_product_receiver(party, v_enc.reshape(k, N), pp.v_frac_bits + 1)
    sum_w = [int(x) for x in u128.to_int(u128.total(w2, axis=1))]
    # 10. reconstruct
    msg = party.ch.recv_json()
    try:
        server_shares = [int(x) for x in msg["shares"]]
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed output share message") from None
    if len(server_shares) != k:
        raise ProtocolError("wrong number of output shares")
    out = np.empty(k)
    for a in range(k):
        y = (server_shares[a] + c1[a] - c2[a] - (sum_w[a] << (pp.weight_bits - 1))) % u128.MOD
        out[a] = u128.to_signed_float(y, pp.out_scale_bits)
    return out
