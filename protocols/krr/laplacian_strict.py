"""Client-malicious exact Laplacian-kernel KRR with no selective failure (``laplacian_chain = "bound"``).

    prediction(q') = y_offset + sum_i alpha_i exp(-||x_i - q'||_1 / sigma)

Threat model: the server (model owner) is semi-honest; the client may deviate arbitrarily (any bytes,
any order, many sessions). Guarantee: per query the client learns F(q') for one q' of the public
input domain (the output of :func:`protocols.krr.gaussian_malicious.kernel_output` on the L1 distance)
**or an abort whose occurrence is a function of the client's own messages only** -- it does not
depend on the training data X (up to the checks' soundness errors, 2^-42.0 for the chain and
2^-46.9 for step 6). The server learns nothing about q'. This removes the one bit per aborted
session of :mod:`protocols.krr.laplacian_malicious` (its docstring: the chain's client-side choices
were free and the client was an OT sender in a product, so whether step 6 failed was a predicate
of X of the client's choosing).

Protocol (both parties run :func:`online`; M = pp.ring_bits, B = pp.x_bits):
  1. The server draws a MAC key Delta_q in F_q (q = 2^48 - 59). The query's d B bits are the choice
     bits of d B random OTs of the checked extension: q' is fixed here.
  2. The bound comparison chain (:mod:`protocols.krr.bound_chain`): b = [x_ij < q'_j] XOR-shared,
     every client value committed and checked (its step 2e) before anything else happens; the
     client's share b_C ends committed (IT-MACs with the engine's global Delta).
  3. Products (:mod:`protocols.krr.strict_products`, ring :func:`product_ring`: M - 1, at least 8): shares mod 2^(M-1)
     of S_i = sum_j (q'_j - x_ij) b_ij in which the client only *receives*: one vector COT per
     element whose choice bit is the committed b_C, and the checked lattice matvec of a fresh server
     matrix with the committed q'. A deviating client can shift its share only by amounts it knows.
     Shares of L_i = sum_j x_ij - sum_j q'_j + 2 S_i mod 2^M: a (server), b (client) -- L needs
     only 2 S mod 2^M, which shares of S mod 2^(M-1) determine (2 (S + k 2^(M-1)) = 2 S mod 2^M; the
     semi-honest chain's trick, protocols.krr.laplacian step 4): the COT words travel in
     ceil((M-1)/8) bytes (3 at M = 25, not 4) and the lattice matrix is M - 1 bits wide.
  4. Mask-reveal mod 2^M (as laplacian_malicious step 3): c = a + rho, v = b + c over the integers.
  5. MACs mod q (:func:`protocols.mpc.commit_fp48.bit_macs`) on the M + 1 bits of v **and the M bits
     of b**, and (:func:`~protocols.mpc.commit_fp48.bit_macs_on_pads`, on the random OT that committed
     b's top bit b_1 -- not a new choice) a MAC on beta = b_1 (1 - a_1), the server's scale 1 - a_1.
  6. chi (2N residues) from a fresh seed; the MAC-word tables of g_j(v) = sum_i chi_i |x_ij - v| on
     the committed q'_j (laplacian_malicious step 5). Check: the client's combined MAC of
         e_i = v_i - 2^M beta_i - L_i(q') - rho_i - 2^M (a_1,i - lambda_i)     and     e'_i = v_i - b_i - c_i
     with chi_i and chi_(N+i); the server aborts (``StrictCheckError``) unless it is the honest one.
  7.-11. The Gaussian protocol's steps 10-14 on u = v mod 2^M (server to client only).

Why no abort depends on X. Step 2's check passes or fails according to whether the client's
committed values satisfy relations among values it knows (bound_chain's argument). Step 3's outputs
are values the client receives: after any deviation its computed share is b_true + epsilon with
b_true = L(q') - a (mod 2^M) fixed by the server and q', and epsilon a shift the client itself chose
and knows (a shift e of its share of S mod 2^(M-1) is the known shift 2 e of b mod 2^M). In step 6, with v = b + c enforced by e' and b_1 bound to the committed b:
(*) v - 2^M b_1 (1 - a_1) - L = rho + 2^M (a_1 - lambda)  holds iff  b + a - L = 2^M (a_1 OR b_1),
i.e. iff the committed b (in [0, 2^M)) equals b_true -- whatever a_1 is (the laplacian_malicious
docstring's (*); the product OT there had a free choice b_1, the source of an a_1-dependent abort).
So step 6 aborts iff the client committed something other than b_true, which it knows: its own
decision. Steps 7-11 only send to the client. The soundness arguments of step 6 (mod q, small
integers e_i, e'_i < 2^(M+3)) are laplacian_malicious's.

What each party learns: the client -- the chain's and products' masked values, c (uniform), MAC
corrections (one-time padded), chi and MAC words under fresh keys, the flooded lattice reply, then
the tail: F(q'). The server -- OT-extension messages, the proofs' masked sums, the client's RLWE
ciphertexts (proven well formed), MW (its own value for an honest client).
"""
from __future__ import annotations

