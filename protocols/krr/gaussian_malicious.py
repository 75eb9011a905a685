"""Client-malicious exact Gaussian-kernel KRR prediction (``security = "client-malicious"``).

    prediction(q') = y_offset + sum_i alpha_i exp(-||x_i - q'||^2 / (2 sigma^2))

Threat model: the server (model owner) is semi-honest; the client may deviate arbitrarily (any
bytes, any order). Guarantee: per query the client learns at most F(q') + e_T for one q' of the
public input domain -- the server's fixed-point function below, bit-exact, plus the server's fresh
flooding term e_T below the one-factor scale (step 13a) -- or an abort; the server
learns nothing about q'. Every OT the client chooses in is from the checked OT extension
(:mod:`protocols.ot.consistency`), so each choice bit is well defined; every later client value
is authenticated (:mod:`protocols.mpc.authenticated`) and checked (step 9) before the server sends
anything that depends on u; after that the client only receives; every table the client indexes is indexed by digits of its *committed* u
(:func:`~protocols.mpc.authenticated.bound_lut`), never by a fresh or client-computed index. The
client is never an OT sender.

The function F (fixed point, M = ring_bits, s = shift_bits, L = lo_bits, V = v_frac_bits,
w = weight_frac_bits, g = g_frac_bits, u = D + rho mod 2^M, x = u >> s split into x_lo (L bits)
and x_hi, rho likewise; the digits d_k = bits [a_k, b_k) of x_lo, k = 1..K, from :func:`tail_plan`):
    G_i   = round(2^g [H_i < 2^lut] exp(-c 2^L H_i + c rho_lo,i)),  H_i = (x_hi - rho_hi) mod 2^(W-L)
    g_k(d) = round(2^V exp(-c 2^(a_k) d))                          (public factor tables)
    F     = round(2^S y_offset) + sum_i alpha_enc,i G_i prod_k g_k(d_k,i)     (mod 2^R)
an exact integer product (no rounding between factors), scale 2^S with S = w + g + K V, in the
ring Z_2^R of the chain (R = 64 n > S + 24: predictions up to 2^24 in magnitude; R = 896 bits,
S = 856 at CM/QM9 settings). It differs from the exact prediction only by the roundings of G
and of each g_k (relative 2^-(V+1) e^(c 2^a d) each: a kernel term within ~2^-35 relative) and
depends on the server's fresh rho only through them.

Protocol (both parties run :func:`online`; steps numbered in the code):
  1.-9. :mod:`protocols.krr.binding`: cross term over OT, mask-reveal, u committed bit by bit,
        bound to the committed query and its norm by the batched check; the server aborts on a
        failure before step 10. The random-OT keys of u's bits are kept. This is the client's
        LAST message: steps 10-14 go from the server to the client only (one flight).
  10. G table: one bound table OT indexed by x_hi (W - L <= 12 bits, the committed bits
      [s + L, M) of u); entry e = alpha_i G_i(e) + s0_i in Z_2^(64 nG) (nG = 2 limbs unless the
      bound below needs 3), s0_i uniform on [2^l, 2^(64 nG) - 2^l) with |alpha_i G_i(e)| < 2^l
      for every e: h_i = alpha_i G_i + s0_i never wraps, so the client lifts h_i, and the
      server s0_i, into the chain's ring Z_2^R as integers: p_0 - s_0 = alpha_i G_i exactly.
  11. Masked public-factor chain, k = 1..K: the server draws s_k,i uniform in Z_2^R (fresh, the
      whole ring) and sends one bound table per point on the committed digit d_k with entry
      z_k(d) = s_(k-1),i g_k(d) - s_k,i; the client computes p_k = p_(k-1) g_k(d_k) - z_k(d_k).
      Invariant: p_k - s_k = alpha_i G_i prod_(m<=k) g_m(d_m) (mod 2^R). The client commits
      nothing and nothing is checked.
  12. (the check of the earlier proved chain: nothing to check any more.)
  13. Output: the server sends y_S = round(2^S offset) - sum_i s_K,i + e_T (mod 2^R); the
      client's y = sum_i p_K,i + y_S = F(q') + e_T.
  13a. Flooding: e_T uniform in [-2^(T-1), 2^(T-1)), T = S - (w + g + V) = (K - 1) V, fresh from
      the server's generator (:func:`flood_draw`). Why: F is exact at scale 2^S, and the client
      knows every v_i = prod_k g_k(d_k,i) (a public function of its u), so F - offset =
      sum_i a_i v_i with a_i = alpha_i G_i (about 74 bits) and v_i (about K V = 800 bits) is a
      knapsack the client can solve: with few points inside the table's cut (a query far from
      the rest), the a_i are determined by F and found by a modular inverse (two points) or
      lattice reduction -- one kernel term per point instead of their sum (tested:
      ``test_flooding_hides_the_separate_terms``). With e_T the client knows F only to 2^T, i.e.
      at the scale 2^(w + g + V) of the proved chain this protocol replaced (v_i of V bits): the
      same information as a prediction rounded there; e_T changes the prediction by < 2^-(w+g+V+1).
      The bits below 2^T enter y only through e_T's carry, a noisy bit per query (averaging M
      queries of one q' gives about log2(M) / 2 bits of them; a budget bounds M).
  14. Output noise (``--noise``, D1 of :mod:`protocols.krr.defense`): the server adds
      e = round(n 2^S), n ~ N(0, sd^2) fresh from its own generator, to y_S before it sends it;
      the honest client's y is F(q') + e.

Why a deviating client learns F(q') + e_T + e and nothing else (no check, no selective failure;
below, e stands for e_T + e, the server's two fresh additive terms):
  * Its inputs are fixed before step 10: u is committed and checked (steps 4-9), and every
    table of steps 10-11 is a bound table OT (:func:`~protocols.mpc.authenticated.bound_lut`)
    indexed by digits of that committed u. The client holds one random-OT key per committed bit,
    so it can open exactly the entry at its committed digit; any other entry is padded by keys it
    does not hold (a pseudorandom string: tested, ``test_another_digit_than_the_committed_one_
    opens_nothing``). It sends nothing in steps 10-14, so nothing it does there can change what
    the server sends, and the server never aborts there: no selective failure.
  * Its whole view of steps 10-14 -- h_i, z_1,i(d_1), ..., z_K,i(d_K) for every i, and y_S -- is
    simulatable from F(q') + e alone. (h_i, z_1,i, ..., z_K,i) is the image of the server's masks
    (s0_i, s_1,i, ..., s_K,i) under a triangular map in which z_k,i = s_(k-1),i g_k - s_k,i is a
    shift of the fresh uniform s_k,i: uniform in Z_2^R given everything before (this needs the
    masks uniform in the WHOLE ring; a mask on a sub-range would leave the top of z_k biased by
    s_(k-1) g_k). h_i = alpha_i G_i + s0_i is within statistical distance
    |alpha_i G_i| / (2^(64 nG) - 2^(l+1)) < 2^(l - 64 nG) (1 + 2^-40) of s0_i alone (uniform on
    [2^l, 2^(64 nG) - 2^l)); :func:`tail_plan` picks nG so that the sum over the N points,
    N 2^(l - 64 nG) (1 + 2^-40), stays <= 2^-40 (l = 74 at N = 16,384 with 30-bit weights:
    2^-40.7 at nG = 2). Given those, y_S = F(q') + e - sum_i p_K,i is a function of F(q') + e
    and the view (the client's honest p_K computed from it). The simulator draws the view
    uniformly and sets y_S so: the client's view, hence anything it computes from it, is a
    function of F(q') + e and its own coins.
  * What the client does locally therefore only moves its own output: an edit of h_i, z_k or
    p_k by a known err shifts y by err times the public factors it multiplies by afterwards
    (tested bit-exactly); dropping points from its final sum leaves y masked by the dropped
    points' fresh s_K,i (uniform: neither the offset nor a weighted term).
Noise keeps the guarantee: e is fresh, drawn after the client's last message (step 9) and enters
only y_S, a single additive term of the client's output; the client never holds a value from
which it could be removed (every other message is masked by s0, s_k, which e does not touch).
Fresh noise averages out over repeated queries: a budget (``serve --budget``) bounds that, as in
the semi-honest protocols. Rounding (``--round-to``) is not part of this protocol: it needs the
client's inputs to the rounding bound too (docs/malicious.md, "Output defenses"), so validate()
refuses it.

Cost of steps 10-14 per training point: 2^(W-L) x 8 nG bytes (G table; 8 kB at CM settings) plus
sum_k 2^(b_k - a_k) x 8 n bytes (the chain: :func:`tail_plan` picks the digit width with the
fewest bytes -- narrower digits mean smaller tables but more of them and a wider ring; 20 2-bit
digits in Z_2^896, 8,960 bytes, at CM settings against 10,240 for 10 4-bit digits), and one
output word. (The proved chain it replaces committed v_(k+1) and t_k, 81 bits per digit, and
ran a batched check: ~16.5 kB per point at CM settings.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import binding, defense
from protocols.krr.chain import CLIENT, SERVER, digit_plan
from protocols.krr.defense_spec import OutputDefense
from protocols.krr.expsum import encode_weights
from protocols.krr.params import MALICIOUS_MAX_HI_BITS, PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import he_matvec_checked
from protocols.mpc import limbs, u128
from protocols.mpc.context import PartyContext
from secureml.errors import ModelError, ProtocolError

U64 = np.uint64
#: widest x_hi that the single G table OT serves (2^12 entries per training point)
MAX_HI_BITS = MALICIOUS_MAX_HI_BITS
#: digit widths the chain may use (step 11 picks the one with the fewest bytes for the model)
CHAIN_DIGIT_BITS = (2, 3, 4, 5, 6)
#: |F| / 2^scale below 2^PREDICTION_BITS: the chain ring keeps one more bit for the sign
PREDICTION_BITS = 24
#: statistical distance of the lifted G-table outputs from uniform, summed over the points
LIFT_STAT_BITS = 40


@dataclass(frozen=True)
class TailPlan:
    """The public shape of steps 10-14, a function of the public parameters only.

    ``hb``: bits of x_hi (the G table has 2^hb entries per point); ``digits``: bit ranges [a, b)
    of x_lo, one public factor table each; ``scale_bits`` = w + g + K V (the output's scale);
    ``chain_limbs``: the chain's ring Z_2^R, R = 64 chain_limbs >= scale_bits + 25; ``g_limbs``:
    the G table's entry ring Z_2^(64 g_limbs) (2: 128 bits, unless the lift's statistical
    distance bound below needs a third word); ``lift_bits`` = l: |alpha_i G_i(e)| < 2^l, and the
    server's first mask is uniform on [2^l, 2^(64 g_limbs) - 2^l)."""

    hb: int
    digits: tuple[tuple[int, int], ...]
    scale_bits: int
    one_factor_bits: int
    chain_limbs: int
    g_limbs: int
    lift_bits: int

    @property
    def ring_bits(self) -> int:
        """R, the bits of the chain's ring (and of the output y)."""
        return 64 * self.chain_limbs

    @property
    def flood_bits(self) -> int:
        """T = scale_bits - (w + g + V) = (K - 1) V: the output bits below the one-factor scale
        2^(w + g + V) that step 13 floods with a fresh uniform e_T in [-2^(T-1), 2^(T-1))."""
        return self.scale_bits - self.one_factor_bits

    def chain_bytes_per_point(self) -> int:
        """Bytes of step 11 per training point (one bound table per digit, 2^m entries of R bits)."""
        return sum(1 << (b - a) for a, b in self.digits) * 8 * self.chain_limbs


