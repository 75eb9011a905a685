"""Model owner's homomorphic evaluation of a Gaussian KRR prediction on a CKKS-encrypted query.

Packing. The query owner packs q~ = (q', ||q'||^2, 0...) with q' = (q - c) / B (public centre c
and query radius B: entries stay O(1), so the rounding error of the encoded model, a fixed
absolute amount per slot, is not magnified by large query entries), length d_pad (a power of two),
periodically over all S = N/2 slots and sends g rotations rot(q~rep, j), j < g, encrypted
("baby steps"; sending them costs less than the rotation keys they replace). Training points go
one per slot, S per block. With X~_i = ((x_i - c) B / (sigma^2 2^k), -B^2 / (2 sigma^2 2^k), 0...) the
generalised diagonals diag_j[i] = X~[i, (i + j) mod d_pad] give, for every slot i at once,

    u_i = sum_j diag_j[i] * q~[(i + j) mod d_pad] - ||x_i - c||^2 / (2 sigma^2 2^k)
        = -||x_i - q||^2 / (2 sigma^2 2^k)  in [-1, 0]         (range: see params.py)

evaluated baby-step/giant-step: u = sum_m rot(sum_{j<g} rot(diag_{mg+j}, -mg) * rot(q~rep, j), mg),
Horner-style so that only ONE rotation key (step g) is needed: d_pad plaintext products and
d_pad/g - 1 rotations per block.

Kernel times weight. With p(u) ~ exp(u) (degree 7 on [-1, 0]) and w_i = |alpha_i|^(1/2^k),
s_i = sign(alpha_i): P1 = w_i p(u_i), P2 = s_i w_i p(u_i) (the weights are folded into the
polynomial's coefficients, which costs no level), and

    alpha_i exp(-D_i / 2 sigma^2) ~ P2 * P1 * P1^2 * P1^4 * ... * P1^(2^(k-1))

a product of depth k, exactly the depth of k squarings: the sign costs no extra level.

Output. The prediction is sum_i alpha_i K_i = the sum of all slots, and for CKKS the constant
coefficient m_0 of the plaintext polynomial is (2/N) * Re(sum of slots) * scale. So no rotation
(key) is needed to add up the slots: the server returns only what is needed to decrypt m_0 --
the constant coefficient of c0 and the whole c1 -- after re-randomising with a fresh encryption
of zero under the client's public key (so c1 is fresh) and flooding m_0 with Gaussian noise.
The other N - 1 coefficients (which encode the individual kernel values) never leave the server.
"""
from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from protocols.common import KernelModelParams
from protocols.baselines.fhe import seal_backend as sb
from protocols.baselines.fhe.params import FHEParams, exp_poly_coefficients


@dataclass
class BlockPlaintexts:
    """Encoded model data for one block of S training points (query-independent)."""

    diags: list[Any | None]  # d_pad plaintexts (None: all zero), top level, pre-rotated for the giant steps
    norm_term: Any  # -||x_i - c||^2 / (2 sigma^2 2^k), top level, at the scale of the products
    p1: list[Any]  # coefficient plaintexts of P1 (index j = power of u), p1[0] the constant term
    p2: list[Any]


@dataclass
class ServerModel:
    """The model owner's precomputed state for one parameter set."""

    model: KernelModelParams
    params: FHEParams
    ctx: sb.Context
    blocks: list[BlockPlaintexts] = field(default_factory=list)
    precompute_s: float = 0.0
    alpha_shift: int = 0  # weights are divided by 2^alpha_shift (so |w| <= 1) and the scale too
    noise_bound: float | None = None  # B0 (integer units of m_0), from calibrate()
    calibrate_s: float = 0.0

    @property
    def delta(self) -> float:
        return float(2.0**self.params.scale_bits)


_MODEL_CACHE: dict[tuple[int, str], ServerModel] = {}
_MODEL_LOCK = threading.Lock()


