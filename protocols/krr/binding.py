"""Client-malicious exact Gaussian KRR, part 1: binding the masked distances to one query q'.

Threat model: the server (model owner) is semi-honest, the client may deviate arbitrarily
(docs/malicious.md). After this step the client holds u_i = D_i(q') + rho_i (mod 2^M) for every
training point i, **authenticated** (a MAC under the server's key, :mod:`protocols.mpc.authenticated`),
for ONE q' of the public input domain that it committed to; the server holds rho and the keys.
Any client that ends the step holding MACs on some other u (a shifted distance at one index, a
distance computed with another query, an inconsistent ||q||^2) is caught -- the server aborts
before it sends anything that depends on u -- except with probability 2^-lambda + 2^-40.45
(lambda = 40 repetitions of a binary-coefficient check; protocol 35's one gamma-combined MAC
word in the check ring 2^(M + 44): :func:`_check_combined`; 2^-lambda + 2^-60 before).

Why the client cannot just be trusted with u: it holds an additive share of D (from the cross
term) and the mask-reveal's u = D + rho; everything after (digit chains, table OTs, the output
product) is driven by the client's bits of u, and a client that adds delta_i to its share of D_i
isolates single kernel terms (issue 12, finding 3).

Steps (both roles run :func:`bound_masked_distances`; the server passes X and ||x||^2, the
client its encoded query q; ring Z_2^M with M = ``pp.ring_bits``):
  1. Server: a fresh MAC key Delta (64 bits).
  2. The query's bits are fixed ONCE: d x_bits random OTs of the checked extension with the
     client's q bits as choices. Every later use of q runs on these OTs (hashed in separate
     domains), never on new ones: the cross term here, the MACs and products of step 6. So the
     client cannot run the cross term with one query and commit another -- a deviation whose
     detection would depend on X (a selective failure: "is X (q'' - q') constant?").
     Cross term: a Gilboa vector OLE on them (row (j, b): correlation X[:, j], corrections
     trimmed to M - b bits): shares s_C + s_S = X q (mod 2^M) -- exact, unlike the lattice path,
     whose +-2E rounding would not satisfy an exact relation (and whose ciphertexts a client
     could malform).
  3. Mask-reveal: the server sends c = ||x||^2 - 2 s_S + rho (rho uniform mod 2^M); the client
     computes u = ||q||^2 - 2 s_C + c = D + rho (mod 2^M).
  4. The client commits u: M COTs per training point with correlation Delta (its bits are the
     choice bits of the checked OT extension): MACs M_u = K_u + u Delta. Only the check ring
     2^(M+44) of step 9 ever uses them (2^(M+64) in protocols 29-33), so bit b's correction
     travels as its low ceil((M + 44 - b) / 8) bytes (2^b times a word known mod 2^(M+64-b) is known mod 2^(M+64)):
     the client receives less than before, so it can forge nothing it could not before.
  5. Server: lambda binary challenge vectors chi_l (N bits), kept secret for now, and
     y_l = X^T chi_l (integers < 2^45); and (protocol 35) gamma, lambda secret 64-bit words.
  6. On step 2's OTs, correlation words (Delta, K_{q_j}, y_1,j..y_lam,j, y_gamma,j Delta) with
     y_gamma = sum_l gamma_l y_l: the client gets MACs on q (word 0, key K_q), T_j + q_j K_{q_j}
     (word 1), from which it forms a MAC on q_j^2 (q_j M_{q_j} - T_j - q_j K_{q_j} = q_j^2 Delta
     - T_j), hence on Q2 = ||q||^2, shares A_l = L_l + y_l . q, and ONE MAC word
     L'_gamma + (y_gamma . q) Delta: the MAC of A_gamma = sum_l gamma_l A_l under the key
     L'_gamma - (sum_l gamma_l L_l) Delta (protocols 11-33 sent lambda words y_l Delta, one MAC
     per A_l). The client never sees y_l or gamma (masked by pads).
  7. (merged into 6: one batch of corrections; bit b's correction words travel in
     ceil((R - b) / 8) bytes, R = M + 44 the check ring (protocol 35; M + 64 in 29-34), all that
     step 9 uses.)
  8. The server reveals chi.
  9. Check (:func:`_check_combined`), for each l the relation
        Z_l = sum_i chi_l,i u_i - |chi_l| Q2 + 2 A_l = sum_i chi_l,i (||x_i||^2 + rho_i) + 2 L_l   (mod 2^M)
     i.e. a random binary combination of the per-point relations u_i - Q2 + 2 x_i . q =
     ||x_i||^2 + rho_i. If any relation fails, flipping one coefficient changes the sum, so each
     repetition catches it with probability >= 1/2, whatever the error's bit position (the top
     bit, which zeroes a kernel term, included): 2^-lambda. The client opens every Z_l (masked
     above bit M by a committed r_l) and, after the server reveals gamma, one MAC of
     sum_l gamma_l Z_l: an opened value that differs from the committed one below bit M passes
     with probability <= 2^-40.45 (:func:`_check_combined`: gamma is fixed before, unknown to the
     client, and uniform where it matters). No selective failure: with q fixed by step 2, every
     error the client can cause (its u, its norm term, its cross-term share) is a number it
     knows, independent of X, rho and the weights, so whether it aborts depends on its own
     deviation only (gamma and chi are the server's fresh coins, independent of its data).

What the client learns: the OT outputs (uniform pads), c (uniform: rho), chi after it committed.
What the server learns: OT-extension messages (independent of the choice bits) and the opened
check values, which equal its own sums mod 2^M and are masked by fresh 64-bit client masks above.
Cost (beyond the semi-honest OT path): N M COTs of ceil((M + 44 - b) / 8) bytes (bit b; 532 B per
point at M = 56, 672 B in protocols 29-33, 896 B before) and 44 lambda more, (3 + lambda) words of
ceil((M + 44 - b) / 8) bytes on the query OT of bit b of each feature ((2 + 2 lambda) words of
M + 64 - b bits in protocols 29-33, of 16 bytes before), lambda N challenge bits, lambda + 1
opened words of 16 bytes and lambda 8-byte gamma words.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.params import PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import bfv_proof, he_matvec_checked, rlwe, u128
from protocols.mpc.context import PartyContext
from protocols.mpc.owner_cache import OwnerCache
from protocols.ot.crypto import pack_bits, unpack_bits
from secureml.errors import ProtocolError

_BLAS: Any = None
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0  # sessions inside _one_blas_thread now (the server runs them in threads)
_BLAS_LIMIT: Any = None  # the limit they share, set by the first and restored by the last


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """A one-thread BLAS limit (threadpoolctl) for step 6's (lam x N) (N x d) product: ~7 ms on
    one thread, but OpenBLAS's default threads stall behind a busy peer process and spin ~0.1 s
    after each call (the same as secureml.models.random_features._blas_limits).
    The limit is process-wide and the server runs sessions in threads, so it is shared: the first
    session in sets it, the last one out restores the original. (One limit per session, as before,
    let overlapping sessions interleave: the first to leave restored the threads while the other
    was inside, and the last to leave "restored" 1, for the rest of the process.)"""
    global _BLAS, _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        if _BLAS_USERS == 0:
            _BLAS_LIMIT = _BLAS.limit(limits=1, user_api="blas")
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMIT.restore_original_limits()
                _BLAS_LIMIT = None


U64 = np.uint64


def _mod(x: np.ndarray, bits: int) -> np.ndarray:
    return x if bits >= 64 else x & U64((1 << bits) - 1)


def _lift(x: np.ndarray) -> au.U128:
    x = np.asarray(x, dtype=U64)
    return np.zeros_like(x), x


@dataclass
class ServerBound:
    """The server's side after step 9: its mask rho and the keys of the client's u."""

    rho: np.ndarray  # (N,) uint64, mod 2^M
    delta: np.uint64
    u_key: au.U128  # (N,)
    u_pads: tuple[np.ndarray, np.ndarray] | None = None  # random-OT keys of u's bits (bound table OTs)


@dataclass
class ClientBound:
    """The client's side after step 9: u = D(q') + rho (mod 2^M) and its MACs."""

    u: np.ndarray  # (N,) uint64
    u_mac: au.U128  # (N,)
    u_pads: np.ndarray | None = None  # this side's random-OT keys of u's bits (bound table OTs)


# ---- the client's local steps (module functions, so a test can replace one of them) -----------
def client_norm(q: np.ndarray, ring_bits: int) -> np.ndarray:
    """Step 3, client: ||q||^2 mod 2^M (its share of the norm term)."""
    return _mod(np.atleast_1d((q * q).sum(dtype=U64)), ring_bits)


def client_masked(norm: np.ndarray, s_c: np.ndarray, c: np.ndarray, ring_bits: int) -> np.ndarray:
    """Step 3, client: u = ||q||^2 - 2 s_C + c (mod 2^M)."""
    return _mod(norm - U64(2) * s_c + c, ring_bits)


def client_commit_query(q: np.ndarray, step: int) -> np.ndarray:
    """Steps 6 and 7, client: the query whose bits it commits (the same q both times)."""
    return q


#: R - M of step 9's check ring 2^R (protocol 35: 44, so that the gamma-combined MAC check of
#: :func:`_check_combined` fails a deviation but with probability <= 2^-40.45; 64 before)
CHECK_RING_MARGIN = 44
_MATVEC_BYTES = 32 << 20  # bound on one chunk of the cross term's correlations


def _cross_term(party: PartyContext, pads, N: int, d: int, xb: int, M: int, *, X: np.ndarray | None = None,
                qbits: np.ndarray | None = None) -> np.ndarray:
    """Step 2: shares of X q (mod 2^M), a Gilboa vector OLE on the random OTs of q's bits (row
    j * x_bits + b: the correlation X[:, j], trimmed to M - b bits)."""
    server = party.role == SERVER
    share = np.zeros(N, dtype=U64)
    per = max(1, _MATVEC_BYTES // (8 * xb * max(N, 1)))
    weights = (U64(1) << np.arange(xb, dtype=U64))
    for j0 in range(0, d, per):
        j1 = min(d, j0 + per)
        rows = slice(j0 * xb, j1 * xb)
        bits = np.tile(M - np.arange(xb), j1 - j0)
        if server:
            corr = np.repeat(np.ascontiguousarray(X[:, j0:j1].T), xb, axis=0)  # (rows, N)
            out = au.vole_on_pads(party, CLIENT, (pads[0][rows], pads[1][rows]), _D_MATVEC, bits=bits,
                                  ring_bits=M, corr=corr)
            share -= (out.reshape(j1 - j0, xb, N) * weights[None, :, None]).sum(axis=(0, 1), dtype=U64)
        else:
            out = au.vole_on_pads(party, CLIENT, pads[rows], _D_MATVEC, bits=bits, ring_bits=M,
                                  choices=qbits[rows], n_words=N)
            share += (out.reshape(j1 - j0, xb, N) * weights[None, :, None]).sum(axis=(0, 1), dtype=U64)
    return _mod(share, M)


_D_MATVEC, _D_COMMIT, _D_FP = 1, 2, 3  # hash domains of q's random OTs: OT cross term, commitment, the proof's MACs


def _lattice_cross_term(party: PartyContext, pads, pp: PublicParams, *, prepared=None, q: np.ndarray | None = None,
                        qbits: np.ndarray | None = None) -> np.ndarray:
    """Step 2 with the lattice: :mod:`protocols.mpc.he_matvec_checked` on q's random OTs (its
    proof's MACs on q's bits are COTs on them, so the same bits; the client's key and ciphertexts
    proven well formed, their messages bound to these q's): exact shares of X q (mod 2^M)."""
    if party.role == SERVER:
        return he_matvec_checked.matvec_sender(party, CLIENT, prepared, q_pads=pads, domain=_D_FP)
    return he_matvec_checked.matvec_receiver(party, CLIENT, q, pp.x_bits, pp.n_train, pp.ring_bits, q_pads=pads,
                                             q_bits=qbits, domain=_D_FP)


