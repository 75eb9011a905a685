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
  4. Mask-reveal: the server sends D_S + rho (rho uniform mod 2^M; ceil(M/8) bytes each since
     protocol 28, 8 before); the client now holds u = D + rho, uniform and independent of D.
  5. Drop s low bits of u and rho (changes t by < 2^-38); D' = u' - rho' (mod 2^W) is in
     [0, 2^(W-1)] (D < 2^(M-1) by the ring's margin bit, and flooring cannot make it negative).
  6. Split u' and rho' at bit L (step = c 2^L <= 8, ``pp.lo_bits``) and set H = (u'_hi - rho'_hi)
     mod 2^(W-L). Then, exactly and without any borrow out of the low part,
        D' = 2^L H + (u'_lo - rho'_lo),   so
        e^{-t} = [e^{-step H} e^{c rho'_lo - step/2}] * [e^{step/2 - c u'_lo}]
     (server's factor | client's factor, each centred to lie in (e^-4, e^4]: a span of 8 in t,
     where an uncentred (e^-4, 1] split allowed 4, halves the table of step 7)
     (0 <= D' <= 2^(W-1) forces H < 2^(W-L) to be the true integer, H >= 0; lo_bits <= W - 1).
     Only two facts about H need shares: its low lut_bits digit, (u'_lut - rho'_lut) mod
     2^lut_bits, which the table below resolves by itself, and the flag z = [H >= 2^lut_bits]
     (kernel below the cut): one borrow out of the table digit, then an "is non-zero" chain over
     the bits above it (:mod:`protocols.krr.chain`).
  7. Table OT: the client's index is (its table digit, its flag share); the server's entry is
     h = alpha_i G + r_i mod 2^128 with G = [z=0] e^{-step Hv} e^{c rho'_lo - step/2} (2^g_frac
     fixed point, Hv the digit the index implies) and r_i a fresh 128-bit mask: the weight is
     folded into the table, the client receives a uniformly masked alpha_i G_i.
  8. The client computes v = e^{step/2 - c u'_lo} itself (its own masked value, in (e^-4, e^4],
     ``pp.v_bits`` bits at 2^v_frac) and sum_i h_i v_i locally. Rounding of G and v costs a
     kernel term at most e^4 2^-40 = 2^-34.2.
  9. Output in Z_2^128: y = sum h_i v_i - sum r_i v_i; one inner product per query gives shares
     of sum r_i v_i, by the route the public ``inner_product`` names (``pp.lattice_sum``):
     lattice HE (:mod:`protocols.mpc.rlwe_ip128`: the client encrypts v under RLWE with q ~ 2^320
     and plaintext space Z_2^128, the server multiplies by its r, masks, floods, re-randomises and
     returns one truncated ciphertext -- ~1.4 MB at N = 16,384 whatever the N up to 16,384) or
     Gilboa products over random OT (:mod:`protocols.mpc.gilboa128`, v bits (client) x r
     (server): ~0.7 kB per training point); "auto" takes the one with fewer bytes for the public N.
     Both are semi-honest; both give exact shares mod 2^128.
 10. The server adds y_offset to its share and sends the share; the client reconstructs.
"""
from __future__ import annotations

import math

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import defense
from protocols.krr.chain import SERVER, chain, digit_plan
from protocols.krr.params import PublicParams
from protocols.mpc import rlwe_ip128, u128
from protocols.mpc.context import PartyContext
from protocols.mpc.gilboa128 import inner_products128
from secureml.errors import ModelError, ProtocolError

U64 = np.uint64


def _mod(x: np.ndarray, bits: int) -> np.ndarray:
    return x if bits >= 64 else x & U64((1 << bits) - 1)


def _low_bytes(x: np.ndarray, bits: int) -> np.ndarray:
    """The low ceil(bits/8) bytes of every uint64 (little endian): (n,) -> (n, nb) uint8."""
    return np.ascontiguousarray(x.view(np.uint8).reshape(-1, 8)[:, : (bits + 7) // 8])


def _from_low_bytes(b: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_low_bytes`: (n, nb) uint8 -> (n,) uint64."""
    out = np.zeros((b.shape[0], 8), dtype=np.uint8)
    out[:, : b.shape[1]] = b
    return out.view(U64).reshape(-1)


def encode_weights(alpha: np.ndarray, frac_bits: int) -> tuple[np.ndarray, int]:
    """Weights as signed integers (int64) and the two's-complement width they need."""
    enc = np.rint(np.asarray(alpha, dtype=np.float64) * (1 << frac_bits))
    bits = int(math.ceil(math.log2(float(np.max(np.abs(enc))) + 1.0))) + 1 if enc.size else 2
    if bits > 48:
        raise ModelError(f"weights need {bits} bits at {frac_bits} fractional bits; lower the precision")
    return enc.astype(np.int64), max(bits, 2)


def plan_digits(pp: PublicParams) -> tuple[list[tuple[int, int]], tuple[int, int], list[tuple[int, int]]]:
    """(low digits, table-OT digit, top digits) of the masked distance, from public numbers
    (the low digits need no chain since protocol 3; kept for callers)."""
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
    if server:
        alpha_enc, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > pp.weight_bits:
            raise ModelError("weights wider than the advertised weight_bits")
    D = D.ravel()
    n = D.shape[0]
    # 4. mask-reveal: the server sends D_S + rho; the client holds u = D + rho, uniform
    lattice = None
    if server:
        x = party.rng.random_below(n, M) if M < 64 else party.rng.random_u64(n)  # rho
        party.ch.send_array(_low_bytes(_mod(D + x, M), M))  # ceil(M/8) bytes each (4 for M = 25)
    else:
        if pp.lattice_sum:  # 9a. the client's RLWE key and seeds, made while it waits for step 4
            lattice = rlwe_ip128.LatticeSumClient(party, N, k, send=False)
        x = _mod(_from_low_bytes(party.ch.recv_array(dtype=np.uint8, shape=(n, (M + 7) // 8))) + D, M)  # u
    # 9a. lattice route: the key and seeds go out now (they need no values), just ahead of the client's
    # first chain message; the server starts its half of step 9 from them while the client works
    if pp.lattice_sum:
        if server:
            lattice = rlwe_ip128.LatticeSumServer(party, N, k)
        else:
            lattice.send_key()
    # 5. drop s low bits (of rho and u alike)
    x = x >> U64(pp.shift_bits)
    # 6. the flag z = [H >= 2^lut]: borrow out of the table digit, then the bits above it
    _, lut, top = plan_digits(pp)
    zeros = np.zeros(n, dtype=np.uint8)
    z = None
    if top:
        b_lut, _ = chain(party, x, [lut], zeros, None)
        _, z = chain(party, x, top, b_lut, zeros.copy())
    # 7. table OT on (table digit, flag share): the client receives h = alpha G + r,
    #    G = [z=0] e^{-step Hv} e^{c rho_lo}, r a fresh 128-bit mask
    m = pp.lut_bits
    idx_bits = m + int(z is not None)
    digit = (x >> U64(lut[0])) & U64((1 << m) - 1)
    step = pp.step
    if server:
        rho_lo = (x & U64((1 << pp.lo_bits) - 1)).astype(np.float64)
        cand = np.arange(1 << m, dtype=np.int64)[None, :, None]
        zc = np.arange(2 if z is not None else 1, dtype=np.int64)[None, None, :]
        hv = (cand - digit.astype(np.int64)[:, None, None]) % (1 << m)
        G = np.exp(-step * hv + (pp.c * rho_lo[:, None, None] - step / 2))
        if z is not None:
            G = G * ((zc ^ z.astype(np.int64)[:, None, None]) == 0)
        G_enc = np.rint(G * float(1 << pp.g_frac_bits)).astype(U64)  # G < e^(step/2) <= e^4: < 2^(g_frac+6)
        G_enc = np.transpose(G_enc, (0, 2, 1)).reshape(n, -1)  # index = digit | z_c << m
        alpha = np.broadcast_to(alpha_enc, (k, N)).ravel()
        aG = u128.mul_small((np.zeros_like(G_enc), G_enc), np.abs(alpha).astype(U64)[:, None])
        neg_hi, neg_lo = u128.neg(aG)
        sign = (alpha < 0)[:, None]
        aG = (np.where(sign, neg_hi, aG[0]), np.where(sign, neg_lo, aG[1]))
        r_hi, r_lo = party.rng.random_u64(n), party.rng.random_u64(n)
        t_hi, t_lo = u128.add(aG, (r_hi[:, None], r_lo[:, None]))
        table = np.stack([t_lo, t_hi], axis=-1)  # words little-endian: [lo, hi]
        if table.shape[1] == 1:  # no table digit and no flag (tiny ranges): 1-out-of-2 of equal entries
            table = np.repeat(table, 2, axis=1)
        party.ot_sender.lut_send(np.ascontiguousarray(table), bits=64)
        # 9. one inner product in Z_2^128 per query, v (client) x r (server): lattice or Gilboa
        r = (r_hi.reshape(k, N), r_lo.reshape(k, N))
        if lattice is not None:  # c1' while the client decodes its table and encrypts v
            lattice.prepare(r)
            s2 = lattice.finish()
        else:
            s2 = inner_products128(party, chooser=1 - SERVER, values=r, n_bits=pp.v_bits)
        # 10. the offset goes into the server's share; shares are uniformly masked by s2's pads
        offset = int(round(model.y_offset * (1 << pp.out_scale_bits)))
        shares = [(offset - b) % u128.MOD for b in s2]
        # output defense (noise, rounding: protocols.krr.defense) before the client can reconstruct
        shares = defense.server_output(party, pp.output_defense, shares, 128, pp.out_scale_bits)
        if shares is not None:
            # fixed width (39 digits hold 2^128): the message's length must not vary with the share
            party.ch.send_json({"shares": [f"{v:039d}" for v in shares]})
        return None
    idx = digit if z is None else digit | (z.astype(U64) << U64(m))
    got = np.asarray(party.ot_receiver.lut_recv(idx, max(idx_bits, 1), w=2, bits=64)).reshape(n, 2)
    h = (got[:, 1].copy(), got[:, 0].copy())
    # 8. the client's own factor v = e^{step/2 - c u_lo}, and sum h v locally
    u_lo = (x & U64((1 << pp.lo_bits) - 1)).astype(np.float64)
    v_enc = np.rint(np.exp(step / 2 - pp.c * u_lo) * float(1 << pp.v_frac_bits)).astype(U64)
    v_enc = np.minimum(v_enc, U64((1 << pp.v_bits) - 1))  # (only a float tie at e^(step/2) could reach it)
    if lattice is not None:  # 9. the ciphertexts of v first: the server works while we sum h v
        lattice.send_values(v_enc.reshape(k, N), pp.v_bits)
    hv = u128.mul_small(h, v_enc)
    sum_hv = [int(v) for v in u128.to_int(u128.total((hv[0].reshape(k, N), hv[1].reshape(k, N)), axis=1))]
    # 9. shares of sum r v
    if lattice is not None:
        c2 = lattice.finish()
    else:
        c2 = inner_products128(party, chooser=1 - SERVER, bits=v_enc.reshape(k, N), n_bits=pp.v_bits)
    if pp.output_defense:  # rounded answers (protocols.krr.defense): the client never holds y itself
        mine = [(sum_hv[a] - c2[a]) % u128.MOD for a in range(k)]
        out = defense.client_output(party, pp.output_defense, mine, 128, pp.out_scale_bits)
        if out is not None:
            return out
    # 10. reconstruct: y = sum h v - sum r v + the server's share
    msg = party.ch.recv_json()
    try:
        server_shares = [int(v) for v in msg["shares"]]
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed output share message") from None
    if len(server_shares) != k:
        raise ProtocolError("wrong number of output shares")
    out = np.empty(k)
    for a in range(k):
        y = (sum_hv[a] - c2[a] + server_shares[a]) % u128.MOD
        out[a] = u128.to_signed_float(y, pp.out_scale_bits)
    return out


def server_kernel_sum(party: PartyContext, model: KernelModelParams, pp: PublicParams, D_S: np.ndarray) -> None:
    """Model owner's steps 4-10 (:func:`kernel_sum`, role 0)."""
    kernel_sum(party, pp, D_S, model)


def client_kernel_sum(party: PartyContext, pp: PublicParams, D_C: np.ndarray) -> np.ndarray:
    """Query owner's steps 4-10 (:func:`kernel_sum`, role 1): the k predictions."""
    return kernel_sum(party, pp, D_C)
