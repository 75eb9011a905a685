"""Double-blind prediction with compact random-feature models (prediction cost independent of N).

    prediction(molecule) = y_offset + w . phi(molecule)

phi is a *public* feature map (random Fourier/Cauchy features of a global representation, or the
qml-lightning-style local model: FCHL19 -> public PCA basis -> structured random features -> cos ->
sum over atoms, plus per-element atom counts). The query owner computes phi itself; only the weights
w (and offset, per-element energies) are secret. One Gilboa inner product finishes the job.

Threat model (no dealer): the client holds phi; the server holds w, y_offset. Public: the feature
map (random matrices, PCA basis fitted on *public* molecules, biases -- none derived from training
labels), F, the fixed-point format, a power-of-two bound on the features and on the prediction
(``out_bits``). The client learns w . phi + y_offset; the server learns nothing.
* ``security="semi-honest"``: both parties follow the protocol.
* ``security="client-malicious"`` (what ``secureml serve --security auto`` picks for compact models): the server is semi-honest,
  the client may send any bytes. Its only inputs are the choice bits of the step-2 COTs (it is
  never an OT sender and sends no value the server uses), and the OT extension it receives from
  is checked piece by piece (:mod:`protocols.ot.consistency`) before any OT of the piece is used,
  so its choices define one phi' in the public domain [lo, lo + 2^(x_bits - F)) per feature.
  Pooled OTs were checked the same way when the pool was made, before the session, so their
  random choices r were fixed before the client sends d: b = d xor r is one bit string whatever
  it sends; each pool entry serves once (:mod:`protocols.ot.pool`).
  Whatever it sends, each query yields w . phi' + y_offset (mod 2^out_bits, i.e. f(phi') for the
  phi' its bits encode) or an abort. This is the ideal functionality of a prediction service:
  F + 1 chosen phi' reveal w through *any* prediction interface (limiting that is the job of
  rate limits and output defenses, docs/attacks.md); what the protocol adds is nothing more.
* Rounded corrections (public ``ot_round_bits`` = L > 0, ``serve --compact-corrections rounded``,
  protocol 30; pooled sessions only): the correction of bit i drops its lowest max(0, L - i) bits
  (:func:`protocols.mpc.gilboa.inner_products_pipelined`), so every correction needs
  out_bits - max(i, L) bits -- 32 instead of 30-49 for the RFF model (4 bytes per OT). For a chosen
  bit the client then misses (tau mod 2^c), tau = a0 + w_enc_j - a1: uniform to it, because a0 is
  the pad of the pooled OT it did not choose (never seen, never reused), and independent of the
  kept high bits of tau. It adds the known mean back. Each query yields
  **f(phi') + E** -- E a sum of independent centred uniform terms whose law depends only on the
  client's own bits -- or an abort: a noisy copy of f(phi'), so nothing beyond it (the server's
  view and checks are unchanged; a d is still one b, replays are still refused). L is the largest
  value whose worst-case error (every bit chosen) stays below tol / 2 at six sigma, the budget each
  rounding term of :func:`plan` has (:func:`round_bits`); the first session of a ticket (inline
  extension) stays exact.
* Precorrected pools (``ot_pool_precorrect``, ``serve --compact-precorrect``, protocol 30): the
  refill after a reply also turns the new pooled OTs into COTs whose correlations are the model's
  own w_enc_j (query-major blocks: row, bit i, feature j; :func:`protocols.ot.pool.precorrect_send`),
  sending the corrections then -- after the checked extension fixed r, before any query. A later
  session sends only d = b xor r; the server's share of each COT is x0 (d = 0) or -x0 - w_enc_j
  (d = 1), the client's t or -t (t = x0 + r w_enc_j): their difference is b w_enc_j for
  b = d xor r, whatever d is. Per entry the client holds t only, one-time padded by x0 (the pad it
  did not choose when r = 1; x0 itself when r = 0, with the correction masked by the unchosen
  pad), so it learns nothing at the refill and f(phi') exactly per query. Reuse would give x0 and
  -x0 - w_enc_j, i.e. the weight, so entries are single use as before (cursor, burnt first,
  exclusive ticket) and a precorrected pool is never corrected again
  (:func:`protocols.ot.pool.cot_send_pooled` refuses it). The bytes per session are unchanged
  (the corrections travel after the previous reply); only what remains on the critical path shrinks.
  With rounded corrections as well, the refill sends them at the rounded widths: the r = 1 entries
  then carry the uniform error (sign by b), re-centred by the client, f(phi') + E as above.

Protocol (model owner = role 0 = OT sender, query owner = role 1 = OT receiver; both run
:func:`setup` and :func:`online`, which carry the step numbers):
  0. Session start (:func:`setup`): a SoftSpoken OT extension
     (:mod:`protocols.ot.softspoken`, 32 bits per OT instead of IKNP's 128), resumed from an earlier
     session's base OTs when the client holds a ticket (:mod:`protocols.ot.session`); the server
     announces ``out_bits`` and whether the F * x_bits OTs are extended now, input-independent
     (``precompute``: an offline/online split, one extra bit per OT), or within step 2; for a
     resumed client-malicious ticket it also announces its checked random-OT pool
     (:mod:`protocols.ot.pool`: id, position, size).
  1. Client: phi' = (phi - lo) 2^F (non-negative integers, x_bits bits), refused if out of bounds.
  2. Gilboa products in Z_2^out_bits: for bit i of phi'_j a COT with the server's
     w_enc_j = round(w_j 2^fw) as correlation, trimmed to out_bits - i bits (bit i is scaled by
     2^i, so higher bits of its correction never matter; pooled with ``ot_round_bits`` = L, also
     rounded to out_bits - max(i, L) bits); shares of sum_j w_enc_j phi'_j. All
     x_bits * F COTs run as one pipelined exchange (the Gilboa core's
     :func:`protocols.mpc.gilboa.inner_products_pipelined`). With a pool both sides hold (the
     client names its id and position in the parameter echo; the server refuses any position but
     its own cursor), the COTs are the pool's next entries, derandomised: the client sends
     d = b xor r, the server one correction per OT -- no extension inside the session.
  5. After the reply (:func:`after_reply`, the client asked and the server offered): both refill
     the ticket's pool with as many checked random OTs as this session used (the first session of
     a ticket extends inline in step 2 and makes its pool here).
  3. Server adds lo 2^F sum(w_enc) + y_offset 2^(F+fw) to its share and sends it.
  4. Client adds its share, sign-extends from out_bits bits, decodes: the prediction.

Error budget (:func:`plan`): rounding phi to 2^-F and w to 2^-fw adds independent uniform errors;
F and fw are chosen so that each term's standard deviation times six stays below tol / 2
(tol = 5e-3 kcal/mol by default), i.e. |error| < 5e-3 / sqrt(2) at six sigma, well inside the
0.01 kcal/mol target; the ring arithmetic itself is exact (out_bits holds 4x the largest
calibration prediction). Rounded corrections add a third independent term, also below tol / 2 at
six sigma (:func:`round_bits`): |error| < sqrt(3) tol / 2 = 4.3e-3 at six sigma.

Traffic floor of this path (``python -m bench.compact_floor``, docs/compact-models.md, protocol 30):
a resumed RFF query is 81,920 OTs, so d (10,240 B) plus one correction per OT: 438,272 B exact,
404,480 B bit-packed, 327,680 B rounded (326,144 B rounded and bit-packed) -- at best ~3.7x the
semi-honest lattice session's 91.1 kB; radix-2^m table OTs send more (2^m - 1 corrections per m
bits), the proven lattice ciphertext (:mod:`protocols.mpc.bfv_proof`) ~8.6 MB.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from protocols.krr.chain import CLIENT, SERVER
from protocols.krr import defense
from protocols.krr.params import PublicParams
from protocols.mpc.context import PartyContext
from protocols.mpc.gilboa import (bit_groups, inner_products_pipelined, inner_products_precorrected,
                                  precorrected_layout, rounded_groups, rounding_sd)
from protocols.ot import pool as ot_pool
from protocols.ot import session as ot_session
from secureml.errors import ModelError, ProtocolError, SecureMLError
from secureml.models.pipeline import MolecularModel

U64 = np.uint64
#: extend the OTs before the online phase (offline/online split) or within it (one pipelined pass,
#: ~10-20% faster end to end here); a served model's ``precompute_ot`` field overrides it
PRECOMPUTE_OT = False
#: client-malicious sessions keep a checked random-OT pool with the ticket, refilled after each
#: reply, so a resumed session's online part is Beaver's derandomisation alone (protocols.ot.pool)
OT_POOL = True
#: client-malicious pools made *precorrected*: the refill after a reply also sends the next
#: session's corrections (the model's w_enc_j as COT correlations), so a resumed session sends only
#: d online; the same bytes per session, moved after the previous reply (a served model's
#: ``ot_pool_precorrect`` field overrides it)
OT_POOL_PRECORRECT = False
#: error budget of the fixed-point plan (kcal/mol for energies): six-sigma bound on |error| x sqrt(2)
DEFAULT_TOL = 5e-3


def linear_parts(mm: Any) -> tuple[np.ndarray, float, Any]:
    """Split a fitted compact MolecularModel into (secret weights, secret offset, public model)."""
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
    public = MolecularModel(mm.representation, public_est, mm.property_name)
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
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "public.npz"
        path.write_bytes(blob)
        return MolecularModel.load(path)


def feature_bound(public_model: Any, phi_calibration: np.ndarray) -> float:
    """Largest |phi_j| the service accepts (public; queries beyond it are refused up front).

    Random Fourier/Cauchy features are cosines scaled by sqrt(2/F): that bound is exact. Local
    models sum one cosine per atom (and count atoms), so their features grow with the molecule:
    twice the largest calibration value (molecules up to about twice the calibration's size).
    """
    est = public_model.estimator
    if not hasattr(est, "self_energies_") and hasattr(est, "W_"):
        return math.sqrt(2.0 / est.W_.shape[1])
    return 2.0 * float(np.max(np.abs(phi_calibration)))


def plan(phi_train: np.ndarray, w: np.ndarray, pred_span: float, tol: float = DEFAULT_TOL,
         bound: float | None = None) -> dict[str, Any]:
    """Public fixed-point plan: feature bounds (powers of two), F and the weight precision fw.

    The bounds cover ``[-bound, bound]`` (default: the range of ``phi_train``). F is the smallest
    precision whose rounding error on w.phi stays below ``tol``/2 with six-sigma confidence
    (independent roundings: sd = ||w|| 2^-F / sqrt(12)); fw likewise with the largest ||phi|| seen.
    Publishing F therefore reveals log2 ||w|| to within one bit (public).
    """
    phi_train = np.atleast_2d(phi_train)
    mn, mx = float(phi_train.min()), float(phi_train.max())
    if bound is not None:  # a bound covering every query (exact for cosines), used as it is
        mn, mx = min(mn, -bound), max(mx, bound)
    else:  # calibration values only: a 1e-4 margin
        mn, mx = mn * 1.0001, mx * 1.0001
    lo = 0.0 if mn >= 0 else -(2.0 ** math.ceil(math.log2(-mn)))
    span = max(mx - lo, 1e-12)
    hi = lo + 2.0 ** math.ceil(math.log2(span))
    # Rounding errors are independent and uniform, so the error of w.phi has standard deviation
    # ||w||_2 2^-F / sqrt(12); six of those stay below tol/2 (and likewise for the weights).
    frac = int(max(8, math.ceil(math.log2(6.0 * float(np.linalg.norm(w)) / math.sqrt(12.0) / (tol / 2)))))
    phi_norm = float(np.linalg.norm(phi_train, axis=1).max()) * 2.0  # margin for unseen molecules
    fw = int(max(8, math.ceil(math.log2(6.0 * phi_norm / math.sqrt(12.0) / (tol / 2)))))
    y_bits = int(math.ceil(math.log2(max(pred_span, 1.0) * 4)))
    if frac + fw + y_bits > 62 or frac > 40:
        raise ModelError(
            f"the 64-bit ring cannot hold this model at {tol} precision ({frac}+{fw}+{y_bits} bits)"
        )
    return {"feature_lo": lo, "feature_hi": hi, "frac_bits": frac, "weight_frac_bits": fw}


def output_bits(predictions: np.ndarray, pp: PublicParams) -> int:
    """Ring width for the shares: 4x the largest |prediction| seen (offset included), sign bit.

    Public (a power-of-two bound on predictions). Trimming the ring from 64 bits saves
    64 - out_bits bits of every COT correction.
    """
    bound = float(np.max(np.abs(predictions))) if np.size(predictions) else 1.0
    y_bits = int(math.ceil(math.log2(max(bound, 1.0) * 4)))
    return int(min(64, pp.frac_bits + pp.weight_frac_bits + y_bits + 1))


def round_bits(pp: PublicParams, out_bits: int, tol: float = DEFAULT_TOL) -> int:
    """Public L of rounded corrections (``PublicParams.ot_round_bits``) for pooled sessions: the
    largest L whose rounding error (:func:`protocols.mpc.gilboa.rounding_sd`, every one of the
    n * x_bits bits of a query chosen: the worst case) stays below tol / 2 at six sigma -- the
    budget each of the plan's two rounding terms has (:func:`plan`) -- lowered so that the kept
    width out_bits - L is a whole number of bytes; 0 (exact corrections) if that saves nothing."""
    terms = pp.n_features * pp.x_bits
    scale = 2.0 ** (pp.frac_bits + pp.weight_frac_bits)
    l_max = int(math.floor(math.log2(tol / 2 / 6 * scale / math.sqrt(terms / 12.0))))
    l_max = min(l_max, pp.frac_bits + pp.weight_frac_bits, out_bits - 8)
    if l_max <= 0:
        return 0
    L = out_bits - 8 * (-(-(out_bits - l_max) // 8))
    exact = sum((b - a) * ((w + 7) // 8) for a, b, w in bit_groups(pp.x_bits, out_bits))
    rounded = sum((b - a) * ((kb + 7) // 8) for a, b, _, kb in rounded_groups(pp.x_bits, out_bits, max(L, 0)))
    return L if L > 0 and rounded < exact else 0


def rounding_error_sd(pp: PublicParams) -> float:
    """Worst-case standard deviation of a pooled query's rounding error, in prediction units."""
    return rounding_sd(pp.n_features * pp.x_bits, pp.ot_round_bits) / 2.0 ** (pp.frac_bits + pp.weight_frac_bits)


def _check_out_bits(out_bits: Any, pp: PublicParams) -> int:
    if not isinstance(out_bits, int) or not pp.frac_bits + pp.weight_frac_bits + 2 <= out_bits <= 64:
        raise ProtocolError(f"bad output ring width {out_bits!r} for this model")
    return out_bits


def _mask(bits: int) -> np.uint64:
    return U64((1 << bits) - 1) if bits < 64 else U64(0xFFFFFFFFFFFFFFFF)


def setup(party: PartyContext, pp: PublicParams, k: int, *, out_bits: int = 64,
          softspoken_k: int = ot_session.DEFAULT_K, precompute: bool = PRECOMPUTE_OT,
          keep_session: bool = True, store: ot_session.TicketStore | None = None,
          server_key: str = "local", resume: bool = True, ot_pool: bool = OT_POOL,
          ot_pool_pre: bool = OT_POOL_PRECORRECT) -> dict[str, Any]:
    """Step 0, both roles: the OT session (resumed if the client holds a ticket) and, if the
    server asks for it, the offline extension of the k * F' * x_bits OTs.

    Server (role 0): ``out_bits``, ``softspoken_k``, ``precompute`` and ``keep_session`` (False:
    keep no OT state and resume none, so the server cannot link sessions) are its choices and
    travel to the client; ``ot_pool``: offer the checked random-OT pool kept with the ticket
    (client-malicious, without ``precompute``). Client (role 1): ``server_key`` names the server's
    ticket, ``resume`` presents it. Returns the server's {resumed, setup_s, extend_s, out_bits}, or the client's
    {out_bits, resumed, softspoken_k, ot_setup_s, extend_s, ot_setup_bytes, extend_bytes}.
    """
    ch = party.ch
    b0 = ch.bytes_sent + ch.bytes_received
    if party.role == SERVER:
        # client-malicious: the session holds its ticket's Delta exclusively and gives it back
        # only after it succeeded (a failure drops it: ot_session.server_start)
        # the checked random-OT pool (protocols.ot.pool) needs the ticket's state held exclusively
        offered = bool(ot_pool and pp.checked_ot and keep_session and not precompute)
        pre = bool(offered and ot_pool_pre)
        extra = {"out_bits": out_bits, "precompute": precompute, "ot_pool": offered}
        if pre:
            extra["ot_pool_pre"] = True
        info = ot_session.server_start(party, store, k=softspoken_k, keep=keep_session,
                                       exclusive=pp.checked_ot, extra=extra)
        info["_ot"] = {"offered": offered, "state": info.pop("state"), "pre": pre}
        # client-malicious: every extension piece the client (OT receiver) sends is checked
        # before its OTs are used (:mod:`protocols.ot.consistency`); its phi bits are well defined
        party.ot_sender.checked = pp.checked_ot
    else:
        reply = ot_session.client_start(party, f"{server_key}/{pp.public_model_sha256}", resume=resume)
        out_bits, precompute = _check_out_bits(reply.get("out_bits"), pp), reply.get("precompute", True)
        party.ot_receiver.checked = pp.checked_ot  # the server verifies a proof per extension piece
    b1 = ch.bytes_sent + ch.bytes_received
    t0 = time.perf_counter()
    if precompute:
        engine = party.ot_sender if party.role == SERVER else party.ot_receiver
        engine.precompute(k * pp.n_features * pp.x_bits)
    extend_s = time.perf_counter() - t0
    if party.role == SERVER:
        return {**info, "extend_s": extend_s, "out_bits": out_bits}
    return {"out_bits": out_bits, "resumed": bool(reply.get("resumed")), "softspoken_k": reply["k"],
            "ot_setup_s": reply["setup_s"], "extend_s": extend_s,
            "ot_setup_bytes": b1 - b0, "extend_bytes": ch.bytes_sent + ch.bytes_received - b1,
            # the OT pool (secret state: popped by the caller before anything is reported)
            "_ot": {"offered": bool(reply.get("ot_pool")), "state": reply.get("state"),
                    "server_pool": reply.get("pool"), "pre": reply.get("ot_pool_pre") is True}}


def online(party: PartyContext, pp: PublicParams, k: int, out_bits: int = 64, *,
           w: np.ndarray | None = None, y_offset: float = 0.0, phi: np.ndarray | None = None,
           ot: dict[str, Any] | None = None) -> np.ndarray | None:
    """Steps 1-4 for k queries, both roles: the server (role 0) passes its weights ``w`` and
    ``y_offset``, the client (role 1) its features ``phi`` (k, F') and gets the k predictions.
    ``ot``: :func:`setup`'s ``_ot`` (the ticket's OT pool); with it the step-2 COTs come from the
    pool when both sides hold the same one, and the refill wanted after the reply is noted in it
    for :func:`after_reply`."""
    n = pp.n_features
    if party.role == SERVER:
        w_enc = np.rint(w * float(1 << pp.weight_frac_bits))
        if np.abs(w_enc).max() >= 2.0**62:
            raise ModelError("weights too large for the fixed-point plan")
        w_enc = w_enc.astype(np.int64).view(U64)
        n = w_enc.shape[0]
    else:
        # 1. phi' = (phi - lo) 2^F, refused if out of bounds
        phi = np.atleast_2d(phi)
        k, n = phi.shape
        enc = pp.encode_features(phi, "query features")
    if ot is not None:  # what a precorrected refill after the reply needs (its layout, the server's w_enc)
        ot["layout"] = (n, pp.x_bits, out_bits, pp.ot_round_bits)
        if party.role == SERVER:
            ot["w_enc"] = w_enc
    pool = _agree_pool(party, ot, {"op": "linear-ip", "k": k, "n": n, "x_bits": pp.x_bits, "out_bits": out_bits},
                       k * n * pp.x_bits)
    # 2. Gilboa products in Z_2^out_bits: the client chooses with the bits of phi', the server
    #    holds the correlations w_enc; one pipelined exchange
    pre = pool is not None and pool.pre  # the pool's own kind decides (never a correction under shares)
    if party.role == SERVER:
        if pre:
            share = inner_products_precorrected(party, CLIENT, x=w_enc, y_bits=pp.x_bits, ring_bits=out_bits, k=k,
                                                pool=pool, round_bits=pp.ot_round_bits)
        else:
            share = inner_products_pipelined(party, CLIENT, x=w_enc, y_bits=pp.x_bits, ring_bits=out_bits, k=k,
                                             pool=pool, round_bits=pp.ot_round_bits)
        # 3. add lo 2^F sum(w_enc) + y_offset 2^(F+fw) and send the share
        lo_int = int(round(pp.feature_lo * (1 << pp.frac_bits)))
        corr = (lo_int * int(w_enc.view(np.int64).sum())) % (1 << 64)
        off = int(round(y_offset * 2.0 ** (pp.frac_bits + pp.weight_frac_bits))) % (1 << 64)
        share = (share + U64(corr) + U64(off)) & _mask(out_bits)
        # output defense (noise, rounding: protocols.krr.defense) before the client can reconstruct
        if pp.output_defense:
            out = defense.server_output(party, pp.output_defense, [int(x) for x in share], out_bits,
                                        pp.frac_bits + pp.weight_frac_bits)
            if out is None:
                return None
            share = np.array(out, dtype=U64)
        party.ch.send_array(share)
        return None
    if pre:
        mine = inner_products_precorrected(party, CLIENT, y=enc, y_bits=pp.x_bits, ring_bits=out_bits, pool=pool,
                                           round_bits=pp.ot_round_bits)
    else:
        mine = inner_products_pipelined(party, CLIENT, y=enc, y_bits=pp.x_bits, ring_bits=out_bits, pool=pool,
                                        round_bits=pp.ot_round_bits)
    # 4. add the server's share, sign-extend from out_bits bits, decode
    if pp.output_defense:  # rounded answers (protocols.krr.defense): the client never holds y itself
        out = defense.client_output(party, pp.output_defense, [int(x) for x in mine & _mask(out_bits)],
                                    out_bits, pp.frac_bits + pp.weight_frac_bits)
        if out is not None:
            return out
    theirs = party.ch.recv_array(dtype=np.uint64, shape=(k,))
    y = (mine + theirs) & _mask(out_bits)
    if out_bits < 64:
        y = (y ^ U64(1 << (out_bits - 1))) - U64(1 << (out_bits - 1))
    return y.view(np.int64).astype(np.float64) / 2.0 ** (pp.frac_bits + pp.weight_frac_bits)


def _agree_pool(party: PartyContext, ot: dict[str, Any] | None, params: dict[str, Any], m: int) -> Any:
    """Step 2's parameter echo, plus the pool: the client names the pool entries it spends
    ({id, at}, only if the server announced the same pool with enough unused entries) and asks
    for a refill after the reply; the server checks them (:func:`protocols.ot.pool.check_request`:
    entries used before are refused). Returns the pool to spend, or None (extend inline)."""
    ot = ot if ot is not None else {}
    st = ot.get("state")
    if party.role == CLIENT:
        mine = st.get("pool") if st is not None else None
        srv = ot.get("server_pool") or {}
        use = (isinstance(mine, ot_pool.ReceiverPool) and srv.get("id") == mine.id.hex()
               and srv.get("at") == mine.at and mine.left >= m and int(srv.get("left", 0)) >= m
               and mine.pre == (srv.get("pre") is True) == bool(ot.get("pre")))
        if st is not None and not use:
            st.pop("pool", None)  # out of step with the server's (or none): a fresh one after the reply
        refill = bool(ot.get("offered")) and st is not None
        msg = dict(params)
        if use:
            msg["pool"] = {"id": mine.id.hex(), "at": mine.at}
        if refill:
            msg["refill"] = True
        party.ch.send_json(msg)
        ot["refill"] = _refill(ot, m, params, mine if use else None) if refill else None
        ot["used"] = bool(use)
        return mine if use else None
    got = party.ch.recv_json()
    if not isinstance(got, dict):
        raise ProtocolError("expected the linear-ip parameters")
    req, refill = got.pop("pool", None), got.pop("refill", False)
    if got != params:
        raise ProtocolError(f"peer runs {got!r:.200} but this party expects {params!r}")
    pool = None
    if req is not None:
        pool = ot_pool.check_request(st.get("pool") if st is not None else None, req, m)
    if refill is True and ot.get("offered") and st is not None:
        ot["refill"] = _refill(ot, m, params, pool)
    else:
        ot["refill"] = None
    if pool is None and st is not None:
        st.pop("pool", None)  # not spent by this client now: it will hold a fresh pool, or none
    return pool


def _refill(ot: dict[str, Any], m: int, params: dict[str, Any], spent: Any) -> tuple[int, Any]:
    """(OTs to add after the reply, the pool spent now whose unused entries are kept first). A
    precorrected pool adds whole queries (n * x_bits entries) and keeps only a precorrected old
    pool (a pool's entries are all pads or all shares, never mixed)."""
    keep = spent if spent is not None and spent.pre == bool(ot.get("pre")) else None
    n = min(m, max(0, ot_pool.POOL_MAX - (keep.left - m if keep is not None else 0)))
    if ot.get("pre"):
        block = params["n"] * params["x_bits"]
        n -= n % block
    return n, keep


def after_reply(party: PartyContext, ot: dict[str, Any] | None) -> float | None:
    """After the session's reply, both roles: refill the ticket's OT pool (steps R1-R3 of
    :mod:`protocols.ot.pool`) if the client asked for it and the server offered it. The server
    raises on a failed consistency check (its caller then drops the ticket); the client drops its
    pool on any failure (its prediction stands). Returns the seconds spent, or None."""
    if not ot or not ot.get("refill") or ot.get("state") is None:
        return None
    n, old = ot["refill"]
    st = ot["state"]
    t0 = time.perf_counter()
    pre = bool(ot.get("pre")) and "layout" in ot and n > 0
    if pre:  # R4: the next queries' corrections, with this model's weights, query-major blocks
        nf, x_bits, out_bits, round_bits = ot["layout"]
        j, nbytes, drops = precorrected_layout(n // (nf * x_bits), nf, x_bits, out_bits, round_bits)
    if party.role == SERVER:
        pool = ot_pool.refill_send(party.ot_sender, n, old)
        if pre:
            pool = ot_pool.precorrect_send(party.ch, pool, n, ot["w_enc"][j], nbytes, drops)
        st["pool"] = pool
        return time.perf_counter() - t0
    try:
        pool = ot_pool.refill_recv(party.ot_receiver, n, old)
        if pre:
            pool = ot_pool.precorrect_recv(party.ch, pool, n, nbytes, drops)
        st["pool"] = pool
    except (SecureMLError, OSError):
        st.pop("pool", None)  # the server dropped the ticket too: the next session starts afresh
        return None
    return time.perf_counter() - t0


def server_setup(party: PartyContext, k: int, pp: PublicParams, out_bits: int, *,
                 softspoken_k: int = ot_session.DEFAULT_K, precompute: bool = PRECOMPUTE_OT,
                 keep_session: bool = True, store: ot_session.TicketStore | None = None) -> dict[str, Any]:
    """Step 0, model owner (:func:`setup`, role 0)."""
    return setup(party, pp, k, out_bits=out_bits, softspoken_k=softspoken_k, precompute=precompute,
                 keep_session=keep_session, store=store)


def client_setup(party: PartyContext, pp: PublicParams, k: int, server_key: str, *, resume: bool = True
                 ) -> dict[str, Any]:
    """Step 0, query owner (:func:`setup`, role 1)."""
    return setup(party, pp, k, server_key=server_key, resume=resume)


def server_online(party: PartyContext, w: np.ndarray, y_offset: float, pp: PublicParams, k: int,
                  out_bits: int = 64) -> None:
    """Model owner's side of steps 2-3 (:func:`online`, role 0)."""
    online(party, pp, k, out_bits, w=w, y_offset=y_offset)


def client_online(party: PartyContext, pp: PublicParams, phi: np.ndarray, out_bits: int = 64) -> np.ndarray:
    """Query owner's side of steps 1, 2 and 4 (:func:`online`, role 1): the predictions."""
    phi = np.atleast_2d(phi)
    return online(party, pp, phi.shape[0], out_bits, phi=phi)