import numpy as np

from protocols.common import KernelModelParams
from protocols.krr import bound_chain, gaussian_malicious, strict_products
from protocols.krr import laplacian_malicious as lm
from protocols.krr.chain import CLIENT, SERVER
from protocols.krr.params import PublicParams
from protocols.mpc import authenticated as au
from protocols.mpc import commit_fp48, fp48
from protocols.mpc.context import PartyContext
from protocols.mpc.pages import prefer_small_pages
from secureml.errors import ProtocolError

U64 = np.uint64


class StrictCheckError(au.MacCheckError):
    """Step 6 failed: the client's committed b or v is not the one its received values give."""


def check_params(pp: PublicParams) -> None:
    """As :func:`protocols.krr.laplacian_malicious.check_params` (the same step-6 tables and tail)."""
    lm.check_params(pp)


def product_ring(M: int) -> int:
    """Step 3's ring bits: M - 1 (2 S mod 2^M needs S mod 2^(M-1) only; any ring of R >= M - 1 bits
    gives 2 (S + k 2^R) = 2 S mod 2^M), at least the checked lattice matvec's smallest ring, 8."""
    return max(M - 1, 8)


def _point_major(pads, d: int, N: int):
    """The chain's element order (column j, point i) -> the products' (point i, column j), for the
    random-OT keys of b_C ((d N, 16), or the server's pair)."""
    if isinstance(pads, tuple):
        return tuple(_point_major(p, d, N) for p in pads)
    return np.ascontiguousarray(np.asarray(pads).reshape(d, N, 16).transpose(1, 0, 2)).reshape(N * d, 16)


# ---- the client's local steps (module functions, so a test can replace one of them) -----------
def client_share(b: np.ndarray) -> np.ndarray:
    """Step 5, client: the share of L it commits (honest: the one it computed)."""
    return b