def _scales(ctx: sb.Context, delta: float) -> dict[str, float]:
    """Exact plaintext scales so that every term of the polynomial lands on scale delta.

    Level names: u at L-1 (scale delta), u2 at L-2, u3 and u4 at L-3, P at L-4.
    """
    q = ctx.primes
    L = ctx.top
    s2 = delta * delta / q[L - 1]
    s3 = s2 * delta / q[L - 2]
    s4 = s2 * s2 / q[L - 2]
    D = delta
    return {
        "s2": s2,
        "s3": s3,
        "s4": s4,
        "pt1": D * q[L - 1] / delta,
        "pt2": D * q[L - 2] / s2,
        "pt3": D * q[L - 3] / s3,
        "pt4": D * q[L - 3] / s4,
        "pt5": D * q[L - 3] * q[L - 1] / (delta * s4),
        "pt6": D * q[L - 3] * q[L - 2] / (s2 * s4),
        "pt7": D * q[L - 1] * q[L - 2] * q[L - 3] / (delta * s2 * s4),
    }


# level at which each coefficient plaintext is multiplied in (see _poly below)
def _pt_levels(L: int) -> dict[int, int]:
    return {0: L - 4, 1: L - 1, 2: L - 2, 3: L - 3, 4: L - 3, 5: L - 1, 6: L - 2, 7: L - 1}


def prepare(model: KernelModelParams, params: FHEParams, cache: bool = True) -> ServerModel:
    """Encode the model's blocks for ``params`` (offline; cached per model object and params)."""
    # flooding does not change the encoded model (nor the noise bound): not part of the key
    key = (id(model), repr({k: v for k, v in params.to_dict().items() if k != "flood_bits"}))
    with _MODEL_LOCK:
        hit = _MODEL_CACHE.get(key) if cache else None
        if hit is not None and hit.model is model:
            return hit  # (its params may differ in flood_bits only; callers use their own for that)
    t0 = time.perf_counter()
    ctx = sb.make_context(params.poly_degree, params.coeff_bits)
    S, dp, L = ctx.slots, params.d_pad, ctx.top
    delta = float(2.0**params.scale_bits)
    delta_in = float(2.0**params.input_scale_bits)
    pt_scale = delta * ctx.primes[L] / delta_in  # product delta_in * pt_scale rescales (by q_L) to delta
    sigma2 = float(model.sigma) ** 2
    center = np.asarray(params.center)
    rho = params.query_radius  # the client sends (q - c) / rho: entries O(1) (see client.packed_query)
    two_k = float(2**params.k)
    c = exp_poly_coefficients()
    sc = _scales(ctx, delta)
    lv = _pt_levels(L)
    g, G = params.baby_steps, params.giant_steps
    shift = weight_shift(model, params, ctx)
    alpha = model.dual_coef / 2.0**shift
    w = np.abs(alpha) ** (1.0 / two_k)
    sgn = np.sign(alpha)
    sm = ServerModel(model=model, params=params, ctx=ctx, alpha_shift=shift)
    n = model.n_train
    for start in range(0, n, S):
        X = model.X_train[start : start + S]
        m = X.shape[0]
        Xc = X - center
        Xt = np.zeros((S, dp))
        Xt[:m, : params.n_features] = Xc * (rho / (sigma2 * two_k))
        Xt[:m, params.n_features] = -(rho * rho) / (2.0 * sigma2 * two_k)
        rows = np.arange(S)
        diags = []
        for mm in range(G):
            for j in range(g):
                jj = mm * g + j
                diag = Xt[rows, (rows + jj) % dp]
                # pre-rotate by -mm*g so that the Horner giant step rotation by mm*g undoes it;
                # all-zero diagonals (padding columns of a partly filled block) are skipped
                diags.append(sb.encode(ctx, np.roll(diag, mm * g), L, pt_scale) if diag.any() else None)
        norms = np.zeros(S)
        norms[:m] = -(Xc * Xc).sum(axis=1) / (2.0 * sigma2 * two_k)
        wb = np.zeros(S)
        wb[:m] = w[start : start + m]
        sb_ = np.zeros(S)
        sb_[:m] = sgn[start : start + m]
        p1, p2 = [], []
        for j in range(len(c)):
            scale = delta if j == 0 else sc[f"pt{j}"]
            p1.append(sb.encode(ctx, wb * c[j], lv[j], scale))
            p2.append(sb.encode(ctx, sb_ * wb * c[j], lv[j], scale))
        sm.blocks.append(
            BlockPlaintexts(
                diags=diags,
                norm_term=sb.encode(ctx, norms, L, delta_in * pt_scale),
                p1=p1,
                p2=p2,
            )
        )
    sm.precompute_s = time.perf_counter() - t0
    if cache:
        with _MODEL_LOCK:
            _MODEL_CACHE.clear()  # one encoded model at a time: each takes ~1 GB per block
            _MODEL_CACHE[key] = sm
    return sm