def _chain_digits(pp: PublicParams) -> tuple[list[tuple[int, int]], int, int]:
    """(digits, scale, limbs) with the fewest chain bytes: more, narrower digits mean smaller
    tables but a wider ring (V bits per digit), so neither extreme wins (Gaussian at CM settings,
    L = 40: 3-bit digits, 9.3 kB per point; 4-bit digits would need 10.2 kB)."""
    best = None
    for m in CHAIN_DIGIT_BITS:
        digits = digit_plan(0, pp.lo_bits, m)
        scale = pp.weight_frac_bits + pp.g_frac_bits + len(digits) * pp.v_frac_bits
        n = limbs.limbs_for(scale + PREDICTION_BITS + 1)
        cost = sum(1 << (b - a) for a, b in digits) * n
        if best is None or cost <= best[0]:  # ties: the wider digit (fewer tables)
            best = (cost, digits, scale, n)
    return best[1], best[2], best[3]


def tail_plan(pp: PublicParams) -> TailPlan:
    """The public plan of steps 10-14 (:class:`TailPlan`); ProtocolError if x_hi is too wide."""
    hb, digits = plan(pp)
    _, scale, n = _chain_digits(pp)
    # |alpha_i| <= 2^(weight_bits - 1); G_i(e) = rint(2^g e^{-c 2^L H + c rho_lo}) <= rint(2^g e^step)
    g_max = math.ceil(math.exp(pp.step) * 2.0 ** pp.g_frac_bits * (1 + 2 ** -40)) + 1
    a_max = (1 << (pp.weight_bits - 1)) * g_max
    lift = a_max.bit_length()
    g_limbs = 2
    # statistical distance of the client's h from uniform: N a_max / (2^(64 g_limbs) - 2^(l+1))
    while pp.n_train * a_max << LIFT_STAT_BITS > (1 << (64 * g_limbs)) - (1 << (lift + 1)):
        g_limbs += 1
    one = pp.weight_frac_bits + pp.g_frac_bits + pp.v_frac_bits
    return TailPlan(hb, tuple(digits), scale, one, max(n, g_limbs), g_limbs, lift)


