"""The CKKS engine's session: handshake, keys, encrypted queries, flooded answers.

Session (one connection, one or more queries):
  1. client -> server: hello {protocol, version, n_queries, n_features}
  2. server -> client: {ok, params} (:class:`FHEParams`, incl. the public input ball) or {ok: false, error}
  3. client: range check of every query (||q - c|| <= B); {ready} or {abort: reason} -- nothing
     private has moved yet
  4. client -> server: relin key, one Galois key (step g), public key (SEAL seeded serialisations)
  5. per query: client -> server: g encrypted rotations of its packed query;
     server: distances, exp polynomial, weighted sum (server.py), then re-randomise with
     Enc_pk(0), flood the constant coefficient with N(0, (2^s B0)^2) noise, add the offset;
     server -> client: {scale, c0_0, sigma_y} and c1 (N words mod q0)
  6. client: m_0 = c0_0 + N^-1 sum_j c1_j s_j mod q0, prediction = m_0 N / (2 scale)

Threat model (semi-honest). The query owner holds the only secret key; the server sees RLWE
ciphertexts and evaluation keys only (IND-CPA under RLWE, 128-bit parameters), plus the public
sizes (d, and n_queries). The query owner learns the prediction plus a noise term: the rest of
the result polynomial is never sent, c1 is fresh (re-randomised with the server's randomness),
and the data-dependent CKKS error in m_0 is flooded with Gaussian noise 2^s times larger than
its estimated bound B0 (statistical distance <= 2^-s per answer), following
Li-Micciancio (EUROCRYPT 2021) on CKKS decryption leakage and the circuit-privacy analysis of
Klucznik and Santato (2025), which shows exponential flooding is necessary. The public
parameters reveal the training mean c and a radius B (>= the training radius), the ring size,
and through the output scale a power of two close to sum|alpha|. The server learns nothing
about the query beyond its length; the number of blocks (ceil(N_train / (N/2))) is visible to
the client only as timing.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from protocols.baselines.fhe import client as C
from protocols.baselines.fhe import seal_backend as sb
from protocols.baselines.fhe import server as S
from protocols.baselines.fhe.params import PROTOCOL_NAME, PROTOCOL_VERSION, FHEParams, plan
from protocols.baselines.fhe.procs import run_engine_local
from protocols.common import CostReport, KernelModelParams, check_hello, send_hello
from protocols.net.transport import Channel
from secureml.errors import DataError, ProtocolError

MAX_QUERIES_PER_SESSION = 256


def _key_limit(p: FHEParams, ksk: bool) -> int:
    """Largest serialised size accepted for a key (uncompressed size + slack)."""
    N, L = p.poly_degree, p.depth
    if ksk:  # (L + 1) key-switching components, each 2 polynomials over L + 2 primes
        return 2 * (L + 1) * (L + 2) * N * 8 + (1 << 20)
    return 2 * (L + 2) * N * 8 + (1 << 20)


def _ct_limit(p: FHEParams) -> int:
    return 2 * (p.depth + 1) * p.poly_degree * 8 + (1 << 20)


def calibrate(sm: S.ServerModel, runs: int = 8) -> float:
    """Estimate B0, a bound on the data-dependent CKKS error in m_0, under a throwaway key.

    The server generates its own key pair with the production parameters, encrypts ``runs``
    synthetic queries (the public centre and training points, each with fresh randomness), runs
    exactly the production circuit and measures the error e_0 of m_0 against the same polynomial
    circuit in float64. B0 = max(6 rms(e_0), 3 max|e_0|) + 16 integer units.
    Only m_0 can be checked: the other coefficients of the result deliberately overflow q0 (the
    weights are scaled to fill q0's headroom for m_0 alone, see server.weight_shift), so slot
    values cannot be decoded. The error is dominated by the rounding noise at the distance level
    (magnified 2^k times by the squarings) and the last rescale, whose sizes depend on the
    parameters and the weights, not on the particular query.
    """
    if sm.noise_bound is not None:
        return sm.noise_bound
    t0 = time.perf_counter()
    p = sm.params
    ctx = sm.ctx
    keys = C.keygen(ctx, p)
    rk = sb.from_bytes(seal.RelinKeys, ctx, keys.relin, "relin key")
    gk = sb.from_bytes(seal.GaloisKeys, ctx, keys.galois, "Galois key") if keys.galois else None
    pk = sb.from_bytes(seal.PublicKey, ctx, keys.public, "public key")
    ev = S.Evaluator(sm, rk, gk)
    X = sm.model.X_train
    # the public centre and training points spread over the set: the error's tail is heavy (it
    # varies ~50x between queries), so three samples let B0 vary ~3x between calibrations and fall
    # below a later query's error now and then; eight keep it above every error measured
    idx = np.linspace(0, len(X) - 1, max(1, runs - 1)).round().astype(int)
    candidates = [np.asarray(p.center)] + [X[i] for i in idx]
    errs = []
    for q in candidates[: max(1, runs)]:
        cts = [sb.from_bytes(seal.Ciphertext, ctx, b, "ciphertext") for b in C.encrypt_query(ctx, p, keys, q)]
        c00, c1, scale = S.finalize(sm, ev.evaluate(cts), pk, 0.0)
        y = C.decrypt_result(ctx, keys, c00, c1, scale)
        ideal = S.exact_circuit_value(sm, q) + float(sm.model.y_offset)
        errs.append((y - ideal) * 2.0 * scale / ctx.poly_degree)
    e = np.abs(np.asarray(errs))
    sm.noise_bound = float(max(6.0 * math.sqrt(float(np.mean(e**2))), 3.0 * float(e.max())) + 16.0)
    sm.calibrate_s = time.perf_counter() - t0
    return sm.noise_bound


def flood_std(noise_bound: float, flood_bits: int) -> float:
    """Gaussian flooding width: SD(N(0, s^2), N(mu, s^2)) <= |mu| / (s sqrt(2 pi)) <= 2^-flood_bits."""
    return 0.0 if flood_bits <= 0 else noise_bound * 2.0**flood_bits / math.sqrt(2.0 * math.pi)


def serve_one(
    model: KernelModelParams,
    ch: Channel,
    *,
    params: FHEParams | None = None,
    flood_bits: int = 20,
    cache: bool = True,
    output_noise: float = 0.0,
    **plan_opts: Any,
) -> CostReport:
    """Model owner's side of one session (steps 1-5). ``plan_opts`` go to :func:`params.plan`.
    ``output_noise``: sd (kcal/mol) of fresh Gaussian noise on every answer (an output defense)."""
    t0 = time.perf_counter()
    hello = ch.recv_json(max_bytes=4096)
    try:
        nq = check_hello(hello, PROTOCOL_NAME, PROTOCOL_VERSION, MAX_QUERIES_PER_SESSION, model.n_features)
        p = params if params is not None else plan(model, flood_bits=flood_bits, **plan_opts)
    except ProtocolError as exc:
        ch.send_json({"ok": False, "error": str(exc)})
        raise
    ch.send_json({"ok": True, "params": p.to_dict()})
    answer = ch.recv_json(max_bytes=4096)
    if not isinstance(answer, dict) or not answer.get("ready"):
        # never quote the client's reply (a reason could name its query): a fixed wording
        rejected = isinstance(answer, dict) and answer.get("abort") == "query-rejected"
        raise ProtocolError("client rejected its query" if rejected else "client sent a malformed ready message")
    # model preparation overlaps with the client's key generation (both are offline work)
    t_prep = time.perf_counter()
    sm = S.prepare(model, p, cache=cache)
    prepared_now = time.perf_counter() - t_prep  # ~0 when the encoded model came from the cache
    flood_sigma = 0.0
    t_cal = time.perf_counter()
    if p.flood_bits > 0:
        flood_sigma = flood_std(calibrate(sm), p.flood_bits)
    calibrated_now = time.perf_counter() - t_cal
    ctx = sm.ctx
    rk = sb.from_bytes(seal.RelinKeys, ctx, ch.recv_array(np.uint8, (None,), _key_limit(p, True)).tobytes(), "relin key")
    gbytes = ch.recv_array(np.uint8, (None,), _key_limit(p, True)).tobytes()
    if (len(gbytes) == 0) != (p.giant_steps == 1):
        raise ProtocolError("Galois key missing or unexpected")
    gk = sb.from_bytes(seal.GaloisKeys, ctx, gbytes, "Galois key") if gbytes else None
    if gk is not None and not gk.has_key(sb.galois_elt(p.baby_steps, p.poly_degree)):
        raise ProtocolError("the Galois key does not cover the baby-step rotation")
    pk = sb.from_bytes(seal.PublicKey, ctx, ch.recv_array(np.uint8, (None,), _key_limit(p, False)).tobytes(), "public key")
    ev = S.Evaluator(sm, rk, gk)
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    eval_s = 0.0
    for _ in range(nq):
        cts = []
        for _j in range(p.baby_steps):
            raw = ch.recv_array(np.uint8, (None,), _ct_limit(p)).tobytes()
            ct = sb.from_bytes(seal.Ciphertext, ctx, raw, "query ciphertext")
            if ct.size() != 2 or sb.level_of(ctx, ct) != ctx.top or abs(ct.scale - 2.0**p.input_scale_bits) > 1.0:
                raise ProtocolError("query ciphertext has the wrong size, level or scale")
            cts.append(ct)
        te = time.perf_counter()
        total = ev.evaluate(cts)
        c00, c1, scale = S.finalize(sm, total, pk, flood_sigma, output_noise)
        eval_s += time.perf_counter() - te
        sigma_y = flood_sigma * ctx.poly_degree / (2.0 * scale)
        ch.send_json({"scale": scale, "c0": str(c00), "sigma_y": sigma_y, "output_noise_sd": output_noise})
        ch.send_array(c1)
    t1 = time.perf_counter()
    return CostReport.from_channel(
        "fhe-ckks", ch, t0, t_off, t1, off_bytes,
        {
            "n_queries": nq,
            "params": {k: v for k, v in p.to_dict().items() if k != "center"},
            "blocks": len(sm.blocks),
            "model_encode_s": prepared_now,
            "model_encode_cached_s": sm.precompute_s,
            "calibrate_s": calibrated_now,
            "noise_bound_B0": sm.noise_bound,
            "flood_sigma_int": flood_sigma,
            "eval_s": eval_s,
            "weight_shift": sm.alpha_shift,
        },
    )


def predict(ch: Channel, queries: np.ndarray, **_opts: Any) -> tuple[np.ndarray, CostReport]:
    """Query owner's side (steps 1-6). Returns predictions and the client's cost.

    ``cost.extra["sigma_y"]`` is the standard deviation of the flooding noise in prediction units
    (the documented error: |prediction - plaintext| <= 6 sigma_y + CKKS error, see docs/baselines.md).
    """
    Q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    t0 = time.perf_counter()
    p = FHEParams.from_dict(send_hello(ch, PROTOCOL_NAME, PROTOCOL_VERSION, Q.shape[0], Q.shape[1], 1 << 22))
    try:
        for q in Q:
            C.check_query(p, q)
    except DataError:
        ch.send_json({"abort": "query-rejected"})  # the fixed code, never why (it names the query)
        raise
    ch.send_json({"ready": True})
    ctx = sb.make_context(p.poly_degree, p.coeff_bits)
    keys = C.keygen(ctx, p)
    ch.send_array(np.frombuffer(keys.relin, dtype=np.uint8))
    ch.send_array(np.frombuffer(keys.galois, dtype=np.uint8))
    ch.send_array(np.frombuffer(keys.public, dtype=np.uint8))
    t_off = time.perf_counter()
    off_bytes = ch.bytes_sent + ch.bytes_received
    q0 = ctx.primes[0]
    out = np.empty(Q.shape[0])
    sigmas = []
    for i, q in enumerate(Q):
        for blob in C.encrypt_query(ctx, p, keys, q):
            ch.send_array(np.frombuffer(blob, dtype=np.uint8))
        head = ch.recv_json(max_bytes=4096)
        c1 = ch.recv_array(np.uint64, (p.poly_degree,))
        try:
            scale = float(head["scale"])
            c00 = int(head["c0"])
            sigma_y = float(head["sigma_y"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("malformed result header") from None
        if not (scale > 0 and np.isfinite(scale)) or not 0 <= c00 < q0 or np.any(c1 >= np.uint64(q0)):
            raise ProtocolError("result is not a valid ciphertext modulo q0")
        out[i] = C.decrypt_result(ctx, keys, c00, c1, scale)
        sigmas.append(sigma_y)
    t1 = time.perf_counter()
    cost = CostReport.from_channel(
        "fhe-ckks", ch, t0, t_off, t1, off_bytes,
        {
            "key_bytes": keys.key_bytes,
            "relin_key_bytes": len(keys.relin),
            "galois_key_bytes": len(keys.galois),
            "public_key_bytes": len(keys.public),
            "sigma_y": max(sigmas) if sigmas else 0.0,
            "poly_degree": p.poly_degree,
            "coeff_bits": p.coeff_bits,
            "flood_bits": p.flood_bits,
        },
    )
    return out, cost


def run_local(model: KernelModelParams, queries: np.ndarray, timeout: float = 3600.0,
              **opts: Any) -> tuple[np.ndarray, CostReport, CostReport]:
    """Both parties as two spawned processes over TCP loopback: (predictions, client cost, server cost)."""
    return run_engine_local("protocols.baselines.fhe.engine", model, queries, timeout=timeout, **opts)