def prediction_bound(model: KernelModelParams, k: int) -> float:
    """A rigorous bound on |prediction| for every query (used to place the result in q0).

    For a positive-definite kernel with k(q, q) = 1, Cauchy-Schwarz in the RKHS gives
    |sum_i alpha_i k(x_i, q)| <= sqrt(alpha^T K alpha) (K the training kernel matrix), typically
    hundreds of times smaller than sum |alpha|. The circuit's polynomial kernel differs from the
    exact one by at most 2^k * 2e-9 relative (see params.EXP_POLY_REL_ERROR), covered by the second
    term; the offset is added to the same coefficient.
    """
    a = model.dual_coef
    quad = 0.0
    for s in range(0, model.n_train, 1024):  # K alpha, chunked (N^2 kernel values, offline)
        quad += float(a[s : s + 1024] @ (model.predict(model.X_train[s : s + 1024]) - model.y_offset))
    l1 = float(np.abs(a).sum())
    return math.sqrt(max(quad, 0.0)) + (2.0**k * 2e-9 + 1e-9) * l1 + abs(float(model.y_offset))


def weight_shift(model: KernelModelParams, params: FHEParams, ctx: sb.Context) -> int:
    """Power of two the weights are divided by (may be negative: multiplied).

    The final CKKS noise is roughly a fixed number of integer units of m_0 (rounding in the last
    rescale), so the prediction should fill the last prime's headroom: |m_0| = (2/N) |prediction|
    * scale / 2^shift is kept below q0 / 2^6 (room for the flooding noise), with |prediction|
    bounded by :func:`prediction_bound`. With k = 0 the weights are encoded at the last level
    directly, where SEAL only accepts |value| * scale < q0: then also |alpha| / 2^shift <= 1.
    The client sees the shift only through the reported scale.
    """
    bound = prediction_bound(model, params.k)
    if bound == 0.0:
        return 0
    delta = 2.0**params.scale_bits
    shift = math.ceil(math.log2(bound * 2.0 * delta * 2.0**6 / (ctx.poly_degree * ctx.primes[0])))
    if params.k == 0 and model.n_train:
        shift = max(shift, math.ceil(math.log2(max(float(np.max(np.abs(model.dual_coef))), 1e-300))))
    return int(shift)