def plan(pp: PublicParams) -> tuple[int, list[tuple[int, int]]]:
    """(bits of x_hi, digits of x_lo) from public numbers; ProtocolError if x_hi is too wide."""
    hb = pp.d_bits - pp.lo_bits
    if pp.lo_bits < 1:
        raise ProtocolError("the client-malicious kernel protocol needs a low part of the distance (sigma too small "
                            "for the feature bounds): serve it with --security semi-honest")
    if not 1 <= hb <= MAX_HI_BITS:
        raise ProtocolError(f"the client-malicious kernel protocol needs the distance's high part to have 1..{MAX_HI_BITS} "
                            f"bits, this model's has {hb}: serve it with --security semi-honest")
    return hb, _chain_digits(pp)[0]


def digit_factors(pp: PublicParams, a: int, b: int) -> np.ndarray:
    """g_k(d) = round(2^V exp(-c 2^a d)) for d in [0, 2^(b-a)): the public factor table of a digit."""
    d = np.arange(1 << (b - a), dtype=np.float64)
    return np.rint(np.exp(-pp.c * float(1 << a) * d) * float(1 << pp.v_frac_bits)).astype(U64)


def _digit(x: np.ndarray, a: int, b: int) -> np.ndarray:
    return ((x >> U64(a)) & U64((1 << (b - a)) - 1)).astype(np.intp)


