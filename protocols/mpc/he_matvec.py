"""Matrix-vector product X q with lattice HE (BFV, coefficient packing in the manner of Cheetah).

The *server* (sender) holds X (n_rows x d, entries < 2^x_bits), the *client* (receiver, key
owner) holds q (d entries < 2^x_bits). Output: additive shares modulo 2^M of ``X q - delta``
with a small public-bounded ``0 <= delta <= 2 E`` (``E = plan.error_bound``, a few hundred units;
callers that need ``X q`` exactly use the OT-based :mod:`protocols.mpc.gilboa`). Cost does not grow
with the product's precision: at n_rows = 16,384, d = 351 about 9 MB and one round trip, where the
OT-based vector OLE sends ~850 MB.

Packing (no rotations, no relinearisation: only plaintext-ciphertext products). With ring degree
n and a block of n_i columns and n_o = floor(n / n_i) rows, the client's polynomial is
``Q_b(X) = sum_{j < n_i} q_{b n_i + j} X^j`` and the server's is
``W_{o,b}(X) = sum_{r < n_o} sum_{j < n_i} x_{o n_o + r, b n_i + j} X^{r n_i + n_i - 1 - j}``.
In ``Q_b W_{o,b}`` (mod X^n + 1) coefficient ``r n_i + n_i - 1`` is ``sum_j x_{., b n_i + j} q_{b n_i + j}``
(the negacyclic wrap-around only lands below n_i - 1), so summing over the column blocks b gives
n_o inner products per output ciphertext. n_i is chosen to minimise the bytes sent
(``ceil(d / n_i)`` ciphertexts up, ``ceil(n_rows / n_o)`` down).

Protocol (client = receiver, server = sender):
  1. client: fresh BFV keys (t = 2^M); sends the public key and, per column block b, a symmetric
     (seeded, half-size) encryption of Q_b.
  2. server: per output block o, ``ct_o = sum_b Enc(Q_b) * W_{o,b}`` (NTT domain, plaintexts
     prepared once per model by :func:`prepare`);
  3. server: re-randomises and masks: ``ct_o += Enc_pk(0)`` (a fresh c1 the client cannot divide
     out: otherwise ``c1 W`` would reveal W), ``+ Delta R_o`` (R_o uniform mod 2^M in *every*
     coefficient, so the client learns nothing from the non-target coefficients), ``+ (e_f, 0)``
     with e_f uniform in [-2^f, 2^f], f = 40 + log2(noise bound) (noise flooding: the product's
     noise ``v W`` depends on W);
  4. server: switches ct_o down to the 60-bit prime q1 (SEAL's modulus switching, a deterministic
     function of the flooded ciphertext) and sends it; its share is ``-R_o - E`` at the targets;
  5. client: decrypts and reads the targets: ``X q + R + e`` with |e| <= E from the last switch
     (rounding of c1 s: ``E = ceil((t / q1)(1 + n) / 2) + 1``); its share is that value.

Threat model: semi-honest. The server sees only RLWE ciphertexts and a public key (IND-CPA under
RLWE, 128-bit parameters by the HE standard). The client sees, per output ciphertext, a decryption
equal to uniformly masked values, and noise that is statistically independent of X up to 2^-40 per
coefficient (flooding); c1 is fresh from the server's ``Enc_pk(0)``. A *malicious* client could
send ill-formed ciphertexts (huge noise, keys that are not RLWE samples) and learn more than its
share; that is outside this module's model (see docs/double-blind.md, "malicious client").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.mpc import bfv
from protocols.mpc.owner_cache import OwnerCache
from protocols.mpc.context import PartyContext as Party
from secureml.errors import DataError, ProtocolError

U64 = np.uint64
STAT_SECURITY = 40  # bits of statistical distance for noise flooding
# bytes of one uploaded (seeded, 3-prime c0) and one returned (2 polys, 1 prime) ciphertext,
# as SEAL serialises them; only their ratio steers the packing choice
_UP_BYTES, _DOWN_BYTES = 3, 2


@dataclass(frozen=True)
class HEPlan:
    """Public packing and noise plan, derived identically by both sides from public sizes."""

    n_rows: int
    d: int
    x_bits: int
    ring_bits: int
    n_i: int  # columns per block
    n_o: int  # rows per output ciphertext
    blocks: int  # ceil(d / n_i): ciphertexts the client sends
    outputs: int  # ceil(n_rows / n_o): ciphertexts the server returns
    flood_bits: int
    error_bound: int  # |e| <= E after the last modulus switch (in units of the product)

    @property
    def targets(self) -> np.ndarray:
        """Coefficient index of row r's inner product inside an output ciphertext."""
        return np.arange(self.n_o, dtype=np.int64) * self.n_i + self.n_i - 1


