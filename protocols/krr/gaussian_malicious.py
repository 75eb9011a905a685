"""Client-malicious exact Gaussian-kernel KRR prediction (``security = "client-malicious"``).

    prediction(q') = y_offset + sum_i alpha_i exp(-||x_i - q'||^2 / (2 sigma^2))

Threat model: the server (model owner) is semi-honest; the client may deviate arbitrarily (any
bytes, any order). Guarantee: per query the client learns at most F(q') for one q' of the public
input domain -- the server's fixed-point function below, bit-exact -- or an abort; the server
learns nothing about q'. Every OT the client chooses in is from the checked OT extension
(:mod:`protocols.ot.consistency`), so each choice bit is well defined; every later client value
is authenticated (:mod:`protocols.mpc.authenticated`) and checked before the server releases its
output share; every table the client indexes is indexed by digits of its *committed* u
(:func:`~protocols.mpc.authenticated.bound_lut`), never by a fresh or client-computed index. The
client is never an OT sender.

The function F (fixed point, M = ring_bits, s = shift_bits, L = lo_bits, V = v_frac_bits,
u = D + rho mod 2^M, x = u >> s split into x_lo (L bits) and x_hi, rho likewise):
    G_i   = round(2^g [H_i < 2^lut] exp(-c 2^L H_i + c rho_lo,i)),  H_i = (x_hi - rho_hi) mod 2^(W-L)
    v_i   = v_K, v_0 = 2^V, v_(k+1) = floor(v_k * round(2^V exp(-c 2^(a_k) d_k)) / 2^V)
            over the digits d_k (bits [a_k, b_k)) of x_lo -- a public function of x_lo
    y     = round(2^w y_offset) + sum_i alpha_enc,i G_i v_i   (mod 2^128, scale 2^(w + g + V))
It differs from the semi-honest protocol's value only in how v is rounded (there: one rounding of
exp(-c x_lo); here: a floor per digit, error < K 2^-V relative), and like it depends on the
server's fresh rho only through roundings at 2^-40.

Protocol (both parties run :func:`online`; steps numbered in the code):
  1.-9. :mod:`protocols.krr.binding`: cross term over OT, mask-reveal, u committed bit by bit,
        bound to the committed query and its norm by the batched check; the server aborts on a
        failure before step 10. The random-OT keys of u's bits are kept.
  10. G table: one table OT indexed by x_hi (W - L <= 12 bits, the committed bits [s + L, M) of
      u); entry e = alpha_i G_i(e) + r_i (mod 2^128), r_i fresh. The client receives h_i.
  11. The client's factor v, proved: for each digit k of x_lo, a key-switch table indexed by the
      committed digit, entry d = K_{v_k} G_k(d) - K_{z_k}, turns the client's MAC on v_k into a
      MAC on z_k = v_k G_k(d_k) (the digit it must use: its committed one); the client commits
      v_(k+1) (V + 1 bits) and t_k (V bits); relation z_k = 2^V v_(k+1) + t_k (exact: bit widths
      bound t_k < 2^V, so v_(k+1) = floor(z_k / 2^V)). The last commitment of v carries the extra
      correlation r_i: the client obtains T_i + v_i r_i (a Gilboa product bound to the proved v).
  12. Check: all chain relations, batched (binary coefficients, 40 repetitions, ring 2^128 with
      k = 2V + 4: soundness 2^-40 + 2^-44 per forgery). Abort on failure.
  13. Output: the server sends y_S = round(2^w offset) + sum T_i; the client computes
      y = sum_i h_i v_i - sum_i (T_i + v_i r_i) + y_S = F(q').
  14. Output noise (``--noise``, D1 of :mod:`protocols.krr.defense`), before step 13's send: the
      server adds e = round(n 2^(w+g+V)), n ~ N(0, sd^2) fresh from its own generator, to y_S; the
      honest client's y is F(q') + e.

Why noise keeps the guarantee against a deviating client (at most F(q') + e for one q', e fresh
and independent of everything the client sent): e is drawn and added by the server after the
check of step 12, the last point at which a client message influences what the server does; the
client's messages up to then either pass the checks -- so they are those of an honest run on one
q' (up to the local freedoms (a)-(c) below) -- or the server aborts and e is never used. e enters
only y_S, a single additive term of the client's output, so each freedom below applies to
F(q') + e exactly as to F(q'): (a) gives F(q') + e + a known shift; (b) gives F(q') + e below bit
t and uniform above. The client never holds a value from which e could be removed: the server's
other messages are masked by fresh r_i, rho_i that e does not touch. Fresh noise averages out over
repeated queries: a budget (``serve --budget``) bounds that, as in the semi-honest protocols.
Rounding (``--round-to``) is not part of this protocol: it needs the client's inputs to the
rounding bound too (docs/malicious.md, "Output defenses"), so validate() refuses it.

Why each remaining client freedom is harmless: (a) its received h_i or its own sums edited by a
known amount shift y by that amount; (b) using v''_i != v_i in sum h_i v''_i leaves
sum r_i (v''_i - v_i) in y: uniform above bit t = min_i v2(v''_i - v_i), and below t equal to F(q')
(v'' = v mod 2^t): the view is simulated from F(q'); (c) a deviation that is not a local
computation (an index, a committed value, a MAC) is either impossible (bound tables) or caught.
"""
from __future__ import annotations

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import binding, defense
from protocols.krr.chain import CLIENT, SERVER, digit_plan
from protocols.krr.defense_spec import OutputDefense
from protocols.krr.expsum import encode_weights
from protocols.krr.params import MALICIOUS_MAX_HI_BITS, PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import he_matvec_checked
from protocols.mpc import u128
from protocols.mpc.context import PartyContext
from secureml.errors import ModelError, ProtocolError