def client_factor(pp: PublicParams, x_lo: np.ndarray) -> list[int]:
    """The public function v(x_lo) = prod_k g_k(d_k) per point, exact (Python ints, scale 2^(K V))."""
    out = [1] * len(x_lo)
    for a, b in plan(pp)[1]:
        g = digit_factors(pp, a, b)[_digit(np.asarray(x_lo, dtype=U64), a, b)]
        out = [o * int(v) for o, v in zip(out, g)]
    return out


# ---- client-local steps (module functions: tests replace one of them) ---------------------------
def client_chain_step(p: np.ndarray, g: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Step 11, client: p_k = p_(k-1) g_k(d_k) - z_k (mod 2^R; limb arrays (N, n), g (N,))."""
    return limbs.sub(limbs.mul_small(p, g), z)


def client_output(p: np.ndarray, y_s: int, ring_bits: int) -> int:
    """Step 13, client: y = sum_i p_K,i + y_S (mod 2^R)."""
    return (limbs.total(p) + y_s) % (1 << ring_bits)


def online(party: PartyContext, pp: PublicParams, *, model: KernelModelParams | None = None,
           X: np.ndarray | None = None, xx: np.ndarray | None = None, q: np.ndarray | None = None,
           lam: int = au.STAT_BITS) -> dict | int:
    """One query, both roles. Server: ``model`` with its encoded ``X``, ``xx``; returns a record
    of its randomness (rho, the first mask, the noise) for tests. Client: its encoded ``q``;
    returns y (mod 2^R, scale 2^scale_bits of :func:`tail_plan`)."""
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


def g_table(pp: PublicParams, rho_x: np.ndarray, alpha: np.ndarray, tp: TailPlan) -> np.ndarray:
    """Server, step 10: alpha_i G_i(e) for every e, as exact two's-complement limb arrays
    (N, 2^hb, g_limbs); rho_x = rho >> s."""
    L, hb = pp.lo_bits, tp.hb
    x_lo = rho_x & U64((1 << L) - 1)
    rho_hi = (rho_x >> U64(L)).astype(np.int64)
    e = np.arange(1 << hb, dtype=np.int64)[None, :]
    H = (e - rho_hi[:, None]) % (1 << hb)
    G = np.exp(-pp.c * float(1 << L) * H + pp.c * x_lo.astype(np.float64)[:, None])
    G = np.where(H < (1 << pp.lut_bits), G, 0.0)
    G_enc = np.rint(G * float(1 << pp.g_frac_bits)).astype(U64)
    aG = limbs.from_u128(u128.mul64(G_enc, np.abs(alpha).astype(U64)[:, None]), tp.g_limbs)
    return np.where((alpha < 0)[:, None, None], limbs.neg(aG), aG)


def kernel_output(party: PartyContext, pp: PublicParams, *, u_pads, rho: np.ndarray | None = None,
                  delta: np.uint64 | None = None, model: KernelModelParams | None = None,
                  u: np.ndarray | None = None, lam: int = au.STAT_BITS) -> dict | int:
    """Steps 10-14 for one query, both roles, on a committed and already *checked*
    u = D(q') + rho (mod 2^M): shared by every kernel exp(-c D') whose distance protocol ends in
    such a u (this module's squared L2, :mod:`protocols.krr.laplacian_malicious`'s L1; pp.c is the
    kernel's constant). Server: ``rho`` (mod 2^M), ``model`` (``delta``: the MAC key u was
    committed under, unused since the tail has nothing to check); client: ``u`` (mod 2^M). Both:
    ``u_pads``, the random-OT keys of u's committed bits (at least bits [shift_bits, M)). Every
    message of these steps goes from the server to the client: one flight. Returns the server's
    record / the client's y (mod 2^R)."""
    defended = OutputDefense.from_dict(pp.output_defense)
    _refuse_rounding(pp)
    server = party.role == SERVER
    N, M, s, L = pp.n_train, pp.ring_bits, pp.shift_bits, pp.lo_bits
    tp = tail_plan(pp)
    n, R = tp.chain_limbs, tp.ring_bits
    xm = (rho if server else u) >> U64(s)
    x_lo = xm & U64((1 << L) - 1)
    # 10. G table indexed by the committed x_hi: h_i = alpha_i G_i + s0_i, never wrapping
    hi_digit = (s + L, M)
    if server:
        alpha, need = encode_weights(model.dual_coef, pp.weight_frac_bits)
        if need > pp.weight_bits:
            raise ModelError("weights wider than the advertised weight_bits")
        top = 1 << (64 * tp.g_limbs)
        s_prev = limbs.uniform_between(party.rng, (N,), tp.g_limbs, 1 << tp.lift_bits, top - (1 << tp.lift_bits))
        t = limbs.add(g_table(pp, xm, alpha, tp), s_prev[:, None, :])
        au.bound_lut(party, CLIENT, hi_digit, pads=u_pads, tables=t)
        first = s_prev
        s_prev = np.concatenate([s_prev, limbs.zeros((N,), n - tp.g_limbs)], axis=1)  # lifted: an integer < 2^(64 g)
    else:
        h = au.bound_lut(party, CLIENT, hi_digit, pads=u_pads, values=u, w=tp.g_limbs)
        p = np.concatenate([h, limbs.zeros((N,), n - tp.g_limbs)], axis=1)  # lifted as an integer
    # 11. the masked public-factor chain: one bound table per digit of x_lo
    for a, b in tp.digits:
        digit = (s + a, s + b)
        g = digit_factors(pp, a, b)
        if server:
            s_k = limbs.random(party.rng, (N,), n)  # fresh, uniform in the whole ring
            z = limbs.sub(limbs.mul_small(s_prev[:, None, :], g[None, :]), s_k[:, None, :])
            au.bound_lut(party, CLIENT, digit, pads=u_pads, tables=z)
            s_prev = s_k
        else:
            z = au.bound_lut(party, CLIENT, digit, pads=u_pads, values=u, w=n)
            p = client_chain_step(p, g[_digit(x_lo, a, b)], z)
    if server:
        # 13. the server's output share
        offset = int(round(model.y_offset * 2.0 ** tp.scale_bits))
        # 13a. flood the bits below 2^-(w + g + V): the exact product carries (K - 1) V bits that
        # would let the client separate the terms alpha_i G_i it cannot compute (it knows every v_i)
        flood = flood_draw(party, tp.flood_bits)
        y_s = (offset - limbs.total(s_prev) + flood) % (1 << R)
        # 14. (D1) fresh noise on the server's own share; nothing the client sent after step 9
        # exists, so nothing it sent can depend on it, and the client sees only y_S + e
        noised = defense.add_noise(party, defended, [y_s], R, tp.scale_bits)[0]
        party.ch.send_json({"share": str(noised)})
        return {"rho": rho, "s0": first, "noise": (noised - y_s) % (1 << R), "flood": flood}
    msg = party.ch.recv_json()
    try:
        y_s = int(msg["share"]) % (1 << R)
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed output share message") from None
    return client_output(p, y_s, R)


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


def flood_draw(party: PartyContext, bits: int) -> int:
    """Step 13a (server): e_T uniform in [-2^(bits-1), 2^(bits-1)) from the server's own generator."""
    if bits <= 0:
        return 0
    words = party.rng.random_u64((bits + 63) // 64)
    e = sum(int(w) << (64 * k) for k, w in enumerate(words)) & ((1 << bits) - 1)
    return e - (1 << (bits - 1))


def reference(pp: PublicParams, model: KernelModelParams, X: np.ndarray, q: np.ndarray, rho: np.ndarray) -> int:
    """F(q') for the server's rho, in Python integers (tests: the bit-exact ideal output)."""
    D = ((X.astype(object) - q.astype(object)) ** 2).sum(axis=1)
    return reference_from_distances(pp, model, D, rho)


def reference_from_distances(pp: PublicParams, model: KernelModelParams, D, rho: np.ndarray) -> int:
    """Steps 10-13's output for exact integer distances D (any kernel exp(-c D')) and the
    server's rho (mod 2^M): the bit-exact ideal output F of :func:`kernel_output` (mod 2^R)."""
    M, s, L = pp.ring_bits, pp.shift_bits, pp.lo_bits
    tp = tail_plan(pp)
    alpha, _ = encode_weights(model.dual_coef, pp.weight_frac_bits)
    rho = np.asarray(rho, dtype=U64) & U64((1 << M) - 1)
    u = np.array([(int(Di) + int(ri)) % (1 << M) for Di, ri in zip(D, rho)], dtype=U64)
    xu, xr = u >> U64(s), rho >> U64(s)
    x_lo = xu & U64((1 << L) - 1)
    # G_i at the client's high digit: the table row of step 10 at e = x_hi(u)
    aG = g_table(pp, xr, alpha, tp)[np.arange(len(u)), (xu >> U64(L)).astype(np.intp)]
    v = client_factor(pp, x_lo)
    R = tp.ring_bits
    top = 1 << (64 * tp.g_limbs)
    y = int(round(model.y_offset * 2.0 ** tp.scale_bits))
    for i, w in enumerate(limbs.to_int(aG)):
        y += (w - top if w >= top // 2 else w) * v[i]
    return y % (1 << R)


def decode(pp: PublicParams, y: int) -> float:
    """The prediction from y (mod 2^R, scale 2^scale_bits of :func:`tail_plan`)."""
    tp = tail_plan(pp)
    return limbs.to_signed_float(y, tp.chain_limbs, tp.scale_bits)


__all__ = ["online", "kernel_output", "server_online", "client_online", "reference", "reference_from_distances",
           "decode", "flood_draw", "plan", "tail_plan", "TailPlan", "client_factor", "client_chain_step", "client_output",
           "digit_factors", "MAX_HI_BITS"]