class Evaluator:
    """Homomorphic operations with the client's evaluation keys."""

    def __init__(self, sm: ServerModel, relin_keys: Any, galois_keys: Any) -> None:
        self.sm = sm
        self.ctx = sm.ctx
        self.ev = sm.ctx.evaluator
        self.rk = relin_keys
        self.gk = galois_keys

    # -- small helpers ----------------------------------------------------------------------
    def _mul(self, a: Any, b: Any) -> Any:
        """Ciphertext product at the lower of the two levels, relinearised and rescaled."""
        la, lb = sb.level_of(self.ctx, a), sb.level_of(self.ctx, b)
        if la > lb:
            a = self._down(a, lb)
        elif lb > la:
            b = self._down(b, la)
        out = seal.Ciphertext()
        if a is b:
            self.ev.square(a, out)
        else:
            self.ev.multiply(a, b, out)
        self.ev.relinearize_inplace(out, self.rk)
        self.ev.rescale_to_next_inplace(out)
        return out

    def _mul_plain(self, a: Any, pt: Any) -> Any:
        out = seal.Ciphertext()
        self.ev.multiply_plain(a, pt, out)
        self.ev.rescale_to_next_inplace(out)
        return out

    def _down(self, a: Any, level: int) -> Any:
        out = seal.Ciphertext()
        self.ev.mod_switch_to(a, self.ctx.parms_ids[level], out)
        return out

    @staticmethod
    def _fix_scale(a: Any, target: float) -> None:
        # The exact plaintext scales make this a no-op up to double rounding (checked).
        if abs(a.scale / target - 1.0) > 1e-9:
            raise RuntimeError(f"scale drift {a.scale} vs {target}")
        a.scale = target

    # -- the circuit --------------------------------------------------------------------------
    def distances(self, block: BlockPlaintexts, q_rot: list[Any]) -> Any:
        """Step 1: u = -D / (2 sigma^2 2^k) for the S training points of a block (level L-1)."""
        p = self.sm.params
        g, G = p.baby_steps, p.giant_steps
        acc = None
        for mm in range(G - 1, -1, -1):
            inner = None
            for j in range(g):
                pt = block.diags[mm * g + j]
                if pt is None:
                    continue
                tmp = seal.Ciphertext()
                self.ev.multiply_plain(q_rot[j], pt, tmp)
                if inner is None:
                    inner = tmp
                else:
                    self.ev.add_inplace(inner, tmp)
            if acc is not None:
                self.ev.rotate_vector_inplace(acc, g, self.gk)
            if inner is not None:
                if acc is None:
                    acc = inner
                else:
                    self.ev.add_inplace(acc, inner)
        if acc is None:  # cannot happen: the ||q||^2 column is never zero in a non-empty block
            raise RuntimeError("empty block")
        block.norm_term.scale = acc.scale  # same value (delta * q_L); avoids 1-ulp mismatches
        self.ev.add_plain_inplace(acc, block.norm_term)
        self.ev.rescale_to_next_inplace(acc)
        self._fix_scale(acc, self.sm.delta)
        return acc

    def _poly(self, coeffs: list[Any], u: Any, u2: Any, u3: Any, u4: Any) -> Any:
        """Step 2: sum_j coeffs[j] * u^j with per-slot coefficients, 3 levels (result at L-4)."""
        L = self.ctx.top
        delta = self.sm.delta
        t1 = self._mul_plain(u, coeffs[1])  # L-2
        t2 = self._mul_plain(u2, coeffs[2])  # L-3
        t3 = self._mul_plain(u3, coeffs[3])  # L-4
        t4 = self._mul_plain(u4, coeffs[4])  # L-4
        t5 = self._mul(self._mul_plain(u, coeffs[5]), u4)  # (L-2)x(L-3) -> L-4
        t6 = self._mul(self._mul_plain(u2, coeffs[6]), u4)  # (L-3)x(L-3) -> L-4
        t7 = self._mul(self._mul(self._mul_plain(u, coeffs[7]), u2), u4)  # -> L-3 -> L-4
        terms = [self._down(t1, L - 4), self._down(t2, L - 4), t3, t4, t5, t6, t7]
        for t in terms:
            self._fix_scale(t, delta)
        out = terms[0]
        for t in terms[1:]:
            self.ev.add_inplace(out, t)
        coeffs[0].scale = delta
        self.ev.add_plain_inplace(out, coeffs[0])
        return out

    def weighted_kernels(self, block: BlockPlaintexts, u: Any) -> Any:
        """Steps 2-3: alpha_i * exp(-D_i / 2 sigma^2) in every slot (level 0)."""
        k = self.sm.params.k
        u2 = self._mul(u, u)
        u3 = self._mul(u2, u)
        u4 = self._mul(u2, u2)
        P2 = self._poly(block.p2, u, u2, u3, u4)
        if k == 0:
            return P2
        P1 = self._poly(block.p1, u, u2, u3, u4)
        acc = self._mul(P2, P1)
        sq = self._mul(P1, P1) if k > 1 else None
        for j in range(1, k):
            acc = self._mul(acc, sq)
            if j < k - 1:
                sq = self._mul(sq, sq)
        return acc

    def evaluate(self, q_rot: list[Any]) -> Any:
        """Steps 1-4 over all blocks: one level-0 ciphertext whose slots sum to the prediction."""
        total = None
        for block in self.sm.blocks:
            u = self.distances(block, q_rot)
            part = self.weighted_kernels(block, u)
            if total is None:
                total = part
            else:
                self.ev.add_inplace(total, part)
        if sb.level_of(self.ctx, total) != 0:
            total = self._down(total, 0)
        return total