def make_plan(n_rows: int, d: int, x_bits: int, ring_bits: int) -> HEPlan:
    """Packing that minimises traffic, and the noise budget check (ProtocolError if it does not fit)."""
    n = bfv.POLY_DEGREE
    if not (1 <= n_rows and 1 <= d <= n and 1 <= x_bits <= 30 and 8 <= ring_bits <= 58):
        raise ProtocolError(f"lattice matvec: unsupported sizes rows={n_rows} d={d} x_bits={x_bits} M={ring_bits}")
    best = None
    for n_i in range(1, d + 1):
        n_o = n // n_i
        blocks, outputs = -(-d // n_i), -(-n_rows // n_o)
        cost = (_UP_BYTES * blocks + _DOWN_BYTES * outputs, outputs)
        if best is None or cost < best[0]:
            best = (cost, n_i, n_o, blocks, outputs)
    _, n_i, n_o, blocks, outputs = best
    # noise before flooding: the client's fresh noise v (|v| <= NOISE_MAX, plus 1/2 from BFV's
    # scaled encoding) times W (n_o n_i coefficients < 2^x_bits), summed over the blocks
    v_noise = (bfv.NOISE_MAX + 1) * ((1 << x_bits) - 1) * n_o * n_i * blocks
    flood_bits = math.ceil(math.log2(v_noise)) + STAT_SECURITY
    ctx_bits = sum(bfv.COEFF_BITS[:-1])
    q1_bits = bfv.COEFF_BITS[0]
    # after flooding: |noise| < 2^(flood_bits + 1) (flood + v W + Enc_pk(0) noise); decryption at
    # the data level needs it below Q / (2 t)
    if flood_bits + 2 >= ctx_bits - ring_bits - 1:
        raise ProtocolError(
            f"lattice matvec: noise budget exceeded (flooding {flood_bits} bits, ring {ring_bits} bits); "
            "use the OT cross term")
    # after switching to q1: noise <= 2^(flood_bits+1) q1 / Q + (1 + n) / 2; decryption error in
    # units of the product <= noise * t / q1 (+ 1/2 from rounding)
    switched = 2.0 ** (flood_bits + 1 + q1_bits - ctx_bits) + (1 + n) / 2
    error_bound = math.ceil(switched * 2.0 ** (ring_bits - q1_bits) + 0.5)
    # callers (squared distances) rely on X q - delta staying far from wrapping around 2^M
    if 4 * error_bound >= d * ((1 << (x_bits + 1)) - 1):
        raise ProtocolError("lattice matvec: decryption error too large for these sizes; use the OT cross term")
    return HEPlan(n_rows, d, x_bits, ring_bits, n_i, n_o, blocks, outputs, flood_bits, error_bound)


class PreparedMatrix:
    """The server's plaintext polynomials W_{o,b}, NTT-transformed once per model (query-independent)."""

    def __init__(self, X: np.ndarray, x_bits: int, ring_bits: int) -> None:
        X = np.ascontiguousarray(X, dtype=U64)
        if X.ndim != 2:
            raise DataError(f"he_matvec needs a 2-D matrix, got shape {X.shape}")
        if X.size and int(X.max()) >> x_bits:
            raise DataError(f"matrix entries do not fit in {x_bits} bits")
        self.plan = plan = make_plan(X.shape[0], X.shape[1], x_bits, ring_bits)
        self.ctx = ctx = bfv.context(ring_bits)
        n, n_i, n_o = ctx.n, plan.n_i, plan.n_o
        Xp = np.zeros((plan.outputs * n_o, plan.blocks * n_i), dtype=U64)
        Xp[: X.shape[0], : X.shape[1]] = X
        # (o, r, b, j) -> (o, b, r, j), j reversed, flattened to coefficient r n_i + n_i - 1 - j
        W = Xp.reshape(plan.outputs, n_o, plan.blocks, n_i).transpose(0, 2, 1, 3)[..., ::-1]
        W = W.reshape(plan.outputs, plan.blocks, n_o * n_i)
        coeffs = np.zeros(n, dtype=U64)
        self.pts: list[list[Any]] = []
        for o in range(plan.outputs):
            row = []
            for b in range(plan.blocks):
                coeffs[: n_o * n_i] = W[o, b]
                pt = ctx.plaintext(coeffs)
                ctx.evaluator.transform_to_ntt_inplace(pt, ctx.first_parms_id)
                row.append(pt)
            self.pts.append(row)


_PREPARED: OwnerCache[PreparedMatrix] = OwnerCache()


def prepare(X: np.ndarray, x_bits: int, ring_bits: int, owner: Any = None) -> PreparedMatrix:
    """Prepared plaintexts for X, cached per ``owner`` object (e.g. the served model's parameters)."""
    def fits(pm: PreparedMatrix) -> bool:
        return (pm.plan.n_rows, pm.plan.d, pm.plan.x_bits, pm.plan.ring_bits) == (*X.shape, x_bits, ring_bits)

    return _PREPARED.get(owner, lambda: PreparedMatrix(X, x_bits, ring_bits), fits)


def _ct_limit(ctx: bfv.BFVContext) -> int:
    # an uncompressed size-2 ciphertext at the data level plus headers: the most a valid one takes
    return 2 * len(ctx.data_primes) * ctx.n * 8 + 4096


def _agree(p: Party, plan: HEPlan, sender: bool) -> None:
    p.check_peer("he-matvec", {"rows": plan.n_rows, "d": plan.d, "x_bits": plan.x_bits,
                               "ring_bits": plan.ring_bits, "n_i": plan.n_i, "poly": bfv.POLY_DEGREE},
                 announce=sender)


def matvec_sender(p: Party, prepared: PreparedMatrix) -> np.ndarray:
    """Server's share (n_rows,) mod 2^M of ``X q - delta`` (steps 2-4 of the module docstring)."""
    plan, ctx = prepared.plan, prepared.ctx
    if getattr(p, "seed", None) is not None:  # seeded (test) party: reproducible SEAL randomness too;
        ctx = bfv.context(plan.ring_bits, seed=p.seed)  # same parameters, so the plaintexts fit
    s, ev = ctx.s, ctx.evaluator
    M = plan.ring_bits
    _agree(p, plan, sender=False)
    # 1. (client) public key and the encrypted query blocks
    pk = ctx.load_public_key(p.ch.recv(max_bytes=4 * len(ctx.primes) * ctx.n * 8 + 4096))
    enc_pk = s.Encryptor(ctx.ctx, pk)
    cts = []
    for _ in range(plan.blocks):
        ct = ctx.load_ciphertext(p.ch.recv(max_bytes=_ct_limit(ctx)))
        ev.transform_to_ntt_inplace(ct)
        cts.append(ct)
    R = p.rng.random_below((plan.outputs, ctx.n), M)
    share = np.empty(plan.outputs * plan.n_o, dtype=U64)
    tgt = plan.targets
    acc, tmp = s.Ciphertext(ctx.ctx), s.Ciphertext(ctx.ctx)
    for o in range(plan.outputs):
        # 2. inner products for n_o rows
        row = prepared.pts[o]
        started = False
        for b in range(plan.blocks):
            if row[b].is_zero():
                # an all-zero block of X (e.g. Coulomb-matrix padding columns no training molecule
                # fills): its product is zero, and SEAL refuses it ("result ciphertext is
                # transparent"); the output is re-randomised below either way
                continue
            if not started:
                ev.multiply_plain(cts[b], row[b], acc)
                started = True
            else:
                ev.multiply_plain(cts[b], row[b], tmp)
                ev.add_inplace(acc, tmp)
        if started:
            ev.transform_from_ntt_inplace(acc)
        else:  # these rows of X are all zero: start from a fresh encryption of zero
            enc_pk.encrypt_zero(acc)
        # 3. re-randomise c1, mask every coefficient, flood the noise
        zero = s.Ciphertext(ctx.ctx)
        enc_pk.encrypt_zero(zero)
        ev.add_inplace(acc, zero)
        ev.add_plain_inplace(acc, ctx.plaintext(R[o]))
        ev.add_inplace(acc, ctx.flood_ciphertext(p.rng, plan.flood_bits))
        # 4. down to q1, send; share at the targets
        while list(acc.parms_id()) != list(ctx.last_parms_id):
            ev.mod_switch_to_next_inplace(acc)
        p.ch.send(ctx.to_bytes(acc))
        share[o * plan.n_o:(o + 1) * plan.n_o] = (U64(0) - R[o, tgt] - U64(plan.error_bound))
    mask = U64((1 << M) - 1)
    return share[: plan.n_rows] & mask


def matvec_receiver(p: Party, q: np.ndarray, x_bits: int, n_rows: int, ring_bits: int) -> np.ndarray:
    """Client's share (n_rows,) mod 2^M of ``X q - delta`` (steps 1 and 5 of the module docstring)."""
    q = np.ascontiguousarray(q, dtype=U64).ravel()
    plan = make_plan(n_rows, q.shape[0], x_bits, ring_bits)
    if q.size and int(q.max()) >> x_bits:
        raise DataError(f"query entries do not fit in {x_bits} bits")
    ctx = bfv.context(ring_bits, seed=getattr(p, "seed", None))
    s = ctx.s
    _agree(p, plan, sender=True)
    # 1. keys (fresh per call: nothing about them outlives the query), public key, query blocks
    keygen = s.KeyGenerator(ctx.ctx)
    sk = keygen.secret_key()
    pk = s.PublicKey()
    keygen.create_public_key(pk)
    p.ch.send(ctx.to_bytes(pk))
    enc = s.Encryptor(ctx.ctx, sk)
    qp = np.zeros(plan.blocks * plan.n_i, dtype=U64)
    qp[: q.shape[0]] = q
    coeffs = np.zeros(ctx.n, dtype=U64)
    for b in range(plan.blocks):
        coeffs[: plan.n_i] = qp[b * plan.n_i:(b + 1) * plan.n_i]
        p.ch.send(ctx.to_bytes(enc.encrypt_symmetric(ctx.plaintext(coeffs))))
    # 5. decrypt the masked inner products
    dec = s.Decryptor(ctx.ctx, sk)
    out = np.empty(plan.outputs * plan.n_o, dtype=U64)
    tgt = [int(k) for k in plan.targets]
    pt = s.Plaintext()
    for o in range(plan.outputs):
        ct = ctx.load_ciphertext(p.ch.recv(max_bytes=_ct_limit(ctx)), level="last")
        dec.decrypt(ct, pt)
        cc = pt.coeff_count()  # SEAL trims zero leading coefficients
        out[o * plan.n_o:(o + 1) * plan.n_o] = [pt.data(k) if k < cc else 0 for k in tgt]
    return out[:n_rows] & U64((1 << ring_bits) - 1)