U64 = np.uint64
#: widest x_hi that the single G table OT serves (2^12 entries per training point)
MAX_HI_BITS = MALICIOUS_MAX_HI_BITS
#: digit width of the client's factor chain (16-entry key-switch tables)
V_DIGIT_BITS = 4


def plan(pp: PublicParams) -> tuple[int, list[tuple[int, int]]]:
    """(bits of x_hi, digits of x_lo) from public numbers; ProtocolError if x_hi is too wide."""
    hb = pp.d_bits - pp.lo_bits
    if pp.lo_bits < 1:
        raise ProtocolError("the client-malicious kernel protocol needs a low part of the distance (sigma too small "
                            "for the feature bounds): serve it with --security semi-honest")
    if not 1 <= hb <= MAX_HI_BITS:
        raise ProtocolError(f"the client-malicious kernel protocol needs the distance's high part to have 1..{MAX_HI_BITS} "
                            f"bits, this model's has {hb}: serve it with --security semi-honest")
    return hb, digit_plan(0, pp.lo_bits, V_DIGIT_BITS)


def digit_factors(pp: PublicParams, a: int, b: int) -> np.ndarray:
    """G_k(d) = round(2^V exp(-c 2^a d)) for d in [0, 2^(b-a)): the public factor table of a digit."""
    d = np.arange(1 << (b - a), dtype=np.float64)
    return np.rint(np.exp(-pp.c * float(1 << a) * d) * float(1 << pp.v_frac_bits)).astype(U64)


def client_factor(pp: PublicParams, x_lo: np.ndarray) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """The public function v(x_lo): the chain values v_1..v_K and the products z_k (hi, lo)."""
    V = pp.v_frac_bits
    _, digits = plan(pp)
    v = np.full(x_lo.shape, 1 << V, dtype=U64)
    vs, zs = [], []
    for a, b in digits:
        g = digit_factors(pp, a, b)[((x_lo >> U64(a)) & U64((1 << (b - a)) - 1)).astype(np.intp)]
        z = u128.mul64(v, g)
        zs.append(z)
        v = (z[0] << U64(64 - V)) | (z[1] >> U64(V))
        vs.append(v)
    return vs, zs


# ---- client-local steps (module functions: tests replace one of them) ---------------------------
def client_chain_values(pp: PublicParams, x_lo: np.ndarray) -> tuple[list[np.ndarray], list]:
    """Step 11, client: the chain it commits to (honest: :func:`client_factor`)."""
    return client_factor(pp, x_lo)


def client_output(h: au.U128, v: np.ndarray, e: au.U128, y_s: int) -> int:
    """Step 13, client: sum h_i v_i - sum e_i + y_S (mod 2^128)."""
    hv = u128.total(u128.mul_small(h, v), axis=None)
    return (hv - u128.total(e, axis=None) + y_s) % u128.MOD