def gaussian_int(sigma: float) -> int:
    """One sample of round(N(0, sigma^2)) from the OS CSPRNG (Box-Muller on 2 x 53 random bits)."""
    if sigma <= 0:
        return 0
    u1 = (secrets.randbits(53) + 1) / float(1 << 53)
    u2 = secrets.randbits(53) / float(1 << 53)
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return int(round(sigma * z))


def finalize(
    sm: ServerModel, total: Any, public_key: Any, flood_sigma: float, output_noise_sd: float = 0.0
) -> tuple[int, np.ndarray, float]:
    """Step 5: re-randomise, flood, add the offset, and keep only what decrypts m_0.

    ``output_noise_sd`` (kcal/mol): an output defense (:mod:`protocols.krr.defense`, noise only --
    CKKS cannot round): fresh Gaussian noise added under encryption, so the client decrypts only
    the noisy prediction.

    Returns (c0_0, c1 words (NTT form mod q0), scale). The client decrypts
    m_0 = c0_0 + N^-1 sum_j c1_j s_j mod q0 and reads prediction = m_0 * N / (2 scale).
    """
    ctx = sm.ctx
    N = ctx.poly_degree
    q0 = ctx.primes[0]
    zero = seal.Ciphertext()
    seal.Encryptor(ctx.seal, public_key).encrypt_zero(ctx.parms_ids[0], zero)
    c = sb.level0_words(total, N)
    z = sb.level0_words(zero, N)
    inv_n = pow(N, -1, q0)
    # constant coefficient of c0 (+ that of the zero encryption's c0): N^-1 * sum of NTT values
    c00 = (int(np.sum(c[0] % np.uint64(1 << 32), dtype=np.uint64)) + (int(np.sum(c[0] >> np.uint64(32), dtype=np.uint64)) << 32))
    z00 = (int(np.sum(z[0] % np.uint64(1 << 32), dtype=np.uint64)) + (int(np.sum(z[0] >> np.uint64(32), dtype=np.uint64)) << 32))
    c0_0 = ((c00 + z00) * inv_n) % q0
    scale = float(total.scale) / 2.0**sm.alpha_shift
    offset = int(round(float(sm.model.y_offset) * 2.0 * scale / N))
    if 8.0 * flood_sigma > q0 / 4:
        raise RuntimeError("flooding noise would overflow the last prime: lower flood_bits")
    c0_0 = (c0_0 + offset + gaussian_int(flood_sigma)) % q0
    if output_noise_sd > 0:  # output defense: N(0, sd^2) in prediction units (m_0 N / (2 scale))
        c0_0 = (c0_0 + gaussian_int(output_noise_sd * 2.0 * scale / N)) % q0
    c1 = (c[1] + z[1]) % np.uint64(q0)  # both < q0 < 2^61: no overflow
    return c0_0, c1, scale


def exact_slot_values(sm: ServerModel, q: np.ndarray) -> list[np.ndarray]:
    """Per block, the slot values the circuit approximates: alpha_i / 2^shift * p(u_i)^(2^k)."""
    m = sm.model
    p = sm.params
    c = exp_poly_coefficients()
    D = ((m.X_train - q[None, :]) ** 2).sum(axis=1)
    u = -D / (2.0 * float(m.sigma) ** 2 * 2.0**p.k)
    vals = m.dual_coef / 2.0**sm.alpha_shift * np.polynomial.polynomial.polyval(u, c) ** (2**p.k)
    S = sm.ctx.slots
    return [vals[i : i + S] for i in range(0, m.n_train, S)]


def exact_circuit_value(sm: ServerModel, q: np.ndarray) -> float:
    """The real-number value the circuit approximates (with the polynomial, without CKKS noise)."""
    return float(sum(v.sum() for v in exact_slot_values(sm, q))) * 2.0**sm.alpha_shift