def client_masked(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Step 4, client: v = b + c over the integers."""
    return b + c


def online(party: PartyContext, pp: PublicParams, *, model: KernelModelParams | None = None,
           XT: np.ndarray | None = None, q: np.ndarray | None = None, lam: int = au.STAT_BITS) -> dict | int:
    """One query, both roles (as :func:`protocols.krr.laplacian_malicious.online`). Raises
    :class:`bound_chain.ChainCheckError` or :class:`StrictCheckError` on the server when a check fails."""
    check_params(pp)
    prefer_small_pages()
    N, d, M, xb = pp.n_train, pp.n_features, pp.ring_bits, pp.x_bits
    low = U64((1 << M) - 1)
    top = U64(1) << U64(M)
    if party.role == SERVER:
        # 1. Delta_q; q's bits as the choice bits of d B random OTs
        delta, q_pads = lm.commit_query(party, pp, model=model)
        # 2. the bound chain (checked inside)
        ch = bound_chain.run(party, pp, N, q_pads=q_pads, XT=XT)
        # 3. products: S_i = sum_j (q'_j - x_ij) b_ij mod 2^(M-1); a = sum_j x_ij + 2 S (mod 2^M)
        s = strict_products.server(party, X=XT.T, b_S=ch.share.T, b_pads=_point_major(ch.final.pads, d, N),
                                   q_pads=q_pads, x_bits=xb, ring_bits=product_ring(M))
        a = (XT.sum(axis=0, dtype=U64) + U64(2) * s) & low
        # 4. mask-reveal
        rho = lm.draw_mask(party.rng, N, M)
        party.ch.send_array(np.ascontiguousarray((a + rho) & low, dtype="<u4"))
        # 5. MACs on v's M + 1 bits and b's M bits; beta = b_1 (1 - a_1) through b_1's own OT
        keys = commit_fp48.bit_macs(party, CLIENT, n=N, bits=2 * M + 1, delta=delta)
        kbeta = commit_fp48.bit_macs_on_pads(party, CLIENT, (keys.pads[0][:, 2 * M], keys.pads[1][:, 2 * M]),
                                             delta=delta, scales=U64(1) - (a >> U64(M - 1)))
        kv = commit_fp48.value_mac(keys.key[:, :M + 1])
        kb = commit_fp48.value_mac(keys.key[:, M + 1:])
        key = fp48.sub(kv, fp48.mul(kbeta, top))
        # 6. chi after every MAC; MAC words of g_j on the committed q'_j; the check
        seed = party.rng.random_bytes(lm.CHI_SEED_BYTES)
        party.ch.send_array(np.frombuffer(seed, dtype=np.uint8))
        chi = lm.expand_chi(seed, 2 * N)
        chi1, chi2 = chi[:N], chi[N:]
        K = fp48.uniform(party.rng, d)
        for j0, j1 in lm._feature_blocks(d, xb):
            Wt = lm.mac_word_tables(XT[j0:j1], chi1, xb, delta, K[j0:j1])
            au.bound_lut(party, CLIENT, (0, xb), pads=(q_pads[0][j0:j1], q_pads[1][j0:j1]), tables=Wt[:, :, None],
                         widths=(fp48.BYTES,))
        c = (a + rho) & low
        got = int(party.ch.recv_array(np.dtype("<u8"), (1,))[0])
        known = fp48.add(fp48.mul(chi1, lm.check_offset(M, rho, a)), fp48.mul(chi2, c))
        want = int(fp48.add(fp48.sub(fp48.add(fp48.total(fp48.mul(chi1, key)),
                                              fp48.total(fp48.mul(chi2, fp48.sub(kv, kb)))), fp48.total(K)),
                            fp48.mul(fp48.total(known), delta)))
        if got != want:
            raise StrictCheckError("the client's masked L1 distances failed their check: session aborted")
        # 7.-11. the tail on the checked u = v mod 2^M
        return gaussian_malicious.kernel_output(party, pp, rho=rho, delta=delta, u_pads=keys.pads, model=model,
                                                lam=lam)
    # 1.
    q, q_pads = lm.commit_query(party, pp, q=q)
    # 2.
    ch = bound_chain.run(party, pp, N, q_pads=q_pads, q=q)
    # 3.
    s = strict_products.client(party, q=q, b_C=ch.share.T, b_pads=_point_major(ch.final.pad, d, N), q_pads=q_pads,
                               x_bits=xb, ring_bits=product_ring(M))
    b = client_share((U64(2) * s - q.sum(dtype=U64)) & low)
    # 4.
    c = party.ch.recv_array(np.dtype("<u4"), (N,)).astype(U64)
    if bool((c >> U64(M)).any()):
        raise ProtocolError("malformed masked share")
    v = client_masked(b, c)
    # 5.
    vbits = ((v[:, None] >> np.arange(M + 1, dtype=U64)[None, :]) & U64(1)).astype(np.uint8)
    bbits = ((b[:, None] >> np.arange(M, dtype=U64)[None, :]) & U64(1)).astype(np.uint8)
    cm = commit_fp48.bit_macs(party, CLIENT, n=N, bits=2 * M + 1, choices=np.concatenate([vbits, bbits], axis=1))
    mbeta = commit_fp48.bit_macs_on_pads(party, CLIENT, cm.pads[:, 2 * M], choices=bbits[:, M - 1])
    mv = commit_fp48.value_mac(cm.mac[:, :M + 1])
    mb = commit_fp48.value_mac(cm.mac[:, M + 1:])
    mac = fp48.sub(mv, fp48.mul(mbeta, top))
    # 6.
    chi = lm.expand_chi(party.ch.recv_array(dtype=np.uint8, shape=(lm.CHI_SEED_BYTES,)).tobytes(), 2 * N)
    chi1, chi2 = chi[:N], chi[N:]
    got = [au.bound_lut(party, CLIENT, (0, xb), pads=q_pads[j0:j1], values=q[j0:j1], w=1, widths=(fp48.BYTES,))
           for j0, j1 in lm._feature_blocks(d, xb)]
    words = np.concatenate(got)[:, 0]
    mw = fp48.add(fp48.sub(fp48.total(fp48.mul(mac, chi1)), fp48.total(words)),
                  fp48.total(fp48.mul(chi2, fp48.sub(mv, mb))))
    party.ch.send_array(np.array([int(mw)], dtype="<u8"))
    party.ch.flush()
    # 7.-11.
    return gaussian_malicious.kernel_output(party, pp, u=v & low, u_pads=cm.pads, lam=lam)


def prepare_server(model: KernelModelParams, pp: PublicParams) -> np.ndarray:
    """The server's encoded training data, transposed (d, N) (laplacian_malicious's, cached on the
    model), and the chain check's per-model histogram plans (:func:`bound_chain.prepare_server`),
    made here before any client."""
    XT = lm.prepare_server(model, pp)
    bound_chain.prepare_server(XT, pp)
    return XT


def server_online(party: PartyContext, pp: PublicParams, k: int, model: KernelModelParams) -> None:
    """Model owner's side of k queries."""
    XT = prepare_server(model, pp)
    for _ in range(k):
        online(party, pp, model=model, XT=XT)


def client_online(party: PartyContext, pp: PublicParams, Q: np.ndarray) -> np.ndarray:
    """Query owner's side: the predictions for the rows of Q (k, d)."""
    enc = pp.encode_features(np.atleast_2d(Q), "query")
    return np.array([gaussian_malicious.decode(pp, online(party, pp, q=q)) for q in enc])


reference = lm.reference

__all__ = ["online", "server_online", "client_online", "reference", "prepare_server", "check_params",
           "StrictCheckError"]