def online(party: PartyContext, pp: PublicParams, *, model: KernelModelParams | None = None,
           X: np.ndarray | None = None, xx: np.ndarray | None = None, q: np.ndarray | None = None,
           lam: int = au.STAT_BITS) -> dict | int:
    """One query, both roles. Server: ``model`` with its encoded ``X``, ``xx``; returns a record
    of its randomness (rho) for tests. Client: its encoded ``q``; returns y (mod 2^128, scale
    2^out_scale_bits)."""
    _refuse_rounding(pp)
    plan(pp)
    # 1.-9. bind u = D(q') + rho to the committed query
    if party.role == SERVER:
        alpha, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > pp.weight_bits:
            raise ModelError("weights wider than the advertised weight_bits")
        prepared = (he_matvec_checked.prepare(X, pp.x_bits, pp.ring_bits, owner=model)
                    if pp.cross_term == "he" else None)
        b = binding.bound_masked_distances(party, pp, X=X, xx=xx, lam=lam, keep_pads=True, prepared=prepared)
        return kernel_output(party, pp, rho=b.rho, delta=b.delta, u_pads=b.u_pads, model=model, lam=lam)
    b = binding.bound_masked_distances(party, pp, q=q, lam=lam, keep_pads=True)
    return kernel_output(party, pp, u=b.u, u_pads=b.u_pads, lam=lam)


def _refuse_rounding(pp: PublicParams) -> None:
    if OutputDefense.from_dict(pp.output_defense).round_bits is not None:
        # validate() refuses it too: rounding has no bound protocol here
        raise ProtocolError("rounding (--round-to) is not part of the client-malicious protocols")