def cross_term_bytes(pp: PublicParams) -> dict[str, int | None]:
    """Bytes of step 2 per query for each cross term, from public numbers (both directions):
    "ot" the Gilboa vector OLE (one ceil((M - b) / 8)-byte word per training point for bit b of
    each feature); "he" the checked lattice plan's own estimate
    (:meth:`~protocols.mpc.he_matvec_checked.CheckedPlan.bytes_estimate`: ciphertexts, proof,
    replies; its random OTs at their measured 16 B) plus the query's MACs for the proof
    (ceil(R / 8) bytes per bit, protocol 35; 7 bytes per bit and prime before); None where
    no lattice plan fits the noise budget. The random OTs of q's bits are common to both."""
    N, d, xb, M = pp.n_train, pp.n_features, pp.x_bits, pp.ring_bits
    ot = d * N * sum(-(-(M - b) // 8) for b in range(xb))
    try:
        ring = rlwe.modulus()
        plan = he_matvec_checked.make_plan(N, d, xb, M, ring)
    except ProtocolError:
        return {"he": None, "ot": ot}
    # the plan's cost model counts 12 B per checked random OT of the witness commitment; on the wire
    # one costs 16 B (bench.cross_term_choice). The plan's choice of packing is part of the protocol,
    # so the correction lives here, not in its cost model (that would change the agreed plan).
    witness_bits = (2 + bfv_proof.NOISE_BITS * (plan.blocks + 1)) * ring.n
    he = plan.bytes_estimate(ring) + 4 * witness_bits + d * xb * -(-plan.mac_bits(ring) // 8)
    return {"he": he, "ot": ot}


def cheaper_cross_term(pp: PublicParams) -> str:
    """'he' or 'ot', whichever :func:`cross_term_bytes` says sends fewer bytes: the checked lattice
    cross term has a floor of ~4.1 MB per query (proof and replies; ~6 MB before protocol 35), so small
    models (N up to 88 at d = 351; 150 before protocol 35) are cheaper with the OT one."""
    est = cross_term_bytes(pp)
    return "he" if est["he"] is not None and est["he"] <= est["ot"] else "ot"


def _vec(x: au.U128) -> au.U128:
    """A (0-d or 1-d) limb pair as 1-d arrays (numpy warns on overflow of 0-d uint64 arithmetic)."""
    return np.atleast_1d(np.asarray(x[0], dtype=U64)), np.atleast_1d(np.asarray(x[1], dtype=U64))


def _check_combined(party: PartyContext, k_bits: int, ring_bits: int, *, Z: au.U128 | None = None,
                    mac_of=None, delta: np.uint64 | None = None, C: au.U128 | None = None,
                    gamma: np.ndarray | None = None, key_of=None) -> None:
    """Step 9 (protocol 35): check Z_l = C_l (mod 2^k) for l = 1..lam with ONE MAC word.

    Client: ``Z`` (lam,) and ``mac_of(g)``, the MAC of sum_l g_l Z_l; server: ``delta``, ``C``,
    its secret ``gamma`` (lam,) uint64 (drawn before step 6: the MAC word of the products is
    y_gamma Delta) and ``key_of(g)``, the key of sum_l g_l Z_l. Steps:
      1. the client sends Y_l = Z_l + 2^k r_l (mod 2^R), r_l uniform on [0, 2^(R-k)), and commits
         the r_l (:func:`~protocols.mpc.authenticated.commit`) in the same flight;
      2. the server sends gamma (after both);
      3. the client sends MY = MAC(sum_l gamma_l Z_l) + 2^k sum_l gamma_l M(r_l) (mod 2^R); the
         server checks Y_l = C_l (mod 2^k) for every l and
         MY = key_of(gamma) + 2^k sum_l gamma_l K(r_l) + (sum_l gamma_l Y_l) Delta (mod 2^R).
    Soundness: let Y*_l be the value the committed quantities give and e_l = Y_l - Y*_l (fixed
    before gamma is revealed). A failing relation forces e_l0 != 0 (mod 2^k) for some l0, of
    2-adic valuation v0 < k; E = sum_l gamma_l e_l is then uniform on a coset of 2^v0 in Z_2^R
    (gamma_l0 uniform on 64 bits: enough, R - v0 <= 64 or every value distinct), and the client
    passes only by sending E Delta (mod 2^R), i.e. Delta mod 2^(R - v(E)):
    probability <= 2^-(R - v0) (1 + (R - v0) / 2) <= 2^-(R-k+1) (1 + (R-k+1) / 2), 2^-40.45 at
    R = k + 44 (``CHECK_RING_MARGIN``). Zero knowledge: Y_l = C_l + 2^k r_l for an honest client
    and MY is the server's own key combination plus its known sum times Delta.
    """
    lam_bits = ring_bits - k_bits
    if party.role == CLIENT:
        lam = Z[0].shape[0]
        r = party.rng.random_u64(lam) & U64((1 << lam_bits) - 1)
        Y = u128.mask_bits(u128.add(Z, u128.shl((np.zeros(lam, U64), r), k_bits)), ring_bits)
        party.ch.send_array(np.ascontiguousarray(u128.to_bytes(Y)), owned=True)
        cr = au.commit(party, CLIENT, n=lam, bits=lam_bits, values=r, mac_bits=ring_bits)
        g = party.ch.recv_array(U64, (lam,))
        MY = u128.add(mac_of(g), u128.shl(_vec(u128.total(u128.mul_small(cr.mac, g), axis=0)), k_bits))
        party.ch.send_array(np.ascontiguousarray(u128.to_bytes(u128.mask_bits(MY, ring_bits))), owned=True)
        party.ch.flush()
        return None
    lam = C[0].shape[0]
    Y = u128.from_bytes16(party.ch.recv_array(np.uint8, (lam, 16)))
    kr = au.commit(party, CLIENT, n=lam, bits=lam_bits, delta=delta, mac_bits=ring_bits)
    party.ch.send_array(np.asarray(gamma, dtype=U64))
    party.ch.flush()
    MY = u128.from_bytes16(party.ch.recv_array(np.uint8, (1, 16)))
    low = u128.mask_bits(u128.sub(Y, C), k_bits)
    Yg = u128.total(u128.mul_small(Y, gamma), axis=0)
    want = u128.add(u128.add(key_of(gamma), u128.shl(_vec(u128.total(u128.mul_small(kr.key, gamma), axis=0)), k_bits)),
                    u128.mul_small(_vec(Yg), delta))
    want = u128.mask_bits(want, ring_bits)
    ok = bool(((low[0] == 0) & (low[1] == 0)).all())
    ok &= bool((u128.mask_bits(Y, ring_bits)[0] == Y[0]).all()) and bool((u128.mask_bits(MY, ring_bits)[0] == MY[0]).all())
    ok &= bool((want[0] == MY[0]).all() and (want[1] == MY[1]).all())
    if not ok:
        raise au.MacCheckError("authenticated client values failed their check: a deviating client, session aborted")
    return None


_X_FLOAT: OwnerCache[tuple[np.ndarray, np.ndarray]] = OwnerCache()


def rows_as_float(X: np.ndarray, owner: Any = None) -> np.ndarray:
    """The server's X (N, d) as float64 for step 6's y = chi X (exact: entries below 2^30, so each
    of the lam sums of at most N rows stays below 2^53 for N < 2^23), kept per ``owner`` (the
    served model) for as long as it holds this very X: query-independent, so it is made once
    (46 MB at N = 16,384, d = 351) instead of converted on every query."""
    return _X_FLOAT.get(owner, lambda: (X, np.ascontiguousarray(X, dtype=np.float64)), lambda v: v[0] is X)[1]


def bound_masked_distances(party: PartyContext, pp: PublicParams, *, X: np.ndarray | None = None,
                           xx: np.ndarray | None = None, q: np.ndarray | None = None,
                           lam: int = au.STAT_BITS, keep_pads: bool = False,
                           prepared: he_matvec_checked.PreparedChecked | None = None,
                           x_float: np.ndarray | None = None) -> ServerBound | ClientBound:
    """Steps 1-9 for one query, both roles (module docstring). The server passes the encoded
    training matrix ``X`` (N, d) and ``xx`` = ||x_i||^2 mod 2^M; the client its encoded query
    ``q`` (d,). Raises :class:`~protocols.mpc.authenticated.MacCheckError` on the server when
    the client's values fail the check. ``keep_pads``: keep the random-OT keys of u's bits, so
    that later table OTs can be indexed by digits of the committed u
    (:func:`protocols.mpc.authenticated.bound_lut`). ``x_float`` (server): X as float64
    (:func:`rows_as_float`, made per model, not per query), else converted here."""
    N, d, M, xb = pp.n_train, pp.n_features, pp.ring_bits, pp.x_bits
    server = party.role == SERVER
    # 1.-2. Delta; q's bits fixed once, as the choice bits of d * x_bits random OTs (checked
    # extension); the cross term runs on them (so it cannot use another query than the one
    # committed in step 6, which reuses them too)
    if server:
        delta = au.new_delta(party)
        qpads = au.random_choices(party, CLIENT, n=d * xb)
        if pp.cross_term == "he":
            if prepared is None:
                prepared = he_matvec_checked.prepare(X, xb, M)
            s = _lattice_cross_term(party, qpads, pp, prepared=prepared)
        else:
            s = _cross_term(party, qpads, N, d, xb, M, X=X)
    else:
        q = np.ascontiguousarray(q, dtype=U64).ravel()
        if xb < 64 and q.size and int(q.max()) >> xb:
            raise ProtocolError("query wider than the public bound")
        qc = client_commit_query(q, 2)
        qbits = ((qc[:, None] >> np.arange(xb, dtype=U64)[None, :]) & U64(1)).astype(np.uint8).ravel()
        qpads = au.random_choices(party, CLIENT, n=d * xb, choices=qbits)
        if pp.cross_term == "he":
            s = _lattice_cross_term(party, qpads, pp, q=qc, qbits=qbits)
        else:
            s = _cross_term(party, qpads, N, d, xb, M, qbits=qbits)
    # 3. mask-reveal
    if server:
        rho = party.rng.random_below(N, M) if M < 64 else party.rng.random_u64(N)
        party.ch.send_array(_mod(xx - U64(2) * s + rho, M))
    else:
        c = party.ch.recv_array(dtype=U64, shape=(N,))
        u = client_masked(client_norm(q, M), s, c, M)
    # 4. commit u
    # (protocols 29, 34: u's MACs are needed mod the check ring 2^(M + 44) only, so bit b's correction
    # travels in ceil((M + 44 - b) / 8) bytes instead of 16: 532 B per point instead of 896 at M = 56)
    # (protocol 35: the check ring is 2^(M + 44), :func:`_check_combined`: every correction word of
    # steps 4-7 travels ~2.5 bytes shorter than protocol 29's 2^(M + 64))
    mac_bits = min(M + CHECK_RING_MARGIN, 128)
    if server:
        ku = au.commit(party, CLIENT, n=N, bits=M, delta=delta, keep_pads=keep_pads, mac_bits=mac_bits)
    else:
        cu = au.commit(party, CLIENT, n=N, bits=M, values=u, keep_pads=keep_pads, mac_bits=mac_bits)
    # 5.-7. challenges (secret for now); q's MACs, its square's MAC and the y-products, all on
    # q's random OTs of step 2: words (Delta, K_q, y_1..y_lam, y_gamma Delta), y_gamma = sum_l gamma_l y_l
    # with the server's secret 64-bit gamma (protocol 35: one MAC word for the lam products instead of lam)
    words = 3 + lam
    # (protocol 29: every word is used mod the check ring 2^R only, weighted by 2^b for bit b of
    # q_j: its corrections travel in ceil((R - b) / 8) bytes, as step 4's)
    keep = np.tile(-(-(mac_bits - np.arange(xb)) // 8), d)
    if server:
        chi = party.rng.random_bits((lam, N)).astype(np.uint8)
        gamma = party.rng.random_u64(lam)
        Xf = X.astype(np.float64) if x_float is None else x_float
        with _one_blas_thread():  # multi-threaded OpenBLAS spins and stalls on a shared machine
            y = np.rint(chi.astype(np.float64) @ Xf).astype(U64)  # (lam, d), < 2^45 exact
        yg = u128.total(u128.mul64(y, gamma[:, None]), axis=0)  # (d,): sum_l gamma_l y_l mod 2^128
        ygd = u128.mul_small(yg, delta)

        def corr(P0):
            kq = au.weighted_sum((P0[0][:, 0].reshape(d, xb), P0[1][:, 0].reshape(d, xb)), xb)  # K_{q_j}
            hi = np.zeros((d, words), U64)
            lo = np.zeros((d, words), U64)
            lo[:, 0] = delta
            hi[:, 1], lo[:, 1] = kq
            lo[:, 2:2 + lam] = y.T
            hi[:, 2 + lam], lo[:, 2 + lam] = ygd
            return np.repeat(hi, xb, axis=0), np.repeat(lo, xb, axis=0)

        P0 = au.cot_on_pads(party, CLIENT, qpads, _D_COMMIT, words=words, corr=corr, keep=keep)
        keys = au.weighted_sum((P0[0].reshape(d, xb, words), P0[1].reshape(d, xb, words)), xb)
        party.ch.send_array(pack_bits(chi.ravel()))
    else:
        out = au.cot_on_pads(party, CLIENT, qpads, _D_COMMIT, words=words, choices=qbits, keep=keep)
        got = au.weighted_sum((out[0].reshape(d, xb, words), out[1].reshape(d, xb, words)), xb)
        nb = lam * N
        chi = unpack_bits(party.ch.recv_array(np.uint8, ((nb + 7) // 8,)), nb).reshape(lam, N)
    S = chi.sum(axis=1, dtype=U64)  # |chi_l|

    def col(a, k0, k1=None):
        k1 = k0 + 1 if k1 is None else k1
        return (a[0][:, k0:k1], a[1][:, k0:k1]) if k1 - k0 > 1 else (a[0][:, k0].copy(), a[1][:, k0].copy())

    # 8.-9. the combined relations and their check: Z_l = chi_l . u - |chi_l| Q2 + 2 A_l opened one by
    # one, their MACs checked through the gamma combination (:func:`_check_combined`)
    if server:
        L = u128.total(col(keys, 2, 2 + lam), axis=0)  # keys of the A_l (their pads)
        Lg = u128.total(col(keys, 2 + lam), axis=0)  # pad of the y_gamma Delta word
        kq2 = u128.neg(u128.total(col(keys, 1), axis=0))  # key of Q2
        KZ = au.combine(chi, ku.key)
        KZ = u128.sub(KZ, u128.mul_small((np.full(lam, kq2[0]), np.full(lam, kq2[1])), S))
        C = u128.add(au.combine(chi, _lift(xx)), au.combine(chi, _lift(rho)))
        C = u128.add(C, u128.shl(L, 1))

        def key_of(g: np.ndarray) -> au.U128:
            # sum_l g_l KZ_l, with the key of A_gamma = Lg - (sum_l g_l L_l) Delta
            kg = u128.sub(_vec(Lg), u128.mul_small(_vec(u128.total(u128.mul_small(L, g), axis=0)), delta))
            return u128.add(_vec(u128.total(u128.mul_small(KZ, g), axis=0)), u128.shl(kg, 1))

        _check_combined(party, M, mac_bits, delta=delta, C=C, gamma=gamma, key_of=key_of)
        return ServerBound(rho, delta, ku.key, ku.pads)
    mq = col(got, 0)
    Q2 = int((qc.astype(object) ** 2).sum()) % u128.MOD
    sq_mac = u128.sub(u128.mul_small(mq, qc), col(got, 1))  # q_j M_{q_j} - (T_j + q_j K_{q_j})
    mq2 = u128.total(sq_mac, axis=0)
    A = u128.total(col(got, 2, 2 + lam), axis=0)
    MAg = u128.total(col(got, 2 + lam), axis=0)  # MAC of A_gamma = sum_l gamma_l A_l
    Z = au.combine(chi, _lift(cu.values))
    Z = u128.sub(Z, u128.mul_small(u128.from_int(Q2, (lam,)), S))
    Z = u128.add(Z, u128.shl(A, 1))
    MZ = au.combine(chi, cu.mac)
    MZ = u128.sub(MZ, u128.mul_small((np.full(lam, mq2[0]), np.full(lam, mq2[1])), S))

    def mac_of(g: np.ndarray) -> au.U128:
        return u128.add(_vec(u128.total(u128.mul_small(MZ, g), axis=0)), u128.shl(_vec(MAg), 1))

    _check_combined(party, M, mac_bits, Z=Z, mac_of=mac_of)
    return ClientBound(cu.values, cu.mac, cu.pads)
