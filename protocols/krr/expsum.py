"""Steps shared by the exact-kernel protocols: from shares of a distance to the prediction.

Input: additive shares mod 2^M (M = ``pp.ring_bits``) of an encoded non-negative distance D_i per
training point and query -- the squared Euclidean distance for the Gaussian kernel
(:mod:`protocols.krr.gaussian`), the L1 distance for the Laplacian kernel
(:mod:`protocols.krr.laplacian`). The kernel value is e^{-t} with t = ``pp.kernel_scale`` * D.
Output: the client learns y = y_offset + sum_i alpha_i e^{-t_i}; the server learns nothing.
Neither party sees D, t, e^{-t} or a partial sum: each is masked or shared (threat model and
proof sketch: the calling modules and docs/double-blind.md).

Protocol (steps numbered as in the kernel modules, which do steps 1-3). Both parties run
:func:`kernel_sum`, which branches on the role where the two sides differ:
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
from protocols.krr.chain import SERVER, TableLayout, chain, digit_plan
from protocols.krr.params import PublicParams
from protocols.mpc import u128
from protocols.mpc.context import PartyContext
from protocols.mpc.gilboa128 import inner_products128
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


def plan_digits(pp: PublicParams) -> tuple[list[tuple[int, int]], tuple[int, int], list[tuple[int, int]]]:
    """(low digits, table-OT digit, top digits) of the masked distance, from public numbers."""
    low = digit_plan(0, pp.lo_bits, pp.digit_bits)
    lut = (pp.lo_bits, pp.lo_bits + pp.lut_bits)
    top = digit_plan(lut[1], pp.d_bits, pp.digit_bits)
    return low, lut, top


def kernel_sum(party: PartyContext, pp: PublicParams, D: np.ndarray,
               model: KernelModelParams | None = None) -> np.ndarray | None:
    """Steps 4-10 for this party's distance shares ``D`` (k, N) of k queries, both roles.

    The server (role 0) passes its ``model`` (weights, offset) and returns None; the client
    (role 1) returns the k predictions.
    """
    server = party.role == SERVER
    k, N = D.shape
    M = pp.ring_bits
    A = pp.weight_bits
    if server:
        alpha_enc, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > A:
            raise ModelError("weights wider than the advertised weight_bits")
    D = D.ravel()
    n = D.shape[0]
    # 4. mask-reveal: the server sends D_S + rho; the client holds u = D + rho, uniform
    if server:
        x = party.rng.random_below(n, M) if M < 64 else party.rng.random_u64(n)  # rho
        party.ch.send_array(_mod(D + x, M))
    else:
        x = _mod(party.ch.recv_array(dtype=np.uint64, shape=(n,)) + D, M)  # u
    # 5. drop s low bits (of rho and u alike)
    x = x >> U64(pp.shift_bits)
    # 6. digit chain: the borrow out of the low part, then (if any) the top bits' non-zero flag
    low, lut, top = plan_digits(pp)
    zeros = np.zeros(n, dtype=np.uint8)
    beta, _ = chain(party, x, low, zeros, None)
    if top:
        b_after, _ = chain(party, x, [lut], beta, None)
        _, z = chain(party, x, top, b_after, zeros.copy())
    else:
        z = None
    # 7. table OT on (table digit, borrow share, flag share): the client receives
    #    G + r, G = [z=0] e^{-step Hv} e^{c rho_lo} e^{-step beta}, r a fresh 128-bit mask
    layout = TableLayout(pp.lut_bits, z is not None)
    digit = (x >> U64(lut[0])) & U64((1 << pp.lut_bits) - 1)
    if server:
        step = pp.c * (1 << pp.lo_bits)
        rho_lo = (x & U64((1 << pp.lo_bits) - 1)).astype(np.float64)
        cand, beta_all, z_all = layout.entries(beta, z)
        hv = (cand - digit.astype(np.int64)[:, None, None, None] - beta_all) % (1 << pp.lut_bits)
        G = np.exp(-step * hv - step * beta_all + pp.c * rho_lo[:, None, None, None])
        if z_all is not None:
            G = G * (z_all == 0)
        G_enc = layout.flatten(np.rint(G * float(1 << pp.g_frac_bits)).astype(U64))  # G < e^4: < 2^(g_frac+6)
        r_hi, r_lo = party.rng.random_u64(n), party.rng.random_u64(n)
        t_hi, t_lo = u128.add((np.zeros_like(G_enc), G_enc), (r_hi[:, None], r_lo[:, None]))
        party.ot_sender.lut_send(np.ascontiguousarray(np.stack([t_lo, t_hi], axis=-1)), bits=64)  # [lo, hi]
    else:
        got = np.asarray(party.ot_receiver.lut_recv(layout.index(digit, beta, z), layout.bits, w=2, bits=64))
        got = got.reshape(n, 2)
        gc = (got[:, 1].copy(), got[:, 0].copy())
        # 8. the client's own factor v = e^{-c u_lo}
        u_lo = (x & U64((1 << pp.lo_bits) - 1)).astype(np.float64)
        v_enc = np.rint(np.exp(-pp.c * u_lo) * float(1 << pp.v_frac_bits)).astype(U64)
        w = u128.mul_small(gc, v_enc)  # (G + r) v
        w2 = (w[0].reshape(k, N), w[1].reshape(k, N))
    # 9. Gilboa products in Z_2^128, one inner product per query:
    #    (a) alpha' = alpha + 2^(A-1) (server's bits) x w = (G + r) v (client's values),
    #    (b) v (client's bits) x alpha r (server's values)
    if server:
        alpha = np.broadcast_to(alpha_enc, (k, N))
        alpha_prime = (alpha + (1 << (A - 1))).astype(U64)
        s1 = inner_products128(party, chooser=SERVER, bits=alpha_prime, n_bits=A)
        ar = u128.mul_small((r_hi.reshape(k, N), r_lo.reshape(k, N)), np.abs(alpha).astype(U64))
        neg_hi, neg_lo = u128.neg(ar)
        sign = alpha < 0
        ar = (np.where(sign, neg_hi, ar[0]), np.where(sign, neg_lo, ar[1]))
        s2 = inner_products128(party, chooser=1 - SERVER, values=ar, n_bits=pp.v_frac_bits + 1)
        # 10. the offset goes into the server's share; shares are uniformly masked by s2's pads
        offset = int(round(model.y_offset * (1 << pp.out_scale_bits)))
        shares = [(a - b + offset) % u128.MOD for a, b in zip(s1, s2)]
        party.ch.send_json({"shares": [str(x) for x in shares]})
        return None
    c1 = inner_products128(party, chooser=SERVER, values=w2, n_bits=A)
    c2 = inner_products128(party, chooser=1 - SERVER, bits=v_enc.reshape(k, N), n_bits=pp.v_frac_bits + 1)
    sum_w = [int(x) for x in u128.to_int(u128.total(w2, axis=1))]
    # 10. reconstruct: y = server share + c1 - c2 - 2^(A-1) sum w
    msg = party.ch.recv_json()
    try:
        server_shares = [int(x) for x in msg["shares"]]
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed output share message") from None
    if len(server_shares) != k:
        raise ProtocolError("wrong number of output shares")
    out = np.empty(k)
    for a in range(k):
        y = (server_shares[a] + c1[a] - c2[a] - (sum_w[a] << (A - 1))) % u128.MOD
        out[a] = u128.to_signed_float(y, pp.out_scale_bits)
    return out


def server_kernel_sum(party: PartyContext, model: KernelModelParams, pp: PublicParams, D_S: np.ndarray) -> None:
    """Model owner's steps 4-10 (:func:`kernel_sum`, role 0)."""
    kernel_sum(party, pp, D_S, model)


def client_kernel_sum(party: PartyContext, pp: PublicParams, D_C: np.ndarray) -> np.ndarray:
    """Query owner's steps 4-10 (:func:`kernel_sum`, role 1): the k predictions."""
    return kernel_sum(party, pp, D_C)