def kernel_output(party: PartyContext, pp: PublicParams, *, u_pads, rho: np.ndarray | None = None,
                  delta: np.uint64 | None = None, model: KernelModelParams | None = None,
                  u: np.ndarray | None = None, lam: int = au.STAT_BITS) -> dict | int:
    """Steps 10-14 for one query, both roles, on a committed and already *checked*
    u = D(q') + rho (mod 2^M): shared by every kernel exp(-c D') whose distance protocol ends in
    such a u (this module's squared L2, :mod:`protocols.krr.laplacian_malicious`'s L1; pp.c is the
    kernel's constant). Server: ``rho`` (mod 2^M), ``delta`` (the MAC key u was committed under),
    ``model``; client: ``u`` (mod 2^M). Both: ``u_pads``, the random-OT keys of u's committed bits
    (at least bits [shift_bits, M)). Returns the server's record / the client's y."""
    defended = OutputDefense.from_dict(pp.output_defense)
    _refuse_rounding(pp)
    server = party.role == SERVER
    N, M, s, L, V = pp.n_train, pp.ring_bits, pp.shift_bits, pp.lo_bits, pp.v_frac_bits
    hb, digits = plan(pp)
    xm = (rho if server else u) >> U64(s)
    x_lo = xm & U64((1 << L) - 1)
    # 10. G table indexed by the committed x_hi: h_i = alpha_i G_i + r_i
    hi_digit = (s + L, M)
    if server:
        alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
        rho_hi = (xm >> U64(L)).astype(np.int64)
        e = np.arange(1 << hb, dtype=np.int64)[None, :]
        H = (e - rho_hi[:, None]) % (1 << hb)
        G = np.exp(-pp.c * float(1 << L) * H + pp.c * x_lo.astype(np.float64)[:, None])
        G = np.where(H < (1 << pp.lut_bits), G, 0.0)
        G_enc = np.rint(G * float(1 << pp.g_frac_bits)).astype(U64)
        aG = u128.mul_small((np.zeros_like(G_enc), G_enc), np.abs(alpha).astype(U64)[:, None])
        neg = u128.neg(aG)
        sign = (alpha < 0)[:, None]
        aG = (np.where(sign, neg[0], aG[0]), np.where(sign, neg[1], aG[1]))
        r = (party.rng.random_u64(N), party.rng.random_u64(N))
        t = u128.add(aG, (r[0][:, None], r[1][:, None]))
        au.bound_lut(party, CLIENT, hi_digit, pads=u_pads, tables=np.stack([t[0], t[1]], axis=-1))
    else:
        got = au.bound_lut(party, CLIENT, hi_digit, pads=u_pads, values=u, w=2)
        h = (got[:, 0].copy(), got[:, 1].copy())
    # 11. the client's factor, proved digit by digit
    if server:
        kv = u128.neg(u128.mul_small(u128.from_int(1 << V, (N,)), delta))  # key of the public v_0 = 2^V
        rel_keys = []
        for k, (a, bb) in enumerate(digits):
            g = digit_factors(pp, a, bb)
            kz = (party.rng.random_u64(N), party.rng.random_u64(N))
            ent = u128.sub(u128.mul_small((kv[0][:, None], kv[1][:, None]), g[None, :]), (kz[0][:, None], kz[1][:, None]))
            au.bound_lut(party, CLIENT, (s + a, s + bb), pads=u_pads, tables=np.stack([ent[0], ent[1]], axis=-1))
            last = k == len(digits) - 1
            cv = au.commit(party, CLIENT, n=N, bits=V + 1, delta=delta,
                           extra=(r[0][:, None], r[1][:, None]) if last else None)
            ct = au.commit(party, CLIENT, n=N, bits=V, delta=delta)
            # key of z_k - 2^V v_(k+1) - t_k (value 0 for an honest client)
            rel_keys.append(u128.sub(u128.sub(kz, u128.shl(cv.key, V)), ct.key))
            kv = cv.key
        T = cv.extra
        chi = party.rng.random_bits((lam, len(digits) * N)).astype(np.uint8)
        party.ch.send_array(chi)
        rk = (np.concatenate([x[0] for x in rel_keys]), np.concatenate([x[1] for x in rel_keys]))
        zero = u128.from_int(0, (lam,))
        # 12. check every chain relation before anything that depends on v leaves the server
        au.check_congruent(party, CLIENT, 2 * V + 4, delta=delta, KZ=au.combine(chi, rk), C=zero, n=lam)
        # 13. the server's output share
        offset = int(round(model.y_offset * (1 << pp.out_scale_bits)))
        y_s = (offset + u128.total((T[0][:, 0], T[1][:, 0]), axis=None)) % u128.MOD
        # 14. (D1) fresh noise on the server's own share, after the check of step 12: nothing the
        # client sent can depend on it, and the client sees only y_S + e
        noised = defense.add_noise(party, defended, [y_s], 128, pp.out_scale_bits)[0]
        party.ch.send_json({"share": str(noised)})
        return {"rho": rho, "r": r, "noise": (noised - y_s) % u128.MOD}
    vs, zs = client_chain_values(pp, x_lo)
    mv = (np.zeros(N, U64), np.zeros(N, U64))  # MAC of the public v_0 (its key carries -2^V Delta)
    rel_macs, rel_vals = [], []
    for k, (a, bb) in enumerate(digits):
        ent = au.bound_lut(party, CLIENT, (s + a, s + bb), pads=u_pads, values=u, w=2)
        g = digit_factors(pp, a, bb)[((x_lo >> U64(a)) & U64((1 << (bb - a)) - 1)).astype(np.intp)]
        mz = u128.sub(u128.mul_small(mv, g), (ent[:, 0].copy(), ent[:, 1].copy()))
        last = k == len(digits) - 1
        v_next = vs[k]
        t_k = zs[k][1] & U64((1 << V) - 1)
        cv = au.commit(party, CLIENT, n=N, bits=V + 1, values=v_next, n_extra=1 if last else 0)
        ct = au.commit(party, CLIENT, n=N, bits=V, values=t_k)
        rel_macs.append(u128.sub(u128.sub(mz, u128.shl(cv.mac, V)), ct.mac))
        rel_vals.append(u128.sub(u128.sub(zs[k], u128.shl((np.zeros(N, U64), cv.values), V)),
                                 (np.zeros(N, U64), ct.values)))
        mv = cv.mac
    e = (cv.extra[0][:, 0].copy(), cv.extra[1][:, 0].copy())
    chi = party.ch.recv_array(np.uint8, (lam, len(digits) * N))
    rm = (np.concatenate([x[0] for x in rel_macs]), np.concatenate([x[1] for x in rel_macs]))
    rv = (np.concatenate([x[0] for x in rel_vals]), np.concatenate([x[1] for x in rel_vals]))
    au.check_congruent(party, CLIENT, 2 * V + 4, Z=au.combine(chi, rv), MZ=au.combine(chi, rm), n=lam)
    msg = party.ch.recv_json()
    try:
        y_s = int(msg["share"]) % u128.MOD
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed output share message") from None
    return client_output(h, cv.values, e, y_s)


