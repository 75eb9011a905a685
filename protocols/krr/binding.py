"""Client-malicious exact Gaussian KRR, part 1: binding the masked distances to one query q'.

Threat model: the server (model owner) is semi-honest, the client may deviate arbitrarily
(docs/malicious.md). After this step the client holds u_i = D_i(q') + rho_i (mod 2^M) for every
training point i, **authenticated** (a MAC under the server's key, :mod:`protocols.mpc.authenticated`),
for ONE q' of the public input domain that it committed to; the server holds rho and the keys.
Any client that ends the step holding MACs on some other u (a shifted distance at one index, a
distance computed with another query, an inconsistent ||q||^2) is caught -- the server aborts
before it sends anything that depends on u -- except with probability 2^-lambda + 2^-60
(lambda = 40 repetitions of a binary-coefficient check).

Why the client cannot just be trusted with u: it holds an additive share of D (from the cross
term) and the mask-reveal's u = D + rho; everything after (digit chains, table OTs, the output
product) is driven by the client's bits of u, and a client that adds delta_i to its share of D_i
isolates single kernel terms (issue 12, finding 3).

Steps (both roles run :func:`bound_masked_distances`; the server passes X and ||x||^2, the
client its encoded query q; ring Z_2^M with M = ``pp.ring_bits``):
  1. Server: a fresh MAC key Delta (64 bits).
  2. Cross term, OT path (:func:`protocols.mpc.gilboa.matvec`, client's q bits as choices): shares
     s_C + s_S = X q (mod 2^M) -- exact, unlike the lattice path, whose +-2E rounding error
     would not satisfy an exact relation (and whose ciphertexts a client could malform).
  3. Mask-reveal: the server sends c = ||x||^2 - 2 s_S + rho (rho uniform mod 2^M); the client
     computes u = ||q||^2 - 2 s_C + c = D + rho (mod 2^M).
  4. The client commits u: M COTs per training point with correlation Delta (its bits are the
     choice bits of the checked OT extension): MACs M_u = K_u + u Delta.
  5. Server: lambda binary challenge vectors chi_l (N bits) and chi'_l (d bits), kept secret
     for now, and y_l = X^T chi_l (integers < 2^45).
  6. The client commits q (x_bits COTs per feature) with extra correlations (y_l,j, y_l,j Delta):
     it obtains MACs on q and authenticated shares A_l = L_l + y_l . q (MAC share L'_l +
     (y_l . q) Delta), the server keeps L_l, L'_l. The client never sees y_l (masked by pads).
  7. The client commits q again with the extra correlation K_{q_j} (its step-6 key): from
     T_j + q_j K_{q_j} and M_{q_j} it forms a MAC on q_j^2 (q_j M_{q_j} - T_j - q_j K_{q_j} =
     q_j^2 Delta - T_j), hence on Q2 = ||q||^2 -- provided the bits equal step 6's (checked below).
  8. The server reveals chi, chi'.
  9. Check (:func:`protocols.mpc.authenticated.check_congruent`, k = M), for each l:
        sum_i chi_l,i u_i - |chi_l| Q2 + 2 y_l . q + sum_j chi'_l,j (q_j - q~_j)
            = sum_i chi_l,i (||x_i||^2 + rho_i)   (mod 2^M)
     i.e. a random binary combination of the per-point relations u_i - Q2 + 2 x_i . q =
     ||x_i||^2 + rho_i and of the equalities q = q~ (step 7's bits). If any relation fails,
     flipping one coefficient changes the sum, so each repetition catches it with probability
     >= 1/2, whatever the error's bit position (the top bit, which zeroes a kernel term,
     included); a passing forgery of the opened MACs needs all 64 bits of Delta.

What the client learns: the OT outputs (uniform pads), c (uniform: rho), chi after it committed.
What the server learns: OT-extension messages (independent of the choice bits) and the opened
check values, which equal its own sums mod 2^M and are masked by fresh 64-bit client masks above.
Cost (beyond the semi-honest OT path): N M + 2 d x_bits + 64 lambda COTs, 16 bytes per COT and
correlation word ((1 + 2 lambda) words for step 6), lambda (N + d) challenge bits, 32 lambda bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.params import PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import gilboa, u128
from protocols.mpc.context import PartyContext
from protocols.ot.crypto import pack_bits, unpack_bits

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


def bound_masked_distances(party: PartyContext, pp: PublicParams, *, X: np.ndarray | None = None,
                           xx: np.ndarray | None = None, q: np.ndarray | None = None,
                           lam: int = au.STAT_BITS, keep_pads: bool = False) -> ServerBound | ClientBound:
    """Steps 1-9 for one query, both roles (module docstring). The server passes the encoded
    training matrix ``X`` (N, d) and ``xx`` = ||x_i||^2 mod 2^M; the client its encoded query
    ``q`` (d,). Raises :class:`~protocols.mpc.authenticated.MacCheckError` on the server when
    the client's values fail the check. ``keep_pads``: keep the random-OT keys of u's bits, so
    that later table OTs can be indexed by digits of the committed u
    (:func:`protocols.mpc.authenticated.bound_lut`)."""
    N, d, M, xb = pp.n_train, pp.n_features, pp.ring_bits, pp.x_bits
    server = party.role == SERVER
    # 1.-3. Delta; cross term (exact, OT path); mask-reveal
    if server:
        delta = au.new_delta(party)
        s = gilboa.matvec(party, CLIENT, X=X, y_bits=xb, ring_bits=M)
        rho = party.rng.random_below(N, M) if M < 64 else party.rng.random_u64(N)
        party.ch.send_array(_mod(xx - U64(2) * s + rho, M))
    else:
        q = np.ascontiguousarray(q, dtype=U64).ravel()
        s = gilboa.matvec(party, CLIENT, y=q, y_bits=xb, n=N, ring_bits=M)
        c = party.ch.recv_array(dtype=U64, shape=(N,))
        u = client_masked(client_norm(q, M), s, c, M)
    # 4. commit u
    if server:
        ku = au.commit(party, CLIENT, n=N, bits=M, delta=delta, keep_pads=keep_pads)
    else:
        cu = au.commit(party, CLIENT, n=N, bits=M, values=u, keep_pads=keep_pads)
    # 5.-7. challenges (secret for now), q committed with y-products, q again for its square
    if server:
        chi = party.rng.random_bits((lam, N)).astype(np.uint8)
        chi2 = party.rng.random_bits((lam, d)).astype(np.uint8)
        y = np.rint(chi.astype(np.float64) @ X.astype(np.float64)).astype(U64)  # (lam, d), < 2^45 exact
        yd = u128.mul64(y, delta)
        extra = (np.concatenate([np.zeros((d, lam), U64), yd[0].T], axis=1),
                 np.concatenate([y.T, yd[1].T], axis=1))
        k1 = au.commit(party, CLIENT, n=d, bits=xb, delta=delta, extra=extra)
        k2 = au.commit(party, CLIENT, n=d, bits=xb, delta=delta,
                       extra=(k1.key[0][:, None], k1.key[1][:, None]))
        party.ch.send_array(pack_bits(np.concatenate([chi.ravel(), chi2.ravel()])))
    else:
        c1 = au.commit(party, CLIENT, n=d, bits=xb, values=client_commit_query(q, 6), n_extra=2 * lam)
        c2 = au.commit(party, CLIENT, n=d, bits=xb, values=client_commit_query(q, 7), n_extra=1)
        nb = lam * (N + d)
        bits = unpack_bits(party.ch.recv_array(np.uint8, ((nb + 7) // 8,)), nb)
        chi, chi2 = bits[: lam * N].reshape(lam, N), bits[lam * N:].reshape(lam, d)
    S = chi.sum(axis=1, dtype=U64)  # |chi_l|
    # 8.-9. the combined relations and their check
    if server:
        L = (k1.extra[0][:, :lam], k1.extra[1][:, :lam])
        Lp = (k1.extra[0][:, lam:], k1.extra[1][:, lam:])
        L = u128.total(L, axis=0)
        Lp = u128.total(Lp, axis=0)
        kq2 = u128.neg(u128.total((k2.extra[0][:, 0], k2.extra[1][:, 0]), axis=0))  # key of Q2
        KZ = au.combine(chi, ku.key)
        KZ = u128.sub(KZ, u128.mul_small((np.full(lam, kq2[0]), np.full(lam, kq2[1])), S))
        KA = u128.sub(Lp, u128.mul_small(L, delta))
        KZ = u128.add(KZ, u128.shl(KA, 1))
        KZ = u128.add(KZ, au.combine(chi2, u128.sub(k1.key, k2.key)))
        C = u128.add(au.combine(chi, _lift(xx)), au.combine(chi, _lift(rho)))
        C = u128.add(C, u128.shl(L, 1))
        au.check_congruent(party, CLIENT, M, delta=delta, KZ=KZ, C=C, n=lam)
        return ServerBound(rho, delta, ku.key, ku.pads)
    qv, qt = c1.values, c2.values
    Q2 = int((qv.astype(object) ** 2).sum()) % u128.MOD
    sq_mac = u128.sub(u128.mul_small(c1.mac, qv), (c2.extra[0][:, 0], c2.extra[1][:, 0]))
    mq2 = u128.total(sq_mac, axis=0)
    A = u128.total((c1.extra[0][:, :lam], c1.extra[1][:, :lam]), axis=0)
    MA = u128.total((c1.extra[0][:, lam:], c1.extra[1][:, lam:]), axis=0)
    Z = au.combine(chi, _lift(cu.values))
    Z = u128.sub(Z, u128.mul_small(u128.from_int(Q2, (lam,)), S))
    Z = u128.add(Z, u128.shl(A, 1))
    Z = u128.add(Z, au.combine(chi2, u128.sub(_lift(qv), _lift(qt))))
    MZ = au.combine(chi, cu.mac)
    MZ = u128.sub(MZ, u128.mul_small((np.full(lam, mq2[0]), np.full(lam, mq2[1])), S))
    MZ = u128.add(MZ, u128.shl(MA, 1))
    MZ = u128.add(MZ, au.combine(chi2, u128.sub(c1.mac, c2.mac)))
    au.check_congruent(party, CLIENT, M, Z=Z, MZ=MZ, n=lam)
    return ClientBound(cu.values, cu.mac, cu.pads)