def prepare_server(model: KernelModelParams, pp: PublicParams) -> tuple[np.ndarray, np.ndarray]:
    """The server's encoded X and ||x||^2 mod 2^M (query-independent, cached per model)."""
    key = (pp.frac_bits, pp.feature_lo, pp.feature_hi, pp.ring_bits)
    enc = getattr(model, "_secureml_malicious_encoded", None)
    if enc is None or enc[0] != key:
        X = pp.encode_features(model.X_train, "training data")
        xx = (X * X).sum(axis=1, dtype=U64)
        if pp.ring_bits < 64:
            xx &= U64((1 << pp.ring_bits) - 1)
        enc = model._secureml_malicious_encoded = (key, X, xx)
    if pp.cross_term == "he":  # the lattice plaintexts of the rows (NTT form), before the first client
        he_matvec_checked.prepare(enc[1], pp.x_bits, pp.ring_bits, owner=model)
    return enc[1], enc[2]


def server_online(party: PartyContext, pp: PublicParams, k: int, model: KernelModelParams) -> None:
    """Model owner's side of k queries, one :func:`online` run each."""
    X, xx = prepare_server(model, pp)
    for _ in range(k):
        online(party, pp, model=model, X=X, xx=xx)


def client_online(party: PartyContext, pp: PublicParams, Q: np.ndarray) -> np.ndarray:
    """Query owner's side: the predictions for the rows of Q (k, d)."""
    enc = pp.encode_features(np.atleast_2d(Q), "query")
    return np.array([decode(pp, online(party, pp, q=q)) for q in enc])


def reference(pp: PublicParams, model: KernelModelParams, X: np.ndarray, q: np.ndarray, rho: np.ndarray) -> int:
    """F(q') for the server's rho, in Python integers (tests: the bit-exact ideal output)."""
    D = ((X.astype(object) - q.astype(object)) ** 2).sum(axis=1)
    return reference_from_distances(pp, model, D, rho)


def reference_from_distances(pp: PublicParams, model: KernelModelParams, D, rho: np.ndarray) -> int:
    """Steps 10-13's output for exact integer distances D (any kernel exp(-c D')) and the
    server's rho (mod 2^M): the bit-exact ideal output of :func:`kernel_output`."""
    M, s, L = pp.ring_bits, pp.shift_bits, pp.lo_bits
    hb, _ = plan(pp)
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    rho = np.asarray(rho, dtype=U64) & U64((1 << M) - 1)
    u = np.array([(int(Di) + int(ri)) % (1 << M) for Di, ri in zip(D, rho)], dtype=U64)
    xu, xr = u >> U64(s), rho >> U64(s)
    x_lo, r_lo = xu & U64((1 << L) - 1), xr & U64((1 << L) - 1)
    H = ((xu >> U64(L)).astype(np.int64) - (xr >> U64(L)).astype(np.int64)) % (1 << hb)
    G = np.exp(-pp.c * float(1 << L) * H + pp.c * r_lo.astype(np.float64))
    G = np.where(H < (1 << pp.lut_bits), G, 0.0)
    G_enc = np.rint(G * float(1 << pp.g_frac_bits)).astype(U64)
    vs, _ = client_factor(pp, x_lo)
    v = vs[-1]
    y = int(round(model.y_offset * (1 << pp.out_scale_bits)))
    for i in range(len(alpha)):
        y += int(alpha[i]) * int(G_enc[i]) * int(v[i])
    return y % u128.MOD


def decode(pp: PublicParams, y: int) -> float:
    """The prediction from y (mod 2^128, scale 2^out_scale_bits)."""
    return u128.to_signed_float(y, pp.out_scale_bits)


__all__ = ["online", "kernel_output", "server_online", "client_online", "reference", "reference_from_distances",
           "decode", "plan", "client_factor",
           "MAX_HI_BITS"]
